"""The worker's tasks: exactly the names the backend may send, each a thin call on the agent."""

from __future__ import annotations

from typing import Any, cast

import cvm.dispatch
from cvm.dispatch import TASK_HANDLE_LEASE, TASK_SERVE_GUEST, TASK_SNAPSHOT_LEASE
from node_agent.agent import NodeAgent
from node_agent.store import LeaseState
from node_agent.tasks import make_celery, register_tasks

NODE = "0x" + "ab" * 20


class _Agent:
    def __init__(self) -> None:
        self.handled: list[int] = []
        self.served: list[int] = []
        self.snapshotted: list[int] = []

    def handle_lease(self, lease_id: int) -> LeaseState:
        self.handled.append(lease_id)
        return LeaseState.ATTESTED

    def serve_guest(self, lease_id: int) -> bool:
        self.served.append(lease_id)
        return True

    def snapshot_lease(self, lease_id: int) -> bool:
        self.snapshotted.append(lease_id)
        return True


def _app(agent: _Agent) -> Any:
    app = make_celery("memory://", NODE)
    register_tasks(app, lambda: cast(NodeAgent, agent), max_retries=0)
    return app


def test_every_task_name_is_registered_and_no_other() -> None:
    shared = {
        value
        for name, value in vars(cvm.dispatch).items()
        if name.startswith("TASK_") and isinstance(value, str)
    }
    registered = {name for name in _app(_Agent()).tasks if name.startswith("cvm.node.")}
    assert shared == registered == {TASK_HANDLE_LEASE, TASK_SERVE_GUEST, TASK_SNAPSHOT_LEASE}


def test_snapshot_lease_passes_the_lease_id_to_the_agent() -> None:
    agent = _Agent()
    assert _app(agent).tasks[TASK_SNAPSHOT_LEASE].apply(args=["9"]).get() is True
    assert agent.snapshotted == [9]


def test_handle_lease_passes_the_lease_id_to_the_agent() -> None:
    agent = _Agent()
    result = _app(agent).tasks[TASK_HANDLE_LEASE].apply(args=["7"]).get()
    assert (result, agent.handled) == ("attested", [7])


def test_serve_guest_passes_the_lease_id_to_the_agent() -> None:
    agent = _Agent()
    assert _app(agent).tasks[TASK_SERVE_GUEST].apply(args=["9"]).get() is True
    assert (agent.served, agent.handled) == ([9], [])
