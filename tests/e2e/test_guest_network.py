"""A real guest under QEMU (TCG where KVM is unusable) tries to reach its host's loopback.

QEMU's user networking maps the guest's gateway 10.0.2.2 to the host's own 127.0.0.1, where
a node runs its broker, the embedded chain's RPC with unlocked keys, the backend and other
guests' SSH forwards. The renter has root in its guest, so the guest here runs a probe of
its own (the cvm image with a test /init appended to its initramfs): it connects to
10.0.2.2:PORT, where the test listens on the host's 127.0.0.1, and says on its console
what happened. It also serves a banner on its port 22, which the host reads through the
launcher's SSH forward, so the guest's network is shown to work while it reaches nothing.

The same probe under the old arguments (no `restrict=on`, which is also what an operator
gets with `guest_outbound` on) does reach the listener: that is the attack, and it shows the
probe would catch it.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.images import Image, ImageStore, measure
from node_agent.launcher.base import GuestSpec, HostBinding
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.signer import SimulatedAmdSp
from tests.fixtures.images import guest_image, image_store  # noqa: F401
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

BINDING = HostBinding(31337, "0x" + "5a" * 20, "0x" + "7e" * 20)
BANNER = b"cvm-probe-banner"
PROBE_TIMEOUT_S = 240.0  # boot under TCG on a loaded machine, then three 5 s attempts

# The guest's /init for this test: the cvm image's network set-up, then the probe.
PROBE_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/cvm/modules); do modprobe "$module" 2>/dev/null; done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
port=$(sed -n 's/.*cvm.probe=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
(while true; do echo cvm-probe-banner | nc -l -p 22; done) &
for attempt in 1 2 3; do
  python3 -c "
import socket, sys
try:
    socket.create_connection(('10.0.2.2', int(sys.argv[1])), timeout=5).close()
    print('cvm-probe: connected')
except OSError as exc:
    print('cvm-probe: failed', exc)
" "$port"
done
echo "cvm-probe: done"
while true; do sleep 60; done
"""


def _cpio_entry(name: str, mode: int, body: bytes) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [1, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
    out = header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4)
    return out + body + b"\0" * (-len(body) % 4)


def probe_image(store: ImageStore, base: Image, work: Path, port: int) -> Image:
    """`base` with the probe's /init: the kernel unpacks an appended newc archive over the
    first one, so the guest boots the same system with another /init."""
    from cvm.images import sha256_file

    source = work / f"probe-{port}"
    source.mkdir()
    shutil.copyfile(base.directory / "vmlinuz", source / "vmlinuz")
    overlay = _cpio_entry("init", 0o100755, PROBE_INIT.encode())
    overlay += _cpio_entry("TRAILER!!!", 0, b"")
    initrd = (base.directory / "initrd.cpio").read_bytes() + overlay
    (source / "initrd.cpio").write_bytes(initrd)
    manifest = json.loads((base.directory / "manifest.json").read_text())
    manifest["cmdline"] = f"{base.cmdline} cvm.probe={port}"
    manifest["kernel_sha256"] = sha256_file(source / "vmlinuz")
    manifest["initrd_sha256"] = sha256_file(source / "initrd.cpio")
    (source / "manifest.json").write_text(json.dumps(manifest))
    return store.add(source)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on the host's 127.0.0.1 (a free port), as the node's services are."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def accepted(server: socket.socket) -> int:
    """How many connections reached the listener (it is non-blocking: none waits)."""
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def run_probe(launcher: QemuLauncher, lease_id: int, image: Image) -> str:
    """Boot the probe guest and return its console once it says it is done."""
    launcher.launch(GuestSpec(lease_id, 1, 256, 1, measure(image), image.image_id, BINDING))
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        # The console lives in QEMU's ring buffer; each read takes what is new.
        text += launcher.read_console(lease_id).decode(errors="replace")
        if "cvm-probe: done" in text:
            return text
        time.sleep(0.5)
    pytest.fail(f"the probe guest did not finish within {PROBE_TIMEOUT_S:.0f} s:\n{text[-3000:]}")


def banner_through_forward(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        return conn.recv(64)


def make_launcher(root: Path, store: ImageStore, *, outbound: bool) -> QemuLauncher:
    return QemuLauncher(root, SimulatedAmdSp(), qemu_binary=ensure_qemu(), images=store,
                        guest_outbound=outbound)  # fmt: skip


def test_guest_cannot_connect_to_the_hosts_loopback(
    listener: socket.socket,
    guest_image: Image,  # noqa: F811
    tmp_path: Path,
) -> None:
    """FAILS on the old arguments (user networking without restrict=on): the guest's
    connection to 10.0.2.2:PORT lands on the listener on the host's 127.0.0.1."""
    store = ImageStore(tmp_path / "images")
    port = listener.getsockname()[1]
    image = probe_image(store, guest_image, tmp_path, port)
    launcher = make_launcher(tmp_path / "run", store, outbound=False)
    try:
        console = run_probe(launcher, 1, image)
        # The network itself works: the forward into the guest reaches its port 22.
        assert banner_through_forward(launcher.ssh_port(1)).startswith(BANNER)
    finally:
        launcher.stop(1)
    assert console.count("cvm-probe: failed") == 3, console[-2000:]
    assert "cvm-probe: connected" not in console
    assert accepted(listener) == 0


def test_with_outbound_on_the_guest_reaches_loopback_as_the_old_arguments_did(
    listener: socket.socket,
    guest_image: Image,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The probe catches the attack: without restrict=on (the old arguments, or an operator's
    `guest_outbound`) the guest connects to the host's 127.0.0.1. Documented in the README:
    an operator who turns outbound on gives guests the host's loopback."""
    store = ImageStore(tmp_path / "images")
    port = listener.getsockname()[1]
    image = probe_image(store, guest_image, tmp_path, port)
    launcher = make_launcher(tmp_path / "run", store, outbound=True)
    assert "restrict=off" in " ".join(launcher.command_line(
        GuestSpec(2, 1, 256, 1, bytes(48), image.image_id, BINDING), image, 2222))  # fmt: skip
    try:
        console = run_probe(launcher, 2, image)
    finally:
        launcher.stop(2)
    assert "cvm-probe: connected" in console, console[-2000:]
    assert accepted(listener) >= 1
