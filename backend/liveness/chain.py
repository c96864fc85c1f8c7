"""`FailoverChain` over a verifier key's `ChainClient` (KeyService, LeaseMarket, registry)."""

from __future__ import annotations

from backend.liveness.watch import AttestationFacts
from cvm.chain import ChainClient, LeaseStatus


class ChainFailover:
    """The failover watch's chain reads and transactions, from the verifier's key."""

    def __init__(self, client: ChainClient) -> None:
        self.client = client

    def failover_allowed(self, lease_id: int) -> bool:
        keys = self.client.keys
        return keys is not None and bool(keys.failover_allowed(lease_id))

    def attestation(self, lease_id: int) -> AttestationFacts:
        attestations = self.client.attestations
        latest = attestations.attestation_of(lease_id)
        return AttestationFacts(
            status=latest.status,
            submitted_at=int(latest.submitted_at),
            challenged_at=attestations.challenged_at(lease_id),
        )

    def active_node(self, lease_id: int) -> str | None:
        lease = self.client.leases.get_lease(lease_id)
        return lease.node_key.lower() if lease.status == LeaseStatus.ACTIVE else None

    def challenge(self, lease_id: int) -> str:
        return self.client.leases.challenge(lease_id).tx_hash

    def failover(self, lease_id: int) -> str:
        return self.client.leases.failover(lease_id).tx_hash

    def challenge_window(self) -> int:
        return self.client.attestations.challenge_window()

    def min_challenge_interval(self) -> int:
        return self.client.attestations.min_challenge_interval()
