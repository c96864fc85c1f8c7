"""The backend's nudge (`cvm.node.serve_guest`): the agent relays a lease's sealed secrets at
once, for a lease it holds only, and never beside another step of the same lease."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from node_agent.agent import NodeAgent
from node_agent.lease_steps import LeaseSteps
from node_agent.store import AgentStore, Resources


def _agent(tmp_path: Path, steps: LeaseSteps) -> tuple[Any, list[int]]:
    """The parts of a NodeAgent that `serve_guest` uses: its store, its step pool, and a
    relay step that records the leases it served."""
    served: list[int] = []
    store = AgentStore(tmp_path / "agent.sqlite")
    resources = Resources(vcpu=1, memory_mib=512, disk_gib=1)
    store.reserve(7, resources, b"\x01" * 48, 3600, Resources(8, 8192, 100))
    return SimpleNamespace(store=store, steps=steps, _serve_guest=served.append), served


def test_a_nudge_serves_a_lease_the_node_holds(tmp_path: Path) -> None:
    agent, served = _agent(tmp_path, LeaseSteps(workers=2))
    assert NodeAgent.serve_guest(cast(NodeAgent, agent), 7) is True
    assert served == [7]


def test_a_nudge_for_a_lease_the_node_does_not_hold_does_nothing(tmp_path: Path) -> None:
    agent, served = _agent(tmp_path, LeaseSteps(workers=2))
    assert NodeAgent.serve_guest(cast(NodeAgent, agent), 8) is False
    assert served == []


def test_a_nudge_never_runs_beside_a_step_of_the_same_lease(tmp_path: Path) -> None:
    steps = LeaseSteps(workers=2)
    agent, served = _agent(tmp_path, steps)
    inside, release = threading.Event(), threading.Event()

    def reconcile_step(_lease_id: int) -> None:
        inside.set()
        release.wait(30)

    # A reconciler pass holds lease 7 (its own relay follows its step, as `then`).
    pass_ = threading.Thread(target=steps.run, args=("lease", [7], reconcile_step))
    pass_.start()
    try:
        assert inside.wait(30)
        assert NodeAgent.serve_guest(cast(NodeAgent, agent), 7) is False
        assert served == []
    finally:
        release.set()
        pass_.join(30)
    assert NodeAgent.serve_guest(cast(NodeAgent, agent), 7) is True
    assert served == [7]
