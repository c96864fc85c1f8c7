"""`cvm.sdk.AttestationClient` and `cvm.renter.Renter` against a real anvil deployment."""

from __future__ import annotations

import pytest
from eth_account import Account

from cvm.chain import AttestationStatus, Deployment
from cvm.renter import Renter, RenterError, RentRequest, connect_chain, lease_phase
from cvm.sdk import AttestationClient
from tests.fixtures.chain import DEPOSIT, MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


def _sdk(chain: ChainSystem) -> AttestationClient:
    return AttestationClient(chain.anvil.rpc_url, chain.deployment.attestation_registry)


def test_status_follows_the_attestation_through_its_life(chain: ChainSystem) -> None:
    sdk = _sdk(chain)
    lease_id = chain.active_lease()
    assert sdk.status(lease_id).status == AttestationStatus.NONE
    assert sdk.status(lease_id).node is None
    assert not sdk.is_attested(lease_id, MEASUREMENT)

    chain.submit(lease_id, b"\x11" * 32)
    pending = sdk.status(lease_id)
    assert pending.status == AttestationStatus.PENDING and not pending.verified
    assert pending.node == chain.accounts.node_key.address
    assert not sdk.is_attested(lease_id, MEASUREMENT), "pending is not attested"

    chain.verifier.attestations.confirm(lease_id, b"\x11" * 32, True)
    verified = sdk.status(lease_id)
    assert verified.verified
    assert verified.report_hash == b"\x11" * 32
    assert verified.measurement == MEASUREMENT
    assert verified.verified_at >= verified.submitted_at > 0
    assert verified.as_dict()["status"] == "verified"
    assert sdk.is_attested(lease_id, MEASUREMENT)
    assert not sdk.is_attested(lease_id, bytes(48))


def test_a_rejected_attestation_is_not_attested(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    chain.submit(lease_id, b"\x22" * 32)
    chain.verifier.attestations.confirm(lease_id, b"\x22" * 32, False)
    assert _sdk(chain).status(lease_id).status == AttestationStatus.REJECTED
    assert not _sdk(chain).is_attested(lease_id, MEASUREMENT)


def test_renter_tops_up_and_closes_its_own_lease_only(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    renter = Renter(chain.renter, api=None)
    report = renter.own_report(lease_id)
    assert lease_phase(report) == "verified"

    topped = renter.top_up(lease_id, 5 * 10**15)
    assert topped.lease.deposit == DEPOSIT + 5 * 10**15

    stranger = Renter(chain.stranger, api=None)
    with pytest.raises(RenterError, match="is not yours"):
        stranger.close(lease_id)

    balance = chain.renter.token.balance_of(chain.accounts.renter.address)
    chain.advance(10)
    closed, refund = renter.close(lease_id)
    assert closed.lease.status.name == "CLOSED"
    assert refund + closed.earned == DEPOSIT + 5 * 10**15
    assert closed.earned > 0
    assert chain.renter.token.balance_of(chain.accounts.renter.address) == balance + refund
    assert [r.lease.lease_id for r in renter.my_leases()] == [lease_id]
    with pytest.raises(RenterError, match="already closed"):
        renter.close(lease_id)


def test_renter_errors_say_what_is_wrong(chain: ChainSystem) -> None:
    poor = Renter(chain.client(Account.create()), api=None)
    with pytest.raises(RenterError, match="does not exist"):
        poor.report(999)
    request = RentRequest(2, 4096, 20, "img", MEASUREMENT, 10**13, 10**16)
    with pytest.raises(RenterError, match="no matching node"):
        poor.rent(request)
    with pytest.raises(RenterError, match="48 bytes"):
        poor.rent(RentRequest(2, 4096, 20, "img", b"\x01", 10**13, 10**16))


def test_wrong_network_is_named(chain: ChainSystem) -> None:
    other = Deployment(**{**chain.deployment.__dict__, "chain_id": 1})
    with pytest.raises(RenterError, match="wrong network"):
        connect_chain(other, chain.anvil.rpc_url, None)
    elsewhere = Deployment(**{**chain.deployment.__dict__, "lease_market": "0x" + "12" * 20})
    with pytest.raises(RenterError, match="no LeaseMarket"):
        connect_chain(elsewhere, chain.anvil.rpc_url, None)
    with pytest.raises(RenterError, match="cannot reach"):
        connect_chain(chain.deployment, "http://127.0.0.1:9", None)
    assert connect_chain(chain.deployment, chain.anvil.rpc_url, None).deployment.chain_id
