"""Child processes of the embedded stack: each in its own process group, logged to a file.

A process group per child lets `stop` reach whatever the child started in turn (a worker
pool, a shell), and lets `cvm down` stop a group by id even when the runner that started
it has died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from devstack.errors import StackError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


KILL_SETTLE_S = 5.0


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which run nothing, aside)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the kernel's answer, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after "(comm)": state, ppid, pgrp, ...
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def stop_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after `timeout` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class ManagedProcess:
    """One child: started in a new session (its pid is its group id), output to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self.restarts = 0

    def start(self) -> ManagedProcess:
        """Start (or restart) the child; its output is appended to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._stopped = False
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        """The child's pid, which is also its process group id."""
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's log, to explain a failure."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ensure_running(self) -> None:
        """StackError naming the child and quoting its log if it has exited."""
        if not self.alive:
            raise StackError(
                f"{self.name} exited with code {self.returncode}; its log "
                f"({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child's whole group (terminate, then kill); safe to call twice."""
        process = self._process
        if process is None or self._stopped:
            return  # a reaped pid may belong to someone else by now: never signal it again
        self._stopped = True
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        # Reap the leader first: an unreaped (zombie) leader keeps its group "alive".
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        # SIGKILL is delivered, not yet acted on: on a loaded host a grandchild can still be
        # running for a moment. Return once the group is gone (bounded: a process stuck in
        # the kernel is beyond any signal).
        settle = time.monotonic() + KILL_SETTLE_S
        while group_alive(process.pid) and time.monotonic() < settle:
            time.sleep(0.02)


def stop_all(processes: Sequence[ManagedProcess], timeout: float = 10.0) -> None:
    """Stop several children in parallel: SIGTERM every group, then SIGKILL what remains."""
    running = [p for p in processes if p.alive]
    for process in running:
        assert process.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:  # the dead ones too: their group may have members left
        process.stop(max(0.1, deadline - time.monotonic()))
