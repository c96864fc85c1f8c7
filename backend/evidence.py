"""The backend's view of evidence bundles: their hash and the report hash they carry.

The format itself (canonical encoding, parsing) belongs to `cvm.attestation.evidence`;
this module only names the two hashes the store indexes evidence by.
"""

from __future__ import annotations

from eth_utils import keccak

from cvm.attestation.errors import AttestationError
from cvm.attestation.evidence import EvidenceBundle


class EvidenceFormatError(ValueError):
    """The bytes are not a canonical evidence bundle."""


def evidence_hash(bundle: bytes) -> str:
    """`0x` keccak256 of the bundle bytes: the address of the bundle in the store."""
    return "0x" + keccak(bundle).hex()


def report_hash_of(bundle: bytes) -> str:
    """`0x` keccak256 of the raw report inside the bundle (what the chain records)."""
    return "0x" + decode(bundle).report_hash.hex()


def decode(bundle: bytes) -> EvidenceBundle:
    """The parsed bundle, or `EvidenceFormatError` if the bytes are not canonical evidence."""
    try:
        return EvidenceBundle.decode(bundle)
    except AttestationError as exc:
        raise EvidenceFormatError(str(exc)) from exc
