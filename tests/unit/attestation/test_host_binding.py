"""HOST_DATA (one lease, one renter) and the guest key's layout (cvm.attestation.binding)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from cvm.attestation.binding import (
    GUEST_KEY_SIZE,
    GuestKey,
    GuestKeyError,
    LeaseBinding,
    fingerprint_text,
    host_data,
    spki_sha256,
)

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
RENTER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
RAW = (Encoding.Raw, PublicFormat.Raw)


def guest_key() -> tuple[bytes, str]:
    hpke = x25519.X25519PrivateKey.generate().public_key().public_bytes(*RAW)
    ssh = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(*RAW)
    signer = Account.create().address
    tls = hashlib.sha256(b"a TLS key's SubjectPublicKeyInfo").digest()
    return hpke + ssh + bytes.fromhex(signer[2:]) + tls, signer


def test_host_data_is_the_abi_encoded_lease_and_renter() -> None:
    expected = keccak(
        encode(
            ["string", "uint256", "address", "uint256", "address"],
            ["cvm.host.v1", 31337, REGISTRY, 7, RENTER],
        )
    )
    assert host_data(31337, REGISTRY, 7, RENTER) == expected
    assert host_data(31337, REGISTRY.lower(), 7, RENTER.lower()) == expected


@pytest.mark.parametrize(
    "args",
    [(31337, REGISTRY, 8, RENTER), (31337, REGISTRY, 7, OTHER), (1, REGISTRY, 7, RENTER),
     (31337, OTHER, 7, RENTER)],
)  # fmt: skip
def test_host_data_differs_for_any_other_lease_renter_or_deployment(
    args: tuple[int, str, int, str],
) -> None:
    assert host_data(*args) != host_data(31337, REGISTRY, 7, RENTER)


@pytest.mark.parametrize(
    "args", [(31337, "0x12", 7, RENTER), (31337, REGISTRY, -1, RENTER), (True, REGISTRY, 7, RENTER)]
)
def test_host_data_refuses_bad_values(args: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        host_data(*args)


def test_lease_binding_host_data_only_with_a_renter() -> None:
    assert LeaseBinding(31337, REGISTRY, 7, 0).host_data() is None
    bound = LeaseBinding(31337, REGISTRY, 7, 0, renter=RENTER)
    assert bound.host_data() == host_data(31337, REGISTRY, 7, RENTER)


def test_guest_key_round_trip() -> None:
    raw, signer = guest_key()
    parsed = GuestKey.parse(raw)
    assert parsed.signer == signer
    assert parsed.to_bytes() == raw
    assert len(raw) == GUEST_KEY_SIZE == 116
    assert parsed.tls_spki_sha256 == raw[84:]


def test_spki_sha256_is_the_hash_of_the_certificates_subject_public_key_info() -> None:
    from tests.fixtures.tls import self_signed

    cert_der, key = self_signed()
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert spki_sha256(cert_der) == hashlib.sha256(spki).digest()
    hex_form, pin = fingerprint_text(bytes(range(32)))
    assert hex_form == bytes(range(32)).hex()
    assert pin == "sha256/" + base64.b64encode(bytes(range(32))).decode()
    with pytest.raises(ValueError):
        spki_sha256(b"not a certificate")


@pytest.mark.parametrize("size", [0, 1, 32, 64, GUEST_KEY_SIZE - 1, GUEST_KEY_SIZE + 1])
def test_guest_key_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(GuestKeyError, match="116 bytes"):
        GuestKey.parse(b"\x01" * size)


def test_guest_key_with_an_unusable_part_is_refused() -> None:
    raw, _ = guest_key()
    with pytest.raises(GuestKeyError, match="X25519"):
        GuestKey.parse(bytes(32) + raw[32:])
    with pytest.raises(GuestKeyError, match="signer"):
        GuestKey.parse(raw[:64] + bytes(20) + raw[84:])
    with pytest.raises(GuestKeyError, match="TLS key hash"):
        GuestKey.parse(raw[:84] + bytes(32))
