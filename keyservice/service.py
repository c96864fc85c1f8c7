"""The holder's loop: follow the chain's new blocks (every `poll_s`, 0.2 s by default) and act
on AttestationVerified / LeaseClosed / KeyPolicySet at once; pull deposits and epoch records
from the backend (every `pull_s`, backing off on errors); retry what could not be done yet.

One bad lease never stops the loop: its failure is logged (never a share) and the loop goes on.
At start it catches up with the chain's current state for every lease it holds, so a holder
restarted after a Verified it missed still releases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from keyservice.holder import Holder, NotYet
from keyservice.store import Store
from keyservice.wire import Refused

log = logging.getLogger("keyservice")

MAX_PAGE = 500  # items taken from one backend answer
MAX_PENDING = 1024  # deposits waiting for the chain's policy
PENDING_TTL_S = 600.0
MAX_BLOCKS_PER_STEP = 2_000
MAX_CURSOR = 2**63 - 1


@dataclass
class Backoff:
    base_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0
    not_before: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def ok(self) -> None:
        self.failures = 0
        self.not_before = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        self.not_before = now + min(self.max_s, self.base_s * 2 ** min(self.failures - 1, 10))


@dataclass
class Stats:
    releases: int = 0
    refused: int = 0
    deposits: int = 0
    epochs: int = 0
    errors: int = 0


@dataclass
class _Pending:
    """A deposit the chain's policy did not match yet (or the chain failed mid-check)."""

    since: float
    item: dict
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=1.0, max_s=30.0))


@dataclass
class Service:
    holder: Holder
    poll_s: float = 0.2
    pull_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    stats: Stats = field(default_factory=Stats)
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _retry: dict[int, Backoff] = field(default_factory=dict)
    _backend: Backoff = field(default_factory=Backoff)
    _chain: Backoff = field(default_factory=lambda: Backoff(base_s=0.2, max_s=10.0))
    _last_pull: float = float("-inf")

    @property
    def store(self) -> Store:
        return self.holder.store

    # --- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Catch up with the chain for every lease held; follow blocks from the head."""
        head = self.holder.chain.head()
        for lease_id in self.store.leases():
            self._guarded(lease_id, partial(self.holder.catch_up, lease_id))
        if self.store.cursor("block") is None:
            self.store.set_cursor("block", head)

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff(base_s=0.5, max_s=10.0)
        while not stop.is_set():  # a chain not answering yet at start is waited for
            try:
                self.start()
                break
            except Exception as exc:
                self.stats.errors += 1
                backoff.failed(self.clock())
                log.warning("start: %s (retrying)", _short(exc))
                stop.wait(min(backoff.max_s, backoff.base_s * 2 ** min(backoff.failures, 5)))
        while not stop.is_set():
            self.step()
            stop.wait(self.poll_s)

    # --- one step --------------------------------------------------------------------------

    def step(self) -> None:
        now = self.clock()
        if self._chain.ready(now):
            try:
                self._follow_chain()
                self._chain.ok()
            except Exception as exc:  # a dead RPC endpoint: back off, never stop
                self.stats.errors += 1
                self._chain.failed(now)
                log.warning("chain: %s", _short(exc))
        if now - self._last_pull >= self.pull_s and self._backend.ready(now):
            self._last_pull = now
            try:
                self._pull()
                self._backend.ok()
            except Exception as exc:
                self.stats.errors += 1
                self._backend.failed(now)
                log.warning("backend: %s", _short(exc))
        self._retry_due(now)

    def _follow_chain(self) -> None:
        last = self.store.cursor("block")
        head = self.holder.chain.head()
        if last is None:
            self.store.set_cursor("block", head)
            return
        if head <= last:
            return
        to = min(head, last + MAX_BLOCKS_PER_STEP)
        for event in self.holder.chain.events(last + 1, to):
            lease_id = event.lease_id
            if self.store.share(lease_id) is None and lease_id not in self._pending:
                continue  # not a lease of this holder
            if event.name == "AttestationVerified":
                self._guarded(lease_id, partial(self.holder.release, lease_id, event.report_hash))
            elif event.name == "LeaseClosed":
                self._pending.pop(lease_id, None)
                self.holder.lease_closed(lease_id)
            elif event.name in ("KeyPolicySet", "KeyMeasurementsSet"):
                self._guarded(lease_id, partial(self.holder.policy_changed, lease_id))
                self._retry_pending(lease_id)
                # A measurement now allowed may make the current guest releasable.
                self._guarded(lease_id, partial(self.holder.release, lease_id))
        self.store.set_cursor("block", to)

    def _pull(self) -> None:
        after = self.store.cursor("shares") or 0
        for item in _page(self.holder.backend.shares(after)):
            cursor = _cursor(item)
            if cursor is None or cursor <= after:
                continue
            after = cursor
            self._take_deposit(item)
            self.store.set_cursor("shares", after)
        after = self.store.cursor("epochs") or 0
        for item in _page(self.holder.backend.epochs(after)):
            cursor = _cursor(item)
            if cursor is None or cursor <= after:
                continue
            after = cursor
            try:
                if self.holder.accept_epoch(item):
                    self.stats.epochs += 1
            except Refused as exc:
                self.stats.refused += 1
                log.warning("epoch record refused: %s", exc)
            self.store.set_cursor("epochs", after)

    def _take_deposit(self, item: dict) -> None:
        lease_id = item.get("lease_id")
        try:
            share = self.holder.accept_deposit(item)
        except NotYet as exc:
            self._wait(lease_id, item)
            log.info("deposit waits for the chain: %s", exc)
            return
        except Refused as exc:
            if isinstance(lease_id, int):
                self._pending.pop(lease_id, None)
            self.stats.refused += 1
            log.warning("deposit refused: %s", exc)
            return
        except Exception as exc:  # the chain failed mid-check: try again later
            self._wait(lease_id, item)
            self.stats.errors += 1
            log.warning("deposit of lease %s: %s", lease_id, _short(exc))
            return
        self._pending.pop(share.lease_id, None)
        self.stats.deposits += 1
        # The guest may be Verified already (deposits can trail the rent): release at once.
        self._guarded(share.lease_id, partial(self.holder.release, share.lease_id))

    def _wait(self, lease_id: object, item: dict) -> None:
        if not isinstance(lease_id, int) or isinstance(lease_id, bool):
            return
        entry = self._pending.get(lease_id)
        if entry is None:
            if len(self._pending) >= MAX_PENDING:
                log.warning("deposit of lease %d dropped: too many waiting", lease_id)
                return
            entry = self._pending[lease_id] = _Pending(self.clock(), item)
        entry.item = item
        entry.backoff.failed(self.clock())

    def _retry_pending(self, lease_id: int) -> None:
        entry = self._pending.get(lease_id)
        if entry is not None:
            self._take_deposit(entry.item)

    def _retry_due(self, now: float) -> None:
        for lease_id, entry in list(self._pending.items()):
            if now - entry.since > PENDING_TTL_S:
                del self._pending[lease_id]
                log.warning("deposit of lease %d dropped: the chain never had its policy", lease_id)
            elif entry.backoff.ready(now):
                self._take_deposit(entry.item)
        for lease_id, backoff in list(self._retry.items()):
            if backoff.ready(now):
                self._guarded(lease_id, partial(self.holder.release, lease_id))

    def _guarded(self, lease_id: int, action: Callable[[], Any]) -> None:
        """Run `action` for one lease; a failure is logged and retried (backend or chain
        trouble) or counted (a refused check), never raised."""
        try:
            result = action()
        except Refused as exc:
            self.stats.refused += 1
            self._retry.pop(lease_id, None)
            log.warning("lease %d: refused: %s", lease_id, exc)
            return
        except Exception as exc:
            self.stats.errors += 1
            backoff = self._retry.setdefault(lease_id, Backoff())
            backoff.failed(self.clock())
            if backoff.failures > 12:
                self._retry.pop(lease_id, None)
            log.warning("lease %d: %s (will retry)", lease_id, _short(exc))
            return
        self._retry.pop(lease_id, None)
        if result is not None and type(result).__name__ == "Release":
            self.stats.releases += 1


def _page(answer: object) -> list[dict]:
    if not isinstance(answer, list):
        raise ValueError("the backend's answer is not a list")
    return [item for item in answer[:MAX_PAGE] if isinstance(item, dict)]


def _cursor(item: dict) -> int | None:
    value = item.get("cursor")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CURSOR:
        return None
    return value


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"
