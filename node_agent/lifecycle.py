"""The lease lifecycle on one node: reserve capacity, accept on chain, launch the guest,
have it attested, and settle and stop it when the lease closes or runs out.

Every step is idempotent and reads the chain first, so a redelivered task, a retry after a
crash and the reconciler all converge on the same state. One lock per lease keeps the
steps of a lease from interleaving; methods documented "under the lease's lock" expect
the caller to hold it (see `locked`).

Speculative boot (on by default): a dispatched lease's guest starts booting while the accept
is being mined. Its binding (HOST_DATA: deployment, lease, renter) is fixed at launch from
the lease the renter created, which no accept changes. It is asked for its first report only
once the accept is final: mined for this node, `accept_confirmations` deep, and the lease
read again at the head (`await_final_accept`, which re-reads it while the guest boots). An
accept that loses (another node, the renter closed, a revert) or that a reorg drops stops
the guest and removes its disk before it ever attested (`drop_unaccepted`).

Combined accept (`accept_mode="combined"`, with speculative boot): the guest boots while the
lease is still OPEN, gives its first report for the registry's nonce of the lease (fixed while
it is open), the evidence is uploaded, and one transaction accepts the lease and submits the
report (`AttestationRegistry.acceptAndSubmit`): three inclusions per lease (create, this,
confirm) instead of four. Both effects are one atomic step, so nothing is attested before the
accept; a lost race or a closed lease reverts it and the guest is stopped, and a reorg that
drops it leaves the lease OPEN with both gone (`accept_dropped`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

from cvm.api_client import ApiError
from cvm.chain import ChainClient, ChainError, ContractRevert, Lease, LeaseStatus
from node_agent.attestation_poster import AttestationPoster
from node_agent.errors import (
    AgentError,
    CapacityExceeded,
    GuestKeyClaimed,
    HostUnsupported,
    ImageRefused,
    KeyClaimUnknown,
    LauncherError,
    LeaseNotOurs,
    LeaseUnservable,
)
from node_agent.faults import crash_point
from node_agent.image_fetch import ImageFetcher
from node_agent.keepalive import ReservationKeepalive
from node_agent.launcher.base import GuestSpec, GuestState, HostBinding, Launcher
from node_agent.lease_terms import LeaseTerms, decline_deadline, lease_terms
from node_agent.locks import lease_lock
from node_agent.measurements import unservable_reason
from node_agent.private_spec import PrivateSpecSource
from node_agent.store import (
    ACTIVE_STATES,
    AgentStore,
    LeaseRecord,
    LeaseState,
    Resources,
    SubmissionState,
)

log = logging.getLogger(__name__)

# A lease whose guest still fails to launch, or has not attested, this close to its free-decline
# deadline is declined: after the deadline the missed attestation would be slashed. The margin
# covers the longest guest step that may be under way when it is reached (a boot wait of 60 s
# and one 30 s exchange, see GuestChannel), a reconciler interval (30 s) and the decline's
# transaction.
DECLINE_MARGIN_S = 180
# While a speculatively booted guest boots after its accept, the lease is read again at the
# head this often (about a block on the common L2s): a lost or dropped accept stops it then.
BOOT_CHECK_S = 2.0
# How long the wait for a final accept and a booted guest lasts at most before the first
# report is asked for anyway (the report request then has its own boot wait and deadline).
BOOT_WAIT_S = 120.0
# How an OPEN lease is taken: `combined` boots the guest first and accepts with its first
# attestation in one transaction; `separate` accepts, then submits (two inclusions).
ACCEPT_MODES = ("combined", "separate")


class LeaseLifecycle:
    """Accept, launch, attest (through the poster), settle and stop the leases of one node key."""

    def __init__(
        self,
        chain: ChainClient,
        launcher: Launcher,
        store: AgentStore,
        poster: AttestationPoster,
        capacity: Resources,
        lock_dir: Path,
        spec_source: PrivateSpecSource | None = None,
        *,
        measurements: Collection[bytes] = (),
        images: ImageFetcher | None = None,
        speculative_boot: bool = True,
        accept_confirmations: int = 0,
        boot_check_s: float = BOOT_CHECK_S,
        boot_wait_s: float = BOOT_WAIT_S,
        accept_mode: str = "combined",
        keepalive: ReservationKeepalive | None = None,
    ) -> None:
        if chain.account is None:
            raise AgentError("the node agent needs the node key to act on chain")
        if accept_confirmations < 0:
            raise AgentError("accept_confirmations must be >= 0")
        if accept_mode not in ACCEPT_MODES:
            raise AgentError(f"accept_mode must be one of {', '.join(ACCEPT_MODES)}")
        # Combined needs the guest booted before the accept: without speculative boot the
        # node boots only leases it holds, so it accepts separately.
        self.combined = accept_mode == "combined" and speculative_boot
        self.speculative_boot = speculative_boot
        self.accept_confirmations = accept_confirmations
        self.boot_check_s = boot_check_s
        self.boot_wait_s = boot_wait_s
        self.spec_source = spec_source
        self.images = images
        # Keeps the backend's reservation alive while a combined accept's guest boots.
        self.keepalive = keepalive
        self.chain = chain
        self.measurements = tuple(measurements)
        self._refusals_logged: set[int] = set()
        self.address = str(chain.account.address)
        self.launcher = launcher
        self.store = store
        self.poster = poster
        self.capacity = capacity
        self.lock_dir = lock_dir
        # Called with the lease id just before its guest is stopped (the agent ships the last
        # console output: stopping removes the guest's files).
        self.before_stop: Callable[[int], None] | None = None

    @contextmanager
    def locked(self, lease_id: int) -> Iterator[None]:
        """Hold the lease's lock (across threads and processes) for the block."""
        with lease_lock(self.lock_dir, lease_id):
            yield

    def ours(self, lease: Lease) -> bool:
        return lease.node_key.lower() == self.address.lower()

    def serving(self, lease: Lease) -> bool:
        """Whether the chain has the lease active with this node."""
        return lease.status == LeaseStatus.ACTIVE and self.ours(lease)

    # --- the steps a task asks for ------------------------------------------------------
    def handle_lease(self, lease_id: int) -> LeaseState:
        """Take a matched lease as far as it goes: accept, launch, attest."""
        with self.locked(lease_id):
            return self.advance(lease_id)

    def reattest(self, lease_id: int, *, force: bool = False) -> bool:
        """Re-attest a running lease when its attestation is due (or now, if `force`)."""
        with self.locked(lease_id):
            record = self.store.get_lease(lease_id)
            if record is None or record.state not in ACTIVE_STATES:
                return False
            lease = self.chain.leases.get_lease(lease_id)
            if not self.serving(lease):
                self.retire(lease_id, record, f"lease is {lease.status.name} on chain")
                return False
            restarted = self.ensure_guest(record, lease.renter)
            return self.attest_or_give_back(lease, record, force=force, restarted=restarted)

    def stop_lease(self, lease_id: int) -> LeaseState | None:
        """Stop the guest of a lease that closed or ran out (settling it if needed)."""
        with self.locked(lease_id):
            record = self.store.get_lease(lease_id)
            lease = self.chain.leases.get_lease(lease_id)
            if self.serving(lease) and not self.exhausted(lease):
                return record.state if record else None  # still paid for: keep running
            return self.stop(lease, record, "lease closed or ran out")

    # --- under the lease's lock -----------------------------------------------------------
    def advance(self, lease_id: int) -> LeaseState:
        """`handle_lease` under the lease's lock."""
        lease = self.chain.leases.get_lease(lease_id)
        record = self.store.get_lease(lease_id)
        if lease.status == LeaseStatus.NONE:
            raise LeaseNotOurs(f"lease {lease_id} does not exist")
        if lease.status == LeaseStatus.CLOSED or (
            lease.status == LeaseStatus.ACTIVE and not self.ours(lease)
        ):
            return self.retire(lease_id, record, f"lease is {lease.status.name} on chain")
        if lease.status == LeaseStatus.OPEN and self.accept_dropped(record):
            assert record is not None
            why = "open again on chain: a reorg dropped its accept (or it failed over)"
            self.drop_unaccepted(lease_id, record, why)
            raise LeaseNotOurs(f"lease {lease_id}: {why}")
        terms = None if record is None or record.state == LeaseState.REFUSED else _terms(record)
        if terms is None:
            terms = lease_terms(self.chain, lease)
        try:
            reason = unservable_reason(self.measurements, terms, self.image_measurement(terms))
        except ImageRefused as exc:
            reason = str(exc)  # never booted: refused, or declined if accepted before
        if reason is None and lease.status == LeaseStatus.OPEN:
            reason = self.volume_refusal(terms)
        if reason is not None and lease.status == LeaseStatus.OPEN:
            self.refuse(lease_id, record, reason)
        if record is None or record.state == LeaseState.REFUSED:
            record = self.reserve(lease, terms)  # raises CapacityExceeded when it does not fit
        if reason is not None and self.serving(lease):
            # Accepted before (e.g. under another configuration): give it back while that is
            # free, rather than hold a lease whose attestation can never be truthful.
            self.give_back(lease, record, reason)
            raise LeaseUnservable(f"lease {lease_id}: {reason}")
        just_accepted = False
        if lease.status == LeaseStatus.OPEN and self.combined:
            lease, attested = self._accept_and_attest(lease, record)
            if not self.ours(lease):
                return self.retire(lease_id, record, "accepted by another node or closed")
            if attested:
                return LeaseState.ATTESTED
            # Ours after all (an earlier attempt of ours landed): on as any accepted lease.
        if lease.status == LeaseStatus.OPEN:
            if self.speculative_boot:
                lease, just_accepted = self._accept_while_booting(lease, record)
            else:
                lease, just_accepted = self._accept(lease)
            if not self.ours(lease):
                # Lost (or closed meanwhile): a guest booted for it is stopped, never attested.
                return self.retire(lease_id, record, "accepted by another node or closed")
        if record.state == LeaseState.RESERVED:
            self.store.set_lease_state(lease_id, LeaseState.ACCEPTED)
        restarted = self.launch_or_give_back(lease, record)
        if just_accepted and self.speculative_boot:
            # Raises LeaseNotOurs, the guest stopped, if the accept is lost while it boots.
            self.await_final_accept(lease_id, record)
        if self.attest_or_give_back(lease, record, fresh=just_accepted, restarted=restarted):
            return LeaseState.ATTESTED
        current = self.store.get_lease(lease_id)
        return current.state if current else LeaseState.LAUNCHED

    def volume_refusal(self, terms: LeaseTerms) -> str | None:
        """Why the lease's data volume cannot be stored here beside the other active leases'
        (checked before accept: the files are sparse and grow as their guests write)."""
        active = {
            record.lease_id: record.resources.disk_gib
            for record in self.store.leases()
            if record.lease_id != terms.lease_id
        }
        return self.launcher.volume_refusal(terms.lease_id, terms.disk_gib, active)

    def launch_or_give_back(self, lease: Lease, record: LeaseRecord) -> bool:
        """`ensure_guest`, declining the lease instead when the launch cannot work here, or
        still fails when its first attestation is nearly due (then LeaseUnservable); other
        launch failures propagate, to be retried."""
        try:
            return self.ensure_guest(record, lease.renter)
        except LauncherError as exc:
            lease_id = lease.lease_id
            if not isinstance(exc, (HostUnsupported, ImageRefused)) and not self.decline_due(
                lease_id
            ):
                raise
            self.give_back(lease, record, f"the guest cannot be launched: {exc}")
            raise LeaseUnservable(f"lease {lease_id}: the guest cannot be launched") from exc

    def attest_or_give_back(
        self,
        lease: Lease,
        record: LeaseRecord,
        *,
        force: bool = False,
        fresh: bool = False,
        restarted: bool = False,
    ) -> bool:
        """`poster.attest`, under the lease's lock; but a guest that has not attested by the
        free-decline deadline minus `DECLINE_MARGIN_S` is declined and stopped while that is
        free (then LeaseUnservable), or the renter would close after the deadline and have
        the node slashed. What the guest did instead (refusals, timeouts, malformed
        answers, a key another lease claimed) is logged and kept in the store as evidence;
        a claimed key gives the lease back at once. While the backend cannot take the
        evidence or say whether the key is free, nothing is submitted (a rejected report
        is slashed) and the lease is declined at the same deadline."""
        lease_id = lease.lease_id
        first = record.state not in (LeaseState.ATTESTED, LeaseState.RELAUNCHED)
        if first and not self.accept_deep(lease_id):
            # Never attested before the accept is final: the next pass asks again.
            log.info("lease %s: accept not yet %s blocks deep", lease_id, self.accept_confirmations)
            return False
        if (
            first
            and not fresh
            and self._first_report_missing(lease_id)
            and self.decline_due(lease_id)
        ):
            self.give_back(lease, record, "the guest did not attest in time")
            raise LeaseUnservable(f"lease {lease_id}: the guest did not attest in time")
        try:
            return self.poster.attest(lease_id, force=force, fresh=fresh, restarted=restarted)
        except GuestKeyClaimed as exc:
            # Definite: the key is another lease's, so no report of this guest can pass. Give
            # the lease back now, while that is free, rather than wait for the deadline.
            self.store.record_guest_failure(lease_id, "attest", str(exc))
            if not first:
                raise
            self.give_back(lease, record, f"the guest answered with a claimed key: {exc}")
            raise LeaseUnservable(f"lease {lease_id}: the guest's key is claimed") from exc
        except LauncherError as exc:
            self.store.record_guest_failure(lease_id, "attest", str(exc))
            log.warning("lease %s: the guest did not attest: %s", lease_id, exc)
            if not first or not self.decline_due(lease_id):
                raise
            self.give_back(lease, record, f"the guest did not attest in time: {exc}")
            raise LeaseUnservable(f"lease {lease_id}: the guest did not attest in time") from exc
        except (KeyClaimUnknown, ApiError) as exc:
            # The backend did not take the evidence or answer the key check (unreachable, most
            # likely): tried again on the next pass; a report kept meanwhile must not keep the
            # lease from its free decline.
            if not first or not self.decline_due(lease_id):
                raise
            self.give_back(lease, record, f"no answer from the backend before the deadline: {exc}")
            raise LeaseUnservable(f"lease {lease_id}: not attested in time") from exc

    def decline_due(self, lease_id: int) -> bool:
        """Whether the lease is still ours to decline for free but only `DECLINE_MARGIN_S`
        from its deadline (or past it): nothing was submitted for it yet."""
        # Submissions of the lease's current segment: those of a node it failed over from
        # count for that node only (the registry's progress, as `declineLease` reads it).
        if self.chain.attestations.progress_of(lease_id).nonce > 0:
            return False  # attested once: the missed-attestation path applies, not a decline
        deadline = decline_deadline(self.chain, lease_id)
        return self.chain.block_timestamp() >= deadline - DECLINE_MARGIN_S

    def _first_report_missing(self, lease_id: int) -> bool:
        """No report for the first nonce in hand: the guest never gave one (one that did is
        submitted, not declined). The first nonce of a lease that failed over to this node is
        where its count stood (it keeps counting across nodes)."""
        first = self.chain.attestations.attestation_nonce(lease_id)
        return self.store.get_submission(lease_id, first) is None

    def refuse(self, lease_id: int, record: LeaseRecord | None, reason: str) -> None:
        """Refuse an open lease this node cannot serve: never accepted, logged once."""
        if lease_id not in self._refusals_logged:
            self._refusals_logged.add(lease_id)
            log.warning("lease %s: refused: %s", lease_id, reason)
        if record is not None and record.state != LeaseState.REFUSED:
            self.store.set_lease_state(lease_id, LeaseState.REFUSED, reason=reason)
        raise LeaseUnservable(f"lease {lease_id}: refused: {reason}")

    def give_back(self, lease: Lease, record: LeaseRecord | None, reason: str) -> LeaseState:
        """Decline an accepted lease this node cannot serve, while that is free (before any
        submission and before its deadline): the lease reopens for the next node. After
        that the missed-attestation path applies, and the lease is left to it."""
        lease_id = lease.lease_id
        if not self.serving(lease):
            return self.retire(lease_id, record, reason)
        nonce = self.chain.attestations.progress_of(lease_id).nonce  # this segment's
        # At the deadline itself the decline would land in a later block: too late already.
        if nonce > 0 or self.chain.block_timestamp() >= decline_deadline(self.chain, lease_id):
            log.warning("lease %s: cannot serve it (%s), too late to decline", lease_id, reason)
            return record.state if record else LeaseState.ACCEPTED
        try:
            self.chain.leases.decline_lease(lease_id)
        except ContractRevert as exc:
            log.warning("lease %s: decline refused (%s): %s", lease_id, exc.name, reason)
            return record.state if record else LeaseState.ACCEPTED
        log.warning("lease %s: declined on chain: %s", lease_id, reason)
        return self.retire(lease_id, record, f"declined: {reason}")

    def reserve(self, lease: Lease, terms: LeaseTerms | None = None) -> LeaseRecord:
        """Hold the lease's resources in the store (CapacityExceeded if they do not fit)."""
        terms = terms or lease_terms(self.chain, lease)
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
            if self.serving(lease):
                # Already ours on chain (e.g. the store was lost): run it rather than
                # abandon a paying renter; the capacity check guards new accepts only.
                log.warning("lease %s is ours on chain but over capacity", lease.lease_id)
                self.store.set_lease_state(lease.lease_id, LeaseState.ACCEPTED, reason="adopted")
                record = self.store.get_lease(lease.lease_id)
                assert record is not None
                return record
            raise

    # --- speculative boot ------------------------------------------------------------------
    def accept_dropped(self, record: LeaseRecord | None) -> bool:
        """Whether the store has the lease accepted by this node, not yet attested, while the
        chain (read just before, at the head) has it open again: a reorg dropped the accept
        (or the lease failed over after this node missed its first attestation). Or attested
        by a combined accept whose nonce the chain still expects: a reorg dropped the
        acceptAndSubmit, both its effects gone."""
        if record is None:
            return False
        if record.state in (LeaseState.ACCEPTED, LeaseState.LAUNCHED):
            return True
        if record.state != LeaseState.ATTESTED:
            return False
        nonce = self.chain.attestations.attestation_nonce(record.lease_id)
        submitted = self.store.get_submission(record.lease_id, nonce)
        return submitted is not None and submitted.state == SubmissionState.SUBMITTED

    def drop_unaccepted(self, lease_id: int, record: LeaseRecord, reason: str) -> None:
        """Stop the guest of a lease whose accept lost or was dropped, remove its disk, and free
        its capacity; the lease may be dispatched here again (REFUSED is not terminal), and a
        re-mined accept is adopted by the reconciler with a guest booted afresh. It never
        attested: its first report is asked for only once the accept is final."""
        if self.before_stop is not None:
            self.before_stop(lease_id)
        self.launcher.stop(lease_id)
        self.launcher.discard(lease_id)
        # A report of the stopped guest (a dropped combined accept's, submitted then undone) is
        # never sent again: a new guest gives a new one for the nonce the chain still expects.
        self.store.forget_submissions(lease_id, self.chain.attestations.attestation_nonce(lease_id))
        self.store.set_lease_state(lease_id, LeaseState.REFUSED, reason=reason)
        log.warning("lease %s: guest stopped and its disk removed: %s", lease_id, reason)

    def _accept_and_attest(self, lease: Lease, record: LeaseRecord) -> tuple[Lease, bool]:
        """The combined accept of an OPEN lease (the store keeps it RESERVED until it is
        mined): boot the guest, have the poster take, upload and send its first report with the
        accept (`acceptAndSubmit`). Returns the lease as it is now and whether this call
        accepted and attested it. When the transaction reverts nothing happened on chain: the
        guest is stopped and its disk removed, and a lease still open is refused here
        (LeaseNotOurs), one taken or closed is left to the caller (`retire`). A guest that gives
        no usable report is stopped the same way and the lease left open for another node
        (LeaseUnservable); a backend that cannot take the evidence is tried again (the guest and
        its stored report are kept)."""
        lease_id = lease.lease_id
        # Fixed while the lease is open (only a submit of an active lease moves it): the report
        # binds it, and a lease that failed over here continues its count.
        nonce = self.chain.attestations.attestation_nonce(lease_id)
        running = self.launcher.status(lease_id).state == GuestState.RUNNING
        if not running:
            refused = self._accept_refused(lease, record)
            if refused is not None:
                return refused, False
        try:
            # The backend would give the lease to the next node after its accept timeout: the
            # boot, the report and its upload may take longer.
            with self._reservation_kept(lease_id):
                restarted = False
                if not running:
                    self.launcher.launch(self.guest_spec(record, lease.renter))
                    crash_point("launched")  # the guest runs, the store still says RESERVED
                    restarted = True
                result = self.poster.accept_and_attest(
                    lease_id, nonce, renter=lease.renter, restarted=restarted
                )
        except (LauncherError, GuestKeyClaimed) as exc:
            self.store.record_guest_failure(lease_id, "attest", str(exc))
            self.drop_unaccepted(lease_id, record, f"the guest gave no usable report: {exc}")
            raise LeaseUnservable(f"lease {lease_id}: the guest gave no usable report") from exc
        except ContractRevert as exc:
            log.info("lease %s: acceptAndSubmit reverted: %s", lease_id, exc.name)
            return self._combined_refused(lease, nonce, exc), False
        except ChainError:
            # E.g. a same-block race: the loser's receipt failed and its replay cannot name the
            # revert. What the chain holds now decides.
            current = self.chain.leases.get_lease(lease_id)
            if current.status == LeaseStatus.OPEN or self.ours(current):
                raise  # not decided (or ours after all): the retry reads it again
            self.launcher.stop(lease_id)
            self.launcher.discard(lease_id)
            return current, False
        self.store.set_lease_state(lease_id, LeaseState.ACCEPTED, accept_tx=result.tx_hash)
        self.store.set_lease_state(lease_id, LeaseState.ATTESTED)
        return replace(lease, status=LeaseStatus.ACTIVE, node_key=self.address), True

    def _reservation_kept(self, lease_id: int) -> AbstractContextManager[None]:
        return self.keepalive.kept(lease_id) if self.keepalive is not None else nullcontext()

    def _accept_refused(self, lease: Lease, record: LeaseRecord) -> Lease | None:
        """Before booting for a combined accept: None when the chain would let this node accept
        the lease now (an `eth_call` of `acceptLease` from its key: the same checks as
        `acceptAndSubmit`'s accept: stake, price, TEE type, capacity, a decline before). Else
        nothing is booted: a lease still open is refused here (LeaseNotOurs, its capacity
        freed), one taken or closed meanwhile is returned as it is now."""
        lease_id = lease.lease_id
        try:
            self.chain.leases.check_accept(lease_id)
        except ContractRevert as exc:
            current = self.chain.leases.get_lease(lease_id)
            if current.status != LeaseStatus.OPEN:
                return current
            log.info("lease %s: acceptLease would revert (%s): not booted", lease_id, exc.name)
            self.store.set_lease_state(lease_id, LeaseState.REFUSED, reason=exc.name)
            raise LeaseNotOurs(f"lease {lease_id}: acceptLease would revert: {exc}") from exc
        return None

    def _combined_refused(self, lease: Lease, nonce: int, exc: ContractRevert) -> Lease:
        """After a reverted acceptAndSubmit: the lease as it is now. Ours (our own earlier
        attempt landed) keeps its guest; otherwise the guest goes, and an open lease is refused."""
        lease_id = lease.lease_id
        current = self.chain.leases.get_lease(lease_id)
        if self.serving(current):
            return current
        self.launcher.stop(lease_id)
        self.launcher.discard(lease_id)
        if current.status == LeaseStatus.OPEN:
            # Refused for a reason of ours (stake, price, a declined lease): free the capacity.
            self.store.drop_report(lease_id, nonce)  # the stopped guest's
            self.store.set_lease_state(lease_id, LeaseState.REFUSED, reason=exc.name)
            raise LeaseNotOurs(f"lease {lease_id}: acceptAndSubmit refused: {exc}") from exc
        return current

    def _accept_while_booting(self, lease: Lease, record: LeaseRecord) -> tuple[Lease, bool]:
        """`_accept` with the guest launched beside it (the store keeps the lease RESERVED
        until the accept is mined). The launch is over when this returns; a guest of a lease
        that stays open (the accept refused for this node's own reasons) is stopped here, one
        of a lease now taken or closed by the caller (`retire`)."""
        lease_id = lease.lease_id
        failure: list[Exception] = []

        def boot() -> None:
            try:
                self.launcher.launch(self.guest_spec(record, lease.renter))
            except Exception as exc:  # reported once the accept is decided
                failure.append(exc)
                return
            crash_point("launched")  # the guest runs, the store still says RESERVED

        thread = threading.Thread(target=boot, name=f"cvm-boot-{lease_id}", daemon=True)
        thread.start()
        try:
            current, accepted = self._accept(lease)
        except LeaseNotOurs:
            thread.join()
            self.launcher.stop(lease_id)
            self.launcher.discard(lease_id)
            raise
        except ChainError:
            thread.join()
            # E.g. a same-block race: the loser's receipt failed and its replay against the
            # block before cannot name the revert. What the chain holds now decides.
            current = self.chain.leases.get_lease(lease_id)
            if current.status == LeaseStatus.OPEN or self.ours(current):
                raise  # not decided (or ours after all): the retry reads it again
            log.info("lease %s: accept failed, the lease is %s", lease_id, current.status.name)
            return current, False
        thread.join()
        if failure and self.ours(current):
            # The launch after the accept tries again (and gives the lease back if it cannot).
            log.warning("lease %s: speculative boot failed: %s", lease_id, failure[0])
        return current, accepted

    def await_final_accept(self, lease_id: int, record: LeaseRecord) -> None:
        """Wait, at most `boot_wait_s`, for the guest to boot and the accept to be
        `accept_confirmations` deep, reading the lease at the head every `boot_check_s`; if it
        is no longer ours (a reorg dropped the accept, the renter closed) the guest is stopped
        and its disk removed (LeaseNotOurs). Nothing here asks the guest for a report."""
        deadline = time.monotonic() + self.boot_wait_s
        ready = False
        while True:
            # Read at the head on every round, and once more after the guest is ready: the
            # report is asked for right after a read that still has the lease ours.
            node_key, status = self.chain.leases.lease_node(lease_id)
            if status != LeaseStatus.ACTIVE or node_key.lower() != self.address.lower():
                if status == LeaseStatus.OPEN:
                    why = "its accept was dropped from the chain while its guest booted"
                    self.drop_unaccepted(lease_id, record, why)
                else:
                    why = f"lease is {status.name} on chain while its guest booted"
                    current = self.store.get_lease(lease_id)
                    self.retire(lease_id, current, why)
                raise LeaseNotOurs(f"lease {lease_id}: {why}")
            if ready or time.monotonic() >= deadline:
                return  # past the deadline the report request decides (its own boot wait)
            booted = self.launcher.booted(lease_id, self.boot_check_s)
            ready = booted and self.accept_deep(lease_id)
            if booted and not ready:
                time.sleep(min(self.boot_check_s, max(0.0, deadline - time.monotonic())))

    def accept_deep(self, lease_id: int) -> bool:
        """Whether the lease is active with this node `accept_confirmations` blocks below the
        head (always, at 0: the callers read the lease at the head just before)."""
        if self.accept_confirmations == 0:
            return True
        head = int(self.chain.w3.eth.block_number)
        block = head - self.accept_confirmations
        if block < 0:
            return False
        node_key, status = self.chain.leases.lease_node(lease_id, block=block)
        return status == LeaseStatus.ACTIVE and node_key.lower() == self.address.lower()

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

    def lease_image(self, lease_id: int, *, deep: bool = False) -> str:
        """The image id the lease's private spec names ("" for none), present in the
        launcher's image store: fetched from the backend and verified if it was not, and
        with `deep` (right before boot) fetched again if its files are damaged.
        `ImageRefused` when it cannot be had, `ImageUnavailable` when not now."""
        if self.spec_source is None:
            return ""
        image = self.spec_source.image_for(lease_id)
        if image and self.images is not None:
            self.images.ensure(image, deep=deep)
        return image

    def image_measurement(self, terms: LeaseTerms) -> bytes | None:
        """The measurement the lease's own image boots with here (None: no image named, or
        this launcher does not boot renters' images)."""
        if self.spec_source is None:
            return None
        return self.launcher.image_measurement(self.lease_image(terms.lease_id), terms.vcpu)

    def guest_spec(self, record: LeaseRecord, renter: str) -> GuestSpec:
        """What the lease's guest is launched with, bound to this deployment, the lease and its
        `renter` (the chain's): HOST_DATA, fixed for the guest's life."""
        return GuestSpec(
            lease_id=record.lease_id,
            vcpu=record.resources.vcpu,
            memory_mib=record.resources.memory_mib,
            disk_gib=record.resources.disk_gib,
            expected_measurement=record.expected_measurement,
            image=self.lease_image(record.lease_id, deep=True),
            binding=HostBinding(
                self.chain.deployment.chain_id,
                self.chain.deployment.attestation_registry,
                renter,
            ),
        )

    def ensure_guest(self, record: LeaseRecord, renter: str) -> bool:
        """Start the lease's guest unless it runs, bound to this deployment, the lease and its
        `renter` (the chain's); True if it had to be (re)started."""
        if self.launcher.status(record.lease_id).state == GuestState.RUNNING:
            if record.state in (LeaseState.RESERVED, LeaseState.ACCEPTED):
                self.store.set_lease_state(record.lease_id, LeaseState.LAUNCHED)
            return False
        self.launcher.launch(self.guest_spec(record, renter))
        crash_point("launched")
        if record.state in (LeaseState.RESERVED, LeaseState.ACCEPTED):
            self.store.set_lease_state(record.lease_id, LeaseState.LAUNCHED)
        elif record.state == LeaseState.ATTESTED:
            self.store.set_lease_state(record.lease_id, LeaseState.RELAUNCHED)
        return True

    def exhausted(self, lease: Lease) -> bool:
        """Whether the whole deposit is earned: the renter pays for no more time."""
        return lease.deposit > 0 and self.chain.leases.earned(lease.lease_id) >= lease.deposit

    def stop(self, lease: Lease, record: LeaseRecord | None, reason: str) -> LeaseState:
        """Settle the lease if it is still ours on chain (it ran out), then retire it."""
        if self.serving(lease):
            self.chain.leases.settle(lease.lease_id)
        return self.retire(lease.lease_id, record, reason)

    def retire(self, lease_id: int, record: LeaseRecord | None, reason: str) -> LeaseState:
        """Stop the guest and free the capacity of a lease that is not (or no longer) ours."""
        if self.before_stop is not None:
            self.before_stop(lease_id)
        self.launcher.stop(lease_id)
        self.launcher.discard(lease_id)  # over for good: its data volume goes too
        if record is None:
            return LeaseState.REFUSED
        final = LeaseState.STOPPED if record.state != LeaseState.RESERVED else LeaseState.REFUSED
        if record.state not in (LeaseState.STOPPED, LeaseState.REFUSED):
            self.store.set_lease_state(lease_id, final, reason=reason)
            log.info("lease %s: %s (%s)", lease_id, final, reason)
        return final


def _terms(record: LeaseRecord) -> LeaseTerms:
    """A stored lease's terms (as read from the chain when it was reserved)."""
    return LeaseTerms(
        lease_id=record.lease_id,
        vcpu=record.resources.vcpu,
        memory_mib=record.resources.memory_mib,
        disk_gib=record.resources.disk_gib,
        expected_measurement=record.expected_measurement,
        reattest_interval=record.reattest_interval,
    )
