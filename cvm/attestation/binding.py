"""REPORT_DATA binding of a report to one lease on one chain (DESIGN.md, stable).

bytes 0-31:  keccak256(abi.encode("cvm.attest.v1", chainId, attestationRegistry, leaseId, nonce))
bytes 32-63: SHA-256 of the guest's ephemeral public key, or 32 zero bytes when there is none.

The domain string and the chain id and registry address keep a report made for one
deployment from being accepted by another; `nonce` (the lease's attestation counter on chain)
keeps an old report from being replayed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DOMAIN = "cvm.attest.v1"
REPORT_DATA_SIZE = 64
_UINT256_MAX = 2**256 - 1


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

    def report_data(self) -> bytes:
        return build_report_data(
            self.chain_id, self.registry, self.lease_id, self.nonce, self.guest_key
        )
