"""The stack's pid file: `<data_dir>/stack.json`, what `cvm up` runs and where it lives.

Written by the runner as it starts (status `starting`, then `ready`) and removed when it
has stopped; `cvm down` and every command that needs a running stack read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack.errors import StackError
from devstack.process import group_alive, stop_group

STATE_FILE = "stack.json"


@dataclass
class NodeRecord:
    """One simulated node of a running stack."""

    name: str
    address: str
    operator: str
    pid: int | None
    vcpu: int
    memory_mib: int
    disk_gib: int
    price_per_vcpu_second: int
    log: str
    # Where the node's keys are, so that tools (e.g. `cvm demo`) read them, never rebuild them.
    node_keystore: str = ""
    node_password_file: str = ""
    operator_keystore: str = ""
    operator_password_file: str = ""


@dataclass
class HolderRecord:
    """One key holder (`python -m keyservice run`) of a running stack."""

    name: str
    address: str
    pid: int | None
    log: str
    key_file: str
    data_dir: str


@dataclass
class StackState:
    """What a running stack is made of."""

    pid: int
    status: str
    data_dir: str
    deployment_file: str
    rpc_url: str = ""
    api_url: str = ""
    broker_url: str = ""
    database_url: str = ""
    logs: str = ""
    # name → process group id of every child, so `cvm down` can stop them without the runner.
    groups: dict[str, int] = field(default_factory=dict)
    nodes: list[NodeRecord] = field(default_factory=list)
    # The launcher of the stack's nodes (`simulated`, `qemu`, ...): `cvm demo` reuses only a
    # stack that runs the launcher it was asked for.
    launcher: str = ""
    # pid → its start time (/proc/PID/stat field 22), recorded with each pid: after a reboot
    # a leftover pid may name an unrelated process, which `cvm down` must never signal.
    starts: dict[str, int] = field(default_factory=dict)
    holders: list[HolderRecord] = field(default_factory=list)

    def owns(self, pid: int) -> bool:
        """False if `pid` now names another process than the one recorded (a reused pid)."""
        recorded = self.starts.get(str(pid))
        now = process_start(pid)
        return recorded is None or now is None or now == recorded

    def save(self, data_dir: Path) -> None:
        for pid in (self.pid, *self.groups.values()):
            start = process_start(pid) if str(pid) not in self.starts else None
            if start is not None:
                self.starts[str(pid)] = start
        path = data_dir / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackState:
        nodes = [NodeRecord(**node) for node in data.pop("nodes", [])]
        holders = [HolderRecord(**holder) for holder in data.pop("holders", [])]
        return cls(**data, nodes=nodes, holders=holders)


HELD_DIR = "held"


def hold(data_dir: Path, name: str) -> None:
    """Tell the stack's supervisor not to restart its child `name` (e.g. `node-0`) when it
    dies: a journey that kills a node on purpose keeps it dead (`cvm demo --failover`)."""
    directory = data_dir / "stack" / HELD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).touch()


def held(data_dir: Path, name: str) -> bool:
    """Whether `hold(data_dir, name)` was asked."""
    return (data_dir / "stack" / HELD_DIR / name).exists()


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22); None if unknown."""
    try:
        # Fields after the command name (which may hold spaces) start at field 3.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[22 - 3])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; an exited runner its parent has not reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: the kernel's answer stands
    return state != "Z"


def read_state(data_dir: Path) -> StackState | None:
    """The state of the stack in `data_dir`, or None if none is recorded."""
    path = data_dir / STATE_FILE
    try:
        return StackState.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise StackError(f"{path} is damaged ({exc}); remove it if no stack runs") from exc


def running_state(data_dir: Path) -> StackState | None:
    """The state of a stack whose runner is alive in `data_dir`, else None."""
    state = read_state(data_dir)
    if state is None or not pid_alive(state.pid) or not state.owns(state.pid):
        return None
    return state


def stop_stack(data_dir: Path, timeout: float = 60.0) -> StackState | None:
    """Stop the stack recorded in `data_dir`, leaving no process behind; its state or None.

    The runner is asked first (SIGTERM: it stops its children in order); any group still
    alive afterwards, e.g. because the runner was killed, is terminated, then killed.
    """
    state = read_state(data_dir)
    if state is None:
        return None
    # A pid whose start time differs is not ours (e.g. reused after a reboot): no signal to
    # it; the record is cleared below all the same.
    if pid_alive(state.pid) and state.owns(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGKILL)
    for pgid in state.groups.values():
        if group_alive(pgid) and state.owns(pgid):
            stop_group(pgid)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return state
