"""A real anvil node as a context manager: free port, readiness wait, clean stop.

Used by the test fixtures, the gas benchmark and the embedded local chain of `cvm up`.
The binary comes from an explicit path, the `anvil_bin` setting (`CVM_ANVIL_BIN`), the
repository's pinned npm package (`contracts/node_modules`: the native binary, never the npm
launcher, which drops the exit code and sits between us and anvil's signals) or `anvil` on
PATH, in that order.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from cvm.chain.errors import ChainError
from cvm.chain.sender import forget_nonces
from cvm.config import get_settings

_CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
_LISTENING = re.compile(r"Listening on ([\d.]+):(\d+)")
# anvil's built-in development mnemonic; its accounts are public and only for local use. No
# other mnemonic is offered: it would have to go on anvil's command line, visible to all.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


# Nodes still running when the interpreter exits normally are stopped, so that an exception
# that skips a `with` block or a forgotten `stop()` leaves no anvil behind.
_running: weakref.WeakSet[Anvil] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for node in list(_running):
        node.stop()


def find_anvil(explicit: Path | str | None = None) -> Path:
    """The anvil executable to run (see the module docstring for the search order)."""
    chosen = explicit or get_settings().anvil_bin
    if chosen:
        # A path someone named must be used or refused, never silently replaced.
        path = Path(chosen)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ChainError(f"anvil not found at {path}")
    candidates: list[Path] = []
    # The native binary only (the platform package, or the launcher's download directory):
    # the npm launcher `.bin/anvil` drops anvil's exit code and relays its signals.
    foundry = _CONTRACTS_DIR / "node_modules" / "@foundry-rs"
    candidates.extend(sorted(foundry.glob("anvil-*/bin/anvil")))
    candidates.append(foundry / "anvil" / "dist" / "anvil")
    on_path = shutil.which("anvil")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ChainError("anvil not found: run `make install` or set CVM_ANVIL_BIN")


class Anvil:
    """One anvil process. Use as `with Anvil() as node: node.w3 ...`.

    `block_time` (seconds) mines on an interval instead of on every transaction;
    `automine=False` mines only on request (`mine()`); `host`/`port` default to
    127.0.0.1 and a free port picked by anvil itself, so parallel runs never collide.
    `hardfork` picks the gas schedule (anvil's latest by default); `enforce_tx_gas_cap`
    turns on EIP-7825's per-transaction cap.
    """

    def __init__(
        self,
        *,
        binary: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        chain_id: int = 31337,
        block_time: float | None = None,
        automine: bool = True,
        accounts: int = 10,
        balance_ether: int = 10_000,
        gas_limit: int | None = None,
        state_file: Path | None = None,
        startup_timeout: float = 20.0,
        hardfork: str | None = None,
        enforce_tx_gas_cap: bool = False,
    ) -> None:
        self.binary = find_anvil(binary)
        self.host = host
        self.port = port
        self.chain_id = chain_id
        self.account_count = accounts
        self._args = [
            "--host",
            host,
            "--port",
            str(port),
            "--chain-id",
            str(chain_id),
            "--accounts",
            str(accounts),
            "--balance",
            str(balance_ether),
        ]
        if block_time is not None:
            self._args += ["--block-time", str(block_time)]
        elif not automine:
            self._args.append("--no-mining")
        if gas_limit is not None:
            self._args += ["--gas-limit", str(gas_limit)]
        if state_file is not None:
            self._args += ["--state", str(state_file)]
        if hardfork is not None:
            # The gas schedule (e.g. "cancun", "prague", "osaka": EIP-7883 reprices modexp).
            self._args += ["--hardfork", hardfork]
        if enforce_tx_gas_cap:
            # EIP-7825: refuse any transaction above 2**24 gas, as Osaka mainnet does.
            self._args.append("--enable-tx-gas-limit")
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=200)
        self._w3: Web3 | None = None

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> Anvil:
        """Start anvil and return once it answers JSON-RPC; ChainError if it does not."""
        if self._process is not None:
            raise ChainError("anvil already started")
        self._process = subprocess.Popen(
            [str(self.binary), *self._args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Its own session: a terminal's Ctrl-C reaches us, and we stop it in order.
            start_new_session=True,
        )
        _running.add(self)
        port_found = threading.Event()
        threading.Thread(target=self._drain, args=(port_found,), daemon=True).start()
        deadline = time.monotonic() + self._startup_timeout
        try:
            while not port_found.wait(0.05):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise ChainError(self._failure("did not start"))
            while True:
                try:
                    if self.w3.eth.chain_id == self.chain_id:
                        return self
                except Exception:  # noqa: S110 - not listening yet; retried until the deadline
                    pass
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise ChainError(self._failure("did not answer"))
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _drain(self, port_found: threading.Event) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        try:
            for line in stdout:
                self._output.append(line.rstrip())
                match = _LISTENING.search(line)
                if match and not port_found.is_set():
                    self.port = int(match.group(2))
                    port_found.set()
        except (ValueError, OSError):
            # `stop` closed the pipe while this thread still read it: anvil is gone.
            return

    def _failure(self, what: str) -> str:
        tail = "\n".join(list(self._output)[-20:])
        return f"anvil {what} ({self.binary}):\n{tail}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil (SIGTERM, then SIGKILL after `timeout`); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        _running.discard(self)
        forget_nonces(self.rpc_url)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._w3 = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The process id, also its process group (it runs in a session of its own)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    # --- access ------------------------------------------------------------------
    @property
    def rpc_url(self) -> str:
        """The HTTP JSON-RPC endpoint."""
        return f"http://{self.host}:{self.port}"

    @property
    def w3(self) -> Web3:
        """A Web3 connected to this node (one per Anvil, reused)."""
        if self._w3 is None:
            self._w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        return self._w3

    def dev_account(self, index: int) -> LocalAccount:
        """The funded development account `index` (of `accounts`) derived from DEV_MNEMONIC."""
        if not 0 <= index < self.account_count:
            raise ChainError(f"anvil funds accounts 0..{self.account_count - 1}, not {index}")
        Account.enable_unaudited_hdwallet_features()
        account: LocalAccount = Account.from_mnemonic(
            DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
        )
        return account

    def new_account(self, balance_wei: int = 10**21) -> LocalAccount:
        """A fresh random account funded with `balance_wei` via `anvil_setBalance`."""
        account: LocalAccount = Account.create()
        self.set_balance(account.address, balance_wei)
        return account

    # --- anvil's test-only RPC -------------------------------------------------------
    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"{method} failed: {response['error']}")
        return response.get("result")

    def set_balance(self, address: str, wei: int) -> None:
        """Set an account's ether balance."""
        self._rpc("anvil_setBalance", [address, hex(wei)])

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` blocks now."""
        self._rpc("anvil_mine", [hex(blocks)])

    def set_interval_mining(self, seconds: int) -> None:
        """From now on mine a block every `seconds` (whole seconds, as anvil takes them)
        holding what is pending, instead of one block per transaction: a real block time
        after a setup that mined at once."""
        if seconds < 1:
            raise ValueError("the block interval is a whole number of seconds, at least 1")
        self._rpc("evm_setAutomine", [False])
        self._rpc("evm_setIntervalMining", [seconds])

    def increase_time(self, seconds: int) -> None:
        """Move the clock forward; the next block carries the new time."""
        self._rpc("evm_increaseTime", [seconds])

    def set_next_timestamp(self, timestamp: int) -> None:
        """Fix the timestamp of the next block."""
        self._rpc("evm_setNextBlockTimestamp", [timestamp])

    def snapshot(self) -> int:
        """Snapshot the whole chain state; returns an id for `revert`."""
        return int(self._rpc("evm_snapshot", []), 16)

    def revert(self, snapshot_id: int) -> None:
        """Return to a snapshot (consumed by this call) and drop cached nonces."""
        if not self._rpc("evm_revert", [hex(snapshot_id)]):
            raise ChainError(f"no snapshot {snapshot_id}")
        forget_nonces(self.rpc_url)
