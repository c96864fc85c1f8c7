"""The matcher: fit, documented score, fairness, no over-commit under concurrency, fallback."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import select

from backend.matching import Demand, Matcher, MatchIndex, NodeEntry
from backend.store import ChainEvent, Heartbeat, Lease, Match, Store
from tests.unit.backend.factories import Clock, add_lease, add_node

RENTER = "0x" + "ee" * 20


def _entry(address: str, **overrides: object) -> NodeEntry:
    values: dict[str, object] = {
        "address": address,
        "tee_type": 1,
        "vcpus": 16,
        "memory_mib": 65536,
        "disk_gib": 500,
        "price_per_vcpu_second": 10,
        "stake": 1000,
        "reputation": 0.5,
    }
    values.update(overrides)
    return NodeEntry(**values)  # type: ignore[arg-type]


def _demand(lease_id: int = 1, **overrides: int) -> Demand:
    values = {
        "lease_id": lease_id,
        "tee_type": 1,
        "vcpus": 2,
        "memory_mib": 4096,
        "disk_gib": 20,
        "min_node_stake": 100,
        "max_rate_per_second": 100,
    }
    values.update(overrides)
    return Demand(**values)


def _index(clock: Clock, *entries: NodeEntry, heartbeat: bool = True) -> MatchIndex:
    index = MatchIndex(stale_after_s=300, clock=clock)
    index.load(entries)
    if heartbeat:
        for entry in entries:
            index.heartbeat(entry.address, entry.vcpus, entry.memory_mib, entry.disk_gib, 1)
    return index


def test_only_fitting_nodes_are_chosen(clock: Clock) -> None:
    index = _index(
        clock,
        _entry("tdx", tee_type=2),
        _entry("small", vcpus=1),
        _entry("poor", stake=50),
        _entry("dear", price_per_vcpu_second=60),  # 2 vCPU x 60 > 100
        _entry("inactive", active=False),
        _entry("fit", price_per_vcpu_second=40),
    )
    reservation = index.match(_demand())
    assert reservation is not None and reservation.node == "fit"
    assert index.match(_demand(2, tee_type=3)) is None
    assert index.match(_demand(3, vcpus=64, max_rate_per_second=10**9)) is None


def test_free_capacity_comes_from_heartbeats_minus_reservations(clock: Clock) -> None:
    index = _index(clock, _entry("a"), heartbeat=False)
    assert index.match(_demand()) is None  # never heard from
    index.heartbeat("a", 3, 8192, 100, timestamp=10)
    assert index.match(_demand(1)) is not None  # 3 - 2 = 1 vCPU left
    assert index.match(_demand(2)) is None
    assert not index.heartbeat("a", 16, 65536, 500, timestamp=10)  # not newer: ignored
    assert index.match(_demand(2)) is None
    clock.advance(301)
    index.heartbeat("a", 16, 65536, 500, timestamp=11)
    clock.advance(301)  # that heartbeat is now stale too
    assert index.match(_demand(3)) is None


def test_score_follows_the_documented_formula(clock: Clock) -> None:
    index = _index(
        clock,
        _entry("cheap", price_per_vcpu_second=5),
        _entry("pricey", price_per_vcpu_second=20),
        _entry("mid", price_per_vcpu_second=10),
    )
    # Median price 10, median stake 1000, empty nodes (load 0), reputation 0.5.
    expected = 0.40 * (10 / (10 + 5)) + 0.25 * (1000 / 2000) + 0.20 * 0.5 + 0.15 * 1.0
    cheap = index.get("cheap")
    assert cheap is not None and cheap.score == pytest.approx(expected)
    first = index.match(_demand())
    assert first is not None and first.node == "cheap" and first.score == pytest.approx(expected)
    reputable = _index(clock, _entry("new"), _entry("proven", reputation=0.95))
    best = reputable.match(_demand())
    assert best is not None and best.node == "proven"


def test_equal_nodes_take_turns(clock: Clock) -> None:
    nodes = [_entry(f"n{i}") for i in range(4)]
    index = _index(clock, *nodes)
    chosen = Counter()
    for lease_id in range(40):
        reservation = index.match(_demand(lease_id, vcpus=1, memory_mib=512, disk_gib=1))
        assert reservation is not None
        chosen[reservation.node] += 1
    assert chosen == {"n0": 10, "n1": 10, "n2": 10, "n3": 10}


def test_concurrent_matching_never_over_commits(clock: Clock) -> None:
    index = _index(clock, _entry("a", vcpus=10), _entry("b", vcpus=7))
    won: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        barrier.wait()
        for i in range(50):
            reservation = index.match(_demand(offset * 100 + i, vcpus=1, memory_mib=1, disk_gib=1))
            if reservation is not None:
                with lock:
                    won.append(reservation.node)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(won) == {"a": 10, "b": 7}
    for name in ("a", "b"):
        entry = index.get(name)
        assert entry is not None and entry.available()[0] == 0


class _Dispatched:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, lease_id: int, node: str) -> None:
        self.calls.append((lease_id, node))


def _matcher(store: Store, clock: Clock) -> tuple[Matcher, _Dispatched]:
    dispatched = _Dispatched()
    matcher = Matcher(store, dispatched, accept_timeout_s=60, stale_after_s=300, clock=clock)
    return matcher, dispatched


def _node(store: Store, address: str, **overrides: object) -> str:
    add_node(store, address, **overrides)
    return address.lower()


def _beat(matcher: Matcher, clock: Clock, node: str, vcpus: int, memory: int, disk: int) -> None:
    """What the heartbeat endpoint does: store the heartbeat, then tell the matcher."""
    values = {
        "free_vcpus": vcpus,
        "free_memory_mib": memory,
        "free_disk_gib": disk,
        "running_leases": 0,
        "timestamp": int(clock.now),
        "signature": "0x",
        "received_at": clock.datetime(),
    }
    with matcher.store.session() as session:
        row = session.get(Heartbeat, node)
        if row is None:
            session.add(Heartbeat(node=node, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)
    matcher.on_heartbeat(node, vcpus, memory, disk, int(clock.now))


def test_matcher_reserves_dispatches_and_falls_back(store: Store, clock: Clock) -> None:
    best = _node(store, "0x" + "01" * 20, price_per_vcpu_second=1)
    second = _node(store, "0x" + "02" * 20, price_per_vcpu_second=5)
    add_lease(store, 1, RENTER)
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    for address in (best, second):
        _beat(matcher, clock, address, 16, 65536, 500)

    match = matcher.match_lease(1)
    assert match is not None and match.node == best and dispatched.calls == [(1, best)]
    assert matcher.match_lease(1) is not None and len(dispatched.calls) == 1  # idempotent

    clock.advance(59)
    assert matcher.expire_overdue() == []
    clock.advance(2)  # the best node did not accept in time: the next one gets the lease
    assert matcher.expire_overdue() == [1]
    assert dispatched.calls == [(1, best), (1, second)]
    with store.session() as session:
        statuses = {m.node: m.status for m in session.scalars(select(Match))}
    assert statuses == {best: "expired", second: "reserved"}
    best_entry = matcher.index.get(best)
    assert best_entry is not None and best_entry.reserved_vcpus == 0

    clock.advance(61)  # nobody left to try
    assert matcher.expire_overdue() == []


def test_accept_keeps_the_reservation_until_a_heartbeat_absorbs_it(
    store: Store, clock: Clock
) -> None:
    node = _node(store, "0x" + "03" * 20, vcpus=4)
    add_lease(store, 1, RENTER, vcpus=3)
    add_lease(store, 2, RENTER, vcpus=3)
    matcher, _ = _matcher(store, clock)
    matcher.rebuild()
    _beat(matcher, clock, node, 4, 65536, 500)
    assert matcher.match_lease(1) is not None
    assert matcher.match_lease(2) is None  # 4 - 3 < 3
    clock.advance(5)
    matcher.lease_accepted(1, node)
    entry = matcher.index.get(node)
    assert entry is not None and entry.reserved_vcpus == 3

    # Rebuilding from the store restores the same reservation.
    rebuilt, _ = _matcher(store, clock)
    rebuilt.rebuild()
    again = rebuilt.index.get(node)
    assert again is not None and again.reserved_vcpus == 3 and again.free_vcpus == 4

    clock.advance(5)  # the node now reports the running guest: the reservation is released
    _beat(matcher, clock, node, 1, 60000, 480)
    entry = matcher.index.get(node)
    assert entry is not None and entry.reserved_vcpus == 0 and entry.free_vcpus == 1
    with store.session() as session:
        match = session.scalar(select(Match).where(Match.lease_id == 1))
        assert match is not None and match.status == "released"


def test_closing_or_another_accept_releases(store: Store, clock: Clock) -> None:
    a = _node(store, "0x" + "04" * 20, vcpus=2)
    b = _node(store, "0x" + "05" * 20, vcpus=2)
    add_lease(store, 1, RENTER)
    add_lease(store, 2, RENTER)
    matcher, _ = _matcher(store, clock)
    matcher.rebuild()
    for address in (a, b):
        _beat(matcher, clock, address, 2, 65536, 500)
    first, second = matcher.match_lease(1), matcher.match_lease(2)
    assert first is not None and second is not None and first.node != second.node
    matcher.lease_accepted(1, second.node)  # someone else won lease 1 on chain
    freed = matcher.index.get(first.node)
    assert freed is not None and freed.reserved_vcpus == 0
    matcher.lease_closed(2)
    other = matcher.index.get(second.node)
    # It holds lease 1 now (its accept), no longer lease 2.
    assert other is not None and other.reserved_vcpus == second.vcpus
    matcher.lease_closed(1)
    assert other.reserved_vcpus == 0


def test_many_threads_matching_leases_through_the_store(store: Store, clock: Clock) -> None:
    node = _node(store, "0x" + "06" * 20, vcpus=5)
    for lease_id in range(20):
        add_lease(store, lease_id, RENTER, vcpus=1)
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    _beat(matcher, clock, node, 5, 65536, 500)
    threads = [
        threading.Thread(target=matcher.match_lease, args=(lease_id,)) for lease_id in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.session() as session:
        reserved = session.scalars(select(Match).where(Match.status == "reserved")).all()
    assert len(reserved) == 5 and len(dispatched.calls) == 5


def test_the_registry_minimum_stake_applies_too(store: Store, clock: Clock) -> None:
    node = _node(store, "0x" + "07" * 20, stake=1000)
    add_lease(store, 1, RENTER, min_node_stake=100)
    with store.session() as session:
        session.add(
            ChainEvent(
                block_number=1,
                block_hash="0x" + "00" * 32,
                block_timestamp=0,
                log_index=0,
                tx_hash="0x" + "00" * 32,
                contract="NodeRegistry",
                name="MinStakeSet",
                lease_id=None,
                node=None,
                args={"minStake": 5000},
            )
        )
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    _beat(matcher, clock, node, 16, 65536, 500)
    assert matcher.match_lease(1) is None and dispatched.calls == []
    with store.session() as session:
        session.add(
            ChainEvent(
                block_number=2,
                block_hash="0x" + "00" * 32,
                block_timestamp=0,
                log_index=0,
                tx_hash="0x" + "00" * 32,
                contract="NodeRegistry",
                name="MinStakeSet",
                lease_id=None,
                node=None,
                args={"minStake": 500},
            )
        )
    assert matcher.match_lease(1) is not None


def _index_event(store: Store, block: int, name: str, args: dict[str, object]) -> None:
    """What the indexer does with a decoded log: record it with its subjects, then project it."""
    from backend.indexer import projections

    with store.session() as session:
        converted = projections.json_args(args)
        lease_id, node = projections.subjects(name, converted, session)
        row = ChainEvent(
            block_number=block,
            block_hash="0x" + f"{block:064x}",
            block_timestamp=block,
            log_index=0,
            tx_hash="0x" + f"{block:064x}",
            contract="LeaseMarket",
            name=name,
            lease_id=lease_id,
            node=node,
            args=converted,
        )
        session.add(row)
        session.flush()
        projections.apply(session, row)


def test_a_node_that_declined_a_lease_is_never_offered_it_again(store: Store, clock: Clock) -> None:
    """Decline squat, matcher side: a node that declined lease N on chain can never accept N
    again (LeaseMarket_DeclinedBefore), so dispatching N to it wastes N's time. The node took
    N on its own (no reservation of ours names it), so only the indexed `LeaseDeclined` tells.
    Fails on the old code, which offered N straight back to the cheapest node, the decliner."""
    decliner = _node(store, "0x" + "0a" * 20, price_per_vcpu_second=1)
    other = _node(store, "0x" + "0b" * 20, price_per_vcpu_second=5)
    add_lease(store, 1, RENTER)
    add_lease(store, 2, RENTER)
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    for address in (decliner, other):
        _beat(matcher, clock, address, 16, 65536, 500)

    # Checksummed on the wire, as the chain's decoder returns it.
    key = "0x" + "0A" * 20
    _index_event(store, 10, "LeaseAccepted", {"leaseId": 1, "nodeKey": key, "ratePerSecond": 2})
    matcher.lease_accepted(1, decliner)
    _index_event(store, 11, "LeaseDeclined", {"leaseId": 1, "nodeKey": key})
    matcher.lease_closed(1)  # what the service does on LeaseDeclined

    match = matcher.match_lease(1)
    assert match is not None and match.node == other
    # The decliner still gets other leases: only lease 1 is closed to it.
    again = matcher.match_lease(2)
    assert again is not None and again.node == decliner
    assert dispatched.calls == [(1, other), (2, decliner)]

    # Both reservations lapse: lease 2 moves on to the other node, lease 1 finds nobody (the
    # decliner stays excluded).
    clock.advance(61)
    assert matcher.expire_overdue() == [2]
    assert dispatched.calls == [(1, other), (2, decliner), (2, other)]


def test_reconcile_mends_events_a_killed_leader_never_reacted_to(
    store: Store, clock: Clock
) -> None:
    """The indexer commits its projections before the matcher reacts to them. A leader killed
    between the two (or a store that failed mid-reaction) left the next leader with a lease
    running on a node whose reservation then expired unaccepted, and with a declined lease
    whose old accept stayed live, so it was never matched again. Fails without reconcile."""
    for address in ("0x" + "0c" * 20, "0x" + "0d" * 20):
        _node(store, address)
    for lease_id in (1, 2, 3):
        add_lease(store, lease_id, RENTER)
    matcher, _ = _matcher(store, clock)
    matcher.rebuild()
    for address in ("0x" + "0c" * 20, "0x" + "0d" * 20):
        _beat(matcher, clock, address, 16, 65536, 500)
    nodes = {}
    for lease_id in (1, 2, 3):
        match = matcher.match_lease(lease_id)
        assert match is not None
        nodes[lease_id] = match.node

    def accepted(lease_id: int, block: int) -> None:
        args = {"leaseId": lease_id, "nodeKey": nodes[lease_id], "ratePerSecond": 2}
        _index_event(store, block, "LeaseAccepted", args)

    # Heard: lease 2's and 3's accepts. Then the leader died after committing the projections
    # of these three events, before reacting to them.
    for lease_id in (2, 3):
        accepted(lease_id, 10 + lease_id)
        matcher.lease_accepted(lease_id, nodes[lease_id])
    accepted(1, 20)
    _index_event(store, 21, "LeaseDeclined", {"leaseId": 2, "nodeKey": nodes[2]})
    _index_event(store, 22, "LeaseClosed", {"leaseId": 3, "reason": 0})

    clock.advance(61)  # past every reservation's deadline
    successor, dispatched = _matcher(store, clock)
    successor.rebuild()
    assert successor.reconcile() == ([1], [2, 3])
    assert successor.reconcile() == ([], [])
    with store.session() as session:
        rows = {m.lease_id: (m.status, m.accepted_at) for m in session.scalars(select(Match))}
    assert rows[1][0] == "accepted" and rows[1][1] is not None
    assert rows[2][0] == "released" and rows[3][0] == "released"
    # Lease 1 stays with its node (nothing expires it); the declined lease is matched again,
    # never to the node that declined it.
    assert successor.expire_overdue() == []
    assert successor.match_open_leases() == 1
    assert [call[0] for call in dispatched.calls] == [2]
    assert dispatched.calls[0][1] != nodes[2]
    held = sum(
        entry.reserved_vcpus
        for entry in (successor.index.get(n) for n in set(nodes.values()))
        if entry is not None
    )
    with store.session() as session:
        lease_1, lease_2 = session.get(Lease, 1), session.get(Lease, 2)
        assert lease_1 is not None and lease_2 is not None
        assert held == lease_1.vcpus + lease_2.vcpus  # the running lease 1 and new lease 2


def test_an_accept_no_reservation_names_is_recorded_and_holds_capacity(
    store: Store, clock: Clock
) -> None:
    """A node may accept a lease no reservation of ours names (it took the lease on its own,
    or ours was forgotten when its dispatch seemed to fail while the broker restarted). The
    accept is recorded, and the node's capacity holds the guest until a heartbeat includes
    it; before, the matcher kept offering that capacity to other leases."""
    node = _node(store, "0x" + "0e" * 20, vcpus=4)
    add_lease(store, 1, RENTER, vcpus=3)
    add_lease(store, 2, RENTER, vcpus=3)
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    _beat(matcher, clock, node, 4, 65536, 500)
    assert matcher.lease_accepted(1, node) is True
    with store.session() as session:
        rows = [(m.lease_id, m.node, m.status) for m in session.scalars(select(Match))]
        accepted_at = session.scalars(select(Match.accepted_at)).one()
    assert rows == [(1, node, "accepted")] and accepted_at is not None
    assert matcher.match_lease(2) is None and dispatched.calls == []  # 4 - 3 < 3
    clock.advance(5)  # the heartbeat now includes the guest: the reservation is released
    _beat(matcher, clock, node, 1, 60000, 480)
    entry = matcher.index.get(node)
    assert entry is not None and entry.reserved_vcpus == 0
    # An accept by a node the matcher does not know records nothing.
    add_lease(store, 3, RENTER)
    assert matcher.lease_accepted(3, "0x" + "0f" * 20) is False
    with store.session() as session:
        assert session.scalars(select(Match).where(Match.lease_id == 3)).all() == []


def test_an_accept_heard_twice_is_recorded_once(store: Store, clock: Clock) -> None:
    """Two replicas may both react to one accept (the old leader finishing a reaction while
    the new one reconciles from a read taken before it committed). When a heartbeat released
    the first record in between, the second call found no live reservation and recorded the
    accept again: the replicas test counted two accepts for one lease (CI). A node accepts a
    lease at most once (the chain never lets it take one it declined or left), so a second
    call changes nothing and holds no capacity."""
    node = _node(store, "0x" + "10" * 20, vcpus=4)
    add_lease(store, 1, RENTER, vcpus=3)
    matcher, _ = _matcher(store, clock)
    matcher.rebuild()
    _beat(matcher, clock, node, 4, 65536, 500)
    assert matcher.match_lease(1) is not None
    clock.advance(5)
    assert matcher.lease_accepted(1, node) is True
    clock.advance(5)  # the heartbeat includes the guest: the record is released
    _beat(matcher, clock, node, 1, 60000, 480)
    clock.advance(5)
    assert matcher.lease_accepted(1, node) is True  # heard again: still recorded, once
    with store.session() as session:
        rows = [(m.status, m.accepted_at is not None) for m in session.scalars(select(Match))]
    assert rows == [("released", True)]
    entry = matcher.index.get(node)
    assert entry is not None and entry.reserved_vcpus == 0
    assert matcher.reconcile() == ([], [])
