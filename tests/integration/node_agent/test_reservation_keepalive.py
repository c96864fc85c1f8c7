"""The reservation keepalive on a real anvil and the real backend over HTTP: a node booting a
combined-accept guest slower than the matcher's accept timeout keeps its reservation alive, so
the lease is never dispatched to a second node (which would boot a second guest for it), and
the one node that booted accepts it with its first report. The backend's clock is the test's:
the boot "lasts" what the test advances it by."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from backend.service import BackendService
from backend.store import Match, ReservationState
from cvm.api_client import ApiClient
from cvm.chain import LeaseStatus
from cvm.config import Settings
from cvm.eip712 import Heartbeat, sign_heartbeat
from node_agent.agent import NodeAgent
from node_agent.launcher.base import GuestInfo, GuestSpec
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.store import LeaseState
from tests.fixtures.chain import ChainSystem
from tests.fixtures.processes import serving, wait_for
from tests.integration.node_agent.test_speculative_boot import (
    SpyLauncher,
    _second_node,
    spied_agent,
)
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration

ACCEPT_TIMEOUT_S = 30


@dataclass
class SteppedBackend:
    service: BackendService
    api: ApiClient
    clock: Clock
    dispatched: list[tuple[int, str]]

    def heartbeat(self, node: LocalAccount) -> None:
        fields = Heartbeat(
            node=node.address, free_vcpus=16, free_memory_mib=65_536, free_disk_gib=500,
            running_leases=0, timestamp=int(self.clock.now),
        )  # fmt: skip
        self.api.send_heartbeat(sign_heartbeat(fields, self.api.domain(), node.key))

    def reservations(self, lease_id: int) -> dict[str, tuple[str, datetime]]:
        with self.service.store.new_session(read_only=True) as session:
            rows = session.query(Match).filter(Match.lease_id == lease_id).all()
            return {row.node: (str(row.status), row.deadline) for row in rows}


@pytest.fixture
def backend(chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp) -> Iterator[SteppedBackend]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'backend.db'}",
        broker_url="memory://",
        rpc_url=chain.anvil.rpc_url,
        indexer_confirmations=0,
        match_accept_timeout_s=ACCEPT_TIMEOUT_S,
        # The test's clock runs ahead of the agents' signatures and heartbeats.
        heartbeat_window_s=3600,
        heartbeat_stale_s=3600,
        image_dir=tmp_path / "images",
    )
    dispatched: list[tuple[int, str]] = []
    clock = Clock(time.time())
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda lease_id, node: dispatched.append((lease_id, node.lower())),
        clock=clock,
        trusted_roots=[amd_sp.ark],
    )
    try:
        with serving(service.app) as url:
            yield SteppedBackend(service, ApiClient(url), clock, dispatched)
    finally:
        service.close()


def _slow_boot(spy: SpyLauncher, backend: SteppedBackend, rounds: int) -> None:
    """The spy's launch "lasts" `rounds` x 2/3 of the accept timeout on the backend's clock;
    the backend's matcher runs between them (expiring what is overdue, re-dispatching)."""
    inner = spy.launch

    def launch(spec: GuestSpec) -> GuestInfo:
        node = backend.dispatched[0][1]

        def kept_ahead() -> bool:
            status, deadline = backend.reservations(spec.lease_id)[node]
            ahead = deadline.timestamp() - backend.clock.now
            return status == ReservationState.RESERVED and ahead > ACCEPT_TIMEOUT_S / 2

        for _ in range(rounds):
            # The deadline is now a third of the timeout ahead: wait for a keepalive to move it.
            backend.clock.advance(ACCEPT_TIMEOUT_S * 2 / 3)
            wait_for(kept_ahead, timeout=30, what="a reservation keepalive")
            backend.service.step()
        return inner(spec)

    spy.launch = launch  # type: ignore[method-assign]


def test_a_slow_combined_boot_keeps_its_reservation_and_no_second_node_boots(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, backend: SteppedBackend
) -> None:
    chain.staked_node()
    other = _second_node(chain)
    backend.service.step()  # indexes both nodes
    backend.heartbeat(chain.accounts.node_key)
    backend.heartbeat(other)
    agents: dict[str, tuple[NodeAgent, SpyLauncher]] = {}
    for name, client in (("a", chain.node), ("b", chain.client(other))):
        agent, spy = spied_agent(
            client, tmp_path / name, amd_sp, accept_mode="combined", api=backend.api
        )
        assert agent.lifecycle.keepalive is not None
        agent.lifecycle.keepalive.max_interval_s = 0.2  # the test's clock jumps
        agent.lifecycle.keepalive.min_interval_s = 0.05
        agent.lifecycle.keepalive.first_delay_s = 0.05
        agents[agent.address.lower()] = (agent, spy)
    lease_id = chain.open_lease()
    backend.service.step()
    [(dispatched_lease, first)] = backend.dispatched
    assert dispatched_lease == lease_id
    agent, spy = agents[first]
    _slow_boot(spy, backend, rounds=3)  # twice the accept timeout in all
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    backend.service.step()  # indexes the accept
    # Never dispatched again: only the first node booted a guest, and it holds the lease.
    assert backend.dispatched == [(lease_id, first)]
    [(_, other_spy)] = [pair for address, pair in agents.items() if address != first]
    assert other_spy.asked("launch") == []
    assert spy.asked("launch") == [lease_id]
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE and lease.node_key.lower() == first
    assert {node: status for node, (status, _) in backend.reservations(lease_id).items()} == {
        first: ReservationState.ACCEPTED
    }
