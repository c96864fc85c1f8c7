"""A service port of a real guest under QEMU (TCG where KVM is unusable), reached over TLS
that only the attested guest can answer.

The image is the default cvm image with one workload file added: the same kernel and
initramfs plus a second cpio archive holding /etc/cvm/workload.json (the kernel unpacks
concatenated archives), and the manifest's "workload" naming port 8080, which is what a
workload image carries (the full workload image with its own services is the `rootfs` and
`svc` work; its e2e runs the example app). The app here is Python's http.server, started
over the renter's attested SSH on the guest's 127.0.0.1:8080 only. What is exercised for
real: the agent's TLS key bound into the report, its TLS front on eth0, the node's forward
from its public host, and the renter's pinned client (and its refusals).
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import GuestIdentity, seal, verify_guest
from cvm.attested_tls import PinMismatch, pinned_client
from cvm.images import Image, ImageStore, measure
from guest.build import _cpio_entry
from node_agent.launcher.base import GuestSpec, HostBinding
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.signer import SimulatedAmdSp
from tests.e2e.test_real_guest import renter_key, ssh
from tests.fixtures.images import guest_image, image_store  # noqa: F401
from tests.fixtures.processes import wait_for
from tests.fixtures.tls import https_server
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

CHAIN_ID, REGISTRY, LEASE = 31337, "0x" + "5a" * 20, 61
RENTER = Account.create()
PORT = 8080
PAGE = b"served inside the attested guest\n"


def with_workload(store: ImageStore, image: Image, directory: Path) -> Image:
    """`image` plus /etc/cvm/workload.json declaring PORT, as a workload image has it."""
    workload = json.dumps({"name": "tls-test", "ports": [{"name": "http", "port": PORT}]})
    extra = io.BytesIO()
    inode = 1
    for name, mode, body in (("etc", 0o40755, b""), ("etc/cvm", 0o40755, b""),
                             ("etc/cvm/workload.json", 0o100644, workload.encode())):  # fmt: skip
        _cpio_entry(extra, name, mode, inode, body)
        inode += 1
    _cpio_entry(extra, "TRAILER!!!", 0, 0, b"")
    source = directory / "with-workload"
    source.mkdir()
    shutil.copyfile(image.kernel, source / "vmlinuz")
    (source / "initrd.cpio").write_bytes(image.initrd.read_bytes() + extra.getvalue())
    manifest = json.loads((image.directory / "manifest.json").read_text())
    from guest.build import sha256_file

    manifest["initrd_sha256"] = sha256_file(source / "initrd.cpio")
    manifest["workload"] = json.loads(workload)
    (source / "manifest.json").write_text(json.dumps(manifest))
    return store.add(source)


@pytest.fixture(scope="module")
def sim_amd() -> SimulatedAmdSp:
    return SimulatedAmdSp()


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    sim_amd: SimulatedAmdSp,
    image_store: ImageStore,  # noqa: F811
    guest_image: Image,  # noqa: F811
) -> Iterator[tuple[QemuLauncher, GuestIdentity]]:
    if shutil.which("ssh") is None:
        pytest.fail("the ssh client (Debian's openssh-client) is needed: `make system-packages`")
    launcher = QemuLauncher(
        tmp_path_factory.mktemp("qemu"), sim_amd, qemu_binary=ensure_qemu(), images=image_store
    )
    image = with_workload(image_store, guest_image, tmp_path_factory.mktemp("image"))
    expected = measure(image)
    binding = HostBinding(CHAIN_ID, REGISTRY, RENTER.address)
    try:
        launcher.launch(GuestSpec(LEASE, 1, 512, 1, expected, image.image_id, binding))
        launcher.wait_ready(LEASE)
        got = launcher.get_report(LEASE, 0)
        bundle = EvidenceBundle(
            report=got.report, vcek=got.vcek_der, chain=got.cert_chain_pem, chain_id=CHAIN_ID,
            registry=REGISTRY, lease_id=LEASE, nonce=0, guest_key=got.guest_key,
        )  # fmt: skip
        guest = verify_guest(
            bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=LEASE, nonce=0,
            renter=RENTER.address, expected_measurement=expected, trusted_roots=[sim_amd.ark],
        )  # fmt: skip
        yield launcher, guest
    finally:
        for info in launcher.running():
            launcher.stop(info.lease_id)


def test_the_service_port_answers_only_over_tls_with_the_attested_key(running, tmp_path):
    launcher, guest = running
    ((guest_port, host_port),) = launcher.port_forwards(LEASE)
    assert guest_port == PORT

    # The front is up with the attested key; the app is not yet: the connection just closes.
    with pinned_client("127.0.0.1", host_port, guest.tls_spki_sha256) as http:
        with pytest.raises(Exception):  # noqa: B017 - httpx's error for a closed connection
            http.get("/")

    # The renter starts the app over attested SSH, on the guest's loopback only.
    key, public = renter_key(tmp_path)
    sealed = seal(guest, RENTER, seq=1, ssh_keys=[public])
    assert launcher.deliver_secrets(LEASE, sealed.to_json_dict()) == ["ssh_keys"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(guest.known_hosts_line("127.0.0.1", launcher.ssh_port(LEASE)))
    start = (
        f"mkdir -p /tmp/www && printf '{PAGE.decode().strip()}\\n' > /tmp/www/index.html && "
        f"(setsid python3 -m http.server {PORT} --bind 127.0.0.1 --directory /tmp/www"
        " >/dev/null 2>&1 < /dev/null &)"
    )
    done = ssh(key, known_hosts, launcher.ssh_port(LEASE), start)
    assert done.returncode == 0, done.stderr

    def fetch() -> bytes | None:
        with pinned_client("127.0.0.1", host_port, guest.tls_spki_sha256) as http:
            answer = http.get("/index.html")
        return answer.content if answer.status_code == 200 else None

    assert wait_for(fetch, 120, interval=1, what="the app behind the TLS front") == PAGE

    # Expecting any other key: refused before a request is sent.
    with https_server() as impostor:
        with pytest.raises(PinMismatch):
            pinned_client("127.0.0.1", host_port, impostor.spki_sha256)
        # A server with another key where the guest's port was announced: refused too.
        with pytest.raises(PinMismatch):
            pinned_client(impostor.host, impostor.port, guest.tls_spki_sha256)

    # The forward carries TLS only: a plain request gets no answer of the app.
    with socket.create_connection(("127.0.0.1", host_port), timeout=30) as raw:
        raw.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        raw.settimeout(30)
        try:
            answer = raw.recv(65536)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert PAGE not in answer and b"HTTP/1.0 200" not in answer

    # The certificate the guest presents is the attested key's, whatever its names.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", host_port), timeout=30) as raw:
        with probe.wrap_socket(raw) as conn:
            from cvm.attestation.binding import spki_sha256

            der = conn.getpeercert(binary_form=True)
            assert der is not None and spki_sha256(der) == guest.tls_spki_sha256
            assert conn.version() == "TLSv1.3"
