"""A lease that fails over, as the store, the matcher and the API see it: `LeaseFailedOver`
puts the lease back on the market with no node, ends its node's time in the lease's history
(`lease_nodes`, shown as `nodes` by `GET /v1/leases/{id}`), the matcher offers it to another
node but never the one it left, that node may no longer read its private spec, and a reorg
that drops the event puts everything back."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from backend.indexer import projections
from backend.store import Attestation, ChainEvent, Lease, LeaseNode, PrivateSpec, Store
from cvm.api_models import AttestationState, LeaseState
from cvm.eip712 import Domain
from tests.unit.backend.factories import Clock, add_node
from tests.unit.backend.test_matching import _beat, _matcher, _node

RENTER = "0x" + "ee" * 20
OLD = "0x" + "0a" * 20
NEW = "0x" + "0b" * 20
SPEC = {
    "teeType": 1, "vcpu": 2, "memoryMiB": 4096, "diskGiB": 20, "minNodeStake": 100,
    "reattestInterval": 3600, "specHash": "0x" + "00" * 32,
}  # fmt: skip


def index(store: Store, block: int, name: str, **args: Any) -> None:
    """What the indexer does with a decoded log: record it with its subjects, then project it."""
    with store.session() as session:
        converted = projections.json_args(args)
        lease_id, node = projections.subjects(name, converted, session)
        row = ChainEvent(
            block_number=block,
            block_hash="0x" + f"{block:064x}",
            block_timestamp=1_700_000_000 + block,
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


def created_and_accepted(store: Store) -> None:
    index(store, 1, "LeaseCreated", leaseId=1, renter=RENTER, spec=SPEC, maxPricePerSecond=100,
          deposit=10**18, expectedMeasurement=b"\xab" * 48)  # fmt: skip
    index(store, 2, "LeaseAccepted", leaseId=1, nodeKey=OLD, ratePerSecond=20)
    index(store, 3, "AttestationSubmitted", leaseId=1, node=OLD, reportHash=b"\x01" * 32,
          measurement=b"\xab" * 48)  # fmt: skip
    index(store, 4, "AttestationVerified", leaseId=1, reportHash=b"\x01" * 32)


def history(store: Store) -> list[tuple[str, int, int | None, str | None]]:
    with store.session() as session:
        rows = session.scalars(select(LeaseNode).order_by(LeaseNode.id)).all()
        return [(row.node, row.accepted_at, row.ended_at, row.reason) for row in rows]


def test_failover_reopens_the_lease_and_records_the_move(store: Store) -> None:
    created_and_accepted(store)
    assert history(store) == [(OLD, 1_700_000_002, None, None)]
    index(store, 9, "LeaseFailedOver", leaseId=1, oldNode=OLD, reason=2)
    with store.session() as session:
        lease = session.get(Lease, 1)
        assert lease is not None
        assert (lease.status, lease.node, lease.rate_per_second) == (LeaseState.OPEN, None, None)
        attestation = session.get(Attestation, 1)
        assert attestation is not None and attestation.status == AttestationState.EXPIRED
    assert history(store) == [(OLD, 1_700_000_002, 1_700_000_009, "attestation_expired")]

    index(store, 12, "LeaseAccepted", leaseId=1, nodeKey=NEW, ratePerSecond=20)
    index(store, 20, "LeaseClosed", leaseId=1, reason=1, refund=0, earned=0)
    assert history(store) == [
        (OLD, 1_700_000_002, 1_700_000_009, "attestation_expired"),
        (NEW, 1_700_000_012, 1_700_000_020, "closed"),
    ]


def test_a_reorg_that_drops_the_failover_rolls_the_history_back(store: Store) -> None:
    created_and_accepted(store)
    index(store, 9, "LeaseFailedOver", leaseId=1, oldNode=OLD, reason=1)
    index(store, 12, "LeaseAccepted", leaseId=1, nodeKey=NEW, ratePerSecond=20)
    with store.session() as session:  # as Indexer._rollback: drop past the fork, rebuild
        session.execute(delete(ChainEvent).where(ChainEvent.block_number > 8))
        session.flush()
        projections.rebuild_lease(session, 1)
    with store.session() as session:
        lease = session.get(Lease, 1)
        assert lease is not None and (lease.status, lease.node) == (LeaseState.ACTIVE, OLD)
        attestation = session.get(Attestation, 1)
        assert attestation is not None and attestation.status == AttestationState.VERIFIED
    assert history(store) == [(OLD, 1_700_000_002, None, None)]
    # Replaying the same events again changes nothing (rebuilt from events only).
    with store.session() as session:
        projections.rebuild_lease(session, 1)
    assert history(store) == [(OLD, 1_700_000_002, None, None)]


def test_the_matcher_offers_a_failed_over_lease_to_another_node_only(
    store: Store, clock: Clock
) -> None:
    old = _node(store, OLD, price_per_vcpu_second=1)  # the cheapest: it would win again
    new = _node(store, NEW, price_per_vcpu_second=5)
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    for address in (old, new):
        _beat(matcher, clock, address, 16, 65536, 500)
    created_and_accepted(store)
    assert matcher.match_lease(1) is None  # active: nothing to match
    index(store, 9, "LeaseFailedOver", leaseId=1, oldNode="0x" + "0A" * 20, reason=2)
    matcher.lease_closed(1)  # what the service does on LeaseFailedOver
    match = matcher.match_lease(1)
    assert match is not None and match.node == new
    assert dispatched.calls == [(1, new)]
    # That one does not accept in time: nobody else is left (the old node never again).
    clock.advance(61)
    assert matcher.expire_overdue() == []
    assert dispatched.calls == [(1, new)]


def test_the_api_shows_the_nodes_and_the_old_node_loses_the_spec(
    client: TestClient, store: Store, clock: Clock
) -> None:
    from eth_account import Account

    from backend.store import Match
    from cvm.api_models import NODE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
    from cvm.eip712 import LeaseSpecRequest, sign_node_message

    old, new = Account.create(), Account.create()
    add_node(store, old.address)
    add_node(store, new.address)
    index(store, 1, "LeaseCreated", leaseId=1, renter=RENTER, spec=SPEC, maxPricePerSecond=100,
          deposit=10**18, expectedMeasurement=b"\xab" * 48)  # fmt: skip
    with store.session() as session:
        session.add(PrivateSpec(spec_hash="0x" + "00" * 32, renter=RENTER, image="img",
                                created_at=clock.datetime()))  # fmt: skip
        for node in (old, new):  # both were matched to it once (one live at a time)
            session.add(Match(lease_id=1, node=node.address.lower(), status="released", vcpus=1,
                              memory_mib=1, disk_gib=1, score=1.0, created_at=clock.datetime(),
                              deadline=clock.datetime()))  # fmt: skip
    index(store, 2, "LeaseAccepted", leaseId=1, nodeKey=old.address, ratePerSecond=20)
    domain = Domain(31337, "0x" + "11" * 20)  # the chain_info fixture's registry

    def spec_as(account: Any, nonce: int) -> int:
        request = LeaseSpecRequest(
            node=account.address, lease_id=1, timestamp=int(clock.now), nonce=nonce
        )
        headers = {
            NODE_HEADER: account.address,
            TIMESTAMP_HEADER: str(request.timestamp),
            NONCE_HEADER: str(nonce),
            SIGNATURE_HEADER: sign_node_message(request, domain, account.key),
        }
        return client.get("/v1/leases/1/spec", headers=headers).status_code

    assert spec_as(old, 1) == 200
    index(store, 9, "LeaseFailedOver", leaseId=1, oldNode=old.address, reason=2)
    index(store, 12, "LeaseAccepted", leaseId=1, nodeKey=new.address, ratePerSecond=20)
    view = client.get("/v1/leases/1").json()
    assert view["node"] == new.address
    assert view["nodes"] == [
        {"node": old.address, "accepted_at": 1_700_000_002, "ended_at": 1_700_000_009,
         "reason": "attestation_expired"},
        {"node": new.address, "accepted_at": 1_700_000_012, "ended_at": None, "reason": None},
    ]  # fmt: skip
    assert client.get("/v1/leases").json()[0]["nodes"] == view["nodes"]
    assert spec_as(new, 2) == 200
    assert spec_as(old, 3) == 403


def test_the_timeline_follows_the_node_the_lease_runs_on_now(
    client: TestClient, store: Store
) -> None:
    created_and_accepted(store)
    before = {s["name"]: s for s in client.get("/v1/leases/1/timeline").json()["steps"]}
    assert before["verified"]["at"] == 1_700_000_004
    index(store, 9, "LeaseFailedOver", leaseId=1, oldNode=OLD, reason=2)
    index(store, 12, "LeaseAccepted", leaseId=1, nodeKey=NEW, ratePerSecond=20)
    steps = {s["name"]: s for s in client.get("/v1/leases/1/timeline").json()["steps"]}
    assert steps["created"]["at"] == 1_700_000_001
    assert steps["accepted"]["at"] == 1_700_000_012
    assert steps["accepted"]["detail"]["node"] == NEW
    assert steps["report_submitted"]["at"] is None and steps["verified"]["at"] is None


def test_a_node_that_lost_the_first_round_is_offered_the_failed_over_lease(
    store: Store, clock: Clock
) -> None:
    """The old node's reservation expired while it booted (a combined accept), the lease went
    to the new node, and the old node's late accept won the race: after the failover the new
    node is offered the lease again, its lost reservation being of the round that ended."""
    old = _node(store, OLD, price_per_vcpu_second=1)
    new = _node(store, NEW, price_per_vcpu_second=5)
    matcher, dispatched = _matcher(store, clock)
    matcher.rebuild()
    for address in (old, new):
        _beat(matcher, clock, address, 16, 65536, 500)
    index(store, 1, "LeaseCreated", leaseId=1, renter=RENTER, spec=SPEC, maxPricePerSecond=100,
          deposit=10**18, expectedMeasurement=b"\xab" * 48)  # fmt: skip
    first = matcher.match_lease(1)
    assert first is not None and first.node == old
    clock.advance(61)
    for address in (old, new):
        _beat(matcher, clock, address, 16, 65536, 500)
    assert matcher.expire_overdue() == [1]
    assert dispatched.calls == [(1, old), (1, new)]
    clock.advance(1)
    # The old node's accept lands first after all: its expired reservation is taken back.
    index(store, 2, "LeaseAccepted", leaseId=1, nodeKey=OLD, ratePerSecond=20)
    matcher.lease_accepted(1, old)
    index(store, 3, "AttestationSubmitted", leaseId=1, node=OLD, reportHash=b"\x01" * 32,
          measurement=b"\xab" * 48)  # fmt: skip
    index(store, 4, "AttestationVerified", leaseId=1, reportHash=b"\x01" * 32)
    clock.advance(30)
    index(store, 9, "LeaseFailedOver", leaseId=1, oldNode=OLD, reason=2)
    matcher.lease_closed(1)
    match = matcher.match_lease(1)
    assert match is not None and match.node == new
    assert dispatched.calls == [(1, old), (1, new), (1, new)]


def test_a_lease_moved_by_a_rejection_keeps_the_verdict_and_says_why(store: Store) -> None:
    # A rejected attestation on a lease whose renter allows failover moves the lease (reason 4)
    # right after the verdict (the same transaction on chain): the verdict stays Rejected, the
    # history says why.
    created_and_accepted(store)
    index(store, 5, "AttestationSubmitted", leaseId=1, node=OLD, reportHash=b"\x02" * 32,
          measurement=b"\xab" * 48)  # fmt: skip
    index(store, 6, "AttestationRejected", leaseId=1, reportHash=b"\x02" * 32)
    index(store, 7, "LeaseFailedOver", leaseId=1, oldNode=OLD, reason=4)
    with store.session() as session:
        lease = session.get(Lease, 1)
        assert lease is not None and (lease.status, lease.node) == (LeaseState.OPEN, None)
        attestation = session.get(Attestation, 1)
        assert attestation is not None and attestation.status == AttestationState.REJECTED
    assert history(store) == [(OLD, 1_700_000_002, 1_700_000_007, "attestation_rejected")]
