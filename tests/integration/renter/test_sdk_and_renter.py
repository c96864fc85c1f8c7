"""`cvm.sdk.AttestationClient` and `cvm.renter.Renter` against a real anvil deployment."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from cvm.chain import ChainError, Deployment, connect
from cvm.renter import Renter, RenterError, RentRequest, lease_phase
from cvm.sdk import (
    AttestationClient,
    AttestationClientError,
    AttestationStatus,
    ChainUnavailable,
    InvalidArgument,
    NotARegistry,
)
from tests.fixtures.chain import DEPOSIT, GUEST_SIGNER, MEASUREMENT, ChainSystem
from tests.fixtures.processes import free_port

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
    assert sdk.attested_signer(lease_id) is None, "no signer before the verdict"

    chain.verifier.attestations.confirm(lease_id, b"\x11" * 32, True)
    verified = sdk.status(lease_id)
    assert verified.verified
    assert verified.report_hash == b"\x11" * 32
    assert verified.measurement == MEASUREMENT
    assert verified.verified_at >= verified.submitted_at > 0
    assert verified.as_dict()["status"] == "verified"
    assert sdk.is_attested(lease_id, MEASUREMENT)
    assert not sdk.is_attested(lease_id, bytes(48))
    assert sdk.attested_signer(lease_id) == GUEST_SIGNER.address
    # The quorum's word, not yet final: its dispute window is still open.
    assert not sdk.is_attested_final(lease_id, MEASUREMENT)
    with pytest.raises(InvalidArgument):
        sdk.is_attested_final(lease_id, b"short")


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
    with pytest.raises(ChainError, match="wrong network"):
        connect(other, rpc_url=chain.anvil.rpc_url)
    elsewhere = Deployment(**{**chain.deployment.__dict__, "lease_market": "0x" + "12" * 20})
    with pytest.raises(ChainError, match="no LeaseMarket"):
        connect(elsewhere, rpc_url=chain.anvil.rpc_url)
    with pytest.raises(ChainError, match="cannot reach"):
        connect(chain.deployment, rpc_url=f"http://127.0.0.1:{free_port()}")
    assert connect(chain.deployment, rpc_url=chain.anvil.rpc_url).deployment.chain_id


def test_a_read_only_renter_reads_but_cannot_act(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    reader = Renter(chain.client(), api=None, address=chain.accounts.renter.address)
    assert [r.lease.lease_id for r in reader.my_leases()] == [lease_id]
    assert reader.own_report(lease_id).lease.lease_id == lease_id
    with pytest.raises(RenterError, match="unlocked"):
        reader.close(lease_id)


def test_sdk_failures_share_one_base_error(chain: ChainSystem) -> None:
    """Each way a call fails is a subclass of AttestationClientError, named for its cause."""
    with pytest.raises(InvalidArgument):
        AttestationClient(chain.anvil.rpc_url, "0x1234")
    sdk = _sdk(chain)
    with pytest.raises(InvalidArgument, match="48 bytes"):
        sdk.is_attested(1, b"short")
    with pytest.raises(InvalidArgument):
        sdk.status(-1)
    down = AttestationClient(
        f"http://127.0.0.1:{free_port()}", chain.deployment.attestation_registry
    )
    with pytest.raises(ChainUnavailable):
        down.status(1)
    with pytest.raises(NotARegistry, match="no contract"):
        AttestationClient(chain.anvil.rpc_url, "0x" + "12" * 20).status(1)
    with pytest.raises(NotARegistry, match="does not answer as an AttestationRegistry"):
        AttestationClient(chain.anvil.rpc_url, chain.deployment.token).status(1)
    for kind in (InvalidArgument, ChainUnavailable, NotARegistry):
        assert issubclass(kind, AttestationClientError)
    assert [s.name for s in AttestationStatus] == [
        "NONE", "PENDING", "VERIFIED", "REJECTED", "EXPIRED"
    ]  # fmt: skip


def test_the_sdk_checks_the_registry_code_once(
    chain: ChainSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployed registry stays deployed: one eth_getCode, not one per read."""
    sdk = _sdk(chain)
    calls: list[object] = []
    get_code = sdk.w3.eth.get_code

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return get_code(*args, **kwargs)

    monkeypatch.setattr(sdk.w3.eth, "get_code", counting)
    lease_id = chain.active_lease()
    for _ in range(3):
        sdk.status(lease_id)
        sdk.is_attested(lease_id, MEASUREMENT)
    assert len(calls) == 1
