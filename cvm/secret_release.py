"""The renter's side of getting into an attested guest: release secrets to it, find it.

`release` reads the lease's latest attestation from the chain (Verified, its report hash,
its nonce), fetches that evidence from the backend, verifies it here (AMD's roots, or the
simulated root only when the caller trusts it for a local stack; the lease's expected
measurement; REPORT_DATA bound to this lease, nonce and the guest key), seals the SSH keys
and secrets to the guest key, and hands the ciphertext to the backend for the node.
`ssh_target` gives where to connect and the guest's attested SSH host key to pin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from cvm.api_client import ApiClient
from cvm.api_models import SealedSecretsIn
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import GuestIdentity, ReleaseRefused, seal, verify_guest
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
    bundle = EvidenceBundle.decode(api.get_evidence("0x" + attestation.report_hash.hex()))
    if bundle.report_hash != attestation.report_hash:
        raise ReleaseRefused("the backend served evidence for another report than the chain's")
    identity = verify_guest(
        bundle,
        chain_id=chain.deployment.chain_id,
        registry=chain.deployment.attestation_registry,
        lease_id=lease_id,
        nonce=nonce,
        expected_measurement=terms.expected_measurement,
        trusted_roots=roots,
    )
    return AttestedGuest(lease_id, identity)


def release(
    chain: ChainClient,
    api: ApiClient,
    lease_id: int,
    *,
    ssh_keys: Sequence[str] = (),
    secrets: Mapping[str, bytes] = {},
    roots: Sequence[x509.Certificate] | None = None,
) -> tuple[AttestedGuest, int]:
    """Verify the guest, seal to it, queue the ciphertext; (the guest, the message id).

    `api` must be signed in as the lease's renter."""
    guest = attested_guest(chain, api, lease_id, roots=roots)
    sealed = seal(guest.identity, ssh_keys=ssh_keys, secrets=secrets)
    queued = api.put_sealed_secrets(lease_id, SealedSecretsIn(**sealed.to_json_dict()))
    return guest, queued.id
