"""The in-guest supervisor (guest/workload_runner.py) off the VM, with fake processes and a
fake clock: it waits for every declared secret and the disk, passes env and secrets, restarts
by policy with a bounded exponential backoff, and reports each service's state."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from guest import workload_runner as runner_module
from guest.agent import GuestAgent, GuestKeys
from guest.workload_runner import (
    BACKOFF_MAX_S,
    STABLE_S,
    ServiceSpec,
    WorkloadError,
    WorkloadRunner,
    WorkloadSpec,
)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Spawner:
    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, str], FakeProcess]] = []

    def __call__(self, spec: ServiceSpec, env: dict[str, str]) -> FakeProcess:
        process = FakeProcess(1000 + len(self.started))
        self.started.append((spec.name, env, process))
        return process

    def last(self, name: str) -> FakeProcess:
        return [p for n, _, p in self.started if n == name][-1]


def described(**extra: Any) -> dict[str, Any]:
    return {
        "format": "cvm.workload.v1",
        "name": "kv",
        "services": [{"name": "app", "command": ["python3", "/opt/app.py"], "restart": "always"}],
        "env": {"MODE": "prod"},
        **extra,
    }


def make(tmp_path: Path, mounted: set[str] | None = None, **extra: Any):
    spawner, clock, console = Spawner(), Clock(), io.StringIO()
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    runner = WorkloadRunner(
        WorkloadSpec.parse(described(**extra)),
        secrets_dir=secrets,
        spawn=spawner,
        clock=clock,
        disk_mounted=lambda path: path in (mounted or set()),
        console=console,
    )
    return runner, spawner, clock, console, secrets


def test_a_workload_without_secrets_or_disk_starts_at_once(tmp_path):
    runner, spawner, _, console, _ = make(tmp_path)
    runner.poll()
    assert [name for name, _, _ in spawner.started] == ["app"]
    assert runner.status() == {"app": {"state": "running", "restarts": 0}}
    assert "[svc app] started (pid 1000)" in console.getvalue()
    env = spawner.started[0][1]
    assert env["MODE"] == "prod" and env["PATH"].endswith("/bin")


def test_services_wait_for_every_declared_secret_and_get_them_as_env(tmp_path):
    runner, spawner, _, _, secrets = make(tmp_path, secrets=["API_TOKEN", "DB_PASS"])
    runner.poll()
    assert spawner.started == []
    status = runner.status()["app"]
    assert status["state"] == "waiting" and status["waiting_for"] == ["API_TOKEN", "DB_PASS"]
    (secrets / "API_TOKEN").write_bytes(b"t0ken")
    (secrets / "cvm.disk_key").write_bytes(b"k" * 32)  # reserved: never an env var
    runner.poll()
    assert spawner.started == []  # DB_PASS still missing
    (secrets / "DB_PASS").write_bytes(b"hunter2")
    runner.poll()
    (_, env, _) = spawner.started[0]
    assert env["API_TOKEN"] == "t0ken" and env["DB_PASS"] == "hunter2"
    assert "cvm.disk_key" not in env


def test_a_workload_with_a_disk_waits_for_its_mount(tmp_path):
    mounted: set[str] = set()
    runner, spawner, _, _, _ = make(tmp_path, mounted, disk={"mount": "/data"})
    runner.poll()
    assert spawner.started == [] and runner.status()["app"]["waiting_for"] == ["disk /data"]
    mounted.add("/data")
    runner.poll()
    assert len(spawner.started) == 1


def test_restarts_back_off_exponentially_up_to_the_bound_and_reset_after_a_stable_run(tmp_path):
    runner, spawner, clock, console, _ = make(tmp_path)
    runner.poll()
    delays = []
    for _ in range(9):
        spawner.last("app").code = 1
        runner.poll()
        assert runner.status()["app"]["state"] == "backoff"
        started = len(spawner.started)
        waited = 0.0
        while len(spawner.started) == started:
            clock.now += 0.5
            waited += 0.5
            runner.poll()
        delays.append(waited)
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == BACKOFF_MAX_S and delays[-1] == BACKOFF_MAX_S
    assert runner.status()["app"]["restarts"] == 9
    # A run longer than STABLE_S resets the backoff: the next restart is quick again.
    clock.now += STABLE_S + 1
    spawner.last("app").code = 0  # `always` restarts a clean exit too
    runner.poll()
    clock.now += 1.0
    runner.poll()
    assert runner.status()["app"] == {"state": "running", "restarts": 10, "exit": 0}
    assert "[svc app] exited with status 1" in console.getvalue()


@pytest.mark.parametrize(
    ("policy", "code", "state"),
    [("on-failure", 0, "exited"), ("never", 3, "failed"), ("never", 0, "exited")],
)
def test_policies_that_do_not_restart(tmp_path, policy, code, state):
    services = [{"name": "app", "command": ["true"], "restart": policy}]
    runner, spawner, clock, _, _ = make(tmp_path, services=services)
    runner.poll()
    spawner.last("app").code = code
    runner.poll()
    clock.now += 1000
    runner.poll()
    assert len(spawner.started) == 1
    assert runner.status()["app"] == {"state": state, "restarts": 0, "exit": code}


def test_on_failure_restarts_a_failure(tmp_path):
    services = [{"name": "app", "command": ["false"], "restart": "on-failure"}]
    runner, spawner, clock, _, _ = make(tmp_path, services=services)
    runner.poll()
    spawner.last("app").code = 2
    runner.poll()
    clock.now += 1.0
    runner.poll()
    assert len(spawner.started) == 2


def test_a_service_that_cannot_start_is_retried_with_backoff(tmp_path):
    runner, _, _, console, _ = make(tmp_path)

    def broken(spec: ServiceSpec, env: dict[str, str]) -> FakeProcess:
        raise FileNotFoundError("no such file: /opt/app.py")

    runner.spawn = broken
    runner.poll()
    assert runner.status()["app"]["state"] == "backoff"
    assert "did not start" in console.getvalue()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"services": [{"name": "App!", "command": ["x"]}]}, "services[0].name"),
        ({"services": [{"name": "a", "command": []}]}, "services[0].command"),
        ({"services": [{"name": "a", "command": ["x"], "restart": "sometimes"}]}, "restart"),
        ({"secrets": ["bad name"]}, "secrets"),
        ({"env": {"A": 1}}, "env"),
        ({"disk": {"mount": "data"}}, "disk.mount"),
        ({"services": [{"name": "a", "command": ["x"]}, {"name": "a", "command": ["y"]}]}, "same"),
    ],
)
def test_a_bad_workload_file_names_the_field(change, field):
    with pytest.raises(WorkloadError, match=field.replace("[", r"\[").replace("]", r"\]")):
        WorkloadSpec.parse(described(**change))


def test_load_reads_the_file_and_none_without_one(tmp_path):
    assert runner_module.load_runner(tmp_path / "missing.json") is None
    path = tmp_path / "workload.json"
    path.write_text(json.dumps(described()))
    loaded = runner_module.load_runner(path)
    assert loaded is not None and list(loaded.services) == ["app"]


def test_real_processes_log_to_the_console_with_a_prefix_and_bounded_lines(tmp_path):
    console = io.StringIO()
    long = "y" * (runner_module.MAX_LOG_LINE * 3)
    script = f"print('hello'); print('{long}'); print('after', flush=True)"
    workload = WorkloadSpec("w", (ServiceSpec("talk", (sys.executable, "-c", script), "never"),))
    runner = WorkloadRunner(workload, secrets_dir=tmp_path, console=console)
    runner.poll()
    process = runner.services["talk"].process
    assert process is not None
    process.wait()  # type: ignore[attr-defined]
    runner.poll()
    import time

    for _ in range(50):
        if "[svc talk] after" in console.getvalue():
            break
        time.sleep(0.05)
    lines = console.getvalue().splitlines()
    assert "[svc talk] hello" in lines and "[svc talk] after" in lines
    assert all(len(line) <= runner_module.MAX_LOG_LINE + 16 for line in lines)
    assert runner.status()["talk"]["state"] == "exited"


def test_the_agent_wakes_the_runner_after_secrets_and_reports_services(tmp_path):
    runner, _, _, _, _ = make(tmp_path)
    agent = GuestAgent(GuestKeys(), secrets_dir=tmp_path / "s", ssh_dir=tmp_path / "ssh",
                       tsm=tmp_path / "none", device=tmp_path / "none", runner=runner)  # fmt: skip
    runner.poll()
    calls = []
    agent.open_disk = lambda **_: calls.append("disk")  # type: ignore[method-assign]
    agent.after_install(["API_TOKEN"])
    assert calls == [] and runner._wake.is_set()  # no disk key: no volume to open
    runner._wake.clear()
    agent.after_install(["cvm.disk_key"])
    assert calls == ["disk"] and runner._wake.is_set()
    assert agent.services() == {"app": {"state": "running", "restarts": 0}}
    assert GuestAgent(GuestKeys()).services() == {}
