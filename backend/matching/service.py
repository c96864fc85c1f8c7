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

from sqlalchemy import delete, exists, func, or_, select
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
# `refresh_heartbeats`: how far each refresh re-reads before its cursor (a replica's clock
# a little behind, a commit a little late), and how often it re-reads the whole window.
HEARTBEAT_OVERLAP_S = 2.0
HEARTBEAT_SWEEP_S = 5.0


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
        self._swept_at = float("-inf")  # the last refresh that re-read the whole window

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
        strict cursor. So each refresh re-reads the last `HEARTBEAT_OVERLAP_S` before the
        cursor, and every `HEARTBEAT_SWEEP_S` the whole staleness window (a heartbeat older
        than that no longer counts anyway): a commit later than the overlap is applied by
        the next sweep, seconds later, long before its node could look stale. Re-reading
        the whole window on every refresh cost the leader every node's row several times a
        second. The index ignores heartbeats that are not newer than the one it has.
        """
        now = self.clock()
        sweep = now - self._swept_at >= HEARTBEAT_SWEEP_S
        overlap = self.index.stale_after_s if sweep else HEARTBEAT_OVERLAP_S
        since = self._heartbeats_seen - timedelta(seconds=overlap)
        # Plain rows, not ORM objects: a sweep reads one row per live node.
        with self.store.new_session(read_only=True) as session:
            fresh = session.execute(
                select(
                    Heartbeat.node,
                    Heartbeat.free_vcpus,
                    Heartbeat.free_memory_mib,
                    Heartbeat.free_disk_gib,
                    Heartbeat.timestamp,
                    Heartbeat.received_at,
                ).where(Heartbeat.received_at >= since)
            ).all()
        if sweep:
            self._swept_at = now
        applied: dict[str, int] = {}
        for node, vcpus, memory, disk, timestamp, received_at in fresh:
            if self.index.heartbeat(
                node, vcpus, memory, disk, timestamp, heard_at=received_at.timestamp()
            ):
                applied[node] = timestamp
        self._absorb(applied)
        if fresh:
            self._heartbeats_seen = max(
                self._heartbeats_seen, max(row.received_at for row in fresh)
            )
        return len(applied)

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
        if self.index.heartbeat(
            node, free_vcpus, free_memory_mib, free_disk_gib, timestamp, heard_at=heard_at
        ):
            self._absorb({node: timestamp})

    def _absorb(self, heartbeats: dict[str, int]) -> None:
        """Release the accepted reservations the nodes' heartbeats (node -> its signed
        timestamp) now include: their guests are in the free capacity the nodes reported.

        One store read for all of them: only nodes the index holds a reservation on can
        have one (the index mirrors the store's live reservations), so the others are
        not asked about."""
        nodes = [node for node in heartbeats if self.index.holds_reservation(node)]
        if not nodes:
            return
        with self.store.session() as session:
            matches = [
                match
                for match in session.scalars(
                    select(Match).where(
                        Match.node.in_(nodes), Match.status == ReservationState.ACCEPTED
                    )
                )
                if match.accepted_at is not None
                and match.accepted_at < datetime.fromtimestamp(heartbeats[match.node], UTC)
            ]
            for match in matches:
                match.status = ReservationState.RELEASED
        for match in matches:
            self.index.release(_reservation(match))

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
                # A lease that failed over starts a fresh round: only the reservations made
                # after its last accept count as tried (the node it left is in `declined_by`).
                # Those dispatched before it belong to the round that accept ended, even when
                # their node lost the race to it (a node booting before a combined accept may
                # be outrun by one whose reservation had expired).
                since = 0
                if failed_over(session, lease_id):
                    accepts = [m.accepted_at for m in previous if m.accepted_at is not None]
                    if accepts:
                        last_accept = max(accepts)
                        since = max(m.id for m in previous if m.created_at <= last_accept)
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

    def lease_accepted(self, lease_id: int, node: str) -> bool:
        """The chain says `node` accepted: keep its reservation, free every other one.
        Whether a reservation records the accept now (not for a node the index does not know).

        A node may accept after its reservation expired (it was slow, or its heartbeats
        lapsed): the chain decides, so that reservation is taken back as accepted.
        """
        now = self._now()
        freed: list[Match] = []
        revived: list[Match] = []
        with self.store.session() as session:
            # Every reservation the lease ever had (a handful): one read for all the checks below.
            rows = session.scalars(
                select(Match).where(Match.lease_id == lease_id).order_by(Match.id)
            ).all()
            # A node accepts a lease at most once (the chain never lets it take a lease it
            # declined or left), so an accept already recorded is this one heard again (two
            # replicas reacting to it, or a reconcile's read from before the first record),
            # perhaps released since by a heartbeat: recording it again would hold capacity
            # the node already reports as used, and count the accept twice.
            recorded = any(m.node == node and m.accepted_at is not None for m in rows)
            live = [m for m in rows if m.status in ReservationState.live()]
            for match in live:
                if match.node == node and match.status == ReservationState.RESERVED:
                    match.status = ReservationState.ACCEPTED
                    match.accepted_at = now
                elif match.node != node:
                    match.status = ReservationState.RELEASED
                    freed.append(match)
            if not recorded and not any(match.node == node for match in live):
                session.flush()  # the released ones first: one live reservation per lease
                expired = next(
                    (
                        m
                        for m in reversed(rows)
                        if m.node == node and m.status == ReservationState.EXPIRED
                    ),
                    None,
                )
                if expired is not None:
                    expired.status = ReservationState.ACCEPTED
                    expired.accepted_at = now
                    revived.append(expired)
                else:
                    # No reservation of ours names the node (it took the lease on its own, or
                    # ours was forgotten when its dispatch seemed to fail): record the accept,
                    # so the node's capacity holds the guest until a heartbeat includes it.
                    taken = self._unreserved_accept(session, lease_id, node, now)
                    if taken is not None:
                        revived.append(taken)
        for match in freed:
            self.index.release(_reservation(match))
        for match in revived:
            self.index.reserve(_reservation(match))
        return recorded or bool(revived) or any(match.node == node for match in live)

    def _unreserved_accept(
        self, session: Session, lease_id: int, node: str, now: datetime
    ) -> Match | None:
        lease = session.get(Lease, lease_id)
        if lease is None or self.index.get(node) is None:
            return None
        match = Match(
            lease_id=lease_id,
            node=node,
            status=ReservationState.ACCEPTED,
            vcpus=lease.vcpus,
            memory_mib=lease.memory_mib,
            disk_gib=lease.disk_gib,
            score=0.0,
            created_at=now,
            deadline=now,
            accepted_at=now,
        )
        session.add(match)
        session.flush()
        return match

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
                select(Match)
                .where(
                    Match.status == ReservationState.RESERVED,
                    or_(Match.deadline <= now, Match.node.in_(stale))
                    if stale
                    else Match.deadline <= now,
                )
                # Locked, so a reservation keepalive committing meanwhile is waited for and its
                # row read again (PostgreSQL re-checks the condition): a kept reservation is
                # never expired by a read from before it was kept.
                .with_for_update()
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

    def reconcile(self) -> tuple[list[int], list[int]]:
        """Bring the reservations in line with the leases the store holds; returns the lease
        ids (accepted, ended) it mended.

        The indexer commits its projections before the matcher reacts to the batch's
        events, so a leader killed (or a store that failed) between the two leaves an
        accept, close, decline or failover the matcher never heard of: a lease running on a
        node whose reservation then expires without `accepted_at`, or an ended accept still
        live, which would keep its reopened lease from ever being matched again. Run when a
        replica takes the matcher over and after a round whose reaction failed."""
        accepted_by_node = exists().where(
            Match.lease_id == Lease.id,
            func.lower(Match.node) == func.lower(Lease.node),
            Match.accepted_at.is_not(None),
        )
        with self.store.new_session(read_only=True) as session:
            unheard_accepts = session.execute(
                select(Lease.id, Lease.node).where(
                    Lease.status == LeaseState.ACTIVE, Lease.node.is_not(None), ~accepted_by_node
                )
            ).all()
            # A live reservation of a closed lease, or an accept still live on a reopened one
            # (its decline or failover was not heard).
            unheard_ends = session.scalars(
                select(Match.lease_id)
                .join(Lease, Lease.id == Match.lease_id)
                .where(
                    Match.status.in_(ReservationState.live()),
                    or_(
                        Lease.status == LeaseState.CLOSED,
                        (Lease.status == LeaseState.OPEN)
                        & (Match.status == ReservationState.ACCEPTED),
                    ),
                )
                .distinct()
            ).all()
        # An accept by a node the index does not know records nothing (and is not counted).
        accepted = [
            lease_id
            for lease_id, node in unheard_accepts
            if self.lease_accepted(lease_id, str(node).lower())
        ]
        for lease_id in unheard_ends:
            self.lease_closed(lease_id)
        if accepted or unheard_ends:
            log.warning(
                "reconciled reservations the matcher had not heard of: accepted %s, ended %s",
                accepted,
                list(unheard_ends),
            )
        return accepted, list(unheard_ends)

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
