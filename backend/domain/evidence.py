"""Evidence bundles in the store: addressed by their own hash and by the report hash inside.

The format itself (canonical encoding, parsing) belongs to `cvm.attestation.evidence`;
this module names the two hashes the store indexes a bundle by, keeps bundles once, and
decides who may upload one: the node of the lease the bundle names, signing an EIP-712
`EvidenceUpload` bound to that lease, the bundle's attestation nonce and its exact bytes.
It also holds the one rule of which lease a guest key belongs to (`earlier_claims`), used by
the verifier to reject a reused key and by the claim route nodes ask before submitting.

A bundle claims its guest key only if it proves it (`proven_key`): a report that verifies
to a trusted root and passes the verifier's check for the lease, REPORT_DATA binding the
lease, its nonce and the key's SHA-256. Anyone can name a key in a bundle: a claim from
naming alone would let a node hostile to another lease claim that lease's key first, and
the honest node, told the key is claimed, would give its lease back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from eth_utils import keccak
from sqlalchemy import func, select
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
    GuestKeyClaimView,
    LeaseState,
)
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.errors import AttestationError
from cvm.attestation.evidence import EvidenceBundle
from cvm.disputes import SIGNER_UNKNOWN, EvidenceCheck, check_evidence
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


@dataclass(frozen=True)
class KeyClaim:
    """A lease's claim on a guest key: from its first uploaded evidence proving the key."""

    lease_id: int
    claimed_at: datetime
    live: bool  # the lease is active and its current (pending or verified) report has the key


def earlier_claims(session: Session, key_hash: str, lease_id: int | None) -> list[KeyClaim]:
    """The claims on `key_hash` that a report of `lease_id` with this key loses to, first
    first: by every other lease that is not closed (a closed lease never attests again).

    The one rule of "one guest, one lease", for the verifier and the claim route alike, so
    they cannot diverge: a lease claims a key from its first uploaded evidence that proves it
    (`proven_key`; a bundle that only names a key claims nothing); the earlier claim wins,
    ties to the lower lease id; a lease that never proved the key (or `lease_id` None)
    loses to every claim. The verifier rejects a report when one of
    these is live. A claim that is not live yet is one a verifier will hold against the
    report as soon as its lease attests with the key: a node that submits anyway risks the
    slash, so the claim route reports those too (honest guests never share a key).
    """
    first_seen = (
        select(Evidence.lease_id, func.min(Evidence.created_at).label("first"))
        .where(Evidence.guest_key_hash == key_hash, Evidence.lease_id.is_not(None))
        .group_by(Evidence.lease_id)
        .subquery()
    )
    ours = (
        None
        if lease_id is None
        else session.scalar(select(first_seen.c.first).where(first_seen.c.lease_id == lease_id))
    )
    rows = session.execute(
        select(first_seen.c.lease_id, first_seen.c.first)
        .join(Lease, Lease.id == first_seen.c.lease_id)
        .where(Lease.status != LeaseState.CLOSED)
        .order_by(first_seen.c.first, first_seen.c.lease_id)
    ).all()
    live = set(
        session.scalars(
            select(Attestation.lease_id)
            .join(Lease, Lease.id == Attestation.lease_id)
            .join(
                Evidence,
                (Evidence.report_hash == Attestation.report_hash)
                & (Evidence.lease_id == Attestation.lease_id)
                & (Evidence.guest_key_hash == key_hash),
            )
            .where(
                Lease.status == LeaseState.ACTIVE,
                Attestation.status.in_((AttestationState.PENDING, AttestationState.VERIFIED)),
            )
        )
    )
    return [
        KeyClaim(int(other), first, int(other) in live)
        for other, first in rows
        if other != lease_id and (ours is None or (first, other) < (ours, lease_id))
    ]


def guest_key_claim(session: Session, key_hash: str, lease_id: int | None) -> GuestKeyClaimView:
    """The claim a node must respect before submitting a report of `lease_id` whose guest key
    hashes to `key_hash`: the first live one, else the first pending one (`NotFound`: none,
    the key is free for this lease). `InvalidInput` for a malformed hash."""
    key = parse_hash(key_hash, "guest key hash")
    claims = earlier_claims(session, key, lease_id)
    claim = next((c for c in claims if c.live), claims[0] if claims else None)
    if claim is None:
        raise NotFound(f"a claim on guest key {key} by another lease")
    return GuestKeyClaimView(lease_id=claim.lease_id, claimed_at=claim.claimed_at, live=claim.live)


def claim_against(session: Session, bundle: bytes) -> GuestKeyClaimView | None:
    """`guest_key_claim` for the bundle's own guest key and lease (None: the key is free for
    it): what the uploading node would ask next, answered with the upload."""
    parsed = decode(bundle)
    try:
        return guest_key_claim(session, guest_key_hash(parsed.guest_key), parsed.lease_id)
    except NotFound:
        return None


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
) -> Lease:
    """Refuse an upload unless the lease's node signed it for this lease, nonce and bytes;
    the lease the bundle names, if it may be stored.

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
    return lease


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


def proves_key(check: EvidenceCheck) -> bool:
    """Whether `check` shows its report binds the bundle's guest key to the lease it was
    checked for: the report verifies to a trusted root and passes the verifier's check
    (measurement, REPORT_DATA[0:32] the lease and nonce on this deployment, REPORT_DATA[32:64]
    the key's SHA-256, HOST_DATA the lease and its renter, no debug, VMPL 0). The attested
    signer alone may be unknown: the node submits it on chain after uploading."""
    return check.appraisal.verified is not None and set(check.reasons) <= {SIGNER_UNKNOWN}


def proven_key(
    bundle: bytes,
    lease: Lease,
    *,
    chain_id: int,
    registry: str,
    trusted_roots: Sequence[x509.Certificate] | None,
) -> str | None:
    """`0x` SHA-256 of the guest key `bundle` proves its lease's guest holds (`proves_key`,
    checked for `lease`, the one the bundle names, under the bundle's nonce), else None: a
    bundle that only names a key claims nothing, and neither does a genuine report of
    another lease posted under this one (REPORT_DATA and HOST_DATA bind its own lease).

    Without the chip's VCEK in the bundle (or with a root this backend does not trust) the
    report is not proven here; the verifier proves it later if it can (`record_proof`)."""
    parsed = decode(bundle)
    check = check_evidence(
        parsed,
        chain_id=chain_id,
        registry=registry,
        lease_id=lease.id,
        nonce=parsed.nonce,
        renter=lease.renter,
        measurement=bytes.fromhex(lease.expected_measurement[2:]),
        submitted_signer=None,
        trusted_roots=trusted_roots,
    )
    return guest_key_hash(parsed.guest_key) if proves_key(check) else None


def record_proof(
    session: Session, content: bytes, lease_id: int, guest_key: bytes, check: EvidenceCheck
) -> None:
    """The verifier's `check` of stored evidence `content` for `lease_id`: if it proves the
    key (`proves_key`) and the upload could not (no VCEK in the bundle, say), the evidence
    claims its key for that lease from now on, from its upload time."""
    if not proves_key(check):
        return
    row = session.get(Evidence, evidence_hash(content))
    if row is None or row.guest_key_hash is not None:
        return
    # The lease the report proved, which a bundle naming another lease does not change.
    row.lease_id = lease_id
    row.guest_key_hash = guest_key_hash(guest_key)
    session.flush()


def store_evidence(
    session: Session,
    bundle: bytes,
    receipt: EvidenceReceipt,
    now: datetime,
    key_hash: str | None,
) -> None:
    """Keep `bundle` under its receipt's hashes, claiming the guest key `key_hash` for the
    lease it names (`proven_key`; None: it claims nothing); storing the same bytes again
    changes nothing but a proof the first upload lacked."""
    existing = session.get(Evidence, receipt.hash)
    if existing is not None:
        if existing.guest_key_hash is None and key_hash is not None:
            existing.guest_key_hash = key_hash
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
                    guest_key_hash=key_hash,
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
            select(Evidence)
            .where(Evidence.report_hash == key)
            .order_by(Evidence.created_at, Evidence.hash)  # as the verifier picks it
        )
    if row is None:
        raise NotFound(f"evidence {digest}")
    amd_root = session.scalar(
        select(Verification.amd_root)
        .where(Verification.evidence_hash == row.hash, Verification.amd_root.is_not(None))
        .limit(1)
    )
    return row.content, amd_root
