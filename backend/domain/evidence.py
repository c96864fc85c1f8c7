"""Evidence bundles in the store: addressed by their own hash and by the report hash inside.

The format itself (canonical encoding, parsing) belongs to `cvm.attestation.evidence`;
this module names the two hashes the store indexes a bundle by, keeps bundles once, and
decides who may upload one: the node of the lease the bundle names, signing an EIP-712
`EvidenceUpload` bound to that lease, the bundle's attestation nonce and its exact bytes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from eth_utils import keccak
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.domain.addresses import parse_address, parse_hash
from backend.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from backend.store import Attestation, Evidence, Lease, Match, Verification
from cvm.api_models import (
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttestationState,
    EvidenceReceipt,
)
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.errors import AttestationError
from cvm.attestation.evidence import EvidenceBundle
from cvm.eip712 import (
    Domain,
    EvidenceUpload,
    SignatureError,
    check_timestamp,
    verify_node_message,
)


class EvidenceFormatError(ValueError):
    """The bytes are not a canonical evidence bundle."""


def guest_key_hash(guest_key: bytes) -> str:
    """`0x` SHA-256 of a guest key, as REPORT_DATA[32:64] binds it: its name in the store."""
    return "0x" + hashlib.sha256(guest_key).hexdigest()


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


def authorize_upload(
    session: Session,
    bundle: bytes,
    receipt: EvidenceReceipt,
    node: str | None,
    timestamp: str | None,
    signature: str | None,
    *,
    domain: Domain,
    now: int,
    window_s: int,
) -> None:
    """Refuse an upload unless the lease's node signed it for this lease, nonce and bytes.

    401: no or a bad signature, or one outside the time window; 404: the lease the bundle
    names does not exist (or is not indexed yet); 403: the signer is not the node the lease
    was matched to or accepted by; 409: the bundle's nonce was already attested (a replay);
    422: the bundle names another chain.
    """
    if node is None or timestamp is None or signature is None:
        raise Unauthenticated(
            f"evidence uploads are signed by the lease's node: send {NODE_HEADER},"
            f" {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (EIP-712 EvidenceUpload)"
        )
    address = parse_address(node, NODE_HEADER)
    parsed = decode(bundle)
    try:
        upload = EvidenceUpload(
            node=address,
            lease_id=parsed.lease_id,
            nonce=parsed.nonce,
            evidence_hash=bytes.fromhex(receipt.hash[2:]),
            timestamp=int(timestamp),
        )
        verify_node_message(upload, signature, domain)
        check_timestamp(upload.timestamp, now, window_s)
    except (SignatureError, ValueError) as exc:
        raise Unauthenticated(f"evidence upload rejected: {exc}") from exc
    if parsed.chain_id != domain.chain_id:
        raise InvalidInput(f"evidence is for chain {parsed.chain_id}, not {domain.chain_id}")
    lease = session.get(Lease, parsed.lease_id)
    if lease is None:
        raise NotFound(f"lease {parsed.lease_id} (not created on chain, or not indexed yet)")
    matched = session.scalar(
        select(Match.id).where(Match.lease_id == lease.id, Match.node == address).limit(1)
    )
    if lease.node != address and matched is None:
        raise Forbidden(f"node {node} was not matched to lease {lease.id}")
    if parsed.nonce < lease.attestation_nonce and not _awaited(session, lease.id, parsed, receipt):
        raise Conflict(
            f"lease {lease.id} already attested nonce {parsed.nonce}"
            f" (next is {lease.attestation_nonce}): a replay"
        )


def _awaited(
    session: Session, lease_id: int, bundle: EvidenceBundle, receipt: EvidenceReceipt
) -> bool:
    """Whether this is the evidence of the lease's pending attestation (submitted before its
    upload, e.g. after an outage): same nonce, same report hash as recorded on chain."""
    attestation = session.get(Attestation, lease_id)
    return (
        attestation is not None
        and attestation.status == AttestationState.PENDING
        and attestation.nonce == bundle.nonce
        and attestation.report_hash == receipt.report_hash
    )


def store_evidence(
    session: Session, bundle: bytes, receipt: EvidenceReceipt, now: datetime
) -> None:
    """Keep `bundle` under its receipt's hashes; storing the same bytes again changes nothing."""
    if session.get(Evidence, receipt.hash) is not None:
        return
    parsed = decode(bundle)
    try:
        with session.begin_nested():
            session.add(
                Evidence(
                    hash=receipt.hash,
                    report_hash=receipt.report_hash,
                    content=bundle,
                    size=len(bundle),
                    created_at=now,
                    lease_id=parsed.lease_id,
                    guest_key_hash=guest_key_hash(parsed.guest_key),
                )
            )
    except IntegrityError:
        pass  # the same bytes were stored concurrently: content addressing makes them one


def evidence_bytes(session: Session, digest: str) -> tuple[bytes, AmdRoot | None]:
    """A bundle by its evidence hash, else the first one uploaded for that report hash;
    with the root the verifier found its report chained to (None until one verified it)."""
    key = parse_hash(digest)
    row = session.get(Evidence, key)
    if row is None:
        row = session.scalar(
            select(Evidence).where(Evidence.report_hash == key).order_by(Evidence.created_at)
        )
    if row is None:
        raise NotFound(f"evidence {digest}")
    amd_root = session.scalar(
        select(Verification.amd_root)
        .where(Verification.evidence_hash == row.hash, Verification.amd_root.is_not(None))
        .limit(1)
    )
    return row.content, amd_root
