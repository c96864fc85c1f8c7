"""`cvm wallet new|import|list|fund`: renter keystores in `<data_dir>/wallets`.

Keys live only in Web3 Secret Storage files; passwords come from a prompt or an owner-only
file, and an imported key from a prompt or a file, never from an argument.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from cvm.cli._renting import (
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    emit,
    failures,
    find_wallet,
    load_deployment,
    out,
    parse_tokens,
    rpc_url,
    tokens,
    wallet_dir,
)
from cvm.renter import connect_chain
from cvm.wallet import (
    WalletError,
    create_keystore,
    import_keystore,
    list_keystores,
    read_password_file,
    resolve_password,
)

app = typer.Typer(help="Renter wallets (encrypted keystores).", no_args_is_help=True)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KdfOption = Annotated[
    str,
    typer.Option(
        help="Key derivation: scrypt (default, slow to guess) or pbkdf2 (faster to unlock)."
    ),
]
IterationsOption = Annotated[
    int | None, typer.Option(help="PBKDF2 rounds (pbkdf2 only; default eth-account's).")
]


def _prompt(text: str) -> str:
    return str(typer.prompt(text, hide_input=True))


def _target(name: str) -> Path:
    if not _NAME.fullmatch(name):
        raise WalletError(f"wallet name {name!r}: use letters, digits, '.', '_' or '-'")
    return wallet_dir() / f"{name}.json"


def _kdf(kdf: str) -> Literal["scrypt", "pbkdf2"]:
    if kdf not in ("scrypt", "pbkdf2"):
        raise WalletError(f"--kdf {kdf!r}: scrypt or pbkdf2")
    return "scrypt" if kdf == "scrypt" else "pbkdf2"


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Wallet name.")],
    password_file: PasswordFileOption = None,
    kdf: KdfOption = "scrypt",
    iterations: IterationsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a wallet with a fresh random key."""
    with failures(as_json):
        password = resolve_password(password_file, _prompt, confirm=True)
        info = create_keystore(_target(name), password, kdf=_kdf(kdf), iterations=iterations)
        if as_json:
            emit({"name": name, "address": info.address, "keystore": str(info.path)})
        else:
            out.print(f"wallet [bold]{name}[/bold]: {info.address} ({info.path})")


@app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="Wallet name.")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="Owner-only file holding the hex private key (else a prompt)."),
    ] = None,
    password_file: PasswordFileOption = None,
    kdf: KdfOption = "scrypt",
    iterations: IterationsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import an existing private key into a new wallet."""
    with failures(as_json):
        if key_file is not None:
            key = read_password_file(key_file)  # same rules: owner-only, first line
        else:
            key = str(typer.prompt("Private key (hex)", hide_input=True))
        password = resolve_password(password_file, _prompt, confirm=True)
        info = import_keystore(
            _target(name), key.strip(), password, kdf=_kdf(kdf), iterations=iterations
        )
        if as_json:
            emit({"name": name, "address": info.address, "keystore": str(info.path)})
        else:
            out.print(f"wallet [bold]{name}[/bold]: {info.address} ({info.path})")


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """List the wallets (addresses only: nothing is unlocked)."""
    wallets = list_keystores(wallet_dir())
    rows = [{"name": k.path.stem, "address": k.address, "keystore": str(k.path)} for k in wallets]
    if as_json:
        emit(rows)
        return
    table = Table("name", "address", "keystore")
    for row in rows:
        table.add_row(row["name"], row["address"], row["keystore"])
    out.print(table)


@app.command("fund")
def fund(
    wallet: Annotated[str, typer.Argument(help="Wallet name, keystore path or address.")],
    amount: Annotated[str, typer.Option("--tokens", help="Test tokens to mint.")] = "1000",
    ether: Annotated[int, typer.Option(help="Ether for gas.")] = 10,
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Local stacks only: mint test tokens and send ether for gas to a wallet."""
    from cvm.stack.faucet import fund as faucet
    from cvm.stack.faucet import local_deployer

    with failures(as_json):
        record = load_deployment(deployment)
        address = wallet if re.fullmatch(r"0x[0-9a-fA-F]{40}", wallet) else None
        address = address or find_wallet(wallet).address
        deployer = local_deployer(record)
        minted = parse_tokens(amount, "--tokens")
        admin = connect_chain(record, rpc_url(record), deployer)
        balance = faucet(admin, address, minted, ether * 10**18)
        if as_json:
            emit({"address": address, "minted": minted, "token_balance": balance})
        else:
            out.print(f"{address}: +{tokens(minted)} tokens (now {tokens(balance)}), +{ether} ETH")
