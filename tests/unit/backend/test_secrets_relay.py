"""The guest relay over HTTP (`cvm.api_client` against the real app): the renter queues
ciphertext for its running lease (signed by it, with increasing sequence numbers), only the
lease's node reads it and announces SSH access (signed), and nobody else can do either."""

from __future__ import annotations

import time

import httpx
import pytest

from backend.api.deps import AppContext
from backend.domain.secrets_relay import MAX_PENDING_PER_LEASE
from backend.store import Lease, Match, Store
from backend.store.models import SealedSecret
from cvm import guest_eip712
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import (
    MAX_SEALED_HEX,
    NODE_HEADER,
    ChainInfo,
    GuestAccessIn,
    LeaseState,
    SealedSecretsIn,
)
from cvm.eip712 import sign_node_message
from cvm.guest_access import GuestAccess
from tests.unit.backend.factories import Clock, add_lease, add_node, new_account

# The deployment of tests/unit/backend/conftest.py's `chain_info`: the backend checks the
# renter's signature under its domain.
CHAIN = ChainInfo(chain_id=31337, node_registry="0x" + "11" * 20, lease_market="0x" + "22" * 20,
                  attestation_registry="0x" + "33" * 20)  # fmt: skip
SEALED = SealedSecretsIn(report_data="11" * 64, enc="22" * 32, ciphertext="33" * 100, seq=1,
                         signature="00" * 65)  # fmt: skip


def signed(renter, lease_id: int, seq: int, body: SealedSecretsIn = SEALED) -> SealedSecretsIn:
    """`body` as `renter` signs it for `lease_id` with `seq` (EIP-712 SealedSecrets)."""
    message = guest_eip712.sealed_secrets_message(
        CHAIN.chain_id, CHAIN.attestation_registry, lease_id, seq,
        bytes.fromhex(body.report_data), bytes.fromhex(body.enc), bytes.fromhex(body.ciphertext),
    )  # fmt: skip
    signature = guest_eip712.sign(message, renter).hex()
    return body.model_copy(update={"seq": seq, "signature": signature})


def _status(call) -> int:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value.status_code


def test_sealed_secrets_and_access_go_only_between_renter_and_node(
    live_api: str, store: Store, clock: Clock
) -> None:
    renter, node, stranger = new_account(), new_account(), new_account()
    add_node(store, node.address)
    with ApiClient(live_api) as api, ApiClient(live_api) as other, ApiClient(live_api) as nodes:
        api.login(renter.key)
        spec = api.create_lease_intent(image="ab" * 32)
        add_lease(store, 7, renter.address, spec_hash=spec.spec_hash)
        # Not running yet: nothing to send to.
        assert _status(lambda: api.put_sealed_secrets(7, signed(renter, 7, 1))) == 403
        with store.session() as db:
            lease = db.get(Lease, 7)
            lease.status, lease.node = LeaseState.ACTIVE, node.address.lower()
            db.add(Match(lease_id=7, node=node.address.lower(), status="accepted", vcpus=1,
                         memory_mib=1, disk_gib=1, score=0.5, created_at=clock.datetime(),
                         deadline=clock.datetime()))  # fmt: skip

        assert api.sealed_secrets_seq(7) == 0
        queued = api.put_sealed_secrets(7, signed(renter, 7, 1))
        assert api.sealed_secrets_seq(7) == 1
        assert _status(lambda: ApiClient(live_api).put_sealed_secrets(7, SEALED)) == 401
        other.login(stranger.key)
        assert _status(lambda: other.put_sealed_secrets(7, signed(stranger, 7, 2))) == 403
        assert _status(lambda: other.sealed_secrets_seq(7)) == 403

        got = nodes.sealed_secrets_as_node(7, node_key=node.key)
        assert [(m.id, m.ciphertext) for m in got] == [(queued.id, SEALED.ciphertext)]
        assert _status(lambda: nodes.sealed_secrets_as_node(7, node_key=stranger.key)) == 403

        assert _status(lambda: api.guest_access(7)) == 404  # not announced yet
        nodes.announce_guest_access(7, "127.0.0.1", 2222, node_key=node.key)
        access = api.guest_access(7)
        assert (access.host, access.ssh_port, access.node.lower()) == (
            "127.0.0.1", 2222, node.address.lower())  # fmt: skip
        # Another key cannot redirect the renter's SSH.
        assert (
            _status(lambda: nodes.announce_guest_access(7, "10.9.9.9", 22, node_key=stranger.key))
            == 403
        )
        assert api.guest_access(7).ssh_port == 2222
        assert _status(lambda: other.guest_access(7)) == 403

    with store.session() as db:
        (row,) = db.query(SealedSecret).all()
        assert row.ciphertext == SEALED.ciphertext  # what is stored is what was sealed


@pytest.mark.parametrize(
    "body",
    [
        {"report_data": "11" * 63, "enc": "22" * 32, "ciphertext": "33"},
        {"report_data": "11" * 64, "enc": "zz" * 32, "ciphertext": "33"},
        {"report_data": "11" * 64, "enc": "22" * 32, "ciphertext": ""},
        {"report_data": "11" * 64, "enc": "22" * 32, "ciphertext": "333"},  # not whole bytes
        {"report_data": "11" * 64, "enc": "22" * 32, "ciphertext": "33", "seq": 0},
        {"report_data": "11" * 64, "enc": "22" * 32, "ciphertext": "33", "seq": 2**63},
        {"report_data": "11" * 64, "enc": "22" * 32, "ciphertext": "33", "signature": "00"},
        {"report_data": "11" * 64, "enc": "22" * 32, "ciphertext": "33", "plaintext": "x"},
    ],
)
def test_malformed_sealed_messages_are_refused_with_422(live_api: str, body: dict) -> None:
    body = {"seq": 1, "signature": "00" * 65} | body
    with ApiClient(live_api) as api:
        token = api.login(new_account().key).token
    response = httpx.post(f"{live_api}/v1/leases/7/secrets", json=body,
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 422


def _running_lease(store: Store, lease_id: int, renter: str, node: str) -> None:
    # No private spec is stored for it (spec_hash names none): the relay must not need one.
    add_lease(store, lease_id, renter, status=LeaseState.ACTIVE, node=node.lower())


def test_only_the_accepting_node_reads_secrets_and_no_spec_is_needed(
    live_api: str, store: Store, clock: Clock
) -> None:
    renter, node, matched = new_account(), new_account(), new_account()
    _running_lease(store, 9, renter.address, node.address)
    # A node the lease was matched to that did not accept it (its reservation expired).
    with store.session() as db:
        db.add(Match(lease_id=9, node=matched.address.lower(), status="expired", vcpus=1,
                     memory_mib=1, disk_gib=1, score=0.5, created_at=clock.datetime(),
                     deadline=clock.datetime()))  # fmt: skip
    with ApiClient(live_api) as api, ApiClient(live_api) as nodes:
        api.login(renter.key)
        queued = api.put_sealed_secrets(9, signed(renter, 9, 1))
        assert _status(lambda: nodes.sealed_secrets_as_node(9, node_key=matched.key)) == 403
        got = nodes.sealed_secrets_as_node(9, node_key=node.key)
        assert [m.id for m in got] == [queued.id]


def test_the_newest_sealed_messages_are_kept_and_none_refused(
    live_api: str, store: Store, clock: Clock
) -> None:
    renter, node = new_account(), new_account()
    _running_lease(store, 11, renter.address, node.address)
    with ApiClient(live_api) as api, ApiClient(live_api) as nodes:
        api.login(renter.key)
        sent = [api.put_sealed_secrets(11, signed(renter, 11, seq)).id
                for seq in range(1, MAX_PENDING_PER_LEASE + 5)]  # fmt: skip
        got = nodes.sealed_secrets_as_node(11, node_key=node.key)
    assert [m.id for m in got] == sent[4:]
    with store.session() as db:
        assert db.query(SealedSecret).filter_by(lease_id=11).count() == MAX_PENDING_PER_LEASE


def test_the_largest_sealed_message_the_model_allows_gets_through_the_body_limit(
    live_api: str, store: Store, clock: Clock
) -> None:
    renter, node = new_account(), new_account()
    _running_lease(store, 12, renter.address, node.address)
    largest = signed(renter, 12, 1, SEALED.model_copy(
        update={"ciphertext": "ab" * (MAX_SEALED_HEX // 2)}))  # fmt: skip
    with ApiClient(live_api) as api:
        api.login(renter.key)
        assert len(api.put_sealed_secrets(12, largest).ciphertext) == MAX_SEALED_HEX


def test_a_replayed_older_access_announcement_does_not_roll_the_address_back(
    live_api: str, store: Store, context: AppContext, clock: Clock
) -> None:
    renter, node = new_account(), new_account()
    _running_lease(store, 13, renter.address, node.address)
    now = int(clock.now)

    def announce(host: str, port: int, timestamp: int) -> int:
        access = GuestAccess(node.address, 13, host, port, (), timestamp)
        signature = sign_node_message(access, context.domain, node.key)
        body = GuestAccessIn(host=host, ssh_port=port, timestamp=timestamp, signature=signature)
        answer = httpx.put(
            f"{live_api}/v1/leases/13/access",
            json=body.model_dump(mode="json"),
            headers={NODE_HEADER: node.address},
        )
        return answer.status_code

    assert announce("10.0.0.1", 22, now - 10) == 200
    assert announce("10.0.0.2", 2222, now - 5) == 200  # the guest moved
    assert announce("10.0.0.1", 22, now - 10) == 409  # the captured first one, replayed
    assert announce("10.0.0.2", 2222, now - 5) == 200  # a retry of the current one
    with ApiClient(live_api) as api:
        api.login(renter.key)
        access = api.guest_access(13)
    assert (access.host, access.ssh_port) == ("10.0.0.2", 2222)


def test_forwarded_ports_are_stored_as_the_node_signed_them_and_served_to_the_renter(
    live_api: str, store: Store, context: AppContext, clock: Clock
) -> None:
    renter, node, stranger = new_account(), new_account(), new_account()
    _running_lease(store, 16, renter.address, node.address)
    now = int(clock.now)

    def put(body: dict, signer=node) -> int:
        return httpx.put(
            f"{live_api}/v1/leases/16/access", json=body, headers={NODE_HEADER: signer.address}
        ).status_code

    def body(ports: tuple, timestamp: int, signed_ports: tuple | None = None, key=node) -> dict:
        signs = ports if signed_ports is None else signed_ports
        access = GuestAccess(key.address, 16, "203.0.113.7", 2222, signs, timestamp)
        return {
            "host": "203.0.113.7", "ssh_port": 2222, "timestamp": timestamp,
            "ports": [{"guest_port": g, "host_port": h} for g, h in ports],
            "signature": sign_node_message(access, context.domain, key.key),
        }  # fmt: skip

    with ApiClient(live_api) as nodes:
        nodes.announce_guest_access(
            16, "203.0.113.7", 2222, node_key=node.key, ports=[(9000, 40002), (8080, 40001)]
        )
    # The client stamps its announcement with the wall clock, which may be seconds past the
    # test clock by now (a slow setup): the timestamps below count from the later of the two.
    now = max(now, int(time.time()))
    with ApiClient(live_api) as api, ApiClient(live_api) as other:
        api.login(renter.key)
        access = api.guest_access(16)
        assert [(p.guest_port, p.host_port) for p in access.ports] == [(8080, 40001), (9000, 40002)]
        # The web console reads the same JSON.
        raw = api._json("GET", "/leases/16/access")
        assert raw["ports"] == [{"guest_port": 8080, "host_port": 40001},
                                {"guest_port": 9000, "host_port": 40002}]  # fmt: skip
        other.login(stranger.key)
        assert _status(lambda: other.guest_access(16)) == 403

        # Ports the node did not sign (a relay in the middle redirecting 8080): refused.
        assert put(body(((8080, 40666),), now + 1, signed_ports=((8080, 40001),))) == 401
        # Signed by another key (a stranger naming itself, or naming the node): refused.
        assert put(body(((8080, 40666),), now + 1, key=stranger), signer=stranger) == 403
        assert put(body(((8080, 40666),), now + 1, key=stranger)) == 401
        # Malformed lists never reach the signature check.
        for bad in (((9000, 1), (8080, 2)), ((8080, 1), (8080, 2)), ((0, 1),), ((8080, 0),)):
            assert put(body(bad, now + 2, signed_ports=())) == 422
        too_many = tuple((port, port) for port in range(1, 34))
        assert put(body(too_many, now + 2, signed_ports=())) == 422
        # A replay of an older announcement with other ports does not roll them back.
        assert put(body(((8080, 40001),), now - 30)) == 409
        # A newer one replaces them (the guest relaunched, new host ports).
        assert put(body(((8080, 41001),), now + 3)) == 200
        assert [(p.guest_port, p.host_port) for p in api.guest_access(16).ports] == [(8080, 41001)]


def test_a_message_not_signed_by_the_renter_or_not_newer_is_refused_early(
    live_api: str, store: Store
) -> None:
    """The node (or anyone) cannot queue its own sealed message for the guest: before issue 17
    the backend stored any ciphertext the renter's session posted, unsigned; the guest is what
    enforces the renter's signature, the backend refuses such junk early."""
    renter, node = new_account(), new_account()
    _running_lease(store, 14, renter.address, node.address)
    with ApiClient(live_api) as api:
        api.login(renter.key)
        for forged in (signed(node, 14, 1), signed(renter, 15, 1), SEALED,
                       signed(renter, 14, 1).model_copy(update={"seq": 2})):  # fmt: skip
            assert _status(lambda forged=forged: api.put_sealed_secrets(14, forged)) == 422
        api.put_sealed_secrets(14, signed(renter, 14, 3))
        for old in (1, 3):  # older, or a replay of the last one
            assert (
                _status(lambda old=old: api.put_sealed_secrets(14, signed(renter, 14, old))) == 409
            )
        assert api.sealed_secrets_seq(14) == 3
    with store.session() as db:
        assert db.query(SealedSecret).filter_by(lease_id=14).count() == 1


def test_only_the_leases_node_relays_its_guests_status_and_only_its_renter_reads_it(
    live_api: str, store: Store
) -> None:
    renter, node, stranger = new_account(), new_account(), new_account()
    _running_lease(store, 16, renter.address, node.address)
    with ApiClient(live_api) as api, ApiClient(live_api) as nodes, ApiClient(live_api) as other:
        api.login(renter.key)
        other.login(stranger.key)
        assert _status(lambda: api.guest_status(16)) == 404  # nothing relayed yet
        nodes.put_guest_status(16, 3, "ab" * 65, node_key=node.key)
        # Another node cannot overwrite what the renter will be shown.
        assert _status(lambda: nodes.put_guest_status(16, 9, "cd" * 65,
                                                      node_key=stranger.key)) == 403  # fmt: skip
        view = api.guest_status(16)
        assert (view.seq, view.signature) == (3, "ab" * 65)
        assert _status(lambda: other.guest_status(16)) == 403
        nodes.put_guest_status(16, 4, "ef" * 65, node_key=node.key)
        assert api.guest_status(16).seq == 4


def test_the_serving_node_is_nudged_once_sealed_secrets_are_committed(
    live_api: str, store: Store, context: AppContext
) -> None:
    renter, node = new_account(), new_account()
    nudged: list[tuple[int, str]] = []
    context.sealed_listeners.append(lambda lease_id, to: nudged.append((lease_id, to)))
    _running_lease(store, 11, renter.address, node.address)
    with ApiClient(live_api) as api:
        api.login(renter.key)
        api.put_sealed_secrets(11, signed(renter, 11, 1))
        assert nudged == [(11, node.address.lower())]
        # Refused (seq not above the last one): nothing committed, nobody nudged.
        assert _status(lambda: api.put_sealed_secrets(11, signed(renter, 11, 1))) == 409
        assert nudged == [(11, node.address.lower())]
