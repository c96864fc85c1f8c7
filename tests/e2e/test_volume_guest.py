"""A real guest under QEMU (TCG) with a 1 GiB data volume: the renter's client releases the
disk key sealed to the attested guest, the guest formats the volume with authenticated
encryption (LUKS2, aes-xts-plain64 + hmac-sha256) and mounts it, and then:
(a) the volume file on the host holds none of what the guest wrote;
(b) a byte the host flips under the written data makes the guest's read fail with an I/O
    error (never other data), and the agent's status counts the integrity error;
(c) a wrong key on the existing volume is refused without formatting it; the guest stopped
    and launched again on the same volume opens it with the same key ("opened"), data there;
(d) a host that wipes the header gets a fresh volume formatted, which the guest reports and
    the renter's client flags;
and the volume file goes when the lease is over for good.

One guest boot for (a) and (b), one relaunch each for (c) and (d): the tests share them, in
file order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from eth_account import Account

from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import GuestIdentity, seal, verify_guest
from cvm.images import Image, ImageStore, measure
from cvm.secret_release import DiskKeys
from node_agent.launcher.base import GuestSpec, HostBinding
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.signer import SimulatedAmdSp
from tests.fixtures.images import guest_image, image_store  # noqa: F401
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

CHAIN_ID = 31337
REGISTRY = "0x" + "5b" * 20
LEASE = 61
RENTER = Account.create()
BINDING = HostBinding(CHAIN_ID, REGISTRY, RENTER.address)
DISK_KEY = os.urandom(32)
# What the app writes: a line a host could search for, many times over (32 MiB).
MARKER = b"cvm-volume-plaintext-marker-0123456789abcdef\n"
PATTERN_BYTES = 32 * 2**20
CHUNK = 64 * 1024


@dataclass
class Guest:
    identity: GuestIdentity
    key: Path
    known_hosts: Path
    port: int
    seq: int

    def ssh(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", str(self.key), "-p", str(self.port),
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
             "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def launcher(
    tmp_path_factory: pytest.TempPathFactory,
    image_store: ImageStore,  # noqa: F811
) -> Iterator[QemuLauncher]:
    if shutil.which("ssh") is None:
        pytest.fail("the ssh client (Debian's openssh-client) is needed: `make system-packages`")
    base = tmp_path_factory.mktemp("volume-node")
    run = QemuLauncher(
        base / "qemu", SimulatedAmdSp(), qemu_binary=ensure_qemu(), images=image_store,
        volume_dir=base / "volumes", boot_timeout_s=120,
    )  # fmt: skip
    yield run
    for info in run.running():
        run.stop(info.lease_id)


@pytest.fixture(scope="module")
def spec(guest_image: Image) -> GuestSpec:  # noqa: F811
    return GuestSpec(LEASE, 1, 512, 1, measure(guest_image), guest_image.image_id, BINDING)


def renter_ssh_key(directory: Path) -> tuple[Path, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return path, public.decode()


def boot_and_release(
    launcher: QemuLauncher, spec: GuestSpec, directory: Path, nonce: int, key: bytes
) -> Guest:
    """Launch (or find) the guest, verify its report as the renter, release `key` to it."""
    launcher.launch(spec)
    launcher.wait_ready(LEASE)
    got = launcher.get_report(LEASE, nonce)
    bundle = EvidenceBundle(report=got.report, vcek=got.vcek_der, chain=got.cert_chain_pem,
                            chain_id=CHAIN_ID, registry=REGISTRY, lease_id=LEASE, nonce=nonce,
                            guest_key=got.guest_key)  # fmt: skip
    sim_ark = launcher.signer.ark  # type: ignore[attr-defined]
    identity = verify_guest(bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=LEASE,
                            nonce=nonce, renter=RENTER.address,
                            expected_measurement=spec.expected_measurement,
                            trusted_roots=[sim_ark])  # fmt: skip
    ssh_key, public = renter_ssh_key(directory)
    sealed = seal(identity, RENTER, seq=1, ssh_keys=[public], secrets={"cvm.disk_key": key})
    assert key not in sealed.ciphertext
    assert launcher.deliver_secrets(LEASE, sealed.to_json_dict()) == ["ssh_keys", "cvm.disk_key"]
    port = launcher.ssh_port(LEASE)
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(identity.known_hosts_line("127.0.0.1", port))
    return Guest(identity, ssh_key, known_hosts, port, seq=1)


def release_again(launcher: QemuLauncher, guest: Guest, key: bytes) -> None:
    guest.seq += 1
    sealed = seal(guest.identity, RENTER, seq=guest.seq, secrets={"cvm.disk_key": key})
    assert launcher.deliver_secrets(LEASE, sealed.to_json_dict()) == ["cvm.disk_key"]


def volume_state(launcher: QemuLauncher, *, settled_from: str = "", timeout_s: float = 300) -> dict:
    """The agent's volume status once it is no longer opening (nor `settled_from`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        volume = launcher.channel(LEASE).request({"op": "status"}, timeout_s=60)["volume"]
        if volume["state"] not in ("opening", "locked", settled_from):
            return dict(volume)
        if time.monotonic() > deadline:
            pytest.fail(f"the volume did not settle: {volume} {_console(launcher)}")
        time.sleep(1)


def _console(launcher: QemuLauncher) -> str:
    return launcher.read_console(LEASE).decode(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def guest(launcher: QemuLauncher, spec: GuestSpec, tmp_path_factory) -> Guest:
    booted = boot_and_release(launcher, spec, tmp_path_factory.mktemp("renter"), 0, DISK_KEY)
    volume = volume_state(launcher)
    assert volume == {"state": "open", "formatted_at_boot": True, "integrity_errors": 0}, _console(
        launcher
    )
    return booted


@pytest.fixture(scope="module")
def written(guest: Guest, launcher: QemuLauncher) -> Path:
    """The app's data: a small file and 32 MiB of MARKER, written and synced in the guest."""
    before = chunk_digests(launcher.volumes.path(LEASE))
    count = PATTERN_BYTES // len(MARKER) + 1
    script = (
        "import os\n"
        f"line = {MARKER!r}\n"
        f"with open('/data/pattern', 'wb') as f: f.write(line * {count}); os.fsync(f.fileno())\n"
        "with open('/data/hello', 'w') as f: f.write('still here\\n'); os.fsync(f.fileno())\n"
    )
    # dm-integrity writes through its journal first; a suspend writes the journal out to
    # the sectors' own places, where the host then finds (and flips) them.
    done = guest.ssh(
        f"python3 -c {shell_quote(script)} && sync"
        " && dmsetup suspend cvm-data_dif && dmsetup resume cvm-data_dif"
    )
    assert done.returncode == 0, done.stderr
    after = chunk_digests(launcher.volumes.path(LEASE))
    changed = [index for index, digest in after.items() if before.get(index) != digest]
    (launcher.run_dir / "changed.json").write_text(json.dumps(changed))
    return launcher.volumes.path(LEASE)


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def chunk_digests(path: Path) -> dict[int, bytes]:
    """sha256 of each CHUNK of the file, by chunk index."""
    digests = {}
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digests[len(digests)] = hashlib.sha256(chunk).digest()
    return digests


def test_the_guest_formats_and_mounts_the_volume_and_the_key_is_gone(guest, launcher):
    mounted = guest.ssh("grep ' /data ext4 ' /proc/mounts; ls /run/cvm/secrets; dmsetup table")
    assert mounted.returncode == 0, mounted.stderr
    assert "/dev/mapper/cvm-data /data ext4" in mounted.stdout
    assert "cvm.disk_key" not in mounted.stdout  # the workload never sees the key
    # dm-crypt authenticates each sector (HMAC-SHA256 over the XTS ciphertext) and keeps
    # its tags in the dm-integrity device under it; the volume key sits in the kernel keyring.
    assert "capi:authenc(hmac(sha256),xts(aes))-plain64 :96:logon:" in mounted.stdout
    assert "cvm-data_dif: 0 2031880 integrity" in mounted.stdout
    assert DISK_KEY.hex() not in mounted.stdout


def test_the_hosts_volume_file_holds_no_plaintext(written):
    volume_file = written
    assert volume_file.stat().st_mode & 0o777 == 0o600
    tail = MARKER[-16:]
    with volume_file.open("rb") as handle:
        previous = b""
        while chunk := handle.read(1 << 20):
            window = previous + chunk
            assert MARKER[:16] not in window and tail not in window
            assert b"still here" not in window
            previous = chunk[-64:]
    assert DISK_KEY not in volume_file.read_bytes()


def test_a_byte_the_host_flips_reads_as_an_io_error_never_as_other_data(guest, launcher, written):
    changed = json.loads((launcher.run_dir / "changed.json").read_text())
    # The file's 32 MiB are the longest run of chunks the write changed: flip a byte there.
    runs: list[list[int]] = []
    for index in changed:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    longest = max(runs, key=len)
    assert len(longest) * CHUNK >= PATTERN_BYTES // 2, runs[:5]
    offset = longest[len(longest) // 2] * CHUNK + 1000
    with written.open("r+b") as handle:
        handle.seek(offset)
        original = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([original[0] ^ 0x01]))
    try:
        reader = (
            "import os\n"
            f"line = {MARKER!r}\n"
            f"expected = line * {PATTERN_BYTES // len(MARKER) + 1}\n"
            "fd = os.open('/data/pattern', os.O_RDONLY)\n"
            "eio = other = good = 0\n"
            "for start in range(0, len(expected), 4096):\n"
            "    try:\n"
            "        got = os.pread(fd, 4096, start)\n"
            "    except OSError as exc:\n"
            "        eio += exc.errno == 5\n"
            "        continue\n"
            "    if got == expected[start:start + 4096]: good += 1\n"
            "    else: other += 1\n"
            "print(eio, other, good)\n"
        )
        done = guest.ssh(f"echo 3 > /proc/sys/vm/drop_caches && python3 -c {shell_quote(reader)}")
        assert done.returncode == 0, done.stderr
        eio, other, good = map(int, done.stdout.split())
        assert other == 0  # never different data
        assert eio >= 1  # the flipped sector is an I/O error
        assert good >= PATTERN_BYTES // 4096 - 16  # and only around it
        volume = volume_state(launcher)
        assert volume["state"] == "open" and volume["integrity_errors"] >= 1
        assert "INTEGRITY" in _console(launcher)  # reported on the console too
    finally:
        with written.open("r+b") as handle:
            handle.seek(offset)
            handle.write(original)


def test_a_wrong_key_is_refused_and_the_same_key_reopens_after_a_relaunch(
    guest, launcher, spec, written, tmp_path
):
    launcher.stop(LEASE)  # the guest is killed; its volume stays (a relaunch, not the end)
    assert written.exists()
    again = boot_and_release(launcher, spec, tmp_path, 0, os.urandom(32))
    wrong = volume_state(launcher)
    assert wrong["state"] == "error" and "does not open this volume" in wrong["error"]
    release_again(launcher, again, DISK_KEY)
    volume = volume_state(launcher, settled_from="error")
    assert volume == {"state": "open", "formatted_at_boot": False, "integrity_errors": 0}
    data = again.ssh("cat /data/hello && sha256sum /data/pattern")
    assert data.returncode == 0, data.stderr
    lines = data.stdout.splitlines()
    assert lines[0] == "still here"
    expected = MARKER * (PATTERN_BYTES // len(MARKER) + 1)
    assert lines[1].split()[0] == hashlib.sha256(expected).hexdigest()


def test_a_host_that_wipes_the_header_gets_a_fresh_volume_and_the_renter_is_told(
    guest, launcher, spec, written, tmp_path
):
    """The host cannot read the volume, so it may try to make a relaunched guest start afresh
    (wiping both LUKS2 header copies): the guest formats a new, empty volume and says so;
    the renter's client, which saw an earlier guest format it, warns."""
    keys = DiskKeys(tmp_path / "disk-keys.json")
    keys.key_for(guest.identity)
    first = {"state": "open", "formatted_at_boot": True, "integrity_errors": 0}
    assert keys.note_volume(guest.identity, first) is None
    launcher.stop(LEASE)
    with written.open("r+b") as handle:
        handle.write(bytes(16 * 2**20))  # the whole LUKS2 header area, both copies
    again = boot_and_release(launcher, spec, tmp_path, 0, DISK_KEY)
    volume = volume_state(launcher)
    assert volume == {"state": "open", "formatted_at_boot": True, "integrity_errors": 0}
    gone = again.ssh("ls /data")
    assert gone.returncode == 0 and "hello" not in gone.stdout  # nothing of the old data
    warning = keys.note_volume(again.identity, volume)
    assert warning is not None and "formatted again" in warning


def test_the_volume_goes_when_the_lease_is_over(launcher, written):
    launcher.stop(LEASE)
    launcher.discard(LEASE)
    assert not written.exists()
