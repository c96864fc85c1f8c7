"""The dApp SDK: ask the chain whether a lease runs the code you expect on real AMD hardware.

    from cvm.sdk import AttestationClient
    client = AttestationClient("http://127.0.0.1:8545", "0xAttestationRegistry...")
    status = client.status(lease_id)
    status.verified, status.measurement.hex(), status.verified_at
    client.is_attested(lease_id, expected_measurement)   # the same answer a contract gets

It reads only the `IAttestationRegistry` interface (stable), so it works against any
deployment without the rest of cvm's contracts or its backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3 import Web3

from cvm.chain import (
    Attestation,
    AttestationRegistryClient,
    AttestationStatus,
    EventDecoder,
    open_web3,
)
from cvm.renter import attestation_dict

__all__ = ["AttestationClient", "LeaseAttestation"]


@dataclass(frozen=True)
class LeaseAttestation(Attestation):
    """The latest attestation of a lease, as the registry records it (`node` None if none)."""

    @property
    def verified(self) -> bool:
        """Verified by the verifiers' quorum (expiry is judged by the chain: see `status`)."""
        return self.status == AttestationStatus.VERIFIED

    def as_dict(self) -> dict[str, Any]:
        return {"lease_id": self.lease_id, **attestation_dict(self)}


class AttestationClient:
    """Read-only client of one `AttestationRegistry` over JSON-RPC (the typed chain client)."""

    def __init__(self, rpc: str | Web3, registry: str) -> None:
        self.w3 = rpc if isinstance(rpc, Web3) else open_web3(rpc)
        self._registry = AttestationRegistryClient(self.w3, registry, EventDecoder({}))

    def status(self, lease_id: int) -> LeaseAttestation:
        """The lease's latest attestation (status NONE if it was never attested)."""
        record = self._registry.attestation_of(lease_id)
        fields = {**record.__dict__, "node": None if int(record.node, 16) == 0 else record.node}
        return LeaseAttestation(**fields)

    def is_attested(self, lease_id: int, expected_measurement: bytes) -> bool:
        """True only while the attestation is Verified, unexpired and of this measurement."""
        return self._registry.is_attested(lease_id, expected_measurement)
