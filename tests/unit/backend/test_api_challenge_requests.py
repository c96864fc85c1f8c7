"""`POST /v1/leases/{id}/challenge-request`: the lease's own node (signed request) asks the
failover watch to challenge its lease, so its relaunched guest may attest at once. Only the
running lease's current node; one pending request per lease (the same again is a no-op); a
replayed signed request is refused; bad ids and unsigned requests get clear errors (SQLite
and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from backend.api.deps import AppContext
from backend.domain import challenge_requests
from backend.store import ChallengeRequest, Store
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import (
    NODE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    LeaseState,
)
from cvm.eip712 import LeaseSpecRequest, sign_node_message
from tests.unit.backend.factories import Clock, add_lease, new_account

RENTER = "0x" + "cc" * 20


@pytest.fixture(autouse=True)
def key_service(context: AppContext) -> None:
    """A deployment with a key service (the failover watch that acts on requests runs)."""
    context.key_holders = lambda address: False


def signed(
    context: AppContext, node: LocalAccount, lease_id: int, nonce: int, *, at: int | None = None
) -> dict[str, str]:
    now = int(context.clock()) if at is None else at
    request = LeaseSpecRequest(node=node.address, lease_id=lease_id, timestamp=now, nonce=nonce)
    return {
        NODE_HEADER: node.address, TIMESTAMP_HEADER: str(now), NONCE_HEADER: str(nonce),
        SIGNATURE_HEADER: sign_node_message(request, context.domain, node.key),
    }  # fmt: skip


def ask(client: TestClient, lease_id: int, headers: dict[str, str]) -> Any:
    return client.post(f"/v1/leases/{lease_id}/challenge-request", headers=headers)


def rows(store: Store) -> list[tuple[int, str]]:
    with store.new_session(read_only=True) as session:
        return challenge_requests.pending(session, 100)


def test_the_leases_node_asks_once_and_the_same_again_is_the_same_request(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    node = new_account()
    add_lease(store, 1, RENTER, status=LeaseState.ACTIVE, node=node.address.lower())
    first = ask(client, 1, signed(context, node, 1, 1))
    assert first.status_code == 202, first.text
    assert first.json()["lease_id"] == 1 and first.json()["node"] == node.address.lower()
    clock.advance(5)
    again = ask(client, 1, signed(context, node, 1, 2))
    assert again.status_code == 202
    assert again.json()["requested_at"] == first.json()["requested_at"]  # idempotent
    assert rows(store) == [(1, node.address.lower())]


def test_only_the_running_leases_current_node_may_ask(
    client: TestClient, context: AppContext, store: Store
) -> None:
    node, other = new_account(), new_account()
    add_lease(store, 1, RENTER, status=LeaseState.ACTIVE, node=node.address.lower())
    add_lease(store, 2, RENTER, status=LeaseState.CLOSED, node=node.address.lower())
    add_lease(store, 3, RENTER, status=LeaseState.OPEN)
    refused = ask(client, 1, signed(context, other, 1, 1))
    assert refused.status_code == 403
    assert "only the node that accepted" in refused.json()["detail"]
    assert ask(client, 2, signed(context, node, 2, 2)).status_code == 403  # closed
    assert ask(client, 3, signed(context, node, 3, 3)).status_code == 403  # nobody's
    assert ask(client, 4, signed(context, node, 4, 4)).status_code == 404
    assert rows(store) == []


def test_a_replayed_or_unsigned_or_stale_request_is_refused(
    client: TestClient, context: AppContext, store: Store
) -> None:
    node, other = new_account(), new_account()
    add_lease(store, 1, RENTER, status=LeaseState.ACTIVE, node=node.address.lower())
    headers = signed(context, node, 1, 77)
    assert ask(client, 1, headers).status_code == 202
    replay = ask(client, 1, headers)
    assert replay.status_code == 409, replay.text
    assert ask(client, 1, {}).status_code == 401
    unsigned = dict(headers)
    del unsigned[SIGNATURE_HEADER]
    assert ask(client, 1, unsigned).status_code == 401
    forged = signed(context, other, 1, 78)  # signed by another key, naming the lease's node
    forged[NODE_HEADER] = node.address
    assert ask(client, 1, forged).status_code == 401
    # A request signed for another lease is not this lease's.
    assert ask(client, 1, signed(context, node, 2, 79)).status_code == 401
    stale = signed(context, node, 1, 80, at=int(context.clock()) - 3600)
    assert ask(client, 1, stale).status_code == 401
    for bad in ("-1", str(2**63), "x"):
        answer = client.post(f"/v1/leases/{bad}/challenge-request", headers=headers)
        assert answer.status_code == 422
    assert rows(store) == [(1, node.address.lower())]


def test_the_new_node_replaces_a_request_left_by_the_node_the_lease_moved_from(
    client: TestClient, context: AppContext, store: Store
) -> None:
    old, new = new_account(), new_account()
    add_lease(store, 1, RENTER, status=LeaseState.ACTIVE, node=new.address.lower())
    with store.session() as session:
        session.add(ChallengeRequest(lease_id=1, node=old.address.lower(),
                                     requested_at=context.now()))  # fmt: skip
    assert ask(client, 1, signed(context, new, 1, 1)).status_code == 202
    assert rows(store) == [(1, new.address.lower())]


def test_the_node_agents_client_asks_through_real_http(live_api: str, store: Store) -> None:
    node, other = new_account(), new_account()
    add_lease(store, 1, RENTER, status=LeaseState.ACTIVE, node=node.address.lower())
    view = ApiClient(live_api).request_challenge(1, node_key=node.key)
    assert (view.lease_id, view.node) == (1, node.address.lower())
    try:
        ApiClient(live_api).request_challenge(1, node_key=other.key)
    except ApiError as exc:
        assert exc.status_code == 403
    else:
        raise AssertionError("another node's request was taken")


def test_a_backend_without_a_key_service_says_so(
    client: TestClient, context: AppContext, store: Store
) -> None:
    node = new_account()
    add_lease(store, 1, RENTER, status=LeaseState.ACTIVE, node=node.address.lower())
    context.key_holders = None
    answer = ask(client, 1, signed(context, node, 1, 1))
    assert answer.status_code == 501
    assert "no key service" in answer.json()["detail"]
    assert rows(store) == []
