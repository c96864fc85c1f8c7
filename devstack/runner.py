"""`EmbeddedStack`: the whole marketplace on one machine, as `cvm up` and `cvm demo` run it.

A local anvil chain with the contracts deployed, a Redis server, the backend (API, indexer,
matcher and verifier, trusting the simulated AMD root) and one node agent process per
simulated node, each registered and staked with its own capacity and price. Everything
lives under one data directory; the children run in process groups of their own and are
stopped in reverse order.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import httpx

from cvm.api_client import ApiClient, ApiError
from cvm.chain import Anvil, ChainClient, DeployConfig, Deployment, deploy
from cvm.config import Settings
from devstack.errors import StackError
from devstack.fleet import NodeProfile, default_profiles, provision_node
from devstack.holders import provision_holders, run_argv
from devstack.keys import StackKey, new_stack_key
from devstack.process import ManagedProcess, free_port, stop_all
from devstack.redis import start_redis
from devstack.state import HolderRecord, NodeRecord, StackState, held, running_state

# The launch measurement of the demo guest image: the simulated launcher runs whatever a
# lease expects, and the example dApp contract is deployed trusting exactly this one.
DEMO_MEASUREMENT = hashlib.sha384(b"cvm demo guest image v1").digest()
DEPLOYMENT_FILE = "deployment.json"


@dataclass(frozen=True)
class StackConfig:
    """How to run the embedded stack."""

    data_dir: Path
    nodes: int = 3
    profiles: Sequence[NodeProfile] | None = None
    api_port: int = 0  # 0: a free port
    # anvil mines each transaction at once; an empty block every tick keeps the chain's
    # clock (per-second payment, exhausted deposits) moving while nobody transacts.
    tick_s: float = 1.0
    # None: anvil mines each transaction at once (the ticks above keep its clock moving).
    # A whole number of seconds: once the stack is ready (contracts deployed, nodes staked,
    # all mined at once), anvil mines a block every `block_time_s` instead, holding what is
    # pending, as a real chain does; the ticks stop.
    block_time_s: int | None = None
    stake: int = 1_000 * 10**18
    node_gas_wei: int = 10**20
    heartbeat_s: float = 5.0
    reconcile_s: float = 2.0
    match_accept_timeout_s: int = 15
    # simulated (no VM) or qemu (a real guest per lease, booting the image the lease names;
    # the renter pushes it to the backend, whose store is <stack_dir>/images, and each node
    # downloads it into its own, checked against the id)
    launcher: str = "simulated"
    startup_timeout_s: float = 90.0
    max_agent_restarts: int = 5
    # Key holders (`python -m keyservice run`), registered and staked at start, each with
    # `holder_stake` test tokens (at least the KeyService's minimum holder stake).
    holders: int = 0
    holder_stake: int = 100 * 10**18
    # AttestationRegistry's challenge window (None: the deployment default, 15 minutes) and
    # the failover watch's heartbeat timeout (None: the backend's default, 60 s). Short values
    # for tests and benchmarks only: production keeps the defaults (README, settings).
    challenge_window_s: int | None = None
    liveness_timeout_s: int | None = None
    # Seconds between snapshots of a lease's declared disk (None: the agents' default).
    snapshot_interval_s: float | None = None

    @property
    def deployment_file(self) -> Path:
        return self.data_dir / DEPLOYMENT_FILE

    @property
    def stack_dir(self) -> Path:
        """Everything the stack owns and throws away at the next start (wallets are not here)."""
        return self.data_dir / "stack"


def _prepare_simulated_amd(directory: Path) -> None:
    """Create the simulated AMD roots once, so agents and the verifier only ever read them."""
    from cvm.attestation.product import Product
    from cvm.attestation.sim import SimulatedAmd

    simulated = SimulatedAmd(directory)
    for product in Product:
        simulated.ask(product)
        simulated.asvk(product)
    simulated.signing_key()


def _snp_roots(directory: Path) -> list[bytes]:
    """DER of the ARKs the stack's SnpVerifier pins: AMD's and the simulated AMD-SP's."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from cvm.attestation.sim import roots_trusting_simulated

    return [root.public_bytes(Encoding.DER) for root in roots_trusting_simulated(directory)]


class EmbeddedStack:
    """Start with `start()` (or `with`), keep alive with `supervise()`, end with `stop()`."""

    # Set while starting: the verifier's key and the deployer's client (owner of the token).
    verifier: StackKey
    admin: ChainClient

    def __init__(self, config: StackConfig, *, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = say or (lambda _message: None)
        self.anvil: Anvil | None = None
        self.deployment: Deployment | None = None
        self.redis: ManagedProcess | None = None
        self.backend: ManagedProcess | None = None
        self.agents: list[ManagedProcess] = []
        self.holders: list[ManagedProcess] = []
        self.state: StackState | None = None
        self._nodes: list[NodeRecord] = []
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def sim_amd_dir(self) -> Path:
        """Where the settings put the simulated AMD roots for this data directory, so that an
        operator's own `cvm node run` signs with the root this stack's verifier trusts."""
        return Settings(data_dir=self.config.data_dir.resolve()).sim_amd_dir

    # --- start ------------------------------------------------------------------------

    def start(self) -> StackState:
        """Bring everything up and return once nodes are matched-ready; StackError if not."""
        config = self.config
        data_dir = config.data_dir.resolve()
        if running_state(data_dir) is not None:
            raise StackError(f"a stack already runs in {data_dir}: `cvm down` first")
        stack_dir = data_dir / "stack"
        shutil.rmtree(stack_dir, ignore_errors=True)
        logs = stack_dir / "logs"
        logs.mkdir(parents=True)
        self.state = StackState(
            pid=os.getpid(),
            status="starting",
            data_dir=str(data_dir),
            deployment_file=str(data_dir / DEPLOYMENT_FILE),
            logs=str(logs),
            launcher=self.config.launcher,
        )
        self.state.save(data_dir)
        try:
            # RSA-4096 roots take seconds: made beside the deployment, before any reader starts.
            roots = threading.Thread(target=_prepare_simulated_amd, args=(self.sim_amd_dir,))
            roots.start()
            self._start_chain(data_dir, stack_dir, roots)
            self._start_services(data_dir, stack_dir, logs)
            self._start_nodes(stack_dir, logs)  # while the backend boots
            self._start_holders(stack_dir, logs)
            self._wait_for_backend()
            self._wait_for_nodes()
            if config.block_time_s is not None:
                self._start_block_time(config.block_time_s)
        except BaseException:
            self.stop()
            raise
        self.state.status = "ready"
        self.state.save(data_dir)
        return self.state

    def _start_chain(self, data_dir: Path, stack_dir: Path, roots: threading.Thread) -> None:
        self.say("starting anvil")
        self.anvil = Anvil().start()
        assert self.state is not None and self.anvil.pid is not None
        self.state.groups["anvil"] = self.anvil.pid
        self.state.rpc_url = self.anvil.rpc_url
        self.state.save(data_dir)
        keys = stack_dir / "keys"
        self.verifier = new_stack_key(keys, "verifier")
        # The on-chain report check pins the simulated ARKs beside AMD's, as the stack's
        # verifier trusts them: a dispute must reach the verdict the verifier reached.
        roots.join()
        self.say("deploying the contracts")
        deployer = self.anvil.dev_account(0)
        window = self.config.challenge_window_s
        config = DeployConfig(
            verifiers=[self.verifier.address],
            example_measurement=DEMO_MEASUREMENT,
            snp_ark_certificates=_snp_roots(self.sim_amd_dir),
        )
        if window is not None:
            config = replace(config, challenge_window_s=window)
        deployment = deploy(self.anvil.w3, deployer, config, rpc_url=self.anvil.rpc_url)
        self.admin = ChainClient(self.anvil.w3, deployment, deployer)
        assert self.admin.sender is not None
        # Ether for the verifier's confirmations.
        self.admin.sender.send({"to": self.verifier.address, "value": self.config.node_gas_wei})
        self.deployment = deployment
        self._ticker = threading.Thread(target=self._tick, name="cvm-chain-clock", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._ticker_stop.wait(self.config.tick_s):
            anvil = self.anvil
            if anvil is None or not anvil.running:
                return
            try:
                anvil.mine()
            except Exception:  # noqa: S112 - anvil is stopping; the supervisor reports it
                continue

    def _start_block_time(self, seconds: int) -> None:
        """Switch the chain from mining each transaction to a block every `seconds`."""
        assert self.anvil is not None
        self._ticker_stop.set()  # an extra block on a tick would shorten the block time
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self.anvil.set_interval_mining(seconds)

    def _child_env(self, stack_dir: Path, **extra: str) -> dict[str, str]:
        assert self.state is not None
        env = dict(os.environ)
        env.update(
            {
                "CVM_DATA_DIR": str(stack_dir),
                "CVM_DEPLOYMENT_FILE": self.state.deployment_file,
                "CVM_RPC_URL": self.state.rpc_url,
                "CVM_API_URL": self.state.api_url,
                "CVM_BROKER_URL": self.state.broker_url,
                "CVM_DATABASE_URL": self.state.database_url,
                "CVM_SIM_AMD_DIR": str(self.sim_amd_dir),
                # A local chain mined by this process does not reorganise.
                "CVM_INDEXER_CONFIRMATIONS": "0",
                "CVM_INDEXER_POLL_S": "0.2",
                "CVM_MATCH_ACCEPT_TIMEOUT_S": str(self.config.match_accept_timeout_s),
                "CVM_NODE_HEARTBEAT_INTERVAL_S": str(self.config.heartbeat_s),
                "CVM_NODE_RECONCILE_INTERVAL_S": str(self.config.reconcile_s),
                "CVM_HEARTBEAT_STALE_S": str(max(10, int(5 * self.config.heartbeat_s))),
                # Every local agent, the CLI and the browser share 127.0.0.1: no per-client
                # limit on one machine (the per-address limits stay).
                "CVM_RATE_LIMIT_PER_CLIENT": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def _start_services(self, data_dir: Path, stack_dir: Path, logs: Path) -> None:
        assert self.state is not None and self.deployment is not None
        self.say("starting redis")
        self.redis, self.state.broker_url = start_redis(stack_dir / "redis", logs / "redis.log")
        assert self.redis.pid is not None
        self.state.groups["redis"] = self.redis.pid
        port = self.config.api_port or free_port()
        self.state.api_url = f"http://127.0.0.1:{port}"
        self.state.database_url = f"sqlite:///{stack_dir / 'backend.db'}"
        self.deployment = replace(
            self.deployment,
            api_url=self.state.api_url,
            extra={
                "local": True,
                "broker_url": self.state.broker_url,
                "demo_measurement": "0x" + DEMO_MEASUREMENT.hex(),
            },
        )
        self.deployment.save(data_dir / DEPLOYMENT_FILE)
        self.state.save(data_dir)

        self.say("starting the backend (API, indexer, matcher, verifier)")
        env = self._child_env(
            stack_dir,
            CVM_API_PUBLIC_HOST=f"127.0.0.1:{port}",
            CVM_VERIFIER_KEYSTORE=str(self.verifier.keystore),
            CVM_VERIFIER_PASSWORD_FILE=str(self.verifier.password_file),
            **(
                {"CVM_LIVENESS_TIMEOUT_S": str(self.config.liveness_timeout_s)}
                if self.config.liveness_timeout_s is not None
                else {}
            ),
        )
        argv = [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port),
                "--trust-simulated-amd"]  # fmt: skip
        self.backend = ManagedProcess("backend", argv, logs / "backend.log", env).start()
        assert self.backend.pid is not None
        self.state.groups["backend"] = self.backend.pid
        self.state.save(data_dir)

    def _wait_for_backend(self) -> None:
        assert self.state is not None and self.backend is not None
        self.say("waiting for the backend API")
        deadline = time.monotonic() + self.config.startup_timeout_s
        while True:
            try:
                if httpx.get(f"{self.state.api_url}/v1/health", timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            self.backend.ensure_running()
            if time.monotonic() > deadline:
                raise StackError(f"the backend did not answer at {self.state.api_url}")
            time.sleep(0.2)

    def _start_nodes(self, stack_dir: Path, logs: Path) -> None:
        assert self.state is not None and self.anvil is not None and self.deployment is not None
        profiles = list(self.config.profiles or default_profiles(self.config.nodes))
        keys = stack_dir / "keys"
        self.admin = ChainClient(self.anvil.w3, self.deployment, self.admin.account)
        for index, profile in enumerate(profiles):
            name = f"node-{index}"
            self.say(f"registering and staking {name} ({profile.vcpu} vCPU)")
            operator: StackKey = new_stack_key(keys, f"operator-{index}")
            node_key = new_stack_key(keys, name)
            provision_node(
                self.admin,
                self.admin.with_account(operator.account),
                node_key.account,
                profile,
                self.config.stake,
                self.config.node_gas_wei,
            )
            env = self._child_env(
                stack_dir,
                CVM_NODE_KEYSTORE=str(node_key.keystore),
                CVM_NODE_PASSWORD_FILE=str(node_key.password_file),
                CVM_NODE_LAUNCHER=self.config.launcher,
                # Each node keeps its own images, downloaded from the backend by the id its
                # lease names and checked before boot (as on separate hosts): the renter's
                # `cvm rent --image` pushes the image to the backend first.
                CVM_NODE_IMAGE_DIR=str(stack_dir / "node-images" / name),
                # The simulated launcher produces the demo measurement; the qemu launcher
                # also produces the measurement of the image a lease names.
                CVM_NODE_MEASUREMENTS="0x" + DEMO_MEASUREMENT.hex(),
                **(
                    {"CVM_SNAPSHOT_INTERVAL_S": str(self.config.snapshot_interval_s)}
                    if self.config.snapshot_interval_s is not None
                    else {}
                ),
            )
            log = logs / f"{name}.log"
            agent = ManagedProcess(name, [sys.executable, "-m", "node_agent"], log, env).start()
            self.agents.append(agent)
            assert agent.pid is not None
            self.state.groups[name] = agent.pid
            self._nodes.append(
                NodeRecord(
                    name=name,
                    address=node_key.address,
                    operator=operator.address,
                    pid=agent.pid,
                    vcpu=profile.vcpu,
                    memory_mib=profile.memory_mib,
                    disk_gib=profile.disk_gib,
                    price_per_vcpu_second=profile.price_per_vcpu_second,
                    log=str(log),
                    node_keystore=str(node_key.keystore),
                    node_password_file=str(node_key.password_file),
                    operator_keystore=str(operator.keystore),
                    operator_password_file=str(operator.password_file),
                )
            )
        self.state.nodes = self._nodes
        self.state.save(self.config.data_dir.resolve())

    def _start_holders(self, stack_dir: Path, logs: Path) -> None:
        """Make, fund, register, stake and run the stack's key holders."""
        config = self.config
        if config.holders == 0:
            return
        assert self.state is not None and self.deployment is not None
        self.say(f"registering and staking {config.holders} key holder(s)")
        admin = self.admin

        def fund(address: str) -> None:
            from devstack.faucet import fund as faucet

            faucet(admin, address, config.holder_stake, config.node_gas_wei)

        env = self._child_env(stack_dir)
        setups = provision_holders(
            config.holders, stack_dir / "holders", env, fund, config.holder_stake
        )
        for setup in setups:
            log = logs / f"{setup.name}.log"
            argv = run_argv(setup, self.state.api_url, self.sim_amd_dir)
            holder = ManagedProcess(setup.name, argv, log, env).start()
            self.holders.append(holder)
            assert holder.pid is not None
            self.state.groups[setup.name] = holder.pid
            self.state.holders.append(
                HolderRecord(
                    name=setup.name,
                    address=setup.address,
                    pid=holder.pid,
                    log=str(log),
                    key_file=str(setup.key_file),
                    data_dir=str(setup.data_dir),
                )
            )
        self.state.save(config.data_dir.resolve())

    def _wait_for_nodes(self) -> None:
        """Until the backend has indexed every node and heard a signed heartbeat from each."""
        assert self.state is not None
        self.say("waiting for the node agents' first heartbeats")
        wanted = {node.address.lower() for node in self._nodes}
        deadline = time.monotonic() + self.config.startup_timeout_s
        with ApiClient(self.state.api_url) as api:
            while True:
                try:
                    ready = {
                        node.address.lower()
                        for node in api.list_nodes(limit=1000)
                        if node.active and node.last_heartbeat_at is not None
                    }
                except ApiError:
                    ready = set()
                if wanted <= ready:
                    return
                for agent in self.agents:
                    agent.ensure_running()
                assert self.backend is not None
                self.backend.ensure_running()
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(wanted - ready))
                    raise StackError(f"no heartbeat from {missing} in time (see the node logs)")
                time.sleep(0.2)

    # --- running ------------------------------------------------------------------------

    def supervise(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Until `stop` is set: restart node agents that die (as a service manager would),
        and raise StackError if anvil, Redis or the backend dies."""
        assert self.state is not None
        while not stop.wait(poll_s):
            if self.anvil is None or not self.anvil.running:
                raise StackError("anvil exited")
            for core in (self.redis, self.backend):
                if core is not None:
                    core.ensure_running()
            data_dir = self.config.data_dir.resolve()
            children = [*self.agents, *self.holders]
            for index, agent in enumerate(children):
                if agent.alive or stop.is_set():
                    continue
                if held(data_dir, agent.name):
                    continue  # killed on purpose (a failover journey): it stays dead
                if agent.restarts >= self.config.max_agent_restarts:
                    agent.ensure_running()
                agent.restarts += 1
                self.say(f"{agent.name} exited ({agent.returncode}); restarting it")
                agent.start()
                assert agent.pid is not None
                self.state.groups[agent.name] = agent.pid
                if index < len(self._nodes):
                    self._nodes[index].pid = agent.pid
                else:
                    self.state.holders[index - len(self.agents)].pid = agent.pid
                self.state.save(data_dir)

    # --- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this stack started, in reverse order; safe to call twice."""
        data_dir = self.config.data_dir.resolve()
        if self.state is not None:
            self.state.status = "stopping"
            self.state.save(data_dir)
        # Agents and backend at once: each may take seconds to finish what it is doing.
        stop_all(
            [*self.agents, *self.holders, *([self.backend] if self.backend is not None else [])]
        )
        if self.redis is not None:
            self.redis.stop()
        self._ticker_stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self.anvil is not None:
            self.anvil.stop()
        if self.state is not None:  # never another stack's files (e.g. `cvm up` run twice)
            # The chain is gone with anvil: its record must not outlive it.
            (data_dir / DEPLOYMENT_FILE).unlink(missing_ok=True)
            (data_dir / "stack.json").unlink(missing_ok=True)
            self.state = None

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
