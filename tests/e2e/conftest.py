"""One `cvm up` stack per test module, started and stopped as a user would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvm.chain import ChainClient, Deployment, connect
from cvm.wallet import load_account, read_password_file
from tests.e2e.harness import Cli, descendants, group_alive, pid_alive, stop_up

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    cli: Cli
    up: subprocess.Popen[str]
    state: dict

    @property
    def data_dir(self) -> Path:
        return self.cli.data_dir


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`cvm up --nodes 3`; unless a test ran `cvm down`, Ctrl-C at the end, leaving nothing."""
    cli = Cli(tmp_path_factory.mktemp("cvm-e2e"))
    up = cli.spawn_up("--nodes", "3")
    try:
        state = cli.wait_ready(up)
    except BaseException:
        stop_up(up)
        raise
    running = Stack(cli, up, state)
    yield running
    if up.poll() is not None:  # `cvm down` ended it (the last journey)
        return
    groups = dict(cli.state()["groups"])
    below = descendants(up.pid)
    code = stop_up(up)  # Ctrl-C
    assert code == 0, cli.up_log()
    assert [name for name, pgid in groups.items() if group_alive(pgid)] == []
    assert [pid for pid in below if pid_alive(pid)] == []
    assert not (cli.data_dir / "stack.json").exists()


def password_file(directory: Path, name: str) -> Path:
    path = directory / f"{name}.password"
    path.write_text(f"correct horse battery {name}\n")
    os.chmod(path, 0o600)
    return path


def new_wallet(stack: Stack, name: str, *, fund: bool = True) -> list[str]:
    """A renter wallet made with `cvm wallet new`; the options that select and unlock it."""
    secret = password_file(stack.data_dir, name)
    stack.cli.json(
        "wallet", "new", name, "--password-file", str(secret),
        # A cheap KDF: the tests unlock the wallet in every command.
        "--kdf", "pbkdf2", "--iterations", "1000",
    )  # fmt: skip
    if fund:
        stack.cli.json("wallet", "fund", name, "--tokens", "100")
    return ["--wallet", name, "--password-file", str(secret)]


def chain_of(stack: Stack) -> ChainClient:
    deployment = Deployment.load(stack.data_dir / "deployment.json")
    assert deployment.rpc_url is not None
    return connect(deployment, rpc_url=deployment.rpc_url)


def stack_key(stack: Stack, name: str) -> ChainClient:
    keys = stack.data_dir / "stack" / "keys"
    account = load_account(keys / f"{name}.json", read_password_file(keys / f"{name}.password"))
    return chain_of(stack).with_account(account)


def node_name(stack: Stack, address: str) -> str:
    for node in stack.cli.state()["nodes"]:
        if node["address"].lower() == address.lower():
            return str(node["name"])
    raise AssertionError(f"{address} is not a node of the stack")
