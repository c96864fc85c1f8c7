"""Addresses as the store keeps them (lower-case) and as the API shows them (EIP-55)."""

from __future__ import annotations

import re
from functools import lru_cache

from eth_utils import to_checksum_address

from backend.domain.errors import InvalidInput

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


def parse_address(value: str, what: str = "address") -> str:
    """The lower-case form of a 0x address, or `InvalidInput` naming the bad value."""
    if not _ADDRESS.match(value):
        raise InvalidInput(f"{what} is not a 0x-prefixed 20-byte hex address: {value[:80]!r}")
    return value.lower()


def parse_hash(value: str, what: str = "hash") -> str:
    """The lower-case form of a 0x 32-byte hash, or `InvalidInput` naming the bad value."""
    if not _HASH.match(value):
        raise InvalidInput(f"{what} is not a 0x-prefixed 32-byte hex value: {value[:80]!r}")
    return value.lower()


def checksum(address: str | None) -> str | None:
    return None if address is None else _checksum(address)


@lru_cache(maxsize=65536)
def _checksum(address: str) -> str:
    # EIP-55 costs a keccak per call; the same few node and renter addresses recur.
    return str(to_checksum_address(address))
