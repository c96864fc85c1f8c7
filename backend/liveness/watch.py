"""The failover watch: move a lease off a node that went silent, when its renter allows it.

A lease whose on-chain key policy allows failover (`KeyService.failoverAllowed`) and whose
node sent no heartbeat for `timeout_s` is taken through the chain's fault path:

    silent, attestation Verified, not challenged since it was submitted -> LeaseMarket.challenge
    challenged, window running (Verified), or a fresh report Pending   -> wait
    attestation Expired (challenge unanswered, re-attestation missed),
    or no attestation at all (the first one may be missed)              -> LeaseMarket.failover

The chain decides every fault: `failover` is sent only after `eth_estimateGas` accepted it
(the sender estimates first), so a lease that is not yet at fault costs a read, never a
reverted transaction. A lease without a policy allowing failover is left to the verifier's
plain liveness challenge (`backend.verifier.liveness`), as before.

A node may also ask to be challenged (`POST /v1/leases/{id}/challenge-request`,
`backend.domain.challenge_requests`): its guest was relaunched after a crash, the standing
attestation vouches for the dead guest's keys, and the registry takes no fresh report in the
first half of the interval unless the lease was challenged since. The watch challenges such a
lease once, when it is still ACTIVE with the node that asked, its attestation Verified and not
challenged since it was submitted, and the chain's MIN_CHALLENGE_INTERVAL since the last
challenge passed; then (or when any of that no longer holds) it clears the request. Nobody else
is harmed: a challenge only stops the asking node's own pay until it re-attests, which it does
at once (the node answers challenges on its next pass); the renter's escrow only gains.

Bounded: at most `per_pass` leases are read on chain per pass (the longest-silent first), and
each lease waits `retry_s` between two looks while it is not yet at fault. Never twice: a
sent transaction puts the lease on hold (a challenge until its window ended, a failover until
the store no longer has the lease on that node); a send whose outcome is unknown (no receipt
in time) holds the lease for `unsure_hold_s`, and the sender's nonce record (`cvm.chain.
sender`) keeps this key's transactions from colliding with the verifier's votes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select

from backend.domain import challenge_requests
from backend.store import Heartbeat, Lease, Store
from cvm.api_models import LeaseState
from cvm.chain import AttestationStatus
from cvm.chain.errors import ChainError, ContractRevert

log = logging.getLogger(__name__)

# How long one answer of `failoverAllowed` is believed (the renter may change its policy).
POLICY_TTL_S = 30.0


@dataclass(frozen=True)
class AttestationFacts:
    """What the registry says of a lease's latest attestation, now."""

    status: AttestationStatus
    submitted_at: int
    challenged_at: int


class FailoverChain(Protocol):
    """The chain as the failover watch uses it (a verifier key's client; see `chain_actions`)."""

    def failover_allowed(self, lease_id: int) -> bool: ...

    def attestation(self, lease_id: int) -> AttestationFacts: ...

    def active_node(self, lease_id: int) -> str | None:
        """The lease's node (lower-case) while it is ACTIVE on chain, None otherwise."""
        ...

    def challenge(self, lease_id: int) -> str: ...

    def failover(self, lease_id: int) -> str: ...

    def challenge_window(self) -> int: ...

    def min_challenge_interval(self) -> int: ...


@dataclass
class FailoverResult:
    """What one pass did (for logs, tests and the step report)."""

    silent: list[int] = field(default_factory=list)  # candidate leases looked at
    not_allowed: list[int] = field(default_factory=list)  # policy forbids failover
    challenged: list[int] = field(default_factory=list)
    requested: list[int] = field(default_factory=list)  # challenged at their node's request
    failed_over: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # not at fault yet
    errors: dict[int, str] = field(default_factory=dict)


class FailoverWatch:
    """One verifier key's failover watch over the store's leases and heartbeats."""

    def __init__(
        self,
        store: Store,
        chain: FailoverChain,
        *,
        timeout_s: float,
        clock: Callable[[], float],
        per_pass: int = 16,
        retry_s: float = 5.0,
        unsure_hold_s: float = 300.0,
        on_silent: Callable[[str], None] | None = None,
    ) -> None:
        if timeout_s <= 0 or per_pass < 1:
            raise ValueError("timeout_s must be > 0 and per_pass >= 1")
        self.store = store
        self.chain = chain
        self.timeout_s = timeout_s
        self.clock = clock
        self.per_pass = per_pass
        self.retry_s = retry_s
        self.unsure_hold_s = unsure_hold_s
        self.on_silent = on_silent
        # (lease, node) -> when this watch may look at it again.
        self._hold: dict[tuple[int, str], float] = {}
        # (lease, node) pairs this watch sent a failover for: never again for that pair.
        self._failed_over: set[tuple[int, str]] = set()
        self._policy: dict[int, tuple[float, bool]] = {}  # lease -> (read at, allowed)
        self._window: int | None = None
        self._min_interval: int | None = None
        # (lease, node, submitted_at) challenged at the node's request: never twice for the
        # same standing attestation, even if clearing the request failed.
        self._requested: set[tuple[int, str, int]] = set()
        self._request_hold: dict[tuple[int, str], float] = {}  # (lease, node) -> next look

    # --- what the other jobs ask ---------------------------------------------------------

    def handles(self, lease_id: int) -> bool:
        """Whether this watch takes care of the lease (its policy allows failover, as last
        read): the plain liveness challenge leaves it alone then."""
        known = self._policy.get(lease_id)
        return known is not None and known[1]

    # --- the pass ---------------------------------------------------------------------------

    def silent_leases(self) -> list[tuple[int, str]]:
        """(lease, node) of active leases whose node sent no heartbeat for `timeout_s` (or
        never did), the longest-silent node first."""
        heard_since = datetime.fromtimestamp(self.clock() - self.timeout_s, UTC)
        with self.store.new_session(read_only=True) as session:
            rows = session.execute(
                select(Lease.id, Lease.node, Heartbeat.received_at)
                .outerjoin(Heartbeat, Heartbeat.node == Lease.node)
                .where(
                    Lease.status == LeaseState.ACTIVE,
                    Lease.node.is_not(None),
                    (Heartbeat.node.is_(None)) | (Heartbeat.received_at < heard_since),
                )
            ).all()
        never = datetime.fromtimestamp(0, UTC)
        ordered = sorted(rows, key=lambda row: (row[2] or never, row[0]))
        return [(int(lease_id), str(node).lower()) for lease_id, node, _ in ordered]

    def run(self) -> FailoverResult:
        """One pass; a failing lease spares the others."""
        result = FailoverResult()
        now = self.clock()
        candidates = self.silent_leases()
        current = set(candidates)
        # Forget what no longer applies: a lease moved on (or its node spoke again).
        for key in [key for key in self._hold if key not in current]:
            del self._hold[key]
        self._failed_over &= current
        told: set[str] = set()
        looked = 0
        for lease_id, node in candidates:
            key = (lease_id, node)
            if key in self._failed_over or now < self._hold.get(key, float("-inf")):
                continue
            if looked >= self.per_pass:
                break
            looked += 1
            result.silent.append(lease_id)
            if self.on_silent is not None and node not in told:
                told.add(node)
                self.on_silent(node)
            try:
                self._one(lease_id, node, now, result)
            except ChainError as exc:  # an RPC outage: the next pass tries again
                result.errors[lease_id] = str(exc)[:300]
                self._hold[key] = now + self.retry_s
                log.warning("lease %s: failover watch could not read the chain: %s", lease_id, exc)
        self._requests(now, result)
        return result

    # --- challenges a node asked for ------------------------------------------------------

    def _requests(self, now: float, result: FailoverResult) -> None:
        """Challenge the leases whose node asked for it (at most `per_pass` looked at)."""
        with self.store.new_session(read_only=True) as session:
            requests = challenge_requests.pending(session, self.per_pass * 4)
        looked = 0
        for lease_id, node in requests:
            key = (lease_id, node)
            if now < self._request_hold.get(key, float("-inf")):
                continue
            if looked >= self.per_pass:
                break
            looked += 1
            try:
                done = self._requested_one(lease_id, node, now, result)
            except ChainError as exc:
                result.errors[lease_id] = str(exc)[:300]
                self._request_hold[key] = now + self.retry_s
                log.warning("lease %s: could not read the chain for a challenge request: %s",
                            lease_id, exc)  # fmt: skip
                continue
            if done:
                self._request_hold.pop(key, None)
                with self.store.session() as session:
                    challenge_requests.clear(session, lease_id, node)

    def _requested_one(self, lease_id: int, node: str, now: float, result: FailoverResult) -> bool:
        """Act on one node's request; True once it is done with (challenged, or moot)."""
        with self.store.new_session(read_only=True) as session:
            lease = session.get(Lease, lease_id)
            ours = (
                lease is not None
                and lease.status == LeaseState.ACTIVE
                and (lease.node or "").lower() == node
            )
        if not ours:
            # Closed, or another node's now: a challenge would stop someone else's pay.
            log.info(
                "lease %s: challenge request of %s dropped: not its active node", lease_id, node
            )
            return True
        if self.chain.active_node(lease_id) != node:
            # The store lags the chain: the chain's word decides whose lease it is.
            log.info(
                "lease %s: challenge request of %s dropped: not its node on chain", lease_id, node
            )
            return True
        facts = self.chain.attestation(lease_id)
        if facts.status != AttestationStatus.VERIFIED:
            return True  # re-attested already (Pending), or nothing a challenge could ask
        if facts.challenged_at > facts.submitted_at:
            return True  # already challenged since: the node may answer now
        marker = (lease_id, node, facts.submitted_at)
        if marker in self._requested:
            return True  # never twice for the same attestation
        ready_at = facts.challenged_at + self._interval() if facts.challenged_at else 0
        if now < ready_at:
            # The chain takes no challenge before MIN_CHALLENGE_INTERVAL since the last one:
            # keep the request until then (or until the node re-attests by itself).
            self._request_hold[(lease_id, node)] = min(float(ready_at), now + POLICY_TTL_S)
            return False
        try:
            tx_hash = self.chain.challenge(lease_id)
        except ContractRevert as exc:
            # The estimate refused it (e.g. this verifier is the node's own party): not ours.
            result.errors[lease_id] = f"challenge refused: {exc}"[:300]
            log.info("lease %s: requested challenge refused: %s", lease_id, exc)
            return True
        except ChainError as exc:
            result.errors[lease_id] = f"challenge unsure: {exc}"[:300]
            self._request_hold[(lease_id, node)] = now + self.unsure_hold_s
            log.warning("lease %s: requested challenge sent without a receipt: %s", lease_id, exc)
            return False
        self._requested.add(marker)
        if len(self._requested) > 10_000:  # bounded; the chain's challengedAt guards anyway
            self._requested.clear()
            self._requested.add(marker)
        result.challenged.append(lease_id)
        result.requested.append(lease_id)
        log.info("lease %s: challenged at its node's request (%s): its relaunched guest may"
                 " attest now", lease_id, tx_hash)  # fmt: skip
        return True

    def _allowed(self, lease_id: int, now: float) -> bool:
        known = self._policy.get(lease_id)
        if known is not None and now - known[0] < POLICY_TTL_S:
            return known[1]
        allowed = bool(self.chain.failover_allowed(lease_id))
        self._policy[lease_id] = (now, allowed)
        if len(self._policy) > 10_000:  # bounded: drop the oldest answers
            for stale in sorted(self._policy, key=lambda k: self._policy[k][0])[:5_000]:
                del self._policy[stale]
        return allowed

    def _one(self, lease_id: int, node: str, now: float, result: FailoverResult) -> None:
        key = (lease_id, node)
        if not self._allowed(lease_id, now):
            result.not_allowed.append(lease_id)
            self._hold[key] = now + POLICY_TTL_S
            return
        facts = self.chain.attestation(lease_id)
        status = facts.status
        if status in (AttestationStatus.EXPIRED, AttestationStatus.NONE):
            # Expired: the fault is proven. None: the first attestation may be missed; the
            # chain says whether its deadline passed (the estimate refuses it otherwise).
            self._failover(lease_id, node, now, result)
        elif status == AttestationStatus.VERIFIED:
            if facts.challenged_at > facts.submitted_at:
                result.waiting.append(lease_id)  # challenged: the window runs
                self._hold[key] = now + self.retry_s
            elif facts.challenged_at and now < facts.challenged_at + self._interval():
                # Answered a challenge less than MIN_CHALLENGE_INTERVAL ago: the chain takes
                # no new one; the attestation's own expiry is the fault to wait for.
                result.waiting.append(lease_id)
                self._hold[key] = now + self.retry_s
            else:
                self._challenge(lease_id, node, now, result)
        else:
            # Pending (the verifiers decide; past their window it reads Expired) or Rejected
            # (the lease closes by itself).
            result.waiting.append(lease_id)
            self._hold[key] = now + self.retry_s

    def _interval(self) -> int:
        if self._min_interval is None:
            self._min_interval = int(self.chain.min_challenge_interval())
        return self._min_interval

    def _challenge_window(self) -> int:
        if self._window is None:
            self._window = int(self.chain.challenge_window())
        return self._window

    def _challenge(self, lease_id: int, node: str, now: float, result: FailoverResult) -> None:
        key = (lease_id, node)
        try:
            tx_hash = self.chain.challenge(lease_id)
        except ContractRevert as exc:
            result.errors[lease_id] = f"challenge refused: {exc}"[:300]
            self._hold[key] = now + self.retry_s
            log.info("lease %s: challenge refused: %s", lease_id, exc)
            return
        except ChainError as exc:
            result.errors[lease_id] = f"challenge unsure: {exc}"[:300]
            self._hold[key] = now + self.unsure_hold_s
            log.warning("lease %s: challenge sent without a receipt: %s", lease_id, exc)
            return
        result.challenged.append(lease_id)
        # Nothing to do before the window ends (plus a block or two).
        self._hold[key] = now + self._challenge_window() + 1
        log.warning(
            "lease %s: node %s silent for %ss: challenged (%s)", lease_id, node,
            int(self.timeout_s), tx_hash,
        )  # fmt: skip

    def _failover(self, lease_id: int, node: str, now: float, result: FailoverResult) -> None:
        key = (lease_id, node)
        try:
            tx_hash = self.chain.failover(lease_id)
        except ContractRevert as exc:
            # Not at fault yet (e.g. the first attestation's deadline is still ahead).
            result.waiting.append(lease_id)
            self._hold[key] = now + self.retry_s
            log.debug("lease %s: failover not yet: %s", lease_id, exc)
            return
        except ChainError as exc:
            result.errors[lease_id] = f"failover unsure: {exc}"[:300]
            self._hold[key] = now + self.unsure_hold_s
            log.warning("lease %s: failover sent without a receipt: %s", lease_id, exc)
            return
        self._failed_over.add(key)
        result.failed_over.append(lease_id)
        log.warning("lease %s: failed over from silent node %s (%s)", lease_id, node, tx_hash)
