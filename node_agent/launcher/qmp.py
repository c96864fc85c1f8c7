"""A short-lived QMP session over a guest's unix socket (qemu.qmp, QEMU's own client)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from node_agent.errors import LauncherError


class QmpSession:
    """One negotiated QMP connection; `execute` returns the command's `return` value."""

    def __init__(self, monitor: QEMUMonitorProtocol, socket_path: Path) -> None:
        self._monitor = monitor
        self._socket_path = socket_path

    def execute(self, command: str, **arguments: Any) -> Any:
        try:
            return self._monitor.cmd(command, **arguments)
        except (QMPError, OSError, EOFError) as exc:
            raise LauncherError(f"QMP {command} on {self._socket_path} failed: {exc}") from exc


@contextmanager
def qmp_session(socket_path: Path, timeout: float = 10.0) -> Iterator[QmpSession]:
    """Connect to QEMU's QMP socket, negotiate capabilities, and close afterwards."""
    monitor = QEMUMonitorProtocol(str(socket_path))
    try:
        monitor.connect(negotiate=True)
        monitor.settimeout(timeout)
    except (QMPError, OSError, EOFError) as exc:
        raise LauncherError(f"cannot open QMP at {socket_path}: {exc}") from exc
    try:
        yield QmpSession(monitor, socket_path)
    finally:
        try:
            monitor.close()
        except (QMPError, OSError, EOFError):
            pass  # QEMU closes its end first after `quit`: nothing is left to release
