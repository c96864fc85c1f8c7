"""Failover end to end (real anvil, the real backend service and two agents in this process):
a lease whose key policy allows failover, on a node whose heartbeats stop, is challenged by
the failover watch, failed over once the challenge window passed, reopened by the indexer
with the move in its history, and matched to the other node, which accepts, launches and is
Verified; the old node, still alive but cut off, stops its guest and deletes its volume, and
can never take the lease back. A lease without that policy gets only today's challenge."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from backend.service import BackendService
from cvm.api_client import ApiClient
from cvm.chain import AttestationStatus, ContractRevert, LeaseStatus
from cvm.chain.key_service import KeyPolicy
from cvm.config import Settings
from node_agent.agent import NodeAgent
from node_agent.launcher.base import GuestState
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.store import AgentStore
from tests.fixtures.chain import MEASUREMENT, STAKE, ChainSystem
from tests.fixtures.processes import serving
from tests.integration.node_agent.conftest import NODE_CAPACITY
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration

TIMEOUT_S = 60


def agent_of(chain: ChainSystem, account: LocalAccount, state: Path, api: ApiClient,
             amd_sp: SimulatedAmdSp, clock: Clock,
             mode: str = "combined") -> NodeAgent:  # fmt: skip
    return NodeAgent(
        chain.client(account),
        SimulatedLauncher(state / "guests", amd_sp),
        AgentStore(state / "agent.sqlite"),
        NODE_CAPACITY,
        state / "locks",
        api=api,
        measurements=(MEASUREMENT,),
        clock=clock,
        accept_mode=mode,
    )


def holder(chain: ChainSystem) -> str:
    """The stranger account as a registered, staked key holder."""
    client = chain.stranger
    keys, key_service, address = client.keys, chain.deployment.key_service, client.address
    assert keys is not None and key_service is not None and address is not None
    stake = keys.min_holder_stake()
    client.token.mint(address, stake)
    client.token.approve(key_service, stake)
    keys.stake_holder(stake)  # staked first: registering checks the minimum
    keys.register_holder(b"\x42" * 32)
    return address


def policy(holder_address: str, failover: bool) -> KeyPolicy:
    return KeyPolicy(
        measurements=(MEASUREMENT,),
        failover=failover,
        threshold=1,
        holders=(holder_address,),
        key_version=1,
        manifest_hash=b"\x07" * 32,
    )


# The new node re-accepts the failed-over lease with acceptAndSubmit (combined) or acceptLease
# then submit (separate); either way its report binds the lease's running nonce.
@pytest.mark.parametrize("mode", ["combined", "separate"])
def test_a_silent_nodes_lease_moves_to_the_other_node(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, mode: str
) -> None:
    clock = Clock(time.time())
    dispatched: list[tuple[int, str]] = []
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'backend.sqlite'}",
        indexer_confirmations=0,
        liveness_timeout_s=TIMEOUT_S,
        verifier_challenge_stale_s=TIMEOUT_S * 2,
        heartbeat_stale_s=TIMEOUT_S * 100,  # only liveness drops a node here
        # The backend's clock runs ahead of the agents' (the chain's time travels with it).
        heartbeat_window_s=3600,
    )
    chain.staked_node()
    other: LocalAccount = chain.anvil.dev_account(7)
    chain.register_node(other)
    chain.operator.nodes.stake(other.address, STAKE)
    holder_address = holder(chain)
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda lease_id, node: dispatched.append((lease_id, node)),
        verifier_account=chain.accounts.verifier,
        trusted_roots=[amd_sp.ark],
        clock=clock,
    )
    assert service.failover is not None
    try:
        with serving(service.app) as url, ApiClient(url) as api:
            first = agent_of(
                chain, chain.accounts.node_key, tmp_path / "a", api, amd_sp, clock, mode
            )
            second = agent_of(chain, other, tmp_path / "b", api, amd_sp, clock, mode)
            agents = {first.address.lower(): first, second.address.lower(): second}
            service.step()
            first.heartbeat()
            lease_id = chain.open_lease()
            plain = chain.open_lease()  # no key policy: today's behaviour
            renter_keys = chain.renter.keys
            assert renter_keys is not None
            renter_keys.set_key_policy(lease_id, policy(holder_address, True))
            service.step()
            assert [lease for lease, _ in dispatched] == [lease_id, plain]
            for lease in (lease_id, plain):
                first.handle_lease(lease)
            service.step()
            service.step()
            for lease in (lease_id, plain):
                assert chain.client().attestations.status_of(lease) == AttestationStatus.VERIFIED

            # The first node is cut off: no heartbeat reaches the backend; the second speaks.
            clock.advance(TIMEOUT_S + 1)
            chain.advance(TIMEOUT_S + 1)
            second.heartbeat()
            report = service.step()
            assert report.failover is not None
            assert report.failover.challenged == [lease_id]
            assert report.failover.not_allowed == [plain]
            assert chain.client().attestations.challenged_at(lease_id) > 0
            # Nothing new for the plain lease (the plain watch challenges it later, at 2 x).
            assert chain.client().attestations.challenged_at(plain) == 0

            # The window passes unanswered: Expired, failover, reopened, re-matched.
            chain.advance(chain.client().attestations.challenge_window() + 1)
            clock.advance(chain.client().attestations.challenge_window() + 1)
            second.heartbeat()
            report = service.step()
            assert report.failover is not None and report.failover.failed_over == [lease_id]
            service.step()
            assert chain.client().leases.get_lease(lease_id).status == LeaseStatus.OPEN
            view = api.get_lease(lease_id)
            assert view.status == "open" and view.node is None
            assert [n.node.lower() for n in view.nodes] == [first.address.lower()]
            assert view.nodes[0].reason == "attestation_expired"
            assert dispatched[-1] == (lease_id, second.address.lower())

            # The old node's agent, restarted (or alive behind its partition: the same pass),
            # stops the guest and drops its volume.
            assert first.launcher.status(lease_id).state == GuestState.RUNNING
            first.close()
            restarted = agent_of(chain, chain.accounts.node_key, tmp_path / "a", api, amd_sp,
                                 clock)  # fmt: skip
            result = restarted.reconcile()
            assert lease_id in result.stopped and plain not in result.stopped
            assert restarted.launcher.status(lease_id).state != GuestState.RUNNING
            assert restarted.launcher.status(plain).state == GuestState.RUNNING
            with pytest.raises(ContractRevert):
                chain.node.leases.accept_lease(lease_id)

            # The new node takes it as any lease: accept, launch, attest, Verified.
            agents[second.address.lower()].handle_lease(lease_id)
            service.step()
            service.step()
            assert chain.client().attestations.status_of(lease_id) == AttestationStatus.VERIFIED
            view = api.get_lease(lease_id)
            assert [n.node.lower() for n in view.nodes] == [
                first.address.lower(), second.address.lower()
            ]  # fmt: skip
            assert chain.client().leases.get_lease(plain).status == LeaseStatus.ACTIVE
    finally:
        service.close()


def test_a_guest_relaunched_on_its_node_attests_at_once_through_a_requested_challenge(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    """The guest crashes, its node relaunches it: the registry would take its report only from
    half the interval on; the node asks the backend, the failover watch challenges (verifier
    key), the node answers at once and the new guest is Verified. Nobody renter-side acts."""
    clock = Clock(time.time())
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'backend.sqlite'}",
        indexer_confirmations=0,
        liveness_timeout_s=TIMEOUT_S,
        heartbeat_window_s=3600,
    )
    chain.staked_node()
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda lease_id, node: None,
        verifier_account=chain.accounts.verifier,
        trusted_roots=[amd_sp.ark],
        clock=clock,
    )
    assert service.failover is not None
    try:
        with serving(service.app) as url, ApiClient(url) as api:
            agent = agent_of(chain, chain.accounts.node_key, tmp_path / "a", api, amd_sp, clock)
            service.step()
            agent.heartbeat()
            lease_id = chain.open_lease()
            service.step()
            agent.handle_lease(lease_id)
            service.step()
            service.step()
            registry = chain.client().attestations
            assert registry.status_of(lease_id) == AttestationStatus.VERIFIED
            crashed = registry.attestation_of(lease_id).report_hash

            chain.advance(10)  # a while later (the chain counts a challenge after the report)
            clock.advance(10)
            agent.heartbeat()
            agent.launcher.stop(lease_id)  # the guest crashed; the node lives
            result = agent.reconcile()
            assert (result.relaunched, result.attested) == ([lease_id], [])
            report = service.step()
            assert report.failover is not None and report.failover.requested == [lease_id]
            assert registry.challenged_at(lease_id) > 0

            result = agent.reconcile()  # answers the challenge with the new guest's report
            assert (result.attested, result.answered) == ([lease_id], [lease_id])
            service.step()
            service.step()
            assert registry.status_of(lease_id) == AttestationStatus.VERIFIED
            assert registry.attestation_of(lease_id).report_hash != crashed
            # Done with: never challenged twice, nothing more asked.
            challenged = registry.challenged_at(lease_id)
            agent.reconcile()
            report = service.step()
            assert report.failover is not None and report.failover.requested == []
            assert registry.challenged_at(lease_id) == challenged
    finally:
        service.close()
