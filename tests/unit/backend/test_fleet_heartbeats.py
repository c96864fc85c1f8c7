"""A fleet's heartbeats at the real heartbeat endpoint: many node identities, each
heartbeat signed by its own node key and checked by signature; forged ones refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from backend.api.deps import AppContext
from backend.store import Heartbeat, Store
from cvm.api_client import ApiClient, ApiError
from cvm.chain import ChainClient, Deployment
from cvm.chain.connection import open_web3
from cvm.config import Settings
from cvm.eip712 import Domain, sign_heartbeat
from cvm.eip712 import Heartbeat as HeartbeatFields
from node_agent.agent import NodeAgent
from node_agent.fleet import Fleet
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.store import AgentStore, Resources
from tests.unit.backend.factories import Clock, add_node

# 200 identities: a thousand took 90 s here (mostly the per-node SQLite files and inserts),
# too long for the suite; the fleet itself holds up to MAX_NODES.
NODES = 200


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """SQLite only (the other backend tests cover PostgreSQL)."""
    store = Store(settings.database_url)
    yield store
    store.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One client address (127.0.0.1) sends every node's heartbeat here, as a fleet host
    # does: no per-client limit (each node's own limit stays).
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'backend.db'}",
        api_public_host="cvm.test",
        rate_limit_per_client=0,
    )


def _deployment(context: AppContext) -> Deployment:
    chain = context.chain
    return Deployment(
        chain_id=chain.chain_id,
        deployer="0x" + "00" * 20,
        start_block=0,
        token="0x" + "44" * 20,
        node_registry=chain.node_registry,
        attestation_registry=chain.attestation_registry,
        lease_market=chain.lease_market,
        attested_service="0x" + "55" * 20,
    )


def _fleet(
    tmp: Path, accounts: list[LocalAccount], deployment: Deployment, api: ApiClient
) -> Fleet:
    # Heartbeats never touch the chain: a client of an address nobody listens on.
    w3 = open_web3("http://127.0.0.1:9")
    signer = SimulatedAmdSp(tmp / "sim-amd")
    agents = [
        NodeAgent(
            ChainClient(w3, deployment, account),
            SimulatedLauncher(tmp / account.address / "guests", signer),
            AgentStore(tmp / account.address / "agent.sqlite"),
            Resources(vcpu=4 + index % 3, memory_mib=8192, disk_gib=100),
            tmp / account.address / "locks",
            api=api,
            step_workers=1,
        )
        for index, account in enumerate(accounts)
    ]
    return Fleet(agents, heartbeat_s=60, reconcile_s=60)


def test_fleet_heartbeats_each_verified_by_its_node_key(
    tmp_path: Path, store: Store, context: AppContext, clock: Clock, live_api: str
) -> None:
    accounts = [Account.create() for _ in range(NODES)]
    for account in accounts:
        add_node(store, account.address)
    api = ApiClient(live_api)
    fleet = _fleet(tmp_path, accounts, _deployment(context), api)
    try:
        assert fleet.heartbeat_all() == NODES
    finally:
        fleet.stop()
    with store.session() as session:
        rows = {row.node: row for row in session.query(Heartbeat).all()}
    assert set(rows) == {account.address.lower() for account in accounts}
    # Each row holds what its own node signed (its capacity), not a neighbour's.
    for index, account in enumerate(accounts):
        assert rows[account.address.lower()].free_vcpus == 4 + index % 3

    # Forged: a node's heartbeat signed by another key, or altered after signing.
    domain = Domain(context.chain.chain_id, context.chain.node_registry)
    victim, forger = accounts[0], accounts[1]
    later = int(clock.now) + 1
    beat = HeartbeatFields(
        node=victim.address,
        free_vcpus=99,
        free_memory_mib=1,
        free_disk_gib=1,
        running_leases=0,
        timestamp=later,
    )
    # The forger's own valid signature, over a heartbeat then relabelled as the victim's.
    by_forger = sign_heartbeat(replace(beat, node=forger.address), domain, forger.key)
    with pytest.raises(ApiError) as wrong_key:
        api.send_heartbeat(replace(by_forger, heartbeat=beat))
    assert wrong_key.value.status_code == 401
    signed = sign_heartbeat(beat, domain, victim.key)
    with pytest.raises(ApiError) as altered:
        api.send_heartbeat(replace(signed, heartbeat=replace(beat, free_vcpus=98)))
    assert altered.value.status_code == 401
    with store.session() as session:
        kept = session.get(Heartbeat, victim.address.lower())
        assert kept is not None and kept.free_vcpus == 4  # neither forgery was recorded
    api.close()
