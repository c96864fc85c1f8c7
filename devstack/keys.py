"""Keys the stack makes for its own roles (verifier, operators, node keys).

Each key is a Web3 Secret Storage keystore beside an owner-only password file, which is
how the backend and the agents are told to unlock them (never on a command line). The
passwords are 256 random bits, so the keystores use a cheap KDF: stretching a password
that cannot be guessed adds nothing, and every process would pay for it at start.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.wallet import create_keystore, load_account

# PBKDF2 rounds for keystores whose password is a random 256-bit secret (see above).
_RANDOM_PASSWORD_ROUNDS = 1_000


@dataclass(frozen=True)
class StackKey:
    """A keystore, its password file, and the unlocked account (kept in memory only)."""

    name: str
    keystore: Path
    password_file: Path
    account: LocalAccount

    @property
    def address(self) -> str:
        return str(self.account.address)


def write_secret(path: Path, text: str) -> None:
    """Write a new owner-only file (0600 from the start, never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def new_stack_key(directory: Path, name: str) -> StackKey:
    """A fresh random key in `directory/<name>.json`, password in `<name>.password`."""
    password = secrets.token_hex(32)
    password_file = directory / f"{name}.password"
    write_secret(password_file, password)
    info = create_keystore(
        directory / f"{name}.json", password, kdf="pbkdf2", iterations=_RANDOM_PASSWORD_ROUNDS
    )
    return StackKey(name, info.path, password_file, load_account(info.path, password))
