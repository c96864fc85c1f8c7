"""Keystore wallets: Web3 Secret Storage files (eth-account) that hold node and operator keys.

A raw private key never travels through a command-line argument or a log line: keys are
created in or imported into an encrypted keystore, and unlocked with a password read from
an interactive prompt or from a file readable only by its owner.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount

Kdf = Literal["scrypt", "pbkdf2"]

# A process started by another one may get its password through an inherited pipe whose
# descriptor this variable names (like gpg's --passphrase-fd): never argv, never the value.
PASSWORD_FD_ENV = "CVM_PASSWORD_FD"  # noqa: S105 - a variable name, not a password


class WalletError(Exception):
    """A keystore could not be created, read or unlocked."""


@dataclass(frozen=True)
class KeystoreInfo:
    """What a keystore file says about itself without being unlocked."""

    path: Path
    address: str


def _checksum(address_hex: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address("0x" + address_hex.removeprefix("0x")))


def _write_private(path: Path, content: str) -> None:
    """Write `content` to a new file readable only by its owner (never overwrite a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise WalletError(f"refusing to overwrite existing keystore {path}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def _save(
    account: LocalAccount, password: str, path: Path, kdf: Kdf | None, iterations: int | None
) -> KeystoreInfo:
    if not password:
        raise WalletError("an empty password would leave the key unprotected")
    keystore: dict[str, Any] = Account.encrypt(
        account.key, password, kdf=kdf, iterations=iterations
    )
    _write_private(path, json.dumps(keystore))
    return KeystoreInfo(path=path, address=account.address)


def create_keystore(
    path: Path, password: str, *, kdf: Kdf | None = None, iterations: int | None = None
) -> KeystoreInfo:
    """Make a fresh random key and store it encrypted at `path` (which must not exist).

    `kdf`/`iterations` default to eth-account's (scrypt); tests pass cheaper work factors.
    """
    return _save(Account.create(), password, path, kdf, iterations)


def import_keystore(
    path: Path,
    private_key: bytes | str,
    password: str,
    *,
    kdf: Kdf | None = None,
    iterations: int | None = None,
) -> KeystoreInfo:
    """Encrypt an existing private key into a new keystore at `path`.

    The key comes from a caller that read it from a prompt or a file, never from argv.
    """
    try:
        account: LocalAccount = Account.from_key(private_key)
    except (ValueError, TypeError):
        # The exception text may contain the key material: do not chain it.
        raise WalletError("not a valid secp256k1 private key") from None
    return _save(account, password, path, kdf, iterations)


def read_keystore_info(path: Path) -> KeystoreInfo:
    """The address a keystore holds, read without the password."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return KeystoreInfo(path=path, address=_checksum(str(document["address"])))
    except FileNotFoundError as exc:
        raise WalletError(f"no keystore at {path}") from exc
    except IsADirectoryError as exc:
        raise WalletError(f"{path} is a directory, not a keystore") from exc
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise WalletError(f"{path} is not a Web3 Secret Storage keystore") from exc


def list_keystores(directory: Path) -> list[KeystoreInfo]:
    """Every readable keystore in `directory`, sorted by file name (unreadable files skipped)."""
    if not directory.is_dir():
        return []
    found: list[KeystoreInfo] = []
    for candidate in sorted(directory.iterdir()):
        if not candidate.is_file():
            continue
        try:
            found.append(read_keystore_info(candidate))
        except WalletError:
            continue
    return found


def load_account(path: Path, password: str) -> LocalAccount:
    """Unlock a keystore; a wrong password or a damaged file raises `WalletError`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WalletError(f"no keystore at {path}") from exc
    except IsADirectoryError as exc:
        raise WalletError(f"{path} is a directory, not a keystore") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise WalletError(f"{path} is not a Web3 Secret Storage keystore") from exc
    if not isinstance(document, dict) or "crypto" not in {k.lower() for k in document}:
        raise WalletError(f"{path} is not a Web3 Secret Storage keystore")
    try:
        key = Account.decrypt(document, password)
    except ValueError:
        raise WalletError(f"wrong password for keystore {path}") from None
    except (KeyError, TypeError):
        raise WalletError(f"{path} is not a Web3 Secret Storage keystore") from None
    account: LocalAccount = Account.from_key(key)
    return account


def read_password_file(path: Path) -> str:
    """The password stored in `path` (first line, trailing newline dropped).

    Refuses a file that other users can read, as ssh does for private keys.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise WalletError(f"no password file at {path}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WalletError(f"password file {path} is readable by others: chmod 600 it")
    text = path.read_text(encoding="utf-8")
    password = text.splitlines()[0] if text else ""
    if not password:
        raise WalletError(f"password file {path} is empty")
    return password


def resolve_password(
    password_file: Path | None,
    prompt: Callable[[str], str],
    *,
    confirm: bool = False,
    label: str = "Keystore password",
) -> str:
    """A password from `password_file` if given, else from `prompt(label)` (twice if `confirm`)."""
    if password_file is not None:
        return read_password_file(password_file)
    password = prompt(label)
    if confirm and prompt("Repeat the password") != password:
        raise WalletError("the two passwords differ")
    if not password:
        raise WalletError("an empty password is not allowed")
    return password


def read_password_fd(fd: int) -> str:
    """Read a password (one line) from an inherited descriptor, then close it."""
    with os.fdopen(fd, "r", encoding="utf-8") as pipe:
        line = pipe.readline()
    password = line.rstrip("\n")
    if not password:
        raise WalletError(f"no password on descriptor {fd}")
    return password
