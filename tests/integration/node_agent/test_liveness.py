"""Liveness end to end (real anvil, the real backend service and agent in this process): a
node whose heartbeats stop has its attested lease challenged by the verifier, the matcher
stops offering it at once, and after the challenge window the renter closes with the refund
of everything after the challenge."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend.service import BackendService
from cvm.api_client import ApiClient
from cvm.chain import AttestationStatus, CloseReason
from cvm.config import Settings
from node_agent.agent import NodeAgent
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.store import AgentStore
from tests.fixtures.chain import MEASUREMENT, ChainSystem
from tests.fixtures.processes import serving
from tests.integration.node_agent.conftest import NODE_CAPACITY
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration

STALE_S = 120


def test_a_silent_node_is_challenged_once_dropped_by_the_matcher_and_the_renter_refunded(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    clock = Clock(time.time())
    dispatched: list[tuple[int, str]] = []
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'backend.sqlite'}",
        indexer_confirmations=0,
        verifier_challenge_stale_s=STALE_S,
        # Far above the liveness staleness: the matcher's own staleness never drops the
        # node here, so only the liveness hook (`Matcher.node_silent`) can exclude it.
        heartbeat_stale_s=STALE_S * 100,
    )
    chain.staked_node()
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda lease_id, node: dispatched.append((lease_id, node)),
        verifier_account=chain.accounts.verifier,
        trusted_roots=[amd_sp.ark],
        clock=clock,
    )
    try:
        with serving(service.app) as url, ApiClient(url) as api:
            state = tmp_path / "agent"
            agent = NodeAgent(
                chain.node,
                SimulatedLauncher(state / "guests", amd_sp),
                AgentStore(state / "agent.sqlite"),
                NODE_CAPACITY,
                state / "locks",
                api=api,
                measurements=(MEASUREMENT,),
                clock=clock,
            )
            service.step()
            agent.heartbeat()
            lease_id = chain.open_lease()
            service.step()
            assert dispatched == [(lease_id, agent.address.lower())]
            agent.handle_lease(lease_id)  # accept, launch, evidence up, submit
            service.step()  # verified by the real verifier
            service.step()  # ... and indexed
            assert chain.client().attestations.status_of(lease_id) == AttestationStatus.VERIFIED

            # Alive: heartbeats keep coming, nothing is challenged.
            clock.advance(STALE_S / 2)
            agent.heartbeat()
            clock.advance(STALE_S / 2)
            report = service.step()
            assert report.liveness is not None and report.liveness.challenged == []

            # The agent stops: no more heartbeats (the chain's time passes too).
            clock.advance(STALE_S + 1)
            chain.advance(STALE_S * 2)
            report = service.step()
            assert report.liveness is not None
            assert report.liveness.silent_nodes == [agent.address.lower()]
            assert report.liveness.challenged == [lease_id]
            challenged_at = chain.client().attestations.challenged_at(lease_id)
            assert challenged_at > 0
            # Once per lease per interval, however often the loop runs.
            clock.advance(600)
            assert service.step().liveness.challenged == []  # type: ignore[union-attr]
            assert chain.client().attestations.challenged_at(lease_id) == challenged_at
            # The matcher offers the silent node nothing, though it has room.
            another = chain.open_lease()
            service.step()
            assert [lease for lease, _ in dispatched] == [lease_id]
            assert another not in [lease for lease, _ in dispatched]

            # Nobody answers within the challenge window: the renter closes with the refund.
            earned_at_challenge = chain.client().leases.earned(lease_id)
            chain.advance(chain.client().attestations.challenge_window() + 1)
            assert not chain.client().attestations.is_attested(lease_id, MEASUREMENT)
            assert chain.client().leases.earned(lease_id) == earned_at_challenge
            deposit = chain.client().leases.get_lease(lease_id).deposit
            closed = chain.renter.leases.close_lease(lease_id)
            args = closed.event("LeaseClosed").args
            assert args["refund"] == deposit - earned_at_challenge
            lease = chain.client().leases.get_lease(lease_id)
            assert lease.close_reason == CloseReason.ATTESTATION_MISSED
            agent.launcher.stop(lease_id)
    finally:
        service.close()
