"""The renter's side of getting into an attested guest: release secrets to it, find it.

`release` reads the lease's latest attestation and its renter from the chain (Verified, its
report hash, its nonce), fetches that evidence from the backend, verifies it here (AMD's
roots, or the simulated root only when the caller trusts it for a local stack; the lease's
expected measurement; REPORT_DATA bound to this lease, nonce and the guest key; HOST_DATA
bound to this lease and renter), seals the SSH keys and secrets to the guest key, signs
them with the renter's key and the next sequence number, and hands the ciphertext to the
backend for the node.

Sequence numbers: the guest refuses any seq not above the last it installed, so a replayed
or older message never installs. The client picks max(its own record, the backend's) + 1:
the backend's number is only a hint (it cannot make the guest accept anything), its own
record (`SeqLedger`) keeps it going up even when the backend forgets. `guest_status` reads
the guest's signed installed seq (over the attested SSH channel) so a withheld update shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets as token
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from cvm.api_client import ApiClient
from cvm.api_models import SealedSecretsIn
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import (
    GuestIdentity,
    ReleaseRefused,
    StatusRefused,
    seal,
    verify_guest,
    verify_status,
)
from cvm.chain import AttestationStatus, ChainClient


def trusted_roots(
    trust_simulated: bool, sim_amd_dir: object = None
) -> list[x509.Certificate] | None:
    """AMD's roots (None); with `trust_simulated`, also the local stack's simulated ones."""
    if not trust_simulated:
        return None
    from pathlib import Path

    from cvm.attestation.sim import roots_trusting_simulated

    return roots_trusting_simulated(Path(str(sim_amd_dir)))


@dataclass(frozen=True)
class AttestedGuest:
    lease_id: int
    identity: GuestIdentity

    @property
    def simulated(self) -> bool:
        """Signed by the simulated AMD-SP (trusted only because the caller said so)."""
        return self.identity.amd_root is AmdRoot.SIMULATED


def attested_guest(
    chain: ChainClient,
    api: ApiClient,
    lease_id: int,
    *,
    roots: Sequence[x509.Certificate] | None,
) -> AttestedGuest:
    """The lease's guest as its latest Verified attestation proves it, checked here."""
    terms = chain.leases.lease_terms(lease_id)
    attestation = chain.attestations.attestation_of(lease_id)
    if attestation.status != AttestationStatus.VERIFIED:
        raise ReleaseRefused(f"lease {lease_id} is not Verified on chain ({attestation.status})")
    nonce = chain.attestations.attestation_nonce(lease_id) - 1
    renter = chain.leases.get_lease(lease_id).renter  # the chain's word, not the backend's
    bundle = EvidenceBundle.decode(api.get_evidence("0x" + attestation.report_hash.hex()))
    if bundle.report_hash != attestation.report_hash:
        raise ReleaseRefused("the backend served evidence for another report than the chain's")
    identity = verify_guest(
        bundle,
        chain_id=chain.deployment.chain_id,
        registry=chain.deployment.attestation_registry,
        lease_id=lease_id,
        nonce=nonce,
        renter=renter,
        expected_measurement=terms.expected_measurement,
        trusted_roots=roots,
    )
    return AttestedGuest(lease_id, identity)


class SeqLedger:
    """The last sequence number this client sealed per lease (a small JSON file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def _key(guest: GuestIdentity) -> str:
        return f"{guest.chain_id}:{guest.registry.lower()}:{guest.lease_id}"

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}

    def last(self, guest: GuestIdentity) -> int:
        return self._read().get(self._key(guest), 0)

    def record(self, guest: GuestIdentity, seq: int) -> None:
        data = self._read()
        data[self._key(guest)] = max(seq, data.get(self._key(guest), 0))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, sort_keys=True))
        os.replace(temporary, self.path)


# The sealed secret that opens the lease's encrypted data volume in the guest (guest/volume.py).
DISK_KEY = "cvm.disk_key"
DISK_KEY_SIZE = 32


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by this user only (0600) from its first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())  # a disk key lost in a crash is a volume lost
    os.chmod(temporary, 0o600)  # a leftover temporary file of another mode
    os.replace(temporary, path)


class DiskKeys:
    """The data-volume key of each lease this client rents, made once (32 random bytes) and
    kept beside the seq ledger (mode 0600): every release to the lease's guest carries the
    same key, so a relaunched guest opens the volume its predecessor wrote. Losing this file
    loses the volume's data (nobody else holds the key).

    It also remembers which guests (by guest key) said they formatted the volume: a second
    one means the volume was started afresh after the first had data (the host wiped it or
    gave another), which the renter must be told."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def _key(guest: GuestIdentity) -> str:
        return f"{guest.chain_id}:{guest.registry.lower()}:{guest.lease_id}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One read-modify-write at a time, across processes: two clients releasing at once
        (two leases, or the same one twice) must not drop each other's new key."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # Never replaced by a fresh key: that would lock the renter out of the volume.
            raise ReleaseRefused(
                f"{self.path} is damaged ({exc}): restore it from a backup"
            ) from None
        if not isinstance(data, dict):
            raise ReleaseRefused(f"{self.path} is not a disk-key file: restore it from a backup")
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def key_for(self, guest: GuestIdentity) -> bytes:
        """The lease's disk key, made and saved on first use (saved before it is returned,
        so no key is ever sealed that this file does not hold)."""
        with self._locked():
            return self._key_for(guest)

    def _key_for(self, guest: GuestIdentity) -> bytes:
        data = self._read()
        entry = data.get(self._key(guest), {})
        try:
            key = bytes.fromhex(str(entry.get("key", "")))
        except ValueError:
            key = b""
        if len(key) == DISK_KEY_SIZE:
            return key
        if entry:
            raise ReleaseRefused(
                f"{self.path}: the disk key of lease {guest.lease_id} is damaged; restore it"
            )
        key = token.token_bytes(DISK_KEY_SIZE)
        data[self._key(guest)] = {"key": key.hex(), "formatted_by": []}
        _write_private(self.path, json.dumps(data, sort_keys=True, indent=1))
        return key

    def has_key(self, guest: GuestIdentity) -> bool:
        return self._key(guest) in self._read()

    def note_volume(self, guest: GuestIdentity, volume: Mapping[str, Any]) -> str | None:
        """Record what the guest said of its volume; a warning when a guest formatted it
        although an earlier guest of the lease had formatted it already (its data is gone)."""
        if not volume.get("formatted_at_boot"):
            return None
        with self._locked():
            return self._note_volume(guest)

    def _note_volume(self, guest: GuestIdentity) -> str | None:
        data = self._read()
        entry = data.get(self._key(guest))
        if entry is None:
            return None
        formatted_by = [str(x) for x in entry.get("formatted_by", [])]
        this = guest.guest_key.hex()
        if this not in formatted_by:
            formatted_by.append(this)
            entry["formatted_by"] = formatted_by
            _write_private(self.path, json.dumps(data, sort_keys=True, indent=1))
        if formatted_by.index(this) > 0:
            return (
                f"the volume of lease {guest.lease_id} was formatted again by a later guest:"
                " what earlier guests wrote is gone (the node wiped or replaced the volume)"
            )
        return None


def volume_wanted(chain: ChainClient, lease_id: int, workload_disk: bool = False) -> bool:
    """Whether releases to the lease's guest carry the disk key: its image's workload
    declares a disk, or the lease has disk space (a volume the guest opens at /data)."""
    return workload_disk or chain.leases.get_lease(lease_id).disk_gib > 0


# How far above our own record the backend's number may be (messages sent from another
# machine); more is a lying backend burning the guest's seq space (see next_seq).
MAX_SEQ_JUMP = 2**32


def next_seq(api: ApiClient, guest: GuestIdentity, ledger: SeqLedger | None) -> int:
    """max(our record, the backend's) + 1: the backend's number alone could be rolled back.

    The backend's number is refused when it is far above ours: signed, a seq near 2**64
    would leave the guest (which only takes a higher one) unable to take any later message,
    so a revoked SSH key could never be replaced there."""
    local = ledger.last(guest) if ledger is not None else 0
    backend = api.sealed_secrets_seq(guest.lease_id)
    if backend > local + MAX_SEQ_JUMP:
        raise ReleaseRefused(
            f"the backend says seq {backend} was queued for lease {guest.lease_id}, far above"
            f" this client's {local}: not signing a number that would exhaust the guest's"
            " sequence (a lying backend)"
        )
    return max(local, backend) + 1


@dataclass(frozen=True)
class Released:
    guest: AttestedGuest
    message_id: int
    seq: int


def release(
    chain: ChainClient,
    api: ApiClient,
    lease_id: int,
    *,
    renter: Any,
    ssh_keys: Sequence[str] = (),
    secrets: Mapping[str, bytes] = {},
    roots: Sequence[x509.Certificate] | None = None,
    ledger: SeqLedger | None = None,
    disk_keys: DiskKeys | None = None,
) -> Released:
    """Verify the guest, seal to it, sign as `renter` (its eth_account LocalAccount), queue the
    ciphertext. `api` must be signed in as the lease's renter. With `disk_keys`, the lease's
    disk key goes with the secrets (as `cvm.disk_key`)."""
    if DISK_KEY in secrets:
        raise ReleaseRefused(f"{DISK_KEY} is made and kept by this client, not given")
    guest = attested_guest(chain, api, lease_id, roots=roots)
    if disk_keys is not None:
        secrets = {**secrets, DISK_KEY: disk_keys.key_for(guest.identity)}
    seq = next_seq(api, guest.identity, ledger)
    sealed = seal(guest.identity, renter, seq=seq, ssh_keys=ssh_keys, secrets=secrets)
    if ledger is not None:
        ledger.record(guest.identity, seq)  # before sending: a number is never used twice
    queued = api.put_sealed_secrets(lease_id, SealedSecretsIn(**sealed.to_json_dict()))
    return Released(guest, queued.id, seq)


# The guest agent's own command line, run as root over the attested SSH channel.
GUEST_STATUS_COMMAND = ("python3", "/usr/lib/cvm/agent.py", "status")


def guest_status(guest: GuestIdentity, run: Callable[[list[str]], str]) -> int:
    """The seq the guest has installed, as its attested signer signs it for a fresh challenge.

    `run` executes a command in the guest (an SSH session pinned to the attested host key)
    and returns its standard output; StatusRefused if the answer is not the guest's word."""
    return guest_status_with_volume(guest, run)[0]


VOLUME_STATES = ("absent", "locked", "opening", "open", "error")


def volume_view(answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `volume` part of a guest's status answer, checked (None if it has none). Over the
    attested SSH channel it is the guest's word (the signature covers the seq only)."""
    volume = answer.get("volume")
    if volume is None:
        return None
    errors = volume.get("integrity_errors") if isinstance(volume, dict) else None
    if (
        not isinstance(volume, dict)
        or volume.get("state") not in VOLUME_STATES
        or not isinstance(volume.get("formatted_at_boot"), bool)
        or isinstance(errors, bool)
        or not isinstance(errors, int)
        or errors < 0
    ):
        raise StatusRefused("the guest's volume status is malformed")
    view: dict[str, Any] = {
        "state": volume["state"],
        "formatted_at_boot": volume["formatted_at_boot"],
        "integrity_errors": errors,
    }
    if isinstance(volume.get("error"), str):
        view["error"] = volume["error"][:300]
    return view


def guest_status_with_volume(
    guest: GuestIdentity, run: Callable[[list[str]], str]
) -> tuple[int, dict[str, Any] | None]:
    """`guest_status`, and what the same answer says of the data volume (`volume_view`)."""
    challenge = token.token_bytes(32)
    output = run([*GUEST_STATUS_COMMAND, challenge.hex()])
    try:
        answer = json.loads(output.strip().splitlines()[-1] if output.strip() else "")
    except ValueError:
        raise StatusRefused("the guest's status answer is not JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise StatusRefused(f"the guest did not answer its status: {answer!r:.200}")
    return verify_status(guest, answer, challenge), volume_view(answer)


def relayed_status(api: ApiClient, guest: GuestIdentity) -> int | None:
    """The seq the guest installed, from its signed status as its node relayed it (challenge
    zero), or None when the node has relayed none. StatusRefused when it is not the guest's
    word. No freshness: a node can show an older status (less installed), never a newer one,
    since the guest's seq only goes up and only its attested signer signs it."""
    from cvm.api_client import ApiError

    try:
        view = api.guest_status(guest.lease_id)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise
    answer = {"lease_id": view.lease_id, "seq": view.seq, "signature": view.signature}
    return verify_status(guest, answer, bytes(32))
