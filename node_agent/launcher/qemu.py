"""The `qemu` launcher: one real QEMU process per lease (no SEV), controlled over QMP.

For hosts without SEV-SNP: the VM really starts and stops (QEMU's bundled SeaBIOS is
enough of a guest), it outlives the agent (QEMU daemonizes), and the agent finds it again
by its directory under the run directory. Reports come from the simulated AMD-SP, with the
lease's expected measurement, because no hardware measures this guest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from node_agent.errors import LauncherError
from node_agent.launcher.base import GuestInfo, GuestReport, GuestSpec, GuestState, Launcher
from node_agent.launcher.qmp import qmp_session
from node_agent.launcher.signer import ReportSigner

_GUEST_DIR_PREFIX = "lease-"
_STOP_TIMEOUT_S = 10.0


def guest_name(lease_id: int) -> str:
    """The `-name` QEMU is given, so that a process can be told apart by its command line."""
    return f"cvm-lease-{lease_id}"


def process_alive(pid: int) -> bool:
    """True while `pid` runs and is not a zombie (a daemonized QEMU may be reaped late)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            # The state field follows the parenthesised command name.
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _process_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except FileNotFoundError:
        return []


class QemuLauncher(Launcher):
    """A real QEMU guest per lease, under `run_dir/lease-<id>/` (QMP socket, pid file, log)."""

    kind = "qemu"

    def __init__(
        self,
        run_dir: Path,
        signer: ReportSigner,
        *,
        qemu_binary: str = "qemu-system-x86_64",
        accel: str = "kvm:tcg",
    ) -> None:
        self.run_dir = run_dir
        self.signer = signer
        self.qemu_binary = qemu_binary
        self.accel = accel
        run_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths must fit in 108 bytes, which a deep data directory does not;
        # sockets go to a short private directory named after the run directory instead.
        digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.socket_dir = Path(tempfile.gettempdir()) / f"cvm-{digest}"
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)

    # --- paths -----------------------------------------------------------------------
    def guest_dir(self, lease_id: int) -> Path:
        return self.run_dir / f"{_GUEST_DIR_PREFIX}{lease_id}"

    def qmp_socket(self, lease_id: int) -> Path:
        return self.socket_dir / f"{lease_id}.qmp"

    def _pid(self, lease_id: int) -> int | None:
        try:
            pid = int((self.guest_dir(lease_id) / "qemu.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A recycled pid must not be mistaken for our guest.
        if guest_name(lease_id) not in _process_cmdline(pid):
            return None
        return pid if process_alive(pid) else None

    def command_line(self, spec: GuestSpec) -> list[str]:
        """The QEMU invocation for a lease's guest (daemonized, no display, QMP socket)."""
        directory = self.guest_dir(spec.lease_id)
        accel_args: list[str] = []
        for accel in self.accel.split(":"):
            accel_args += ["-accel", accel]
        return [
            self.qemu_binary,
            "-name",
            guest_name(spec.lease_id),
            "-machine",
            "pc",
            *accel_args,
            "-smp",
            str(spec.vcpu),
            "-m",
            f"{spec.memory_mib}M",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            f"file:{directory / 'serial.log'}",
            *self.control_args(spec.lease_id, directory),
        ]

    def control_args(self, lease_id: int, directory: Path) -> list[str]:
        """The QMP socket, pid file and daemon mode every guest of ours is started with."""
        return [
            "-qmp",
            f"unix:{self.qmp_socket(lease_id)},server=on,wait=off",
            "-pidfile",
            str(directory / "qemu.pid"),
            "-daemonize",
        ]

    # --- Launcher ----------------------------------------------------------------------
    def launch(self, spec: GuestSpec) -> GuestInfo:
        current = self.status(spec.lease_id)
        if current.state == GuestState.RUNNING:
            return current
        if shutil.which(self.qemu_binary) is None:
            raise LauncherError(f"{self.qemu_binary} is not installed")
        directory = self.guest_dir(spec.lease_id)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        (directory / "spec.json").write_text(
            json.dumps(
                {
                    "lease_id": spec.lease_id,
                    "vcpu": spec.vcpu,
                    "memory_mib": spec.memory_mib,
                    "disk_gib": spec.disk_gib,
                    "expected_measurement": spec.expected_measurement.hex(),
                }
            )
        )
        # -daemonize returns once QEMU is initialised, so the QMP socket exists afterwards.
        result = subprocess.run(
            self.command_line(spec), capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise LauncherError(
                f"QEMU for lease {spec.lease_id} failed ({result.returncode}): "
                f"{result.stderr.strip()[-500:]}"
            )
        info = self.status(spec.lease_id)
        if info.state != GuestState.RUNNING:
            raise LauncherError(f"QEMU for lease {spec.lease_id} started but is {info.state}")
        return info

    def status(self, lease_id: int) -> GuestInfo:
        directory = self.guest_dir(lease_id)
        if not directory.is_dir():
            return GuestInfo(lease_id, GuestState.MISSING)
        pid = self._pid(lease_id)
        if pid is None:
            return GuestInfo(lease_id, GuestState.STOPPED)
        with qmp_session(self.qmp_socket(lease_id)) as qmp:
            status = qmp.execute("query-status")
        running = bool(status.get("running")) and status.get("status") == "running"
        return GuestInfo(lease_id, GuestState.RUNNING if running else GuestState.STOPPED, str(pid))

    def stop(self, lease_id: int) -> None:
        directory = self.guest_dir(lease_id)
        pid = self._pid(lease_id)
        if pid is not None:
            try:
                with qmp_session(self.qmp_socket(lease_id)) as qmp:
                    qmp.execute("quit")
            except LauncherError:
                os.kill(pid, signal.SIGTERM)  # no monitor: QEMU also exits cleanly on TERM
            deadline = time.monotonic() + _STOP_TIMEOUT_S
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        for socket_path in self.socket_dir.glob(f"{lease_id}.*"):
            socket_path.unlink(missing_ok=True)

    def running(self) -> list[GuestInfo]:
        found: list[GuestInfo] = []
        for directory in sorted(self.run_dir.glob(f"{_GUEST_DIR_PREFIX}*")):
            suffix = directory.name.removeprefix(_GUEST_DIR_PREFIX)
            if not suffix.isdigit():
                continue
            lease_id = int(suffix)
            try:
                info = self.status(lease_id)
            except LauncherError:
                # The monitor does not answer but the process lives: count it as running,
                # so that nobody starts a second guest beside it.
                pid = self._pid(lease_id)
                if pid is None:
                    continue
                info = GuestInfo(lease_id, GuestState.RUNNING, str(pid))
            if info.state == GuestState.RUNNING:
                found.append(info)
        return found

    def get_report(self, lease_id: int, report_data: bytes) -> GuestReport:
        if self.status(lease_id).state != GuestState.RUNNING:
            raise LauncherError(f"lease {lease_id} has no running guest to attest")
        spec = json.loads((self.guest_dir(lease_id) / "spec.json").read_text())
        return self.signer.sign_report(bytes.fromhex(spec["expected_measurement"]), report_data)
