"""`backend.domain.leases` and `.attestations` without HTTP: views, private specs, access."""

from __future__ import annotations

from datetime import timedelta

import pytest
from eth_account.signers.local import LocalAccount

from backend.domain import attestations, leases
from backend.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from backend.store import Attestation, Match, ReservationState, Store
from cvm.api_models import AttestationState, LeaseIntent, LeaseState, PrivateSpec
from cvm.eip712 import Domain, LeaseSpecRequest, sign_node_message
from tests.unit.backend.factories import Clock, add_lease, new_account

DOMAIN = Domain(chain_id=31337, node_registry="0x" + "11" * 20)


def test_lease_view_names_the_rates_and_filters_by_state(store: Store) -> None:
    renter = "0x" + "44" * 20
    add_lease(store, 1, renter, max_rate_per_second=300)
    add_lease(
        store, 2, renter, status=LeaseState.ACTIVE, node="0x" + "55" * 20, rate_per_second=200
    )
    with store.session() as session:
        active = leases.list_leases(session, status=LeaseState.ACTIVE)
        first = leases.get_lease(session, 1)
        with pytest.raises(NotFound):
            leases.get_lease(session, 3)
    assert [lease.id for lease in active] == [2] and active[0].rate_per_second == 200
    assert first.status is LeaseState.OPEN and first.rate_per_second is None
    assert first.max_rate_per_second == 300 and first.min_node_stake == 100


def test_a_private_spec_is_for_its_renter_and_matched_node_only(store: Store, clock: Clock) -> None:
    renter, node, stranger = new_account(), new_account(), new_account()
    intent = LeaseIntent(image="debian", ssh_public_key="ssh-ed25519 AAAA")
    with store.session() as session:
        spec = leases.store_private_spec(session, renter.address.lower(), intent, clock.datetime())
    with store.session() as session:  # idempotent: the same intent is the same record
        again = leases.store_private_spec(session, renter.address.lower(), intent, clock.datetime())
    assert again == spec
    add_lease(store, 7, renter.address, spec_hash=spec.spec_hash)

    with store.session() as session:
        assert leases.private_spec_for_renter(session, 7, renter.address.lower()) == spec
        with pytest.raises(Unauthenticated):
            leases.private_spec_for_renter(session, 7, None)
        with pytest.raises(Forbidden):
            leases.private_spec_for_renter(session, 7, stranger.address.lower())

    now = int(clock.now)

    def as_node(signer: LocalAccount, claimed: str, nonce: int = 1) -> PrivateSpec:
        request = LeaseSpecRequest(node=signer.address, lease_id=7, timestamp=now, nonce=nonce)
        signature = sign_node_message(request, DOMAIN, signer.key)
        with store.session() as session:
            lease, verified = leases.verified_node_request(
                session,
                7,
                claimed,
                str(now),
                signature,
                str(nonce),
                domain=DOMAIN,
                now=now,
                window_s=60,
                accepted_only=False,
            )
            leases.consume_request_nonce(
                session, verified.node, verified.nonce, verified.timestamp, now=now, window_s=60
            )
            return leases.private_spec_of(session, lease)

    with pytest.raises(Forbidden):
        as_node(node, node.address)  # not matched yet
    with store.session() as session:
        session.add(
            Match(
                lease_id=7,
                node=node.address.lower(),
                status=ReservationState.RESERVED,
                vcpus=1,
                memory_mib=1,
                disk_gib=1,
                score=0.5,
                created_at=clock.datetime(),
                deadline=clock.datetime() + timedelta(seconds=60),
            )
        )
    assert as_node(node, node.address) == spec
    with pytest.raises(Conflict):
        as_node(node, node.address)  # the same nonce again: a replay
    assert as_node(node, node.address, nonce=2) == spec
    with pytest.raises(Unauthenticated):
        as_node(stranger, node.address)  # signed by another key


def test_attestation_view_expires_a_verified_attestation(store: Store, clock: Clock) -> None:
    add_lease(store, 5, "0x" + "44" * 20)
    now = int(clock.now)
    with store.engine.connect() as connection:
        assert attestations.attestation_view(connection, 5, now).status is AttestationState.NONE
        with pytest.raises(NotFound):
            attestations.attestation_view(connection, 6, now)
    with store.session() as session:
        session.add(
            Attestation(
                lease_id=5,
                node="0x" + "55" * 20,
                status=AttestationState.VERIFIED,
                report_hash="0x" + "01" * 32,
                measurement="0x" + "ab" * 48,
                nonce=0,
                submitted_block=9,
                submitted_at=now - 100,
                verified_at=now - 90,
                expires_at=now + 10,
            )
        )
    with store.engine.connect() as connection:
        assert attestations.attestation_view(connection, 5, now).status is AttestationState.VERIFIED
        expired = attestations.attestation_view(connection, 5, now + 10)
    assert expired.status is AttestationState.EXPIRED and expired.verified_at == now - 90
