"""`/v1/nodes`: listing, filters, and signed heartbeats with their error paths."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from backend.api.deps import AppContext
from backend.store import Heartbeat, Store
from cvm.eip712 import Domain, sign_heartbeat
from cvm.eip712 import Heartbeat as HeartbeatFields
from tests.unit.backend.factories import Clock, add_node, new_account


def _heartbeat(account: Any, domain: Domain, timestamp: int, **free: int) -> dict[str, Any]:
    fields = HeartbeatFields(
        node=account.address,
        free_vcpus=free.get("vcpus", 8),
        free_memory_mib=free.get("memory", 32768),
        free_disk_gib=free.get("disk", 200),
        running_leases=free.get("running", 1),
        timestamp=timestamp,
    )
    return sign_heartbeat(fields, domain, account.key).to_json()


def test_list_and_filter_nodes(client: TestClient, store: Store) -> None:
    add_node(store, "0x" + "01" * 20, tee_type=1, vcpus=4, price_per_vcpu_second=5)
    add_node(store, "0x" + "02" * 20, tee_type=1, vcpus=32, price_per_vcpu_second=50)
    add_node(store, "0x" + "03" * 20, tee_type=2, vcpus=32, price_per_vcpu_second=5, stake=10**30)

    assert len(client.get("/v1/nodes").json()) == 3
    snp = client.get("/v1/nodes", params={"tee_type": 1}).json()
    assert {n["address"].lower() for n in snp} == {"0x" + "01" * 20, "0x" + "02" * 20}
    big = client.get("/v1/nodes", params={"min_vcpus": 16}).json()
    assert {n["vcpus"] for n in big} == {32}
    cheap = client.get("/v1/nodes", params={"max_price_per_vcpu_second": 10}).json()
    assert {n["price_per_vcpu_second"] for n in cheap} == {5}
    # uint256 amounts compare numerically, not as text, on the store.
    rich = client.get("/v1/nodes", params={"min_stake": 10**29}).json()
    assert [n["stake"] for n in rich] == [10**30]
    page = client.get("/v1/nodes", params={"limit": 1, "offset": 1}).json()
    assert page[0]["address"].lower() == "0x" + "02" * 20


def test_get_node_and_its_errors(client: TestClient, store: Store) -> None:
    add_node(store, "0x" + "0a" * 20)
    body = client.get("/v1/nodes/0x" + "0A" * 20).json()
    assert body["address"] == "0x0A0A0a0a0a0a0a0A0a0a0A0a0A0A0A0a0a0a0a0a"  # EIP-55 checksum
    assert body["reputation"] == 0.5 and body["free_vcpus"] is None

    missing = client.get("/v1/nodes/0x" + "0b" * 20)
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    malformed = client.get("/v1/nodes/0x1234")
    assert malformed.status_code == 422 and "20-byte" in malformed.json()["detail"]
    bad_query = client.get("/v1/nodes", params={"limit": 0})
    assert bad_query.status_code == 422 and "limit" in bad_query.json()["detail"]


def test_signed_heartbeat_is_stored(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node = new_account()
    add_node(store, node.address)
    body = _heartbeat(node, context.domain, int(clock.now), vcpus=6, running=2)
    response = client.post(f"/v1/nodes/{node.address}/heartbeats", json=body)
    assert response.status_code == 201, response.text
    with store.session() as session:
        row = session.get(Heartbeat, node.address.lower())
        assert row is not None and row.free_vcpus == 6 and row.running_leases == 2
    listed = client.get(f"/v1/nodes/{node.address}").json()
    assert listed["free_vcpus"] == 6 and listed["running_leases"] == 2


def test_heartbeat_replay_and_reordering_are_refused(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node = new_account()
    add_node(store, node.address)
    url = f"/v1/nodes/{node.address}/heartbeats"
    first = _heartbeat(node, context.domain, int(clock.now), vcpus=4)
    assert client.post(url, json=first).status_code == 201
    replay = client.post(url, json=first)
    assert replay.status_code == 409 and "not newer" in replay.json()["detail"]
    older = _heartbeat(node, context.domain, int(clock.now) - 5, vcpus=1)
    assert client.post(url, json=older).status_code == 409
    newer = _heartbeat(node, context.domain, int(clock.now) + 1, vcpus=2)
    assert client.post(url, json=newer).status_code == 201
    with store.session() as session:
        row = session.get(Heartbeat, node.address.lower())
        assert row is not None and row.free_vcpus == 2


def test_heartbeat_signature_errors(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node, stranger = new_account(), new_account()
    add_node(store, node.address)
    url = f"/v1/nodes/{node.address}/heartbeats"
    now = int(clock.now)

    # Signed by another key, claiming to be the node.
    forged = _heartbeat(stranger, context.domain, now)
    forged["node"] = node.address
    response = client.post(url, json=forged)
    assert response.status_code == 401 and "signature" in response.json()["detail"]

    # Signed for another chain (domain separation).
    other_chain = Domain(chain_id=1, node_registry=context.chain.node_registry)
    response = client.post(url, json=_heartbeat(node, other_chain, now))
    assert response.status_code == 401

    # Signed for another deployment's NodeRegistry.
    other_registry = Domain(chain_id=context.chain.chain_id, node_registry="0x" + "99" * 20)
    assert client.post(url, json=_heartbeat(node, other_registry, now)).status_code == 401

    # A field changed after signing.
    tampered = _heartbeat(node, context.domain, now)
    tampered["free_vcpus"] += 1
    assert client.post(url, json=tampered).status_code == 401

    # Malformed signature.
    malformed = _heartbeat(node, context.domain, now)
    malformed["signature"] = "0x1234"
    assert client.post(url, json=malformed).status_code == 422
    with store.session() as session:
        assert session.get(Heartbeat, node.address.lower()) is None


def test_heartbeat_window_path_and_registration(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node, unregistered = new_account(), new_account()
    add_node(store, node.address)
    url = f"/v1/nodes/{node.address}/heartbeats"
    window = context.settings.heartbeat_window_s

    stale = client.post(url, json=_heartbeat(node, context.domain, int(clock.now) - window - 1))
    assert stale.status_code == 422 and "window" in stale.json()["detail"]
    future = client.post(url, json=_heartbeat(node, context.domain, int(clock.now) + window + 1))
    assert future.status_code == 422

    other_path = f"/v1/nodes/{unregistered.address}/heartbeats"
    mismatch = client.post(other_path, json=_heartbeat(node, context.domain, int(clock.now)))
    assert mismatch.status_code == 422 and "differs" in mismatch.json()["detail"]

    unknown = client.post(other_path, json=_heartbeat(unregistered, context.domain, int(clock.now)))
    assert unknown.status_code == 404 and "not registered" in unknown.json()["detail"]

    extra = _heartbeat(node, context.domain, int(clock.now))
    extra["surprise"] = 1
    assert client.post(url, json=extra).status_code == 422
