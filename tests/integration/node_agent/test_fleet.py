"""The fleet mode with real Redis, anvil and backend: each node consumes only its own
queue, and `python -m node_agent.fleet` heartbeats for every node and stops leaving no
process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from eth_account import Account

from cvm.api_client import ApiClient
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.dispatch import TASK_HANDLE_LEASE, TASK_SERVE_GUEST, node_queue
from devstack.fleet import default_profiles, provision_fleet
from node_agent.agent import NodeAgent
from node_agent.fleet import Fleet, register_fleet_tasks
from node_agent.tasks import make_celery
from tests.fixtures.chain import MEASUREMENT, ChainSystem
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.harness import REPO, Backend, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


class _RecordingNode:
    """Stands in for a node's agent: records the leases handed to it."""

    def __init__(self) -> None:
        self.address = Account.create().address
        self.leases: list[int] = []
        self.served: list[int] = []

    def handle_lease(self, lease_id: int) -> str:
        self.leases.append(lease_id)
        return "accepted"

    def serve_guest(self, lease_id: int) -> bool:
        self.served.append(lease_id)
        return True

    def close(self) -> None:
        pass


def test_each_fleet_node_consumes_only_its_own_queue(broker: RedisServer) -> None:
    nodes = [_RecordingNode() for _ in range(3)]
    outsider = Account.create().address
    fleet = Fleet(cast(list[NodeAgent], nodes), heartbeat_s=60, reconcile_s=60)
    app = make_celery(broker.url, nodes[0].address)
    register_fleet_tasks(app, fleet, max_retries=0)
    expected = {node.address: [10 * index + 1, 10 * index + 2] for index, node in enumerate(nodes)}
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, queues=fleet.queues
    ):
        for node in nodes:
            for lease_id in expected[node.address]:
                app.send_task(TASK_HANDLE_LEASE, args=[lease_id], queue=node_queue(node.address))
            # The secrets nudge goes to the first lease's node only.
            app.send_task(
                TASK_SERVE_GUEST, args=[expected[node.address][0]], queue=node_queue(node.address)
            )
        app.send_task(TASK_HANDLE_LEASE, args=[99], queue=node_queue(outsider))
        wait_for(
            lambda: all(
                sorted(node.leases) == expected[node.address]
                and node.served == expected[node.address][:1]
                for node in nodes
            ),
            timeout=30,
            what="every node's leases",
        )
    for node in nodes:
        assert sorted(node.leases) == expected[node.address]
        assert node.served == expected[node.address][:1]
    # A queue of a node not in this fleet is left alone: its message is still there.
    client = redis.Redis.from_url(broker.url)
    assert client.llen(node_queue(outsider)) == 1
    client.close()


@pytest.fixture
def sim_amd_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "sim-amd"
    SimulatedSecureProcessor(Product.MILAN, amd=SimulatedAmd(directory))
    return directory


def test_fleet_process_heartbeats_for_every_node_and_stops_cleanly(
    chain: ChainSystem, broker: RedisServer, tmp_path: Path, sim_amd_dir: Path
) -> None:
    keys = [Account.create() for _ in range(4)]
    provision_fleet(chain.admin, keys, default_profiles(len(keys)), 10**21, 10**19)
    backend = Backend(
        tmp_path,
        chain.deployment,
        chain.anvil.w3,
        broker.url,
        chain.accounts.verifier,
        [SimulatedAmd(sim_amd_dir).ark(Product.MILAN)],
    )
    backend.start()
    keys_file = tmp_path / "fleet-keys.json"
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(["0x" + key.key.hex().removeprefix("0x") for key in keys], handle)
    deployment_file = tmp_path / "deployment.json"
    chain.deployment.save(deployment_file)
    env: dict[str, Any] = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CVM_DEPLOYMENT_FILE": str(deployment_file),
        "CVM_RPC_URL": chain.anvil.rpc_url,
        "CVM_BROKER_URL": broker.url,
        "CVM_API_URL": backend.url,
        "CVM_DATA_DIR": str(tmp_path / "data"),
        "CVM_SIM_AMD_DIR": str(sim_amd_dir),
        "CVM_NODE_LAUNCHER": "simulated",
        "CVM_NODE_MEASUREMENTS": "0x" + MEASUREMENT.hex(),
        "CVM_NODE_HEARTBEAT_INTERVAL_S": "1",
        "CVM_NODE_RECONCILE_INTERVAL_S": "2",
    }
    log_path = tmp_path / "fleet.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "node_agent.fleet", "--keys-file", str(keys_file)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wanted = {key.address.lower() for key in keys}
        with ApiClient(backend.url) as api:

            def heard() -> bool:
                beating = {
                    node.address.lower()
                    for node in api.list_nodes(limit=100)
                    if node.last_heartbeat_at is not None
                }
                return wanted <= beating

            wait_for(heard, timeout=90, what="a heartbeat from every fleet node")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text(errors="replace")
        # Nothing of its process group outlives it.
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        backend.close()


def test_fleet_refuses_a_keys_file_others_can_read(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(["0x" + "11" * 32]))
    keys_file.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "node_agent.fleet", "--keys-file", str(keys_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert "readable by others" in result.stderr and "Traceback" not in result.stderr
