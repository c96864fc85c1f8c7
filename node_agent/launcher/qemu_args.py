"""The QEMU arguments every cvm image guest gets, whichever launcher starts it.

A cvm image boots directly (kernel, initrd, command line), has user-mode networking with
SSH forwarded from a port on 127.0.0.1, and talks to the node over a virtio-serial port to
its guest agent.

The guest is the renter's (root included) and reaches nothing on its host: user networking
runs with `restrict=on`, so the guest's packets go nowhere (slirp drops them) except through
the explicit forwards into the guest. Without it, slirp maps the gateway 10.0.2.2 to the
host's own 127.0.0.1 (the broker, the chain's RPC, the backend, other guests' SSH forwards)
and NATs everything else onto the host's networks. Outbound internet is the operator's
choice (`guest_outbound`): slirp cannot filter destinations, so turning it on gives the
guest the host's loopback and private networks too, and is only for hosts where nothing
listens on them (see the README). The `qemu` launcher and the `qemu-snp` launcher
both build their command lines from here, so the two boot the same image the same way; an
SEV-SNP guest only adds options to the virtio devices (`SNP_VIRTIO`).
"""

from __future__ import annotations

from pathlib import Path

from cvm.images import Image

AGENT_PORT = "org.cvm.agent"  # the virtio-serial port name guest/agent.py looks for
# An SEV-SNP guest's memory is private: virtio devices must use the DMA API (the guest's
# bounce buffers), which Linux refuses to do for legacy devices without ACCESS_PLATFORM.
SNP_VIRTIO = ",disable-legacy=on,iommu_platform=true"


# The serial console stays in QEMU's memory, in a ring buffer of this many bytes (a power
# of two, as QEMU wants): a guest that writes to it in a loop overwrites its own oldest
# output and never blocks, and nothing it writes reaches the host's disk. The agent takes it
# out over QMP (`ringbuf-read`, see QemuLauncher.read_console) on each pass.
CONSOLE_RING_BYTES = 1 << 18
CONSOLE_DEVICE = "console"


def console_args() -> list[str]:
    """No default devices, no display, the serial console into QEMU's ring buffer."""
    return ["-nodefaults", "-display", "none",
            "-chardev", f"ringbuf,id={CONSOLE_DEVICE},size={CONSOLE_RING_BYTES}",
            "-serial", f"chardev:{CONSOLE_DEVICE}"]  # fmt: skip


def netdev_arg(ssh_port: int, *, outbound: bool = False) -> str:
    """The guest's user network: isolated (`restrict=on`) unless `outbound`, with SSH
    forwarded from 127.0.0.1:`ssh_port` (a forward into the guest works either way)."""
    restrict = "off" if outbound else "on"
    return f"user,id=net0,restrict={restrict},hostfwd=tcp:127.0.0.1:{ssh_port}-:22"


def image_args(
    image: Image, ssh_port: int, agent_socket: Path, virtio: str = "", *, outbound: bool = False
) -> list[str]:
    """Direct boot of `image`, SSH forwarded from 127.0.0.1:`ssh_port`, the agent's port.

    `-kernel`, `-initrd` and `-append` are exactly what `cvm.images.measure` hashes (with
    `kernel-hashes=on` under SEV-SNP they are part of the launch measurement)."""
    return [
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", image.cmdline, "-no-reboot",
        "-netdev", netdev_arg(ssh_port, outbound=outbound),
        "-device", f"virtio-net-pci,netdev=net0{virtio}",
        "-device", f"virtio-serial-pci{virtio}",
        "-chardev", f"socket,id=agent,path={agent_socket},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
    ]  # fmt: skip


DATA_SERIAL = "cvm-data"  # the serial guest/volume.py finds the data volume by


def volume_args(path: Path, virtio: str = "", *, direct: bool = True) -> list[str]:
    """The lease's data volume (a raw file) as a virtio disk with serial `cvm-data`.

    `cache=none` when `direct` (O_DIRECT; some file systems, tmpfs among them, have none):
    the data is not cached twice, in the guest and in the host's page cache. QEMU honours
    the guest's flushes either way. `discard=ignore`: a hole punched in the file would read
    as zeros whose tags fail."""
    cache = "none" if direct else "writeback"
    return [
        "-drive", f"file={path},if=none,id=data,format=raw,cache={cache},discard=ignore",
        "-device", f"virtio-blk-pci,drive=data,serial={DATA_SERIAL}{virtio}",
    ]  # fmt: skip


def supports_direct_io(path: Path) -> bool:
    """Whether the file at `path` opens with O_DIRECT (what `cache=none` needs)."""
    import os

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        return False
    os.close(fd)
    return True
