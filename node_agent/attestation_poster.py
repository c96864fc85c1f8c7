"""The attestation poster: obtains a lease's report for the current nonce, uploads the
evidence to the backend and submits the attestation on chain, once per nonce.

It also decides when a standing attestation is due again (re-attestation). The store
records each step before the next one acts on the world: the report for a nonce is
stored before it is uploaded or submitted, so one nonce never gets two reports.

Right before it submits, it asks the backend whether another lease claimed the guest's key
first (the verifiers' rule, `GET /v1/guest-keys/{hash}/claim`): a renter with root in guests
on two nodes can copy one guest's keys into the other, and only the backend sees both.
"""

from __future__ import annotations

import hashlib
import logging

from eth_utils import keccak

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import GuestKeyClaimView
from cvm.attestation.abi import parse
from cvm.attestation.appraisal import appraise_lease_evidence
from cvm.attestation.binding import GuestKey, GuestKeyError
from cvm.attestation.errors import AttestationError
from cvm.attestation.evidence import EvidenceBundle, report_hash
from cvm.chain import AttestationStatus, ChainClient, ContractRevert, TxResult
from cvm.eip712 import Domain
from node_agent.errors import AgentError, GuestKeyClaimed, KeyClaimUnknown, LauncherError
from node_agent.faults import crash_point
from node_agent.launcher.base import GuestReport, Launcher
from node_agent.store import AgentStore, LeaseState, Submission, SubmissionState

log = logging.getLogger(__name__)

# Reverts by which the chain says this nonce was already used (by our own earlier attempt).
_ALREADY_SUBMITTED = ("AttestationRegistry_StaleNonce", "AttestationRegistry_AttestationPending")
# Not yet allowed (a race with the check in `_due_nonce`): the next pass tries again.
_NOT_YET = ("AttestationRegistry_ReattestTooEarly",)
# The first attestation's deadline passed: the lease is a missed first attestation, and a late
# report is refused (it must not erase the fault); only the renter's close or a report ends it now.
_TOO_LATE = ("AttestationRegistry_AttestationDeadlinePassed",)


class AttestationPoster:
    """Attests the running guests of one node key. The caller holds the lease's lock and
    has made sure its guest runs."""

    def __init__(
        self,
        chain: ChainClient,
        launcher: Launcher,
        store: AgentStore,
        *,
        api: ApiClient | None = None,
        reattest_margin_s: int = 60,
    ) -> None:
        self.chain = chain
        self.launcher = launcher
        self.store = store
        self.api = api
        self.reattest_margin_s = reattest_margin_s
        # Leases whose relaunched guest asked the backend for a challenge (once per relaunch;
        # a new relaunch forgets it). In memory: after an agent restart it asks once more,
        # which the backend takes as the same request.
        self._challenge_asked: set[int] = set()
        # The claim on a report's guest key the backend answered its upload with, by (lease,
        # nonce), until `_check_claim` takes it (it follows the upload in the same call).
        self._claims_at_upload: dict[tuple[int, int], GuestKeyClaimView | None] = {}

    def attest(
        self, lease_id: int, *, force: bool = False, fresh: bool = False, restarted: bool = False
    ) -> bool:
        """Submit an attestation for the current nonce if one is due; True if one was sent.

        `force`: attest now even if the standing (verified) one is not yet due, e.g. for a
        guest started afresh. `fresh`: the caller accepted the lease under its lock just
        now, so nothing can have been submitted yet by this node: no attestation, and the
        nonce the registry expects next (0, or where the count of a lease that failed over
        to this node stands: it keeps counting, so no report for another node can be
        replayed; one chain read saved on the hot path). `restarted`: the caller
        (re)started the guest just now, so a report kept from before (a crash between
        storing and submitting it) is the dead guest's and is dropped for a new one.
        """
        if restarted:
            self._challenge_asked.discard(lease_id)  # a new guest: it may ask again
        if fresh:
            nonce: int | None = self.chain.attestations.attestation_nonce(lease_id)
        else:
            nonce = self._due_nonce(lease_id, force)
        if nonce is None:
            return False
        submission, signer = self._evidence(lease_id, nonce, restarted=restarted)
        return self._submit(lease_id, nonce, submission.report, signer)

    def accept_and_attest(
        self, lease_id: int, nonce: int, *, renter: str | None = None, restarted: bool = False
    ) -> TxResult:
        """The combined path (`CVM_NODE_ACCEPT_MODE=combined`): the lease is still OPEN and its
        guest runs here; take its report for `nonce` (the registry's nonce of the lease, fixed
        while it is open), appraise, store and upload it exactly as `attest` does, then accept
        the lease and submit the report in one transaction (`acceptAndSubmit`). Both happen or
        neither: a ContractRevert (another node took the lease, the renter closed it) leaves
        nothing on chain, and the caller stops the guest. On success the submission is SUBMITTED
        in the store; the lease's own state is the caller's to record. `renter`: the lease's
        (fixed for its life), when the caller read the lease just now (one chain read saved)."""
        submission, signer = self._evidence(lease_id, nonce, restarted=restarted, renter=renter)
        parsed = parse(submission.report)
        self._check_claim(lease_id, nonce)  # after the upload: our own claim is on record
        result = self.chain.attestations.accept_and_submit(
            lease_id,
            nonce,
            report_hash(submission.report),
            parsed.measurement,
            parsed.reported_tcb,
            bytes(keccak(parsed.chip_id)),
            signer=signer,
        )
        crash_point("accepted_submitted")  # on chain, the store still says RESERVED
        self.store.record_submitted(lease_id, nonce, result.tx_hash)
        log.info("lease %s: accepted with its attestation for nonce %s", lease_id, nonce)
        return result

    def _evidence(
        self, lease_id: int, nonce: int, *, restarted: bool, renter: str | None = None
    ) -> tuple[Submission, str]:
        """The stored report for (lease, nonce), taken from the guest and appraised first if
        there is none (or only a dead guest's), uploaded; with the guest's attested signer."""
        # Only an answer given in this call counts: claims proven since may have changed it.
        self._claims_at_upload.pop((lease_id, nonce), None)
        submission = self.store.get_submission(lease_id, nonce)
        if restarted and submission is not None and submission.state != SubmissionState.SUBMITTED:
            # Its guest key died with the old guest: submitting it would attest a guest that
            # no longer runs (and secrets sealed to it would never open).
            log.info("lease %s nonce %s: dropping the previous guest's report", lease_id, nonce)
            self.store.drop_report(lease_id, nonce)
            submission = None
        if submission is None:
            got = self.launcher.get_report(lease_id, nonce)
            self._appraise(lease_id, nonce, got, renter)
            submission = self.store.record_report(
                lease_id,
                nonce,
                got.report,
                report_hash(got.report),
                got.vcek_der,
                got.cert_chain_pem,
                got.guest_key,
            )
            crash_point("reported")
        # The guest's attested signer comes from its guest key; a report without a well-formed
        # key is never uploaded nor submitted (a verifier would reject it, and slash the node).
        try:
            signer = GuestKey.parse(submission.guest_key).signer
        except GuestKeyError as exc:
            raise AgentError(
                f"lease {lease_id} nonce {nonce}: the guest's key is malformed ({exc}); "
                "not submitting its report"
            ) from exc
        if submission.state == SubmissionState.REPORTED:
            self._upload(submission)
        return submission, signer

    def _appraise(
        self, lease_id: int, nonce: int, got: GuestReport, renter: str | None = None
    ) -> None:
        """Refuse (LauncherError, nothing stored) a report the verifiers would reject, checked
        exactly as they check it: the guest is the renter's, and a rejected report slashes
        the node, so a lying guest may keep the node from attesting but never make it submit
        a report that fails."""
        record = self.store.get_lease(lease_id)
        if record is None:
            raise LauncherError(f"lease {lease_id}: no record of its expected measurement")
        if renter is None:
            renter = self.chain.leases.get_lease(lease_id).renter
        deployment = self.chain.deployment
        try:
            bundle = EvidenceBundle(
                report=got.report, vcek=got.vcek_der, chain=got.cert_chain_pem,
                chain_id=deployment.chain_id, registry=deployment.attestation_registry,
                lease_id=lease_id, nonce=nonce, guest_key=got.guest_key,
            )  # fmt: skip
        except AttestationError as exc:
            raise LauncherError(
                f"lease {lease_id}: the guest's evidence is malformed: {exc}"
            ) from exc
        appraisal = appraise_lease_evidence(
            bundle,
            measurement=record.expected_measurement,
            renter=renter,
            trusted_roots=self.launcher.trusted_roots,
        )
        reasons = [f"{f.reason}: {f.message}" for f in appraisal.failures]
        # The verifiers leave unvoted a guest key another live lease claimed first (one guest,
        # one lease): a renter's guest answering with the key of its other lease on this node
        # would get this node's attestation missed, and slashed. Across nodes only the backend
        # knows (see README).
        for other in self.store.leases():
            if other.lease_id != lease_id and any(
                kept.guest_key == got.guest_key for kept in self.store.submissions(other.lease_id)
            ):
                reasons.append(f"GUEST_KEY_REUSED: the guest key of lease {other.lease_id}")
        if reasons:
            why = "; ".join(reasons)
            log.warning("lease %s nonce %s: not submitting the guest's report: %s",
                        lease_id, nonce, why)  # fmt: skip
            raise LauncherError(f"lease {lease_id}: the guest's report would be rejected: {why}")

    def _check_claim(self, lease_id: int, nonce: int) -> None:
        """Refuse (GuestKeyClaimed, the report dropped) to submit a guest key another lease
        claimed first, or (KeyClaimUnknown, the report kept) while the backend cannot say.

        Asked after the upload, so this lease's own claim is on record first: of two nodes
        given the same key at once, the one whose evidence landed first submits and the
        other learns of it here. Never submitted blind: a rejected report slashes the
        node's bond, while a lease that cannot attest in time is declined for free (see
        `LeaseLifecycle.attest_or_give_back`). Claims not yet live count too: that lease's
        pending attestation would make the verifiers reject this report."""
        submission = self.store.get_submission(lease_id, nonce)
        if self.api is None or submission is None:
            return  # offline: no evidence is published, there is nobody to ask
        if submission.state == SubmissionState.SUBMITTED:
            return  # already on chain (the chain refuses the nonce again): nothing to decide
        key_hash = "0x" + hashlib.sha256(submission.guest_key).hexdigest()
        try:
            if (lease_id, nonce) in self._claims_at_upload:
                claim = self._claims_at_upload.pop((lease_id, nonce))
            else:  # uploaded before (e.g. before a restart), or by a backend that did not say
                claim = self.api.guest_key_claim(key_hash, lease_id=lease_id)
        except ApiError as exc:
            log.warning("lease %s nonce %s: not submitting: cannot tell whether the guest's"
                        " key is claimed: %s", lease_id, nonce, exc)  # fmt: skip
            raise KeyClaimUnknown(
                f"lease {lease_id}: the backend cannot say whether the guest's key is free: {exc}"
            ) from exc
        if claim is None:
            return
        # Its key will never be this lease's: a new report (of a new guest) is needed.
        self.store.drop_report(lease_id, nonce)
        state = "attested" if claim.live else "claimed (its attestation pending)"
        why = (
            f"GUEST_KEY_CLAIMED: the guest key {key_hash} is lease {claim.lease_id}'s,"
            f" {state} since {claim.claimed_at.isoformat()}"
        )
        log.warning("lease %s nonce %s: not submitting the guest's report: %s",
                    lease_id, nonce, why)  # fmt: skip
        raise GuestKeyClaimed(f"lease {lease_id}: the guest's report would be rejected: {why}")

    def _due_nonce(self, lease_id: int, force: bool) -> int | None:
        """The nonce to attest now, or None while the latest attestation stands."""
        latest = self.chain.attestations.attestation_of(lease_id)
        nonce = self.chain.attestations.attestation_nonce(lease_id)
        record = self.store.get_lease(lease_id)
        # A guest (re)launched after the standing attestation owes its own (its key is new).
        force = force or (record is not None and record.state == LeaseState.RELAUNCHED)
        if latest.status == AttestationStatus.PENDING:
            # Submitted (perhaps by us just before a crash): the verifiers have it now.
            self._note_landed(lease_id, nonce - 1, latest.report_hash)
            self._mark_attested(lease_id)
            return None
        if latest.status == AttestationStatus.REJECTED:
            return None  # the market closes or moves the lease; the stop path frees the guest
        if latest.status == AttestationStatus.VERIFIED:
            self._note_landed(lease_id, nonce - 1, latest.report_hash)
            due_at = latest.expires_at - self.reattest_margin_s
            now = self.chain.block_timestamp()
            if not force and now < due_at:
                self._mark_attested(lease_id)
                return None
            # The registry refuses a re-attestation in the first half of the interval unless a
            # challenge came after it (a node must not keep its lease Pending to block a close):
            # a relaunched guest waits for that, a challenged lease answers at once.
            earliest = (latest.submitted_at + latest.expires_at) // 2
            if now < earliest and self.chain.attestations.challenged_at(lease_id) <= (
                latest.submitted_at
            ):
                # Not marked attested: a relaunched guest still owes its own report.
                log.debug("lease %s: re-attestation possible from %s", lease_id, earliest)
                if record is not None and record.state == LeaseState.RELAUNCHED:
                    self._ask_for_challenge(lease_id, earliest)
                return None
        return nonce

    def _ask_for_challenge(self, lease_id: int, earliest: int) -> None:
        """Ask the backend (node-signed) to have the lease challenged, once per relaunch: the
        registry then takes the relaunched guest's report at once (the reconciler answers a
        challenge on its next pass) instead of from `earliest`, and the key holders release
        its key with nobody awake. Only this node's own pay is at stake in a challenge."""
        if lease_id in self._challenge_asked or self.api is None or self.chain.account is None:
            return
        deployment = self.chain.deployment
        try:
            self.api.request_challenge(
                lease_id,
                node_key=self.chain.account.key,
                domain=Domain(deployment.chain_id, deployment.node_registry),
            )
        except ApiError as exc:
            if exc.status_code in (0, 429) or (exc.status_code >= 500 and exc.status_code != 501):
                # Not heard (or busy): the next pass asks again.
                log.warning("lease %s: could not ask for a challenge: %s", lease_id, exc)
                return
            # Refused (not ours any more, no key service: 501, or a backend predating it): do
            # not insist; the guest attests from `earliest` on.
            log.warning("lease %s: challenge request refused: %s", lease_id, exc)
        else:
            log.info("lease %s: relaunched guest may attest from %s; asked the backend for a"
                     " challenge to attest now", lease_id, earliest)  # fmt: skip
        self._challenge_asked.add(lease_id)

    def _upload(self, submission: Submission) -> None:
        evidence = EvidenceBundle(
            report=submission.report,
            vcek=submission.vcek,
            chain=submission.cert_chain,
            chain_id=self.chain.deployment.chain_id,
            registry=self.chain.deployment.attestation_registry,
            lease_id=submission.lease_id,
            nonce=submission.nonce,
            guest_key=submission.guest_key,
        )
        if self.api is None:
            evidence_hash = "0x" + evidence.evidence_hash.hex()  # offline: nowhere to publish
        else:
            account = self.chain.account
            if account is None:
                raise AgentError("the attestation poster needs the node key to sign uploads")
            deployment = self.chain.deployment
            # Signed by the node key (EIP-712 EvidenceUpload): the backend stores evidence
            # only from the node of the lease it names, for that lease, nonce and bytes.
            receipt = self.api.upload_evidence_receipt(
                evidence.encode(),
                node_key=account.key,
                domain=Domain(deployment.chain_id, deployment.node_registry),
            )
            evidence_hash = receipt.hash
            if receipt.key_claim_checked:
                # The answer `_check_claim` would ask for next, given with the upload.
                self._claims_at_upload[(submission.lease_id, submission.nonce)] = receipt.key_claim
            crash_point("uploaded")
        self.store.record_upload(submission.lease_id, submission.nonce, evidence_hash)

    def _submit(self, lease_id: int, nonce: int, report: bytes, signer: str) -> bool:
        parsed = parse(report)
        self._check_claim(lease_id, nonce)  # after the upload: our own claim is on record
        try:
            result = self.chain.attestations.submit(
                lease_id,
                nonce,
                report_hash(report),
                parsed.measurement,
                parsed.reported_tcb,
                bytes(keccak(parsed.chip_id)),
                signer=signer,
            )
        except ContractRevert as exc:
            if exc.name in _ALREADY_SUBMITTED:
                # Our earlier attempt landed after all: the next pass sees it on chain.
                log.info("lease %s nonce %s: already submitted (%s)", lease_id, nonce, exc.name)
                return False
            if exc.name in _NOT_YET:
                log.info("lease %s nonce %s: not yet (%s)", lease_id, nonce, exc.name)
                return False
            if exc.name in _TOO_LATE:
                log.warning("lease %s: first attestation too late (%s)", lease_id, exc.name)
                return False
            raise
        crash_point("submitted")
        self.store.record_submitted(lease_id, nonce, result.tx_hash)
        self._mark_attested(lease_id)
        log.info("lease %s: attestation submitted for nonce %s", lease_id, nonce)
        return True

    def _note_landed(self, lease_id: int, nonce: int, on_chain_hash: bytes) -> None:
        stored = self.store.get_submission(lease_id, nonce)
        if stored is not None and stored.state != SubmissionState.SUBMITTED:
            if stored.report_hash == on_chain_hash:
                self.store.record_submitted(lease_id, nonce, None)

    def _mark_attested(self, lease_id: int) -> None:
        record = self.store.get_lease(lease_id)
        if record is not None and record.state in (
            LeaseState.ACCEPTED,
            LeaseState.LAUNCHED,
            LeaseState.RELAUNCHED,
        ):
            self.store.set_lease_state(lease_id, LeaseState.ATTESTED)
