"""What the agent reads about a lease from the chain alone: its state, its terms, and until
when this node may still give it back for free.

The expected measurement and re-attestation interval live in the `LeaseCreated` event (the
attestation registry keeps them privately), read by the lease market client through the
event's indexed lease id.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.chain import ChainClient, Lease


@dataclass(frozen=True)
class LeaseTerms:
    """The public spec of a lease the agent serves, as its creation event recorded it."""

    lease_id: int
    vcpu: int
    memory_mib: int
    disk_gib: int
    expected_measurement: bytes
    reattest_interval: int


def lease_terms(chain: ChainClient, lease: Lease) -> LeaseTerms:
    """The terms of `lease` (ChainError if its `LeaseCreated` event cannot be found)."""
    created = chain.leases.lease_terms(lease.lease_id, chain.deployment.start_block)
    return LeaseTerms(
        lease_id=lease.lease_id,
        vcpu=lease.vcpu,
        memory_mib=lease.memory_mib,
        disk_gib=lease.disk_gib,
        expected_measurement=created.expected_measurement,
        reattest_interval=created.spec.reattest_interval,
    )


def decline_deadline(chain: ChainClient, lease_id: int) -> int:
    """The last chain time (seconds) at which this node may still decline the lease for free
    (`LeaseMarket.freeDeclineDeadline`: half the attestation window after accept; later a
    decline burns a growing share of the bond, all of it at `attestBy`). The one place the
    agent learns it; 0 once the lease is no longer active (nothing left to decline)."""
    return chain.leases.free_decline_deadline(lease_id)
