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

from cvm.chain import AttestationStatus, ChainError, load_artifact

__all__ = ["AttestationClient", "LeaseAttestation"]


@dataclass(frozen=True)
class LeaseAttestation:
    """The latest attestation of a lease, as the registry records it."""

    lease_id: int
    status: AttestationStatus
    node: str | None
    report_hash: bytes
    measurement: bytes
    reported_tcb: int
    submitted_at: int
    verified_at: int
    expires_at: int

    @property
    def verified(self) -> bool:
        """Verified by the verifiers' quorum (expiry is judged by the chain: see `status`)."""
        return self.status == AttestationStatus.VERIFIED

    def as_dict(self) -> dict[str, Any]:
        return {
            "lease_id": self.lease_id,
            "status": self.status.name.lower(),
            "node": self.node,
            "report_hash": "0x" + self.report_hash.hex(),
            "measurement": "0x" + self.measurement.hex(),
            "reported_tcb": self.reported_tcb,
            "submitted_at": self.submitted_at,
            "verified_at": self.verified_at,
            "expires_at": self.expires_at,
        }


class AttestationClient:
    """Read-only client of one `AttestationRegistry` over JSON-RPC."""

    def __init__(self, rpc: str | Web3, registry: str) -> None:
        self.w3 = rpc if isinstance(rpc, Web3) else Web3(Web3.HTTPProvider(rpc))
        self._registry = self.w3.eth.contract(
            address=Web3.to_checksum_address(registry),
            abi=load_artifact("AttestationRegistry").abi,
        )

    def status(self, lease_id: int) -> LeaseAttestation:
        """The lease's latest attestation (status NONE if it was never attested)."""
        try:
            values = self._registry.functions.attestationOf(lease_id).call()
        except Exception as exc:
            raise ChainError(f"attestationOf({lease_id}) failed: {exc}") from exc
        status, node, report_hash, measurement, tcb, submitted, verified, expires = values
        return LeaseAttestation(
            lease_id=lease_id,
            status=AttestationStatus(status),
            node=None if int(node, 16) == 0 else str(node),
            report_hash=bytes(report_hash),
            measurement=bytes(measurement),
            reported_tcb=int(tcb),
            submitted_at=int(submitted),
            verified_at=int(verified),
            expires_at=int(expires),
        )

    def is_attested(self, lease_id: int, expected_measurement: bytes) -> bool:
        """True only while the attestation is Verified, unexpired and of this measurement."""
        try:
            return bool(self._registry.functions.isAttested(lease_id, expected_measurement).call())
        except Exception as exc:
            raise ChainError(f"isAttested({lease_id}) failed: {exc}") from exc
