"""The node agent as a real worker process, with the real backend, Redis and anvil:
the whole lease path, SIGKILL after each step, a Redis restart, an RPC outage."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.chain import AttestationStatus, LeaseStatus
from node_agent.faults import COMBINED_STEPS, STEPS
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.store import AgentStore, LeaseState, SubmissionState
from tests.fixtures.chain import LEASE_SPEC, NODE_SPEC, ChainSystem
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.harness import AgentProcess, Backend, RedisServer, RpcLink
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = [pytest.mark.integration, pytest.mark.guests]


@pytest.fixture(scope="session")
def sim_amd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated AMD roots shared by the agent processes and the backend's verifier."""
    directory = tmp_path_factory.mktemp("sim-amd")
    SimulatedSecureProcessor(Product.MILAN, amd=SimulatedAmd(directory))  # makes every cert
    return directory


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def backend(
    chain: ChainSystem, tmp_path: Path, broker: RedisServer, sim_amd_dir: Path
) -> Iterator[Backend]:
    service = Backend(
        tmp_path,
        chain.deployment,
        chain.anvil.w3,
        broker.url,
        chain.accounts.verifier,
        [SimulatedAmd(sim_amd_dir).ark(Product.MILAN)],
    )
    service.start()
    yield service
    service.close()


def _agent(chain: ChainSystem, tmp: Path, broker: RedisServer, backend: Backend, amd: Path,
           **kw: str) -> AgentProcess:  # fmt: skip
    return AgentProcess(
        tmp,
        chain.accounts.node_key,
        chain.deployment,
        rpc_url=kw.pop("rpc_url", chain.anvil.rpc_url),
        broker_url=broker.url,
        api_url=backend.url,
        sim_amd_dir=amd,
        **kw,
    )


@pytest.fixture
def agent(
    chain: ChainSystem, tmp_path: Path, broker: RedisServer, backend: Backend, sim_amd_dir: Path
) -> Iterator[AgentProcess]:
    process = _agent(chain, tmp_path, broker, backend, sim_amd_dir)
    yield process
    process.stop()


def _verified(chain: ChainSystem, lease_id: int) -> bool:
    status = chain.node.attestations.attestation_of(lease_id).status
    return status == AttestationStatus.VERIFIED


def _store(agent: AgentProcess) -> AgentStore:
    return AgentStore(agent.data_dir / "agent.sqlite")


def _settled(agent: AgentProcess, lease_id: int) -> bool:
    record = _store(agent).get_lease(lease_id)
    return record is not None and record.state == LeaseState.ATTESTED


def _assert_attested_once(chain: ChainSystem, agent: AgentProcess, lease_id: int) -> None:
    """One accepted lease, one guest, one submission (nonce 0), the one the chain holds."""
    # The verifier may confirm before a restarted agent has looked: wait for the agent too.
    wait_for(lambda: _settled(agent, lease_id), what="the agent's store to catch up")
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE and lease.node_key == agent.address
    assert chain.node.attestations.attestation_nonce(lease_id) == 1
    [submission] = _store(agent).submissions(lease_id)
    assert submission.nonce == 0 and submission.state == SubmissionState.SUBMITTED
    on_chain = chain.node.attestations.attestation_of(lease_id)
    assert on_chain.report_hash == submission.report_hash
    record = _store(agent).get_lease(lease_id)
    assert record is not None and record.state == LeaseState.ATTESTED


def test_whole_lease_path_through_backend_and_worker(
    chain: ChainSystem, backend: Backend, agent: AgentProcess
) -> None:
    chain.staked_node()
    agent.start()
    lease_id = chain.open_lease()
    wait_for(lambda: _verified(chain, lease_id), what="AttestationVerified", timeout=90)
    _assert_attested_once(chain, agent, lease_id)
    guests = SimulatedLauncher(agent.data_dir / "guests", signer=None)  # type: ignore[arg-type]
    assert [g.lease_id for g in guests.running()] == [lease_id]
    report_hash = chain.node.attestations.attestation_of(lease_id).report_hash
    evidence = httpx.get(f"{backend.url}/v1/evidence/0x{report_hash.hex()}")
    assert evidence.status_code == 200
    bundle = EvidenceBundle.decode(evidence.content)  # uploaded by the agent, canonical
    assert (bundle.report_hash, bundle.lease_id, bundle.nonce) == (report_hash, lease_id, 0)
    # Signed heartbeats arrive and carry the capacity the lease left free.
    free = NODE_SPEC.vcpu - LEASE_SPEC.vcpu
    node_url = f"{backend.url}/v1/nodes/{agent.address}"
    wait_for(lambda: httpx.get(node_url).json()["free_vcpus"] == free, what="a heartbeat")
    node = httpx.get(node_url).json()
    assert node["free_memory_mib"] == NODE_SPEC.memory_mib - LEASE_SPEC.memory_mib
    assert node["running_leases"] == 1
    chain.renter.leases.close_lease(lease_id)
    wait_for(lambda: guests.running() == [], what="the guest to stop after close")
    record = _store(agent).get_lease(lease_id)
    assert record is not None and record.state == LeaseState.STOPPED


@pytest.mark.parametrize(
    ("mode", "step"),
    [("separate", step) for step in STEPS] + [("combined", step) for step in COMBINED_STEPS],
)
def test_sigkill_after_each_step_loses_nothing_and_repeats_nothing(
    chain: ChainSystem, agent: AgentProcess, mode: str, step: str
) -> None:
    # combined/accepted_submitted: killed after acceptAndSubmit is mined, before the store has
    # the lease accepted or its report submitted; restarted, it adopts the lease as attested.
    agent.env["CVM_NODE_ACCEPT_MODE"] = mode
    chain.staked_node()
    agent.start(crash_at=step)
    lease_id = chain.open_lease()
    assert agent.wait_exit(timeout=90) == -9, agent.log()
    before = _store(agent).submissions(lease_id)
    if step in ("reported", "uploaded", "submitted", "accepted_submitted"):
        assert len(before) == 1  # the report was kept before the crash
    agent.start()
    wait_for(lambda: _verified(chain, lease_id), what="AttestationVerified", timeout=90)
    _assert_attested_once(chain, agent, lease_id)
    if before:
        # The report obtained before the crash is the one on chain: never a second one.
        assert _store(agent).submissions(lease_id)[0].report_hash == before[0].report_hash
    guests = SimulatedLauncher(agent.data_dir / "guests", signer=None)  # type: ignore[arg-type]
    assert [g.lease_id for g in guests.running()] == [lease_id]


def _qemu_processes(qemu: QemuLauncher, lease_id: int) -> list[str]:
    """PIDs of this launcher's VMs for the lease (matched by its own QMP socket path, so that
    guests of other runs on the machine never count)."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"unix:{qemu.qmp_socket(lease_id)},"], capture_output=True, text=True
    )
    return found.stdout.split()


def test_sigkill_after_launch_with_qemu_never_starts_a_second_vm(
    chain: ChainSystem,
    tmp_path: Path,
    broker: RedisServer,
    backend: Backend,
    sim_amd_dir: Path,
) -> None:
    ensure_qemu()
    process = _agent(chain, tmp_path, broker, backend, sim_amd_dir, launcher="qemu")
    qemu = QemuLauncher(process.data_dir / "qemu", signer=None)  # type: ignore[arg-type]
    chain.staked_node()
    try:
        process.start(crash_at="launched")
        lease_id = chain.open_lease()
        assert process.wait_exit(timeout=90) == -9, process.log()
        [pid] = _qemu_processes(qemu, lease_id)  # the VM outlived the agent
        process.start()
        wait_for(lambda: _verified(chain, lease_id), what="AttestationVerified", timeout=90)
        assert _qemu_processes(qemu, lease_id) == [pid]  # adopted, not launched again
        _assert_attested_once(chain, process, lease_id)
    finally:
        process.stop()
        for guest in qemu.running():
            qemu.stop(guest.lease_id)
    assert _qemu_processes(qemu, lease_id) == []


def test_redis_restarted_mid_lease(
    chain: ChainSystem, broker: RedisServer, agent: AgentProcess
) -> None:
    chain.staked_node()
    agent.start()
    first = chain.open_lease()
    wait_for(lambda: _verified(chain, first), what="first lease verified", timeout=90)
    broker.kill()
    time.sleep(1.0)
    broker.start()
    second = chain.open_lease()
    wait_for(lambda: _verified(chain, second), what="second lease verified", timeout=120)
    assert agent.process is not None and agent.process.poll() is None  # survived the outage
    _assert_attested_once(chain, agent, first)
    _assert_attested_once(chain, agent, second)


def test_rpc_unreachable_for_a_while(
    chain: ChainSystem,
    tmp_path: Path,
    broker: RedisServer,
    backend: Backend,
    sim_amd_dir: Path,
) -> None:
    link = RpcLink(chain.anvil.rpc_url)
    process = _agent(chain, tmp_path, broker, backend, sim_amd_dir, rpc_url=link.url)
    chain.staked_node()
    try:
        process.start()
        wait_for(
            lambda: httpx.get(f"{backend.url}/v1/nodes/{process.address}")
            .json()
            .get("last_heartbeat_at"),
            what="the agent to be up",
            timeout=60,
        )
        link.cut()
        lease_id = chain.open_lease()  # the renter's RPC works; the node's does not
        wait_for(lambda: "Retry in" in process.log(), what="a retried task", timeout=60)
        assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
        link.restore()
        wait_for(lambda: _verified(chain, lease_id), what="AttestationVerified", timeout=120)
        _assert_attested_once(chain, process, lease_id)
    finally:
        process.stop()
        link.cut()
