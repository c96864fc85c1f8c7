"""What the agent reads about a lease from the chain alone: its state and its terms.

The expected measurement and re-attestation interval live in the `LeaseCreated` event (the
attestation registry keeps them privately), so the agent reads that one event by its
indexed lease id; the leases this node accepted are found by `LeaseAccepted`'s node topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from web3.exceptions import Web3Exception

from cvm.chain import ChainClient, ChainError, Lease


@dataclass(frozen=True)
class LeaseTerms:
    """The public spec of a lease, as its creation event recorded it."""

    lease_id: int
    vcpu: int
    memory_mib: int
    disk_gib: int
    expected_measurement: bytes
    reattest_interval: int


def lease_terms(chain: ChainClient, lease: Lease) -> LeaseTerms:
    """The terms of `lease` (ChainError if its `LeaseCreated` event cannot be found)."""
    event = chain.leases.contract.events.LeaseCreated
    try:
        logs = event.get_logs(
            from_block=chain.deployment.start_block, argument_filters={"leaseId": lease.lease_id}
        )
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"cannot read LeaseCreated of lease {lease.lease_id}: {exc}") from exc
    if not logs:
        raise ChainError(f"no LeaseCreated event for lease {lease.lease_id}")
    args = logs[0]["args"]
    spec = args["spec"]
    reattest = spec["reattestInterval"] if isinstance(spec, Mapping) else spec[5]
    return LeaseTerms(
        lease_id=lease.lease_id,
        vcpu=lease.vcpu,
        memory_mib=lease.memory_mib,
        disk_gib=lease.disk_gib,
        expected_measurement=bytes(args["expectedMeasurement"]),
        reattest_interval=int(reattest),
    )


def leases_accepted_by(chain: ChainClient, node_key: str) -> list[int]:
    """Ids of every lease this node key ever accepted, oldest first."""
    event = chain.leases.contract.events.LeaseAccepted
    try:
        logs = event.get_logs(
            from_block=chain.deployment.start_block, argument_filters={"nodeKey": node_key}
        )
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"cannot read LeaseAccepted of {node_key}: {exc}") from exc
    return sorted({int(log["args"]["leaseId"]) for log in logs})
