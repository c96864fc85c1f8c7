"""What lets backends run as replicas: leader leases in the store, one live reservation per
lease whoever reserves it, heartbeats shared through the store, dead nodes dropped within a
heartbeat interval, a repeated condition logged once, and SQLite refusing a second backend."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.leadership import INDEXER, Leadership
from backend.matching import Matcher
from backend.matching.service import HEARTBEAT_SWEEP_S
from backend.repeats import RepeatedConditions
from backend.service import ReplicaError, _claim_sqlite
from backend.store import Heartbeat, Match, ReservationState, Store
from tests.unit.backend.factories import Clock, add_lease, add_match
from tests.unit.backend.test_matching import RENTER, _beat, _matcher, _node


def test_one_leader_per_job_and_takeover_when_it_stops_renewing(store: Store, clock: Clock) -> None:
    first = Leadership(store, holder="first", ttl_s=3, clock=clock)
    second = Leadership(store, holder="second", ttl_s=3, clock=clock)
    assert first.acquire(INDEXER) and not second.acquire(INDEXER)
    assert second.acquire("verifier:0xabc")  # another job: another leader
    clock.advance(2)
    assert first.acquire(INDEXER)  # renewed before expiry
    clock.advance(2)
    assert not second.acquire(INDEXER)  # 2 s after the renewal: still first's
    clock.advance(1.5)  # first died (no renewal for 3.5 s): second takes over
    assert second.acquire(INDEXER) and second.holds(INDEXER)
    assert not first.acquire(INDEXER) and not first.holds(INDEXER)
    second.release(INDEXER)  # a clean shutdown hands over at once
    assert first.acquire(INDEXER)


def test_a_leader_that_loses_its_store_stands_down(clock: Clock) -> None:
    unreachable = Store("postgresql+psycopg://cvm@127.0.0.1:1/cvm", migrate_schema=False)
    assert not Leadership(unreachable, holder="x", ttl_s=3, clock=clock).acquire(INDEXER)
    unreachable.close()


def test_two_matchers_never_reserve_one_lease_twice(store: Store, clock: Clock) -> None:
    # Two replicas' matchers that both believe they lead (e.g. across a takeover).
    nodes = [_node(store, "0x" + f"{i:02x}" * 20) for i in (1, 2)]
    one, one_sent = _matcher(store, clock)
    two, two_sent = _matcher(store, clock)
    for lease_id in range(1, 21):
        add_lease(store, lease_id, RENTER)
    for matcher in (one, two):
        matcher.rebuild()
        for node in nodes:
            _beat(matcher, clock, node, 16, 65536, 500)

    # Both at once, lease by lease: whichever loses the race finds the reservation taken.
    def run(matcher: Matcher) -> None:
        for lease_id in range(1, 21):
            matcher.match_lease(lease_id)

    threads = [threading.Thread(target=run, args=(m,)) for m in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.session() as session:
        live = session.scalars(
            select(Match.lease_id).where(Match.status.in_(ReservationState.live()))
        ).all()
    assert sorted(live) == list(range(1, 21))  # each lease once
    assert len(one_sent.calls) + len(two_sent.calls) == 20  # each dispatched once


def test_the_store_itself_refuses_a_second_live_reservation(store: Store, clock: Clock) -> None:
    add_match(store, 1, "0x" + "01" * 20, clock)
    with pytest.raises(IntegrityError):
        add_match(store, 1, "0x" + "02" * 20, clock)
    add_match(store, 1, "0x" + "03" * 20, clock, status=ReservationState.EXPIRED)  # not live


def test_the_leader_sees_heartbeats_another_replica_stored(store: Store, clock: Clock) -> None:
    node = _node(store, "0x" + "03" * 20)
    add_lease(store, 1, RENTER)
    follower, _ = _matcher(store, clock)
    leader, sent = _matcher(store, clock)
    leader.rebuild()
    _beat(follower, clock, node, 16, 65536, 500)  # stored through the follower's API
    assert leader.match_lease(1) is None  # not in the leader's index yet
    assert leader.refresh_heartbeats() == 1
    assert leader.match_lease(1) is not None and sent.calls == [(1, node)]


def test_the_leader_sees_a_heartbeat_stamped_by_a_replica_whose_clock_is_behind(
    store: Store, clock: Clock
) -> None:
    early, late = _node(store, "0x" + "06" * 20), _node(store, "0x" + "07" * 20)
    later = _node(store, "0x" + "08" * 20)
    follower, _ = _matcher(store, clock)
    leader, _ = _matcher(store, clock)
    leader.rebuild()
    _beat(leader, clock, late, 16, 65536, 500)  # stored through the leader's own API
    assert leader.refresh_heartbeats() == 0  # already in its index
    clock.advance(-1)  # another replica, whose clock is 1 s behind: within the overlap
    _beat(follower, clock, early, 32, 65536, 500)
    clock.advance(1)
    # `early` is applied (the same one again is refused: it is in the index); the re-read
    # `late` is not applied twice.
    assert leader.refresh_heartbeats() == 1
    assert leader.index.heartbeat(early, 32, 65536, 500, int(clock.now) - 1) is False

    # A commit later than the overlap (or a clock further behind) is applied by the next
    # refresh that re-reads the whole staleness window, a few seconds later.
    clock.advance(-10)
    _beat(follower, clock, later, 8, 65536, 500)
    clock.advance(10)
    applied = 0
    for _ in range(int(HEARTBEAT_SWEEP_S) + 1):
        applied += leader.refresh_heartbeats()
        clock.advance(1)
    assert applied == 1
    entry = leader.index.get(later)
    assert entry is not None and entry.free_vcpus == 8


def test_one_refresh_absorbs_the_accepted_reservations_its_heartbeats_include(
    store: Store, clock: Clock
) -> None:
    a, b, c = (_node(store, "0x" + f"{i:02x}" * 20, vcpus=4) for i in (9, 10, 11))
    follower, _ = _matcher(store, clock)
    leader, _ = _matcher(store, clock)
    leader.rebuild()
    for node in (a, b, c):
        _beat(leader, clock, node, 4, 65536, 500)
    for lease_id in (1, 2, 3):
        add_lease(store, lease_id, RENTER, vcpus=3)
    nodes = {}
    for lease_id in (1, 2, 3):
        match = leader.match_lease(lease_id)
        assert match is not None
        nodes[lease_id] = match.node
    clock.advance(5)
    for lease_id, node in nodes.items():
        leader.lease_accepted(lease_id, node)
    clock.advance(5)
    # Two nodes report their guests through another replica; the third's heartbeat is
    # signed before its accept (e.g. delayed), so it cannot include the guest yet.
    _beat(follower, clock, nodes[1], 1, 60000, 480)
    _beat(follower, clock, nodes[2], 1, 60000, 480)
    stale_beat = {
        "free_vcpus": 4,
        "timestamp": int(clock.now) - 8,
        "received_at": clock.datetime(),
    }
    with store.session() as session:
        row = session.get(Heartbeat, nodes[3])
        assert row is not None
        for key, value in stale_beat.items():
            setattr(row, key, value)
    assert leader.refresh_heartbeats() == 3
    with store.session() as session:
        status = {m.lease_id: m.status for m in session.scalars(select(Match))}
    assert status == {1: "released", 2: "released", 3: "accepted"}
    for lease_id, reserved in ((1, 0), (2, 0), (3, 3)):
        entry = leader.index.get(nodes[lease_id])
        assert entry is not None and entry.reserved_vcpus == reserved


def test_a_dead_node_is_dropped_within_a_heartbeat_interval(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    dead = _node(store, "0x" + "04" * 20, price_per_vcpu_second=1)  # preferred while alive
    alive = _node(store, "0x" + "05" * 20, price_per_vcpu_second=5)
    add_lease(store, 1, RENTER)
    matcher, sent = _matcher(store, clock)
    matcher.index.stale_after_s = 20  # one 15 s agent interval plus slack
    matcher.rebuild()
    _beat(matcher, clock, dead, 16, 65536, 500)
    _beat(matcher, clock, alive, 16, 65536, 500)
    assert matcher.match_lease(1) is not None and sent.calls == [(1, dead)]
    clock.advance(15)
    _beat(matcher, clock, alive, 16, 65536, 500)  # only `alive` keeps beating
    assert matcher.expire_overdue() == []
    clock.advance(6)
    _beat(matcher, clock, alive, 16, 65536, 500)
    # 21 s without a heartbeat: its reservation goes to the next node at once, long before
    # the 60 s accept deadline, and it is offered nothing more.
    assert matcher.expire_overdue() == [1]
    assert sent.calls == [(1, dead), (1, alive)]
    add_lease(store, 2, RENTER)
    match = matcher.match_lease(2)
    assert match is not None and match.node == alive

    # A lease nothing fits: one log line however many passes, then one with the count.
    add_lease(store, 3, RENTER, vcpus=64, max_rate_per_second=10**9)
    with caplog.at_level(logging.INFO, logger="backend.matching.service"):
        for _ in range(50):
            matcher.match_open_leases()
    lines = [r.getMessage() for r in caplog.records if "no fitting node" in r.getMessage()]
    assert lines == ["lease 3: no fitting node (tried 0)"]
    assert matcher.conditions.count(("no-fit", 3)) == 50


def test_repeated_conditions_log_once_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(0.0)
    log = logging.getLogger("test.repeats")
    conditions = RepeatedConditions(log, summary_s=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.repeats"):
        for _ in range(10):
            conditions.report("db", "database down")
        clock.advance(61)
        conditions.report("db", "database down")
        conditions.clear("db")
        conditions.clear("db")  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "database down",
        "database down (still, 11 times so far)",
        "database down (ended after 11 times)",
    ]


def test_sqlite_refuses_a_second_backend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'backend.db'}"
    first = _claim_sqlite(url)
    assert first is not None
    with pytest.raises(ReplicaError, match="PostgreSQL"):
        _claim_sqlite(url)
    import os

    os.close(first)  # the first backend stopped: another may start
    again = _claim_sqlite(url)
    assert again is not None
    os.close(again)
    assert _claim_sqlite("postgresql+psycopg://cvm@db/cvm") is None


def test_a_node_that_accepts_after_its_reservation_expired_keeps_the_lease(
    store: Store, clock: Clock
) -> None:
    slow = _node(store, "0x" + "06" * 20, price_per_vcpu_second=1)
    other = _node(store, "0x" + "07" * 20, price_per_vcpu_second=5)
    add_lease(store, 1, RENTER)
    matcher, sent = _matcher(store, clock)
    matcher.rebuild()
    _beat(matcher, clock, slow, 16, 65536, 500)
    _beat(matcher, clock, other, 16, 65536, 500)
    matcher.match_lease(1)
    clock.advance(61)
    _beat(matcher, clock, slow, 16, 65536, 500)
    _beat(matcher, clock, other, 16, 65536, 500)
    assert matcher.expire_overdue() == [1] and sent.calls == [(1, slow), (1, other)]
    matcher.lease_accepted(1, slow)  # the chain says the slow node won after all
    with store.session() as session:
        statuses = {m.node: m.status for m in session.scalars(select(Match))}
    assert statuses == {slow: "accepted", other: "released"}
    slow_entry, other_entry = matcher.index.get(slow), matcher.index.get(other)
    assert slow_entry is not None and slow_entry.reserved_vcpus == 2
    assert other_entry is not None and other_entry.reserved_vcpus == 0


def test_a_long_pass_keeps_its_lease_and_a_released_job_is_not_renewed(
    store: Store, clock: Clock
) -> None:
    first = Leadership(store, holder="first", ttl_s=3, clock=clock)
    second = Leadership(store, holder="second", ttl_s=3, clock=clock)
    assert first.acquire(INDEXER)
    with first.keep(INDEXER) as term:
        for _ in range(4):  # a pass of four checkpoints, two seconds apart: past the term
            clock.advance(2)
            assert term.check() and not second.acquire(INDEXER)
        # A shutdown whose wait for the pass timed out: the job is handed over, and the pass
        # still running must neither renew it nor take it back.
        first.release(INDEXER)
        assert second.acquire(INDEXER)
        clock.advance(2)
        assert not term.check()
    assert second.holds(INDEXER) and not first.holds(INDEXER)
