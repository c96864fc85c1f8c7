"""Leader leases in the store: exactly one replica runs each singleton job at a time.

A job (the indexer with the matcher, one verifier key) belongs to whoever holds its row
in `leader_leases` until `expires_at`. The holder renews it on every pass; a replica that
dies stops renewing, and another takes the row over once it has expired, so failover
takes at most `ttl_s` plus one pass. Taking or renewing is one conditional UPDATE (or an
INSERT for a job nobody ever ran), so two replicas can never both win the same term.
Expiry uses the replicas' clocks: keep them in sync (NTP) and `ttl_s` well above their skew.

A pass can take longer than `ttl_s` (an indexer catching up on many batches, a verifier
waiting for its votes' receipts): `keep(job)` renews the lease while the pass runs, from a
thread every quarter term, and at each checkpoint the pass offers (`Term.check`, between the
indexer's batches), which also tells the pass to stop once the lease was lost. A pass that
stops making progress (no checkpoint for `stall_s`) is no longer kept alive by the thread, so
a hung leader cannot hold a job for ever.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from backend.store import LeaderLease, Store

log = logging.getLogger(__name__)

INDEXER = "indexer"
# How long a pass may go without a checkpoint before its lease is no longer renewed for it.
STALL_S = 600.0


def verifier_job(address: str) -> str:
    """The job name of the verifier that votes with `address`."""
    return f"verifier:{address.lower()}"


def replica_id() -> str:
    """A name for this process, unique across hosts and restarts (shown in logs only)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leadership:
    """Takes and renews leader leases for this replica."""

    def __init__(
        self,
        store: Store,
        *,
        holder: str | None = None,
        ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.holder = holder or replica_id()
        self.ttl_s = ttl_s
        self.clock = clock
        self._held: set[str] = set()
        self._renewed: dict[str, float] = {}
        # The pass's thread and a `keep` thread renew the same jobs.
        self._lock = threading.Lock()
        self._terms: set[Term] = set()

    def acquire(self, job: str) -> bool:
        """Take or renew the lease on `job`; True while this replica is its leader.

        A lease renewed less than a third of `ttl_s` ago is not written again: the loop may
        run on every new block, and the lease has two thirds of its term left anyway.
        """
        moment = self.clock()
        with self._lock:
            fresh = moment - self._renewed.get(job, float("-inf")) < self.ttl_s / 3
            if job in self._held and fresh:
                return True
        now = datetime.fromtimestamp(moment, UTC)
        expires = now + timedelta(seconds=self.ttl_s)
        try:
            with self.store.session() as session:
                result = session.execute(
                    update(LeaderLease)
                    .where(
                        LeaderLease.name == job,
                        or_(LeaderLease.holder == self.holder, LeaderLease.expires_at <= now),
                    )
                    .values(holder=self.holder, expires_at=expires)
                    .execution_options(synchronize_session=False)
                )
                won = getattr(result, "rowcount", 0) == 1
                if not won and session.get(LeaderLease, job) is None:
                    with session.begin_nested():
                        session.add(LeaderLease(name=job, holder=self.holder, expires_at=expires))
                    won = True
        except IntegrityError:
            won = False  # another replica inserted the first lease at the same moment
        except DBAPIError:
            # The store is unreachable: a leader that cannot renew must stop acting as one.
            log.warning("leader lease %s: store unreachable; standing down", job)
            won = False
        with self._lock:
            self._note(job, won)
            if won:
                self._renewed[job] = moment
        return won

    @contextmanager
    def keep(self, job: str, *, stall_s: float = STALL_S) -> Iterator[Term]:
        """Keep the lease on `job` (already acquired) renewed while the body runs."""
        term = Term(self, job, stall_s=stall_s)
        keeper = threading.Thread(target=term.run, name=f"cvm-leader-{job}", daemon=True)
        with self._lock:
            self._terms.add(term)
        keeper.start()
        try:
            yield term
        finally:
            term.stop()
            keeper.join()
            with self._lock:
                self._terms.discard(term)

    def release(self, job: str) -> None:
        """Give `job` up now (clean shutdown), so another replica need not wait for expiry."""
        with self._lock:
            terms = [term for term in self._terms if term.job == job]
        for term in terms:  # a pass still running (a stop that timed out) renews no more
            term.lost = True
            term.stop()
        try:
            with self.store.session() as session:
                session.execute(
                    update(LeaderLease)
                    .where(LeaderLease.name == job, LeaderLease.holder == self.holder)
                    .values(expires_at=datetime.fromtimestamp(0, UTC))
                    .execution_options(synchronize_session=False)
                )
        except DBAPIError:
            pass
        with self._lock:
            self._held.discard(job)
            self._renewed.pop(job, None)

    def release_all(self) -> None:
        with self._lock:
            jobs = list(self._held)
        for job in jobs:
            self.release(job)

    def holds(self, job: str) -> bool:
        return job in self._held

    def _note(self, job: str, won: bool) -> None:
        if won and job not in self._held:
            log.info("%s: now the leader of %s", self.holder, job)
            self._held.add(job)
        elif not won and job in self._held:
            log.warning("%s: no longer the leader of %s", self.holder, job)
            self._held.discard(job)


class Term:
    """One pass's hold on a job (`Leadership.keep`): renewed by a thread and at checkpoints."""

    def __init__(self, leadership: Leadership, job: str, *, stall_s: float) -> None:
        self.leadership = leadership
        self.job = job
        self.stall_s = stall_s
        self.lost = False
        self._progress = leadership.clock()
        self._stopped = threading.Event()

    def check(self) -> bool:
        """A checkpoint of the pass: renew the lease if due; False once it is lost (the pass
        must stop writing as the leader then)."""
        if self.lost:
            return False
        self._progress = self.leadership.clock()
        if not self.leadership.acquire(self.job):
            self.lost = True
        return not self.lost

    def run(self) -> None:
        # A quarter term between renewals: `acquire` writes once a third of it has passed.
        while not self._stopped.wait(self.leadership.ttl_s / 4):
            if self.lost:
                return
            if self.leadership.clock() - self._progress > self.stall_s:
                log.warning(
                    "%s: a pass made no progress for %.0fs; no longer renewing it",
                    self.job,
                    self.stall_s,
                )
                return
            if not self.leadership.acquire(self.job):
                self.lost = True
                return

    def stop(self) -> None:
        self._stopped.set()
