"""`cvm demo --workload FILE` around its journey: a failed command is one line naming the
command, the failed step is named in the JSON and the exit code, the port comes from the
image's manifest. The journey itself runs on a real guest in tests/e2e/test_service_journey.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.service_demo import (
    CommandFailed,
    RenterShell,
    ServiceJourney,
    StepRecord,
    make_secrets,
    volume_files,
    wait_until,
    workload_port,
)


def test_a_failing_command_is_one_line_naming_it(tmp_path: Path) -> None:
    shell = RenterShell(tmp_path, timeout_s=120)
    with pytest.raises(CommandFailed) as failed:
        shell.json("lease", "show", "1")  # no deployment record in this data directory
    message = str(failed.value)
    assert message.startswith("`cvm lease show 1 --json` exited 1: ")
    assert "Traceback" not in message and "deployment" in message


def test_the_failed_step_is_named() -> None:
    journey = ServiceJourney("examples/kv-store/workload.toml")
    journey.steps += [StepRecord(1, "build", True, 1.0), StepRecord(2, "rent", False, 2.0, "no")]
    outcome = journey.as_dict()
    assert outcome["ok"] is False and outcome["failed_step"] == "2. rent"
    journey.steps.pop()
    assert journey.as_dict()["ok"] is True and journey.as_dict()["failed_step"] is None


def test_the_port_is_the_workloads_first(tmp_path: Path) -> None:
    image = tmp_path / "ab"
    image.mkdir()
    manifest = {"format": "cvm.image.v2", "workload": {"ports": [{"name": "http", "port": 8080}]}}
    (image / "manifest.json").write_text(json.dumps(manifest))
    assert workload_port(tmp_path, "ab") == 8080
    (image / "manifest.json").write_text(json.dumps({"format": "cvm.image.v1"}))
    with pytest.raises(RuntimeError, match="declares no"):
        workload_port(tmp_path, "ab")


def test_volume_files_are_found_under_any_node(tmp_path: Path) -> None:
    volumes = tmp_path / "stack" / "node-a" / "volumes"
    volumes.mkdir(parents=True)
    (volumes / "lease-7.img").touch()
    (volumes / "lease-70.img").touch()
    assert volume_files(tmp_path, 7) == [volumes / "lease-7.img"]
    assert volume_files(tmp_path, 8) == []


def test_wait_until_names_what_did_not_happen() -> None:
    with pytest.raises(RuntimeError, match=r"the guest stopping did not happen within 0 s"):
        wait_until("the guest stopping", lambda: False, 0, 0.01)
    assert wait_until("x", lambda: [1], 1) == [1]


def test_a_missing_workload_file_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cvm", "demo", "--workload", str(tmp_path / "absent.toml"),
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "absent.toml: no such file" in done.stderr and "Traceback" not in done.stderr


def test_secret_values_stay_in_owner_only_files(tmp_path: Path) -> None:
    options, header = make_secrets(tmp_path, ["KV_TOKEN", "OTHER"])
    assert options == ["--secret", f"KV_TOKEN={tmp_path / 'secret-KV_TOKEN'}",
                       "--secret", f"OTHER={tmp_path / 'secret-OTHER'}"]  # fmt: skip
    token = (tmp_path / "secret-KV_TOKEN").read_text()
    assert len(token) == 32 and token not in " ".join(options)
    assert header is not None and header.read_text() == f"Authorization: Bearer {token}\n"
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert make_secrets(tmp_path / "none", []) == ([], None)
