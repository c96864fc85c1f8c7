"""`cvm wallet new|import|list`: renter keystores in `<data_dir>/wallets`.

Keys live only in Web3 Secret Storage files; passwords come from a prompt or an owner-only
file, and an imported key from a prompt or a file, never from an argument. On a local
stack, `cvm wallet fund` (added by the dev stack) mints test tokens and sends ether.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import typer

from cvm.cli.plumbing import (
    JsonOption,
    PasswordFileOption,
    UsageError,
    emit,
    password,
    wallet_dir,
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


def _target(name: str) -> Path:
    if not _NAME.fullmatch(name):
        raise UsageError(f"wallet name {name!r}: use letters, digits, '.', '_' or '-'")
    return wallet_dir() / f"{name}.json"


def _kdf(kdf: str) -> Literal["scrypt", "pbkdf2"]:
    if kdf not in ("scrypt", "pbkdf2"):
        raise UsageError(f"--kdf {kdf!r}: scrypt or pbkdf2")
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
    from cvm.wallet import create_keystore

    target, chosen = _target(name), _kdf(kdf)
    secret = password(password_file, confirm=True)
    info = create_keystore(target, secret, kdf=chosen, iterations=iterations)
    emit(
        {"name": name, "address": info.address, "keystore": str(info.path)},
        f"wallet {name}: {info.address} ({info.path})",
    )


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
    from cvm.wallet import import_keystore, read_password_file

    target, chosen = _target(name), _kdf(kdf)
    if key_file is not None:
        key = read_password_file(key_file)  # same rules: owner-only, first line
    else:
        key = str(typer.prompt("Private key (hex)", hide_input=True))
    secret = password(password_file, confirm=True)
    info = import_keystore(target, key.strip(), secret, kdf=chosen, iterations=iterations)
    emit(
        {"name": name, "address": info.address, "keystore": str(info.path)},
        f"wallet {name}: {info.address} ({info.path})",
    )


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """List the wallets (addresses only: nothing is unlocked)."""
    from rich.table import Table

    from cvm.wallet import list_keystores

    wallets = list_keystores(wallet_dir())
    rows = [{"name": k.path.stem, "address": k.address, "keystore": str(k.path)} for k in wallets]

    def table() -> Table:
        shown = Table("name", "address", "keystore", title=str(wallet_dir()))
        for row in rows:
            shown.add_row(row["name"], row["address"], row["keystore"])
        return shown

    emit(rows, table)
