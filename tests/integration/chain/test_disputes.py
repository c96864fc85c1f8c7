"""Issue 21 on a real anvil: verifier stake in the court, the vote lock, dispute terms and
`isAttestedFinal`, through the typed clients of `cvm.chain`. (The dispute money paths are
forge scenarios: they need reports the chain's SnpVerifier accepts for a lease of this chain.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.chain import ContractRevert, DisputeTerms
from tests.fixtures.chain import MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


def expect(call: Callable[[], object], name: str) -> ContractRevert:
    with pytest.raises(ContractRevert) as caught:
        call()
    assert caught.value.name == name
    return caught.value


def test_the_deploy_stakes_its_verifiers_and_wires_the_court(chain: ChainSystem) -> None:
    client = chain.client()
    assert client.court is not None
    assert client.attestations.court() == client.deployment.attestation_court
    assert client.court.registry() == client.deployment.attestation_registry
    assert client.court.snp_verifier() == client.deployment.snp_verifier
    assert client.court.stake_token() == client.deployment.token
    terms = client.attestations.dispute_terms()
    assert terms == DisputeTerms(
        window=86_400, bond=10**18, slash_bps=5_000, min_verifier_stake=10**18
    )
    stake = client.court.stake_of(chain.accounts.verifier.address)
    assert stake.stake >= terms.min_verifier_stake and stake.unbonding == 0


def test_a_vote_locks_the_stake_until_its_dispute_window_closes(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease(report_hash=b"\xd1" * 32)
    client = chain.client()
    assert client.court is not None
    sub = client.attestations.submission_of(lease_id, b"\xd1" * 32)
    assert sub.number == 1 and not sub.disputed and not sub.confirmed_on_chain
    assert client.attestations.dispute_window_of(lease_id) == 86_400
    assert sub.disputable_until == sub.submitted_at + 3_600 + 86_400
    verifier = chain.accounts.verifier.address
    assert client.court.stake_of(verifier).locked_until == sub.disputable_until
    # Attested by the quorum's word, final only once the window passed undisputed.
    assert client.attestations.is_attested(lease_id, MEASUREMENT)
    assert not client.attestations.is_attested_final(lease_id, MEASUREMENT)
    court = chain.verifier.court
    assert court is not None
    court.request_unstake(1)
    chain.advance(3_601)
    error = expect(court.withdraw_stake, "AttestationCourt_StakeLocked")
    assert error.args_by_name["unlocksAt"] == sub.disputable_until


def test_an_unstaked_verifier_cannot_vote(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    chain.submit(lease_id, b"\xd2" * 32)
    court = chain.verifier.court
    assert court is not None
    stake = court.stake_of(chain.accounts.verifier.address)
    court.request_unstake(stake.stake)
    assert not chain.client().attestations.can_vote(lease_id, chain.accounts.verifier.address)
    expect(
        lambda: chain.verifier.attestations.confirm(lease_id, b"\xd2" * 32, True),
        "AttestationCourt_StakeTooLow",
    )


def test_only_the_admin_sets_the_terms_and_only_for_later_leases(chain: ChainSystem) -> None:
    before = chain.open_lease()
    terms = DisputeTerms(window=7_200, bond=2 * 10**18, slash_bps=1_000, min_verifier_stake=10**18)
    expect(
        lambda: chain.stranger.attestations.set_dispute_terms(terms),
        "AccessControlUnauthorizedAccount",
    )
    chain.admin.attestations.set_dispute_terms(terms)
    after = chain.open_lease()
    assert chain.client().attestations.dispute_window_of(before) == 86_400
    assert chain.client().attestations.dispute_window_of(after) == 7_200
    expect(
        lambda: chain.admin.attestations.set_dispute_terms(
            DisputeTerms(window=1_800, bond=0, slash_bps=0, min_verifier_stake=1)
        ),
        "AttestationRegistry_InvalidDisputeTerms",
    )
