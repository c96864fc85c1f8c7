"""`cvm.api_client` against the real app over HTTP: every call, and its one error type."""

from __future__ import annotations

import httpx
import pytest
from eth_utils import keccak

from backend.store import Match, Store
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import private_spec_hash
from cvm.eip712 import Heartbeat, sign_heartbeat
from tests.fixtures.processes import free_port
from tests.unit.backend.factories import Clock, add_lease, add_node, new_account
from tests.unit.backend.test_api_evidence_health import bundle


def test_renter_flow_through_the_client(live_api: str, store: Store, clock: Clock) -> None:
    renter, node = new_account(), new_account()
    with ApiClient(live_api) as api:
        info = api.chain_info()
        assert info.chain_id == 31337
        with pytest.raises(ApiError) as unauthenticated:
            api.create_lease_intent(image="ubuntu")
        assert unauthenticated.value.status_code == 401

        session = api.login(renter.key)
        assert session.address == renter.address and api.token == session.token
        spec = api.create_lease_intent(image="ubuntu", ssh_public_key="ssh-ed25519 AAAA")
        assert spec.spec_hash == private_spec_hash(
            renter.address, "ubuntu", "ssh-ed25519 AAAA", None
        )
        add_node(store, node.address)
        add_lease(store, 4, renter.address, spec_hash=spec.spec_hash)
        assert api.lease_spec(4).image == "ubuntu"
        assert [lease.id for lease in api.list_leases(renter=renter.address)] == [4]
        assert api.get_lease(4).has_private_spec

        # The matched node reads the spec with a request signed by its node key.
        with store.session() as db:
            db.add(
                Match(
                    lease_id=4,
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
        nodes_view = ApiClient(live_api)
        assert nodes_view.lease_spec_as_node(4, node_key=node.key).image == "ubuntu"
        with pytest.raises(ApiError) as stranger:
            nodes_view.lease_spec_as_node(4, node_key=new_account().key)
        assert stranger.value.status_code == 403
        nodes_view.close()

        fields = Heartbeat(node.address, 3, 1024, 10, 1, int(clock.now))
        api.send_heartbeat(sign_heartbeat(fields, api.domain(), node.key))
        assert api.get_node(node.address).free_vcpus == 3
        assert [n.address for n in api.list_nodes(tee_type=1)] == [node.address]

        evidence = bundle(lease_id=4).encode()
        receipt = api.upload_evidence_receipt(evidence, node_key=node.key)
        assert (
            api.upload_evidence(evidence, node_key=node.key)
            == receipt.hash
            == "0x" + keccak(evidence).hex()
        )
        with pytest.raises(ApiError) as stranger_upload:
            api.upload_evidence(evidence, node_key=new_account().key)
        assert stranger_upload.value.status_code == 403
        assert api.get_evidence(receipt.hash) == evidence
        assert api.get_evidence(receipt.report_hash) == evidence
        assert api.attestation_status(4).status == "none"


def test_errors_carry_status_and_message(live_api: str) -> None:
    with ApiClient(live_api) as api:
        with pytest.raises(ApiError) as missing:
            api.get_lease(12345)
        assert missing.value.status_code == 404 and "lease 12345" in missing.value.message
        with pytest.raises(ApiError) as malformed:
            api.get_node("0x1234")
        assert malformed.value.status_code == 422
        with pytest.raises(ApiError) as garbage:
            api.upload_evidence(b"not evidence", node_key=new_account().key)
        assert garbage.value.status_code == 422 and "canonical" in garbage.value.message
    with ApiClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as nobody:
        with pytest.raises(ApiError) as unreachable:
            nobody.chain_info()
        assert unreachable.value.status_code == 0


def test_guest_key_claim_is_none_only_when_the_route_says_the_key_is_free(live_api: str) -> None:
    """A node submits only on the route's own "free": a backend without the route (its 404
    says "Not Found") or no backend at all must not read as free, or the node would submit
    blind and risk the slash."""
    key_hash = "0x" + "ab" * 32
    with ApiClient(live_api) as api:
        assert api.guest_key_claim(key_hash, lease_id=4) is None
        with pytest.raises(ApiError) as malformed:
            api.guest_key_claim("0x1234", lease_id=4)
        assert malformed.value.status_code == 422

    def routeless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    with ApiClient("http://backend.test", transport=httpx.MockTransport(routeless)) as old:
        with pytest.raises(ApiError) as missing:
            old.guest_key_claim(key_hash, lease_id=4)
        assert missing.value.status_code == 404
    with ApiClient(f"http://127.0.0.1:{free_port()}") as nobody:
        with pytest.raises(ApiError) as unreachable:
            nobody.guest_key_claim(key_hash, lease_id=4)
        assert unreachable.value.status_code == 0
