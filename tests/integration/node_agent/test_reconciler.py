"""The reconciler finds forgotten accepts from its checkpoint, across passes, restarts and
a pass that died half-way, never from the deployment block once a scan has completed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.attestation.evidence import report_hash
from cvm.chain import ChainError
from node_agent.agent import NodeAgent
from node_agent.fleet import SharedAcceptScan
from node_agent.launcher.base import GuestReport
from node_agent.reconciler import REORG_MARGIN_BLOCKS
from node_agent.store import LeaseState
from tests.fixtures.chain import ChainSystem

pytestmark = pytest.mark.integration


@pytest.fixture
def scans() -> list[int]:
    """The `from_block` of every LeaseAccepted scan of the agents `_agent` made."""
    return []


@pytest.fixture
def make_scanning_agent(
    make_agent: Callable[..., NodeAgent], scans: list[int], tmp_path: Path
) -> Callable[..., NodeAgent]:
    """An agent over `tmp_path/agent` (a restart is a second one) whose scans are recorded."""

    def build(margin: int = 0) -> NodeAgent:
        agent = make_agent(state=tmp_path / "agent")
        agent.reconciler.reorg_margin_blocks = margin
        real = agent.chain.leases.leases_accepted_by

        def spy(node_key: str, from_block: int = 0) -> list[int]:
            scans.append(from_block)
            return real(node_key, from_block)

        agent.chain.leases.leases_accepted_by = spy  # type: ignore[method-assign]
        return agent

    return build


def _head(chain: ChainSystem) -> int:
    return int(chain.anvil.w3.eth.block_number)


def test_each_pass_scans_from_where_the_last_one_ended(
    chain: ChainSystem, make_scanning_agent: Callable[..., NodeAgent], scans: list[int]
) -> None:
    chain.staked_node()
    agent = make_scanning_agent()
    assert agent.reconcile().adopted == []
    first_head = _head(chain)
    forgotten = chain.open_lease()
    chain.node.leases.accept_lease(forgotten)  # the agent died right after accepting
    second_head = _head(chain)  # the pass reads the head before it scans and mines
    assert agent.reconcile().adopted == [forgotten]
    assert agent.reconcile().adopted == []
    assert scans == [chain.deployment.start_block, first_head + 1, second_head + 1]
    record = agent.store.get_lease(forgotten)
    assert record is not None and record.state == LeaseState.ATTESTED


def test_a_restarted_agent_resumes_from_the_stored_checkpoint(
    chain: ChainSystem, make_scanning_agent: Callable[..., NodeAgent], scans: list[int]
) -> None:
    chain.staked_node()
    make_scanning_agent().reconcile()
    stopped_at = _head(chain)
    accepted_while_down = chain.open_lease()
    chain.node.leases.accept_lease(accepted_while_down)
    restarted = make_scanning_agent()  # same store, new process
    assert restarted.reconcile().adopted == [accepted_while_down]
    assert scans == [chain.deployment.start_block, stopped_at + 1]


def test_a_pass_that_dies_before_recording_an_accept_keeps_the_old_checkpoint(
    chain: ChainSystem,
    make_scanning_agent: Callable[..., NodeAgent],
    scans: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain.staked_node()
    agent = make_scanning_agent()
    agent.reconcile()
    checkpoint = _head(chain) + 1
    forgotten = chain.open_lease()
    chain.node.leases.accept_lease(forgotten)

    def rpc_cut(lease_id: int) -> None:
        raise ChainError("connection refused")

    with monkeypatch.context() as cut:
        cut.setattr(agent.chain.leases, "get_lease", rpc_cut)
        with pytest.raises(ChainError):
            agent.reconcile()
    assert agent.store.checkpoint(agent.reconciler.checkpoint_name) == checkpoint
    restarted = make_scanning_agent()
    assert restarted.reconcile().adopted == [forgotten]
    assert scans == [chain.deployment.start_block, checkpoint, checkpoint]


def test_a_checkpoint_beyond_the_head_means_a_new_chain_and_a_full_scan(
    chain: ChainSystem, make_scanning_agent: Callable[..., NodeAgent], scans: list[int]
) -> None:
    chain.staked_node()
    agent = make_scanning_agent()
    agent.store.save_checkpoint(agent.reconciler.checkpoint_name, _head(chain) + 1_000)
    accepted = chain.open_lease()
    chain.node.leases.accept_lease(accepted)
    assert agent.reconcile().adopted == [accepted]
    assert scans == [chain.deployment.start_block]


def test_the_margin_rescans_the_last_blocks(
    chain: ChainSystem, make_scanning_agent: Callable[..., NodeAgent], scans: list[int]
) -> None:
    chain.staked_node()
    margin = REORG_MARGIN_BLOCKS
    agent = make_scanning_agent(margin)
    agent.reconcile()
    head = _head(chain)
    agent.reconcile()
    assert scans[1] == max(chain.deployment.start_block, head + 1 - margin)


def test_one_leases_unexpected_error_spares_the_others(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent], tmp_path: Path
) -> None:
    chain.staked_node()
    agent = make_agent(state=tmp_path / "agent")
    broken, sound = chain.open_lease(), chain.open_lease()
    chain.node.leases.accept_lease(broken)
    chain.node.leases.accept_lease(sound)
    real = agent.launcher.get_report

    def get_report(lease_id: int, nonce: int) -> GuestReport:
        if lease_id == broken:  # e.g. a guest's answer no parser expected
            raise ValueError("a malformed certificate from the guest")
        return real(lease_id, nonce)

    agent.launcher.get_report = get_report  # type: ignore[method-assign]
    result = agent.reconcile()
    assert result.attested == [sound]
    sound_record = agent.store.get_lease(sound)
    assert sound_record is not None and sound_record.state == LeaseState.ATTESTED


def test_a_report_kept_from_a_guest_that_is_gone_is_not_submitted(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent], tmp_path: Path
) -> None:
    # The agent stored nonce 0's report, died before submitting it, and the guest died too:
    # the relaunched guest has another key, so the old report must not reach the chain.
    chain.staked_node()
    agent = make_agent(state=tmp_path / "agent")
    lease_id = chain.open_lease()
    chain.node.leases.accept_lease(lease_id)
    old = Path(__file__).parents[2] / "data" / "snp" / "reports" / "milan_virtee_sev.bin"
    old_report = old.read_bytes()
    agent.store.record_report(lease_id, 0, old_report, report_hash(old_report))
    result = agent.reconcile()
    assert result.relaunched == [lease_id] and result.attested == [lease_id]
    on_chain = agent.chain.attestations.attestation_of(lease_id)
    assert on_chain.report_hash != report_hash(old_report)
    submission = agent.store.get_submission(lease_id, 0)
    assert submission is not None and submission.report_hash == on_chain.report_hash


def test_a_fleet_node_reads_the_shared_scan_and_writes_its_checkpoint_by_strides(
    chain: ChainSystem, make_scanning_agent: Callable[..., NodeAgent], scans: list[int]
) -> None:
    chain.staked_node()
    agent = make_scanning_agent()
    agent.reconciler.scan = SharedAcceptScan(agent.chain, max_age_s=0)
    agent.reconciler.checkpoint_stride_blocks = 1_000
    name = agent.reconciler.checkpoint_name
    assert agent.reconcile().adopted == []
    first = agent.store.checkpoint(name)  # a first scan is always recorded
    assert first == _head(chain) + 1
    forgotten = chain.open_lease()
    chain.node.leases.accept_lease(forgotten)  # the agent died right after accepting
    assert agent.reconcile().adopted == [forgotten]
    # Moved fewer blocks than the stride: not written again, the next pass re-reads them.
    assert agent.store.checkpoint(name) == first
    assert agent.reconcile().adopted == []
    assert scans == []  # never read by the node itself
    agent.reconciler.checkpoint_stride_blocks = 1
    agent.reconcile()
    assert agent.store.checkpoint(name) == _head(chain) + 1
