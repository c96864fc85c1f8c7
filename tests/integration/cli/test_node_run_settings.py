"""`cvm node run` hands the agent the operator's settings, not the record's, when both name
a backend or broker: a value set in CVM_SETTINGS_FILE counts as set, like one in the environment."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cvm.cli import app
from cvm.wallet import import_keystore
from tests.fixtures.chain import ChainSystem

pytestmark = pytest.mark.integration


class _Execed(BaseException):  # not an Exception: the CLI's error edge lets it through
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("execve")
        self.env = env


def test_settings_file_urls_beat_the_records(
    chain: ChainSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = dataclasses.replace(
        chain.deployment,
        api_url="http://record-api.test",
        extra={"broker_url": "redis://record-broker.test/0"},
    )
    record_file = tmp_path / "deployment.json"
    record.save(record_file)
    keystore = tmp_path / "node.json"
    import_keystore(keystore, chain.accounts.node_key.key, "node-pass", kdf="pbkdf2", iterations=2)
    password = tmp_path / "password"
    password.write_text("node-pass\n")
    password.chmod(0o600)
    settings_file = tmp_path / "cvm.env"
    settings_file.write_text(
        "CVM_API_URL=http://operator-api.test\nCVM_BROKER_URL=redis://operator-broker.test/0\n"
    )
    for name in list(os.environ):
        if name.startswith("CVM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CVM_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("CVM_DATA_DIR", str(tmp_path / "data"))

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        raise _Execed(env)

    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(_Execed) as execed:
        CliRunner().invoke(app, [
            "node", "run", "--keystore", str(keystore), "--password-file", str(password),
            "--deployment", str(record_file), "--rpc", chain.anvil.rpc_url,
        ])  # fmt: skip
    env = execed.value.env
    assert env.get("CVM_API_URL", "http://operator-api.test") == "http://operator-api.test"
    assert env.get("CVM_BROKER_URL", "redis://operator-broker.test/0") == (
        "redis://operator-broker.test/0"
    )
