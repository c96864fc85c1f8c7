"""The failover journey's bookkeeping: phases from the moments seen, the failing step named
in --json, and a node killed on purpose is held (not restarted) with its guest gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.failover_demo import PHASES, FailoverJourney, Marks, kill_node
from devstack.service_demo import StepRecord
from devstack.state import StackState, held


def test_each_phase_is_the_time_between_two_moments() -> None:
    marks = Marks(killed=100.0, failed_over=160.5, accepted=162.0, verified=250.0,
                  released=250.75, answered=261.0)  # fmt: skip
    phases = marks.phases()
    assert list(phases) == [*PHASES, "total"]
    assert phases == {"detection": 60.5, "matching": 1.5, "boot": 88.0, "key_release": 0.75,
                      "restore": 10.25, "total": 161.0}  # fmt: skip
    # A journey that stopped halfway reports the phases it saw only.
    assert Marks(killed=100.0, failed_over=130.0).phases() == {"detection": 30.0}


def test_the_json_names_the_failed_step() -> None:
    journey = FailoverJourney("examples/kv-store/workload.toml")
    journey.steps += [
        StepRecord(8, "the first node dies", True, 0.1),
        StepRecord(9, "the liveness path moves the lease", False, 300.0, "no"),
    ]
    answer = journey.as_dict()
    assert answer["ok"] is False
    assert answer["failed_step"] == "9. the liveness path moves the lease"


def test_killing_a_node_kills_its_group_and_holds_it(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)  # fmt: skip
    try:
        state = StackState(pid=os.getpid(), status="ready", data_dir=str(tmp_path),
                           deployment_file="", groups={"node-0": agent.pid})  # fmt: skip
        assert kill_node(state, "node-0") == [agent.pid]
        assert agent.wait(timeout=10) == -9
        assert held(tmp_path, "node-0") and not held(tmp_path, "node-1")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
