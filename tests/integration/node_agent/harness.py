"""Real parts for the worker tests: the backend service, a restartable Redis, a cuttable RPC
link, and the node agent as its own process (`python -m node_agent`)."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from eth_account.signers.local import LocalAccount

from backend.service import BackendService
from cvm.chain import Deployment
from cvm.config import Settings
from cvm.wallet import import_keystore
from tests.fixtures.chain import MEASUREMENT
from tests.fixtures.processes import free_port, kill_process, serving, stop_process, wait_for
from tests.fixtures.services import _redis_server_binary

REPO = Path(__file__).resolve().parents[3]


class RedisServer:
    """A redis-server of our own on a fixed free port, with an append-only file so that
    queued messages survive a restart (as a production broker's would)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cvm-agent-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, timeout=30, what="redis-server")
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.kill()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


class RpcLink:
    """A TCP proxy in front of anvil that can be cut (refusing connections) and restored."""

    def __init__(self, target_url: str) -> None:
        host_port = target_url.split("//", 1)[1].rstrip("/")
        host, port = host_port.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a dead RPC endpoint would."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in selector.select(timeout=1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for conn in (a, b):
                conn.close()


class Backend:
    """The real backend (indexer, matcher, verifier, API) in this process, on a free port."""

    def __init__(
        self,
        tmp: Path,
        deployment: Deployment,
        w3: Any,
        broker_url: str,
        verifier: LocalAccount,
        trusted_roots: list[x509.Certificate],
    ) -> None:
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{tmp / 'backend.sqlite'}",
            broker_url=broker_url,
            indexer_poll_s=0.05,
            indexer_confirmations=0,
            match_accept_timeout_s=30,
        )
        self.service = BackendService(
            self.settings, deployment, w3, verifier_account=verifier, trusted_roots=trusted_roots
        )
        self.url = ""  # known once started
        self._serving = ExitStack()

    def start(self) -> None:
        self.service.start()
        self.url = self._serving.enter_context(serving(self.service.app))

    def close(self) -> None:
        self._serving.close()
        self.service.close()


class AgentProcess:
    """`python -m node_agent` for one node key, configured through the environment."""

    def __init__(
        self,
        tmp: Path,
        node_key: LocalAccount,
        deployment: Deployment,
        *,
        rpc_url: str,
        broker_url: str,
        api_url: str,
        sim_amd_dir: Path,
        launcher: str = "simulated",
    ) -> None:
        self.tmp = tmp
        self.address = node_key.address
        deployment_file = tmp / "deployment.json"
        deployment.save(deployment_file)
        keystore = tmp / "node-key.json"
        password_file = tmp / "node-key.password"
        if not keystore.exists():
            import_keystore(keystore, node_key.key, "agent-test", kdf="pbkdf2", iterations=2)
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write("agent-test\n")
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CVM_DEPLOYMENT_FILE": str(deployment_file),
            "CVM_RPC_URL": rpc_url,
            "CVM_BROKER_URL": broker_url,
            "CVM_API_URL": api_url,
            "CVM_DATA_DIR": str(tmp / "data"),
            "CVM_SIM_AMD_DIR": str(sim_amd_dir),
            "CVM_NODE_KEYSTORE": str(keystore),
            "CVM_NODE_PASSWORD_FILE": str(password_file),
            "CVM_NODE_LAUNCHER": launcher,
            "CVM_NODE_MEASUREMENTS": "0x" + MEASUREMENT.hex(),
            "CVM_NODE_RECONCILE_INTERVAL_S": "1",
            "CVM_NODE_HEARTBEAT_INTERVAL_S": "1.1",
            "CVM_NODE_TASK_VISIBILITY_TIMEOUT_S": "5",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data" / "node" / self.address.lower()

    def start(self, crash_at: str | None = None) -> None:
        env = dict(self.env)
        env.pop("CVM_NODE_CRASH_AT", None)
        if crash_at:
            env["CVM_NODE_CRASH_AT"] = crash_at
        self.runs += 1
        log = open(self.tmp / f"agent-{self.runs}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node_agent"],
            cwd=self.tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def log(self) -> str:
        return "\n".join(
            (self.tmp / f"agent-{run}.log").read_text(errors="replace")
            for run in range(1, self.runs + 1)
        )

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        """A graceful stop (SIGTERM: Celery's warm shutdown), SIGKILL if it hangs."""
        stop_process(self.process)
