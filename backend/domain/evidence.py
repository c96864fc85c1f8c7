"""Evidence bundles in the store: addressed by their own hash and by the report hash inside.

The format itself (canonical encoding, parsing) belongs to `cvm.attestation.evidence`;
this module names the two hashes the store indexes a bundle by, and keeps bundles once.
"""

from __future__ import annotations

from datetime import datetime

from eth_utils import keccak
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.domain.addresses import parse_hash
from backend.domain.errors import InvalidInput, NotFound
from backend.store import Evidence
from cvm.api_models import EvidenceReceipt
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


def receipt_of(bundle: bytes) -> EvidenceReceipt:
    """The hashes and size of a bundle, or `InvalidInput` if it is not canonical evidence."""
    if not bundle:
        raise InvalidInput("empty body: send the canonical evidence bytes")
    try:
        report_hash = report_hash_of(bundle)
    except EvidenceFormatError as exc:
        raise InvalidInput(f"not canonical evidence: {exc}") from exc
    return EvidenceReceipt(hash=evidence_hash(bundle), report_hash=report_hash, size=len(bundle))


def store_evidence(
    session: Session, bundle: bytes, receipt: EvidenceReceipt, now: datetime
) -> None:
    """Keep `bundle` under its receipt's hashes; storing the same bytes again changes nothing."""
    if session.get(Evidence, receipt.hash) is not None:
        return
    try:
        with session.begin_nested():
            session.add(
                Evidence(
                    hash=receipt.hash,
                    report_hash=receipt.report_hash,
                    content=bundle,
                    size=len(bundle),
                    created_at=now,
                )
            )
    except IntegrityError:
        pass  # the same bytes were stored concurrently: content addressing makes them one


def evidence_bytes(session: Session, digest: str) -> bytes:
    """A bundle by its evidence hash, else the first one uploaded for that report hash."""
    key = parse_hash(digest)
    row = session.get(Evidence, key)
    if row is None:
        row = session.scalar(
            select(Evidence).where(Evidence.report_hash == key).order_by(Evidence.created_at)
        )
    if row is None:
        raise NotFound(f"evidence {digest}")
    return row.content
