"""Liveness: challenge the attested leases of a node whose heartbeats stopped.

A node that died keeps its verified attestation until it expires (up to the lease's
re-attestation interval), so the renter would pay for time nobody served. The verifier
asks such a node to attest afresh (`LeaseMarket.challenge`): a live node answers within
the registry's challenge window; a dead one does not, payment stops from the challenge and
the renter closes with the refund. Each lease is challenged at most once per
`min_interval_s` (the registry's MIN_CHALLENGE_INTERVAL) by this verifier, so a silent node
is never made to burn gas on answers, and this verifier never on refused transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from backend.store import Attestation, Heartbeat, Lease, Store
from cvm.api_models import AttestationState, LeaseState
from cvm.chain.errors import ChainError

log = logging.getLogger(__name__)

Challenge = Callable[[int], str]  # lease id -> tx hash


@dataclass(frozen=True)
class LivenessResult:
    """What one pass did (for logs and tests)."""

    silent_nodes: list[str] = field(default_factory=list)
    challenged: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # lease id -> why the chain refused


class LivenessWatch:
    """Finds nodes silent for longer than `stale_after_s` and challenges their leases."""

    def __init__(
        self,
        store: Store,
        challenge: Challenge,
        *,
        stale_after_s: float,
        min_interval_s: float,
        clock: Callable[[], float],
        on_silent: Callable[[str], None] | None = None,
        skip: Callable[[int], bool] | None = None,
    ) -> None:
        self.store = store
        self.challenge = challenge
        self.stale_after_s = stale_after_s
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.on_silent = on_silent
        # Leases another job takes care of (the failover watch, for leases that may move).
        self.skip = skip
        self._last_try: dict[int, float] = {}  # lease id -> when this verifier last tried

    def silent_leases(self) -> dict[str, list[int]]:
        """Active leases with a verified attestation, by node, whose node sent no heartbeat
        for `stale_after_s` (or never did)."""
        heard_since = datetime.fromtimestamp(self.clock() - self.stale_after_s, UTC)
        with self.store.new_session(read_only=True) as session:
            rows = session.execute(
                select(Lease.id, Lease.node)
                .join(Attestation, Attestation.lease_id == Lease.id)
                .outerjoin(Heartbeat, Heartbeat.node == Lease.node)
                .where(
                    Lease.status == LeaseState.ACTIVE,
                    Attestation.status == AttestationState.VERIFIED,
                    (Heartbeat.node.is_(None)) | (Heartbeat.received_at < heard_since),
                )
                .order_by(Lease.id)
            ).all()
        silent: dict[str, list[int]] = {}
        for lease_id, node in rows:
            if node:
                silent.setdefault(str(node), []).append(int(lease_id))
        return silent

    def run(self) -> LivenessResult:
        """One pass: tell the matcher which nodes fell silent, challenge their leases."""
        result = LivenessResult()
        now = self.clock()
        for node, lease_ids in self.silent_leases().items():
            result.silent_nodes.append(node)
            if self.on_silent is not None:
                self.on_silent(node)
            for lease_id in lease_ids:
                if self.skip is not None and self.skip(lease_id):
                    continue
                last = self._last_try.get(lease_id)
                if last is not None and now < last + self.min_interval_s:
                    continue
                # Recorded before sending: a refused or failed call is not repeated within
                # the interval either (the chain would refuse a second challenge anyway).
                self._last_try[lease_id] = now
                try:
                    tx_hash = self.challenge(lease_id)
                except ChainError as exc:
                    result.refused[lease_id] = str(exc)[:300]
                    log.warning("lease %s: challenge of silent node %s refused: %s",
                                lease_id, node, exc)  # fmt: skip
                    continue
                result.challenged.append(lease_id)
                log.warning("lease %s: node %s is silent: challenged (%s)", lease_id, node, tx_hash)
        return result
