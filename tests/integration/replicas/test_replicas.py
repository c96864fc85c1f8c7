"""Three backend replicas (`python -m backend`) on one real PostgreSQL and one real Redis,
with real node agents and anvil: every lease matched, accepted and verified exactly once
while the indexer's and the verifier's leaders are SIGKILLed, and PostgreSQL and Redis are
restarted mid-run.

Sized to the test budget: LEASES leases from RENTERS renters at once onto two nodes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select

from backend.leadership import INDEXER, verifier_job
from backend.store import LeaderLease, Match, Store, Verification
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.chain import AttestationStatus, LeaseSpec, LeaseStatus, NodeSpec, TeeType
from cvm.wallet import import_keystore
from devstack.postgres import fresh_database, running_postgresql
from tests.fixtures.chain import MAX_PRICE, MEASUREMENT, STAKE, TOKEN, ChainSystem
from tests.fixtures.processes import free_port, kill_process, stop_process, wait_for
from tests.integration.node_agent.harness import REPO, AgentProcess, RedisServer

pytestmark = pytest.mark.integration

LEASES = 200
RENTERS = 4
TAKEOVER_S = 5.0
NODE = NodeSpec(
    tee_type=TeeType.SEV_SNP,
    vcpu=1024,
    memory_mib=1024 * 1024,
    disk_gib=100_000,
    region=276,
    price_per_vcpu_second=10**12,
)
SMALL = LeaseSpec(
    tee_type=TeeType.SEV_SNP,
    vcpu=1,
    memory_mib=512,
    disk_gib=1,
    min_node_stake=0,
    reattest_interval=3_600,
    spec_hash=bytes.fromhex("c0" * 32),
)


def _keystore(tmp: Path, name: str, account: LocalAccount) -> tuple[Path, Path]:
    keystore, password = tmp / f"{name}.json", tmp / f"{name}.password"
    import_keystore(keystore, account.key, "replica-test", kdf="pbkdf2", iterations=2)
    fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("replica-test\n")
    return keystore, password


@dataclass
class Replica:
    """One `python -m backend` process."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "backend",
                    "--port",
                    str(self.port),
                    "--trust-simulated-amd",
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60, what=f"backend replica {self.name}")

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def postgres() -> Iterator[tuple[object, str]]:
    """A PostgreSQL server of this test's own (it is restarted mid-run) and an empty database."""
    with running_postgresql() as server, fresh_database(server, "replicas") as url:
        yield server, url


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


def _holder(store: Store, job: str) -> str | None:
    with store.session() as session:
        row = session.get(LeaderLease, job)
        return row.holder if row is not None and row.expires_at.timestamp() > time.time() else None


def _pid_of(holder: str | None) -> int | None:
    return int(holder.split(":")[1]) if holder else None


def _verified(chain: ChainSystem, lease_id: int) -> bool:
    return chain.node.attestations.attestation_of(lease_id).status == AttestationStatus.VERIFIED


def test_replicas_match_accept_and_verify_each_lease_once_through_failover_and_restarts(
    chain: ChainSystem,
    postgres: tuple[object, str],
    broker: RedisServer,
    tmp_path: Path,
) -> None:
    server, database_url = postgres
    anvil = chain.anvil
    # Simulated AMD roots shared by the agents (signing) and the replicas' verifiers.
    sim_amd = tmp_path / "sim-amd"
    SimulatedSecureProcessor(Product.MILAN, amd=SimulatedAmd(sim_amd))
    deployment_file = tmp_path / "deployment.json"
    chain.deployment.save(deployment_file)
    verifier_keystore, verifier_password = _keystore(tmp_path, "verifier", chain.accounts.verifier)

    # Two big nodes, staked; several renters, funded. Each accepted lease bonds
    # minStake x slashBps (10 tokens) until it ends: either node alone can bond every lease,
    # however the matcher spreads them.
    node_keys = [anvil.dev_account(6), anvil.dev_account(7)]
    operator = chain.accounts.operator.address
    chain.operator.token.mint(operator, 2 * LEASES * 10 * TOKEN)
    chain.operator.token.approve(chain.deployment.node_registry, 2**256 - 1)
    for key in node_keys:
        chain.register_node(key, NODE)
        chain.operator.nodes.stake(key.address, STAKE + LEASES * 10 * TOKEN)
    renters = [chain.accounts.renter, chain.accounts.stranger, *map(anvil.dev_account, (8, 9))]
    for renter in renters:
        client = chain.client(renter)
        client.token.mint(renter.address, 100_000 * TOKEN)
        client.token.approve(chain.deployment.lease_market, 2**256 - 1)

    replicas = []
    for index in range(3):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CVM_DATA_DIR": str(tmp_path / f"replica-{index}"),
            "CVM_DEPLOYMENT_FILE": str(deployment_file),
            "CVM_RPC_URL": anvil.rpc_url,
            "CVM_DATABASE_URL": database_url,
            "CVM_BROKER_URL": broker.url,
            "CVM_SIM_AMD_DIR": str(sim_amd),
            "CVM_VERIFIER_KEYSTORE": str(verifier_keystore),
            "CVM_VERIFIER_PASSWORD_FILE": str(verifier_password),
            "CVM_INDEXER_CONFIRMATIONS": "0",
            "CVM_INDEXER_POLL_S": "0.2",
            "CVM_LEADER_TTL_S": "2",
            "CVM_MATCH_ACCEPT_TIMEOUT_S": "30",
        }
        replicas.append(Replica(f"r{index}", free_port(), env, tmp_path / f"replica-{index}.log"))
    agents: list[AgentProcess] = []
    store = Store(database_url)
    try:
        # r0 starts first, so it leads both jobs: the one the test kills.
        replicas[0].start()
        wait_for(lambda: _holder(store, INDEXER) is not None, what="an indexer leader")
        wait_for(
            lambda: _holder(store, verifier_job(chain.accounts.verifier.address)) is not None,
            what="a verifier leader",
        )
        for replica in replicas[1:]:
            replica.start()
        # The agents talk to r2, which the test never kills.
        for index, key in enumerate(node_keys):
            (tmp_path / f"agent-{index}").mkdir()
            agent = AgentProcess(
                tmp_path / f"agent-{index}",
                key,
                chain.deployment,
                rpc_url=anvil.rpc_url,
                broker_url=broker.url,
                api_url=replicas[2].url,
                sim_amd_dir=sim_amd,
            )
            agents.append(agent)
            agent.start()

        lease_ids: list[int] = []
        lock = threading.Lock()

        def create(renter: LocalAccount, count: int) -> None:
            client = chain.client(renter)
            for _ in range(count):
                lease_id = client.leases.create_lease(
                    SMALL, MAX_PRICE, 10 * TOKEN, MEASUREMENT
                ).lease_id
                with lock:
                    lease_ids.append(lease_id)

        verifier = verifier_job(chain.accounts.verifier.address)
        leader_pid = _pid_of(_holder(store, INDEXER))
        assert leader_pid == replicas[0].process.pid  # type: ignore[union-attr]
        assert _pid_of(_holder(store, verifier)) == leader_pid

        with ThreadPoolExecutor(RENTERS) as pool:
            futures = [pool.submit(create, r, LEASES // RENTERS) for r in renters]
            # Mid-run: SIGKILL the replica leading the indexer and the verifier.
            wait_for(lambda: len(lease_ids) >= LEASES // 4, timeout=120, what="leases")
            replicas[0].kill()
            killed_at = time.monotonic()
            wait_for(
                lambda: _pid_of(_holder(store, INDEXER)) not in (None, leader_pid),
                timeout=TAKEOVER_S,
                what="another replica to take the indexer over",
            )
            wait_for(
                lambda: _pid_of(_holder(store, verifier)) not in (None, leader_pid),
                timeout=max(0.1, TAKEOVER_S - (time.monotonic() - killed_at)),
                what="another replica to take the verifier over",
            )
            # Then Redis (broker and shared counters) and PostgreSQL restart under load.
            wait_for(lambda: len(lease_ids) >= LEASES // 2, timeout=120, what="leases")
            broker.kill()
            time.sleep(1)
            broker.start()
            server.stop()  # type: ignore[attr-defined]
            time.sleep(1)
            server.start()  # type: ignore[attr-defined]
            for future in futures:
                future.result()
        assert len(lease_ids) == LEASES

        wait_for(
            lambda: all(_verified(chain, lease_id) for lease_id in lease_ids),
            timeout=240,
            interval=1.0,
            what="every lease verified",
        )
        # Exactly once: one accepted reservation, one on-chain accept, one verification vote.
        with store.session() as session:
            accepted = dict(
                session.execute(
                    select(Match.lease_id, func.count())
                    .where(Match.accepted_at.is_not(None))
                    .group_by(Match.lease_id)
                ).all()
            )
            votes = dict(
                session.execute(
                    select(Verification.lease_id, func.count())
                    .where(Verification.confirm_tx.is_not(None))
                    .group_by(Verification.lease_id)
                ).all()
            )
        for lease_id in lease_ids:
            lease = chain.node.leases.get_lease(lease_id)
            assert lease.status == LeaseStatus.ACTIVE
            assert chain.node.attestations.attestation_nonce(lease_id) == 1
            assert accepted.get(lease_id) == 1, lease_id
            assert votes.get(lease_id) == 1, lease_id
        # The surviving replicas still serve (they recovered without a restart of their own).
        for replica in replicas[1:]:
            assert (
                httpx.get(f"{replica.url}/v1/leases/{lease_ids[-1]}", timeout=5).status_code == 200
            )
    finally:
        for agent in agents:
            agent.stop()
        for replica in replicas:
            replica.stop()
        store.close()
