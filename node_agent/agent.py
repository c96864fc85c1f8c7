"""One node key's agent: the lease lifecycle, the attestation poster and the reconciler
over one chain client, launcher and store, with the heartbeat beside them.

The Celery tasks and the scheduler call these few methods; the work is in
`lifecycle` (accept, launch, settle, stop), `attestation_poster` (report, evidence,
submit, re-attest) and `reconciler` (chain vs store vs guests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient, ApiError
from cvm.chain import ChainClient
from cvm.eip712 import Domain, Heartbeat
from node_agent.attestation_poster import AttestationPoster
from node_agent.console_relay import ConsoleRelay
from node_agent.errors import AgentError, LauncherError
from node_agent.guest_relay import GuestRelay
from node_agent.heartbeat import send_heartbeat
from node_agent.image_fetch import ImageFetcher
from node_agent.keepalive import ReservationKeepalive
from node_agent.key_relay import KeyRelay
from node_agent.launcher.base import GuestState, Launcher
from node_agent.launcher.qemu import QemuLauncher
from node_agent.lease_steps import DEFAULT_BUDGET_S, DEFAULT_WORKERS, LeaseSteps, guarded
from node_agent.lifecycle import LeaseLifecycle
from node_agent.private_spec import PrivateSpecSource
from node_agent.reconciler import Reconciler, ReconcileResult
from node_agent.snapshots import DEFAULT_INTERVAL_S, SnapshotRelay
from node_agent.store import AgentStore, LeaseState, Resources

__all__ = ["NodeAgent", "ReconcileResult"]

log = logging.getLogger(__name__)

# The largest image a node downloads unless told otherwise (as the backend's default limit).
DEFAULT_IMAGE_MAX_BYTES = 256 * 2**20


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
        measurements: Collection[bytes] = (),
        clock: Callable[[], float] = time.time,
        image_max_bytes: int = DEFAULT_IMAGE_MAX_BYTES,
        image_cache_bytes: int | None = None,
        step_workers: int = DEFAULT_WORKERS,
        step_budget_s: float = DEFAULT_BUDGET_S,
        snapshot_interval_s: float = DEFAULT_INTERVAL_S,
        speculative_boot: bool = True,
        accept_confirmations: int = 0,
        accept_mode: str = "combined",
    ) -> None:
        if chain.account is None:
            raise AgentError("the node agent needs the node key to act on chain")
        self.chain = chain
        self.account: LocalAccount = chain.account
        self.launcher = launcher
        self.store = store
        self.capacity = capacity
        self.api = api
        self.clock = clock
        # Every lease's steps (its guest's I/O above all) run here, off the scheduler's thread.
        self.steps = LeaseSteps(step_workers)
        self.step_budget_s = step_budget_s
        self.poster = AttestationPoster(
            chain, launcher, store, api=api, reattest_margin_s=reattest_margin_s
        )
        # The qemu launchers (qemu-snp is one) boot what the renter names; others need no
        # private spec.
        spec_source = (
            PrivateSpecSource(api, self.account)
            if api is not None and isinstance(launcher, QemuLauncher)
            else None
        )
        # The images it boots come from the backend, checked against the lease's image id.
        images = (
            ImageFetcher(
                api,
                launcher.images,
                max_bytes=image_max_bytes,
                cache_bytes=image_cache_bytes,
                in_use=launcher.images_in_use,
            )
            if api is not None and isinstance(launcher, QemuLauncher) and launcher.images
            else None
        )
        self.lifecycle = LeaseLifecycle(
            chain,
            launcher,
            store,
            self.poster,
            capacity,
            lock_dir,
            spec_source,
            measurements=measurements,
            images=images,
            speculative_boot=speculative_boot,
            accept_confirmations=accept_confirmations,
            accept_mode=accept_mode,
            keepalive=(
                ReservationKeepalive(
                    api,
                    self.account,
                    Domain(chain.deployment.chain_id, chain.deployment.node_registry),
                )
                if api is not None
                else None
            ),
        )
        self.reconciler = Reconciler(self.lifecycle)
        self.relay: GuestRelay | None = None
        self.console: ConsoleRelay | None = None
        self.snapshots: SnapshotRelay | None = None
        self.keys: KeyRelay | None = None
        self._qemu: QemuLauncher | None = None
        # Both qemu launchers (qemu-snp is one) boot guests with an agent and a console.
        if api is not None and isinstance(launcher, QemuLauncher):
            self._qemu = launcher
            self.relay = GuestRelay(api, self.account, launcher, lock_dir.parent / "relay")
            self.console = ConsoleRelay(api, self.account, lock_dir.parent / "console")
            self.keys = KeyRelay(api, self.account, launcher, lock_dir.parent / "keys")
            self.snapshots = SnapshotRelay(
                api,
                self.account,
                launcher,
                lock_dir.parent / "snapshots",
                interval_s=snapshot_interval_s,
            )
            self.lifecycle.before_stop = self._ship_console

    @property
    def address(self) -> str:
        return str(self.account.address)

    def handle_lease(self, lease_id: int) -> LeaseState:
        """Take a matched lease as far as it goes: accept, launch, attest."""
        return self.lifecycle.handle_lease(lease_id)

    def reattest(self, lease_id: int, *, force: bool = False) -> bool:
        """Re-attest a running lease when its attestation is due (or now, if `force`)."""
        return self.lifecycle.reattest(lease_id, force=force)

    def stop_lease(self, lease_id: int) -> LeaseState | None:
        """Stop the guest of a lease that closed or ran out (settling it if needed)."""
        return self.lifecycle.stop_lease(lease_id)

    def reconcile(self) -> ReconcileResult:
        """Converge chain, store and running guests (at start and on a schedule); after each
        lease's step, relay SSH access and sealed secrets to its guest and ship its console.

        Each lease's steps run on the step pool, off the caller's thread, one at a time per
        lease and guarded: a slow or hostile guest holds its own thread, never another
        lease's, and the pass waits for them `step_budget_s` at most."""
        held = {record.lease_id for record in self.store.leases()}
        if self.console is not None:
            self.console.prune(held)
        if self.snapshots is not None:
            self.snapshots.prune(held)
        deadline = time.monotonic() + self.step_budget_s
        return self.reconciler.reconcile(self.steps, deadline, then=self._serve_guest)

    def serve_guest(self, lease_id: int) -> bool:
        """Relay the lease's sealed secrets (and its console) now, on the backend's nudge,
        instead of at the next pass; for a lease this node holds in its store only, and
        never beside a step of the same lease (a pass running it serves it right after).
        True if it ran here."""
        if self.store.get_lease(lease_id) is None:
            return False  # not ours: a nudge names a lease id, nothing more
        return self.steps.run("lease", [lease_id], self._serve_guest).done == [lease_id]

    def _serve_guest(self, lease_id: int) -> None:
        """Relay secrets to the lease's guest and ship its console; each guarded on its own,
        so that a guest refusing its secrets still has its console shipped."""
        guarded("relay", lease_id, self._relay_secrets)
        # The threshold key before the snapshots: a guest restores only once it has it.
        guarded("keys", lease_id, self._relay_keys)
        guarded("console", lease_id, self._ship_console)
        guarded("snapshots", lease_id, self._sync_snapshots)

    def _sync_snapshots(self, lease_id: int) -> None:
        """Restore the guest's disk if it needs one, else snapshot it when due."""
        if (
            self.snapshots is not None
            and self.launcher.status(lease_id).state == GuestState.RUNNING
        ):
            self.snapshots.sync(lease_id)

    def snapshot_lease(self, lease_id: int) -> bool:
        """A snapshot of the lease's disk now (on demand), on the step pool like every step
        of the lease; True if one was stored."""
        if self.snapshots is None or self.store.get_lease(lease_id) is None:
            return False
        relay = self.snapshots
        stored: list[int] = []

        def take(lease: int) -> None:
            stored.append(relay.snapshot(lease))

        self.steps.run("snapshot", [lease_id], lambda lease: guarded("snapshot", lease, take))
        return bool(stored)

    def _relay_keys(self, lease_id: int) -> None:
        if self.keys is not None and self.launcher.status(lease_id).state == GuestState.RUNNING:
            self.keys.sync(lease_id)

    def _relay_secrets(self, lease_id: int) -> None:
        if self.relay is not None and self.launcher.status(lease_id).state == GuestState.RUNNING:
            self.relay.sync(lease_id)

    def _ship_console(self, lease_id: int) -> None:
        """Take the guest's new console output out of QEMU and send it with what is pending;
        also called right before a guest is stopped, for its last words."""
        if self.console is None or self._qemu is None:
            return
        try:
            output = self._qemu.read_console(lease_id)
        except LauncherError:
            output = b""  # no guest of this lease here (or its monitor does not answer)
        if not output and not self.console.pending(lease_id):
            return
        try:
            self.console.ship(lease_id, output)
        except (ApiError, OSError) as exc:
            log.warning("lease %s: console not shipped: %s", lease_id, exc)

    def close(self) -> None:
        """Start no more lease steps (those running end at their guests' deadlines)."""
        self.steps.close()

    def heartbeat(self) -> Heartbeat:
        """Sign and send the free capacity to the backend (needs an API client)."""
        if self.api is None:
            raise AgentError("no backend API configured: heartbeats have nowhere to go")
        return send_heartbeat(
            self.api,
            self.chain.deployment,
            self.account,
            self.store,
            self.capacity,
            int(self.clock()),
        )
