"""Issue 10 on a real anvil: per-lease bonds, decline, challenge, verification window, capacity.

One test per new contract function or rule: its happy path and its main revert, through the
typed clients of `cvm.chain`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from cvm.chain import AttestationStatus, CloseReason, ContractRevert, LeaseStatus
from tests.fixtures.chain import CONFIG, DEPOSIT, LEASE_SPEC, MEASUREMENT, STAKE, ChainSystem

pytestmark = pytest.mark.integration

BOND = CONFIG.min_stake * CONFIG.slash_bps // 10_000


def expect(call: Callable[[], object], name: str) -> ContractRevert:
    with pytest.raises(ContractRevert) as caught:
        call()
    assert caught.value.name == name
    return caught.value


def test_accept_bonds_stake_and_capacity_until_the_lease_ends(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    key = chain.accounts.node_key.address
    lease = chain.client().leases.get_lease(lease_id)
    assert lease.bond == BOND
    assert lease.attest_by == lease.accepted_at + CONFIG.attestation_window
    usage = chain.client().leases.node_usage(key)
    assert (usage.bonded, usage.vcpu) == (BOND, LEASE_SPEC.vcpu)
    assert chain.client().leases.bonded_stake(key) == BOND
    node, min_stake, slash_bps = chain.client().nodes.node_terms(key)
    assert (node.stake, min_stake, slash_bps) == (STAKE, CONFIG.min_stake, CONFIG.slash_bps)
    error = expect(
        lambda: chain.operator.nodes.request_unstake(key, STAKE), "NodeRegistry_StakeBonded"
    )
    assert error.args_by_name["unbondable"] == STAKE - BOND
    chain.operator.nodes.request_unstake(key, STAKE - BOND)
    chain.renter.leases.close_lease(lease_id)
    assert chain.client().leases.bonded_stake(key) == 0


def test_capacity_is_checked_against_the_leases_a_node_already_runs(chain: ChainSystem) -> None:
    chain.staked_node()
    whole = replace(LEASE_SPEC, vcpu=16)  # the fixture node has 16 vCPU
    max_price = 16 * 10**12
    first = chain.open_lease(spec=whole, max_price=max_price)
    second = chain.open_lease(spec=whole, max_price=max_price)
    chain.node.leases.accept_lease(first)
    expect(lambda: chain.node.leases.accept_lease(second), "LeaseMarket_CapacityTooLow")


def test_reattest_interval_is_bounded(chain: ChainSystem) -> None:
    leases = chain.client().leases
    assert (leases.min_reattest_interval(), leases.max_reattest_interval()) == (300, 43_200)
    error = expect(
        lambda: chain.open_lease(spec=replace(LEASE_SPEC, reattest_interval=1)),
        "LeaseMarket_InvalidReattestInterval",
    )
    assert error.args_by_name["interval"] == 1


def test_unbonding_delay_cannot_undercut_the_lease_windows(chain: ChainSystem) -> None:
    # Stake must stay slashable until the last verdict of a lease can no longer be disputed (the
    # longest dispute window, 7 days, after the verification window), which is longer than any
    # window in which a lease's fault is decided.
    minimum = chain.client().leases.min_unbonding_delay()
    window = chain.client().attestations.verification_window()
    assert minimum == 7 * 86_400 + window > CONFIG.attestation_window + 43_200 + window
    expect(
        lambda: chain.admin.nodes.set_unbonding_delay(minimum - 1),
        "NodeRegistry_UnbondingDelayTooShort",
    )
    chain.admin.nodes.set_unbonding_delay(minimum)


def test_decline_returns_the_lease_to_the_market(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    leases = chain.client().leases
    accepted_at = leases.get_lease(lease_id).accepted_at
    assert leases.free_decline_deadline(lease_id) == accepted_at + CONFIG.attestation_window // 2
    result = chain.node.leases.decline_lease(lease_id)
    assert result.event("LeaseDeclined").args["nodeKey"] == chain.accounts.node_key.address
    lease = leases.get_lease(lease_id)
    assert lease.status is LeaseStatus.OPEN and lease.deposit == DEPOSIT
    assert leases.free_decline_deadline(lease_id) == 0
    assert chain.client().nodes.get_node(chain.accounts.node_key.address).stake == STAKE
    # A node key never takes back a lease it declined (issue 18: decline squat).
    assert leases.declined_by(lease_id, chain.accounts.node_key.address)
    expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_DeclinedBefore")
    second = chain.open_lease()
    chain.node.leases.accept_lease(second)
    chain.advance(CONFIG.attestation_window + 1)
    expect(lambda: chain.node.leases.decline_lease(second), "LeaseMarket_AttestationDeadlinePassed")
    # Nor may a late first report front-run the missed-attestation report and erase the fault.
    late = b"\x0f" * 32
    expect(lambda: chain.submit(second, late), "AttestationRegistry_AttestationDeadlinePassed")
    closed = chain.stranger.leases.report_missed_attestation(second).event("LeaseClosed").args
    assert closed["reason"] == CloseReason.ATTESTATION_MISSED


def test_challenge_unanswered_stops_payment_and_counts_against_the_node(
    chain: ChainSystem,
) -> None:
    lease_id = chain.attested_lease()
    chain.advance(100)
    expect(lambda: chain.stranger.leases.challenge(lease_id), "LeaseMarket_NotChallenger")
    result = chain.renter.leases.challenge(lease_id)
    challenged = result.event("LeaseChallenged").args
    registry = chain.client().attestations
    assert challenged["respondBy"] == registry.challenged_at(lease_id) + registry.challenge_window()
    earned = chain.client().leases.earned(lease_id)
    expect(
        lambda: chain.verifier.leases.challenge(lease_id), "AttestationRegistry_ChallengeTooSoon"
    )
    chain.advance(registry.challenge_window() + 1)
    assert chain.client().leases.earned(lease_id) == earned
    assert registry.progress_of(lease_id).status is AttestationStatus.EXPIRED
    assert not registry.is_attested(lease_id, MEASUREMENT)
    closed = chain.renter.leases.close_lease(lease_id).event("LeaseClosed").args
    assert closed["reason"] == CloseReason.ATTESTATION_MISSED and closed["earned"] == earned
    node = chain.client().nodes.get_node(chain.accounts.node_key.address)
    assert node.missed_attestations == 1 and node.stake == STAKE


def test_challenge_answered_keeps_the_lease_attested(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    chain.advance(100)
    chain.verifier.leases.challenge(lease_id)
    fresh = b"\x0f" * 32
    chain.submit(lease_id, fresh)
    assert chain.client().attestations.is_attested(lease_id, MEASUREMENT)  # seamless
    chain.verifier.attestations.confirm(lease_id, fresh, True)
    chain.advance(chain.client().attestations.challenge_window() + 1)
    assert chain.client().attestations.is_attested(lease_id, MEASUREMENT)


def test_undecided_attestation_expires_after_the_verification_window(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    junk = b"\x0e" * 32
    chain.submit(lease_id, junk)
    progress = chain.client().attestations.progress_of(lease_id)
    assert progress.status is AttestationStatus.PENDING and progress.nonce == 1
    expect(lambda: chain.stranger.leases.finalize_close(lease_id), "LeaseMarket_NothingHeld")
    chain.advance(chain.client().attestations.verification_window() + 1)
    assert not chain.client().attestations.progress_of(lease_id).excused  # no approval: junk
    expect(
        lambda: chain.verifier.attestations.confirm(lease_id, junk, True),
        "AttestationRegistry_VerificationWindowPassed",
    )
    closed = chain.stranger.leases.report_missed_attestation(lease_id).event("LeaseClosed").args
    assert closed["reason"] == CloseReason.ATTESTATION_MISSED
    assert chain.client().nodes.burned_stake() == BOND


def test_renter_closes_while_pending_and_the_held_time_waits_for_the_verdict(
    chain: ChainSystem,
) -> None:
    """Issue 18 (pending forever): the close used to revert while an attestation was Pending."""
    lease_id = chain.active_lease()
    report = b"\x0f" * 32
    chain.submit(lease_id, report)
    chain.advance(100)
    closed = chain.renter.leases.close_lease(lease_id).event("LeaseClosed").args
    leases = chain.client().leases
    held = closed["earned"]
    assert held >= 100 * 10**12 * LEASE_SPEC.vcpu and leases.claimable(lease_id) == 0
    assert closed["refund"] == DEPOSIT - held
    expect(lambda: chain.stranger.leases.finalize_close(lease_id), "LeaseMarket_AttestationPending")
    assert chain.client().attestations.can_vote(lease_id, chain.accounts.verifier.address)
    assert not chain.client().attestations.can_vote(lease_id, chain.accounts.renter.address)
    chain.verifier.attestations.confirm(lease_id, report, True)
    assert leases.claimable(lease_id) == held  # paid once verified
    assert leases.bonded_stake(chain.accounts.node_key.address) == 0


def test_used_up_lease_is_no_longer_serving(chain: ChainSystem) -> None:
    rate = 10**12 * LEASE_SPEC.vcpu
    lease_id = chain.attested_lease(deposit=rate * 50)
    assert chain.client().leases.is_serving(lease_id)
    chain.advance(60)
    assert not chain.client().leases.is_serving(lease_id)
    assert not chain.client().attestations.is_attested(lease_id, MEASUREMENT)
