"""A real guest under QEMU (TCG where KVM is unusable): the cvm image boots, its agent binds
its key into the report, the renter's client verifies it and seals a secret to that key,
and the renter reaches the secret over SSH with the guest's attested host key pinned.

The negatives run against the same guests: a node that boots another image, a report
replayed with another guest key, a verifier that does not trust the simulated root, the
host's own files, which never hold the secret in the clear, and the host itself, which
seals its own SSH key to the guest (a valid HPKE seal without the renter's signature), asks
for a second lease, and replays the renter's message: all refused inside the real guest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from eth_account import Account

from cvm import guest_eip712
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import GuestIdentity, ReleaseRefused, seal, verify_guest
from cvm.images import Image, ImageStore, measure
from node_agent.errors import GuestRefused, LauncherError
from node_agent.launcher.base import GuestSpec, GuestState, HostBinding
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.signer import SimulatedAmdSp
from tests.fixtures.images import guest_image, image_store, variant  # noqa: F401
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

CHAIN_ID = 31337
REGISTRY = "0x" + "5a" * 20
SECRET = b"the renter's database password\n"
GOOD, OTHER_IMAGE = 41, 42
RENTER = Account.create()  # the lease's renter: HOST_DATA binds its address
NODE_KEY = Account.create()  # the host's own key
BINDING = HostBinding(CHAIN_ID, REGISTRY, RENTER.address)


@pytest.fixture(scope="module")
def sim_amd() -> SimulatedAmdSp:
    return SimulatedAmdSp()


@pytest.fixture(scope="module")
def launcher(
    tmp_path_factory: pytest.TempPathFactory,
    sim_amd: SimulatedAmdSp,
    image_store: ImageStore,  # noqa: F811
) -> Iterator[QemuLauncher]:
    if shutil.which("ssh") is None:
        pytest.fail("the ssh client (Debian's openssh-client) is needed: `make system-packages`")
    run = QemuLauncher(
        tmp_path_factory.mktemp("qemu"), sim_amd, qemu_binary=ensure_qemu(), images=image_store
    )
    yield run
    for info in run.running():
        run.stop(info.lease_id)


@pytest.fixture(scope="module")
def guests(
    launcher: QemuLauncher,
    guest_image: Image,  # noqa: F811
    image_store: ImageStore,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, Image]:
    """Two leases that both expect `guest_image`; the second node boots another image."""
    other = variant(image_store, guest_image, tmp_path_factory.mktemp("variant"), "other")
    expected = measure(guest_image)
    booted = {GOOD: guest_image, OTHER_IMAGE: other}
    for lease_id, image in booted.items():
        launcher.launch(GuestSpec(lease_id, 1, 512, 1, expected, image.image_id, BINDING))
    for lease_id in booted:
        # boot_timeout_s (60 s): a guest that is not up by then fails the test.
        launcher.wait_ready(lease_id)
    return booted


def evidence(launcher: QemuLauncher, lease_id: int, nonce: int = 0) -> EvidenceBundle:
    got = launcher.get_report(lease_id, nonce)
    return EvidenceBundle(
        report=got.report,
        vcek=got.vcek_der,
        chain=got.cert_chain_pem,
        chain_id=CHAIN_ID,
        registry=REGISTRY,
        lease_id=lease_id,
        nonce=nonce,
        guest_key=got.guest_key,
    )


def renter_key(directory: Path) -> tuple[Path, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / "id_ed25519"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return path, public.decode()


def ssh(key: Path, known_hosts: Path, port: int, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port),
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
         "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def test_attested_guest_gets_the_secret_and_the_renter_gets_in(launcher, guests, sim_amd, tmp_path):
    bundle = evidence(launcher, GOOD)
    expected = measure(guests[GOOD])
    binding = {"chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": GOOD, "nonce": 0,
               "renter": RENTER.address}  # fmt: skip

    # Simulated means simulated: without trusting the simulated root, nothing is released.
    with pytest.raises(ReleaseRefused, match="root"):
        verify_guest(bundle, **binding, expected_measurement=expected)

    guest = verify_guest(bundle, **binding, expected_measurement=expected,
                         trusted_roots=[sim_amd.ark])  # fmt: skip
    assert guest.measurement == expected
    key, public = renter_key(tmp_path)
    sealed = seal(guest, RENTER, seq=1, ssh_keys=[public], secrets={"db-password": SECRET})
    assert SECRET not in sealed.ciphertext
    assert launcher.deliver_secrets(GOOD, sealed.to_json_dict()) == ["ssh_keys", "db-password"]
    # Replayed by the node: refused (a replay would bring back a revoked key or old secret).
    with pytest.raises(GuestRefused, match="not above the installed 1"):
        launcher.deliver_secrets(GOOD, sealed.to_json_dict())

    port = launcher.ssh_port(GOOD)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(guest.known_hosts_line("127.0.0.1", port))
    done = ssh(key, known_hosts, port, "sha256sum /run/cvm/secrets/db-password")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == hashlib.sha256(SECRET).hexdigest()

    # A process inside the guest gets a result signed by the attested signer (for dApps).
    request_id = os.urandom(32)
    command = f"printf 42 | python3 /usr/lib/cvm/agent.py sign-result {request_id.hex()}"
    signed = ssh(key, known_hosts, port, command)
    assert signed.returncode == 0, signed.stderr
    result = json.loads(signed.stdout)
    message = guest_eip712.guest_result_message(CHAIN_ID, REGISTRY, GOOD, request_id, b"42")
    assert guest_eip712.recover(message, result["signature"]) == guest.signer

    # The host key is pinned: another key under that name is refused before any login.
    impostor = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    known_hosts.write_text(f"[127.0.0.1]:{port} {impostor.decode()}\n")
    refused = ssh(key, known_hosts, port, "true")
    assert refused.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in refused.stderr

    # The host carried the secret but holds it nowhere in the clear.
    for path in launcher.guest_dir(GOOD).rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_bytes(), path


def test_the_hosts_own_ssh_key_never_gets_in(launcher, guests, sim_amd, tmp_path):
    """The host got root in the "confidential" VM before issue 17: it sealed its own
    `{"ssh_keys": ...}` to the attested X25519 key (HPKE base mode authenticates nobody, and
    the key is in the evidence the node uploads) and the guest installed it. Now the real
    guest refuses it without the renter's signature, and ssh with the host's key fails."""
    bundle = evidence(launcher, GOOD, nonce=2)
    renter_view = verify_guest(
        bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=GOOD, nonce=2,
        renter=RENTER.address, expected_measurement=measure(guests[GOOD]),
        trusted_roots=[sim_amd.ark],
    )  # fmt: skip
    host_key, host_public = renter_key(tmp_path)  # the operator's own SSH key this time
    # What the node can make: the same guest, sealed to and signed by its own key.
    as_node = GuestIdentity(**{**_slots(renter_view), "renter": NODE_KEY.address})
    for seq in (2, 10**6):
        forged = seal(as_node, NODE_KEY, seq=seq, ssh_keys=[host_public], secrets={"x": b"h"})
        with pytest.raises(GuestRefused, match="not by the lease's renter"):
            launcher.deliver_secrets(GOOD, forged.to_json_dict())
        # ... or under a signature the renter made for another message of the same seq.
        other = seal(renter_view, RENTER, seq=seq, secrets={"y": b"the renter's"})
        borrowed = {**forged.to_json_dict(), "signature": other.signature.hex()}
        with pytest.raises(GuestRefused, match="not by the lease's renter"):
            launcher.deliver_secrets(GOOD, borrowed)
    port = launcher.ssh_port(GOOD)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(renter_view.known_hosts_line("127.0.0.1", port))
    denied = ssh(host_key, known_hosts, port, "true")
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied.stderr

    # The guest's own word (signed by its attested signer) on what it installed: seq 1 only.
    challenge = os.urandom(32)
    status = launcher.channel(GOOD).request({"op": "status", "challenge": challenge.hex()})
    signed = guest_eip712.guest_status_message(CHAIN_ID, REGISTRY, GOOD, 1, challenge)
    assert status["seq"] == 1
    assert guest_eip712.recover(signed, status["signature"]) == renter_view.signer


def test_the_guest_serves_one_lease_for_its_life(launcher, guests):
    """One guest, many leases: before issue 17 the same guest attested any lease digest the
    host sent. Now a bind to another lease or renter is refused by the real guest."""
    channel = launcher.channel(GOOD)
    for other in ({"lease_id": GOOD + 100, "renter": RENTER.address},
                  {"lease_id": GOOD, "renter": NODE_KEY.address}):  # fmt: skip
        with pytest.raises(GuestRefused, match="bound to lease"):
            channel.request({"op": "bind", "chain_id": CHAIN_ID, "registry": REGISTRY, **other})
    # Attest after the refused re-bind: still this lease's digest, checked by the launcher.
    assert evidence(launcher, GOOD, nonce=3).lease_id == GOOD


def test_node_booting_another_image_is_rejected_and_gets_nothing(launcher, guests, sim_amd):
    bundle = evidence(launcher, OTHER_IMAGE)
    with pytest.raises(ReleaseRefused, match="MEASUREMENT"):
        verify_guest(
            bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=OTHER_IMAGE, nonce=0,
            renter=RENTER.address, expected_measurement=measure(guests[GOOD]),
            trusted_roots=[sim_amd.ark],
        )  # fmt: skip
    # It measures as the image it really booted, not as the lease expected.
    verify_guest(
        bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=OTHER_IMAGE, nonce=0,
        renter=RENTER.address, expected_measurement=measure(guests[OTHER_IMAGE]),
        trusted_roots=[sim_amd.ark],
    )  # fmt: skip
    # A renter who is not the one HOST_DATA binds gets nothing from this guest either.
    with pytest.raises(ReleaseRefused, match="HOST_DATA"):
        verify_guest(
            bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=OTHER_IMAGE, nonce=0,
            renter=NODE_KEY.address, expected_measurement=measure(guests[OTHER_IMAGE]),
            trusted_roots=[sim_amd.ark],
        )  # fmt: skip


def test_replayed_report_with_another_guest_key_gets_nothing(launcher, guests, sim_amd):
    from guest.agent import GuestKeys

    real = evidence(launcher, GOOD, nonce=1)
    attacker = GuestKeys().public  # a host that would like the secret sealed to its own key
    replayed = EvidenceBundle(**{**_fields(real), "guest_key": attacker})
    with pytest.raises(ReleaseRefused, match="REPORT_DATA"):
        verify_guest(
            replayed, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=GOOD, nonce=1,
            renter=RENTER.address, expected_measurement=measure(guests[GOOD]),
            trusted_roots=[sim_amd.ark],
        )  # fmt: skip
    # An old report (nonce 1) for a new round (nonce 2) is refused the same way.
    with pytest.raises(ReleaseRefused, match="nonce"):
        verify_guest(
            real, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=GOOD, nonce=2,
            renter=RENTER.address, expected_measurement=measure(guests[GOOD]),
            trusted_roots=[sim_amd.ark],
        )  # fmt: skip


def test_stopped_guest_is_gone(launcher, guests):
    launcher.stop(OTHER_IMAGE)
    assert launcher.status(OTHER_IMAGE).state == GuestState.MISSING
    with pytest.raises(LauncherError):
        launcher.get_report(OTHER_IMAGE, 0)
    assert not any(p.name.startswith(f"{OTHER_IMAGE}.") for p in launcher.socket_dir.iterdir())
    assert os.path.isdir(launcher.run_dir)


def _fields(bundle: EvidenceBundle) -> dict:
    return {name: getattr(bundle, name) for name in bundle.__dataclass_fields__}


def _slots(guest: GuestIdentity) -> dict:
    return {name: getattr(guest, name) for name in guest.__slots__}
