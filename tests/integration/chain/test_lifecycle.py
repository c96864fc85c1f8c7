"""A lease's whole life through the Python bindings, against real contracts on anvil."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from cvm.chain import (
    AttestationStatus,
    CloseReason,
    ContractRevert,
    LeaseStatus,
    guest_result_message,
    sign_guest_result,
)
from tests.fixtures.chain import (
    CONFIG,
    DEPOSIT,
    GUEST_SIGNER,
    LEASE_SPEC,
    MAX_PRICE,
    MEASUREMENT,
    NODE_SPEC,
    STAKE,
    ChainSystem,
)

pytestmark = pytest.mark.integration

RATE = NODE_SPEC.price_per_vcpu_second * LEASE_SPEC.vcpu
REPORT = b"\x01" * 32


def market_balance(chain: ChainSystem) -> int:
    return chain.client().token.balance_of(chain.deployment.lease_market)


def test_full_lifecycle_pays_verified_time_and_refunds_the_rest(chain: ChainSystem) -> None:
    renter, operator = chain.accounts.renter.address, chain.accounts.operator.address
    renter_start = chain.renter.token.balance_of(renter)
    operator_start = chain.operator.token.balance_of(operator)
    chain.staked_node()
    node = chain.client().nodes.get_node(chain.accounts.node_key.address)
    assert node.registered and node.operator == operator and node.stake == STAKE

    lease_id = chain.open_lease()
    lease = chain.client().leases.get_lease(lease_id)
    assert (lease.status, lease.renter, lease.deposit) == (LeaseStatus.OPEN, renter, DEPOSIT)
    assert market_balance(chain) == DEPOSIT

    accepted = chain.node.leases.accept_lease(lease_id)
    assert accepted.event("LeaseAccepted").args == {
        "leaseId": lease_id,
        "nodeKey": chain.accounts.node_key.address,
        "ratePerSecond": RATE,
    }
    lease = chain.client().leases.get_lease(lease_id)
    assert lease.status is LeaseStatus.ACTIVE and lease.rate_per_second == RATE

    chain.submit(lease_id, REPORT)
    pending = chain.client().attestations.attestation_of(lease_id)
    assert pending.status is AttestationStatus.PENDING and pending.measurement == MEASUREMENT
    chain.advance(50)
    # Nothing is claimable before the verifiers confirm.
    assert chain.client().leases.claimable(lease_id) == 0

    confirmed = chain.verifier.attestations.confirm(lease_id, REPORT, True)
    assert confirmed.event("AttestationVerified").args == {
        "leaseId": lease_id,
        "reportHash": REPORT,
    }
    attestation = chain.client().attestations.attestation_of(lease_id)
    assert attestation.status is AttestationStatus.VERIFIED
    assert chain.client().attestations.is_attested(lease_id, MEASUREMENT)
    assert not chain.client().attestations.is_attested(lease_id, b"\x00" * 48)

    chain.advance(100)
    # Payment counts from the submission, not from the (later) verification.
    elapsed = chain.now() - attestation.submitted_at
    assert chain.client().leases.earned(lease_id) == RATE * elapsed

    claim = chain.operator.leases.claim(lease_id)
    claimed = claim.event("EarningsClaimed").args["amount"]
    assert claimed > 0
    assert chain.operator.token.balance_of(operator) == operator_start - STAKE + claimed

    close = chain.renter.leases.close_lease(lease_id)
    closed = close.event("LeaseClosed").args
    assert closed["reason"] == CloseReason.RENTER
    assert closed["earned"] + closed["refund"] == DEPOSIT
    lease = chain.client().leases.get_lease(lease_id)
    assert lease.status is LeaseStatus.CLOSED and lease.close_reason is CloseReason.RENTER
    assert closed["earned"] == RATE * (lease.closed_at - attestation.submitted_at)
    assert chain.renter.token.balance_of(renter) == renter_start - closed["earned"]
    # Escrow conservation: what is left in the market is exactly what the operator may claim.
    assert market_balance(chain) == closed["earned"] - claimed == lease.escrow
    if lease.escrow:
        chain.operator.leases.claim(lease_id)
    assert market_balance(chain) == 0
    assert chain.client().attestations.attestation_of(lease_id).status is AttestationStatus.EXPIRED


def test_top_up_adds_to_the_deposit(chain: ChainSystem) -> None:
    lease_id = chain.open_lease()
    result = chain.renter.leases.top_up(lease_id, 5 * 10**18)
    assert result.event("LeaseToppedUp").args["deposit"] == DEPOSIT + 5 * 10**18
    assert chain.client().leases.get_lease(lease_id).deposit == DEPOSIT + 5 * 10**18
    assert market_balance(chain) == DEPOSIT + 5 * 10**18


def test_settle_closes_an_exhausted_lease_for_anyone(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease(deposit=RATE * 40)
    with pytest.raises(ContractRevert) as early:
        chain.stranger.leases.settle(lease_id)
    assert early.value.name == "LeaseMarket_NotExhausted"
    chain.advance(60)
    settled = chain.stranger.leases.settle(lease_id).event("LeaseClosed").args
    assert settled["reason"] == CloseReason.EXHAUSTED
    assert (settled["earned"], settled["refund"]) == (RATE * 40, 0)
    chain.operator.leases.claim(lease_id)
    assert market_balance(chain) == 0


def test_create_with_permit_needs_no_allowance(chain: ChainSystem) -> None:
    renter = chain.renter
    renter.token.approve(chain.deployment.lease_market, 0)
    with pytest.raises(ContractRevert) as without:
        chain.open_lease()
    assert without.value.name == "ERC20InsufficientAllowance"

    deadline = chain.now() + 3600
    permit = renter.token.sign_permit(
        chain.accounts.renter, chain.deployment.lease_market, DEPOSIT, deadline
    )
    created = renter.leases.create_lease_with_permit(
        LEASE_SPEC, MAX_PRICE, DEPOSIT, MEASUREMENT, permit
    )
    assert chain.client().leases.get_lease(created.lease_id).deposit == DEPOSIT
    assert renter.token.permit_nonce(chain.accounts.renter.address) == 1
    assert renter.token.allowance(chain.accounts.renter.address, chain.deployment.lease_market) == 0


def test_reattestation_advances_the_nonce_and_keeps_paying(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease(report_hash=REPORT)
    assert chain.client().attestations.attestation_nonce(lease_id) == 1
    chain.advance(1_800)
    second = b"\x02" * 32
    chain.submit(lease_id, second)
    assert chain.client().attestations.attestation_nonce(lease_id) == 2
    chain.verifier.attestations.confirm(lease_id, second, True)
    latest = chain.client().attestations.attestation_of(lease_id)
    assert latest.report_hash == second and latest.status is AttestationStatus.VERIFIED
    assert chain.client().leases.earned(lease_id) >= RATE * 1_800


def test_missed_first_attestation_refunds_in_full_and_slashes(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    renter = chain.accounts.renter.address
    with pytest.raises(ContractRevert) as early:
        chain.stranger.leases.report_missed_attestation(lease_id)
    assert early.value.name == "LeaseMarket_AttestationDeadlineNotPassed"
    chain.advance(601)
    result = chain.stranger.leases.report_missed_attestation(lease_id)
    closed = result.event("LeaseClosed").args
    # The lease bonded slashBps of the required stake (the registry minimum) at accept; the
    # renter paid nothing, so it gets its deposit back and the whole bond is burned.
    bond = CONFIG.min_stake * CONFIG.slash_bps // 10_000
    assert closed["reason"] == CloseReason.ATTESTATION_MISSED
    assert (closed["earned"], closed["refund"], closed["compensation"]) == (0, DEPOSIT, 0)
    assert result.event("Slashed").args["amount"] == bond
    assert result.event("SlashSplit").args["burned"] == bond
    assert chain.client().nodes.get_node(chain.accounts.node_key.address).stake == STAKE - bond
    assert chain.client().nodes.burned_stake() == bond
    before = chain.renter.token.balance_of(renter)
    owed = chain.client().leases.credits(renter)
    assert owed == DEPOSIT
    chain.renter.leases.withdraw()
    assert chain.renter.token.balance_of(renter) == before + owed
    assert market_balance(chain) == 0


def test_rejected_attestation_closes_refunds_and_slashes(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    chain.submit(lease_id, REPORT)
    result = chain.verifier.attestations.confirm(lease_id, REPORT, False)
    assert [e.name for e in result.events if e.name.startswith(("Attestation", "Lease"))] == [
        "AttestationVote",
        "AttestationRejected",
        "LeaseClosed",
    ]
    closed = result.event("LeaseClosed").args
    assert closed["reason"] == CloseReason.ATTESTATION_REJECTED
    # Nothing was paid yet, so nothing is owed beyond the full refund; the bond is burned.
    assert closed["refund"] == DEPOSIT and closed["compensation"] == 0
    assert chain.client().nodes.burned_stake() == CONFIG.min_stake * CONFIG.slash_bps // 10_000
    assert chain.client().attestations.attestation_of(lease_id).status in (
        AttestationStatus.REJECTED,
        AttestationStatus.EXPIRED,
    )


def test_missed_reattestation_lets_the_renter_close_and_counts_against_the_node(
    chain: ChainSystem,
) -> None:
    lease_id = chain.attested_lease()
    chain.advance(LEASE_SPEC.reattest_interval + 1)
    assert chain.client().attestations.attestation_of(lease_id).status is AttestationStatus.EXPIRED
    assert not chain.client().attestations.is_attested(lease_id, MEASUREMENT)
    closed = chain.renter.leases.close_lease(lease_id).event("LeaseClosed").args
    assert closed["reason"] == CloseReason.ATTESTATION_MISSED
    # Only the covered interval is paid.
    assert closed["earned"] <= RATE * (LEASE_SPEC.reattest_interval + 1)
    node = chain.client().nodes.get_node(chain.accounts.node_key.address)
    assert node.missed_attestations == 1 and node.stake == STAKE


def test_node_exit_credits_the_renter(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    chain.advance(10)
    closed = chain.node.leases.exit_lease(lease_id).event("LeaseClosed").args
    assert closed["reason"] == CloseReason.NODE_EXIT
    assert chain.client().leases.credits(chain.accounts.renter.address) == closed["refund"]
    assert closed["earned"] + closed["refund"] == DEPOSIT


def test_unstake_waits_out_the_unbonding_delay(chain: ChainSystem) -> None:
    chain.staked_node()
    key = chain.accounts.node_key.address
    chain.operator.nodes.request_unstake(key, STAKE // 2)
    node = chain.client().nodes.get_node(key)
    assert (node.stake, node.unbonding) == (STAKE // 2, STAKE // 2)
    with pytest.raises(ContractRevert) as early:
        chain.operator.nodes.withdraw_unstaked(key)
    assert early.value.name == "NodeRegistry_UnbondingNotFinished"
    chain.advance(CONFIG.unbonding_delay + 1)
    before = chain.operator.token.balance_of(chain.accounts.operator.address)
    chain.operator.nodes.withdraw_unstaked(key)
    after = chain.operator.token.balance_of(chain.accounts.operator.address)
    assert after - before == STAKE // 2
    assert chain.client().nodes.get_node(key).unbonding == 0


def test_example_consumer_accepts_only_results_of_the_attested_signer(chain: ChainSystem) -> None:
    """Through the Python bindings: the guest's signer's result is taken (relayed by anyone),
    the node key's refused, a replay refused (AttestedService took the node key's word before
    issue 17: this test fails there)."""
    request, result = b"\x42" * 32, b"forty-two"
    deployment = chain.deployment
    lease_id = chain.active_lease()

    def signed(account: LocalAccount) -> bytes:
        return sign_guest_result(
            account, lease_id, request, result, deployment.chain_id, deployment.attestation_registry
        )

    with pytest.raises(ContractRevert) as unattested:
        chain.stranger.service.post_result(lease_id, request, result, signed(GUEST_SIGNER))
    assert unattested.value.name == "AttestedService_NotAttested"
    assert unattested.value.args_by_name == {"leaseId": lease_id}
    chain.submit(lease_id, REPORT)
    chain.verifier.attestations.confirm(lease_id, REPORT, True)
    registry = chain.client().attestations
    assert registry.attested_signer_of(lease_id) == GUEST_SIGNER.address
    assert registry.signer_of(lease_id) == GUEST_SIGNER.address
    message = guest_result_message(
        lease_id, request, result, deployment.chain_id, deployment.attestation_registry
    )
    expected = keccak(b"\x19" + message.version + message.header + message.body)
    assert chain.client().service.result_digest(lease_id, request, result) == expected
    with pytest.raises(ContractRevert) as by_node:
        chain.node.service.post_result(lease_id, request, result, signed(chain.accounts.node_key))
    assert by_node.value.name == "AttestedService_NotAttestedSigner"
    posted = chain.stranger.service.post_result(lease_id, request, result, signed(GUEST_SIGNER))
    assert posted.event("ResultPosted").args == {
        "leaseId": lease_id,
        "request": request,
        "resultHash": keccak(result),
        "signer": GUEST_SIGNER.address,
    }
    assert chain.client().service.result_of(lease_id) == keccak(result)
    assert chain.client().service.answered(request)
    with pytest.raises(ContractRevert) as replay:
        chain.stranger.service.post_result(lease_id, request, result, signed(GUEST_SIGNER))
    assert replay.value.name == "AttestedService_RequestAnswered"
