"""The matcher: assigns each new lease to a node, persists the reservation, dispatches it.

Life of a match (`ReservationState`): `reserved` (capacity held, task sent to the node's
queue) -> `accepted` (the node accepted on chain; held until a later heartbeat includes
the guest) or
`expired` (no accept before the deadline: the next best node is tried, never the same one
again) or `released` (another node accepted, the lease closed). A reservation on a node
whose heartbeats stopped is expired at once, so its lease goes to the next node.

Among replicas only the leader matches (see `backend.leadership`); its index is rebuilt
from the store when it becomes leader and follows heartbeats stored by any replica. The
store itself allows one live reservation per lease (a partial unique index), so even two
matchers racing cannot reserve one lease twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.matching.index import Demand, MatchIndex, NodeEntry, Reservation
from backend.repeats import RepeatedConditions
from backend.store import ChainEvent, Heartbeat, Lease, Match, Node, ReservationState, Store
from cvm.api_models import LeaseState

log = logging.getLogger(__name__)

Dispatch = Callable[[int, str], None]  # (lease id, node address)


def reputation(verified: int, rejected: int, faults: int) -> float:
    """Laplace-smoothed share of good on-chain outcomes: a new node starts at 0.5."""
    return (verified + 1) / (verified + rejected + faults + 2)


def node_entry(node: Node) -> NodeEntry:
    return NodeEntry(
        address=node.address,
        tee_type=node.tee_type,
        vcpus=node.vcpus,
        memory_mib=node.memory_mib,
        disk_gib=node.disk_gib,
        price_per_vcpu_second=node.price_per_vcpu_second,
        stake=node.stake,
        reputation=reputation(node.attestations_verified, node.attestations_rejected, node.faults),
        active=node.active,
    )


def registry_min_stake(session: Session) -> int:
    """NodeRegistry's minimum stake, from its latest indexed `MinStakeSet` (0 if none yet)."""
    args = session.scalar(
        select(ChainEvent.args)
        .where(ChainEvent.name == "MinStakeSet")
        .order_by(ChainEvent.block_number.desc(), ChainEvent.log_index.desc())
        .limit(1)
    )
    return int(args["minStake"]) if args else 0


def declined_by(session: Session, lease_id: int) -> frozenset[str]:
    """The node keys the chain never lets take `lease_id` again (`declinedBy`): those that
    declined it and those it failed over from, from its indexed events."""
    rows = session.execute(
        select(ChainEvent.name, ChainEvent.args).where(
            ChainEvent.name.in_(("LeaseDeclined", "LeaseFailedOver")),
            ChainEvent.lease_id == lease_id,
        )
    )
    return frozenset(
        str(args["nodeKey" if name == "LeaseDeclined" else "oldNode"]).lower()
        for name, args in rows
    )


def failed_over(session: Session, lease_id: int) -> bool:
    """Whether `lease_id` ever failed over (an indexed `LeaseFailedOver`)."""
    return (
        session.scalar(
            select(ChainEvent.id)
            .where(ChainEvent.name == "LeaseFailedOver", ChainEvent.lease_id == lease_id)
            .limit(1)
        )
        is not None
    )


def demand_of(lease: Lease, registry_minimum: int = 0) -> Demand:
    """What the lease needs; the chain's accept demands max(lease minimum, registry minimum)."""
    return Demand(
        lease_id=lease.id,
        tee_type=lease.tee_type,
        vcpus=lease.vcpus,
        memory_mib=lease.memory_mib,
        disk_gib=lease.disk_gib,
        min_node_stake=max(lease.min_node_stake, registry_minimum),
        max_rate_per_second=lease.max_rate_per_second,
    )


def _reservation(match: Match) -> Reservation:
    return Reservation(
        match.lease_id, match.node, match.vcpus, match.memory_mib, match.disk_gib, match.score
    )


_LEASE_LOCK_STRIPES = 256


class Matcher:
    """Matches open leases to nodes; safe to call from several threads."""

    def __init__(
        self,
        store: Store,
        dispatch: Dispatch,
        *,
        accept_timeout_s: float,
        stale_after_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.dispatch = dispatch
        self.accept_timeout_s = accept_timeout_s
        self.clock = clock
        self.index = MatchIndex(stale_after_s=stale_after_s, clock=clock)
        # One lease is matched by one thread at a time (the index itself is atomic per node).
        # A fixed set of striped locks, so the table never grows with the leases ever seen.
        self._lease_locks = [threading.Lock() for _ in range(_LEASE_LOCK_STRIPES)]
        self.conditions = RepeatedConditions(log)
        # Heartbeats received up to here (by any replica) are in the index.
        self._heartbeats_seen = datetime.fromtimestamp(0, UTC)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- state ----------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Load nodes, heartbeats and live reservations from the store."""
        with self.store.session() as session:
            nodes = session.scalars(select(Node)).all()
            heartbeats = {h.node: h for h in session.scalars(select(Heartbeat))}
            live = session.scalars(
                select(Match).where(Match.status.in_(ReservationState.live()))
            ).all()
        self.index.load(node_entry(node) for node in nodes)
        for heartbeat in heartbeats.values():
            self.index.heartbeat(
                heartbeat.node,
                heartbeat.free_vcpus,
                heartbeat.free_memory_mib,
                heartbeat.free_disk_gib,
                heartbeat.timestamp,
                heard_at=heartbeat.received_at.timestamp(),
            )
        for match in live:
            self.index.reserve(_reservation(match))
        if heartbeats:
            self._heartbeats_seen = max(h.received_at for h in heartbeats.values())

    def refresh_heartbeats(self) -> int:
        """Apply heartbeats any replica stored since the last refresh; returns how many were
        new to the index.

        `received_at` is each replica's own clock, and a write may commit after a later one:
        a heartbeat stamped a little before the newest already seen would be missed by a
        strict cursor. So the window re-read overlaps the last by the staleness window (a
        heartbeat older than that no longer counts anyway); the index ignores heartbeats
        that are not newer than the one it has.
        """
        since = self._heartbeats_seen - timedelta(seconds=self.index.stale_after_s)
        with self.store.new_session(read_only=True) as session:
            fresh = session.scalars(select(Heartbeat).where(Heartbeat.received_at >= since)).all()
        applied = 0
        for heartbeat in fresh:
            applied += self._apply_heartbeat(
                heartbeat.node,
                heartbeat.free_vcpus,
                heartbeat.free_memory_mib,
                heartbeat.free_disk_gib,
                heartbeat.timestamp,
                heard_at=heartbeat.received_at.timestamp(),
            )
        if fresh:
            self._heartbeats_seen = max(self._heartbeats_seen, max(h.received_at for h in fresh))
        return applied

    def node_changed(self, node: Node) -> None:
        """The indexer changed a node's on-chain facts (registration, stake, reputation)."""
        self.index.upsert(node_entry(node))

    def on_heartbeat(
        self,
        node: str,
        free_vcpus: int,
        free_memory_mib: int,
        free_disk_gib: int,
        timestamp: int,
        heard_at: float | None = None,
    ) -> None:
        """A signed heartbeat was stored: refresh capacity, release what it now includes."""
        self._apply_heartbeat(
            node, free_vcpus, free_memory_mib, free_disk_gib, timestamp, heard_at=heard_at
        )

    def _apply_heartbeat(
        self,
        node: str,
        free_vcpus: int,
        free_memory_mib: int,
        free_disk_gib: int,
        timestamp: int,
        heard_at: float | None = None,
    ) -> bool:
        """`on_heartbeat`; False if the index already had it (or a newer one)."""
        if not self.index.heartbeat(
            node, free_vcpus, free_memory_mib, free_disk_gib, timestamp, heard_at=heard_at
        ):
            return False
        absorbed_before = datetime.fromtimestamp(timestamp, UTC)
        with self.store.session() as session:
            matches = session.scalars(
                select(Match).where(
                    Match.node == node,
                    Match.status == ReservationState.ACCEPTED,
                    Match.accepted_at < absorbed_before,
                )
            ).all()
            for match in matches:
                match.status = ReservationState.RELEASED
        for match in matches:
            self.index.release(_reservation(match))
        return True

    def node_silent(self, node: str) -> None:
        """The verifier found the node silent (and challenged its leases): offer it no more
        leases until it sends a heartbeat again."""
        self.index.mark_silent(node)

    # --- matching -------------------------------------------------------------------------------

    def _lease_lock(self, lease_id: int) -> threading.Lock:
        return self._lease_locks[lease_id % _LEASE_LOCK_STRIPES]

    def match_lease(self, lease_id: int) -> Match | None:
        """Reserve the best node for an open lease and dispatch it; None if nothing fits.

        Idempotent: a lease with a live reservation keeps it. Nodes whose reservation for
        this lease expired, and nodes that declined it on chain, are never tried again.
        """
        return self._match(lease_id, None)

    def match_at_head(self, lease: Lease) -> Match | None:
        """`match_lease` for a lease created in a block the indexer has not confirmed yet
        (`lease`: as its `LeaseCreated` at the head says, never stored); None once the store
        has it (the confirmed path decides then). A reorg that drops the create leaves a
        reservation no accept can use (the chain refuses to accept a lease it does not have):
        it expires at its deadline and the node's capacity comes back."""
        return self._match(lease.id, lease)

    def live_node(self, lease_id: int) -> str | None:
        """The node holding the lease's live reservation (reserved or accepted), if any."""
        with self.store.new_session(read_only=True) as session:
            live = self._live(session, lease_id)
            return live[0].node if live else None

    def _match(self, lease_id: int, at_head: Lease | None) -> Match | None:
        with self._lease_lock(lease_id):
            with self.store.session() as session:
                lease = session.get(Lease, lease_id)
                if at_head is not None:
                    if lease is not None:
                        return None
                    lease = at_head
                if lease is None or lease.status != LeaseState.OPEN:
                    return None
                previous = session.scalars(select(Match).where(Match.lease_id == lease_id)).all()
                live = [m for m in previous if m.status in ReservationState.live()]
                if live:
                    return live[0]
                # A node that declined this lease may never accept it again (the chain reverts
                # with LeaseMarket_DeclinedBefore), so offering it would only waste the lease's
                # time; it may have accepted without our dispatch, so no Match row names it.
                # A lease that failed over starts a fresh round: only the reservations since
                # its last accepted one count as tried (the node it left is in `declined_by`).
                since = 0
                if failed_over(session, lease_id):
                    since = max((m.id for m in previous if m.accepted_at is not None), default=0)
                tried = frozenset(m.node for m in previous if m.id > since) | declined_by(
                    session, lease_id
                )
                demand = demand_of(lease, registry_min_stake(session))
            reservation = self.index.match(demand, exclude=tried)
            if reservation is None:
                # Reported once (with a count when it ends), not on every pass.
                self.conditions.report(
                    ("no-fit", lease_id),
                    "lease %s: no fitting node (tried %d)",
                    lease_id,
                    len(tried),
                )
                return None
            self.conditions.clear(("no-fit", lease_id))
            now = self._now()
            try:
                with self.store.session() as session:
                    match = Match(
                        lease_id=lease_id,
                        node=reservation.node,
                        status=ReservationState.RESERVED,
                        vcpus=reservation.vcpus,
                        memory_mib=reservation.memory_mib,
                        disk_gib=reservation.disk_gib,
                        score=reservation.score,
                        created_at=now,
                        deadline=now + timedelta(seconds=self.accept_timeout_s),
                    )
                    session.add(match)
            except IntegrityError:
                # Another matcher reserved this lease first (the one-live-reservation index).
                self.index.release(reservation)
                return None
            except Exception:
                self.index.release(reservation)
                raise
        try:
            self.dispatch(lease_id, reservation.node)
        except Exception:
            # The node never got the lease (e.g. the broker is restarting): forget this
            # reservation, so the node is not counted as tried and the next pass dispatches
            # again. A node that got it after all may still accept (see `lease_accepted`).
            log.exception("dispatching lease %s to %s failed", lease_id, reservation.node)
            self._forget(lease_id, reservation)
            return None
        return match

    def _forget(self, lease_id: int, reservation: Reservation) -> None:
        try:
            with self.store.session() as session:
                session.execute(
                    delete(Match).where(
                        Match.lease_id == lease_id,
                        Match.node == reservation.node,
                        Match.status == ReservationState.RESERVED,
                    )
                )
        except Exception:
            # The store is down too: the reservation's deadline expires it instead.
            log.exception("lease %s: could not forget the undelivered reservation", lease_id)
            return
        self.index.release(reservation)

    def lease_accepted(self, lease_id: int, node: str) -> None:
        """The chain says `node` accepted: keep its reservation, free every other one.

        A node may accept after its reservation expired (it was slow, or its heartbeats
        lapsed): the chain decides, so that reservation is taken back as accepted.
        """
        now = self._now()
        freed: list[Match] = []
        revived: list[Match] = []
        with self.store.session() as session:
            live = self._live(session, lease_id)
            for match in live:
                if match.node == node and match.status == ReservationState.RESERVED:
                    match.status = ReservationState.ACCEPTED
                    match.accepted_at = now
                elif match.node != node:
                    match.status = ReservationState.RELEASED
                    freed.append(match)
            if not any(match.node == node for match in live):
                session.flush()  # the released ones first: one live reservation per lease
                expired = session.scalars(
                    select(Match)
                    .where(
                        Match.lease_id == lease_id,
                        Match.node == node,
                        Match.status == ReservationState.EXPIRED,
                    )
                    .order_by(Match.id.desc())
                    .limit(1)
                ).first()
                if expired is not None:
                    expired.status = ReservationState.ACCEPTED
                    expired.accepted_at = now
                    revived.append(expired)
        for match in freed:
            self.index.release(_reservation(match))
        for match in revived:
            self.index.reserve(_reservation(match))

    def lease_closed(self, lease_id: int) -> None:
        """The lease closed: nothing stays reserved for it."""
        with self.store.session() as session:
            freed = list(self._live(session, lease_id))
            for match in freed:
                match.status = ReservationState.RELEASED
        for match in freed:
            self.index.release(_reservation(match))

    def expire_overdue(self) -> list[int]:
        """Expire reservations past their deadline, or held by a node whose heartbeats stopped,
        and re-match their leases to the next node."""
        now = self._now()
        stale = self.index.stale_nodes()
        with self.store.session() as session:
            overdue = session.scalars(
                select(Match).where(
                    Match.status == ReservationState.RESERVED,
                    or_(Match.deadline <= now, Match.node.in_(stale))
                    if stale
                    else Match.deadline <= now,
                )
            ).all()
            freed = [_reservation(match) for match in overdue]
            for match in overdue:
                if session.get(Lease, match.lease_id) is None:
                    # Dispatched at the head for a create the store never got (a reorg dropped
                    # it, most likely): forgotten, so the node is not counted as tried for a
                    # lease that may yet come (re-mined, or another create given the same id).
                    session.delete(match)
                else:
                    match.status = ReservationState.EXPIRED
        for reservation in freed:
            self.index.release(reservation)
        rematched = []
        for lease_id in sorted({m.lease_id for m in freed}):
            if self.match_lease(lease_id) is not None:
                rematched.append(lease_id)
        return rematched

    def match_open_leases(self) -> int:
        """Match every open lease without a live reservation (at start and periodically)."""
        # Selecting only unreserved leases keeps this periodic pass from taking the store's
        # write lock once per already-reserved lease.
        live = exists().where(Match.lease_id == Lease.id, Match.status.in_(ReservationState.live()))
        with self.store.new_session(read_only=True) as session:
            open_ids = session.scalars(
                select(Lease.id).where(Lease.status == LeaseState.OPEN, ~live)
            ).all()
        return sum(1 for lease_id in open_ids if self.match_lease(lease_id) is not None)

    @staticmethod
    def _live(session: Session, lease_id: int) -> list[Match]:
        return list(
            session.scalars(
                select(Match).where(
                    Match.lease_id == lease_id, Match.status.in_(ReservationState.live())
                )
            )
        )
