"""The stack's key holders: `python -m keyservice` processes, registered and staked at start.

Each holder is made, registered and run exactly as an operator of one would
(`python -m keyservice init|register|run`, by name: devstack does not import the package):
its key file (owner-only JSON) under `<stack_dir>/holders/<name>/`, ether and test tokens
from the local faucet, `register --stake`, then `run` against the stack's backend and chain,
trusting the stack's simulated AMD roots (`--trust-simulated`, as the stack's verifier does;
never outside a local stack).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import StackError

KEYSERVICE = "keyservice"  # the holder package, run as `python -m keyservice`
COMMAND_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class HolderSetup:
    """One holder before it runs: its name, directory, key file and address."""

    name: str
    directory: Path
    address: str

    @property
    def key_file(self) -> Path:
        return self.directory / "holder-key.json"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"


def keyservice_argv(*words: str) -> list[str]:
    """`python -m keyservice WORDS...` with this interpreter."""
    return [sys.executable, "-m", KEYSERVICE, *words]


def run_argv(setup: HolderSetup, api_url: str, sim_amd_dir: Path) -> list[str]:
    """The holder's `run` command line (no secret on it: the key is in its 0600 file)."""
    return keyservice_argv(
        "run", "--key-file", str(setup.key_file), "--backend", api_url,
        "--data-dir", str(setup.data_dir), "--trust-simulated", "--sim-amd-dir", str(sim_amd_dir),
    )  # fmt: skip


def _command(argv: Sequence[str], env: Mapping[str, str], what: str) -> dict[str, object]:
    """Run a keyservice command with --json; its answer, or StackError with its last words."""
    try:
        done = subprocess.run(
            [*argv, "--json"], env=dict(env), capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise StackError(f"{what} did not finish in {COMMAND_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        words = (done.stderr.strip() or done.stdout.strip()).splitlines()[-2:]
        raise StackError(f"{what} failed ({done.returncode}): {' / '.join(words)}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise StackError(f"{what} printed no JSON") from None
    if not isinstance(answer, dict):
        raise StackError(f"{what} printed {type(answer).__name__}, not an object")
    return answer


def provision_holders(
    count: int,
    directory: Path,
    env: Mapping[str, str],
    fund: Callable[[str], None],
    stake: int,
) -> list[HolderSetup]:
    """Make `count` holders' keys, fund each (`fund(address)`: ether and `stake` tokens) and
    register and stake them on chain, in parallel; StackError naming the first that failed."""
    if count < 0 or count > 16:
        raise StackError(f"--holders {count}: 0 to 16 (a key policy names at most 16)")

    def one(index: int) -> HolderSetup:
        name = f"holder-{index}"
        home = directory / name
        home.mkdir(parents=True, mode=0o700)
        key_file = home / "holder-key.json"
        made = _command(keyservice_argv("init", "--key-file", str(key_file)), env,
                        f"{name}: keyservice init")  # fmt: skip
        setup = HolderSetup(name, home, str(made["address"]))
        fund(setup.address)
        _command(
            keyservice_argv("register", "--key-file", str(key_file), "--stake", f"{stake}base"),
            env,
            f"{name}: keyservice register",
        )
        return setup

    if count == 0:
        return []
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))
