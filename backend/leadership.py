"""Leader leases in the store: exactly one replica runs each singleton job at a time.

A job (the indexer with the matcher, one verifier key) belongs to whoever holds its row
in `leader_leases` until `expires_at`. The holder renews it on every pass; a replica that
dies stops renewing, and another takes the row over once it has expired, so failover
takes at most `ttl_s` plus one pass. Taking or renewing is one conditional UPDATE (or an
INSERT for a job nobody ever ran), so two replicas can never both win the same term.
Expiry uses the replicas' clocks: keep them in sync (NTP) and `ttl_s` well above their skew.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from backend.store import LeaderLease, Store

log = logging.getLogger(__name__)

INDEXER = "indexer"


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

    def acquire(self, job: str) -> bool:
        """Take or renew the lease on `job`; True while this replica is its leader.

        A lease renewed less than a third of `ttl_s` ago is not written again: the loop may
        run on every new block, and the lease has two thirds of its term left anyway.
        """
        moment = self.clock()
        if job in self._held and moment - self._renewed.get(job, float("-inf")) < self.ttl_s / 3:
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
        self._note(job, won)
        if won:
            self._renewed[job] = moment
        return won

    def release(self, job: str) -> None:
        """Give `job` up now (clean shutdown), so another replica need not wait for expiry."""
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
        self._held.discard(job)

    def release_all(self) -> None:
        for job in list(self._held):
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
