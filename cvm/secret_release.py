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

import json
import os
import secrets as token
from collections.abc import Callable, Mapping, Sequence
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
) -> Released:
    """Verify the guest, seal to it, sign as `renter` (its eth_account LocalAccount), queue the
    ciphertext. `api` must be signed in as the lease's renter."""
    guest = attested_guest(chain, api, lease_id, roots=roots)
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
    challenge = token.token_bytes(32)
    output = run([*GUEST_STATUS_COMMAND, challenge.hex()])
    try:
        answer = json.loads(output.strip().splitlines()[-1] if output.strip() else "")
    except ValueError:
        raise StatusRefused("the guest's status answer is not JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise StatusRefused(f"the guest did not answer its status: {answer!r:.200}")
    return verify_status(guest, answer, challenge)


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
