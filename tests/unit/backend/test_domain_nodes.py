"""`backend.domain.nodes` without HTTP: the heartbeat rule and the node view."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount

from backend.domain import nodes
from backend.domain.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from backend.store import Heartbeat, Store
from cvm.api_models import HeartbeatIn
from cvm.eip712 import Domain, sign_heartbeat
from cvm.eip712 import Heartbeat as HeartbeatFields
from tests.unit.backend.factories import Clock, add_node, new_account

DOMAIN = Domain(chain_id=31337, node_registry="0x" + "11" * 20)
WINDOW_S = 300


def _signed(account: LocalAccount, timestamp: int, free_vcpus: int = 8) -> HeartbeatIn:
    fields = HeartbeatFields(account.address, free_vcpus, 4096, 100, 1, timestamp)
    return HeartbeatIn.model_validate(sign_heartbeat(fields, DOMAIN, account.key).to_json())


def _accept(store: Store, heartbeat: HeartbeatIn, clock: Clock) -> None:
    with store.session() as session:
        nodes.accept_heartbeat(
            session, heartbeat, domain=DOMAIN, now=clock.datetime(), window_s=WINDOW_S
        )


def _free_vcpus(store: Store, address: str) -> int | None:
    with store.session() as session:
        row = session.get(Heartbeat, address.lower())
        return None if row is None else row.free_vcpus


def test_a_heartbeat_only_moves_forward(store: Store, clock: Clock) -> None:
    node = new_account()
    add_node(store, node.address)
    now = int(clock.now)
    _accept(store, _signed(node, now - 10, free_vcpus=4), clock)
    assert _free_vcpus(store, node.address) == 4
    _accept(store, _signed(node, now, free_vcpus=6), clock)
    assert _free_vcpus(store, node.address) == 6

    # A replay of the same timestamp, or an older one arriving late, changes nothing.
    for timestamp in (now, now - 5):
        with pytest.raises(Conflict, match="not newer"):
            _accept(store, _signed(node, timestamp, free_vcpus=1), clock)
    assert _free_vcpus(store, node.address) == 6


def test_a_heartbeat_is_refused_unless_signed_fresh_and_registered(
    store: Store, clock: Clock
) -> None:
    node, stranger = new_account(), new_account()
    add_node(store, node.address)
    now = int(clock.now)

    forged = _signed(stranger, now).model_copy(update={"node": node.address})
    with pytest.raises(Unauthenticated, match="signature"):
        _accept(store, forged, clock)
    with pytest.raises(InvalidInput, match="stale or future"):
        _accept(store, _signed(node, now - WINDOW_S - 1), clock)
    with pytest.raises(NotFound, match="not registered"):
        _accept(store, _signed(stranger, now), clock)
    assert _free_vcpus(store, node.address) is None


def test_node_view_joins_the_last_heartbeat(store: Store, clock: Clock) -> None:
    node = new_account()
    add_node(store, node.address, price_per_vcpu_second=7, attestations_verified=2)
    with store.session() as session:
        before = nodes.get_node(session, node.address)
    assert before.free_vcpus is None and before.last_heartbeat_at is None
    assert before.price_per_vcpu_second == 7 and before.reputation == 0.75

    _accept(store, _signed(node, int(clock.now), free_vcpus=3), clock)
    with store.session() as session:
        after = nodes.get_node(session, node.address.lower())
        listed = nodes.list_nodes(session, nodes.NodeFilter(max_price_per_vcpu_second=6))
    assert after.address == node.address and after.free_vcpus == 3
    assert after.last_heartbeat_at == clock.datetime()
    assert listed == []
