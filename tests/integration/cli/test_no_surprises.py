"""The CLI against a real anvil: one line per failure, the documented exit codes, no
password for reading, and an operator who can claim what the chain owes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cvm.cli import app
from cvm.wallet import import_keystore
from tests.fixtures.chain import ChainSystem
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration

runner = CliRunner()


def cvm(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env, input=stdin)


def no_traceback(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


@pytest.fixture
def record(chain: ChainSystem, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    chain.deployment.save(path)
    return path


@pytest.fixture
def renter_wallet(chain: ChainSystem, tmp_path: Path) -> Path:
    keystore = tmp_path / "renter.json"
    import_keystore(keystore, chain.accounts.renter.key, "pw", kdf="pbkdf2", iterations=2)
    return keystore


def test_help_documents_the_exit_codes() -> None:
    result = cvm("--help")
    assert result.exit_code == 0
    assert "0 done; 1 refused or failed" in " ".join(result.output.split())
    assert {"up", "down", "demo", "node", "leases"} <= set(result.output.split())


@pytest.mark.parametrize("amount", ["inf", "-1", "NaN", "ten", "0"])
def test_bad_amounts_are_usage_errors(record: Path, renter_wallet: Path, amount: str) -> None:
    result = cvm("rent", "--deposit", amount, "--deployment", str(record),
                 "--wallet", str(renter_wallet), "--json")  # fmt: skip
    no_traceback(result)
    assert result.exit_code == 2
    assert "--deposit" in json.loads(result.stdout.splitlines()[0])["error"]


def test_a_broken_deployment_record_is_named(tmp_path: Path, renter_wallet: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    for path, cause in ((tmp_path, "is a directory"), (corrupt, "not a deployment record")):
        result = cvm("leases", "--deployment", str(path), "--wallet", str(renter_wallet))
        no_traceback(result)
        assert result.exit_code == 1 and cause in result.output


def test_a_corrupt_keystore_is_not_a_keystore(record: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.json"
    damaged.write_text("garbage")
    result = cvm("leases", "--deployment", str(record), "--wallet", str(damaged))
    no_traceback(result)
    assert result.exit_code == 1 and "not a Web3 Secret Storage keystore" in result.output


def test_a_record_pointing_at_other_contracts_fails(chain: ChainSystem, tmp_path: Path) -> None:
    swapped = tmp_path / "swapped.json"
    data = json.loads(chain.deployment.to_json())
    data["lease_market"] = data["token"]  # code there, but not a LeaseMarket
    swapped.write_text(json.dumps(data))
    address = chain.accounts.renter.address
    result = cvm("leases", "--deployment", str(swapped), "--address", address)
    no_traceback(result)
    assert result.exit_code == 1 and "does not answer as a LeaseMarket" in result.output


def test_reading_leases_needs_no_password(chain: ChainSystem, record: Path,
                                          renter_wallet: Path) -> None:  # fmt: skip
    lease_id = chain.attested_lease()
    by_wallet = cvm("leases", "--deployment", str(record), "--wallet", str(renter_wallet),
                    "--json", stdin="")  # fmt: skip
    assert by_wallet.exit_code == 0, by_wallet.output
    assert [lease["lease_id"] for lease in json.loads(by_wallet.stdout)] == [lease_id]
    shown = cvm("lease", "show", str(lease_id), "--deployment", str(record),
                "--address", chain.accounts.renter.address)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "password" not in shown.output.lower()
    assert "active" in shown.output and "UTC" in shown.output, "one status word, human times"
    listed = cvm("leases", "--deployment", str(record), "--address", chain.accounts.renter.address)
    assert "active" in listed.output and "verified" in listed.output


def test_an_open_lease_says_what_to_do(chain: ChainSystem, record: Path) -> None:
    lease_id = chain.open_lease()
    shown = cvm("lease", "show", str(lease_id), "--deployment", str(record),
                "--address", chain.accounts.renter.address)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert f"cvm lease close {lease_id}" in " ".join(shown.output.split())


def test_attestation_status_of_a_missing_lease_fails(record: Path) -> None:
    result = cvm("attestation", "status", "999", "--deployment", str(record), "--json")
    no_traceback(result)
    assert result.exit_code == 1
    assert "does not exist" in json.loads(result.stdout.splitlines()[0])["error"]


def test_a_dead_backend_during_rent_is_one_line(chain: ChainSystem, tmp_path: Path,
                                                renter_wallet: Path) -> None:  # fmt: skip
    chain.staked_node()
    data = json.loads(chain.deployment.to_json())
    data["api_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dead = tmp_path / "dead-backend.json"
    dead.write_text(json.dumps(data))
    password = tmp_path / "pw"
    password.write_text("pw\n")
    os.chmod(password, 0o600)
    result = cvm("rent", "--duration", "10m", "--measurement", "ab" * 48,
                 "--deployment", str(dead), "--wallet", str(renter_wallet),
                 "--password-file", str(password))  # fmt: skip
    no_traceback(result)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "backend" in result.output


def test_the_operator_claims_earnings(chain: ChainSystem, record: Path, tmp_path: Path) -> None:
    lease_id = chain.attested_lease()
    chain.advance(30)
    operator = tmp_path / "operator.json"
    import_keystore(operator, chain.accounts.operator.key, "op", kdf="pbkdf2", iterations=2)
    password = tmp_path / "op.pw"
    password.write_text("op\n")
    os.chmod(password, 0o600)
    node = chain.accounts.node_key.address
    owed = chain.client().leases.claimable(lease_id)
    assert owed > 0
    claimed = cvm("node", "claim", "--keystore", str(operator), "--password-file", str(password),
                  "--node-key", node, "--deployment", str(record), "--json")  # fmt: skip
    assert claimed.exit_code == 0, claimed.output
    result = json.loads(claimed.stdout)
    assert result["leases"] == {str(lease_id): result["claimed"]}
    assert result["claimed"] >= owed
    chain.advance(30)
    withdrawn = cvm("node", "withdraw", "--keystore", str(operator), "--password-file",
                    str(password), "--node-key", node, "--deployment", str(record),
                    "--earnings", "--json")  # fmt: skip
    assert withdrawn.exit_code == 0, withdrawn.output
    assert json.loads(withdrawn.stdout)["earnings_claimed"] > 0, "--earnings claims the leases"


def test_a_bad_setting_is_one_usage_line_naming_it(tmp_path: Path) -> None:
    # Before: "unexpected ValidationError ... (please report it)" and ~10 lines, naming
    # settings the user never set (default_factory_not_called).
    env = {"CVM_DATA_DIR": str(tmp_path), "CVM_HEARTBEAT_STALE_S": "abc"}
    result = cvm("wallet", "list", env=env)
    no_traceback(result)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "CVM_HEARTBEAT_STALE_S:" in lines[0], result.output
    assert "please report" not in result.output


def test_rent_refuses_a_local_release_without_the_flag_before_paying(
    chain: ChainSystem, tmp_path: Path, renter_wallet: Path
) -> None:
    """Before: the lease was created and paid, and only then the release refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    chain.staked_node()
    data = json.loads(chain.deployment.to_json())
    data["extra"] = {**data.get("extra", {}), "local": True}
    local = tmp_path / "local.json"
    local.write_text(json.dumps(data))
    ssh_key = tmp_path / "id.pub"
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    ssh_key.write_bytes(
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    password = tmp_path / "pw"
    password.write_text("pw\n")
    os.chmod(password, 0o600)
    balance = chain.renter.token.balance_of(chain.accounts.renter.address)
    result = cvm("rent", "--duration", "10m", "--image", "ab" * 32, "--measurement", "ab" * 48,
                 "--ssh-key", str(ssh_key), "--deployment", str(local),
                 "--wallet", str(renter_wallet), "--password-file", str(password))  # fmt: skip
    no_traceback(result)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--trust-simulated-amd" in lines[0], result.output
    assert chain.renter.token.balance_of(chain.accounts.renter.address) == balance
