"""`cvm chain deploy` against a real anvil: the record it writes and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from web3 import Web3

from cvm.chain import Anvil, ChainClient, Deployment
from cvm.cli import app
from cvm.wallet import import_keystore

runner = CliRunner()
PASSWORD = "correct horse battery staple"


@pytest.fixture
def deployer_keystore(tmp_path: Path, anvil: Anvil) -> tuple[Path, Path]:
    # A fresh funded key per test so deployments never race on one account's nonce.
    account = anvil.new_account()
    keystore = tmp_path / "deployer.json"
    import_keystore(keystore, account.key, PASSWORD, kdf="pbkdf2", iterations=2)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return keystore, password_file


def _deploy(anvil: Anvil, keys: tuple[Path, Path], out: Path, *extra: str) -> object:
    keystore, password_file = keys
    return runner.invoke(
        app,
        ["chain", "deploy", "--rpc", anvil.rpc_url, "--keystore", str(keystore),
         "--password-file", str(password_file), "--out", str(out), *extra],
    )  # fmt: skip


def test_deploy_writes_a_record_of_live_contracts(
    anvil: Anvil, deployer_keystore: tuple[Path, Path], tmp_path: Path
) -> None:
    verifier = anvil.new_account().address
    out = tmp_path / "out" / "deployment.json"
    result = _deploy(anvil, deployer_keystore, out, "--verifier", verifier, "--json")
    assert result.exit_code == 0, result.output
    record = Deployment.load(out)
    assert record.chain_id == anvil.w3.eth.chain_id
    assert json.loads(result.stdout) == json.loads(record.to_json())
    for address in record.contracts().values():
        assert len(anvil.w3.eth.get_code(Web3.to_checksum_address(address))) > 0
    reader = ChainClient(anvil.w3, record, anvil.new_account())
    assert reader.attestations.is_verifier(verifier) is True
    assert reader.attestations.quorum() == 1


def test_deploy_refuses_a_bad_verifier_address(
    anvil: Anvil, deployer_keystore: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "deployment.json"
    result = _deploy(anvil, deployer_keystore, out, "--verifier", "0x1234")
    assert result.exit_code == 2
    assert "not an address" in result.output
    assert not out.exists()


def test_deploy_refuses_a_wrong_password(
    anvil: Anvil, deployer_keystore: tuple[Path, Path], tmp_path: Path
) -> None:
    keystore, password_file = deployer_keystore
    password_file.write_text("wrong\n")
    out = tmp_path / "deployment.json"
    result = _deploy(anvil, (keystore, password_file), out)
    assert result.exit_code == 1
    assert "wrong password" in result.output
    assert not out.exists()


def test_deploy_reports_an_unreachable_rpc(
    deployer_keystore: tuple[Path, Path], tmp_path: Path
) -> None:
    keystore, password_file = deployer_keystore
    out = tmp_path / "deployment.json"
    result = runner.invoke(
        app,
        ["chain", "deploy", "--rpc", "http://127.0.0.1:9", "--keystore", str(keystore),
         "--password-file", str(password_file), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no JSON-RPC endpoint answers" in result.output
    assert not out.exists()
