"""The speculative boot against a real anvil: a dispatched lease's guest boots while the
accept is mined, and is asked for a report only once the accept is final. A guest whose
accept loses a race, is dropped by a reorg (anvil's snapshot and revert) or whose lease the
renter closes while it boots is stopped, its disk removed, and never attested."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from cvm.chain import ChainClient, LeaseStatus
from node_agent.agent import NodeAgent
from node_agent.errors import LeaseNotOurs
from node_agent.launcher.base import GuestInfo, GuestReport, GuestSpec, Launcher
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.store import AgentStore, LeaseState, Resources
from tests.fixtures.chain import MEASUREMENT, NODE_SPEC, STAKE, ChainSystem
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.conftest import NODE_CAPACITY

pytestmark = pytest.mark.integration


class SpyLauncher(Launcher):
    """The simulated launcher, recording what the agent asked of it (and, for the tests that
    need a moment, calling a hook when the agent waits for the guest's boot)."""

    kind = "spy"

    def __init__(self, inner: SimulatedLauncher, chain: ChainClient) -> None:
        self.inner = inner
        self.chain = chain
        self.trusted_roots = inner.trusted_roots
        self.calls: list[tuple[str, int]] = []
        # The lease's status on chain when its guest was launched.
        self.status_at_launch: dict[int, LeaseStatus] = {}
        self.on_booted: Callable[[int], bool] | None = None
        self.launched = threading.Event()
        self._lock = threading.Lock()

    def _note(self, name: str, lease_id: int) -> None:
        with self._lock:
            self.calls.append((name, lease_id))

    def asked(self, name: str) -> list[int]:
        with self._lock:
            return [lease_id for call, lease_id in self.calls if call == name]

    def launch(self, spec: GuestSpec) -> GuestInfo:
        self.status_at_launch[spec.lease_id] = self.chain.leases.get_lease(spec.lease_id).status
        self._note("launch", spec.lease_id)
        info = self.inner.launch(spec)
        self.launched.set()
        return info

    def status(self, lease_id: int) -> GuestInfo:
        return self.inner.status(lease_id)

    def stop(self, lease_id: int) -> None:
        self._note("stop", lease_id)
        self.inner.stop(lease_id)

    def discard(self, lease_id: int) -> None:
        self._note("discard", lease_id)
        self.inner.discard(lease_id)

    def running(self) -> list[GuestInfo]:
        return self.inner.running()

    def booted(self, lease_id: int, timeout_s: float) -> bool:
        self._note("booted", lease_id)
        hook, self.on_booted = self.on_booted, None  # once
        return hook(lease_id) if hook is not None else True

    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        self._note("get_report", lease_id)
        return self.inner.get_report(lease_id, nonce)


def spied_agent(
    client: ChainClient, state: Path, amd_sp: SimulatedAmdSp, **options: Any
) -> tuple[NodeAgent, SpyLauncher]:
    spy = SpyLauncher(SimulatedLauncher(state / "guests", amd_sp), client)
    # These tests are about the separate accept (accept, then submit); test_combined_accept
    # covers the combined one.
    options.setdefault("accept_mode", "separate")
    agent = NodeAgent(
        client,
        spy,
        AgentStore(state / "agent.sqlite"),
        NODE_CAPACITY,
        state / "locks",
        measurements=(MEASUREMENT,),
        **options,
    )
    return agent, spy


def _second_node(chain: ChainSystem) -> LocalAccount:
    other = chain.accounts.stranger
    chain.register_node(other, NODE_SPEC, "https://b.node.test")
    chain.operator.nodes.stake(other.address, STAKE)
    return other


def _pending(chain: ChainSystem) -> int:
    status = chain.anvil.w3.provider.make_request("txpool_status", [])  # type: ignore[arg-type]
    return int(status["result"]["pending"], 16)


@contextmanager
def manual_mining(chain: ChainSystem) -> Iterator[None]:
    """Transactions wait in the pool until the test mines (as between a real chain's blocks)."""
    chain.anvil.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield
    finally:
        chain.anvil.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        if _pending(chain):
            chain.anvil.mine()


def test_the_loser_of_an_accept_race_stops_its_guest_and_never_attests(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    other = _second_node(chain)
    lease_id = chain.open_lease()
    first, first_spy = spied_agent(chain.node, tmp_path / "a", amd_sp)
    second, second_spy = spied_agent(chain.client(other), tmp_path / "b", amd_sp)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with manual_mining(chain):
            # Both were dispatched the lease: both boot its guest while their accepts wait
            # for the same block.
            outcomes = [pool.submit(agent.handle_lease, lease_id) for agent in (first, second)]
            wait_for(lambda: _pending(chain) == 2, timeout=60, what="both accepts sent")
            wait_for(
                lambda: first_spy.launched.is_set() and second_spy.launched.is_set(),
                timeout=60,
                what="both guests launched",
            )
            chain.anvil.mine()  # one block, both accepts: the first in it wins
        # The winner's submission is mined as soon as it is sent (automine again).
        states = [outcome.result(timeout=120) for outcome in outcomes]
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE
    by_address = {first.address: (first, first_spy), second.address: (second, second_spy)}
    winner, winner_spy = by_address[lease.node_key]
    [(loser, loser_spy)] = [pair for key, pair in by_address.items() if key != lease.node_key]
    assert sorted(states) == sorted([LeaseState.ATTESTED, LeaseState.REFUSED])
    # Both guests were booted before any accept was mined (speculatively).
    assert first_spy.status_at_launch[lease_id] == LeaseStatus.OPEN
    assert second_spy.status_at_launch[lease_id] == LeaseStatus.OPEN
    # The loser's guest is stopped and its disk removed; it was never asked for a report.
    assert loser_spy.asked("launch") == [lease_id]
    assert lease_id in loser_spy.asked("stop") and lease_id in loser_spy.asked("discard")
    assert loser_spy.asked("get_report") == []
    assert loser.launcher.running() == []
    assert loser.store.used() == Resources(0, 0, 0)
    # The winner attested its guest, once, after its accept was mined.
    assert winner_spy.asked("get_report") == [lease_id]
    assert winner_spy.asked("stop") == []
    assert chain.node.attestations.attestation_nonce(lease_id) == 1
    assert [guest.lease_id for guest in winner.launcher.running()] == [lease_id]


def test_a_reorg_that_drops_the_accept_stops_the_guest_before_any_report(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    before_accept = chain.anvil.snapshot()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp)

    def reorg_while_booting(_lease_id: int) -> bool:
        # The accept's block leaves the chain (the new branch lacks it) while the guest boots.
        assert chain.node.leases.get_lease(lease_id).node_key == agent.address
        chain.anvil.revert(before_accept)
        return False  # still booting

    spy.on_booted = reorg_while_booting
    with pytest.raises(LeaseNotOurs, match="accept was dropped"):
        agent.handle_lease(lease_id)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert spy.asked("launch") == [lease_id]
    assert spy.asked("stop") == [lease_id] and spy.asked("discard") == [lease_id]
    assert spy.asked("get_report") == []
    assert agent.launcher.running() == []
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.REFUSED
    assert agent.store.used() == Resources(0, 0, 0)
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    # Dispatched again on the new branch, it is accepted and attested with a fresh guest.
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    assert spy.asked("launch") == [lease_id, lease_id]
    assert spy.asked("get_report") == [lease_id]


def test_the_reconciler_stops_a_guest_whose_accept_a_reorg_dropped(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    before_accept = chain.anvil.snapshot()
    # The accept is final only two blocks deep: the agent boots the guest, does not attest.
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_confirmations=2)
    agent.lifecycle.boot_wait_s = 0
    assert agent.handle_lease(lease_id) == LeaseState.LAUNCHED
    assert spy.asked("get_report") == []
    chain.anvil.revert(before_accept)  # the reorg drops the accept's block
    result = agent.reconcile()
    assert result.stopped == [lease_id]
    assert spy.asked("stop") == [lease_id] and spy.asked("get_report") == []
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)


def test_the_first_report_waits_for_the_configured_accept_depth(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, accept_confirmations=2)
    agent.lifecycle.boot_wait_s = 0
    assert agent.handle_lease(lease_id) == LeaseState.LAUNCHED
    agent.reconcile()
    assert spy.asked("get_report") == []  # one block deep only: nothing asked of the guest
    chain.anvil.mine(2)
    result = agent.reconcile()
    assert result.attested == [lease_id]
    assert spy.asked("get_report") == [lease_id]
    assert chain.node.attestations.attestation_nonce(lease_id) == 1


def test_a_lease_the_renter_closes_while_its_guest_boots_stops_the_guest(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp)

    def renter_closes(_lease_id: int) -> bool:
        chain.renter.leases.close_lease(lease_id)
        return False  # still booting

    spy.on_booted = renter_closes
    with pytest.raises(LeaseNotOurs, match="CLOSED"):
        agent.handle_lease(lease_id)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.CLOSED
    assert spy.asked("stop") == [lease_id] and spy.asked("discard") == [lease_id]
    assert spy.asked("get_report") == []
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)


def test_without_speculative_boot_the_guest_launches_after_the_accept(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent, spy = spied_agent(chain.node, tmp_path / "agent", amd_sp, speculative_boot=False)
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    assert spy.status_at_launch[lease_id] == LeaseStatus.ACTIVE
    assert spy.asked("booted") == []
