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


def console_args(serial_log: Path) -> list[str]:
    """No default devices, no display, the serial console to a file (`cvm lease logs`)."""
    # append=on (O_APPEND): the console relay truncates the file once it shipped it, and
    # QEMU's next write lands at the new end, not at its old offset (a file that only grew).
    return ["-nodefaults", "-display", "none",
            "-chardev", f"file,id=console,path={serial_log},append=on",
            "-serial", "chardev:console"]  # fmt: skip


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
