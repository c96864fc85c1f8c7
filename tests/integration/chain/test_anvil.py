"""The anvil runner: free ports, readiness, mining modes, clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvm.chain import Anvil, ChainError

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_nodes_get_their_own_ports_and_stop_cleanly() -> None:
    with Anvil() as first, Anvil(chain_id=1337) as second:
        assert first.port != second.port and first.port > 0
        assert first.w3.eth.chain_id == 31337 and second.w3.eth.chain_id == 1337
        pids = [first._process.pid, second._process.pid]  # type: ignore[union-attr]
    assert not first.running and not second.running
    assert not any(_alive(pid) for pid in pids)


def test_without_automine_blocks_come_only_on_request() -> None:
    with Anvil(automine=False) as node:
        account = node.dev_account(0)
        start = node.w3.eth.block_number
        tx = account.sign_transaction(
            {
                "to": node.dev_account(1).address,
                "value": 1,
                "gas": 21_000,
                "maxFeePerGas": 10**10,
                "maxPriorityFeePerGas": 1,
                "nonce": 0,
                "chainId": 31337,
            }
        )
        tx_hash = node.w3.eth.send_raw_transaction(tx.raw_transaction)
        assert node.w3.eth.block_number == start
        node.mine()
        assert node.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"] == start + 1


def test_snapshot_revert_and_time_travel() -> None:
    with Anvil() as node:
        fresh = node.new_account(balance_wei=5)
        snapshot = node.snapshot()
        node.set_balance(fresh.address, 7)
        before = node.w3.eth.get_block("latest")["timestamp"]
        node.increase_time(1_000)
        node.mine()
        assert node.w3.eth.get_block("latest")["timestamp"] >= before + 1_000
        node.revert(snapshot)
        assert node.w3.eth.get_balance(fresh.address) == 5
        with pytest.raises(ChainError):
            node.revert(snapshot)  # a snapshot is consumed by its revert


def test_a_named_binary_that_is_missing_is_a_chain_error(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="anvil not found at"):
        Anvil(binary=tmp_path / "nope")


def test_a_binary_that_exits_at_once_is_reported_with_its_output(tmp_path: Path) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\necho 'error: no such chain' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ChainError, match="no such chain"):
        Anvil(binary=fake).start()


def test_a_stopped_node_can_be_stopped_again() -> None:
    node = Anvil().start()
    node.stop()
    node.stop()
    assert not node.running


def test_dev_accounts_are_the_ones_anvil_funds() -> None:
    with Anvil(accounts=3) as node:
        funded = node.w3.eth.accounts
        assert [node.dev_account(i).address for i in range(3)] == funded
        assert all(node.w3.eth.get_balance(address) > 0 for address in funded)
        with pytest.raises(ChainError):
            node.dev_account(3)


def test_a_node_left_running_stops_when_python_exits() -> None:
    script = "from cvm.chain import Anvil\nprint(Anvil().start()._process.pid)\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    pid = int(done.stdout.strip())
    for _ in range(100):  # the child is reaped by init; give it a moment
        if not _alive(pid):
            break
        time.sleep(0.05)
    assert not _alive(pid)
