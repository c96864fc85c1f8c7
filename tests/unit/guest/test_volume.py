"""The guest's encrypted volume (guest/volume.py) off the VM: the commands it runs, in which
order, with the key only ever on standard input, what it refuses, and how it reads the
kernel's integrity reports. A fake runner plays cryptsetup, mkfs, mount and dmsetup; the
real ones run in tests/e2e/test_volume_guest.py."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from guest import agent as guest_agent
from guest import volume

KEY = bytes(range(32))
DEVICE = Path("/dev/vdb")


def luks2_metadata(**changes: object) -> dict:
    """What `cryptsetup luksDump --dump-json-metadata` prints for a volume this guest made."""
    doc = {
        "keyslots": {"0": {"type": "luks2", "key_size": 96,
                           "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
                           "area": {"type": "raw", "offset": "32768", "size": "385024",
                                    "encryption": "aes-xts-plain64", "key_size": 64},
                           "kdf": {"type": "pbkdf2", "hash": "sha256", "iterations": 1000,
                                   "salt": "c2FsdA=="}}},
        "tokens": {},
        "segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic",
                           "iv_tweak": "0", "encryption": "aes-xts-plain64", "sector_size": 4096,
                           "integrity": {"type": "hmac(sha256)", "journal_encryption": "none",
                                         "journal_integrity": "none"}}},
        "digests": {"0": {"type": "pbkdf2", "keyslots": ["0"], "segments": ["0"]}},
        "config": {"json_size": "12288", "keyslots_size": "16744448"},
    }  # fmt: skip
    doc.update(changes)
    return doc


ACTIVE_STATUS = """/dev/mapper/cvm-data is active.
  type:    LUKS2
  cipher:  aes-xts-plain64
  keysize: 768 bits
  key location: keyring
  integrity: hmac(sha256)
  integrity keysize: 256 bits
  device:  /dev/vdb
  sector size:  4096
  offset:  32768 sectors
  size:    1990656 sectors
  mode:    read/write
"""


class FakeSystem:
    """cryptsetup, mkfs.ext4, mount and dmsetup as far as the volume code sees them."""

    def __init__(self, mapper: Path, *, luks: bool = False, key: bytes = KEY) -> None:
        self.mapper = mapper
        self.luks = luks
        self.key = key  # the key the volume was formatted with
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.mismatches = 0
        self.fail: dict[str, volume.Completed] = {}
        self.timeouts: list[float] = []
        self.copies: list[Path] = []
        self.metadata = luks2_metadata()  # the header on the disk, as luksDump shows it
        self.active = ACTIVE_STATUS  # the opened mapping, as `cryptsetup status` shows it

    def __call__(
        self, args: Sequence[str], stdin: bytes | None, timeout: float
    ) -> volume.Completed:
        args = list(args)
        self.calls.append((args, stdin))
        self.timeouts.append(timeout)
        for word, answer in self.fail.items():
            if word in args:
                return answer
        ok = volume.Completed(0, "", "")
        if args[:2] == ["cryptsetup", "isLuks"]:
            return ok if self.luks else volume.Completed(1, "", "")
        if args[:2] == ["cryptsetup", "luksFormat"]:
            self.luks, self.key = True, stdin
            return ok
        if args[:2] == ["cryptsetup", "open"]:
            if stdin != self.key:
                return volume.Completed(2, "", "No key available with this passphrase.")
            if "--test-passphrase" not in args:
                self.mapper.write_text("")
            return ok
        if args[:2] == ["cryptsetup", "luksDump"]:
            return volume.Completed(0, json.dumps(self.metadata), "")
        if args[:2] == ["cryptsetup", "status"]:
            return volume.Completed(0, self.active, "")
        if args[:2] == ["cryptsetup", "close"]:
            self.mapper.unlink(missing_ok=True)
            return ok
        if args[0] == "dmsetup":
            return volume.Completed(0, f"0 2088960 integrity {self.mismatches} 2088960 -\n", "")
        return ok

    def commands(self) -> list[str]:
        return [" ".join(args[:2]) for args, _ in self.calls]


@pytest.fixture
def system(tmp_path: Path) -> FakeSystem:
    return FakeSystem(tmp_path / "mapper")


def make_volume(system: FakeSystem, tmp_path: Path, device: Path | None = DEVICE) -> volume.Volume:
    def copy(device: Path, header: Path) -> None:
        header.write_bytes(b"the header area as the host served it")
        system.copies.append(header)

    return volume.Volume(
        system, mapper=system.mapper, find=lambda: device, has_magic=lambda path: system.luks,
        header_copy=tmp_path / "header.img", copy=copy,
    )  # fmt: skip


def test_a_volume_without_a_header_is_formatted_made_ext4_and_mounted(
    system, tmp_path, monkeypatch
):
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    disk = make_volume(system, tmp_path)
    mountpoint = tmp_path / "data"
    assert disk.open(KEY, DEVICE, mountpoint) == "formatted"
    assert system.commands() == ["cryptsetup isLuks", "cryptsetup luksFormat",
                                 "cryptsetup luksDump", "cryptsetup open",
                                 "cryptsetup status", "dd if=/dev/zero", "mkfs.ext4 -q",
                                 "mount -t"]  # fmt: skip
    assert system.calls[2][0][0:2] == ["cryptsetup", "luksDump"]
    format_args = system.calls[1][0]
    # Authenticated encryption: a changed sector reads as an error, never as other data.
    assert format_args[format_args.index("--integrity") + 1] == "hmac-sha256"
    assert format_args[format_args.index("--cipher") + 1] == "aes-xts-plain64"
    assert format_args[format_args.index("--type") + 1] == "luks2"
    assert format_args[format_args.index("--pbkdf") + 1] == "pbkdf2"
    assert format_args[format_args.index("--pbkdf-force-iterations") + 1] == "1000"
    assert "--integrity-no-wipe" in format_args
    assert format_args[-1] == str(DEVICE)
    assert system.calls[-1][0][-2:] == [str(system.mapper), str(mountpoint)]
    assert mountpoint.is_dir()
    assert disk.status() == {"state": "open", "formatted_at_boot": True, "integrity_errors": 0}


def test_the_key_goes_on_stdin_only_never_on_a_command_line(system, tmp_path, monkeypatch):
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    make_volume(system, tmp_path).open(KEY, DEVICE, tmp_path / "data")
    for args, stdin in system.calls:
        assert all(KEY.hex() not in word and KEY.decode("latin-1") not in word for word in args)
        if args[:2] in (["cryptsetup", "luksFormat"], ["cryptsetup", "open"]):
            assert stdin == KEY
            assert args[args.index("--key-file") + 1] == "-"
        else:
            assert stdin is None


def test_an_existing_volume_is_opened_never_formatted(system, tmp_path, monkeypatch):
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    system.luks = True
    disk = make_volume(system, tmp_path)
    assert disk.open(KEY, DEVICE, tmp_path / "data") == "opened"
    assert system.commands() == ["cryptsetup isLuks", "cryptsetup luksDump", "cryptsetup open",
                                 "cryptsetup status", "mount -t"]  # fmt: skip
    assert disk.status()["formatted_at_boot"] is False


def test_a_wrong_key_is_a_clear_error_and_the_volume_is_left_alone(system, tmp_path):
    system.luks, system.key = True, b"\x01" * 32
    disk = make_volume(system, tmp_path)
    with pytest.raises(volume.VolumeError, match=r"does not open this volume.*not formatted"):
        disk.open(KEY, DEVICE, tmp_path / "data")
    assert "cryptsetup luksFormat" not in system.commands()
    assert "mkfs.ext4 -q" not in system.commands()
    status = disk.status()
    assert status["state"] == "error" and "does not open" in status["error"]
    assert KEY.hex() not in json.dumps(status)


def test_a_second_release_with_the_same_key_changes_nothing(system, tmp_path, monkeypatch):
    mounted: set[str] = set()
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: str(mountpoint) in mounted)
    disk = make_volume(system, tmp_path)
    assert disk.open(KEY, DEVICE, tmp_path / "data") == "formatted"
    mounted.add(str(tmp_path / "data"))
    system.calls.clear()
    assert disk.open(KEY, DEVICE, tmp_path / "data") == "formatted"  # this boot's outcome
    assert system.commands() == ["cryptsetup open"]  # --test-passphrase only
    assert "--test-passphrase" in system.calls[0][0]
    with pytest.raises(volume.VolumeError, match="different disk key"):
        disk.open(b"\x02" * 32, DEVICE, tmp_path / "data")
    # The volume stays open and mounted; the refusal is said beside it.
    status = disk.status()
    assert status["state"] == "open" and "different disk key" in status["error"]


def test_a_header_cryptsetup_cannot_read_is_never_formatted_over(system, tmp_path):
    """The host damages the primary header (or makes it read as junk): a LUKS2 volume still
    has its second copy, whose magic keeps the guest from formatting."""
    disk = volume.Volume(system, mapper=system.mapper, find=lambda: DEVICE,
                         has_magic=lambda path: True)  # fmt: skip
    with pytest.raises(volume.VolumeError, match=r"cannot read .*left as it is"):
        disk.open(KEY, DEVICE, tmp_path / "data")
    assert system.commands() == ["cryptsetup isLuks"]


def test_an_unreadable_volume_is_never_taken_for_an_empty_one(system, tmp_path):
    def unreadable(path: Path) -> bool:
        raise OSError(5, "Input/output error")

    disk = volume.Volume(system, mapper=system.mapper, find=lambda: DEVICE, has_magic=unreadable)
    with pytest.raises(volume.VolumeError, match="cannot read the volume's header"):
        disk.open(KEY, DEVICE, tmp_path / "data")
    assert system.calls == []
    system.fail["isLuks"] = volume.Completed(4, "", "Device /dev/vdb does not exist")
    with pytest.raises(volume.VolumeError, match=r"checking the volume.*does not exist"):
        make_volume(system, tmp_path).open(KEY, DEVICE, tmp_path / "data")
    assert "cryptsetup luksFormat" not in system.commands()


def test_the_header_magic_is_found_in_either_copy(tmp_path):
    device = tmp_path / "disk"
    device.write_bytes(bytes(5 << 20))
    assert volume.header_magic(device) is False
    with device.open("r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"SKUL\xba\xbe")  # the secondary header of a 1 MiB LUKS2 header area
    assert volume.header_magic(device) is True
    device.write_bytes(b"LUKS\xba\xbe" + bytes(100))
    assert volume.header_magic(device) is True
    with pytest.raises(OSError):
        volume.header_magic(tmp_path / "missing")


@pytest.mark.parametrize(
    ("step", "message"),
    [("luksFormat", "formatting the volume failed"), ("mkfs.ext4", "making the file system"),
     ("mount", "mounting the volume")],
)  # fmt: skip
def test_a_failing_step_is_reported_with_its_message(system, tmp_path, monkeypatch, step, message):
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    system.fail[step] = volume.Completed(1, "", "device busy")
    disk = make_volume(system, tmp_path)
    with pytest.raises(volume.VolumeError, match=f"{message}.*device busy"):
        disk.open(KEY, DEVICE, tmp_path / "data")
    assert disk.status()["state"] == "error"


@pytest.mark.parametrize("key", [b"", b"x" * 31, b"x" * 33, "k" * 32])
def test_a_key_of_another_size_is_refused_before_anything_runs(system, tmp_path, key):
    with pytest.raises(volume.VolumeError, match="32 bytes"):
        make_volume(system, tmp_path).open(key, DEVICE, tmp_path / "data")
    assert system.calls == []


@pytest.mark.parametrize("mountpoint", ["data", "/", "/proc/x", "/dev", "/run/cvm/secrets",
                                        "/data/../etc", "/etc/cvm", "/usr/lib/cvm"])  # fmt: skip
def test_mount_points_that_would_shadow_the_system_are_refused(system, tmp_path, mountpoint):
    with pytest.raises(volume.VolumeError, match="mount point"):
        make_volume(system, tmp_path).open(KEY, DEVICE, Path(mountpoint))
    assert system.calls == []


def test_status_without_a_volume_and_before_the_key(system, tmp_path):
    assert make_volume(system, tmp_path, device=None).status() == {
        "state": "absent", "formatted_at_boot": False, "integrity_errors": 0}  # fmt: skip
    assert make_volume(system, tmp_path).status()["state"] == "locked"


def test_status_counts_dm_integrity_mismatches_and_kernel_reports(system, tmp_path, monkeypatch):
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    watch = volume.KernelLogWatch(tmp_path / "no-kmsg", log=lambda text: None)
    disk = volume.Volume(system, mapper=system.mapper, watch=watch, find=lambda: DEVICE,
                         has_magic=lambda path: False, header_copy=tmp_path / "header.img",
                         copy=lambda device, header: header.write_bytes(b"h"))  # fmt: skip
    disk.open(KEY, DEVICE, tmp_path / "data")
    system.mismatches = 3
    watch.errors = 2
    assert disk.status()["integrity_errors"] == 5
    assert system.calls[-1][0] == ["dmsetup", "status", "cvm-data_dif"]
    assert system.timeouts[-1] == volume.STATUS_TIMEOUT_S  # never holds the agent for long


@pytest.mark.parametrize(
    ("output", "count"),
    [("0 2088960 integrity 0 2088960 -\n", 0), ("0 2088960 integrity 17 2088960 -", 17),
     ("0 2088960 crypt\n", None), ("", None), ("0 1 integrity x 1 -", None)],
)  # fmt: skip
def test_dmsetup_status_parsing(output, count):
    assert volume.parse_integrity_status(output) == count


def test_kernel_integrity_reports_are_counted_and_logged(tmp_path):
    lines = [
        b"3,812,5123,-;device-mapper: crypt: dm-1: INTEGRITY AEAD ERROR, sector 8200\n",
        b"6,813,5124,-;EXT4-fs (dm-1): mounted filesystem\n",
        b"3,814,5125,-;device-mapper: integrity: dm-0: Checksum failed at sector 0x2008\n",
    ]
    assert volume.count_kernel_errors(lines) == 2
    log = tmp_path / "kmsg"
    log.write_bytes(b"".join(lines))
    said: list[str] = []
    watch = volume.KernelLogWatch(log, log=said.append)
    # A regular file gives all its lines in one read; /dev/kmsg gives one record per read.
    watch._follow()
    assert watch.errors == 1 and "INTEGRITY ERROR" in said[0]


def test_the_device_is_found_by_its_virtio_serial(tmp_path):
    blocks = tmp_path / "block"
    for name, serial in (("vda", "cvm-root"), ("vdb", "cvm-data"), ("vdc", "other")):
        (blocks / name).mkdir(parents=True)
        (blocks / name / "serial").write_text(serial + "\n")
    assert volume.find_device(tmp_path / "no-link", blocks) == Path("/dev/vdb")
    (blocks / "vdb" / "serial").write_text("cvm-scratch\n")
    assert volume.find_device(tmp_path / "no-link", blocks) is None


def test_the_workload_names_the_mount_point(tmp_path):
    workload = tmp_path / "workload.json"
    assert volume.workload_mount(workload) == Path("/data")
    workload.write_text(json.dumps({"disk": {"mount": "/var/lib/kv"}}))
    assert volume.workload_mount(workload) == Path("/var/lib/kv")
    workload.write_text(json.dumps({"name": "no-disk"}))
    assert volume.workload_mount(workload) == Path("/data")


# --- the agent's glue ----------------------------------------------------------------------
class RecordingVolume(volume.Volume):
    def __init__(self) -> None:
        super().__init__(
            lambda args, stdin, timeout: volume.Completed(0, "", ""), find=lambda: DEVICE
        )
        self.opened: list[tuple[bytes, Path, Path]] = []
        self.done = threading.Event()

    def open(self, key: bytes, device: Path, mountpoint: Path) -> str:
        self.opened.append((key, device, mountpoint))
        self.done.set()
        return "formatted"


def agent_with(tmp_path: Path, disk: volume.Volume, device: Path | None) -> guest_agent.GuestAgent:
    workload = tmp_path / "workload.json"
    workload.write_text(json.dumps({"disk": {"mount": "/srv/kv"}}))
    return guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=tmp_path / "secrets", ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no-tsm", device=tmp_path / "no-sev", volume=disk,
        find_volume=lambda: device, workload_file=workload,
    )  # fmt: skip


def test_the_disk_key_opens_the_volume_and_leaves_no_file_for_the_workload(tmp_path):
    disk = RecordingVolume()
    agent = agent_with(tmp_path, disk, DEVICE)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "cvm.disk_key").write_bytes(KEY)
    (secrets / "API_TOKEN").write_bytes(b"t")
    agent.after_install(["API_TOKEN", "cvm.disk_key"])
    assert disk.done.wait(10)
    assert disk.opened == [(KEY, DEVICE, Path("/srv/kv"))]
    assert not (secrets / "cvm.disk_key").exists()
    assert (secrets / "API_TOKEN").exists()


def test_other_secrets_do_not_touch_the_volume(tmp_path):
    disk = RecordingVolume()
    agent_with(tmp_path, disk, DEVICE).after_install(["API_TOKEN", "ssh_keys"])
    time.sleep(0.05)
    assert disk.opened == []


def test_a_disk_key_without_a_volume_is_dropped(tmp_path):
    disk = RecordingVolume()
    agent = agent_with(tmp_path, disk, None)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cvm.disk_key").write_bytes(KEY)
    assert agent.open_disk() is None
    assert disk.opened == [] and not (tmp_path / "secrets" / "cvm.disk_key").exists()


def test_the_status_answer_carries_the_volume(tmp_path):
    system = FakeSystem(tmp_path / "mapper")
    disk = volume.Volume(system, mapper=system.mapper, find=lambda: DEVICE)
    agent = agent_with(tmp_path, disk, DEVICE)
    agent.handle({"op": "bind", "chain_id": 1, "registry": "0x" + "11" * 20, "lease_id": 5,
                  "renter": "0x" + "22" * 20})  # fmt: skip
    answer = agent.handle({"op": "status"})
    assert answer["ok"] and answer["volume"] == {
        "state": "locked", "formatted_at_boot": False, "integrity_errors": 0}  # fmt: skip


def test_the_volume_module_runs_on_the_guests_python_alone():
    """stdlib only: the image carries no third-party package for it."""
    source = Path(volume.__file__).read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from "))}  # fmt: skip
    assert imported <= {"__future__", "json", "os", "re", "subprocess", "threading",
                        "collections", "dataclasses", "pathlib", "typing"}  # fmt: skip
    assert os.path.basename(volume.__file__) == "volume.py"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # A keyslot "encrypted" with cipher_null opens with any key, to a volume key the
        # host chose: the host could read everything the guest then writes.
        ({"keyslots": {"0": {"type": "luks2", "area": {"type": "raw",
                                                       "encryption": "cipher_null-ecb"}}}},
         "keyslot 0 is not encrypted"),
        ({"keyslots": {"0": {"type": "luks2-reencrypt", "area": {"encryption": "none"}}}},
         "not a plain luks2 keyslot"),
        ({"keyslots": {}}, "no keyslot"),
        ({"segments": {"0": {**luks2_metadata()["segments"]["0"],
                             "encryption": "cipher_null-ecb"}}}, "segment is not encrypted"),
        ({"segments": {"0": {k: v for k, v in luks2_metadata()["segments"]["0"].items()
                             if k != "integrity"}}}, r"no hmac\(sha256\) integrity"),
        ({"segments": {"0": {**luks2_metadata()["segments"]["0"], "sector_size": 512}}},
         "not 4096 bytes"),
        ({"segments": {"0": luks2_metadata()["segments"]["0"],
                       "1": luks2_metadata()["segments"]["0"]}}, "not exactly one"),
        ({"tokens": {"0": {"type": "luks2-keyring", "key_description": "x"}}}, "tokens"),
        ({"config": {"requirements": {"mandatory": ["online-reencrypt"]}}}, "requirements"),
        ({"keyslots": {"0": {**luks2_metadata()["keyslots"]["0"],
                             "area": {**luks2_metadata()["keyslots"]["0"]["area"],
                                      "offset": str(64 * 1024**2)}}}}, "beyond the header"),
        ({"segments": {"0": {**luks2_metadata()["segments"]["0"], "offset": "4096"}}},
         "starts inside the header"),
    ],
)  # fmt: skip
def test_attack_a_host_written_luks_header_is_never_opened(system, tmp_path, change, words):
    """The host replaces the volume's header with one whose keyslot or data segment it
    chose: the guest must not open it (its key would "open" it, and the host would read or
    set what the guest stores)."""
    system.luks = True
    system.metadata = luks2_metadata(**change)
    disk = make_volume(system, tmp_path)
    with pytest.raises(volume.VolumeError, match=words):
        disk.open(KEY, DEVICE, tmp_path / "data")
    assert "cryptsetup open" not in system.commands()
    assert "cryptsetup luksFormat" not in system.commands()
    assert disk.status()["state"] == "error"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("  cipher:  aes-xts-plain64", "  cipher:  cipher_null-ecb"),
        ("  integrity: hmac(sha256)", "  integrity: none"),
        ("  sector size:  4096", "  sector size:  512"),
    ],
)
def test_attack_a_header_swapped_between_the_check_and_the_open_is_closed_again(
    system, tmp_path, monkeypatch, line, words
):
    """The host swaps the header after `luksDump` read it: what the kernel then holds is
    checked too, and a mapping of another shape is closed, never mounted."""
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    system.luks = True
    system.active = ACTIVE_STATUS.replace(line, words)
    disk = make_volume(system, tmp_path)
    with pytest.raises(volume.VolumeError, match="not what this guest formats"):
        disk.open(KEY, DEVICE, tmp_path / "data")
    assert system.commands()[-1] == "cryptsetup close"
    assert "mount -t" not in system.commands()
    assert not system.mapper.exists()


def test_attack_the_header_checked_is_the_header_opened(system, tmp_path, monkeypatch):
    """The host serves one header to the check and another to `cryptsetup open`: the guest
    reads the header area once into its own memory, checks that copy and opens with it
    (--header), then removes it."""
    monkeypatch.setattr(volume, "_mounted", lambda mountpoint: False)
    system.luks = True
    make_volume(system, tmp_path).open(KEY, DEVICE, tmp_path / "data")
    (header,) = system.copies
    dump = next(args for args, _ in system.calls if args[:2] == ["cryptsetup", "luksDump"])
    opened = next(args for args, _ in system.calls if args[:2] == ["cryptsetup", "open"])
    assert dump[-1] == str(header)
    assert opened[opened.index("--header") + 1] == str(header)
    assert opened[-2:] == [str(DEVICE), volume.MAPPER_NAME]
    assert not header.exists()


def test_the_header_copy_is_the_devices_first_bytes_private(tmp_path):
    device = tmp_path / "device"
    device.write_bytes(b"LUKS\xba\xbe" + bytes(range(256)) * 100)
    copy = tmp_path / "run" / "header.img"
    volume.copy_header(device, copy, size=1000)
    assert copy.read_bytes() == device.read_bytes()[:1000]
    assert copy.stat().st_mode & 0o777 == 0o600
