"""The watcher: every verifier re-checks the others' verdicts and disputes the wrong ones.

The quorum's word (`AttestationVerified` / `AttestationRejected`, indexed into
`attestations`) is final only once its dispute window has passed. Within the window this
verifier appraises the submission's evidence itself, with the same full off-chain check as
its votes (`Verifier.appraise`), and compares. Where it disagrees on something the EVM
checks (`cvm.disputes.assess`), it disputes on chain with its bond, supplying the report,
the certificates and the guest key (a Verified verdict the EVM cannot decide with them, e.g. a
VLEK-signed report or a masked CHIP_ID, is challenged: the watcher resolves it once its
deadline passes undefended; a node agent defending its own verdicts is not built); where
the disagreement rests only on what the EVM cannot see (a reused guest key, an expired
certificate, a bundle guest key that is not the one REPORT_DATA binds: the node holds the
right one and would defend with it), it logs it and keeps its bond. The check is the votes'
(`cvm.disputes.check_evidence`): the lease, nonce, deployment and renter are the chain's, never
the bundle's. A report that fails on its evidence's
certificates is judged with the chip's VCEK from AMD's KDS first, as the votes are
(`backend.verifier.kds`); while KDS does not answer, the submission is not disputed but
checked again on a later pass.

Every decided submission is checked once per watching key (`dispute_checks`, unique per
lease, report hash and watcher): the row is written before the dispute is sent and the
transaction hash after, so a crash in between retries only the sending, and the registry
itself refuses a second dispute of the same submission. At most `per_tick` submissions are
checked per pass, oldest verdict first (closest to its window's end). It runs where the
verifier key's votes run: on that key's leader replica only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exists, or_, select

from backend.domain.evidence import EvidenceFormatError, decode
from backend.repeats import RepeatedConditions
from backend.store import (
    Attestation,
    Dispute,
    DisputeCheck,
    Evidence,
    Lease,
    Store,
    Verification,
)
from backend.verifier.service import Verifier
from cvm.api_models import AttestationState
from cvm.attestation import EvidenceBundle
from cvm.chain.errors import ChainError, ContractRevert
from cvm.disputes import (
    CHAIN_MISMATCH,
    LEASE_MISMATCH,
    NONCE_MISMATCH,
    REGISTRY_MISMATCH,
    Action,
    Assessment,
    DisputeCertificates,
    DisputeEvidenceError,
    assess,
    challenge_certificates,
)

log = logging.getLogger(__name__)

# Submissions checked per pass: each is an appraisal and, rarely, a dispute transaction.
PER_TICK = 8
# A dispute sent this close to its window's end could land after it: not sent.
WINDOW_MARGIN_S = 30
# A submission whose check waits for AMD's KDS is not picked again for this long, so that
# submissions waiting for KDS do not take every place of a pass from the others.
KDS_RETRY_S = 60.0

# (lease id, evidence, certificates) -> transaction hash of the dispute (bond included).
SendDispute = Callable[[int, EvidenceBundle, DisputeCertificates], str]
# (lease id, evidence, certificates) -> whether the EVM would reverse the verdict (an
# eth_call of the dispute; None if it returns no outcome).
PreviewDispute = Callable[[int, EvidenceBundle, DisputeCertificates], bool | None]
# evidence -> the certificates the dispute carries (`cvm.disputes.dispute_certificates`).
FindCertificates = Callable[[EvidenceBundle], DisputeCertificates]
# (lease id, report hash) -> the deadline of the pending challenge its dispute opened (0: none).
ChallengeDeadline = Callable[[int, str], int]
# (lease id, report hash) -> transaction hash of `resolve` (the undefended verdict reversed).
ResolveChallenge = Callable[[int, str], str]

# What a check that did not lead to a dispute records (besides `cvm.disputes.Action`'s).
NO_EVIDENCE = "no_evidence"  # the evidence is not in this store, or not decodable
MISSED = "missed"  # the dispute could not be sent (window closed, someone disputed first)
RETRY = "retry"  # not checked to the end (e.g. no tokens for the bond): the next pass retries
RESOLVED = "resolved"  # a challenge this watcher's dispute opened was resolved (undefended)
# Codes of an older verifier that judged the bundle's own lease metadata (the chain's is what
# counts, `cvm.disputes.check_evidence`): a verdict stored with them is checked again.
_BUNDLE_METADATA = frozenset({LEASE_MISMATCH, CHAIN_MISMATCH, REGISTRY_MISMATCH, NONCE_MISMATCH})
# The contracts' own refusals of a dispute (as opposed to the token's, or the RPC's).
_REFUSALS = ("AttestationCourt_", "AttestationRegistry_", "SnpVerifier_")


@dataclass(frozen=True)
class WatchResult:
    """One re-checked submission (for logs and tests)."""

    lease_id: int
    report_hash: str
    action: str
    dispute_tx: str | None = None
    error: str | None = None


class Watcher:
    """Re-checks decided attestations within their dispute window; disputes wrong ones."""

    def __init__(
        self,
        store: Store,
        verifier: Verifier,
        send_dispute: SendDispute,
        *,
        certificates: FindCertificates,
        address: str,
        clock: Callable[[], float],
        preview: PreviewDispute | None = None,
        per_tick: int = PER_TICK,
        margin_s: int = WINDOW_MARGIN_S,
        challenge_deadline: ChallengeDeadline | None = None,
        resolve: ResolveChallenge | None = None,
    ) -> None:
        if per_tick < 1:
            raise ValueError("per_tick must be >= 1")
        self.store = store
        self.verifier = verifier
        self.send_dispute = send_dispute
        self.certificates = certificates
        self.preview = preview
        self.address = address.lower()
        self.clock = clock
        self.per_tick = per_tick
        self.margin_s = margin_s
        self.challenge_deadline = challenge_deadline
        self.resolve = resolve
        self.conditions = RepeatedConditions(log)
        # (lease id, report hash) -> when to check it again (its check waits for AMD's KDS).
        self._waiting: dict[tuple[int, str], float] = {}

    def candidates(self) -> list[tuple[int, str, AttestationState]]:
        """Decided submissions still in their window, undisputed, with evidence, that this
        watcher has not checked (or whose dispute it has not sent yet); oldest verdict first."""
        now = int(self.clock())
        checked = exists().where(
            DisputeCheck.lease_id == Attestation.lease_id,
            DisputeCheck.report_hash == Attestation.report_hash,
            DisputeCheck.watcher == self.address,
            # A dispute decided on but not sent (a crash in between) is tried again.
            or_(
                DisputeCheck.action != Action.DISPUTE.value,
                DisputeCheck.dispute_tx.is_not(None),
                DisputeCheck.error.is_not(None),
            ),
        )
        disputed = exists().where(
            Dispute.lease_id == Attestation.lease_id,
            Dispute.report_hash == Attestation.report_hash,
        )
        uploaded = exists().where(Evidence.report_hash == Attestation.report_hash)
        # At most per_tick are added per pass, each kept KDS_RETRY_S: bounded.
        self._waiting = {key: at for key, at in self._waiting.items() if at > now}
        with self.store.session() as session:
            rows = session.execute(
                select(Attestation.lease_id, Attestation.report_hash, Attestation.status)
                .where(
                    Attestation.status.in_((AttestationState.VERIFIED, AttestationState.REJECTED)),
                    Attestation.disputable_until > now + self.margin_s,
                    ~checked,
                    ~disputed,
                    uploaded,
                )
                .order_by(Attestation.disputable_until, Attestation.lease_id)
                .limit(self.per_tick + len(self._waiting))
            ).all()
        found = [(int(lease), str(report), status) for lease, report, status in rows]
        return [c for c in found if (c[0], c[1]) not in self._waiting][: self.per_tick]

    def run(self) -> list[WatchResult]:
        """One pass: check up to `per_tick` decided submissions; dispute where due; resolve
        the challenges this watcher's disputes opened once nobody defended them in time."""
        results = [
            self.check(lease, report, verdict) for lease, report, verdict in self.candidates()
        ]
        return results + self.resolve_due()

    def challenged(self) -> list[tuple[int, str]]:
        """This watcher's sent disputes not yet settled on chain (no `AttestationDisputed`
        indexed): each may have opened a challenge (oldest first, at most `per_tick`)."""
        settled = exists().where(
            Dispute.lease_id == DisputeCheck.lease_id,
            Dispute.report_hash == DisputeCheck.report_hash,
        )
        with self.store.session() as session:
            rows = session.execute(
                select(DisputeCheck.lease_id, DisputeCheck.report_hash)
                .where(
                    DisputeCheck.watcher == self.address,
                    DisputeCheck.action == Action.DISPUTE.value,
                    DisputeCheck.dispute_tx.is_not(None),
                    ~settled,
                )
                .order_by(DisputeCheck.checked_at, DisputeCheck.lease_id)
                .limit(self.per_tick)
            ).all()
        return [(int(lease), str(report)) for lease, report in rows]

    def resolve_due(self) -> list[WatchResult]:
        """Resolve each challenge this watcher opened whose deadline has passed undefended
        (the court reverses the Verified verdict and pays the bond back with the reward). A
        defended one is settled by the defence (then `AttestationDisputed` is indexed)."""
        if self.challenge_deadline is None or self.resolve is None:
            return []
        now = int(self.clock())
        results: list[WatchResult] = []
        for lease_id, report_hash in self.challenged():
            try:
                deadline = self.challenge_deadline(lease_id, report_hash)
                if deadline == 0 or now <= deadline:
                    continue  # none pending (settled, not yet indexed) or still defensible
                tx_hash = self.resolve(lease_id, report_hash)
            except ChainError as exc:
                results.append(self._retry(lease_id, report_hash, exc))
                continue
            log.warning("lease %s: challenge of %s undefended: resolved", lease_id, report_hash)
            results.append(WatchResult(lease_id, report_hash, RESOLVED, dispute_tx=tx_hash))
        return results

    def check(self, lease_id: int, report_hash: str, verdict: AttestationState) -> WatchResult:
        """Re-check one decided submission and act on a disagreement (idempotent)."""
        bundle, assessment, later = self._assess(lease_id, report_hash, verdict)
        if later is not None:
            # The evidence's certificates failed and AMD's KDS has not answered yet: no
            # dispute on them (the report may well be genuine); nothing is recorded.
            self._waiting[(lease_id, report_hash)] = self.clock() + KDS_RETRY_S
            return self._retry(lease_id, report_hash, later)
        if bundle is None or assessment is None:
            self._record(lease_id, report_hash, verdict, False, [], NO_EVIDENCE)
            return WatchResult(lease_id, report_hash, NO_EVIDENCE)
        action: str = assessment.action
        error: str | None = None
        certs: DisputeCertificates | None = None
        if assessment.action is Action.DISPUTE:
            try:
                try:
                    certs = self.certificates(bundle)
                except DisputeEvidenceError:
                    if verdict != AttestationState.VERIFIED:
                        raise
                    # No certificate proves the report false on chain (a VLEK, a masked
                    # CHIP_ID, no genuine VCEK to be had): against a Verified verdict the
                    # dispute opens a challenge the defender must answer.
                    certs = challenge_certificates(bundle)
                overturns = self.preview(lease_id, bundle, certs) if self.preview else None
            except DisputeEvidenceError as exc:
                # No certificate the chain would accept (e.g. the chip's genuine VCEK).
                overturns, error = False, str(exc)[:500]
            except ContractRevert as exc:
                if not exc.name.startswith(_REFUSALS):
                    return self._retry(lease_id, report_hash, exc)
                # The court refuses the dispute itself: window closed, already disputed,
                # evidence that cannot show the truth either way.
                overturns, error = False, str(exc)[:500]
            except ChainError as exc:
                return self._retry(lease_id, report_hash, exc)
            if overturns is False:
                # The chain would not side with this check: keep the bond.
                action = Action.NOT_DISPUTABLE
                error = error or "the registry's check would uphold the verdict"
        if action != Action.DISPUTE:
            if action == Action.NOT_DISPUTABLE:
                log.warning(
                    "lease %s: verdict %s on %s is wrong by this verifier's check (%s) but not"
                    " disputable: %s",
                    lease_id,
                    verdict,
                    report_hash,
                    ", ".join(assessment.reasons),
                    error or assessment.explanation,
                )
            self._record(
                lease_id, report_hash, verdict, assessment.ok, assessment.reasons, action, error
            )
            return WatchResult(lease_id, report_hash, action, error=error)
        # Recorded before sending: a crash leaves a row that the next pass sends from.
        self._record(lease_id, report_hash, verdict, assessment.ok, assessment.reasons, action)
        log.warning(
            "lease %s: disputing verdict %s on %s: %s",
            lease_id,
            verdict,
            report_hash,
            assessment.explanation,
        )
        assert certs is not None  # found for every dispute above
        try:
            tx_hash = self.send_dispute(lease_id, bundle, certs)
        except (ChainError, DisputeEvidenceError) as exc:
            # Window closed meanwhile, someone else disputed first, bond not affordable:
            # recorded and not retried (the registry decides one dispute per submission).
            message = str(exc)[:500]
            log.warning("lease %s: dispute of %s not sent: %s", lease_id, report_hash, message)
            self._update(lease_id, report_hash, action=MISSED, error=message)
            return WatchResult(lease_id, report_hash, MISSED, error=message)
        self._update(lease_id, report_hash, dispute_tx=tx_hash)
        return WatchResult(lease_id, report_hash, Action.DISPUTE.value, dispute_tx=tx_hash)

    def _retry(self, lease_id: int, report_hash: str, exc: Exception | str) -> WatchResult:
        """Not this verdict's fault (no tokens for the bond, the chain unreachable): nothing
        is recorded, the next pass tries again; reported once until it clears."""
        self.conditions.report(
            (lease_id, report_hash),
            "lease %s: cannot dispute %s yet: %s",
            lease_id,
            report_hash,
            str(exc)[:300],
        )
        return WatchResult(lease_id, report_hash, RETRY, error=str(exc)[:500])

    # --- pieces ---------------------------------------------------------------------------

    def _assess(
        self, lease_id: int, report_hash: str, verdict: AttestationState
    ) -> tuple[EvidenceBundle | None, Assessment | None, str | None]:
        """(the bundle, our assessment of the verdict, why to check again later instead)."""
        with self.store.session() as session:
            lease = session.get(Lease, lease_id)
            attestation = session.get(Attestation, lease_id)
            # The bundle the verifiers judged: the first uploaded for the report.
            evidence = session.scalar(
                select(Evidence)
                .where(Evidence.report_hash == report_hash)
                .order_by(Evidence.created_at, Evidence.hash)
                .limit(1)
            )
            if lease is None or attestation is None or evidence is None:
                return None, None, None
            try:
                bundle = decode(evidence.content)
            except EvidenceFormatError:
                return None, None, None
            # This verifier's own appraisal, if it judged the evidence while it was pending.
            own = session.scalar(
                select(Verification).where(
                    Verification.lease_id == lease_id,
                    Verification.report_hash == report_hash,
                    Verification.evidence_hash == evidence.hash,
                )
            )
            if own is not None and not set(own.reason_codes) & _BUNDLE_METADATA:
                ok, reasons = own.ok, list(own.reason_codes)
            else:
                judged = self.verifier.appraise(session, lease, attestation, evidence.content)
                if judged.undecided is not None and judged.retry:
                    return bundle, None, judged.undecided
                # Undecided for good (a VLEK, a masked CHIP_ID, a stale genuine VCEK): the
                # evidence's own check, as before; the EVM's preview guards the bond.
                ok, reasons = judged.ok, judged.reasons
        return bundle, assess(verdict.value, ok, reasons), None

    def _record(
        self,
        lease_id: int,
        report_hash: str,
        verdict: AttestationState,
        ok: bool,
        reasons: list[str] | tuple[str, ...],
        action: str,
        error: str | None = None,
    ) -> None:
        with self.store.session() as session:
            row = session.scalar(
                select(DisputeCheck).where(
                    DisputeCheck.lease_id == lease_id,
                    DisputeCheck.report_hash == report_hash,
                    DisputeCheck.watcher == self.address,
                )
            )
            if row is None:
                row = DisputeCheck(lease_id=lease_id, report_hash=report_hash, watcher=self.address)
                session.add(row)
            row.verdict = verdict
            row.ok = ok
            row.reason_codes = list(reasons)
            row.action = str(action)
            row.error = error
            row.checked_at = datetime.fromtimestamp(self.clock(), UTC)

    def _update(self, lease_id: int, report_hash: str, **values: str | None) -> None:
        with self.store.session() as session:
            row = session.scalar(
                select(DisputeCheck).where(
                    DisputeCheck.lease_id == lease_id,
                    DisputeCheck.report_hash == report_hash,
                    DisputeCheck.watcher == self.address,
                )
            )
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)
