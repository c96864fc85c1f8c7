"""The whole backend on real services: anvil, PostgreSQL, Redis, a Celery worker, HTTP.

A renter's lease is matched to the best node, dispatched to that node's own Celery queue,
and when that node never accepts, the backend falls back to the next node, whose worker
accepts on chain. Heartbeats and reads go through `cvm.api_client` over real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from eth_account.signers.local import LocalAccount

from backend.service import BackendService
from backend.store import Match
from cvm.api_client import ApiClient, ApiError
from cvm.chain import ChainClient
from cvm.config import Settings
from cvm.dispatch import TASK_HANDLE_LEASE, node_queue
from cvm.eip712 import Heartbeat, sign_heartbeat
from tests.fixtures.chain import NODE_SPEC, STAKE, ChainSystem
from tests.fixtures.processes import serving, wait_for
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def service(
    chain: ChainSystem, postgresql_database_url: str, redis_url: str, clock: Clock
) -> Iterator[BackendService]:
    settings = Settings(
        database_url=postgresql_database_url,
        broker_url=redis_url,
        indexer_confirmations=0,
        match_accept_timeout_s=30,
    )
    backend = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        verifier_account=chain.accounts.verifier,
        clock=clock,
    )
    yield backend
    backend.close()


@pytest.fixture
def api_url(service: BackendService) -> Iterator[str]:
    with serving(service.app) as url:
        yield url


def _heartbeat(api: ApiClient, node: LocalAccount, clock: Clock, vcpus: int = 16) -> None:
    fields = Heartbeat(
        node=node.address,
        free_vcpus=vcpus,
        free_memory_mib=65_536,
        free_disk_gib=500,
        running_leases=0,
        timestamp=int(clock.now),
    )
    api.send_heartbeat(sign_heartbeat(fields, api.domain(), node.key))


def test_lease_is_matched_dispatched_and_falls_back(
    chain: ChainSystem,
    service: BackendService,
    api_url: str,
    redis_url: str,
    clock: Clock,
) -> None:
    # Node A is cheaper (preferred) but has no agent running; node B has one.
    node_a = chain.anvil.new_account()
    node_b = chain.accounts.node_key
    chain.register_node(node_a, replace(NODE_SPEC, price_per_vcpu_second=5 * 10**11), "https://a")
    chain.operator.nodes.stake(node_a.address, STAKE)
    chain.staked_node()
    service.step()

    api = ApiClient(api_url)
    assert {n.address for n in api.list_nodes()} == {node_a.address, node_b.address}
    _heartbeat(api, node_a, clock)
    _heartbeat(api, node_b, clock)
    with pytest.raises(ApiError) as replay:
        _heartbeat(api, node_b, clock)  # same timestamp: a replay
    assert replay.value.status_code == 409

    # Node B's agent: a real Celery worker on B's own queue that accepts on chain.
    received: list[int] = []
    worker_app = Celery("test-node-agent", broker=redis_url)
    worker_app.conf.update(task_default_queue=node_queue(node_b.address))
    node_chain = ChainClient(chain.anvil.w3, chain.deployment, node_b)

    @worker_app.task(name=TASK_HANDLE_LEASE, shared=False)
    def handle_lease(lease_id: int) -> None:
        received.append(lease_id)
        node_chain.leases.accept_lease(lease_id)

    with start_worker(worker_app, perform_ping_check=False, queues=[node_queue(node_b.address)]):
        lease_id = chain.open_lease()
        service.step()
        with service.store.session() as session:
            (match,) = session.query(Match).filter(Match.lease_id == lease_id).all()
            assert match.node == node_a.address.lower() and match.status == "reserved"
        time.sleep(1.0)
        assert received == []  # A's queue, not B's

        clock.advance(31)  # A never accepted: B is next
        _heartbeat(api, node_b, clock)  # B's agent is alive (its heartbeats go on)
        service.step()
        wait_for(lambda: received, timeout=30, what="node B's worker to get the lease")
        assert received == [lease_id]

        def accepted() -> bool:
            service.step()
            return api.get_lease(lease_id).status == "active"

        wait_for(accepted, timeout=30, interval=0.1, what="the lease to be accepted")

    lease = api.get_lease(lease_id)
    assert lease.node == node_b.address
    with service.store.session() as session:
        statuses = {m.node: m.status for m in session.query(Match).filter_by(lease_id=lease_id)}
    assert statuses == {node_a.address.lower(): "expired", node_b.address.lower(): "accepted"}
    assert api.attestation_status(lease_id).status == "none"
    assert api.get_node(node_b.address).free_vcpus == 16
