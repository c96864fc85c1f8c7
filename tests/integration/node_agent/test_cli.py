"""`cvm node ...` against a real anvil: keys, register, stake, status, unstake, withdraw, run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cvm.cli import app
from cvm.wallet import import_keystore, read_keystore_info
from tests.fixtures.chain import CONFIG, TOKEN, ChainSystem
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.harness import REPO

pytestmark = pytest.mark.integration

runner = CliRunner()


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("operator-pass\n")
    return path


def _cvm(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_operator_commands(chain: ChainSystem, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    chain.deployment.save(deployment)
    where = ["--deployment", str(deployment), "--rpc", chain.anvil.rpc_url]
    password = _password_file(tmp_path)
    operator = tmp_path / "operator.json"
    import_keystore(
        operator, chain.accounts.operator.key, "operator-pass", kdf="pbkdf2", iterations=2
    )
    signer = ["--keystore", str(operator), "--password-file", str(password)]

    created = _cvm("node", "new-key", "--out", str(tmp_path / "node.json"),
                   "--password-file", str(password))  # fmt: skip
    node = str(created["address"])
    assert read_keystore_info(tmp_path / "node.json").address == node

    register = ["node", "register", *signer, *where, "--node-key", node, "--vcpu", "8",
                "--memory-mib", "16384", "--disk-gib", "100", "--price", "1000"]  # fmt: skip
    # The node key signs its consent: a keystore of another key is refused before any transaction.
    wrong = runner.invoke(
        app, [*register, "--node-keystore", str(operator)], input="operator-pass\n"
    )
    assert wrong.exit_code == 2 and "--node-keystore holds" in wrong.output
    assert _cvm("node", "status", *where, "--node-key", node)["registered"] is False
    # The node keystore password is prompted for (never on argv) when no file is given.
    registered = runner.invoke(
        app, [*register, "--node-keystore", str(tmp_path / "node.json"), "--json"],
        input="operator-pass\n",
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert "Node keystore password" in registered.output
    staked = _cvm("node", "stake", *signer, *where, "--node-key", node, "150")
    assert staked["stake"] == 150 * TOKEN
    status = _cvm("node", "status", *where, "--node-key", node)
    assert status["registered"] is True and status["vcpu"] == 8
    assert status["operator"] == chain.accounts.operator.address and status["leases"] == []

    unstaked = _cvm("node", "unstake", *signer, *where, "--node-key", node, "50")
    assert unstaked["unbonding"] == 50 * TOKEN
    early = _cvm("node", "withdraw", *signer, *where, "--node-key", node)
    assert early["stake_withdrawn"] == 0  # the unbonding delay has not passed
    chain.advance(CONFIG.unbonding_delay)
    withdrawn = _cvm("node", "withdraw", *signer, *where, "--node-key", node, "--earnings")
    assert withdrawn["stake_withdrawn"] == 50 * TOKEN
    assert _cvm("node", "status", *where, "--node-key", node)["stake"] == 100 * TOKEN


def test_wrong_password_and_bad_amount_are_refused(chain: ChainSystem, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    chain.deployment.save(deployment)
    operator = tmp_path / "operator.json"
    import_keystore(operator, chain.accounts.operator.key, "right", kdf="pbkdf2", iterations=2)
    node = chain.accounts.node_key.address
    result = runner.invoke(
        app,
        ["node", "stake", "--keystore", str(operator), "--node-key", node,
         "--deployment", str(deployment), "10"],
        input="wrong\n",
    )  # fmt: skip
    assert result.exit_code == 1 and "wrong password" in result.output
    result = runner.invoke(
        app,
        ["node", "stake", "--keystore", str(operator), "--node-key", node,
         "--deployment", str(deployment), "--rpc", chain.anvil.rpc_url, "0"],
        input="right\n",
    )  # fmt: skip
    assert result.exit_code != 0 and "amount" in result.output


def test_run_prompts_and_hands_the_password_over_a_pipe(
    chain: ChainSystem, tmp_path: Path, redis_url: str
) -> None:
    chain.staked_node()
    deployment = tmp_path / "deployment.json"
    chain.deployment.save(deployment)
    keystore = tmp_path / "node.json"
    import_keystore(keystore, chain.accounts.node_key.key, "node-pass", kdf="pbkdf2", iterations=2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CVM_")},
        "PYTHONPATH": str(REPO),
        "CVM_DEPLOYMENT_FILE": str(deployment),
        "CVM_RPC_URL": chain.anvil.rpc_url,
        "CVM_BROKER_URL": redis_url,
        "CVM_DATA_DIR": str(tmp_path / "data"),
        "CVM_API_URL": "http://127.0.0.1:9",  # no backend: heartbeats fail and are retried
    }
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cvm", "node", "run", "--keystore", str(keystore)],
            cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert process.stdin is not None
        process.stdin.write(b"node-pass\n")
        process.stdin.close()
        wait_for(lambda: "ready." in log.read_text(), what="the worker", timeout=90)
        text = log.read_text()
        assert f"node agent {chain.accounts.node_key.address}" in text
        assert "node-pass" not in text  # the password is never echoed or logged
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
