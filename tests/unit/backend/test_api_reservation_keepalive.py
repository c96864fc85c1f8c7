"""`POST /v1/leases/{id}/reservation/keepalive`: the node holding a lease's live reservation
(signed request) moves its deadline to now + the accept timeout while its guest boots before
the combined accept, never past the dispatch + `match_boot_max_s`; the matcher then leaves it
alone. Other nodes, forged or replayed requests and unknown leases get clear errors (SQLite
and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from backend.api.deps import AppContext
from backend.matching.service import Matcher
from backend.store import Match, ReservationState, Store
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import NODE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cvm.eip712 import LeaseSpecRequest, sign_node_message
from tests.unit.backend.factories import Clock, add_lease, new_account

RENTER = "0x" + "cc" * 20


def signed(
    context: AppContext, node: LocalAccount, lease_id: int, nonce: int, *, at: int | None = None
) -> dict[str, str]:
    now = int(context.clock()) if at is None else at
    request = LeaseSpecRequest(node=node.address, lease_id=lease_id, timestamp=now, nonce=nonce)
    return {
        NODE_HEADER: node.address, TIMESTAMP_HEADER: str(now), NONCE_HEADER: str(nonce),
        SIGNATURE_HEADER: sign_node_message(request, context.domain, node.key),
    }  # fmt: skip


def keepalive(client: TestClient, lease_id: int, headers: dict[str, str]) -> Any:
    return client.post(f"/v1/leases/{lease_id}/reservation/keepalive", headers=headers)


def reserve(
    store: Store, clock: Clock, lease_id: int, node: LocalAccount, *, timeout_s: int, **kw: Any
) -> None:
    now = clock.datetime()
    with store.session() as session:
        session.add(
            Match(
                lease_id=lease_id, node=node.address.lower(),
                status=kw.get("status", ReservationState.RESERVED), vcpus=2, memory_mib=4096,
                disk_gib=20, score=1.0, created_at=now,
                deadline=now + timedelta(seconds=timeout_s),
            )
        )  # fmt: skip


def statuses(store: Store, lease_id: int) -> dict[str, str]:
    with store.new_session(read_only=True) as session:
        rows = session.query(Match).filter(Match.lease_id == lease_id).all()
        return {row.node: str(row.status) for row in rows}


def matcher(store: Store, clock: Clock, timeout_s: int) -> Matcher:
    return Matcher(
        store, lambda lease, node: None, accept_timeout_s=timeout_s, stale_after_s=3600,
        clock=clock,
    )  # fmt: skip


def test_the_reserved_node_keeps_its_reservation_past_the_accept_timeout(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    timeout = context.settings.match_accept_timeout_s
    node = new_account()
    add_lease(store, 1, RENTER)
    reserve(store, clock, 1, node, timeout_s=timeout)
    dispatched = clock.now
    expirer = matcher(store, clock, timeout)
    for nonce in range(1, 4):
        clock.advance(timeout * 0.75)
        answer = keepalive(client, 1, signed(context, node, 1, nonce))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "reserved" and body["node"] == node.address.lower()
        assert body["expires_in_s"] == timeout
        expirer.expire_overdue()
        assert statuses(store, 1) == {node.address.lower(): "reserved"}
    # Without keepalives it expires at its (moved) deadline, as before.
    clock.advance(timeout)
    expirer.expire_overdue()
    assert statuses(store, 1) == {node.address.lower(): "expired"}
    assert clock.now - dispatched > timeout  # it was kept beyond the first deadline


def test_never_beyond_the_maximum_after_the_dispatch(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    context.settings.match_accept_timeout_s = 60
    context.settings.match_boot_max_s = 100
    node = new_account()
    add_lease(store, 1, RENTER)
    reserve(store, clock, 1, node, timeout_s=60)
    clock.advance(50)
    capped = keepalive(client, 1, signed(context, node, 1, 1))
    assert capped.status_code == 200
    assert capped.json()["expires_in_s"] == 50  # dispatch + 100, not now + 60
    assert capped.json()["deadline"] == capped.json()["max_deadline"]
    clock.advance(50)
    refused = keepalive(client, 1, signed(context, node, 1, 2))
    assert refused.status_code == 409
    assert "maximum" in refused.json()["detail"]


def test_only_the_node_holding_the_live_reservation_may_extend_it(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    holder, expired, stranger = new_account(), new_account(), new_account()
    add_lease(store, 1, RENTER)
    reserve(store, clock, 1, expired, timeout_s=0, status=ReservationState.EXPIRED)
    reserve(store, clock, 1, holder, timeout_s=60)
    # Matched before, its reservation expired: 409, not its reservation to keep.
    late = keepalive(client, 1, signed(context, expired, 1, 1))
    assert late.status_code == 409, late.text
    assert "no live reservation" in late.json()["detail"]
    # Never matched to this lease at all: 403.
    assert keepalive(client, 1, signed(context, stranger, 1, 2)).status_code == 403
    assert keepalive(client, 2, signed(context, holder, 2, 3)).status_code == 404
    assert statuses(store, 1)[holder.address.lower()] == "reserved"


def test_an_accepted_reservation_is_left_as_it_is(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    node = new_account()
    add_lease(store, 1, RENTER)
    reserve(store, clock, 1, node, timeout_s=60, status=ReservationState.ACCEPTED)
    answer = keepalive(client, 1, signed(context, node, 1, 1))
    assert answer.status_code == 200
    assert answer.json()["status"] == "accepted" and answer.json()["expires_in_s"] == 60


def test_a_forged_replayed_unsigned_or_stale_request_is_refused(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    node, other = new_account(), new_account()
    add_lease(store, 1, RENTER)
    reserve(store, clock, 1, node, timeout_s=60)
    headers = signed(context, node, 1, 77)
    assert keepalive(client, 1, headers).status_code == 200
    assert keepalive(client, 1, headers).status_code == 409  # the same nonce again
    assert keepalive(client, 1, {}).status_code == 401
    forged = signed(context, other, 1, 78)  # another key's signature naming the node
    forged[NODE_HEADER] = node.address
    assert keepalive(client, 1, forged).status_code == 401
    stale = signed(context, node, 1, 79, at=int(context.clock()) - 3600)
    assert keepalive(client, 1, stale).status_code == 401


def test_the_api_client_keeps_it_alive(
    live_api: str, context: AppContext, store: Store, clock: Clock
) -> None:
    node, other = new_account(), new_account()
    add_lease(store, 1, RENTER)
    reserve(store, clock, 1, node, timeout_s=60)
    clock.advance(30)
    with ApiClient(live_api) as api:
        kept = api.keep_reservation_alive(1, node_key=node.key)
        assert kept.lease_id == 1 and kept.expires_in_s == 60
        try:
            api.keep_reservation_alive(1, node_key=other.key)
        except ApiError as exc:
            assert exc.status_code == 403
        else:
            raise AssertionError("another node extended the reservation")
