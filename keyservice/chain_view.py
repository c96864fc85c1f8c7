"""What a holder asks the chain, behind one small interface (`HolderChain`): the lease's renter
and status, its latest attestation and nonce, its key policy and `isReleasable`, and the events
that wake the holder. `ChainView` answers from a `cvm.chain.ChainClient` (KeyService through
`chain.keys`); tests may answer from a fake.

The chain is the holder's only source of truth: the renter, the policy and the attestation are
never taken from the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cvm.chain import Attestation, ChainClient, ChainError, LeaseStatus

# The events the holder acts on (contract, name).
WATCHED = {
    ("AttestationRegistry", "AttestationVerified"),
    ("LeaseMarket", "LeaseClosed"),
    ("KeyService", "KeyPolicySet"),
    ("KeyService", "KeyMeasurementsSet"),
}


@dataclass(frozen=True)
class KeyPolicy:
    """The lease's key-release policy as KeyService keeps it (INTERFACES 3)."""

    measurements: tuple[bytes, ...]
    failover: bool
    threshold: int
    holders: tuple[str, ...]
    key_version: int
    manifest_hash: bytes

    @classmethod
    def from_any(cls, value: Any) -> KeyPolicy:
        """From the bindings' dataclass (snake_case attributes), a dict of the Solidity
        names, or the raw ABI tuple in the struct's order."""
        if isinstance(value, KeyPolicy):
            return value
        if isinstance(value, tuple | list):
            measurements, failover, threshold, holders, version, manifest_hash = value
        elif isinstance(value, dict):
            measurements, failover, threshold = (
                value["measurements"], value["failover"], value["threshold"],
            )  # fmt: skip
            holders, version = value["holders"], value["keyVersion"]
            manifest_hash = value["manifestHash"]
        else:
            measurements, failover, threshold = value.measurements, value.failover, value.threshold
            holders, version = value.holders, value.key_version
            manifest_hash = value.manifest_hash
        return cls(
            measurements=tuple(bytes(m) for m in measurements),
            failover=bool(failover),
            threshold=int(threshold),
            holders=tuple(str(h) for h in holders),
            key_version=int(version),
            manifest_hash=bytes(manifest_hash),
        )


@dataclass(frozen=True)
class Event:
    """One event the holder acts on (from `ChainEvent`)."""

    name: str
    lease_id: int
    report_hash: bytes | None = None
    block: int = 0


class HolderChain(Protocol):
    chain_id: int
    registry: str  # AttestationRegistry: the EIP-712 domain of manifests, HOST_DATA, epochs

    def head(self) -> int: ...

    def events(self, from_block: int, to_block: int) -> list[Event]: ...

    def lease(self, lease_id: int) -> tuple[str, LeaseStatus]:
        """(renter, status)."""
        ...

    def attestation(self, lease_id: int) -> Attestation: ...

    def attestation_nonce(self, lease_id: int) -> int: ...

    def key_policy(self, lease_id: int) -> KeyPolicy | None: ...

    def is_releasable(self, lease_id: int, measurement: bytes) -> bool: ...


class ChainView:
    """`HolderChain` over a read-only `ChainClient`."""

    def __init__(self, client: ChainClient) -> None:
        self.client = client
        self.chain_id = client.deployment.chain_id
        self.registry = client.deployment.attestation_registry

    @property
    def _keys(self) -> Any:
        keys = getattr(self.client, "keys", None)
        if keys is None:
            raise ChainError("this deployment has no KeyService (deployment.key_service)")
        return keys

    def head(self) -> int:
        try:
            return int(self.client.w3.eth.block_number)
        except Exception as exc:  # web3 raises many types for a dead endpoint
            raise ChainError(f"eth_blockNumber failed: {exc}") from None

    def events(self, from_block: int, to_block: int) -> list[Event]:
        found = []
        for event in self.client.fetch_events(from_block, to_block):
            if (event.contract, event.name) not in WATCHED:
                continue
            report_hash = event.args.get("reportHash")
            found.append(
                Event(
                    event.name,
                    int(event.args["leaseId"]),
                    bytes(report_hash) if report_hash is not None else None,
                    event.block_number,
                )
            )
        return found

    def lease(self, lease_id: int) -> tuple[str, LeaseStatus]:
        lease = self.client.leases.get_lease(lease_id)
        return lease.renter, lease.status

    def attestation(self, lease_id: int) -> Attestation:
        return self.client.attestations.attestation_of(lease_id)

    def attestation_nonce(self, lease_id: int) -> int:
        return self.client.attestations.attestation_nonce(lease_id)

    def key_policy(self, lease_id: int) -> KeyPolicy | None:
        policy = self._keys.key_policy_of(lease_id)  # None: the lease has no policy
        return None if policy is None else KeyPolicy.from_any(policy)

    def is_releasable(self, lease_id: int, measurement: bytes) -> bool:
        return bool(self._keys.is_releasable(lease_id, measurement))
