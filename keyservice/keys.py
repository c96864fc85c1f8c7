"""The holder's two keys, in one owner-only JSON file: its Ethereum account (its identity on
chain, signs its requests to the backend) and its X25519 key (HPKE: renters seal shares to it,
and it is the authenticated sender of every share it seals to a guest)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount

KEY_FILE_VERSION = 1
MAX_KEY_FILE_BYTES = 4096


class KeyFileError(Exception):
    """The key file is missing, unsafe, or not a holder key file."""


@dataclass(frozen=True)
class HolderKeys:
    account: LocalAccount
    x25519_private: x25519.X25519PrivateKey

    @classmethod
    def generate(cls) -> HolderKeys:
        return cls(Account.create(), x25519.X25519PrivateKey.generate())

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def x25519_public(self) -> bytes:
        return self.x25519_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def _x25519_raw(self) -> bytes:
        return self.x25519_private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": KEY_FILE_VERSION,
                "eth_private_key": "0x" + bytes(self.account.key).hex(),
                "x25519_private_key": self._x25519_raw().hex(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> HolderKeys:
        try:
            data = json.loads(text)
            if data.get("version") != KEY_FILE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {KEY_FILE_VERSION}")
            account = Account.from_key(str(data["eth_private_key"]))
            raw = bytes.fromhex(str(data["x25519_private_key"]))
            if len(raw) != 32:
                raise ValueError("the X25519 key is not 32 bytes")
            return cls(account, x25519.X25519PrivateKey.from_private_bytes(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Never the file's text: it is a secret.
            raise KeyFileError(f"not a holder key file ({type(exc).__name__})") from None

    def save_new(self, path: Path) -> None:
        """Write to `path`, owner-only from its first byte; refuses to replace any file."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(
                f"{path} exists: refusing to overwrite a holder's keys (its shares need them)"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(self.to_json())
            handle.flush()
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: Path) -> HolderKeys:
        """The keys in `path`; refused when others than the owner may read or write it."""
        try:
            info = path.stat()
        except FileNotFoundError:
            raise KeyFileError(f"no key file at {path} (make one with `keyservice init`)") from None
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{path} is readable or writable by others (mode {info.st_mode & 0o777:o}):"
                " chmod 600 it"
            )
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} is too large to be a holder key file")
        return cls.from_json(path.read_text())
