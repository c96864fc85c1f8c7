"""Plumbing shared by the renter commands: deployment, wallet, output, errors, amounts."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console

from cvm.api_client import ApiClient, ApiError
from cvm.chain import ChainError, Deployment
from cvm.config import get_settings
from cvm.renter import Renter, RenterError, connect_chain
from cvm.stack.errors import StackError
from cvm.wallet import (
    KeystoreInfo,
    WalletError,
    list_keystores,
    load_account,
    resolve_password,
)

out = Console()
err = Console(stderr=True)
TOKEN_DECIMALS = 18

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DeploymentOption = Annotated[
    Path | None,
    typer.Option(
        "--deployment", help="Deployment record (default: the CVM_DEPLOYMENT_FILE setting)."
    ),
]
WalletOption = Annotated[
    str | None,
    typer.Option("--wallet", "-w", help="Wallet name in the wallet directory, or a keystore path."),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="Owner-only file with the keystore password (else a prompt)."
    ),
]


def fail(message: str, as_json: bool = False, code: int = 1) -> NoReturn:
    """Print a helpful error (as JSON too with --json) and exit non-zero."""
    if as_json:
        print(json.dumps({"error": message}))
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def failures(as_json: bool) -> Iterator[None]:
    """Turn the layers' errors into a clear message and exit code 1."""
    try:
        yield
    except (RenterError, WalletError, ChainError, StackError) as exc:
        fail(str(exc), as_json)
    except ApiError as exc:
        fail(f"the backend answered {exc}", as_json)


def emit(data: Any) -> None:
    """Print `data` as JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def wallet_dir() -> Path:
    return get_settings().data_dir / "wallets"


def load_deployment(path: Path | None) -> Deployment:
    chosen = path or get_settings().deployment_file
    try:
        return Deployment.load(chosen)
    except ChainError:
        raise RenterError(
            f"no deployment record at {chosen}: start a local stack with `cvm up`, "
            "or pass --deployment"
        ) from None


def rpc_url(deployment: Deployment) -> str:
    return deployment.rpc_url or get_settings().rpc_url


def api_url(deployment: Deployment) -> str:
    return deployment.api_url or get_settings().api_url


def find_wallet(wallet: str | None) -> KeystoreInfo:
    """The keystore named (a path, or a name in the wallet directory), or the only one."""
    directory = wallet_dir()
    if wallet is not None:
        path = Path(wallet)
        if not path.is_file():
            path = directory / f"{wallet}.json"
        found = [k for k in list_keystores(path.parent) if k.path == path]
        if not found:
            raise WalletError(f"no wallet {wallet!r} (looked for {path}): `cvm wallet list`")
        return found[0]
    wallets = list_keystores(directory)
    if len(wallets) == 1:
        return wallets[0]
    if not wallets:
        raise WalletError(f"no wallet in {directory}: `cvm wallet new NAME` first")
    names = ", ".join(k.path.stem for k in wallets)
    raise WalletError(f"several wallets ({names}): choose one with --wallet")


def unlock(wallet: str | None, password_file: Path | None) -> LocalAccount:
    info = find_wallet(wallet)

    def prompt(text: str) -> str:
        return str(typer.prompt(text, hide_input=True))

    return load_account(info.path, resolve_password(password_file, prompt))


def open_renter(
    deployment_path: Path | None, wallet: str | None, password_file: Path | None
) -> Renter:
    """A renter for the wallet on the deployment (network checked before unlocking)."""
    deployment = load_deployment(deployment_path)
    chain = connect_chain(deployment, rpc_url(deployment), None)
    account = unlock(wallet, password_file)
    return Renter(chain.with_account(account), ApiClient(api_url(deployment)))


def parse_tokens(text: str, what: str) -> int:
    """'12.5' tokens → base units; a trailing 'wei' or 'base' means base units as given."""
    value = text.strip().lower()
    match = re.fullmatch(r"(\d+)\s*(wei|base)", value)
    if match:
        return int(match.group(1))
    try:
        amount = Decimal(value) * (10**TOKEN_DECIMALS)
    except InvalidOperation:
        raise RenterError(f"{what} {text!r} is not an amount (e.g. 12.5, or 1000base)") from None
    if amount != amount.to_integral_value() or amount < 0:
        raise RenterError(f"{what} {text!r} has more than {TOKEN_DECIMALS} decimals")
    return int(amount)


def parse_duration(text: str) -> int:
    """'90', '90s', '15m', '2h', '1d' → seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise RenterError(f"duration {text!r} is not like 90s, 15m, 2h or 1d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit


def tokens(base_units: int) -> str:
    """Base units → a readable token amount."""
    return f"{Decimal(base_units) / (10**TOKEN_DECIMALS):f}"
