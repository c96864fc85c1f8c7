"""The leases' data volumes on the node (node_agent/volumes.py): sparse files made at the
first launch, kept across relaunches, deleted at the end, attached as the virtio disk the
guest looks for, and counted against the free space before a lease is accepted."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cvm.images import Image
from node_agent.errors import LauncherError
from node_agent.launcher.base import GuestSpec, HostBinding
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.qemu_args import volume_args
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.volumes import GIB, VolumeFiles

IMAGE = Image(
    image_id="ab" * 32,
    directory=Path("images") / ("ab" * 32),
    cmdline="console=ttyS0",
    kernel_sha256="11" * 32,
    initrd_sha256="22" * 32,
)
BINDING = HostBinding(31337, "0x" + "5a" * 20, "0x" + "7e" * 20)


def spec(lease_id: int, disk_gib: int) -> GuestSpec:
    return GuestSpec(lease_id, 1, 512, disk_gib, bytes(48), IMAGE.image_id, BINDING)


class SmallDisk(VolumeFiles):
    """The volume directory on a file system with `free` bytes left."""

    def __init__(self, directory: Path, free: int) -> None:
        super().__init__(directory)
        self.free = free

    def free_bytes(self) -> int:
        return self.free


def test_a_volume_is_a_private_sparse_file_kept_until_removed(tmp_path):
    volumes = VolumeFiles(tmp_path / "volumes")
    path = volumes.ensure(3, 2)
    assert path == tmp_path / "volumes" / "lease-3.img"
    info = path.stat()
    assert info.st_size == 2 * GIB and info.st_blocks == 0  # a hole until the guest writes
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "volumes").stat().st_mode) == 0o700
    with path.open("r+b") as handle:
        handle.seek(GIB)
        handle.write(b"ciphertext")
    # A relaunch of the same lease: the same file, its data untouched.
    assert volumes.ensure(3, 2) == path
    with path.open("rb") as handle:
        handle.seek(GIB)
        assert handle.read(10) == b"ciphertext"
    assert volumes.allocated_bytes(3) > 0
    assert volumes.lease_ids() == [3]
    assert volumes.remove(3) is True
    assert not path.exists() and volumes.remove(3) is False
    with pytest.raises(LauncherError, match="disk_gib"):
        volumes.ensure(4, 0)


def test_a_lease_whose_volume_cannot_grow_to_full_size_is_refused(tmp_path):
    volumes = SmallDisk(tmp_path / "volumes", free=10 * GIB)
    assert volumes.refusal(1, 10, {}) is None
    assert volumes.refusal(1, 0, {2: 50}) is None  # no volume, nothing to store
    # Active leases' volumes may still grow to their full size: that space is spoken for.
    reason = volumes.refusal(1, 4, {2: 8})
    assert reason is not None and "4 GiB volume does not fit" in reason
    assert "12.0 GiB" in reason and "10.0 GiB are free" in reason
    # What an active volume already took counts as used, not as still to come.
    volumes.ensure(2, 8)
    with volumes.path(2).open("r+b") as handle:
        handle.write(b"x" * (2 * 2**20))
    volumes.free = 10 * GIB - volumes.allocated_bytes(2)
    assert volumes.refusal(1, 4, {2: 8}) is not None
    volumes.free = 10 * GIB
    assert volumes.refusal(1, 2, {2: 8}) is None


def test_the_qemu_launcher_attaches_the_volume_with_the_serial_the_guest_looks_for(tmp_path):
    launcher = QemuLauncher(tmp_path / "run", SimulatedAmdSp(tmp_path / "sim"), accel="tcg",
                            volume_dir=tmp_path / "volumes")  # fmt: skip
    argv = launcher.command_line(spec(5, 1), IMAGE, 2222)
    drive = argv[argv.index("-drive") + 1]
    assert drive.startswith(f"file={tmp_path / 'volumes' / 'lease-5.img'},if=none,id=data,")
    assert "format=raw" in drive and "discard=ignore" in drive
    assert "virtio-blk-pci,drive=data,serial=cvm-data" in argv
    assert (tmp_path / "volumes" / "lease-5.img").stat().st_size == GIB
    # No disk, no volume.
    assert "-drive" not in launcher.command_line(spec(6, 0), IMAGE, 2222)
    # Stopped is not over: only `discard` (the lease ended for good) deletes it.
    launcher.stop(5)
    assert launcher.volumes.path(5).exists()
    launcher.discard(5)
    assert not launcher.volumes.path(5).exists()
    assert launcher.volume_refusal(7, 1, {}) is None


def test_volume_args_use_the_page_cache_only_where_direct_io_is_missing():
    assert volume_args(Path("/v/lease-1.img")) == [
        "-drive", "file=/v/lease-1.img,if=none,id=data,format=raw,cache=none,discard=ignore",
        "-device", "virtio-blk-pci,drive=data,serial=cvm-data",
    ]  # fmt: skip
    assert "cache=writeback" in volume_args(Path("/v/x.img"), direct=False)[1]


def test_the_simulated_launcher_keeps_no_volumes(tmp_path):
    launcher = SimulatedLauncher(tmp_path / "guests", SimulatedAmdSp(tmp_path / "sim"))
    assert launcher.volume_refusal(1, 10**6, {}) is None
    launcher.discard(1)  # nothing to do
