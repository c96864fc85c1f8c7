"""The backend process: API, indexer, matcher, verifier and dispatch wired together.

`BackendService.step()` is one round of the background work (index new blocks, react to
what they contain, expire overdue reservations, verify pending attestations); `start()`
runs it in a thread every `indexer_poll_s`, and `serve()` adds the HTTP API (uvicorn).
The embedded demo and the tests drive the same object.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import uvicorn
from cryptography import x509
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3 import Web3

from backend.api import create_app
from backend.api.deps import AppContext
from backend.dispatch import CeleryDispatcher, make_producer
from backend.indexer import NODE_RESCORING_EVENTS, BatchResult, Indexer, marketplace_decoder
from backend.matching import Matcher
from backend.matching.service import Dispatch
from backend.store import Node, Store
from backend.verifier import LivenessResult, LivenessWatch, Verifier, VerifierConfig
from cvm.api_models import ChainInfo
from cvm.chain import ChainClient, Deployment
from cvm.config import Settings

log = logging.getLogger(__name__)


@dataclass
class StepReport:
    """What one background round did (for logs and tests)."""

    indexed: BatchResult
    expired_rematched: list[int]
    verified: int
    liveness: LivenessResult | None = None


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.store = Store(settings.database_url)
        self.clock = clock
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
        self.verifier: Verifier | None = None
        self.liveness: LivenessWatch | None = None
        if verifier_account is not None:
            chain = ChainClient(w3, deployment, verifier_account)

            def confirm(lease_id: int, report_hash: bytes, ok: bool) -> str:
                return chain.attestations.confirm(lease_id, report_hash, ok).tx_hash

            self.verifier = Verifier(
                self.store,
                confirm,
                VerifierConfig(
                    chain_id=deployment.chain_id,
                    attestation_registry=deployment.attestation_registry,
                    trusted_roots=trusted_roots,
                ),
                clock=clock,
                evidence_timeout_s=settings.verifier_evidence_timeout_s,
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
            heartbeat_listeners=[self.matcher],
        )
        self.app: FastAPI = create_app(self.context)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.matcher.rebuild()

    # --- background work ------------------------------------------------------------------

    def step(self) -> StepReport:
        """One round: index, react, expire, verify. Safe to call repeatedly."""
        indexed = self.indexer.poll()
        self._react(indexed)
        rematched = self.matcher.expire_overdue()
        verified = len(self.verifier.run_pending()) if self.verifier else 0
        liveness = self.liveness.run() if self.liveness else None
        return StepReport(indexed, rematched, verified, liveness)

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
            elif event.name in ("LeaseClosed", "LeaseDeclined"):
                # A declined lease is open again: free its node, match it to the next one.
                self.matcher.lease_closed(event.lease_id)
        # Every open lease without a live reservation: new ones, and any that found no
        # node before (a node may have registered or sent a heartbeat since).
        self.matcher.match_open_leases()

    def start(self) -> None:
        """Run `step()` every `indexer_poll_s` in a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cvm-backend", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a failing RPC or database must not kill the loop
                log.exception("backend step failed; retrying")
            self._stop.wait(self.settings.indexer_poll_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    # --- HTTP ---------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Run the background loop and the API until interrupted."""
        self.start()
        try:
            uvicorn.run(self.app, host=host, port=port, log_level="info")
        finally:
            self.stop()
