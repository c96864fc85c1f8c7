"""The evidence bundle a node publishes for each attestation, and the hashes that name it.

A bundle holds the raw report, the VCEK or VLEK (DER), the chain (PEM) and the lease
metadata the REPORT_DATA binds. Its canonical encoding is JSON with sorted keys, no
whitespace, lowercase hex for bytes and decimal integers; `decode` accepts only that exact
form, so one bundle has one encoding and one `evidence_hash`. What goes on chain is
`report_hash = keccak256(report)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from eth_hash.auto import keccak  # eth_utils would cost a CLI start-up 0.1 s more

from cvm.attestation.abi import REPORT_SIZE
from cvm.attestation.binding import LeaseBinding
from cvm.attestation.errors import EvidenceError

FORMAT = "cvm.evidence.v1"
MAX_CERT_BYTES = 8 * 1024
MAX_CHAIN_BYTES = 32 * 1024
MAX_GUEST_KEY_BYTES = 1024
MAX_ENCODED_BYTES = 128 * 1024
_UINT256_MAX = 2**256 - 1
_FIELDS = {
    "format",
    "report",
    "vcek",
    "chain",
    "chain_id",
    "registry",
    "lease_id",
    "nonce",
    "guest_key",
}


def report_hash(report: bytes) -> bytes:
    """keccak256 of the raw 1184-byte report: the `reportHash` recorded on chain."""
    if len(report) != REPORT_SIZE:
        raise EvidenceError(f"a report is {REPORT_SIZE} bytes, got {len(report)}")
    return bytes(keccak(bytes(report)))


@dataclass(frozen=True, slots=True)
class EvidenceBundle:
    """Everything a verifier needs to check one attestation of one lease."""

    report: bytes
    vcek: bytes  # VCEK or VLEK certificate, DER
    chain: bytes  # ASK/ASVK then ARK, PEM; empty to use the verifier's built-in AMD chain
    chain_id: int
    registry: str  # AttestationRegistry address
    lease_id: int
    nonce: int
    guest_key: bytes = b""  # the guest's ephemeral public key; empty if none

    def __post_init__(self) -> None:
        if len(self.report) != REPORT_SIZE:
            raise EvidenceError(f"report must be {REPORT_SIZE} bytes, got {len(self.report)}")
        if not 0 < len(self.vcek) <= MAX_CERT_BYTES:
            raise EvidenceError(f"vcek must be 1 to {MAX_CERT_BYTES} bytes")
        if len(self.chain) > MAX_CHAIN_BYTES:
            raise EvidenceError(f"chain must be at most {MAX_CHAIN_BYTES} bytes")
        if len(self.guest_key) > MAX_GUEST_KEY_BYTES:
            raise EvidenceError(f"guest_key must be at most {MAX_GUEST_KEY_BYTES} bytes")
        for name in ("chain_id", "lease_id", "nonce"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise EvidenceError(f"{name} must be an integer")
            if not 0 <= value <= _UINT256_MAX:
                raise EvidenceError(f"{name} must be a uint256")
        from eth_utils import is_address

        if not isinstance(self.registry, str) or not is_address(self.registry):
            raise EvidenceError(f"registry must be an address, got {self.registry!r}")
        try:
            self.chain.decode("ascii")
        except UnicodeDecodeError as exc:
            raise EvidenceError("chain must be PEM (ASCII)") from exc

    @property
    def report_hash(self) -> bytes:
        return report_hash(self.report)

    @property
    def binding(self) -> LeaseBinding:
        """The lease this evidence claims to attest; the verifier checks REPORT_DATA against it."""
        return LeaseBinding(
            chain_id=self.chain_id,
            registry=self.registry,
            lease_id=self.lease_id,
            nonce=self.nonce,
            guest_key=self.guest_key or None,
        )

    def to_json_dict(self) -> dict[str, Any]:
        from eth_utils import to_checksum_address

        return {
            "format": FORMAT,
            "report": self.report.hex(),
            "vcek": self.vcek.hex(),
            "chain": self.chain.decode("ascii"),
            "chain_id": self.chain_id,
            "registry": to_checksum_address(self.registry),
            "lease_id": self.lease_id,
            "nonce": self.nonce,
            "guest_key": self.guest_key.hex(),
        }

    def encode(self) -> bytes:
        """The canonical encoding (sorted keys, no whitespace, ASCII only)."""
        return json.dumps(
            self.to_json_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @property
    def evidence_hash(self) -> bytes:
        """keccak256 of the canonical encoding: the name the backend stores the bundle under."""
        return bytes(keccak(self.encode()))

    @classmethod
    def decode(cls, data: bytes) -> EvidenceBundle:
        """Parse a canonical encoding; anything else (extra keys, other spelling) is refused."""
        if len(data) > MAX_ENCODED_BYTES:
            raise EvidenceError(f"evidence is larger than {MAX_ENCODED_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"evidence is not JSON: {exc}") from exc
        if not isinstance(obj, dict) or set(obj) != _FIELDS:
            raise EvidenceError(f"evidence must be an object with exactly {sorted(_FIELDS)}")
        if obj["format"] != FORMAT:
            raise EvidenceError(f"unknown evidence format {obj['format']!r}")
        try:
            bundle = cls(
                report=_unhex(obj["report"], "report"),
                vcek=_unhex(obj["vcek"], "vcek"),
                chain=_ascii(obj["chain"]),
                chain_id=obj["chain_id"],
                registry=obj["registry"],
                lease_id=obj["lease_id"],
                nonce=obj["nonce"],
                guest_key=_unhex(obj["guest_key"], "guest_key"),
            )
        except (TypeError, AttributeError) as exc:
            raise EvidenceError(f"evidence field has the wrong type: {exc}") from exc
        if bundle.encode() != data:
            raise EvidenceError("evidence is not in canonical form")
        return bundle


def _unhex(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise EvidenceError(f"{name} is not hex") from exc


def _ascii(value: object) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise EvidenceError("chain must be an ASCII PEM string")
    return value.encode("ascii")
