"""The backend process: API, indexer, matcher, verifier and dispatch wired together.

`BackendService.step()` is one round of the background work (index new blocks, react to
what they contain, expire overdue reservations, verify pending attestations, re-check the
other verifiers' verdicts and dispute the wrong ones); `start()`
runs it in a thread every `indexer_poll_s` (sooner when a new block is announced), and
`serve()` adds the HTTP API (uvicorn). The embedded demo and the tests drive the same object.

Any number of replicas may serve one PostgreSQL store: all serve the API, and the
background jobs run where the leader leases say (`backend.leadership`): the indexer with
the matcher on one replica, each verifier key on one replica. A SQLite store is one
process's: a second backend on the same file is refused at start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import uvicorn
from cryptography import x509
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3 import Web3

from backend.api import create_app
from backend.api.deps import AppContext
from backend.dispatch import CeleryDispatcher, make_producer
from backend.domain import images, keys_relay
from backend.indexer import NODE_RESCORING_EVENTS, BatchResult, Indexer, marketplace_decoder
from backend.indexer.dispute_windows import DisputeWindows
from backend.indexer.heads import NewHeads, websocket_url
from backend.leadership import INDEXER, Leadership, verifier_job
from backend.liveness import ChainFailover, FailoverResult, FailoverWatch
from backend.matching import Matcher
from backend.matching.head import HeadDispatch, created_at_head
from backend.matching.service import Dispatch
from backend.objects import ObjectStoreError
from backend.repeats import RepeatedConditions
from backend.store import Node, Store, StoreError
from backend.verifier import (
    KdsVceks,
    LivenessResult,
    LivenessWatch,
    Verifier,
    VerifierConfig,
    Watcher,
    WatchResult,
)
from cvm.api_models import ChainInfo
from cvm.attestation.kds import CachingKds, HttpKds
from cvm.chain import ChainClient, Deployment
from cvm.config import Settings
from cvm.disputes import (
    challenge_of,
    dispute_certificates,
    preview_dispute,
    resolve_challenge,
    send_dispute,
    submission_of,
    supports_disputes,
)
from cvm.images import ImageStore

log = logging.getLogger(__name__)

# Seconds between two collections of unused uploaded images (sooner for a short grace).
IMAGE_GC_EVERY_S = 300.0
# Seconds between two removals of closed leases' key and snapshot data.
KEY_DATA_GC_EVERY_S = 60.0


def _holder_check(reader: ChainClient) -> Callable[[str], bool] | None:
    """Whether an address is a registered, staked key holder, from the KeyService bindings
    (`chain.keys.holder_of`); None on a deployment without a key service."""
    keys = getattr(reader, "keys", None)
    if keys is None or not getattr(reader.deployment, "key_service", None):
        return None
    return keys_relay.chain_holder_check(keys)


@dataclass
class StepReport:
    """What one background round did (for logs and tests)."""

    indexed: BatchResult
    expired_rematched: list[int]
    verified: int
    liveness: LivenessResult | None = None
    failover: FailoverResult | None = None  # the failover watch's pass
    watched: list[WatchResult] = field(default_factory=list)  # the watcher's re-checks
    leader: bool = True  # this replica ran the indexer and matcher in this round


class ReplicaError(StoreError):
    """This backend cannot run beside another one on the same store."""


def _claim_sqlite(url: str) -> int | None:
    """Lock a SQLite store file for this process; refuse if another backend holds it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = f"{parsed.database}.backend-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ReplicaError(
            f"another backend already serves the SQLite store {parsed.database}; SQLite is for "
            "one process only: run replicas on PostgreSQL (CVM_DATABASE_URL=postgresql+psycopg://...)"
        ) from None
    return fd


class BackendService:
    """One backend: owns the store, the matcher index and the background loop."""

    def __init__(
        self,
        settings: Settings,
        deployment: Deployment,
        w3: Web3,
        *,
        dispatch: Dispatch | None = None,
        verifier_account: LocalAccount | None = None,
        trusted_roots: Sequence[x509.Certificate] | None = None,
        trusted_intermediates: Sequence[x509.Certificate] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self._sqlite_lock = _claim_sqlite(settings.database_url)
        self.store = Store(settings.database_url)
        self.clock = clock
        self.leadership = Leadership(self.store, ttl_s=settings.leader_ttl_s, clock=clock)
        # A round whose indexed events the matcher may not have reacted to (see `step`).
        self._reconcile_due = False
        self._failures = RepeatedConditions(log, level=logging.WARNING)
        self._collected_at = float("-inf")
        self._key_data_collected_at = float("-inf")
        self.dispatch = dispatch or CeleryDispatcher(make_producer(settings.broker_url))
        self.matcher = Matcher(
            self.store,
            self.dispatch,
            accept_timeout_s=settings.match_accept_timeout_s,
            stale_after_s=settings.heartbeat_stale_s,
            clock=clock,
        )
        self.indexer = Indexer(
            self.store,
            w3,
            marketplace_decoder(deployment),
            start_block=max(settings.indexer_start_block, deployment.start_block),
            confirmations=settings.indexer_confirmations,
            batch_blocks=settings.indexer_batch_blocks,
        )
        # Leases created above the confirmed cursor are dispatched at once (see matching.head).
        self.head_dispatch: HeadDispatch | None = None
        if settings.dispatch_at_head and settings.indexer_confirmations > 0:
            self.head_dispatch = HeadDispatch(w3, self.indexer, self.matcher)
        # Dispute windows (read from the registry) where the deployment takes disputes.
        self.dispute_windows: DisputeWindows | None = None
        reader = ChainClient(w3, deployment)
        if supports_disputes(reader):

            def window_end(lease_id: int, report_hash: bytes) -> int | None:
                submission = submission_of(reader, lease_id, report_hash)
                return submission.disputable_until if submission is not None else None

            self.dispute_windows = DisputeWindows(self.store, window_end)
        self.verifier: Verifier | None = None
        self.verifier_job: str | None = None
        self.liveness: LivenessWatch | None = None
        self.failover: FailoverWatch | None = None
        self.watcher: Watcher | None = None
        if verifier_account is not None:
            self.verifier_job = verifier_job(verifier_account.address)
            chain = ChainClient(w3, deployment, verifier_account)
            if _has_key_service(deployment):
                # Leases whose key policy allows failover move to another node when theirs
                # falls silent (backend.liveness); the others keep the plain challenge below.
                self.failover = FailoverWatch(
                    self.store,
                    ChainFailover(chain),
                    timeout_s=settings.liveness_timeout_s,
                    per_pass=settings.liveness_per_pass,
                    clock=clock,
                    on_silent=self.matcher.node_silent,
                )
            # The chip's genuine VCEK (AMD's KDS, cached): what a report failing on its
            # evidence's certificates is checked with before any rejection, and what shows a
            # report signed by another key forged in a dispute.
            kds = KdsVceks(
                CachingKds(settings.data_dir / "kds-cache", HttpKds()),
                base_url=settings.kds_url,
                clock=clock,
            )

            def confirm(lease_id: int, report_hash: bytes, ok: bool) -> str:
                return chain.attestations.confirm(lease_id, report_hash, ok).tx_hash

            self.verifier = Verifier(
                self.store,
                confirm,
                VerifierConfig(
                    chain_id=deployment.chain_id,
                    attestation_registry=deployment.attestation_registry,
                    trusted_roots=trusted_roots,
                    trusted_intermediates=tuple(trusted_intermediates),
                ),
                clock=clock,
                evidence_timeout_s=settings.verifier_evidence_timeout_s,
                kds=kds,
            )
            if settings.verifier_challenge_stale_s > 0:

                def challenge(lease_id: int) -> str:
                    return chain.leases.challenge(lease_id).tx_hash

                self.liveness = LivenessWatch(
                    self.store,
                    challenge,
                    stale_after_s=settings.verifier_challenge_stale_s,
                    min_interval_s=chain.attestations.min_challenge_interval(),
                    clock=clock,
                    on_silent=self.matcher.node_silent,
                    skip=self.failover.handles if self.failover is not None else None,
                )
            if settings.verifier_watch and supports_disputes(chain):
                self.watcher = Watcher(
                    self.store,
                    self.verifier,
                    lambda lease_id, bundle, certs: send_dispute(
                        chain, lease_id, bundle, certs
                    ).tx_hash,
                    certificates=partial(
                        dispute_certificates,
                        trusted_roots=trusted_roots,
                        intermediates=trusted_intermediates,
                        vcek_source=kds,
                    ),
                    address=verifier_account.address,
                    clock=clock,
                    preview=lambda lease_id, bundle, certs: preview_dispute(
                        chain, lease_id, bundle, certs
                    ),
                    per_tick=settings.verifier_watch_per_tick,
                    challenge_deadline=lambda lease_id, report_hash: (
                        pending.deadline
                        if (pending := challenge_of(chain, lease_id, _hash32(report_hash)))
                        else 0
                    ),
                    resolve=lambda lease_id, report_hash: resolve_challenge(
                        chain, lease_id, _hash32(report_hash)
                    ).tx_hash,
                )
        self.context = AppContext(
            settings=settings,
            store=self.store,
            chain=ChainInfo(
                chain_id=deployment.chain_id,
                node_registry=deployment.node_registry,
                lease_market=deployment.lease_market,
                attestation_registry=deployment.attestation_registry,
                token=deployment.token,
            ),
            clock=clock,
            heartbeat_listeners=[_LeaderOnly(self)],
            sealed_listeners=(
                [self.dispatch.serve_guest] if isinstance(self.dispatch, CeleryDispatcher) else []
            ),
            # Issue 20: key deposits and releases nudge the node like sealed secrets do.
            key_listeners=(
                [self.dispatch.serve_guest] if isinstance(self.dispatch, CeleryDispatcher) else []
            ),
            key_holders=_holder_check(reader),
            lease_at_head=created_at_head(reader) if self.head_dispatch is not None else None,
            trusted_roots=trusted_roots,
        )
        self.app: FastAPI = create_app(self.context)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # The verifier key's jobs, woken after every indexing round (see `_vote_loop`).
        self._vote_wake = threading.Event()
        self._vote_thread: threading.Thread | None = None
        # The URL the chain connection actually uses (cvm.chain decides which one wins).
        http_url = str(getattr(w3.provider, "endpoint_uri", None) or settings.rpc_url)
        ws_url = settings.indexer_ws_url or websocket_url(http_url)
        self.new_heads: NewHeads | None = None
        if ws_url.startswith(("ws://", "wss://")):
            self.new_heads = NewHeads(ws_url, lambda _number: self.wake())
        self.matcher.rebuild()

    # --- background work ------------------------------------------------------------------

    def step(self, *, housekeeping: bool = True, votes: bool = True) -> StepReport:
        """One round: index, react, expire, verify. Safe to call repeatedly.

        Each part runs only while this replica holds its leader lease; a replica that just
        became the indexer's leader first rebuilds its matcher index from the store.
        `housekeeping=False` (a round woken by a new block, see `_loop`) runs only what a
        block moves a lease on by: indexing, matching and dispatch, votes; the timed jobs
        (expiring reservations, dispute windows, collections, liveness, failover, watching
        the other verifiers) keep their own pace of at least every `indexer_poll_s`.
        `votes=False` leaves the verifier key's jobs out (`start` runs them in their own
        thread, so that waiting for votes' receipts never holds up indexing and dispatch).
        """
        indexed = BatchResult()
        rematched: list[int] = []
        was_leader = self.leadership.holds(INDEXER)
        leader = self.leadership.acquire(INDEXER)
        if leader:
            # Renewed while the pass runs: a long catch-up must not let the lease lapse (and
            # stops between batches if it was lost anyway).
            with self.leadership.keep(INDEXER) as term:
                if not was_leader:
                    self.matcher.rebuild()
                if not was_leader or self._reconcile_due:
                    # What a killed leader or a failed reaction left unheard (see reconcile).
                    self.matcher.reconcile()
                    self._reconcile_due = False
                self.matcher.refresh_heartbeats()
                # Set until the reaction to what this poll commits has run in full.
                self._reconcile_due = True
                indexed = self.indexer.poll(keep_going=term.check)
                if term.check():
                    self._react(indexed)
                    self._reconcile_due = False
                    if housekeeping:
                        rematched = self.matcher.expire_overdue()
                if self.head_dispatch is not None and term.check():
                    self.head_dispatch.run()
                if housekeeping and term.check() and self.dispute_windows is not None:
                    self.dispute_windows.run()
                if housekeeping and term.check():
                    self._collect_images()
                if housekeeping and term.check():
                    self._collect_key_data()
        verified, liveness, failover, watched = (
            self._verifier_jobs(housekeeping) if votes else (0, None, None, [])
        )
        return StepReport(
            indexed,
            rematched,
            verified,
            liveness=liveness,
            failover=failover,
            leader=leader,
            watched=watched,
        )

    def _verifier_jobs(
        self, housekeeping: bool
    ) -> tuple[int, LivenessResult | None, FailoverResult | None, list[WatchResult]]:
        """The verifier key's jobs (votes, liveness challenges, watching the others'
        verdicts), on its leader only."""
        verified = 0
        liveness = None
        failover = None
        watched: list[WatchResult] = []
        if self.verifier is not None and self.verifier_job is not None:
            if self.leadership.acquire(self.verifier_job):
                # Votes wait for receipts: the lease is renewed meanwhile.
                with self.leadership.keep(self.verifier_job) as term:
                    verified = len(self.verifier.run_pending())
                    if housekeeping and term.check() and self.failover is not None:
                        failover = self.failover.run()
                    if housekeeping and term.check():
                        liveness = self.liveness.run() if self.liveness else None
                    if housekeeping and self.watcher is not None and term.check():
                        watched = self.watcher.run()
        return verified, liveness, failover, watched

    def _collect_images(self) -> None:
        """Uploaded images no open lease names, past their grace period, leave the store
        (on the indexer's leader: one collector for the replicas' shared image store)."""
        now = self.clock()
        every = min(self.settings.image_gc_grace_s / 4, IMAGE_GC_EVERY_S)
        if now - self._collected_at < every:
            return
        self._collected_at = now
        try:
            removed = images.collect(
                ImageStore(self.settings.image_dir),
                self.store,
                grace_s=self.settings.image_gc_grace_s,
                now=now,
            )
        except OSError as exc:
            self._failures.report("images", "image collection failed (%s); retrying", exc)
            return
        self._failures.clear("images")
        if removed:
            log.info("removed %d uploaded image(s) no open lease uses: %s", len(removed), removed)

    def _collect_key_data(self) -> None:
        """Closed leases' key deposits, releases, epoch records and snapshot objects leave the
        store `snapshot_retention_s` after this backend first saw them closed."""
        now = self.clock()
        if now - self._key_data_collected_at < KEY_DATA_GC_EVERY_S:
            return
        self._key_data_collected_at = now
        try:
            with self.store.session() as session:
                removed = keys_relay.collect(
                    session,
                    self.context.object_store,
                    self.context.now(),
                    retention_s=self.settings.snapshot_retention_s,
                )
        except (ObjectStoreError, StoreError) as exc:
            self._failures.report("key-data", "removing closed leases' key data failed (%s)", exc)
            return
        self._failures.clear("key-data")
        if removed:
            log.info("removed the key and snapshot data of closed lease(s) %s", removed)

    def _react(self, batch: BatchResult) -> None:
        if batch.reorged_from is not None:
            # Projections were rebuilt: rebuild the index from them, then match afresh.
            self.matcher.rebuild()
        touched_nodes = {e.node for e in batch.events if e.node and e.name in NODE_RESCORING_EVENTS}
        touched_nodes |= batch.rebuilt_nodes
        if touched_nodes:
            with self.store.session() as session:
                nodes = [session.get(Node, address) for address in touched_nodes]
            for node in nodes:
                if node is not None:
                    self.matcher.node_changed(node)
        for event in batch.events:
            if event.lease_id is None:
                continue
            if event.name == "LeaseAccepted" and event.node:
                self.matcher.lease_accepted(event.lease_id, event.node)
            elif event.name in ("LeaseClosed", "LeaseDeclined", "LeaseFailedOver"):
                # A declined or failed-over lease is open again: free its node, match it to
                # the next one (never the one it left: `declined_by`).
                self.matcher.lease_closed(event.lease_id)
        # Every open lease without a live reservation: new ones, and any that found no
        # node before (a node may have registered or sent a heartbeat since).
        self.matcher.match_open_leases()

    def start(self) -> None:
        """Run `step()` every `indexer_poll_s` (and on every new block) in a daemon thread
        until `stop()`; the verifier key's jobs run beside it in a thread of their own."""
        if self._thread is not None:
            return
        self._stop.clear()
        if self.verifier is not None:
            # Made before the indexing loop starts: that loop leaves the votes to it.
            self._vote_thread = threading.Thread(
                target=self._vote_loop, name="cvm-backend-votes", daemon=True
            )
            self._vote_thread.start()
        self._thread = threading.Thread(target=self._loop, name="cvm-backend", daemon=True)
        self._thread.start()
        if self.new_heads is not None:
            self.new_heads.start()

    def wake(self) -> None:
        """Run the next round now (a new block was announced)."""
        self._wake.set()

    def _loop(self) -> None:
        kept_at = float("-inf")  # when the timed jobs last ran (monotonic)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                # Woken by a block right after a full round: only the block's own work, so
                # that a burst of blocks is not slowed by the timed jobs on every one.
                housekeeping = time.monotonic() - kept_at >= self.settings.indexer_poll_s
                if housekeeping:
                    kept_at = time.monotonic()
                self.step(housekeeping=housekeeping, votes=self._vote_thread is None)
                self._failures.clear("step")
            except Exception as exc:  # a failing RPC or database must not kill the loop
                # Logged once with its traceback, then counted: an outage is not a flood.
                self._failures.report(
                    "step", "backend step failed (%s); retrying", type(exc).__name__, exc_info=True
                )
            self._vote_wake.set()  # what this round indexed may be due a vote
            self._wake.wait(self.settings.indexer_poll_s)

    def _vote_loop(self) -> None:
        kept_at = float("-inf")
        while not self._stop.is_set():
            self._vote_wake.clear()
            try:
                housekeeping = time.monotonic() - kept_at >= self.settings.indexer_poll_s
                if housekeeping:
                    kept_at = time.monotonic()
                self._verifier_jobs(housekeeping)
                self._failures.clear("votes")
            except Exception as exc:  # a failing RPC or database must not kill the loop
                self._failures.report(
                    "votes", "verifier round failed (%s); retrying", type(exc).__name__,
                    exc_info=True,
                )  # fmt: skip
            self._vote_wake.wait(self.settings.indexer_poll_s)

    def stop(self) -> None:
        if self.new_heads is not None:
            self.new_heads.stop()
        self._stop.set()
        self._wake.set()
        self._vote_wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._vote_thread is not None:
            self._vote_thread.join(timeout=30)
            self._vote_thread = None
        self.leadership.release_all()

    def close(self) -> None:
        self.stop()
        self.store.close()
        if self._sqlite_lock is not None:
            os.close(self._sqlite_lock)
            self._sqlite_lock = None

    # --- HTTP ---------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Run the background loop and the API until interrupted."""
        self.start()
        try:
            uvicorn.run(
                self.app,
                host=host,
                port=port,
                log_level="info",
                # Behind the reverse proxy, the client is the proxy's X-Forwarded-For entry
                # (what rate limits count by) only if the proxy is listed here.
                forwarded_allow_ips=self.settings.api_trusted_proxies,
                proxy_headers=True,
            )
        finally:
            self.stop()


class _LeaderOnly:
    """Forwards heartbeats to the matcher only on the replica that runs it; the leader
    reads heartbeats stored by the other replicas from the store (`refresh_heartbeats`)."""

    def __init__(self, service: BackendService) -> None:
        self.service = service

    def on_heartbeat(
        self, node: str, free_vcpus: int, free_memory_mib: int, free_disk_gib: int, timestamp: int
    ) -> None:
        if self.service.leadership.holds(INDEXER):
            self.service.matcher.on_heartbeat(
                node, free_vcpus, free_memory_mib, free_disk_gib, timestamp
            )


def _has_key_service(deployment: Deployment) -> bool:
    """Whether the deployment has a KeyService (key policies, hence failover)."""
    return bool(deployment.key_service) and int(str(deployment.key_service), 16) != 0


def _hash32(report_hash: str) -> bytes:
    """A stored report hash ('0x' + 64 hex) as the 32 bytes the court takes."""
    return bytes.fromhex(report_hash.removeprefix("0x"))
