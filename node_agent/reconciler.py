"""The reconciler: converges chain, store and running guests, at start and on a schedule.

It adopts leases the chain says this node accepted but the store forgot (killed right
after accept), relaunches guests that vanished, stops guests of leases that closed, ran
out, failed over to another node (`LeaseFailedOver`: the guest stops and its volume is
deleted, also after a restart) or were never ours, and has due attestations posted, at
once for a lease challenged since its latest submission (`LeaseMarket.challenge`). It
finds accepted leases by the `LeaseAccepted` events of this node key since its
checkpoint, not since the deployment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cvm.chain import LeaseStatus
from node_agent.lease_steps import LeaseSteps
from node_agent.lifecycle import LeaseLifecycle
from node_agent.store import ACTIVE_STATES, LeaseRecord, LeaseState

log = logging.getLogger(__name__)

# Blocks scanned again on every pass: an accept in a block that a reorg shallower than
# this replaced (mined again, a little later) is still found.
REORG_MARGIN_BLOCKS = 12


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconciler pass changed (for logs and tests)."""

    adopted: list[int] = field(default_factory=list)
    relaunched: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    attested: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)  # challenges answered by a fresh report


class AcceptScan(Protocol):
    """Where a pass reads the head and this node's accepts from (default: its own chain
    client; a fleet of simulated nodes shares one read among them)."""

    def head(self) -> int: ...

    def accepted_by(self, node_key: str, from_block: int, head: int) -> list[int]:
        """Ids of the leases `node_key` accepted from `from_block` to `head` at least."""
        ...


class Reconciler:
    """One node key's reconciler over its lease lifecycle (and the poster behind it)."""

    def __init__(
        self, lifecycle: LeaseLifecycle, *, reorg_margin_blocks: int = REORG_MARGIN_BLOCKS
    ) -> None:
        self.lifecycle = lifecycle
        self.chain = lifecycle.chain
        self.store = lifecycle.store
        self.launcher = lifecycle.launcher
        self.reorg_margin_blocks = reorg_margin_blocks
        self.scan: AcceptScan | None = None
        # The checkpoint is written once it moved this many blocks (1: after every pass).
        # Skipping a write only makes the next pass re-read a few more blocks; a fleet of
        # many nodes on one disk raises it.
        self.checkpoint_stride_blocks = 1

    @property
    def checkpoint_name(self) -> str:
        """The scan's name in the store: per chain and market, so a redeployment rescans."""
        deployment = self.chain.deployment
        return f"LeaseAccepted:{deployment.chain_id}:{deployment.lease_market.lower()}"

    def scan_from(self, head: int) -> int:
        """The first block this pass reads `LeaseAccepted` from."""
        return self._scan_from(head, self.store.checkpoint(self.checkpoint_name))

    def _scan_from(self, head: int, saved: int | None) -> int:
        start = self.chain.deployment.start_block
        if saved is None or saved < start or saved > head + 1:
            return start  # never scanned, or a chain that was reset under the store
        return saved

    def reconcile(
        self,
        steps: LeaseSteps | None = None,
        deadline: float | None = None,
        then: Callable[[int], object] | None = None,
    ) -> ReconcileResult:
        """Converge chain, store and running guests; one lease's trouble spares the others.

        The scan runs in this thread. Each lease's step (chain reads, its guest, its
        transactions, then `then(lease_id)` whether it failed or not) runs on `steps` (in
        this thread if None), waited for until `deadline` (time.monotonic())."""
        result = ReconcileResult()
        known = {record.lease_id: record for record in self.store.leases()}
        # Before the scan: nothing after it is skipped.
        head = self.scan.head() if self.scan else int(self.chain.w3.eth.block_number)
        self._adopt_forgotten(head, known, result)
        running = {guest.lease_id for guest in self.launcher.running()}

        def step(lease_id: int) -> None:
            try:
                self._reconcile_one(lease_id, result)
            finally:
                if then is not None:
                    then(lease_id)

        (steps or LeaseSteps(workers=0)).run("lease", sorted(set(known) | running), step, deadline)
        for changed in vars(result).values():
            changed.sort()  # steps end in any order
        return result

    def _adopt_forgotten(
        self, head: int, known: dict[int, LeaseRecord], result: ReconcileResult
    ) -> None:
        """Reserve the leases this node accepted on chain that the store does not hold.

        The checkpoint moves only once every accept up to `head` is in the store, so a
        crash or a failed read in between means the next pass scans the same blocks again.
        """
        address = self.lifecycle.address
        saved = self.store.checkpoint(self.checkpoint_name)
        from_block = self._scan_from(head, saved)
        accepted = (
            self.scan.accepted_by(address, from_block, head)
            if self.scan
            else self.chain.leases.leases_accepted_by(address, from_block)
        )
        for lease_id in accepted:
            if lease_id in known:
                continue
            record = self.store.get_lease(lease_id)
            if record is not None and record.state == LeaseState.STOPPED:
                continue
            lease = self.chain.leases.get_lease(lease_id)
            if self.lifecycle.serving(lease):
                result.adopted.append(lease_id)
                known[lease_id] = self.lifecycle.reserve(lease)
        next_block = max(self.chain.deployment.start_block, head + 1 - self.reorg_margin_blocks)
        if saved != from_block or next_block - from_block >= self.checkpoint_stride_blocks:
            self.store.save_checkpoint(self.checkpoint_name, next_block)

    def _reconcile_one(self, lease_id: int, result: ReconcileResult) -> None:
        lifecycle = self.lifecycle
        with lifecycle.locked(lease_id):
            record = self.store.get_lease(lease_id)
            lease = self.chain.leases.get_lease(lease_id)
            serving = lifecycle.serving(lease)
            if record is None or record.state not in ACTIVE_STATES:
                if not serving:
                    lifecycle.retire(lease_id, record, "not an active lease of this node")
                    result.stopped.append(lease_id)
                    return
                record = lifecycle.reserve(lease)
                result.adopted.append(lease_id)
            if lease.status == LeaseStatus.OPEN and lifecycle.accept_dropped(record):
                # A reorg dropped our accept (or the lease failed over): its guest is stopped
                # with its disk, the capacity free again.
                lifecycle.drop_unaccepted(lease_id, record, "open again on chain, not accepted")
                result.stopped.append(lease_id)
                return
            if lease.status == LeaseStatus.OPEN and record.state == LeaseState.RESERVED:
                lifecycle.advance(lease_id)  # a dispatched lease we had not accepted yet
                return
            if not serving or lifecycle.exhausted(lease):
                # Open again or another node's while this one still runs it: the lease failed
                # over (this node was found at fault, e.g. cut off): its guest and volume go.
                moved = lease.status in (LeaseStatus.OPEN, LeaseStatus.ACTIVE) and not serving
                why = "failed over to another node" if moved else f"{lease.status.name} on chain"
                lifecycle.stop(lease, record, f"lease is {why}")
                result.stopped.append(lease_id)
                return
            restarted = lifecycle.launch_or_give_back(lease, record)
            if restarted:
                result.relaunched.append(lease_id)
            # A guest started afresh is not the one the standing attestation was about; a
            # challenge asks for a fresh report now, or payment stops at the window's end.
            challenged = self._challenged_since_submission(lease_id)
            if lifecycle.attest_or_give_back(
                lease, record, force=restarted or challenged, restarted=restarted
            ):
                result.attested.append(lease_id)
                if challenged:
                    result.answered.append(lease_id)
                    log.info("lease %s: answered a challenge with a fresh attestation", lease_id)

    def _challenged_since_submission(self, lease_id: int) -> bool:
        """Whether the lease was challenged after its latest attestation was submitted."""
        challenged_at = self.chain.attestations.challenged_at(lease_id)
        if challenged_at == 0:
            return False  # the common case: one read
        latest = self.chain.attestations.attestation_of(lease_id)
        return challenged_at > latest.submitted_at  # as the registry counts it
