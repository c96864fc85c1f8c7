"""The QEMU arguments every cvm image guest gets, whichever launcher starts it.

A cvm image boots directly (kernel, initrd, command line), has user-mode networking with
SSH and its workload's service ports forwarded from free ports on the node's public address
(`CVM_NODE_PUBLIC_HOST`, default 127.0.0.1), and talks to the node over a virtio-serial port
to its guest agent. Inside, the guest's TLS front answers each service port with its
attested key (guest/tls_front.py), so the forward carries TLS only.

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

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

from cvm.images import MANIFEST, Image

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


def netdev_arg(
    ssh_port: int,
    *,
    outbound: bool = False,
    host: str = "127.0.0.1",
    forwards: Sequence[tuple[int, int]] = (),
) -> str:
    """The guest's user network: isolated (`restrict=on`) unless `outbound`, with SSH
    forwarded from `host`:`ssh_port` and each (guest port, host port) of `forwards` from
    `host`:host port (a forward into the guest works either way). `host` must be an IPv4
    address: it goes into QEMU's option string, where a comma would add options."""
    restrict = "off" if outbound else "on"
    address = str(ipaddress.IPv4Address(host))  # ValueError for anything else
    rules = [(ssh_port, 22), *((outside, inside) for inside, outside in forwards)]
    for outside, inside in rules:
        for port in (outside, inside):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"a forwarded port is in [1, 65535], got {port!r}")
    forward = ",".join(f"hostfwd=tcp:{address}:{outside}-:{inside}" for outside, inside in rules)
    return f"user,id=net0,restrict={restrict},{forward}"


def image_args(
    image: Image,
    ssh_port: int,
    agent_socket: Path,
    virtio: str = "",
    *,
    outbound: bool = False,
    host: str = "127.0.0.1",
    forwards: Sequence[tuple[int, int]] = (),
) -> list[str]:
    """Direct boot of `image`, SSH and `forwards` (guest port, host port) forwarded from
    `host`, the agent's port, and a v2 image's root file system (`rootfs_args`).

    `-kernel`, `-initrd` and `-append` are exactly what `cvm.images.measure` hashes (with
    `kernel-hashes=on` under SEV-SNP they are part of the launch measurement); the rootfs is
    covered through the verity root hash on the command line."""
    return [
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", image.cmdline, "-no-reboot",
        "-netdev", netdev_arg(ssh_port, outbound=outbound, host=host, forwards=forwards),
        "-device", f"virtio-net-pci,netdev=net0{virtio}",
        "-device", f"virtio-serial-pci{virtio}",
        "-chardev", f"socket,id=agent,path={agent_socket},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
        *rootfs_args(image, virtio),
    ]  # fmt: skip


ROOT_SERIAL = "cvm-root"  # the guest's init-verity finds its root disk by this serial


def rootfs_args(image: Image, virtio: str = "") -> list[str]:
    """A v2 image's rootfs.img as a read-only virtio disk with serial `cvm-root` (none for
    v1). Read-only to the guest; the host can still change the file, which dm-verity in the
    guest turns into read errors, never into other data."""
    if image.rootfs is None:
        return []
    path = str(image.rootfs).replace(",", ",,")  # QEMU's option syntax escapes commas
    return [
        "-drive", f"file={path},if=none,id=root,format=raw,readonly=on",
        "-device", f"virtio-blk-pci,drive=root,serial={ROOT_SERIAL}{virtio}",
    ]  # fmt: skip


MAX_SERVICE_PORTS = 32  # what one GuestAccess announcement carries (cvm.eip712.MAX_ARRAY)


def service_ports(image: Image) -> list[int]:
    """The guest ports the image's workload declares (its manifest's "workload"."ports"),
    sorted; [] for an image without a workload. ValueError for a list the node must not
    forward (not ports, more than MAX_SERVICE_PORTS, or 22, which is SSH)."""
    workload = getattr(image, "workload", None)  # the v2 image format names it
    if workload is None:
        try:
            manifest = json.loads((image.directory / MANIFEST).read_text())
        except FileNotFoundError:
            return []
        workload = manifest.get("workload") if isinstance(manifest, dict) else None
    if not workload:
        return []
    entries = workload.get("ports", []) if isinstance(workload, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_SERVICE_PORTS:
        raise ValueError(f"an image's workload ports are a list of at most {MAX_SERVICE_PORTS}")
    ports: set[int] = set()
    for entry in entries:
        port = entry.get("port") if isinstance(entry, dict) else entry
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"a workload port is an integer in [1, 65535], got {port!r}")
        if port == 22:
            raise ValueError("workload port 22 is the guest's SSH port")
        ports.add(port)
    return sorted(ports)


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
