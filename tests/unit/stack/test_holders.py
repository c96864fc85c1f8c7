"""The stack's key holders, wired by name: `python -m keyservice init|register` per holder
(here a stand-in package answering as the real one does), each funded from the faucet
before it registers with its stake; `run` gets the backend, the key file and the simulated
roots, never a secret on its command line; the state records the holders; a child held on
purpose is not restarted."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from devstack.errors import StackError
from devstack.holders import HolderSetup, provision_holders, run_argv
from devstack.state import HolderRecord, StackState, held, hold, read_state

FAKE_CLI = """
import json, pathlib, sys, secrets
words = sys.argv[1:]
log = pathlib.Path(__file__).parent.parent / "calls.log"
with log.open("a") as handle:
    handle.write(json.dumps(words) + "\\n")
key_file = pathlib.Path(words[words.index("--key-file") + 1])
if words[0] == "init":
    address = "0x" + secrets.token_hex(20)
    key_file.write_text(json.dumps({"address": address}))
    key_file.chmod(0o600)
    print(json.dumps({"address": address, "x25519_public": "0x" + "00" * 32}))
elif words[0] == "register":
    if "FAIL_REGISTER" in __import__("os").environ:
        print("error: the KeyService refused the stake", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"address": json.loads(key_file.read_text())["address"], "stake": 1}))
"""


@pytest.fixture
def fake_keyservice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # `python -m` looks in the working directory first: not the repository's own package.
    monkeypatch.chdir(tmp_path)
    package = tmp_path / "fake" / "keyservice"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_CLI)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}


def test_each_holder_is_made_funded_then_registered_with_its_stake(
    tmp_path: Path, fake_keyservice: dict[str, str]
) -> None:
    funded: list[str] = []
    setups = provision_holders(3, tmp_path / "holders", fake_keyservice, funded.append, 10**20)
    assert [setup.name for setup in setups] == ["holder-0", "holder-1", "holder-2"]
    assert sorted(funded) == sorted(setup.address for setup in setups)
    for setup in setups:
        assert setup.key_file.stat().st_mode & 0o077 == 0
        assert json.loads(setup.key_file.read_text())["address"] == setup.address
    log = (tmp_path / "fake" / "calls.log").read_text()
    calls = [json.loads(line) for line in log.splitlines()]
    registers = [call for call in calls if call[0] == "register"]
    assert len(registers) == 3
    assert all(call[call.index("--stake") + 1] == f"{10**20}base" for call in registers)


def test_a_refused_registration_stops_the_start_with_its_words(
    tmp_path: Path, fake_keyservice: dict[str, str]
) -> None:
    env = {**fake_keyservice, "FAIL_REGISTER": "1"}
    with pytest.raises(StackError, match=r"holder-0: keyservice register failed .*refused"):
        provision_holders(1, tmp_path / "holders", env, lambda _: None, 1)
    with pytest.raises(StackError, match="0 to 16"):
        provision_holders(17, tmp_path / "more", env, lambda _: None, 1)
    assert provision_holders(0, tmp_path / "none", env, lambda _: None, 1) == []


def test_the_run_command_names_files_not_secrets(tmp_path: Path) -> None:
    setup = HolderSetup("holder-0", tmp_path / "holder-0", "0x" + "ab" * 20)
    argv = run_argv(setup, "http://127.0.0.1:8000", tmp_path / "sim-amd")
    assert argv[:4] == [sys.executable, "-m", "keyservice", "run"]
    assert argv[argv.index("--key-file") + 1] == str(setup.key_file)
    assert argv[argv.index("--backend") + 1] == "http://127.0.0.1:8000"
    assert "--trust-simulated" in argv
    assert argv[argv.index("--sim-amd-dir") + 1] == str(tmp_path / "sim-amd")


def test_the_state_keeps_its_holders_and_what_is_held(tmp_path: Path) -> None:
    state = StackState(pid=os.getpid(), status="ready", data_dir=str(tmp_path),
                       deployment_file=str(tmp_path / "deployment.json"))  # fmt: skip
    state.holders.append(HolderRecord("holder-0", "0x" + "ab" * 20, None, "log", "key", "data"))
    state.save(tmp_path)
    again = read_state(tmp_path)
    assert again is not None and again.holders == state.holders
    assert not held(tmp_path, "node-0")
    hold(tmp_path, "node-0")
    assert held(tmp_path, "node-0") and not held(tmp_path, "node-1")
