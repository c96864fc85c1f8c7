"""What a newcomer found, closed: rate limits, SIWE nonce caps, body limits before reading,
and evidence uploads only from the lease's node (forged, replayed, oversized refused)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.api import create_app
from backend.api.deps import AppContext
from backend.api.limits import RateLimiter
from backend.domain.errors import RateLimited
from backend.store import Attestation, Evidence, Lease, SiweNonce, Store
from cvm.api_models import (
    NODE_HEADER,
    NONCE_HEADER,
    RETRY_AFTER_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttestationState,
)
from cvm.eip712 import LeaseSpecRequest, sign_node_message
from tests.fixtures.processes import free_port, serving
from tests.unit.backend.factories import (
    Clock,
    add_lease,
    add_match,
    add_node,
    new_account,
    upload_headers,
)
from tests.unit.backend.test_api_evidence_health import bundle

BURST = 1000


def _evidence_rows(store: Store) -> int:
    with store.session() as session:
        return session.query(Evidence).count()


def test_evidence_only_from_the_leases_node(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node, stranger, matched = new_account(), new_account(), new_account()
    add_lease(store, 1, "0x" + "44" * 20, node=node.address.lower(), attestation_nonce=1)
    add_match(store, 1, matched.address, clock)
    now = int(clock.now)
    raw = bundle(lease_id=1, nonce=1).encode()

    def post(headers: dict[str, str], body: bytes = raw) -> int:
        return client.post("/v1/evidence", content=body, headers=headers).status_code

    # Unsigned, signed by a key that is not the claimed node, signed for other bytes.
    assert post({"Content-Type": "application/octet-stream"}) == 401
    forged = upload_headers(stranger, raw, context.domain, now)
    forged[NODE_HEADER] = node.address
    assert post(forged) == 401
    other_bytes = upload_headers(node, bundle(lease_id=1).encode(), context.domain, now)
    assert post(other_bytes) == 401
    # Signed for another lease or nonce than the bundle names: the signature does not match.
    assert post(upload_headers(node, raw, context.domain, now, lease_id=2)) == 401
    assert post(upload_headers(node, raw, context.domain, now, nonce=0)) == 401
    # Outside the time window (an old captured upload).
    old = now - context.settings.heartbeat_window_s - 5
    assert post(upload_headers(node, raw, context.domain, old)) == 401
    # A well-signed upload from a node that has nothing to do with the lease.
    assert post(upload_headers(stranger, raw, context.domain, now)) == 403
    # A lease that does not exist: refused, nothing stored (the database does not grow).
    ghost = bundle(lease_id=99).encode()
    assert post(upload_headers(node, ghost, context.domain, now), ghost) == 404
    # A replay of an upload for a nonce the lease has already attested.
    stale = bundle(lease_id=1).encode()
    assert post(upload_headers(node, stale, context.domain, now), stale) == 409
    assert _evidence_rows(store) == 0

    # The lease's node, and a node it was matched to, are served.
    assert post(upload_headers(node, raw, context.domain, now)) == 201
    assert post(upload_headers(matched, raw, context.domain, now)) == 201
    assert _evidence_rows(store) == 1

    # Evidence that arrives after its submission (e.g. the backend was down) is the one the
    # verifier waits for: taken for the pending nonce, if its report hash is the chain's.
    late = bundle(lease_id=1, nonce=1)
    with store.session() as session:
        lease = session.get(Lease, 1)
        assert lease is not None
        lease.attestation_nonce = 2
        session.add(
            Attestation(
                lease_id=1,
                node=node.address.lower(),
                status=AttestationState.PENDING,
                report_hash="0x" + late.report_hash.hex(),
                measurement="0x" + "ab" * 48,
                nonce=1,
                submitted_block=9,
                submitted_at=now,
            )
        )
    assert post(upload_headers(node, raw, context.domain, now)) == 409  # another report
    late_raw = late.encode()
    assert post(upload_headers(node, late_raw, context.domain, now), late_raw) == 201


def _read_status(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return int(head.split(" ", 2)[1]), head


@pytest.mark.parametrize("path", ["/v1/auth/nonce", "/v1/evidence"])
def test_a_50_mb_body_is_refused_before_it_is_read(live_api: str, path: str) -> None:
    url = urlparse(live_api)
    declared = 50 * 1024 * 1024
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        # Only the headers and a few bytes are sent: an answer proves nothing waited for the
        # other 50 MB (a server that buffered first would sit until the timeout).
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n{{".encode()
        )
        status, _ = _read_status(sock)
    assert status == 413


def test_a_body_a_little_over_the_limit_gets_a_readable_413_not_a_reset(live_api: str) -> None:
    # Answering while the body sits unread makes the kernel reset the connection, and the
    # client would see that instead of the refusal.
    body = b'{"address": "' + b"a" * 900_000 + b'"}'
    answer = httpx.post(f"{live_api}/v1/auth/nonce", content=body, timeout=10)
    assert answer.status_code == 413
    assert "limit" in answer.json()["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(200):  # 200 KiB in 1 KiB chunks, no Content-Length
            yield b" " * 1024

    response = client.post(
        "/v1/auth/nonce", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_a_burst_from_one_client_is_limited_and_others_are_served(context: AppContext) -> None:
    context.settings.rate_limit_per_client = 200
    app = create_app(context)
    noisy = TestClient(app, client=("10.0.0.1", 1000))
    quiet = TestClient(app, client=("10.0.0.2", 1000))
    statuses = [noisy.get("/v1/health").status_code for _ in range(BURST)]
    assert statuses.count(200) == 200 and statuses.count(429) == BURST - 200
    refused = noisy.get("/v1/health")
    assert refused.status_code == 429 and int(refused.headers[RETRY_AFTER_HEADER]) >= 1
    assert quiet.get("/v1/health").status_code == 200
    # The web console and metrics are outside /v1 and not counted.
    assert noisy.get("/metrics").status_code == 200


def test_live_siwe_nonces_per_address_are_capped_by_dropping_the_oldest(
    client: TestClient, context: AppContext, store: Store, clock: Clock
) -> None:
    context.settings.rate_limit_writes_per_address = 1000
    cap = context.settings.siwe_max_live_nonces
    alice = new_account()
    issued = []
    for _ in range(cap + 3):
        issued.append(
            client.post("/v1/auth/nonce", json={"address": alice.address}).json()["nonce"]
        )
        clock.advance(1)
    with store.session() as session:
        live = {
            row.nonce for row in session.query(SiweNonce).filter_by(address=alice.address.lower())
        }
    assert live == set(issued[3:])  # the newest `cap`, the oldest dropped


def test_nobody_can_stop_an_address_signing_in(context: AppContext) -> None:
    """Challenges and failed logins for alice's address, from another client, past every
    cap: alice (from her own client) still gets a challenge and signs in."""
    from tests.unit.backend.test_api_auth_leases import login

    context.settings.rate_limit_writes_per_address = 3
    app = create_app(context)
    attacker = TestClient(app, client=("10.0.0.66", 1000))
    alice = new_account()
    flood = [
        attacker.post("/v1/auth/nonce", json={"address": alice.address}).status_code
        for _ in range(context.settings.siwe_max_live_nonces + 2)
    ]
    assert flood[:3] == [201] * 3 and set(flood[3:]) == {429}  # counted per client IP
    challenge = attacker.post("/v1/auth/nonce", json={"address": alice.address})
    bad_logins = [
        attacker.post(
            "/v1/auth/login",
            json={"message": f"x\n{alice.address}\n", "signature": "0x" + "00" * 65},
        ).status_code
        for _ in range(5)
    ]
    assert challenge.status_code == 429 and bad_logins[-1] == 429
    with TestClient(app, client=("10.0.0.7", 1000)) as own:
        assert login(own, alice)


def test_replicas_share_counters_through_redis(redis_url: str) -> None:
    first, second = RateLimiter(redis_url), RateLimiter(redis_url)
    key = new_account().address
    for limiter in (first, second, first):
        limiter.hit("test", key, 3)
    with pytest.raises(RateLimited) as over:
        second.hit("test", key, 3)
    assert over.value.retry_after_s >= 1
    first.close()
    second.close()


def test_without_redis_counters_stay_on_per_process() -> None:
    down = RateLimiter(f"redis://127.0.0.1:{free_port()}/0")
    key = new_account().address
    down.hit("test", key, 2)
    down.hit("test", key, 2)
    with pytest.raises(RateLimited):
        down.hit("test", key, 2)
    down.close()


def test_live_api_answers_429_with_retry_after(context: AppContext) -> None:
    context.settings.rate_limit_per_client = 5
    with serving(create_app(context)) as url:
        import httpx

        with httpx.Client(base_url=url) as http:
            codes = [http.get("/v1/health").status_code for _ in range(8)]
            last = http.get("/v1/health")
    assert codes == [200] * 5 + [429] * 3
    assert last.status_code == 429 and RETRY_AFTER_HEADER in last.headers


def test_forged_requests_naming_a_node_do_not_use_up_its_allowance(
    context: AppContext, store: Store, clock: Clock
) -> None:
    """A burst of unsigned heartbeats, evidence uploads and spec reads naming a node's
    address (from another client) leaves the node's own signed requests served."""
    from tests.unit.backend.test_api_nodes import _heartbeat

    context.settings.rate_limit_writes_per_address = 3
    app = create_app(context)
    attacker = TestClient(app, client=("10.0.0.66", 1000))
    genuine = TestClient(app, client=("10.0.0.7", 1000))
    node, forger = new_account(), new_account()
    add_node(store, node.address)
    add_lease(store, 1, "0x" + "44" * 20, node=node.address.lower(), attestation_nonce=1)
    now = int(clock.now)
    junk = _heartbeat(forger, context.domain, now)
    junk["node"] = node.address
    raw = bundle(lease_id=1, nonce=1).encode()
    forged_upload = upload_headers(forger, raw, context.domain, now)
    forged_upload[NODE_HEADER] = node.address
    forged_read = {
        NODE_HEADER: node.address, TIMESTAMP_HEADER: str(now), NONCE_HEADER: "1",
        SIGNATURE_HEADER: "0x" + "00" * 65,
    }  # fmt: skip
    for _ in range(10):
        heartbeat = attacker.post(f"/v1/nodes/{node.address}/heartbeats", json=junk)
        assert heartbeat.status_code == 401
        assert attacker.post("/v1/evidence", content=raw, headers=forged_upload).status_code == 401
        assert attacker.get("/v1/leases/1/secrets", headers=forged_read).status_code == 401

    signed = _heartbeat(node, context.domain, now)
    assert genuine.post(f"/v1/nodes/{node.address}/heartbeats", json=signed).status_code == 201
    upload = upload_headers(node, raw, context.domain, now)
    assert genuine.post("/v1/evidence", content=raw, headers=upload).status_code == 201
    request = LeaseSpecRequest(node=node.address, lease_id=1, timestamp=now, nonce=7)
    read = {
        NODE_HEADER: node.address, TIMESTAMP_HEADER: str(now), NONCE_HEADER: "7",
        SIGNATURE_HEADER: sign_node_message(request, context.domain, node.key),
    }  # fmt: skip
    assert genuine.get("/v1/leases/1/secrets", headers=read).status_code == 200
    # Verified requests still count per address.
    for step in (1, 2, 3):
        again = _heartbeat(node, context.domain, now + step)
        answer = genuine.post(f"/v1/nodes/{node.address}/heartbeats", json=again)
        assert answer.status_code == (201 if step < 3 else 429)


def test_a_client_that_expects_100_continue_gets_the_413_before_sending_its_body(
    live_api: str,
) -> None:
    """Fails on the old middleware: for a body a little over the limit it read the body first,
    so the server invited it (`100 Continue`) only to refuse it. A client that waits for the
    answer before sending (curl does for large uploads) now gets the 413 from the headers."""
    url = urlparse(live_api)
    with socket.create_connection((url.hostname, url.port or 80), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 900000\r\n\r\n"
        )
        status, _ = _read_status(sock)
    assert status == 413
