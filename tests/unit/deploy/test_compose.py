"""docker-compose.yml is valid Compose and production-shaped, checked without a Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cvm.config import Settings

ROOT = Path(__file__).resolve().parents[3]
LONG_RUNNING = {"anvil", "postgres", "redis", "backend", "proxy", "node-agent-1", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The configuration as docker-compose itself resolves it (Debian's docker-compose)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make system-packages` installs it"
    env = {**os.environ, "CVM_VERIFIER_ADDRESS": "0x" + "11" * 20}
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def test_every_role_of_the_stack_is_there(compose: dict[str, Any]) -> None:
    assert LONG_RUNNING | {"deploy"} <= set(compose["services"])


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = compose["services"][name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if "build" in service or image == "cvm:local":
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"


def test_keys_arrive_as_secrets_never_as_environment(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert "PRIVATE_KEY" not in key, f"{name} passes a key in {key}"
            if key.endswith(("KEYSTORE", "PASSWORD_FILE")):
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"


def test_missing_verifier_address_is_refused() -> None:
    binary = shutil.which("docker-compose")
    assert binary
    env = {k: v for k, v in os.environ.items() if k != "CVM_VERIFIER_ADDRESS"}
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "set the verifier key's address" in result.stderr


def test_backend_replicas_sit_behind_the_proxy(compose: dict[str, Any]) -> None:
    backend, proxy = compose["services"]["backend"], compose["services"]["proxy"]
    assert backend["deploy"]["replicas"] >= 2
    assert not backend.get("ports"), "replicas are reached through the proxy only"
    assert "postgresql" in backend["environment"]["CVM_DATABASE_URL"]  # SQLite is one process
    assert proxy["image"].startswith("nginx:") and proxy["ports"]
    [mount] = proxy["volumes"]
    source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
    config = (ROOT / "compose" / "proxy.conf").read_text()
    assert Path(source).name == "proxy.conf" and "server backend:8000 resolve" in config
    # The proxy overwrites X-Forwarded-For, so a client cannot pick the address it is
    # rate-limited by.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in config
    assert compose["services"]["node-agent-1"]["environment"]["CVM_API_URL"] == "http://proxy:8000"


def test_replicas_share_one_image_store_and_the_proxy_passes_uploads(
    compose: dict[str, Any],
) -> None:
    # A push served by one replica must be fetchable through any other.
    backend = compose["services"]["backend"]
    image_dir = backend["environment"]["CVM_IMAGE_DIR"]
    mounts = [m.split(":") for m in backend["volumes"] if m.split(":")[1] == image_dir]
    assert mounts, f"no volume at {image_dir}"
    [[source, _, *mode]] = mounts
    assert source in compose["volumes"] and mode != ["ro"]
    # The proxy's 1 MiB body limit would refuse every image: its upload route lifts it to just
    # above the backend's own limit, so the backend answers 413 with its message.
    config = (ROOT / "compose" / "proxy.conf").read_text()
    upload = config[config.index('location ~ "^/v1/images/') :]
    upload = upload[: upload.index("\n    }")]
    size = int(upload.split("client_max_body_size")[1].split("m;")[0])
    assert size * 2**20 > Settings().image_max_bytes
    assert "proxy_request_buffering off;" in upload


def test_no_production_service_trusts_the_simulated_amd_sp(compose: dict[str, Any]) -> None:
    # Only `cvm up` (a local demo) passes --trust-simulated-amd to the backend's verifier.
    for name, service in compose["services"].items():
        command = service.get("command") or []
        words = command if isinstance(command, list) else str(command).split()
        assert "--trust-simulated-amd" not in words, f"{name} trusts the simulated AMD-SP"
        assert "CVM_SIM_AMD_DIR" not in (service.get("environment") or {}), name
