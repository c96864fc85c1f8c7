"""REPORT_DATA binding of a report to one lease on one chain (DESIGN.md, stable).

bytes 0-31:  keccak256(abi.encode("cvm.attest.v1", chainId, attestationRegistry, leaseId, nonce))
bytes 32-63: SHA-256 of the guest's ephemeral public key, or 32 zero bytes when there is none.

The domain string and the chain id and registry address keep a report made for one
deployment from being accepted by another; `nonce` (the lease's attestation counter on chain)
keeps an old report from being replayed.

HOST_DATA (32 bytes, set by the host at launch and immutable for the guest's life):
    keccak256(abi.encode("cvm.host.v1", chainId, attestationRegistry, leaseId, renter))
It binds the guest to one lease and one renter: the guest computes its lease digest from
the lease this names and accepts sealed messages only when signed by this renter; verifiers
and the renter's client check it against the chain.

The guest key (what REPORT_DATA[32:64] hashes) is GUEST_KEY_SIZE (116) bytes:
    X25519 public key (32, HPKE) || Ed25519 public key (32, SSH host key)
    || Ethereum address (20) of the secp256k1 key the guest made at boot (attested signer)
    || SHA-256 (32) of the DER SubjectPublicKeyInfo of the guest's TLS key (ECDSA P-256, the
       key its service ports terminate TLS with: the "attested fingerprint")
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DOMAIN = "cvm.attest.v1"
HOST_DOMAIN = "cvm.host.v1"
REPORT_DATA_SIZE = 64
HOST_DATA_SIZE = 32
_UINT256_MAX = 2**256 - 1

HPKE_KEY_SIZE = 32
SSH_KEY_SIZE = 32
SIGNER_SIZE = 20
TLS_SPKI_HASH_SIZE = 32
GUEST_KEY_SIZE = HPKE_KEY_SIZE + SSH_KEY_SIZE + SIGNER_SIZE + TLS_SPKI_HASH_SIZE


class GuestKeyError(ValueError):
    """Bytes that are not a well-formed cvm guest key."""


@dataclass(frozen=True, slots=True)
class GuestKey:
    """The public keys a cvm guest made at boot, as bound into its reports."""

    hpke_public: bytes  # X25519
    ssh_public: bytes  # Ed25519
    signer: str  # checksummed Ethereum address of the guest's own signing key
    tls_spki_sha256: bytes  # SHA-256 of the DER SubjectPublicKeyInfo of its TLS key

    @classmethod
    def parse(cls, raw: bytes) -> GuestKey:
        """GuestKeyError unless `raw` is exactly a guest key with keys that can be used."""
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from eth_utils import to_checksum_address

        if not isinstance(raw, bytes | bytearray) or len(raw) != GUEST_KEY_SIZE:
            size = len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__
            raise GuestKeyError(f"a guest key is {GUEST_KEY_SIZE} bytes, got {size}")
        hpke = bytes(raw[:HPKE_KEY_SIZE])
        ssh = bytes(raw[HPKE_KEY_SIZE : HPKE_KEY_SIZE + SSH_KEY_SIZE])
        signer_at = HPKE_KEY_SIZE + SSH_KEY_SIZE
        signer = bytes(raw[signer_at : signer_at + SIGNER_SIZE])
        tls = bytes(raw[signer_at + SIGNER_SIZE :])
        # An all-zero X25519 key is the identity point: sealing to it seals to everyone.
        if not any(hpke):
            raise GuestKeyError("the guest's X25519 key is all zeros")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(ssh)
        except ValueError as exc:
            raise GuestKeyError("the guest's Ed25519 key does not decode") from exc
        if not any(signer):
            raise GuestKeyError("the guest's signer address is zero")
        # No key hashes to zeros: all zeros is a placeholder, never a TLS key to pin.
        if not any(tls):
            raise GuestKeyError("the guest's TLS key hash is all zeros")
        return cls(hpke, ssh, to_checksum_address(signer), tls)

    def to_bytes(self) -> bytes:
        return (
            self.hpke_public
            + self.ssh_public
            + bytes.fromhex(self.signer[2:])
            + self.tls_spki_sha256
        )


def spki_sha256(certificate_der: bytes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of an X.509 certificate (DER): the attested
    fingerprint a guest's TLS key is pinned by. ValueError for bytes that are no certificate."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        key = x509.load_der_x509_certificate(certificate_der).public_key()
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, UnsupportedAlgorithm) as exc:  # a key type cryptography cannot read
        raise ValueError(f"not a certificate with a usable public key: {exc}") from exc
    return hashlib.sha256(spki).digest()


def fingerprint_text(spki_hash: bytes) -> tuple[str, str]:
    """The attested fingerprint as (hex, `sha256/<base64>`), the two ways it is printed."""
    import base64

    return spki_hash.hex(), "sha256/" + base64.b64encode(spki_hash).decode()


def lease_digest(chain_id: int, registry: str, lease_id: int, nonce: int) -> bytes:
    """The first 32 bytes of REPORT_DATA: the lease, its deployment and its attestation nonce."""
    # Imported here: parsing or hashing a report (`cvm attestation show`) needs neither.
    from eth_abi import encode
    from eth_utils import is_address, keccak, to_checksum_address

    for name, value in (("chain_id", chain_id), ("lease_id", lease_id), ("nonce", nonce)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
            raise ValueError(f"{name} must be a uint256, got {value!r}")
    if not is_address(registry):
        raise ValueError(f"registry must be a 20-byte address, got {registry!r}")
    encoded = encode(
        ["string", "uint256", "address", "uint256", "uint256"],
        [DOMAIN, chain_id, to_checksum_address(registry), lease_id, nonce],
    )
    return bytes(keccak(encoded))


def host_data(chain_id: int, registry: str, lease_id: int, renter: str) -> bytes:
    """HOST_DATA for a guest launched for `lease_id` of `renter` on this deployment."""
    from eth_abi import encode
    from eth_utils import is_address, keccak, to_checksum_address

    for name, value in (("chain_id", chain_id), ("lease_id", lease_id)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
            raise ValueError(f"{name} must be a uint256, got {value!r}")
    for name, address in (("registry", registry), ("renter", renter)):
        if not is_address(address):
            raise ValueError(f"{name} must be a 20-byte address, got {address!r}")
    encoded = encode(
        ["string", "uint256", "address", "uint256", "address"],
        [HOST_DOMAIN, chain_id, to_checksum_address(registry), lease_id,
         to_checksum_address(renter)],
    )  # fmt: skip
    return bytes(keccak(encoded))


def guest_key_digest(guest_key: bytes | None) -> bytes:
    """The last 32 bytes of REPORT_DATA: SHA-256 of the guest's ephemeral key, or zeros."""
    if not guest_key:
        return bytes(32)
    return hashlib.sha256(guest_key).digest()


def build_report_data(
    chain_id: int, registry: str, lease_id: int, nonce: int, guest_key: bytes | None = None
) -> bytes:
    """The 64-byte REPORT_DATA a guest asks the AMD-SP to sign for this lease."""
    return lease_digest(chain_id, registry, lease_id, nonce) + guest_key_digest(guest_key)


@dataclass(frozen=True, slots=True)
class LeaseBinding:
    """What a report must be bound to: one attestation round of one lease on one deployment."""

    chain_id: int
    registry: str
    lease_id: int
    nonce: int
    guest_key: bytes | None = None
    renter: str | None = None  # when set, HOST_DATA must bind it (see host_data)

    def report_data(self) -> bytes:
        return build_report_data(
            self.chain_id, self.registry, self.lease_id, self.nonce, self.guest_key
        )

    def host_data(self) -> bytes | None:
        """The HOST_DATA the launch must have set, or None when the renter is not known."""
        if self.renter is None:
            return None
        return host_data(self.chain_id, self.registry, self.lease_id, self.renter)
