"""The marketplace at fleet sizes: does anything slow down between 20 and 1,000 nodes?

`python -m bench.scale --json --nodes 20,1000 --leases 200 [--replicas 3]` runs, for each
fleet size, a fresh stack on this machine: anvil with the contracts, one PostgreSQL, one
Redis, `--replicas` backend processes (`python -m backend`) sharing them, and the nodes as
simulated fleets (`python -m node_agent.fleet`, up to `--nodes-per-process` nodes each),
every node registered and staked with its own key. While `--renters` renters create
`--leases` leases on chain, it measures:

- `matcher_decisions_per_s`: matches the backend recorded over the time from the first to
  the last (PostgreSQL's `matches` table);
- `indexer_lag_blocks`: chain head minus the indexer's cursor, sampled every 0.25 s (p50, max;
  anvil mines a block per transaction, so under load a block is a few milliseconds);
- `api_p99_ms`: p99 latency of the status read (`GET /v1/leases/{id}`) and the marketplace read
  (`GET /v1/nodes?limit=50`), sent round-robin to the replicas while the leases run;
- `heartbeats_per_s`: heartbeats accepted (a node's signed timestamp advancing in the
  store) per second over the load, beside what the nodes send (`nodes / heartbeat_s`);
- `backend_rss_mib`: each replica's resident memory at the end, and in the comparison what
  one more node costs them together (`backend_rss_mib_per_added_node`);
- `chain_ceiling_leases_per_minute`: the chain's own ceiling for the transactions of a lease
  (create, acceptAndSubmit, confirm: the agents' default combined accept) at the renters'
  concurrency (as `bench.e2e` measures it), in the same run, beside
  the stack's `leases_per_minute`: where the ratio is near 1 the chain is the bound.

It prints one JSON object: each size's figures and `ratio_largest_over_smallest` for each
(the goal: no figure more than 2x worse at the largest size).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bench.e2e import _VerifiedWatcher, measure_ceiling
from bench.harness import free_port, percentile
from cvm.chain import Anvil, ChainClient, DeployConfig, LeaseSpec, TeeType, deploy
from devstack.faucet import fund
from devstack.fleet import default_profiles, provision_fleet
from devstack.keys import new_stack_key, write_secret
from devstack.postgres import fresh_database, running_postgresql
from devstack.process import ManagedProcess, stop_all
from devstack.redis import start_redis

MEASUREMENT = hashlib.sha384(b"cvm demo guest image v1").digest()  # the simulated launcher's
MAX_NODES = 5_000
MAX_LEASES = 20_000
MAX_REPLICAS = 5
_MAX_PRICE = 3 * 10**12  # every default profile fits one vCPU at this price
_LEASE = LeaseSpec(TeeType.SEV_SNP, 1, 1024, 10, 0, 3600, b"\x0f" * 32)


@dataclass
class Samples:
    """What the samplers collect while the leases run."""

    lag_blocks: list[int] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    market_ms: list[float] = field(default_factory=list)
    read_errors: int = 0
    heartbeats: int = 0  # accepted heartbeats seen (timestamps advancing)


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_s(pids: list[int | None]) -> float:
    """User and system CPU seconds the processes used so far (threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (after pid and name)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _prepare_simulated_amd(directory: Path) -> None:
    from cvm.attestation.product import Product
    from cvm.attestation.sim import SimulatedAmd

    simulated = SimulatedAmd(directory)
    for product in Product:
        simulated.ask(product)
        simulated.asvk(product)
    simulated.signing_key()


@contextmanager
def _ticking(anvil: Anvil, tick_s: float = 1.0) -> Iterator[None]:
    """An empty block every tick: the chain's clock moves while nobody transacts."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(tick_s):
            try:
                anvil.mine()
            except Exception:  # anvil is stopping
                continue

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _wait(condition: Any, timeout: float, what: str, processes: list[ManagedProcess]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # not up yet
            pass
        for process in processes:
            process.ensure_running()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.25)


def _sample(
    stop: threading.Event,
    engine: sqlalchemy.Engine,
    anvil: Anvil,
    api_urls: list[str],
    lease_ids: list[int],
    samples: Samples,
) -> None:
    """Indexer lag and accepted heartbeats (every 0.25 s) and the two reads, in one thread."""
    last_timestamps: dict[str, int] = {}
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("select node, timestamp from heartbeats"))
        last_timestamps = {str(node): int(ts) for node, ts in rows}
    clients = [httpx.Client(base_url=url, timeout=10) for url in api_urls]
    turn = 0
    next_db = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_db:
                next_db = now + 0.25
                head = int(anvil.w3.eth.block_number)
                with engine.connect() as connection:
                    cursor = connection.execute(
                        sqlalchemy.text("select last_block from indexer_cursor limit 1")
                    ).scalar()
                    rows = connection.execute(
                        sqlalchemy.text("select node, timestamp from heartbeats")
                    )
                    for node, ts in rows:
                        if last_timestamps.get(str(node)) != int(ts):
                            samples.heartbeats += 1
                            last_timestamps[str(node)] = int(ts)
                if cursor is not None:
                    samples.lag_blocks.append(max(0, head - int(cursor)))
            client = clients[turn % len(clients)]
            turn += 1
            try:
                if lease_ids and turn % 2:
                    lease_id = lease_ids[turn % len(lease_ids)]
                    clock = time.perf_counter()
                    response = client.get(f"/v1/leases/{lease_id}")
                    target = samples.status_ms
                else:
                    clock = time.perf_counter()
                    response = client.get("/v1/nodes", params={"limit": 50})
                    target = samples.market_ms
                elapsed_ms = (time.perf_counter() - clock) * 1000
                if response.status_code in (200, 404):  # 404: a lease not indexed yet
                    target.append(elapsed_ms)
                else:
                    samples.read_errors += 1
            except httpx.HTTPError:
                samples.read_errors += 1
            stop.wait(0.02)
    finally:
        for client in clients:
            client.close()


def run_size(
    nodes: int,
    leases: int,
    replicas: int,
    renters: int,
    heartbeat_s: float,
    nodes_per_process: int,
    timeout_s: float,
    directory: Path,
) -> dict[str, Any]:
    """One fleet size on a fresh stack; its figures."""
    logs = directory / "logs"
    logs.mkdir(parents=True)
    with ExitStack() as stack:
        started = time.perf_counter()
        anvil = Anvil().start()
        stack.callback(anvil.stop)
        keys = directory / "keys"
        verifier = new_stack_key(keys, "verifier")
        amd_dir = directory / "sim-amd"
        _prepare_simulated_amd(amd_dir)
        deployer = anvil.dev_account(0)
        deployment = deploy(
            anvil.w3,
            deployer,
            DeployConfig(verifiers=[verifier.address], example_measurement=MEASUREMENT),
            rpc_url=anvil.rpc_url,
        )
        admin = ChainClient(anvil.w3, deployment, deployer)
        assert admin.sender is not None
        admin.sender.send({"to": verifier.address, "value": 10**20})
        stack.enter_context(_ticking(anvil))
        deployment_file = directory / "deployment.json"

        server = stack.enter_context(running_postgresql())
        database_url = stack.enter_context(fresh_database(server, "cvm"))
        redis, broker_url = start_redis(directory / "redis", logs / "redis.log")
        stack.callback(redis.stop)
        ports = [free_port() for _ in range(replicas)]
        deployment.save(deployment_file)
        env = {
            **os.environ,
            "CVM_DEPLOYMENT_FILE": str(deployment_file),
            "CVM_RPC_URL": anvil.rpc_url,
            "CVM_API_URL": f"http://127.0.0.1:{ports[0]}",
            "CVM_BROKER_URL": broker_url,
            "CVM_DATABASE_URL": database_url,
            "CVM_SIM_AMD_DIR": str(amd_dir),
            "CVM_INDEXER_CONFIRMATIONS": "0",
            "CVM_INDEXER_POLL_S": "0.2",
            "CVM_MATCH_ACCEPT_TIMEOUT_S": "30",
            "CVM_NODE_HEARTBEAT_INTERVAL_S": str(heartbeat_s),
            "CVM_NODE_RECONCILE_INTERVAL_S": str(max(15.0, heartbeat_s)),
            "CVM_HEARTBEAT_STALE_S": str(int(max(30, 5 * heartbeat_s))),
            "CVM_RATE_LIMIT_PER_CLIENT": "0",
            "CVM_NODE_LAUNCHER": "simulated",
            "CVM_NODE_MEASUREMENTS": "0x" + MEASUREMENT.hex(),
            "PYTHONUNBUFFERED": "1",
        }
        backends: list[ManagedProcess] = []
        fleets: list[ManagedProcess] = []
        stack.callback(lambda: stop_all([*fleets, *backends]))
        for index, port in enumerate(ports):
            replica_env = {
                **env,
                "CVM_DATA_DIR": str(directory / f"replica-{index}"),
                "CVM_API_PUBLIC_HOST": f"127.0.0.1:{port}",
                "CVM_VERIFIER_KEYSTORE": str(verifier.keystore),
                "CVM_VERIFIER_PASSWORD_FILE": str(verifier.password_file),
            }
            argv = [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port),
                    "--trust-simulated-amd"]  # fmt: skip
            backend = ManagedProcess(f"backend-{index}", argv, logs / f"backend-{index}.log",
                                     replica_env).start()  # fmt: skip
            backends.append(backend)
            # The first replica migrates the database before the others start.
            health = f"http://127.0.0.1:{port}/v1/health"

            def answers(url: str = health) -> bool:
                return httpx.get(url, timeout=2).is_success

            _wait(answers, 120, health, backends)
        api_urls = [f"http://127.0.0.1:{port}" for port in ports]

        node_keys: list[LocalAccount] = [Account.create() for _ in range(nodes)]
        clock = time.perf_counter()
        # 1 ether of gas per node key: anvil's deployer holds 10,000.
        provision_fleet(admin, node_keys, default_profiles(nodes), 1_000 * 10**18, 10**18)
        provision_s = time.perf_counter() - clock
        for first in range(0, nodes, nodes_per_process):
            chunk = node_keys[first : first + nodes_per_process]
            keys_file = keys / f"fleet-{first}.json"
            write_secret(keys_file, json.dumps([key.key.hex() for key in chunk]))
            fleet = ManagedProcess(
                f"fleet-{first}",
                # 32 heartbeat threads for 250 nodes: a heartbeat mostly waits for the backend
                # (each real node has a thread of its own), and 8 could not keep 25/s in
                # flight once the backend answers in half a second.
                [
                    sys.executable,
                    "-m",
                    "node_agent.fleet",
                    "--keys-file",
                    str(keys_file),
                    "--scheduler-threads",
                    "32",
                ],
                logs / f"fleet-{first}.log",
                # Each fleet process talks to one replica, in turn (as a load balancer would).
                {
                    **env,
                    "CVM_DATA_DIR": str(directory / "nodes"),
                    "CVM_API_URL": api_urls[len(fleets) % len(api_urls)],
                },
            ).start()
            fleets.append(fleet)
        engine = sqlalchemy.create_engine(database_url, pool_size=2)
        stack.callback(engine.dispose)

        def all_beating() -> bool:
            with engine.connect() as connection:
                count = connection.execute(
                    sqlalchemy.text("select count(*) from heartbeats")
                ).scalar()
            return int(count or 0) >= nodes

        _wait(all_beating, timeout_s, "a heartbeat from every node", [*backends, *fleets])
        ready_s = time.perf_counter() - started

        ceiling = measure_ceiling(admin, renters, rounds=3)
        wallets = []
        for _ in range(renters):
            account = Account.create()
            fund(admin, account.address, 10**24, 10**19)
            renter = admin.with_account(account)
            renter.token.approve(deployment.lease_market, 2**255)
            wallets.append(renter)
        watcher = _VerifiedWatcher(admin, int(anvil.w3.eth.block_number) + 1)
        watcher.start()
        lease_ids: list[int] = []
        sent: dict[int, float] = {}
        lock = threading.Lock()
        errors: list[str] = []
        samples = Samples()
        stop = threading.Event()
        sampler = threading.Thread(
            target=_sample, args=(stop, engine, anvil, api_urls, lease_ids, samples), daemon=True
        )
        backend_pids = [backend.pid for backend in backends]
        fleet_pids = [fleet.pid for fleet in fleets]
        cpu_before = (_cpu_s(backend_pids), _cpu_s(fleet_pids), _cpu_s([anvil.pid]))
        load_started = time.perf_counter()
        sampler.start()

        def renter_loop(renter: ChainClient, count: int) -> None:
            for _ in range(count):
                try:
                    at = time.perf_counter()
                    lease_id = renter.leases.create_lease(
                        _LEASE, _MAX_PRICE, _MAX_PRICE * 3600, MEASUREMENT
                    ).lease_id
                except Exception as exc:
                    errors.append(str(exc)[:200])
                    continue
                with lock:
                    sent[lease_id] = at
                    lease_ids.append(lease_id)

        shares = [leases // renters + (1 if i < leases % renters else 0) for i in range(renters)]
        threads = [
            threading.Thread(target=renter_loop, args=(renter, share))
            for renter, share in zip(wallets, shares, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline and not set(sent) <= set(watcher.seen):
            time.sleep(0.25)
        # Heartbeats are counted over three intervals at least (a shorter window is noise).
        stop.wait(max(0.0, load_started + 3 * heartbeat_s - time.perf_counter()))
        load_s = time.perf_counter() - load_started
        cpu_after = (_cpu_s(backend_pids), _cpu_s(fleet_pids), _cpu_s([anvil.pid]))
        cores = [
            round((after - before) / load_s, 2)
            for before, after in zip(cpu_before, cpu_after, strict=True)
        ]
        stop.set()
        sampler.join(15)
        watcher.stop.set()
        watcher.join(5)

        with engine.connect() as connection:
            matched, first_match, last_match = connection.execute(
                sqlalchemy.text("select count(*), min(created_at), max(created_at) from matches")
            ).one()
        match_span_s = (
            (last_match - first_match).total_seconds() if matched and matched > 1 else 0.0
        )
        verified = [i for i in sent if i in watcher.seen]
        latencies = [watcher.seen[i] - sent[i] for i in verified]
        per_minute = (
            len(verified) / (max(watcher.seen[i] for i in verified) - min(sent.values())) * 60
            if verified
            else 0.0
        )
        rss = [_rss_mib(backend.pid) for backend in backends]
        sent_rate = nodes / heartbeat_s
        return {
            "nodes": nodes,
            "replicas": replicas,
            "fleet_processes": len(fleets),
            "leases_requested": leases,
            "leases_created": len(sent),
            "leases_verified": len(verified),
            "errors": errors[:3],
            "matcher_decisions_per_s": round(matched / match_span_s, 2) if match_span_s else None,
            "matches": int(matched or 0),
            "indexer_lag_blocks": {
                "p50": statistics.median(samples.lag_blocks) if samples.lag_blocks else None,
                "max": max(samples.lag_blocks, default=None),
            },
            "api_p99_ms": {
                "status": round(percentile(samples.status_ms, 0.99), 1)
                if samples.status_ms
                else None,
                "marketplace": round(percentile(samples.market_ms, 0.99), 1)
                if samples.market_ms
                else None,
                "reads": len(samples.status_ms) + len(samples.market_ms),
                "read_errors": samples.read_errors,
            },
            "heartbeats_per_s": {
                "accepted": round(samples.heartbeats / load_s, 2),
                "sent_by_nodes": round(sent_rate, 2),
                "held_fraction": round(samples.heartbeats / load_s / sent_rate, 3),
            },
            "backend_rss_mib": [round(value, 1) for value in rss],
            "backend_rss_mib_per_node": round(sum(rss) / nodes, 3),
            # The simulated nodes' own cost (the fleet's bound on memory per process).
            "fleet_rss_mib_per_node": round(sum(_rss_mib(pid) for pid in fleet_pids) / nodes, 3),
            "create_to_verified_p50_s": round(statistics.median(latencies), 3)
            if latencies
            else None,
            "leases_per_minute": round(per_minute, 1),
            "chain_ceiling_leases_per_minute": round(ceiling["leases_per_minute"], 1),
            "fraction_of_chain_ceiling": round(per_minute / ceiling["leases_per_minute"], 3),
            # Cores busy over the load (this machine's count beside them): where it nears the
            # count, the machine bounds every figure, the chain's ceiling included.
            "cpu_cores_used": {
                "backends": cores[0],
                "fleets": cores[1],
                "anvil": cores[2],
                "machine_cores": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 1),
            },
            "provision_s": round(provision_s, 1),
            "ready_s": round(ready_s, 1),
            "load_s": round(load_s, 1),
        }


# Figures where more is better; the others (lag, latency, memory) are better smaller.
_HIGHER_IS_BETTER = {"matcher_decisions_per_s", "heartbeats_held_fraction", "leases_per_minute"}


def _headline(result: dict[str, Any]) -> dict[str, float | None]:
    return {
        "matcher_decisions_per_s": result["matcher_decisions_per_s"],
        "indexer_lag_blocks_max": result["indexer_lag_blocks"]["max"],
        "api_p99_status_ms": result["api_p99_ms"]["status"],
        "api_p99_marketplace_ms": result["api_p99_ms"]["marketplace"],
        "heartbeats_held_fraction": result["heartbeats_per_s"]["held_fraction"],
        "backend_rss_mib_total": round(sum(result["backend_rss_mib"]), 1),
        "leases_per_minute": result["leases_per_minute"],
    }


def compare(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each headline figure's degradation from the smallest to the largest size (>1: worse)."""
    small, large = _headline(results[0]), _headline(results[-1])
    degradation: dict[str, float | None] = {}
    for name, before in small.items():
        after = large[name]
        if before is None or after is None:
            degradation[name] = None
        elif name in _HIGHER_IS_BETTER:
            degradation[name] = round(before / after, 2) if after else None
        else:  # a lag of 0 blocks counts as 1, so that 0 -> 1 is not "infinitely worse"
            degradation[name] = round(max(after, 1) / max(before, 1), 2)
    nodes_added = results[-1]["nodes"] - results[0]["nodes"]
    rss_added = sum(results[-1]["backend_rss_mib"]) - sum(results[0]["backend_rss_mib"])
    worst = max((value for value in degradation.values() if value is not None), default=None)
    return {
        "from_nodes": results[0]["nodes"],
        "to_nodes": results[-1]["nodes"],
        "degradation": degradation,
        # What one more node costs the backend replicas together (resident memory).
        "backend_rss_mib_per_added_node": (
            round(rss_added / nodes_added, 4) if nodes_added else None
        ),
        "worst": worst,
        "within_2x": worst is not None and worst <= 2,
    }


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(not 1 <= size <= MAX_NODES for size in sizes):
        raise argparse.ArgumentTypeError(f"fleet sizes between 1 and {MAX_NODES}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--nodes", type=_sizes, default=[20, 1000], help="e.g. 20,1000")
    parser.add_argument("--leases", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--renters", type=int, default=4)
    parser.add_argument("--heartbeat-s", type=float, default=10.0)
    parser.add_argument("--nodes-per-process", type=int, default=250)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    args = parser.parse_args()
    if not 1 <= args.leases <= MAX_LEASES:
        parser.error(f"--leases between 1 and {MAX_LEASES}")
    if not 1 <= args.replicas <= MAX_REPLICAS:
        parser.error(f"--replicas between 1 and {MAX_REPLICAS}")
    if not 1 <= args.renters <= 32:
        parser.error("--renters between 1 and 32")
    if not 1 <= args.nodes_per_process <= 1000:
        parser.error("--nodes-per-process between 1 and 1000 (the fleet's bound)")
    results = []
    for size in args.nodes:
        with tempfile.TemporaryDirectory(prefix="cvm-bench-scale-") as temporary:
            results.append(
                run_size(
                    size,
                    args.leases,
                    args.replicas,
                    args.renters,
                    args.heartbeat_s,
                    args.nodes_per_process,
                    args.timeout,
                    Path(temporary),
                )
            )
    output: dict[str, Any] = {"benchmark": "scale", "sizes": results}
    if len(results) > 1:
        output["comparison"] = compare(results)
    print(json.dumps(output, indent=None if args.json else 2, default=str))


if __name__ == "__main__":
    main()
