"""What the renter's commands share: the `cvm lease` sub-app, the renter a command acts as,
the SSH key and the `--secret NAME=FILE` files a renter gives.

`renter` (rent, leases, lease show|topup|challenge|close), `guest` (lease secrets|ssh|logs),
`image` (push) and `keys` (lease policy|rekey) all import this module; only `renter` imports
the other three. An import-linter contract (pyproject.toml) keeps that order, so they never
import each other in a circle again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cvm.cli.plumbing import (
    UsageError,
    checksum_address,
    connect_chain,
    find_wallet,
    load_deployment,
    unlock_keystore,
)

if TYPE_CHECKING:
    from cvm.renter import Renter

lease_app = typer.Typer(
    help="Show, top up, challenge or close one of your leases.", no_args_is_help=True
)


def open_renter(
    deployment_path: Path | None,
    wallet: str | None,
    password_file: Path | None,
    *,
    address: str | None = None,
    unlock: bool = True,
) -> Renter:
    """A renter on the deployment: unlocked to act, or only an address to read.

    The network and the record's contracts are checked before any password is asked.
    """
    from cvm.api_client import ApiClient
    from cvm.config import get_settings
    from cvm.renter import Renter

    deployment = load_deployment(deployment_path)
    chain = connect_chain(deployment)
    api = ApiClient(deployment.api_url or get_settings().api_url)
    if not unlock:
        who = checksum_address(address, "--address") if address else find_wallet(wallet).address
        return Renter(chain, api, address=who)
    account = unlock_keystore(find_wallet(wallet).path, password_file)
    return Renter(chain.with_account(account), api)


def read_ssh_public_key(path: Path) -> str:
    """The one OpenSSH public key line in `path` (UsageError for anything else)."""
    try:
        text = path.expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--ssh-key {path}: cannot read it ({exc})") from None
    parts = text.split()
    if "\n" in text or len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise UsageError(f"--ssh-key {path}: not an OpenSSH public key (the .pub file)")
    return text


DISK_KEY_NAME = "cvm.disk_key"  # = cvm.secret_release.DISK_KEY (imported lazily there)


def read_secrets(specs: list[str] | None) -> dict[str, bytes]:
    """NAME=FILE pairs, read now (UsageError for a bad pair or an unreadable file)."""
    result: dict[str, bytes] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--secret {spec!r}: use NAME=FILE")
        if name in result:
            raise UsageError(f"--secret {name} is given twice")
        if name == DISK_KEY_NAME:
            raise UsageError(f"--secret {name}: this client makes and keeps the disk key itself")
        try:
            result[name] = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"--secret {name}: cannot read {path} ({exc.strerror})") from None
    return result
