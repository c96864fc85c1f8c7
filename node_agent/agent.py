"""The node agent's domain logic: accept, launch, attest, re-attest, stop, reconcile, heartbeat.

Every step is idempotent and reads the chain first, so a redelivered task, a retry after a
crash, and the reconciler all converge on the same state. The store records a step before
the agent acts on what follows it: the report for a nonce is stored before it is uploaded
or submitted, so one nonce never gets two different reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from cvm.api_client import ApiClient
from cvm.attestation.abi import parse
from cvm.attestation.binding import build_report_data
from cvm.attestation.evidence import EvidenceBundle, report_hash
from cvm.chain import (
    AttestationStatus,
    ChainClient,
    ChainError,
    ContractRevert,
    Lease,
    LeaseStatus,
)
from cvm.eip712 import Domain, Heartbeat, sign_heartbeat
from node_agent.errors import AgentError, CapacityExceeded, LeaseNotOurs
from node_agent.faults import crash_point
from node_agent.launcher.base import GuestSpec, GuestState, Launcher
from node_agent.lease_terms import lease_terms
from node_agent.locks import lease_lock
from node_agent.store import (
    AgentStore,
    LeaseRecord,
    LeaseState,
    Resources,
    Submission,
    SubmissionState,
)

log = logging.getLogger(__name__)

# Reverts by which the chain says this nonce was already used (by our own earlier attempt).
_ALREADY_SUBMITTED = ("AttestationRegistry_StaleNonce", "AttestationRegistry_AttestationPending")


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconciler pass changed (for logs and tests)."""

    adopted: list[int]
    relaunched: list[int]
    stopped: list[int]
    attested: list[int]


class NodeAgent:
    """One node key's agent: its chain client, launcher, store and backend client."""

    def __init__(
        self,
        chain: ChainClient,
        launcher: Launcher,
        store: AgentStore,
        capacity: Resources,
        lock_dir: Path,
        *,
        api: ApiClient | None = None,
        reattest_margin_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if chain.account is None:
            raise AgentError("the node agent needs the node key to act on chain")
        self.chain = chain
        self.account: LocalAccount = chain.account
        self.launcher = launcher
        self.store = store
        self.capacity = capacity
        self.lock_dir = lock_dir
        self.api = api
        self.reattest_margin_s = reattest_margin_s
        self.clock = clock

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _ours(self, lease: Lease) -> bool:
        return lease.node_key.lower() == self.address.lower()

    # --- one lease --------------------------------------------------------------------
    def handle_lease(self, lease_id: int) -> LeaseState:
        """Take a matched lease as far as it goes: accept, launch, attest."""
        with lease_lock(self.lock_dir, lease_id):
            return self._advance(lease_id)

    def _advance(self, lease_id: int) -> LeaseState:
        lease = self.chain.leases.get_lease(lease_id)
        record = self.store.get_lease(lease_id)
        if lease.status == LeaseStatus.NONE:
            raise LeaseNotOurs(f"lease {lease_id} does not exist")
        if lease.status == LeaseStatus.CLOSED or (
            lease.status == LeaseStatus.ACTIVE and not self._ours(lease)
        ):
            return self._retire(lease_id, record, f"lease is {lease.status.name} on chain")
        if record is None or record.state == LeaseState.REFUSED:
            record = self._reserve(lease)  # raises CapacityExceeded when it does not fit
        just_accepted = False
        if lease.status == LeaseStatus.OPEN:
            lease, just_accepted = self._accept(lease)
            if not self._ours(lease):
                return self._retire(lease_id, record, "accepted by another node")
        if record.state == LeaseState.RESERVED:
            self.store.set_lease_state(lease_id, LeaseState.ACCEPTED)
        self._ensure_guest(record)
        if self._attest(lease_id, fresh=just_accepted):
            return LeaseState.ATTESTED
        current = self.store.get_lease(lease_id)
        return current.state if current else LeaseState.LAUNCHED

    def _reserve(self, lease: Lease) -> LeaseRecord:
        terms = lease_terms(self.chain, lease)
        resources = Resources(terms.vcpu, terms.memory_mib, terms.disk_gib)
        try:
            return self.store.reserve(
                lease.lease_id,
                resources,
                terms.expected_measurement,
                terms.reattest_interval,
                self.capacity,
            )
        except CapacityExceeded:
            if lease.status == LeaseStatus.ACTIVE and self._ours(lease):
                # Already ours on chain (e.g. the store was lost): run it rather than
                # abandon a paying renter; the capacity check guards new accepts only.
                log.warning("lease %s is ours on chain but over capacity", lease.lease_id)
                self.store.set_lease_state(lease.lease_id, LeaseState.ACCEPTED, reason="adopted")
                record = self.store.get_lease(lease.lease_id)
                assert record is not None
                return record
            raise

    def _accept(self, lease: Lease) -> tuple[Lease, bool]:
        """Accept on chain; the lease as it is now, and whether this call accepted it."""
        try:
            result = self.chain.leases.accept_lease(lease.lease_id)
            crash_point("accepted")
            self.store.set_lease_state(
                lease.lease_id, LeaseState.ACCEPTED, accept_tx=result.tx_hash
            )
            # Mined and successful: the lease is ours and active, no need to read it back.
            return replace(lease, status=LeaseStatus.ACTIVE, node_key=self.address), True
        except ContractRevert as exc:
            # Someone (another node, or our own earlier attempt) may have accepted first.
            log.info("lease %s: accept reverted: %s", lease.lease_id, exc.name)
            current = self.chain.leases.get_lease(lease.lease_id)
            if current.status == LeaseStatus.OPEN:
                # Refused for a reason of ours (stake, price, TEE): free the capacity.
                self.store.set_lease_state(lease.lease_id, LeaseState.REFUSED, reason=exc.name)
                raise LeaseNotOurs(f"lease {lease.lease_id}: accept refused: {exc}") from exc
            return current, False

    def _ensure_guest(self, record: LeaseRecord) -> bool:
        """Start the lease's guest unless it runs; True if it had to be (re)started."""
        if self.launcher.status(record.lease_id).state == GuestState.RUNNING:
            if record.state in (LeaseState.RESERVED, LeaseState.ACCEPTED):
                self.store.set_lease_state(record.lease_id, LeaseState.LAUNCHED)
            return False
        self.launcher.launch(
            GuestSpec(
                lease_id=record.lease_id,
                vcpu=record.resources.vcpu,
                memory_mib=record.resources.memory_mib,
                disk_gib=record.resources.disk_gib,
                expected_measurement=record.expected_measurement,
            )
        )
        crash_point("launched")
        if record.state in (LeaseState.RESERVED, LeaseState.ACCEPTED):
            self.store.set_lease_state(record.lease_id, LeaseState.LAUNCHED)
        return True

    def _retire(self, lease_id: int, record: LeaseRecord | None, reason: str) -> LeaseState:
        """Stop the guest and free the capacity of a lease that is not (or no longer) ours."""
        self.launcher.stop(lease_id)
        if record is None:
            return LeaseState.REFUSED
        final = LeaseState.STOPPED if record.state != LeaseState.RESERVED else LeaseState.REFUSED
        if record.state not in (LeaseState.STOPPED, LeaseState.REFUSED):
            self.store.set_lease_state(lease_id, final, reason=reason)
            log.info("lease %s: %s (%s)", lease_id, final, reason)
        return final

    # --- attestation --------------------------------------------------------------------
    def _attest(self, lease_id: int, *, force: bool = False, fresh: bool = False) -> bool:
        """Submit an attestation for the current nonce if one is due; True if one was sent.

        `fresh`: this very call accepted the lease under its lock, so nothing can have been
        submitted yet: nonce 0, no attestation (two chain reads saved on the hot path).
        """
        nonce = 0 if fresh else self._due_nonce(lease_id, force)
        if nonce is None:
            return False
        submission = self.store.get_submission(lease_id, nonce)
        if submission is None:
            report_data = build_report_data(
                self.chain.deployment.chain_id,
                self.chain.deployment.attestation_registry,
                lease_id,
                nonce,
            )
            got = self.launcher.get_report(lease_id, report_data)
            submission = self.store.record_report(
                lease_id,
                nonce,
                got.report,
                report_hash(got.report),
                got.vcek_der,
                got.cert_chain_pem,
            )
            crash_point("reported")
        if submission.state == SubmissionState.REPORTED:
            self._upload(submission)
        return self._submit(lease_id, nonce, submission.report)

    def _due_nonce(self, lease_id: int, force: bool) -> int | None:
        """The nonce to attest now, or None while the latest attestation stands."""
        latest = self.chain.attestations.attestation_of(lease_id)
        nonce = self.chain.attestations.attestation_nonce(lease_id)
        if latest.status == AttestationStatus.PENDING:
            # Submitted (perhaps by us just before a crash): the verifiers have it now.
            self._note_landed(lease_id, nonce - 1, latest.report_hash)
            self._mark_attested(lease_id)
            return None
        if latest.status == AttestationStatus.REJECTED:
            return None  # the market closes the lease; the stop path frees the guest
        if latest.status == AttestationStatus.VERIFIED:
            self._note_landed(lease_id, nonce - 1, latest.report_hash)
            due_at = latest.expires_at - self.reattest_margin_s
            if not force and self.chain.block_timestamp() < due_at:
                self._mark_attested(lease_id)
                return None
        return nonce

    def _upload(self, submission: Submission) -> None:
        evidence = EvidenceBundle(
            report=submission.report,
            vcek=submission.vcek,
            chain=submission.cert_chain,
            chain_id=self.chain.deployment.chain_id,
            registry=self.chain.deployment.attestation_registry,
            lease_id=submission.lease_id,
            nonce=submission.nonce,
        )
        if self.api is None:
            evidence_hash = "0x" + evidence.evidence_hash.hex()  # offline: nowhere to publish
        else:
            evidence_hash = self.api.upload_evidence(evidence.encode())
            crash_point("uploaded")
        self.store.record_upload(submission.lease_id, submission.nonce, evidence_hash)

    def _submit(self, lease_id: int, nonce: int, report: bytes) -> bool:
        parsed = parse(report)
        try:
            result = self.chain.attestations.submit(
                lease_id,
                nonce,
                report_hash(report),
                parsed.measurement,
                parsed.reported_tcb,
                bytes(keccak(parsed.chip_id)),
            )
        except ContractRevert as exc:
            if exc.name in (
                "AttestationRegistry_StaleNonce",
                "AttestationRegistry_AttestationPending",
            ):
                # Our earlier attempt landed after all: the next pass sees it on chain.
                log.info("lease %s nonce %s: already submitted (%s)", lease_id, nonce, exc.name)
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
        if record is not None and record.state in (LeaseState.ACCEPTED, LeaseState.LAUNCHED):
            self.store.set_lease_state(lease_id, LeaseState.ATTESTED)

    def reattest(self, lease_id: int, *, force: bool = False) -> bool:
        """Re-attest a running lease when its attestation is due (or now, if `force`)."""
        with lease_lock(self.lock_dir, lease_id):
            record = self.store.get_lease(lease_id)
            if record is None or record.state in (LeaseState.STOPPED, LeaseState.REFUSED):
                return False
            lease = self.chain.leases.get_lease(lease_id)
            if lease.status != LeaseStatus.ACTIVE or not self._ours(lease):
                self._retire(lease_id, record, f"lease is {lease.status.name} on chain")
                return False
            self._ensure_guest(record)
            return self._attest(lease_id, force=force)

    # --- stopping -----------------------------------------------------------------------
    def stop_lease(self, lease_id: int) -> LeaseState | None:
        """Stop the guest of a lease that closed or ran out (settling it if needed)."""
        with lease_lock(self.lock_dir, lease_id):
            record = self.store.get_lease(lease_id)
            lease = self.chain.leases.get_lease(lease_id)
            if lease.status == LeaseStatus.ACTIVE and self._ours(lease):
                if not self._exhausted(lease):
                    return record.state if record else None  # still paid for: keep running
                self.chain.leases.settle(lease_id)
            return self._retire(lease_id, record, "lease closed or ran out")

    def _exhausted(self, lease: Lease) -> bool:
        """Whether the whole deposit is earned: the renter pays for no more time."""
        return lease.deposit > 0 and self.chain.leases.earned(lease.lease_id) >= lease.deposit

    # --- the reconciler -----------------------------------------------------------------
    def reconcile(self) -> ReconcileResult:
        """Converge chain, store and running guests (at start and on a schedule)."""
        adopted: list[int] = []
        relaunched: list[int] = []
        stopped: list[int] = []
        attested: list[int] = []
        known = {record.lease_id: record for record in self.store.leases()}
        # Leases the chain says are ours but the store forgot (e.g. killed right after accept).
        for lease_id in self.chain.leases.leases_accepted_by(
            self.address, self.chain.deployment.start_block
        ):
            if lease_id in known:
                continue
            record = self.store.get_lease(lease_id)
            if record is not None and record.state == LeaseState.STOPPED:
                continue
            lease = self.chain.leases.get_lease(lease_id)
            if lease.status == LeaseStatus.ACTIVE and self._ours(lease):
                adopted.append(lease_id)
                known[lease_id] = self._reserve(lease)
        running = {guest.lease_id for guest in self.launcher.running()}
        for lease_id in sorted(set(known) | running):
            try:
                self._reconcile_one(lease_id, adopted, relaunched, stopped, attested)
            except (AgentError, ChainError) as exc:
                # One lease's trouble must not keep the others from converging.
                log.warning("reconcile lease %s: %s", lease_id, exc)
        return ReconcileResult(adopted, relaunched, stopped, attested)

    def _reconcile_one(
        self,
        lease_id: int,
        adopted: list[int],
        relaunched: list[int],
        stopped: list[int],
        attested: list[int],
    ) -> None:
        with lease_lock(self.lock_dir, lease_id):
            record = self.store.get_lease(lease_id)
            lease = self.chain.leases.get_lease(lease_id)
            active = lease.status == LeaseStatus.ACTIVE and self._ours(lease)
            if record is None or record.state not in (
                LeaseState.RESERVED,
                LeaseState.ACCEPTED,
                LeaseState.LAUNCHED,
                LeaseState.ATTESTED,
            ):
                if not active:
                    self._retire(lease_id, record, "not an active lease of this node")
                    stopped.append(lease_id)
                    return
                record = self._reserve(lease)
                adopted.append(lease_id)
            if lease.status == LeaseStatus.OPEN and record.state == LeaseState.RESERVED:
                self._advance(lease_id)  # a dispatched lease we had not accepted yet
                return
            if not active or self._exhausted(lease):
                if active:
                    self.chain.leases.settle(lease_id)
                self._retire(lease_id, record, f"lease is {lease.status.name} on chain")
                stopped.append(lease_id)
                return
            restarted = self._ensure_guest(record)
            if restarted:
                relaunched.append(lease_id)
            # A guest started afresh is not the one the standing attestation was about.
            if self._attest(lease_id, force=restarted):
                attested.append(lease_id)

    # --- heartbeat ----------------------------------------------------------------------
    def heartbeat(self) -> Heartbeat:
        """Sign and send the free capacity to the backend (needs an API client)."""
        if self.api is None:
            raise AgentError("no backend API configured: heartbeats have nowhere to go")
        used = self.store.used()
        free = self.capacity.minus(used)
        beat = Heartbeat(
            node=self.address,
            free_vcpus=max(free.vcpu, 0),
            free_memory_mib=max(free.memory_mib, 0),
            free_disk_gib=max(free.disk_gib, 0),
            running_leases=len(self.store.leases()),
            timestamp=int(self.clock()),
        )
        domain = Domain(self.chain.deployment.chain_id, self.chain.deployment.node_registry)
        self.api.send_heartbeat(sign_heartbeat(beat, domain, self.account.key))
        return beat
