"""The verifier service: checks each submitted attestation and votes on chain.

For every `AttestationSubmitted` it fetches the evidence the node uploaded (by the report
hash recorded on chain) and checks it as the EVM's dispute check would
(`cvm.disputes.check_evidence`), against what the chain recorded, never the bundle's own lease
metadata: expected measurement, REPORT_DATA[0:32] bound to this chain, registry, lease and
nonce, REPORT_DATA[32:64] the hash of a 116-byte guest key naming the submitted signer,
HOST_DATA bound to the lease and its renter, debug disallowed, VMPL 0. It stores the full
result with its reason codes and the root the report chained to (`simulated` when this
verifier was told to trust a local stack's simulated AMD-SP besides AMD's roots; it never is
by default), and sends `confirm(leaseId, reportHash, ok)` from the verifier key.

It votes Rejected only for what the EVM's check also fails on: anything else the node would
overturn by disputing, slashing the verifiers. So it does not vote (nothing stored, checked
again on later passes) on a report failing only on what the EVM cannot see: a bundle guest
key REPORT_DATA does not bind (the node holds the right one), an unusable key the EVM would
accept, a guest key another live lease claimed first (`GUEST_KEY_REUSED`: HOST_DATA already
binds each guest to one lease), or a submission whose evidence never came (reported after
`evidence_timeout_s`). Unvoted, the submission lapses at the end of the registry's
verification window, which counts against the node. The stored result comes first and the
transaction hash is added after, so a crash between the two retries only the vote.

A report that fails on the bundle's certificates (rather than on its own content) is never
rejected on those alone: the chip's VCEK is fetched from AMD's KDS and the report checked
again with it (`backend.verifier.kds`). While KDS does not answer, or when no certificate can
be had for the report at all, the verifier does not vote (nothing is stored; a later pass
tries again): a verifier that does not vote is never slashed, one that rejects a genuine
report is, once its node disputes with the right VCEK.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.domain import evidence as evidence_rules
from backend.domain.evidence import EvidenceFormatError, decode, guest_key_hash
from backend.repeats import RepeatedConditions
from backend.store import Attestation, ChainEvent, Evidence, Lease, Store, Verification
from backend.verifier.kds import VcekLookup, needs_kds, recheck
from cvm.api_models import AttestationState
from cvm.attestation import Appraisal, EvidenceBundle
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.errors import Reason
from cvm.chain.errors import ChainError
from cvm.disputes import (  # noqa: F401 - the codes are part of this module's vocabulary
    CHAIN_MISMATCH,
    LEASE_MISMATCH,
    NONCE_MISMATCH,
    REGISTRY_MISMATCH,
    EvidenceCheck,
    check_evidence,
)

log = logging.getLogger(__name__)

# Reason codes of the checks the service adds to `cvm.attestation.Reason`'s.
EVIDENCE_MALFORMED = "EVIDENCE_MALFORMED"
# Nothing uploaded for the report (no longer a vote: a verdict without evidence could be
# overturned by the node's dispute; kept for results stored by older verifiers).
NO_EVIDENCE = "NO_EVIDENCE"

# Default of `evidence_timeout_s`: after it a submission without evidence is reported.
EVIDENCE_TIMEOUT_S = 600.0
# A lease's signer events scanned for a nonce: the latest submissions are the ones voted on.
MAX_SIGNER_EVENTS = 16

Confirm = Callable[[int, bytes, bool], str]  # (lease id, report hash, ok) -> tx hash


@dataclass(frozen=True)
class VerifierConfig:
    chain_id: int
    attestation_registry: str
    trusted_roots: Sequence[x509.Certificate] | None = None  # None: AMD's built-in roots
    # Intermediates (ASKs) the chip's VCEK from KDS is checked with, besides AMD's own (a
    # local stack's simulated AMD-SP's).
    trusted_intermediates: Sequence[x509.Certificate] = ()


@dataclass(frozen=True)
class Judgement:
    """The full off-chain check of one submission's evidence (`Verifier.appraise`)."""

    ok: bool
    reasons: list[str]
    detail: dict[str, Any]
    amd_root: AmdRoot | None  # the root the report chained to, if it verified
    # Why no verdict may be voted (None: `ok` is the verdict); `ok` and `reasons` are then the
    # evidence's own check.
    undecided: str | None = None
    retry: bool = False  # undecided for now (AMD's KDS did not answer): check again later


class Verifier:
    """Appraises pending attestations and votes; idempotent per (lease, report hash)."""

    def __init__(
        self,
        store: Store,
        confirm: Confirm,
        config: VerifierConfig,
        *,
        clock: Callable[[], float],
        parallel: int = 8,
        evidence_timeout_s: float = EVIDENCE_TIMEOUT_S,
        kds: VcekLookup | None = None,
    ) -> None:
        """`kds`: the chip's VCEK from AMD's KDS (`backend.verifier.kds.KdsVceks`); without it
        a report failing on its certificates is left undecided, never rejected."""
        self.store = store
        self.confirm = confirm
        self.config = config
        self.clock = clock
        self.parallel = parallel
        self.conditions = RepeatedConditions(log)
        self.evidence_timeout_s = evidence_timeout_s
        self.kds = kds

    def pending(self) -> list[tuple[int, str]]:
        """Pending attestations this verifier has not voted on yet."""
        with self.store.session() as session:
            rows = session.execute(
                select(Attestation.lease_id, Attestation.report_hash)
                .outerjoin(
                    Verification,
                    (Verification.lease_id == Attestation.lease_id)
                    & (Verification.report_hash == Attestation.report_hash),
                )
                .where(
                    Attestation.status == AttestationState.PENDING,
                    Verification.confirm_tx.is_(None),
                )
            ).all()
        return [(int(lease_id), str(report_hash)) for lease_id, report_hash in rows]

    def run_pending(self) -> list[Verification]:
        """Verify every pending attestation whose evidence is available.

        Several at once: most of a verification is waiting for its confirm transaction's
        receipt, and the chain client's sender keeps the nonces of concurrent sends apart.
        """
        pending = self.pending()
        if len(pending) <= 1:
            results = [self.verify(lease_id, report_hash) for lease_id, report_hash in pending]
        else:
            with ThreadPoolExecutor(min(self.parallel, len(pending))) as pool:
                results = list(pool.map(lambda item: self.verify(*item), pending))
        return [result for result in results if result is not None]

    def verify(self, lease_id: int, report_hash: str) -> Verification | None:
        """Appraise and vote on one submission; None while its evidence is not uploaded (past
        the evidence timeout it is reported, never rejected) or it is left undecided."""
        with self.store.session() as session:
            existing = session.scalar(
                select(Verification).where(
                    Verification.lease_id == lease_id, Verification.report_hash == report_hash
                )
            )
            if existing is not None and existing.confirm_tx is not None:
                return existing
            lease = session.get(Lease, lease_id)
            attestation = session.get(Attestation, lease_id)
            # The first bundle uploaded for the report: only the node that got the report
            # has it before then; later copies (a matched node re-uploading it with another
            # key) must not decide. The renter's client is served the same one.
            evidence = session.scalar(
                select(Evidence)
                .where(Evidence.report_hash == report_hash)
                .order_by(Evidence.created_at, Evidence.hash)
                .limit(1)
            )
            if lease is None or attestation is None or attestation.report_hash != report_hash:
                return None
            if existing is None and evidence is None:
                waited = self.clock() - attestation.submitted_at
                if waited < self.evidence_timeout_s:
                    # Reported once per submission (with a count when it ends), not per pass.
                    self.conditions.report(
                        (lease_id, report_hash),
                        "lease %s: evidence %s not uploaded yet",
                        lease_id,
                        report_hash,
                    )
                    return None
                # Without evidence nobody here can check the report, but the node holding it
                # could: a rejection (NO_EVIDENCE) would be overturned by its dispute with the
                # genuine report, slashing the verifiers. No vote: the submission lapses at the
                # end of the registry's verification window, which counts against the node.
                # Evidence uploaded later, within the window, is still voted on.
                self.conditions.report(
                    ("no evidence", lease_id, report_hash),
                    "lease %s: no evidence for %s within %ss of its submission: not voting",
                    lease_id,
                    report_hash,
                    f"{self.evidence_timeout_s:.0f}",
                )
                return None
            self.conditions.clear((lease_id, report_hash))
            self.conditions.clear(("no evidence", lease_id, report_hash))
            if existing is None:
                assert evidence is not None
                judged = self.appraise(session, lease, attestation, evidence.content)
                if judged.undecided is not None:
                    # No vote (nothing stored): every later pass checks again; reported once.
                    self.conditions.report(
                        ("undecided", lease_id, report_hash),
                        "lease %s: report %s fails (%s) but is left undecided: %s",
                        lease_id,
                        report_hash,
                        ", ".join(judged.reasons),
                        judged.undecided,
                    )
                    return None
                self.conditions.clear(("undecided", lease_id, report_hash))
                existing = Verification(
                    lease_id=lease_id,
                    report_hash=report_hash,
                    evidence_hash=evidence.hash,
                    ok=judged.ok,
                    reason_codes=judged.reasons,
                    detail=judged.detail,
                    checked_at=datetime.fromtimestamp(self.clock(), UTC),
                    confirm_tx=None,
                    amd_root=judged.amd_root,
                )
                amd_root = judged.amd_root
                session.add(existing)
                if amd_root is AmdRoot.SIMULATED:
                    log.warning(
                        "lease %s: report %s is signed by the SIMULATED AMD-SP (trusted by"
                        " this verifier's configuration: local stacks only)",
                        lease_id,
                        report_hash,
                    )
        try:
            tx_hash = self.confirm(lease_id, bytes.fromhex(report_hash[2:]), existing.ok)
        except ChainError as exc:
            # e.g. the attestation is no longer pending (another verifier reached quorum,
            # or the lease closed): keep the result, note why no vote was cast.
            log.warning("lease %s: confirm failed: %s", lease_id, exc)
            with self.store.session() as session:
                row = session.get(Verification, existing.id)
                if row is not None:
                    row.detail = {**row.detail, "confirm_error": str(exc)[:500]}
                    existing = row
            return existing
        with self.store.session() as session:
            row = session.get(Verification, existing.id)
            if row is not None:
                row.confirm_tx = tx_hash
                existing = row
        return existing

    # --- the checks -------------------------------------------------------------------------

    def appraise(
        self, session: Session, lease: Lease, attestation: Attestation, content: bytes
    ) -> Judgement:
        """The full off-chain check of one submission's evidence, without voting (the votes
        and the watcher's re-checks of others' verdicts both use it). A failure on the
        bundle's certificates is decided with the chip's VCEK from AMD's KDS, or left
        undecided (`backend.verifier.kds.recheck`)."""
        try:
            bundle = decode(content)
        except EvidenceFormatError as exc:
            return Judgement(False, [EVIDENCE_MALFORMED], {"errors": [str(exc)]}, None)
        # The one check a verifier makes of a submission (shared with `cvm attestation
        # dispute`): the bundle names this lease on this deployment under the nonce the chain
        # recorded; the report verifies and satisfies the lease's policy, HOST_DATA binding
        # the lease's renter as the chain recorded it (the indexed LeaseCreated); the signer
        # the node put on chain with this submission is the guest's own (dApps trust
        # attestedSignerOf).
        submitted_signer = _submitted_signer(session, lease.id, attestation.nonce)

        def run(candidate: EvidenceBundle) -> EvidenceCheck:
            return check_evidence(
                candidate,
                chain_id=self.config.chain_id,
                registry=self.config.attestation_registry,
                lease_id=lease.id,
                nonce=attestation.nonce,
                renter=lease.renter,
                measurement=bytes.fromhex(lease.expected_measurement[2:]),
                submitted_signer=submitted_signer,
                trusted_roots=self.config.trusted_roots,
            )

        check = run(bundle)
        undecided: str | None = None
        retry = False
        kds_note: str | None = None
        if needs_kds(check):
            # The bundle's certificates failed: never a rejection on those alone (the node
            # would dispute with the chip's right VCEK and the verifiers would be slashed).
            again = recheck(bundle, check, run, self.kds, self.config.trusted_intermediates)
            check, undecided, retry, kds_note = (
                again.check,
                again.undecided,
                again.retry,
                again.note,
            )
        kds_undecided = undecided
        appraisal = check.appraisal
        reasons, messages = list(check.reasons), list(check.messages)
        if undecided is None and check.undecided is not None:
            # Fails on nothing the EVM's check fails on (e.g. the bundle's guest key is not
            # the one REPORT_DATA binds): a rejection could be overturned, so no vote.
            undecided = check.undecided
        # A report the upload could not prove (no VCEK in the bundle, say) claims its key from
        # here on, before the claims are compared: its upload time is its place in line.
        evidence_rules.record_proof(session, content, lease.id, bundle.guest_key, check)
        other = _earlier_claim(session, lease.id, guest_key_hash(bundle.guest_key))
        if other is not None:
            reasons.append(str(Reason.GUEST_KEY_REUSED))
            messages.append(f"guest key: already bound by live lease {other}")
            if undecided is None and check.ok:
                # Invisible to the EVM (a dispute with this genuine report would win), and no
                # longer needed for safety: HOST_DATA binds each guest to one lease. No vote:
                # the submission lapses unverified at the end of the verification window.
                undecided = (
                    f"the guest key is already bound by live lease {other}, which the EVM's"
                    " check does not see: a rejection could be overturned"
                )
        detail = _detail(bundle, appraisal)
        detail["errors"] = messages
        if kds_note is not None or kds_undecided is not None:
            detail["kds"] = kds_undecided or kds_note
        if undecided is not None:
            detail["undecided"] = undecided
        amd_root = appraisal.verified.amd_root if appraisal.verified is not None else None
        return Judgement(
            check.ok and not reasons, reasons, detail, amd_root, undecided=undecided, retry=retry
        )


def _submitted_signer(session: Session, lease_id: int, nonce: int) -> str | None:
    """The attested signer the node submitted with `nonce` (AttestationEvidence), if indexed."""
    events = session.scalars(
        select(ChainEvent)
        .where(ChainEvent.lease_id == lease_id, ChainEvent.name == "AttestationEvidence")
        .order_by(ChainEvent.block_number.desc(), ChainEvent.log_index.desc())
        .limit(MAX_SIGNER_EVENTS)
    )
    for event in events:
        if int(event.args.get("nonce", -1)) == nonce:
            return str(event.args.get("signer"))
    return None


def _earlier_claim(session: Session, lease_id: int, key_hash: str) -> int | None:
    """Another live lease that claimed this guest key before `lease_id` did, if any.

    A lease claims a key from its first uploaded evidence that proves it (a genuine report
    of the lease binding the key, `evidence_rules.proves_key`); the claim counts
    while the lease is active and its current attestation (pending or verified) is a report
    with that key. The earlier claim wins (ties: the lower lease id), so a guest key copied
    into another lease's guest gets the copy rejected, never the original."""
    # The one rule, shared with the claim route nodes ask before submitting.
    claims = evidence_rules.earlier_claims(session, key_hash, lease_id)
    return next((claim.lease_id for claim in claims if claim.live), None)


def _detail(bundle: EvidenceBundle, appraisal: Appraisal) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "lease_id": bundle.lease_id,
        "nonce": bundle.nonce,
        "report_hash": "0x" + bundle.report_hash.hex(),
    }
    verified = appraisal.verified
    if verified is not None:
        report = verified.report
        detail.update(
            {
                "product": str(verified.product),
                "signer": verified.signer.name,
                "measurement": "0x" + report.measurement.hex(),
                "report_data": "0x" + report.report_data.hex(),
                "debug": report.policy.debug,
                "reported_tcb": report.reported_tcb,
                "vmpl": report.vmpl,
                "version": report.version,
                "guest_key_bound": bool(bundle.guest_key),
                "guest_key_hash": guest_key_hash(bundle.guest_key),
                "host_data": "0x" + report.host_data.hex(),
            }
        )
    return detail
