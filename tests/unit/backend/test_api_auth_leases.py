"""SIWE login, lease intents and reads, private spec access, attestation status."""

from __future__ import annotations

import secrets
from typing import Any

from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from backend.api.deps import AppContext
from backend.store import Attestation, Match, Store, Verification
from cvm.api_models import NODE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cvm.eip712 import Domain, LeaseSpecRequest, sign_node_message
from tests.unit.backend.factories import Clock, add_lease, new_account


def _sign(account: LocalAccount, text: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def login(client: TestClient, account: LocalAccount) -> str:
    challenge = client.post("/v1/auth/nonce", json={"address": account.address})
    assert challenge.status_code == 201, challenge.text
    message = challenge.json()["message"]
    response = client.post(
        "/v1/auth/login", json={"message": message, "signature": _sign(account, message)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["address"] == account.address
    return str(response.json()["token"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_siwe_login_issues_a_working_session(client: TestClient) -> None:
    renter = new_account()
    challenge = client.post("/v1/auth/nonce", json={"address": renter.address}).json()
    assert "cvm.test wants you to sign in with your Ethereum account" in challenge["message"]
    assert renter.address in challenge["message"] and challenge["nonce"] in challenge["message"]
    token = login(client, renter)
    intent = client.post("/v1/leases/intents", json={"image": "img"}, headers=_auth(token))
    assert intent.status_code == 201
    assert client.post("/v1/auth/logout", headers=_auth(token)).status_code == 204
    after = client.post("/v1/leases/intents", json={"image": "img"}, headers=_auth(token))
    assert after.status_code == 401


def test_siwe_login_errors(client: TestClient, clock: Clock, context: AppContext) -> None:
    renter, stranger = new_account(), new_account()

    def challenge() -> str:
        return str(
            client.post("/v1/auth/nonce", json={"address": renter.address}).json()["message"]
        )

    message = challenge()
    wrong_signer = client.post(
        "/v1/auth/login", json={"message": message, "signature": _sign(stranger, message)}
    )
    assert wrong_signer.status_code == 401 and "SIWE" in wrong_signer.json()["detail"]
    # The failed attempt did not burn the nonce (nothing half-written) ...
    good = {"message": message, "signature": _sign(renter, message)}
    assert client.post("/v1/auth/login", json=good).status_code == 200
    # ... but a successful one did: a replay finds no nonce.
    replay = client.post("/v1/auth/login", json=good)
    assert replay.status_code == 401 and "nonce" in replay.json()["detail"]

    expired = challenge()
    clock.advance(context.settings.siwe_nonce_ttl_s + 1)
    late = client.post(
        "/v1/auth/login", json={"message": expired, "signature": _sign(renter, expired)}
    )
    assert late.status_code == 401 and "expired" in late.json()["detail"]

    edited = challenge().replace("Sign in to cvm", "Sign in to evil")
    assert (
        client.post(
            "/v1/auth/login", json={"message": edited, "signature": _sign(renter, edited)}
        ).status_code
        == 401
    )
    garbage = client.post(
        "/v1/auth/login", json={"message": "hello", "signature": "0x" + "00" * 65}
    )
    assert garbage.status_code == 422 and "EIP-4361" in garbage.json()["detail"]
    assert client.post("/v1/auth/nonce", json={"address": "0xnope"}).status_code == 422
    for header in ("Bearer nonsense", "Basic abc", "Bearer "):
        response = client.post(
            "/v1/leases/intents", json={"image": "i"}, headers={"Authorization": header}
        )
        assert response.status_code == 401


def test_intent_spec_visible_to_renter_only(client: TestClient, store: Store) -> None:
    renter, other = new_account(), new_account()
    token, other_token = login(client, renter), login(client, other)
    spec = {"image": "ubuntu-24.04", "ssh_public_key": "ssh-ed25519 AAAA", "cloud_init": "#!"}
    created = client.post("/v1/leases/intents", json=spec, headers=_auth(token))
    assert created.status_code == 201
    spec_hash = created.json()["spec_hash"]
    # Idempotent: the same renter and spec give the same hash.
    again = client.post("/v1/leases/intents", json=spec, headers=_auth(token)).json()
    assert again["spec_hash"] == spec_hash
    # Another renter's identical spec is a different record.
    theirs = client.post("/v1/leases/intents", json=spec, headers=_auth(other_token)).json()
    assert theirs["spec_hash"] != spec_hash
    add_lease(store, 7, renter.address, spec_hash=spec_hash)

    public = client.get("/v1/leases/7").json()
    assert public["has_private_spec"] is True and "image" not in public
    mine = client.get("/v1/leases/7/spec", headers=_auth(token))
    assert mine.status_code == 200 and mine.json()["image"] == "ubuntu-24.04"
    assert client.get("/v1/leases/7/spec", headers=_auth(other_token)).status_code == 403
    assert client.get("/v1/leases/7/spec").status_code == 401
    assert client.get("/v1/leases/8/spec", headers=_auth(token)).status_code == 404
    assert (
        client.post("/v1/leases/intents", json={"image": ""}, headers=_auth(token)).status_code
        == 422
    )
    assert client.post("/v1/leases/intents", json=spec).status_code == 401

    # A lease of another renter that names this spec hash does not get the spec.
    add_lease(store, 9, other.address, spec_hash=spec_hash)
    assert client.get("/v1/leases/9").json()["has_private_spec"] is False
    assert client.get("/v1/leases/9/spec", headers=_auth(other_token)).status_code == 404


def _node_headers(node: LocalAccount, lease_id: int, domain: Domain, now: int) -> dict[str, str]:
    nonce = secrets.randbits(63)
    request = LeaseSpecRequest(node=node.address, lease_id=lease_id, timestamp=now, nonce=nonce)
    return {
        NODE_HEADER: node.address,
        TIMESTAMP_HEADER: str(now),
        NONCE_HEADER: str(nonce),
        SIGNATURE_HEADER: sign_node_message(request, domain, node.key),
    }


def test_matched_node_reads_the_spec_with_a_signed_request(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    renter, node, other_node = new_account(), new_account(), new_account()
    token = login(client, renter)
    spec_hash = client.post(
        "/v1/leases/intents", json={"image": "debian"}, headers=_auth(token)
    ).json()["spec_hash"]
    add_lease(store, 3, renter.address, spec_hash=spec_hash)
    now = int(clock.now)
    # Not matched yet: refused.
    refused = client.get("/v1/leases/3/spec", headers=_node_headers(node, 3, context.domain, now))
    assert refused.status_code == 403
    with store.session() as session:
        session.add(
            Match(
                lease_id=3,
                node=node.address.lower(),
                status="reserved",
                vcpus=1,
                memory_mib=1,
                disk_gib=1,
                score=0.5,
                created_at=clock.datetime(),
                deadline=clock.datetime(),
            )
        )
    signed = _node_headers(node, 3, context.domain, now)
    ok = client.get("/v1/leases/3/spec", headers=signed)
    assert ok.status_code == 200 and ok.json()["image"] == "debian"
    # The same signed request again, inside its time window: a replay.
    replay = client.get("/v1/leases/3/spec", headers=signed)
    assert replay.status_code == 409 and "replay" in replay.json()["detail"]
    # The nonce is signed: changing it breaks the signature.
    tampered = {**signed, NONCE_HEADER: str(int(signed[NONCE_HEADER]) + 1)}
    assert client.get("/v1/leases/3/spec", headers=tampered).status_code == 401
    # Signed for another lease id, by another node, or too old: refused.
    wrong_lease = _node_headers(node, 4, context.domain, now)
    assert client.get("/v1/leases/3/spec", headers=wrong_lease).status_code == 401
    forged = _node_headers(other_node, 3, context.domain, now)
    forged[NODE_HEADER] = node.address
    assert client.get("/v1/leases/3/spec", headers=forged).status_code == 401
    old = _node_headers(node, 3, context.domain, now - context.settings.heartbeat_window_s - 5)
    assert client.get("/v1/leases/3/spec", headers=old).status_code == 401
    partial = {NODE_HEADER: node.address}
    assert client.get("/v1/leases/3/spec", headers=partial).status_code == 401


def test_list_and_get_leases(client: TestClient, store: Store) -> None:
    renter, node = new_account(), new_account()
    add_lease(store, 1, renter.address)
    add_lease(store, 2, renter.address, status="active", node=node.address.lower(), deposit=2**200)
    add_lease(store, 3, "0x" + "44" * 20)
    assert [x["id"] for x in client.get("/v1/leases").json()] == [1, 2, 3]
    mine = client.get("/v1/leases", params={"renter": renter.address}).json()
    assert [x["id"] for x in mine] == [1, 2]
    active = client.get("/v1/leases", params={"status": "active"}).json()
    assert [x["id"] for x in active] == [2] and active[0]["deposit"] == 2**200
    assert [x["id"] for x in client.get("/v1/leases", params={"node": node.address}).json()] == [2]
    assert client.get("/v1/leases", params={"renter": "0x12"}).status_code == 422
    unknown = client.get("/v1/leases", params={"status": "verified"})
    assert unknown.status_code == 422 and "status" in unknown.json()["detail"]
    assert client.get("/v1/leases/99").status_code == 404
    assert client.get("/v1/leases/-1").status_code == 422
    assert client.get("/v1/leases/abc").status_code == 422


def test_attestation_status(
    client: TestClient, store: Store, clock: Clock, context: AppContext
) -> None:
    renter, node = new_account(), new_account()
    add_lease(store, 5, renter.address, status="active", node=node.address.lower())
    assert client.get("/v1/leases/5/attestation").json()["status"] == "none"
    assert client.get("/v1/leases/6/attestation").status_code == 404

    report_hash = "0x" + "5a" * 32
    now = int(clock.now)
    with store.session() as session:
        session.add(
            Attestation(
                lease_id=5,
                node=node.address.lower(),
                status="pending",
                report_hash=report_hash,
                measurement="0x" + "ab" * 48,
                nonce=0,
                submitted_block=9,
                submitted_at=now,
                verified_at=None,
                expires_at=None,
            )
        )
    # Within the cache lifetime the previous answer stands; after it, the new state shows.
    assert client.get("/v1/leases/5/attestation").json()["status"] == "none"
    clock.advance(context.settings.api_attestation_cache_s + 0.1)
    pending = client.get("/v1/leases/5/attestation").json()
    assert pending["status"] == "pending" and pending["verification"] is None
    assert pending["node"] == node.address

    with store.session() as session:
        attestation = session.get(Attestation, 5)
        assert attestation is not None
        attestation.status = "verified"
        attestation.verified_at = now + 2
        attestation.expires_at = now + 100
        session.add(
            Verification(
                lease_id=5,
                report_hash=report_hash,
                evidence_hash="0x" + "77" * 32,
                ok=True,
                reason_codes=[],
                detail={"product": "Milan"},
                checked_at=clock.datetime(),
                confirm_tx="0x" + "88" * 32,
            )
        )
    clock.advance(context.settings.api_attestation_cache_s + 0.1)
    verified: dict[str, Any] = client.get("/v1/leases/5/attestation").json()
    assert verified["status"] == "verified"
    assert verified["verification"]["ok"] is True
    assert verified["verification"]["detail"] == {"product": "Milan"}
    clock.advance(101)
    assert client.get("/v1/leases/5/attestation").json()["status"] == "expired"
