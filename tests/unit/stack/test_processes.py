"""Process groups of the stack: a stop reaches grandchildren, `cvm down` works runner-less."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from devstack.process import ManagedProcess, group_alive
from devstack.state import (
    StackState,
    pid_alive,
    process_start,
    read_state,
    running_state,
    stop_stack,
)

# A child that starts a grandchild in its group and ignores SIGTERM: only SIGKILL ends it.
_STUBBORN = "import signal,subprocess,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
_STUBBORN += "subprocess.Popen(['sleep','60']);time.sleep(60)"


def _child(tmp_path: Path, name: str, code: str = "import time; time.sleep(60)") -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code], tmp_path / f"{name}.log").start()


def test_stop_ends_the_whole_group_even_if_the_child_ignores_sigterm(tmp_path: Path) -> None:
    child = _child(tmp_path, "stubborn", _STUBBORN)
    time.sleep(0.5)  # let it start its grandchild
    assert child.pid is not None and group_alive(child.pid)
    child.stop(timeout=1.0)
    assert not child.alive
    assert not group_alive(child.pid)


def test_stop_is_quick_for_a_child_that_exits_on_sigterm(tmp_path: Path) -> None:
    child = _child(tmp_path, "polite")
    child.stop(timeout=30.0)
    assert not child.alive
    # It ended on SIGTERM: the reaped leader did not count as a live group that needed SIGKILL.
    assert child.returncode == -signal.SIGTERM


def test_ensure_running_quotes_the_log_of_a_dead_child(tmp_path: Path) -> None:
    child = _child(tmp_path, "crash", "import sys; print('boom: no config'); sys.exit(3)")
    deadline = time.monotonic() + 10
    while child.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        child.ensure_running()
    except Exception as exc:
        assert "crash exited with code 3" in str(exc)
        assert "boom: no config" in str(exc)
    else:
        raise AssertionError("a dead child passed ensure_running")


def test_stop_stack_without_its_runner_stops_every_recorded_group(tmp_path: Path) -> None:
    runner = _child(tmp_path, "runner")
    children = [_child(tmp_path, "anvil"), _child(tmp_path, "node-0", _STUBBORN)]
    state = StackState(
        pid=runner.pid or 0,
        status="ready",
        data_dir=str(tmp_path),
        deployment_file=str(tmp_path / "deployment.json"),
        groups={c.name: c.pid or 0 for c in children},
    )
    state.save(tmp_path)
    assert read_state(tmp_path) == state
    # The runner is gone (killed): `cvm down` must still stop what it had started.
    os.killpg(runner.pid or 0, signal.SIGKILL)
    runner.stop()
    stopped = stop_stack(tmp_path, timeout=2.0)
    assert stopped == state
    for child in children:
        child.stop(timeout=0.1)  # reaps our own zombies; the groups are already gone
        assert not group_alive(child.pid or 0)
    assert read_state(tmp_path) is None
    assert stop_stack(tmp_path) is None


def test_an_exited_runner_is_not_waited_for_even_before_it_is_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = _child(tmp_path, "runner", "pass")
    time.sleep(1.0)  # exited; not reaped by us yet, so the kernel still lists it (a zombie)
    assert runner.pid is not None
    assert not pid_alive(runner.pid)
    StackState(runner.pid, "ready", str(tmp_path), str(tmp_path / "d.json")).save(tmp_path)
    waits: list[float] = []
    monkeypatch.setattr("devstack.state.time.sleep", waits.append)
    stop_stack(tmp_path, timeout=30.0)
    assert waits == [], "stop_stack polled for a runner that had already exited"
    runner.stop()


def test_stop_stack_never_signals_a_reused_pid(tmp_path: Path) -> None:
    """After a reboot the recorded pids may name unrelated processes: their start time differs."""
    stranger = _child(tmp_path, "stranger")  # stands for an unrelated process that got the pid
    assert stranger.pid is not None
    state = StackState(stranger.pid, "ready", str(tmp_path), str(tmp_path / "d.json"),
                       groups={"anvil": stranger.pid})  # fmt: skip
    state.save(tmp_path)
    assert state.starts[str(stranger.pid)] == process_start(stranger.pid)
    state.starts[str(stranger.pid)] -= 1  # as recorded before the reboot
    state.save(tmp_path)
    try:
        assert running_state(tmp_path) is None
        stop_stack(tmp_path, timeout=2.0)
        assert stranger.alive, "cvm down signalled a process that is not the stack's"
        assert read_state(tmp_path) is None, "the stale record is cleared"
    finally:
        stranger.stop(timeout=1.0)
