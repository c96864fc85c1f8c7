"""A lease its node declines goes back to the market (real anvil, the backend service): the
indexer reopens it and the matcher offers it to the next node, never to the one that declined."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from backend.service import BackendService
from backend.store import Lease
from cvm.api_client import ApiClient
from cvm.api_models import LeaseState
from cvm.config import Settings
from cvm.eip712 import Heartbeat, sign_heartbeat
from tests.fixtures.chain import NODE_SPEC, STAKE, ChainSystem
from tests.fixtures.processes import serving
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration


def _two_nodes(
    chain: ChainSystem, tmp_path: Path
) -> tuple[BackendService, Clock, list[tuple[int, str]], LocalAccount, LocalAccount]:
    """A backend recording its dispatches, a cheap node (matched first) and another one."""
    clock = Clock(time.time())
    dispatched: list[tuple[int, str]] = []
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'backend.sqlite'}",
        indexer_confirmations=0,
    )
    cheap = chain.anvil.new_account()
    chain.register_node(cheap, replace(NODE_SPEC, price_per_vcpu_second=5 * 10**11), "https://a")
    chain.operator.nodes.stake(cheap.address, STAKE)
    chain.staked_node()
    other = chain.accounts.node_key
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda lease_id, node: dispatched.append((lease_id, node)),
        clock=clock,
    )
    return service, clock, dispatched, cheap, other


def test_a_declined_lease_is_matched_to_the_next_node(chain: ChainSystem, tmp_path: Path) -> None:
    service, clock, dispatched, cheap, other = _two_nodes(chain, tmp_path)
    try:
        with serving(service.app) as url, ApiClient(url) as api:
            service.step()
            for node in (cheap, other):
                beat = Heartbeat(node.address, 16, 65_536, 500, 0, int(clock.now))
                api.send_heartbeat(sign_heartbeat(beat, api.domain(), node.key))
            lease_id = chain.open_lease()
            service.step()
            assert dispatched == [(lease_id, cheap.address.lower())]
            cheap_chain = chain.client(cheap)
            cheap_chain.leases.accept_lease(lease_id)
            service.step()
            cheap_chain.leases.decline_lease(lease_id)  # it cannot serve the lease after all
            service.step()
            assert dispatched == [
                (lease_id, cheap.address.lower()),
                (lease_id, other.address.lower()),
            ]
            with service.store.session() as session:
                lease = session.get(Lease, lease_id)
                assert lease is not None
                assert lease.status == LeaseState.OPEN and lease.node is None
    finally:
        service.close()


def test_a_decline_whose_reaction_failed_is_matched_on_the_next_round(
    chain: ChainSystem, tmp_path: Path
) -> None:
    """The indexer commits the decline before the matcher reacts to it. When that reaction
    fails (the store went away mid-round, or the leader was killed), the next round must still
    release the ended accept; before, the lease stayed reserved to its old node for good."""
    service, clock, dispatched, cheap, other = _two_nodes(chain, tmp_path)
    try:
        with serving(service.app) as url, ApiClient(url) as api:
            service.step()
            for node in (cheap, other):
                beat = Heartbeat(node.address, 16, 65_536, 500, 0, int(clock.now))
                api.send_heartbeat(sign_heartbeat(beat, api.domain(), node.key))
            lease_id = chain.open_lease()
            service.step()
            cheap_chain = chain.client(cheap)
            cheap_chain.leases.accept_lease(lease_id)
            service.step()
            cheap_chain.leases.decline_lease(lease_id)

            react = service._react

            def fails(batch: object) -> None:
                raise ConnectionError("the store went away mid-round")

            service._react = fails  # type: ignore[method-assign]
            with pytest.raises(ConnectionError):
                service.step()
            service._react = react  # type: ignore[method-assign]
            service.step()
            assert dispatched == [
                (lease_id, cheap.address.lower()),
                (lease_id, other.address.lower()),
            ]
    finally:
        service.close()
