"""Many simulated nodes' agents in one process, for scale tests and benchmarks.

`python -m node_agent.fleet --keys-file KEYS [--nodes N]` runs one `NodeAgent` per node key
of KEYS (a JSON list of hex private keys, mode 0600, at most `MAX_NODES` per process) on the
simulated launcher, each node with its own chain identity, store, heartbeats (signed by
its own key) and Celery queue `node.<address>`. What one agent process runs per node
(a Celery worker, a scheduler with two threads, a step pool) is shared here: one Celery
worker consumes every node's queue and hands each message to the node whose queue it came
from; two bounded pools, one sending the heartbeats and one running the reconciler passes,
spread over the interval; the passes read the head and the nodes' accepts from one shared
scan. The nodes must be registered already (`devstack.fleet.provision_fleet`).

Settings come from the environment as for `python -m node_agent` (deployment, RPC, API,
broker, data directory, simulated AMD roots, measurements, intervals).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celery import Celery, Task
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient
from cvm.chain import ChainClient, Deployment, connect
from cvm.config import Settings, get_settings
from cvm.dispatch import TASK_HANDLE_LEASE, TASK_SERVE_GUEST, node_queue
from node_agent.agent import NodeAgent
from node_agent.errors import AgentError
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.reconciler import REORG_MARGIN_BLOCKS
from node_agent.runtime import node_capacity, sim_amd_dir, state_dir
from node_agent.store import AgentStore
from node_agent.tasks import make_celery, task_options

log = logging.getLogger(__name__)

# One process holds at most this many nodes (each costs a store, a chain client and, while
# it has leases, one step thread): run several fleet processes for more.
MAX_NODES = 1_000
# Threads shared by all nodes of the process for heartbeats, and as many for the passes.
DEFAULT_SCHEDULER_THREADS = 8
MAX_SCHEDULER_THREADS = 64
# Celery's thread pool: lease messages handled at once, whichever nodes they are for.
DEFAULT_TASK_THREADS = 8
MAX_TASK_THREADS = 64
# Largest keys file read (1,000 keys of 66 hex characters fit many times over).
MAX_KEYS_FILE_BYTES = 1 << 20


def read_keys_file(path: Path, limit: int = MAX_NODES) -> list[LocalAccount]:
    """The node keys in `path`: a JSON list of 0x-hex private keys, readable by its owner only."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise AgentError(f"cannot read the keys file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AgentError(f"the keys file {path} is readable by others: chmod 600 it")
    raw = path.read_bytes()[: MAX_KEYS_FILE_BYTES + 1]
    if len(raw) > MAX_KEYS_FILE_BYTES:
        raise AgentError(f"the keys file {path} is larger than {MAX_KEYS_FILE_BYTES} bytes")
    try:
        keys = json.loads(raw)
    except ValueError as exc:
        raise AgentError(f"the keys file {path} is not JSON") from exc
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise AgentError(f"the keys file {path} must hold a JSON list of hex private keys")
    if not 1 <= len(keys) <= limit:
        raise AgentError(f"the keys file holds {len(keys)} keys: give 1 to {limit}")
    accounts = []
    for index, key in enumerate(keys):
        try:
            accounts.append(Account.from_key(key))
        except (ValueError, TypeError):
            raise AgentError(f"key {index} of the keys file is not a private key") from None
    if len({account.address for account in accounts}) != len(accounts):
        raise AgentError("the keys file names a key twice")
    return accounts


# A node's pass reads the head and its accepts from the fleet's shared scan, at most this
# old: one chain read per interval for the whole fleet instead of two per node and pass.
SCAN_MAX_AGE_S = 1.0
# Accepts kept in the shared scan (blocks behind the head); older asks read the chain.
SCAN_KEEP_BLOCKS = 100_000
# A node's checkpoint is written once it moved this many blocks, not after every pass
# (1,000 stores written every 15 s on one disk; anvil mines a block per transaction, so
# under load a pass is hundreds of blocks); the pass re-reads them from the shared scan.
FLEET_CHECKPOINT_STRIDE_BLOCKS = 4_096


class SharedAcceptScan:
    """The head and every node's `LeaseAccepted` events, read once for all the fleet's
    nodes (`node_agent.reconciler.AcceptScan`) and at most `max_age_s` old.

    Each refresh re-reads the last `margin_blocks` blocks it had (as each node's own scan
    re-reads its reorg margin), so an accept a shallow reorg moved is found again; an ask
    from before what it holds (a node far behind) reads the chain for that node alone."""

    def __init__(
        self,
        chain: ChainClient,
        *,
        max_age_s: float = SCAN_MAX_AGE_S,
        margin_blocks: int = REORG_MARGIN_BLOCKS,
        keep_blocks: int = SCAN_KEEP_BLOCKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self.max_age_s = max_age_s
        self.margin_blocks = margin_blocks
        self.keep_blocks = keep_blocks
        self.clock = clock
        self._lock = threading.Lock()
        self._head = -1
        self._read_at = float("-inf")
        self._from = chain.deployment.start_block  # first block held
        self._to = self._from - 1  # last block held
        self._accepts: list[tuple[int, str, int]] = []  # (block, node key, lease id)
        self._by_node: dict[str, list[tuple[int, int]]] = {}  # node key: (block, lease id)

    def head(self) -> int:
        with self._lock:
            if self.clock() - self._read_at >= self.max_age_s:
                self._refresh()
            return self._head

    def accepted_by(self, node_key: str, from_block: int, head: int) -> list[int]:
        key = node_key.lower()
        with self._lock:
            if head > self._to:
                self._refresh()
            if from_block >= self._from and head <= self._to:
                held = self._by_node.get(key, [])
                return sorted({lease for block, lease in held if block >= from_block})
        return self.chain.leases.leases_accepted_by(node_key, from_block)

    def _refresh(self) -> None:
        """Read the head, then the accepts up to it (lock held)."""
        head = int(self.chain.w3.eth.block_number)
        read_at = self.clock()
        start = max(self._from, self._to + 1 - self.margin_blocks)
        if head >= start:
            fresh = self.chain.leases.accepts(start, head)
            kept = [accept for accept in self._accepts if accept[0] < start]
            self._accepts = kept + fresh
            self._to = head
            floor = head - self.keep_blocks
            if floor > self._from:
                self._accepts = [accept for accept in self._accepts if accept[0] >= floor]
                self._from = floor
            self._by_node = {}
            for block, node, lease in self._accepts:
                self._by_node.setdefault(node, []).append((block, lease))
        self._head = max(self._head, head)
        self._read_at = read_at


def _bounded(name: str, value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise AgentError(f"{name} must be between 1 and {maximum}, not {value}")
    return value


class Fleet:
    """The agents of many simulated nodes, their queues and one shared schedule."""

    def __init__(
        self,
        agents: Sequence[NodeAgent],
        *,
        heartbeat_s: float,
        reconcile_s: float,
        scheduler_threads: int = DEFAULT_SCHEDULER_THREADS,
    ) -> None:
        _bounded("the number of nodes", len(agents), MAX_NODES)
        _bounded("scheduler threads", scheduler_threads, MAX_SCHEDULER_THREADS)
        self.agents = list(agents)
        self.by_queue = {node_queue(agent.address): agent for agent in self.agents}
        if len(self.by_queue) != len(self.agents):
            raise AgentError("two agents of the fleet share a node key")
        self.heartbeat_s = heartbeat_s
        self.reconcile_s = reconcile_s
        # Heartbeats and passes on pools of their own, as one agent runs them on two threads:
        # a heartbeat never waits behind other nodes' passes (nor a pass behind heartbeats).
        self._pools = {
            name: ThreadPoolExecutor(scheduler_threads, thread_name_prefix=f"cvm-fleet-{name}")
            for name in ("heartbeat", "reconcile")
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # A node's heartbeat or pass still running is skipped, never queued twice.
        self._busy: set[tuple[str, str]] = set()
        self._busy_lock = threading.Lock()

    @property
    def queues(self) -> list[str]:
        return list(self.by_queue)

    def agent_for_queue(self, queue: str) -> NodeAgent:
        """The agent consuming `queue`; AgentError if no node of this fleet does."""
        agent = self.by_queue.get(queue)
        if agent is None:
            raise AgentError(f"no node of this fleet consumes {queue!r}")
        return agent

    def heartbeat_all(self) -> int:
        """Every node's heartbeat once, on the pool; how many were sent without error."""
        futures = [self._pools["heartbeat"].submit(agent.heartbeat) for agent in self.agents]
        return sum(1 for future in futures if future.exception() is None)

    def start(self) -> None:
        """Start the heartbeats and reconciler passes, each node's spread over the interval."""
        for name, interval in (("heartbeat", self.heartbeat_s), ("reconcile", self.reconcile_s)):
            thread = threading.Thread(
                target=self._round_robin, args=(name, interval), name=f"cvm-fleet-{name}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the schedule, wait for what runs, and close every agent's step pool."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for agent in self.agents:
            agent.close()

    def _round_robin(self, name: str, interval_s: float) -> None:
        """Each node's `name` step once per `interval_s`, the nodes evenly spaced in it."""
        gap = interval_s / len(self.agents)
        while not self._stop.is_set():
            started = time.monotonic()
            for index, agent in enumerate(self.agents):
                if self._stop.wait(max(0.0, started + index * gap - time.monotonic())):
                    return
                step: Callable[[], object] = (
                    agent.heartbeat if name == "heartbeat" else agent.reconcile
                )
                self._submit(name, agent.address, step)
            self._stop.wait(max(0.0, started + interval_s - time.monotonic()))

    def _submit(self, name: str, address: str, step: Callable[[], object]) -> None:
        key = (name, address)
        with self._busy_lock:
            if key in self._busy:
                return
            self._busy.add(key)
        try:
            future = self._pools[name].submit(self._guard, name, address, step)
        except RuntimeError:  # the pool is shut down: stopping
            with self._busy_lock:
                self._busy.discard(key)
            return
        future.add_done_callback(lambda _f: self._release(key))

    def _release(self, key: tuple[str, str]) -> None:
        with self._busy_lock:
            self._busy.discard(key)

    @staticmethod
    def _guard(name: str, address: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # one node's failure must not stop the others' schedule
            log.exception("%s of node %s failed; will try again", name, address)


def _queue_of(task: Task) -> str:
    """The queue the message being handled came from (its routing key on Redis)."""
    delivery: dict[str, Any] = task.request.delivery_info or {}
    return str(delivery.get("routing_key") or "")


def register_fleet_tasks(app: Celery, fleet: Fleet, max_retries: int) -> None:
    """The node tasks, each handled by the node whose queue the message came from."""

    @app.task(name=TASK_HANDLE_LEASE, **task_options(max_retries))
    def handle_lease(self: Task, lease_id: int) -> str:
        return str(fleet.agent_for_queue(_queue_of(self)).handle_lease(int(lease_id)))

    # Best effort, never retried (as `register_tasks`): the next pass relays what it missed.
    @app.task(name=TASK_SERVE_GUEST, bind=True, shared=False, acks_late=True)
    def serve_guest(self: Task, lease_id: int) -> bool:
        return fleet.agent_for_queue(_queue_of(self)).serve_guest(int(lease_id))


def build_fleet_agents(
    settings: Settings, accounts: Sequence[LocalAccount], api: ApiClient
) -> list[NodeAgent]:
    """One agent per key on the simulated launcher, sharing one chain connection, one backend
    client and one simulated AMD-SP (as many VMs share one host's chip)."""
    if settings.node_launcher != "simulated":
        raise AgentError("the fleet runs simulated nodes only (CVM_NODE_LAUNCHER=simulated)")
    _bounded("the number of nodes", len(accounts), MAX_NODES)
    deployment = Deployment.load(settings.deployment_file)
    chain = connect(deployment, settings=settings, check=False)
    signer = SimulatedAmdSp(sim_amd_dir(settings))
    scan = SharedAcceptScan(chain)
    agents = []
    for account in accounts:
        node_chain: ChainClient = chain.with_account(account)
        directory = state_dir(settings, account.address)
        agent = NodeAgent(
            node_chain,
            SimulatedLauncher(directory / "guests", signer),
            AgentStore(directory / "agent.sqlite"),
            node_capacity(settings, node_chain, account.address),
            directory / "locks",
            api=api,
            reattest_margin_s=settings.node_reattest_margin_s,
            measurements=settings.node_measurement_list,
            step_workers=1,
        )
        agent.reconciler.scan = scan
        agent.reconciler.checkpoint_stride_blocks = FLEET_CHECKPOINT_STRIDE_BLOCKS
        agents.append(agent)
    return agents


def run_fleet(
    settings: Settings,
    accounts: Sequence[LocalAccount],
    *,
    task_threads: int = DEFAULT_TASK_THREADS,
    scheduler_threads: int = DEFAULT_SCHEDULER_THREADS,
) -> None:
    """Consume every node's queue until stopped (SIGTERM/SIGINT), with the shared schedule."""
    _bounded("task threads", task_threads, MAX_TASK_THREADS)
    api = ApiClient(settings.api_url)
    fleet = Fleet(
        build_fleet_agents(settings, accounts, api),
        heartbeat_s=settings.node_heartbeat_interval_s,
        reconcile_s=settings.node_reconcile_interval_s,
        scheduler_threads=scheduler_threads,
    )
    first = accounts[0].address
    app = make_celery(
        settings.broker_url, first, visibility_timeout_s=settings.node_task_visibility_timeout_s
    )
    register_fleet_tasks(app, fleet, settings.node_task_max_retries)
    fleet.start()
    log.info("fleet of %d nodes consuming their queues", len(fleet.agents))
    try:
        worker = app.Worker(
            queues=fleet.queues,
            pool="threads",
            concurrency=task_threads,
            hostname=f"cvm-fleet-{first.lower()}-{os.getpid()}@%h",
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            loglevel="INFO",
        )
        worker.start()
    finally:
        fleet.stop()
        api.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node_agent.fleet", description=__doc__)
    parser.add_argument("--keys-file", type=Path, required=True)
    parser.add_argument("--nodes", type=int, help="use the first N keys (default: all)")
    parser.add_argument("--task-threads", type=int, default=DEFAULT_TASK_THREADS)
    parser.add_argument("--scheduler-threads", type=int, default=DEFAULT_SCHEDULER_THREADS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # A line per heartbeat request would be a thousand lines per interval: failures only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        accounts = read_keys_file(args.keys_file)
        if args.nodes is not None:
            accounts = accounts[: _bounded("--nodes", args.nodes, len(accounts))]
        run_fleet(
            get_settings(),
            accounts,
            task_threads=args.task_threads,
            scheduler_threads=args.scheduler_threads,
        )
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "MAX_NODES",
    "Fleet",
    "SharedAcceptScan",
    "build_fleet_agents",
    "read_keys_file",
    "register_fleet_tasks",
    "run_fleet",
]
