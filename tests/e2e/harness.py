"""Drive `cvm` exactly as a user would: `cvm up` in a subprocess, every other command too.

`UpProcess` starts `cvm up` on a private data directory and waits until its pid file says
ready; `Cli` runs commands against it with the data directory in the environment, as a
user's shell would have it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_READY_TIMEOUT_S = 240.0


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """`cvm ...` with CVM_DATA_DIR and CVM_DEPLOYMENT_FILE pointing at one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "CVM_DATA_DIR": str(data_dir),
            "CVM_DEPLOYMENT_FILE": str(data_dir / "deployment.json"),
            "COLUMNS": "200",
        }

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> Result:
        completed = subprocess.run(
            [sys.executable, "-m", "cvm", *args],
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        if check and result.code != 0:
            raise AssertionError(f"cvm {' '.join(args)} exited {result.code}:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return self.run(*args, "--json").json

    def spawn_up(self, *args: str) -> subprocess.Popen[str]:
        log = (self.data_dir / "up.log").open("a")
        return subprocess.Popen(
            [sys.executable, "-m", "cvm", "up", *args],
            env=self.env,
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "stack.json").read_text()))

    def wait_ready(self, up: subprocess.Popen[str]) -> dict[str, Any]:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if up.poll() is not None:
                raise AssertionError(f"cvm up exited {up.returncode}:\n{self.up_log()}")
            try:
                state = self.state()
                if state["status"] == "ready":
                    return state
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"cvm up not ready in {_READY_TIMEOUT_S}s:\n{self.up_log()}")

    def up_log(self) -> str:
        path = self.data_dir / "up.log"
        return path.read_text()[-4000:] if path.exists() else ""


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, process group) of every process, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        yield int(entry.name), state, int(ppid), int(pgrp)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (a zombie runs nothing)."""
    return any(pgrp == pgid and state != "Z" for _, state, _, pgrp in _processes())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) runs nothing.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, to check nothing outlives a stop."""
    children: dict[int, list[int]] = {}
    for child, _, parent, _ in _processes():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def stop_up(up: subprocess.Popen[str], sig: int = signal.SIGINT, timeout: float = 90) -> int:
    """Send `sig` to `cvm up` and wait for it; kill it if it hangs (then fail)."""
    if up.poll() is None:
        up.send_signal(sig)
    try:
        return up.wait(timeout)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()
        raise AssertionError(f"cvm up did not stop within {timeout}s") from None
