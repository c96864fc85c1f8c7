"""The in-guest supervisor of a workload image: starts the services /etc/cvm/workload.json
names once the guest is ready for them, restarts them by their policy, logs them.

Ready means every secret the workload declares is installed in /run/cvm/secrets (the agent
writes them from the renter's sealed message) and, if the workload has a disk, its mount
point is mounted (guest/volume.py opens and mounts it). A workload with neither starts at
boot. Each service gets the workload's env plus its declared secrets as env vars, runs as
its user in its workdir, and its output goes to the console one line at a time as
`[svc NAME] ...` (lines cut at MAX_LOG_LINE). Restarts back off exponentially
(BACKOFF_FIRST_S doubling up to BACKOFF_MAX_S; a run of STABLE_S or more resets it).

Standard library only: it runs inside the guest beside the agent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

WORKLOAD_FILE = Path("/etc/cvm/workload.json")
SECRETS_DIR = Path("/run/cvm/secrets")
MAX_WORKLOAD_BYTES = 1 << 20
MAX_LOG_LINE = 2048
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_S = 30.0
POLL_S = 0.5
RESTART_POLICIES = ("always", "on-failure", "never")
SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")  # as guest/agent.py
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class WorkloadError(Exception):
    """/etc/cvm/workload.json is missing a field or has a bad one."""


class Process(Protocol):
    """What the runner needs of a started service (subprocess.Popen is one)."""

    pid: int

    def poll(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    restart: str = "on-failure"
    user: str = "root"
    workdir: str = "/"


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    name: str
    services: tuple[ServiceSpec, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    disk_mount: str | None = None

    @classmethod
    def parse(cls, described: Any) -> WorkloadSpec:
        """The parts of workload.json the runner uses, checked (WorkloadError names the field)."""
        if not isinstance(described, dict):
            raise WorkloadError("workload.json is not an object")
        name = described.get("name")
        if not isinstance(name, str) or not name:
            raise WorkloadError("workload.json: name must be a non-empty string")
        services = []
        raw_services = described.get("services") or []
        if not isinstance(raw_services, list):
            raise WorkloadError("workload.json: services must be a list")
        for index, raw in enumerate(raw_services):
            services.append(_service(raw, index))
        if len({s.name for s in services}) != len(services):
            raise WorkloadError("workload.json: two services have the same name")
        env = described.get("env") or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "=" not in k and "\0" not in k + v and k
            for k, v in env.items()
        ):
            raise WorkloadError("workload.json: env must map names to strings")
        secrets = described.get("secrets") or []
        if not isinstance(secrets, list) or not all(
            isinstance(s, str) and SECRET_NAME.match(s) for s in secrets
        ):
            raise WorkloadError("workload.json: secrets must be a list of secret names")
        disk = described.get("disk")
        mount = None
        if disk is not None:
            mount = disk.get("mount") if isinstance(disk, dict) else None
            if not isinstance(mount, str) or not mount.startswith("/"):
                raise WorkloadError("workload.json: disk.mount must be an absolute path")
        return cls(name, tuple(services), dict(env), tuple(secrets), mount)

    @classmethod
    def load(cls, path: Path = WORKLOAD_FILE) -> WorkloadSpec | None:
        """The image's workload, None for an image without one."""
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_WORKLOAD_BYTES:
            raise WorkloadError(f"{path} is larger than {MAX_WORKLOAD_BYTES} bytes")
        try:
            described = json.loads(path.read_text())
        except ValueError as exc:
            raise WorkloadError(f"{path} is not JSON: {exc}") from None
        return cls.parse(described)


def _service(raw: Any, index: int) -> ServiceSpec:
    where = f"workload.json: services[{index}]"
    if not isinstance(raw, dict):
        raise WorkloadError(f"{where} is not an object")
    name = raw.get("name")
    if not isinstance(name, str) or not SERVICE_NAME.match(name):
        raise WorkloadError(f"{where}.name must match {SERVICE_NAME.pattern}")
    command = raw.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(a, str) and "\0" not in a for a in command)
    ):
        raise WorkloadError(f"{where}.command must be a non-empty list of strings")
    restart = raw.get("restart", "on-failure")
    if restart not in RESTART_POLICIES:
        raise WorkloadError(f"{where}.restart must be one of {', '.join(RESTART_POLICIES)}")
    user = raw.get("user", "root")
    workdir = raw.get("workdir", "/")
    if not isinstance(user, str) or not user or not isinstance(workdir, str):
        raise WorkloadError(f"{where}.user and .workdir must be strings")
    return ServiceSpec(name, tuple(command), restart, user, workdir)


@dataclass(slots=True)
class ServiceState:
    spec: ServiceSpec
    state: str = "waiting"  # waiting | running | backoff | exited | failed
    restarts: int = 0
    failures: int = 0  # consecutive short runs: the backoff's exponent
    process: Process | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None


Spawn = Callable[[ServiceSpec, dict[str, str]], Process]


class WorkloadRunner:
    """Supervises the workload's services; `poll()` is one pass, `start()` a thread of them.

    `spawn` starts one service (default: a real process with its output to the console),
    `clock` is monotonic seconds, `disk_mounted(path)` tells whether the disk is there."""

    def __init__(
        self,
        workload: WorkloadSpec,
        *,
        secrets_dir: Path = SECRETS_DIR,
        spawn: Spawn | None = None,
        clock: Callable[[], float] = time.monotonic,
        disk_mounted: Callable[[str], bool] = os.path.ismount,
        console: IO[str] | None = None,
    ) -> None:
        self.workload = workload
        self.secrets_dir = secrets_dir
        self.spawn = spawn or self._spawn_process
        self.clock = clock
        self.disk_mounted = disk_mounted
        self.console = console or sys.stdout
        self.services = {s.name: ServiceState(s) for s in workload.services}
        self.lock = threading.Lock()
        self.console_lock = threading.Lock()
        self._wake = threading.Event()

    # --- readiness ----------------------------------------------------------------------
    def missing(self) -> list[str]:
        """What the services still wait for: secret names, and `disk <mount>`."""
        missing = [n for n in self.workload.secrets if not (self.secrets_dir / n).is_file()]
        if self.workload.disk_mount and not self.disk_mounted(self.workload.disk_mount):
            missing.append(f"disk {self.workload.disk_mount}")
        return missing

    def environment(self) -> dict[str, str]:
        """The services' environment: PATH and HOME, the workload's env, then each declared
        secret (only those: a reserved secret such as the disk key never reaches them)."""
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        env.update(self.workload.env)
        for name in self.workload.secrets:
            value = (self.secrets_dir / name).read_bytes()
            text = value.decode("utf-8", "surrogateescape")
            if "\0" in text:
                self.log(name, "not passed as an env var (it holds a NUL byte): read the file")
                continue
            env[name] = text
        return env

    # --- supervision --------------------------------------------------------------------
    def poll(self) -> None:
        """One pass: start what is ready, reap what exited, restart by policy."""
        with self.lock:
            now = self.clock()
            ready: bool | None = None
            for service in self.services.values():
                if service.state == "running":
                    self._reap(service, now)
                if service.state in ("waiting", "backoff") and now >= service.next_start:
                    if ready is None:
                        ready = not self.missing()
                    if ready:
                        self._start(service, now)

    def _start(self, service: ServiceState, now: float) -> None:
        try:
            service.process = self.spawn(service.spec, self.environment())
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            self.log(service.spec.name, f"did not start: {exc}")
            service.process = None
            self._after_exit(service, now, 127)
            return
        service.state = "running"
        service.started_at = now
        self.log(service.spec.name, f"started (pid {service.process.pid})")

    def _reap(self, service: ServiceState, now: float) -> None:
        assert service.process is not None
        code = service.process.poll()
        if code is None:
            return
        service.process = None
        self.log(service.spec.name, f"exited with status {code}")
        self._after_exit(service, now, code)

    def _after_exit(self, service: ServiceState, now: float, code: int) -> None:
        service.last_exit = code
        policy = service.spec.restart
        if policy == "never" or (policy == "on-failure" and code == 0):
            service.state = "exited" if code == 0 else "failed"
            return
        if now - service.started_at >= STABLE_S and service.started_at:
            service.failures = 0
        service.failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (service.failures - 1))
        service.state = "backoff"
        service.next_start = now + delay
        service.restarts += 1
        self.log(service.spec.name, f"restarting in {delay:.0f} s ({policy})")

    def status(self) -> dict[str, dict[str, Any]]:
        """{name: {"state", "restarts"}} (+ "waiting_for" while waiting, "exit" once exited)."""
        with self.lock:
            missing = self.missing()
            answer: dict[str, dict[str, Any]] = {}
            for name, service in self.services.items():
                item: dict[str, Any] = {"state": service.state, "restarts": service.restarts}
                if service.state == "waiting" and missing:
                    item["waiting_for"] = missing
                if service.last_exit is not None:
                    item["exit"] = service.last_exit
                answer[name] = item
            return answer

    def wake(self) -> None:
        """Poll now (the agent installed secrets or mounted the disk)."""
        self._wake.set()

    def start(self) -> threading.Thread:
        """Supervise in a daemon thread for the guest's life."""

        def loop() -> None:
            while True:
                try:
                    self.poll()
                except Exception as exc:  # a bug must not end supervision
                    self.log("runner", f"supervision pass failed: {exc}")
                self._wake.wait(POLL_S)
                self._wake.clear()

        thread = threading.Thread(target=loop, name="workload-runner", daemon=True)
        thread.start()
        return thread

    # --- processes and the console -------------------------------------------------------
    def log(self, name: str, message: str) -> None:
        line = f"[svc {name}] {message}"[: MAX_LOG_LINE + 16]
        with self.console_lock:
            self.console.write(line + "\n")
            self.console.flush()

    def _spawn_process(self, spec: ServiceSpec, env: dict[str, str]) -> Process:
        user: str | None = None
        group: int | None = None
        if spec.user != "root":
            import pwd

            entry = pwd.getpwnam(spec.user)  # KeyError: no such user in the image
            user, group = spec.user, entry.pw_gid
            home = Path(entry.pw_dir)
            if entry.pw_dir.startswith("/home/") and not home.exists():
                # /home is a tmpfs in a v2 guest: the user's home is made at its first start.
                home.mkdir(mode=0o700, parents=True)
                os.chown(home, entry.pw_uid, entry.pw_gid)
            env = {**env, "HOME": entry.pw_dir, "USER": spec.user}
        process = subprocess.Popen(
            list(spec.command),
            cwd=spec.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            user=user,
            group=group,
            extra_groups=None if user is None else [],
            start_new_session=True,
            close_fds=True,
        )
        assert process.stdout is not None
        threading.Thread(target=self.pump, args=(spec.name, process.stdout), daemon=True).start()
        return process

    def pump(self, name: str, stream: IO[bytes]) -> None:
        """Copy a service's output to the console, line by line, each cut at MAX_LOG_LINE."""
        while True:
            line = stream.readline(MAX_LOG_LINE)
            if not line:
                break
            if not line.endswith(b"\n"):  # the rest of a long line is dropped
                while True:
                    rest = stream.readline(MAX_LOG_LINE)
                    if not rest or rest.endswith(b"\n"):
                        break
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.log(name, "".join(c if c.isprintable() or c == "\t" else "?" for c in text))
        stream.close()


def load_runner(path: Path = WORKLOAD_FILE, **options: Any) -> WorkloadRunner | None:
    """The runner of this image's workload, None without one (a plain guest image)."""
    workload = WorkloadSpec.load(path)
    return None if workload is None else WorkloadRunner(workload, **options)
