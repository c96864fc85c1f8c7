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
from cvm.eip712 import Heartbeat
from node_agent.attestation_poster import AttestationPoster
from node_agent.console_relay import ConsoleRelay
from node_agent.errors import AgentError
from node_agent.guest_relay import GuestRelay
from node_agent.heartbeat import send_heartbeat
from node_agent.image_fetch import ImageFetcher
from node_agent.launcher.base import Launcher
from node_agent.launcher.qemu import QemuLauncher
from node_agent.lifecycle import LeaseLifecycle
from node_agent.private_spec import PrivateSpecSource
from node_agent.reconciler import Reconciler, ReconcileResult
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
        )
        self.reconciler = Reconciler(self.lifecycle)
        self.relay: GuestRelay | None = None
        self.console: ConsoleRelay | None = None
        self._qemu: QemuLauncher | None = None
        # Both qemu launchers (qemu-snp is one) boot guests with an agent and a console.
        if api is not None and isinstance(launcher, QemuLauncher):
            self._qemu = launcher
            self.relay = GuestRelay(api, self.account, launcher, lock_dir.parent / "relay")
            self.console = ConsoleRelay(api, self.account, lock_dir.parent / "console")
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
        """Converge chain, store and running guests (at start and on a schedule); then relay
        SSH access and sealed secrets to the running guests that have an agent."""
        result = self.reconciler.reconcile()
        if self.relay is not None:
            for guest in self.launcher.running():
                self.relay.sync(guest.lease_id)
        self.ship_consoles()
        return result

    def ship_consoles(self) -> None:
        """Send the new console output of every running guest to the backend (the renter's
        `cvm lease logs`); a refusal is logged and the output sent again next time."""
        if self.console is None or self._qemu is None:
            return
        self.console.prune({record.lease_id for record in self.store.leases()})  # active ones
        for guest in self._qemu.running():
            self._ship_console(guest.lease_id)

    def _ship_console(self, lease_id: int) -> None:
        if self.console is None or self._qemu is None:
            return
        log_path = self._qemu.console_log(lease_id)
        if not log_path.exists():
            return  # no guest of this lease here (or it never started)
        try:
            self.console.ship(lease_id, log_path)
        except (ApiError, OSError) as exc:
            log.warning("lease %s: console not shipped: %s", lease_id, exc)

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
