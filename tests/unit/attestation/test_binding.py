"""binding: REPORT_DATA = keccak256(abi.encode(domain, chainId, registry, leaseId, nonce)) ||
sha256(guest key), checked against a hand-assembled ABI encoding."""

from __future__ import annotations

import hashlib

import pytest
from eth_utils import keccak

from cvm.attestation.binding import DOMAIN, build_report_data, guest_key_digest, lease_digest

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _hand_encoded(chain_id: int, registry: str, lease_id: int, nonce: int) -> bytes:
    # Head: offset of the dynamic string (5 words), then four static words; tail: the string.
    text = DOMAIN.encode()
    padded = text + bytes(-len(text) % 32)
    head = _word(5 * 32) + _word(chain_id) + bytes(12) + bytes.fromhex(registry[2:])
    return head + _word(lease_id) + _word(nonce) + _word(len(text)) + padded


def test_lease_digest_is_keccak_of_the_abi_encoding() -> None:
    expected = keccak(_hand_encoded(31337, REGISTRY, 42, 3))
    assert lease_digest(31337, REGISTRY, 42, 3) == expected


def test_report_data_layout() -> None:
    data = build_report_data(1, REGISTRY, 2, 3, b"guest public key")
    assert len(data) == 64
    assert data[:32] == lease_digest(1, REGISTRY, 2, 3)
    assert data[32:] == hashlib.sha256(b"guest public key").digest()
    assert build_report_data(1, REGISTRY, 2, 3)[32:] == bytes(32)
    assert guest_key_digest(None) == guest_key_digest(b"") == bytes(32)


def test_every_input_changes_the_digest() -> None:
    base = lease_digest(1, REGISTRY, 2, 3)
    assert lease_digest(2, REGISTRY, 2, 3) != base
    assert lease_digest(1, "0x" + "22" * 20, 2, 3) != base
    assert lease_digest(1, REGISTRY, 3, 3) != base
    assert lease_digest(1, REGISTRY, 2, 4) != base
    assert lease_digest(1, REGISTRY.lower(), 2, 3) == base  # address case does not matter


@pytest.mark.parametrize(
    "args",
    [(-1, REGISTRY, 1, 1), (1, "0x1234", 1, 1), (1, REGISTRY, 2**256, 1), (1, REGISTRY, 1, True)],
)
def test_bad_inputs_are_refused(args: tuple[int, str, int, int]) -> None:
    with pytest.raises(ValueError):
        lease_digest(*args)
