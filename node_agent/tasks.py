"""The Celery side of the agent: the app, its thin idempotent tasks, and the scheduler.

The one task takes a lease id and calls one `NodeAgent` method; `acks_late` with
`task_reject_on_worker_lost` means a message whose worker died is delivered again, and
the agent's idempotence makes that harmless. Failures that may pass (RPC down, backend
down, a launcher hiccup) are retried with exponential backoff, a bounded number of times;
a lease that does not fit is refused at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from cvm.api_client import ApiError
from cvm.chain import ChainError
from cvm.dispatch import TASK_HANDLE_LEASE, TASK_SERVE_GUEST, TASK_SNAPSHOT_LEASE, node_queue
from node_agent.agent import NodeAgent
from node_agent.errors import LauncherError

log = logging.getLogger(__name__)

# Worth retrying: the chain, the backend or a guest may come back. OSError covers refused
# connections that web3's HTTP provider lets through unwrapped.
RETRYABLE: tuple[type[Exception], ...] = (ChainError, ApiError, LauncherError, OSError)


def make_celery(
    broker_url: str,
    node_address: str,
    *,
    visibility_timeout_s: int = 300,
) -> Celery:
    """A Celery app whose default (and only) queue is this node's `node.<address>`."""
    app = Celery(f"cvm-node-{node_address.lower()}", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=node_queue(node_address),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted Redis is waited for, not fatal
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        worker_hijack_root_logger=False,
    )
    return app


def task_options(max_retries: int) -> dict[str, Any]:
    """How the lease task is declared: bound, late acks, bounded retries with backoff."""
    return {
        "bind": True,
        "shared": False,  # this app's agent only, not every Celery app in the process
        "acks_late": True,
        "autoretry_for": RETRYABLE,
        "retry_backoff": 1,
        "retry_backoff_max": 30,
        "retry_jitter": True,
        "max_retries": max_retries,
    }


def register_tasks(app: Celery, agent: Callable[[], NodeAgent], max_retries: int) -> None:
    """Bind the lease task (by the name the backend sends) to `agent()`.

    Re-attestation and stopping are not tasks: the scheduler's reconciler passes do them
    in this process, so they go on while the broker is down.
    """

    @app.task(name=TASK_HANDLE_LEASE, **task_options(max_retries))
    def handle_lease(self: Task, lease_id: int) -> str:
        return str(agent().handle_lease(int(lease_id)))

    # Best effort, never retried: the next reconciler pass relays whatever a nudge missed.
    @app.task(name=TASK_SERVE_GUEST, bind=True, shared=False, acks_late=True)
    def serve_guest(self: Task, lease_id: int) -> bool:
        return agent().serve_guest(int(lease_id))

    # On demand, never retried: a failed snapshot is logged and the schedule takes the next.
    @app.task(name=TASK_SNAPSHOT_LEASE, bind=True, shared=False, acks_late=True)
    def snapshot_lease(self: Task, lease_id: int) -> bool:
        return agent().snapshot_lease(int(lease_id))


class Scheduler:
    """Runs the reconciler (at start, then every `reconcile_s`) in one thread and heartbeats
    (every `heartbeat_s`) in another, so that no pass, however slow, delays a heartbeat.

    The reconciler's passes are also what re-attests leases when due and stops those that
    closed or ran out; they need the chain, not the broker. Each lease's step of a pass runs
    on the agent's step pool, so a guest that stalls holds neither thread.

    It lives in the worker process, so it dies with it: no orphaned beat process after a
    SIGKILL. A failed pass is logged and tried again at the next tick.
    """

    def __init__(self, agent: NodeAgent, reconcile_s: float, heartbeat_s: float) -> None:
        self.agent = agent
        self.reconcile_s = reconcile_s
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._every,
                args=("reconcile", agent.reconcile, reconcile_s),
                name="cvm-node-scheduler",
                daemon=True,
            ),
            threading.Thread(
                target=self._every,
                args=("heartbeat", agent.heartbeat, heartbeat_s),
                name="cvm-node-heartbeat",
                daemon=True,
            ),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.agent.close()

    def _every(self, name: str, step: Callable[[], object], interval_s: float) -> None:
        """`step` at once, then `interval_s` after each start (or at once if it took longer)."""
        while not self._stop.is_set():
            started = time.monotonic()
            self._guard(name, step)
            self._stop.wait(max(0.05, started + interval_s - time.monotonic()))

    @staticmethod
    def _guard(name: str, step: Callable[[], object]) -> None:
        try:
            result = step()
            log.debug("%s: %s", name, result)
        except Exception:  # the scheduler must outlive any one failure
            log.exception("%s failed; will try again", name)
