"""The combined accept against a real anvil (`accept_mode="combined"`): the guest boots while the
lease is open, and one transaction accepts the lease and submits its first report
(`acceptAndSubmit`). A node that loses the race, or whose lease the renter closes first, stops
its guest with nothing on chain; a reorg that drops the transaction leaves the lease open with
both effects gone, and the guest is stopped."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cvm.chain import LeaseStatus
from node_agent.errors import LeaseNotOurs, LeaseUnservable
from node_agent.launcher.base import GuestReport
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.store import LeaseState, Resources, SubmissionState
from tests.fixtures.chain import ChainSystem
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.test_speculative_boot import (
    _pending,
    _second_node,
    manual_mining,
    spied_agent,
)

pytestmark = pytest.mark.integration


def _sent(chain: ChainSystem, address: str) -> int:
    return int(chain.anvil.w3.eth.get_transaction_count(address))  # type: ignore[arg-type]


def test_one_transaction_accepts_and_attests_a_guest_booted_while_the_lease_was_open(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="combined")
    before = _sent(chain, agent.address)
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    assert _sent(chain, agent.address) == before + 1  # acceptAndSubmit, nothing else
    assert spy.status_at_launch[lease_id] == LeaseStatus.OPEN
    assert spy.asked("get_report") == [lease_id]
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE and lease.node_key == agent.address
    assert chain.node.attestations.attestation_nonce(lease_id) == 1
    [submission] = agent.store.submissions(lease_id)
    assert submission.state == SubmissionState.SUBMITTED and submission.nonce == 0
    assert chain.node.attestations.attestation_of(lease_id).report_hash == submission.report_hash
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.ATTESTED
    assert record.accept_tx == submission.tx_hash  # one transaction did both
    # The reconciler finds nothing to do (attested, guest running).
    result = agent.reconcile()
    assert result.attested == [] and result.stopped == [] and result.relaunched == []


def test_the_loser_of_a_combined_race_stops_its_guest_with_nothing_on_chain(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    other = _second_node(chain)
    lease_id = chain.open_lease()
    first, first_spy = spied_agent(chain.node, tmp_path / "a", amd_sp, accept_mode="combined")
    second, second_spy = spied_agent(
        chain.client(other), tmp_path / "b", amd_sp, accept_mode="combined"
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        with manual_mining(chain):
            outcomes = [pool.submit(agent.handle_lease, lease_id) for agent in (first, second)]
            wait_for(lambda: _pending(chain) == 2, timeout=60, what="both combined accepts sent")
            chain.anvil.mine()  # one block, both: the first in it wins, the other reverts
        states = []
        for outcome in outcomes:
            try:
                states.append(outcome.result(timeout=120))
            except LeaseNotOurs:
                states.append(LeaseState.REFUSED)
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE
    by_address = {first.address: (first, first_spy), second.address: (second, second_spy)}
    winner, winner_spy = by_address[lease.node_key]
    [(loser, loser_spy)] = [pair for key, pair in by_address.items() if key != lease.node_key]
    assert sorted(states) == sorted([LeaseState.ATTESTED, LeaseState.REFUSED])
    # Both guests reported while the lease was open; only the winner's report is on chain.
    assert loser_spy.asked("get_report") == [lease_id]
    assert lease_id in loser_spy.asked("stop") and lease_id in loser_spy.asked("discard")
    assert loser.launcher.running() == []
    assert loser.store.used() == Resources(0, 0, 0)
    assert chain.node.attestations.attestation_nonce(lease_id) == 1
    [kept] = winner.store.submissions(lease_id)
    assert chain.node.attestations.attestation_of(lease_id).report_hash == kept.report_hash
    assert winner_spy.asked("stop") == []
    assert [guest.lease_id for guest in winner.launcher.running()] == [lease_id]


def test_a_lease_the_renter_closes_before_the_combined_accept_stops_the_guest(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="combined")
    inner_report = spy.get_report

    def report_then_close(lease: int, nonce: int) -> GuestReport:
        got = inner_report(lease, nonce)
        chain.renter.leases.close_lease(lease)  # while the guest gave its report
        return got

    spy.get_report = report_then_close  # type: ignore[method-assign]
    assert agent.handle_lease(lease_id) == LeaseState.REFUSED
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.CLOSED
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    assert lease_id in spy.asked("stop") and lease_id in spy.asked("discard")
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)


def test_a_reorg_that_drops_the_combined_accept_stops_the_guest(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    before_accept = chain.anvil.snapshot()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="combined")
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    [dropped] = agent.store.submissions(lease_id)
    chain.anvil.revert(before_accept)  # the reorg drops acceptAndSubmit's block: both effects
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    result = agent.reconcile()
    assert result.stopped == [lease_id]
    assert spy.asked("stop") == [lease_id] and spy.asked("discard") == [lease_id]
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.REFUSED
    assert agent.store.submissions(lease_id) == []  # the dead guest's report is never resent
    # Dispatched again on the new branch: a fresh guest, a fresh report, one transaction.
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    assert spy.asked("launch") == [lease_id, lease_id]
    assert spy.asked("get_report") == [lease_id, lease_id]
    [fresh] = agent.store.submissions(lease_id)
    assert fresh.report_hash != dropped.report_hash
    assert chain.node.attestations.attestation_of(lease_id).report_hash == fresh.report_hash


def test_a_reorg_seen_by_the_next_dispatch_stops_the_guest(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    before_accept = chain.anvil.snapshot()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="combined")
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    chain.anvil.revert(before_accept)
    with pytest.raises(LeaseNotOurs, match="dropped its accept"):
        agent.handle_lease(lease_id)
    assert spy.asked("stop") == [lease_id]
    assert agent.launcher.running() == []


def test_separate_mode_sends_two_transactions(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, _spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="separate")
    before = _sent(chain, agent.address)
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    assert _sent(chain, agent.address) == before + 2  # acceptLease, then submit


def test_a_lease_the_chain_will_not_let_us_accept_is_refused_without_a_boot(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease(max_price=1)  # far below the node's price: acceptFor reverts
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="combined")
    before = _sent(chain, agent.address)
    # The accept's dry run (an eth_call of acceptLease) reverts: nothing is booted or sent.
    with pytest.raises(LeaseNotOurs, match="acceptLease would revert"):
        agent.handle_lease(lease_id)
    assert spy.asked("launch") == [] and spy.asked("get_report") == []
    assert _sent(chain, agent.address) == before
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.REFUSED
    assert agent.store.used() == Resources(0, 0, 0)
    assert agent.store.submissions(lease_id) == []
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    assert agent.reconcile().adopted == []


def test_a_report_the_verifiers_would_reject_leaves_the_lease_open(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_mode="combined")
    honest = spy.get_report

    def another_lease(asked: int, nonce: int) -> GuestReport:
        return honest(asked, nonce + 1)  # REPORT_DATA bound to another nonce

    spy.get_report = another_lease  # type: ignore[method-assign]
    with pytest.raises(LeaseUnservable, match="no usable report"):
        agent.handle_lease(lease_id)
    # Nothing on chain, not even the accept: the lease stays open for any node.
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    assert agent.store.submissions(lease_id) == []
    assert agent.launcher.running() == []
    assert agent.store.guest_failures(lease_id)
    spy.get_report = honest  # type: ignore[method-assign]
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED  # a fresh guest's report
