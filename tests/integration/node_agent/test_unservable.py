"""The agent never holds a lease it cannot serve (real anvil): it refuses one whose expected
measurement it cannot produce, declines one it accepted but cannot launch, and answers a
challenge with a fresh attestation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from cvm.chain import AttestationStatus, LeaseStatus
from node_agent.agent import NodeAgent
from node_agent.errors import LauncherError, LeaseUnservable
from node_agent.launcher.base import GuestInfo, GuestSpec, GuestState
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.lifecycle import DECLINE_MARGIN_S
from node_agent.store import AgentStore, LeaseState, Resources
from node_agent.volumes import GIB, VolumeFiles
from tests.fixtures.chain import MEASUREMENT, STAKE, ChainSystem
from tests.integration.node_agent.conftest import NODE_CAPACITY

pytestmark = pytest.mark.integration

OTHER_MEASUREMENT = bytes.fromhex("66" * 48)


def test_an_unservable_lease_is_refused_with_its_reason_and_left_open_for_another_node(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent], caplog: pytest.LogCaptureFixture
) -> None:
    chain.staked_node()
    agent = make_agent()  # produces MEASUREMENT only
    unservable = chain.open_lease(measurement=OTHER_MEASUREMENT)
    servable = chain.open_lease()
    caplog.set_level(logging.INFO, logger="node_agent")
    for _ in range(2):  # a redelivered task refuses again, but says so once
        with pytest.raises(LeaseUnservable, match="not one this node produces"):
            agent.handle_lease(unservable)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [
        f"lease {unservable}: refused: expected measurement 0x{OTHER_MEASUREMENT.hex()} "
        "is not one this node produces"
    ]
    assert chain.node.leases.get_lease(unservable).status == LeaseStatus.OPEN
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)
    # The servable lease is still taken as before.
    assert agent.handle_lease(servable) == LeaseState.ATTESTED
    # Another node that produces the other measurement takes the refused lease.
    other = chain.accounts.stranger
    chain.register_node(other)
    chain.operator.nodes.stake(other.address, STAKE)
    other_agent = make_agent(
        state=agent.store.path.parent.parent / "other",
        measurements=(OTHER_MEASUREMENT,),
        client=chain.client(other),
    )
    assert other_agent.handle_lease(unservable) == LeaseState.ATTESTED
    lease = chain.node.leases.get_lease(unservable)
    assert lease.status == LeaseStatus.ACTIVE and lease.node_key == other.address


def test_an_agent_without_configured_measurements_refuses_every_lease(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    with pytest.raises(LeaseUnservable, match="CVM_NODE_MEASUREMENTS"):
        make_agent(measurements=()).handle_lease(lease_id)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN


def test_an_accepted_lease_it_cannot_serve_is_declined_without_penalty(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease(measurement=OTHER_MEASUREMENT)
    chain.node.leases.accept_lease(lease_id)  # e.g. under an earlier configuration
    stake_before = chain.client().nodes.get_node(chain.accounts.node_key.address).stake
    agent = make_agent()
    with pytest.raises(LeaseUnservable):
        agent.handle_lease(lease_id)
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.OPEN  # back on the market for the next node
    assert chain.client().leases.bonded_stake(chain.accounts.node_key.address) == 0
    node = chain.client().nodes.get_node(chain.accounts.node_key.address)
    assert node.stake == stake_before
    assert agent.launcher.running() == []


def test_a_guest_that_still_cannot_launch_near_the_deadline_is_declined(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    state = tmp_path / "agent"
    # A real launcher on a host without its hypervisor: every launch fails.
    launcher = QemuLauncher(state / "qemu", amd_sp, qemu_binary="cvm-no-such-qemu")
    agent = NodeAgent(
        chain.node,
        launcher,
        AgentStore(state / "agent.sqlite"),
        NODE_CAPACITY,
        state / "locks",
        measurements=(MEASUREMENT,),
        accept_mode="separate",  # accepted before the launch: the decline deadline applies
    )
    with pytest.raises(LauncherError):  # early on: may pass, so retried, still ours
        agent.handle_lease(lease_id)
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE
    # Near the last moment the decline is free (LeaseMarket.freeDeclineDeadline).
    deadline = chain.node.leases.free_decline_deadline(lease_id)
    chain.advance(deadline - DECLINE_MARGIN_S - chain.now())
    agent.reconcile()  # the reconciler's relaunch fails again, now close to the deadline
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert chain.client().leases.bonded_stake(chain.accounts.node_key.address) == 0
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.STOPPED


def test_a_live_agent_answers_a_challenge_and_the_lease_stays_attested_and_paid(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    agent = make_agent()
    lease_id = chain.open_lease()
    agent.handle_lease(lease_id)
    first = chain.node.attestations.attestation_of(lease_id).report_hash
    chain.verifier.attestations.confirm(lease_id, first, True)
    chain.advance(60)
    chain.renter.leases.challenge(lease_id)
    result = agent.reconcile()
    assert result.answered == [lease_id]
    answer = chain.node.attestations.attestation_of(lease_id)
    assert answer.status == AttestationStatus.PENDING and answer.report_hash != first
    chain.verifier.attestations.confirm(lease_id, answer.report_hash, True)
    window = chain.client().attestations.challenge_window()
    chain.advance(window + 60)  # past the challenge window: the answer stands
    assert chain.client().attestations.is_attested(lease_id, MEASUREMENT)
    earned_before = chain.client().leases.earned(lease_id)
    chain.advance(60)
    assert chain.client().leases.earned(lease_id) > earned_before  # still paid
    assert agent.reconcile().answered == []  # answered once


class VolumeKeepingLauncher(SimulatedLauncher):
    """The simulated guest, with the qemu launchers' data volumes on a host with `free`
    bytes of disk left: what the lifecycle decides about volumes, without booting QEMU."""

    def __init__(self, state: Path, amd_sp: SimulatedAmdSp, free: int) -> None:
        super().__init__(state / "guests", amd_sp)
        self.volumes = VolumeFiles(state / "volumes")
        self.volumes.free_bytes = lambda: free  # type: ignore[method-assign]

    def launch(self, spec: GuestSpec) -> GuestInfo:
        if spec.disk_gib > 0:
            self.volumes.ensure(spec.lease_id, spec.disk_gib)
        return super().launch(spec)

    def volume_refusal(self, lease_id: int, disk_gib: int, active: Mapping[int, int]) -> str | None:
        return self.volumes.refusal(lease_id, disk_gib, active)

    def discard(self, lease_id: int) -> None:
        self.volumes.remove(lease_id)


def test_a_lease_whose_volume_the_host_cannot_store_is_refused_before_accept(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    """Registered capacity is a promise; the file system under the volumes is what holds
    them. LEASE_SPEC asks 40 GiB: one fits in 50 GiB free, a second does not."""
    chain.staked_node()
    state = tmp_path / "agent"
    launcher = VolumeKeepingLauncher(state, amd_sp, free=50 * GIB)
    agent = NodeAgent(chain.node, launcher, AgentStore(state / "agent.sqlite"), NODE_CAPACITY,
                      state / "locks", measurements=(MEASUREMENT,))  # fmt: skip
    first, second = chain.open_lease(), chain.open_lease()
    assert agent.handle_lease(first) == LeaseState.ATTESTED
    volume = launcher.volumes.path(first)
    assert volume.stat().st_size == 40 * GIB
    with pytest.raises(LeaseUnservable, match="40 GiB volume does not fit"):
        agent.handle_lease(second)
    assert chain.node.leases.get_lease(second).status == LeaseStatus.OPEN  # never accepted
    assert not launcher.volumes.path(second).exists()
    # A relaunch keeps the volume; the end of the lease deletes it.
    launcher.stop(first)
    agent.reconcile()
    assert volume.exists() and launcher.status(first).state == GuestState.RUNNING
    chain.renter.leases.close_lease(first)
    agent.stop_lease(first)
    assert not volume.exists()
