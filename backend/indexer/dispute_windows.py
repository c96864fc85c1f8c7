"""Until when each submission's verdict may be disputed, read from the registry.

The window's end (`submissionOf(leaseId, reportHash).disputableUntil`: the submission time,
the registry's verification window and the lease's dispute window fixed when the lease was
opened) is the registry's to say, so it is read from the chain once per submission rather
than recomputed from constants here. Runs after each indexing pass on the indexer's leader,
at most `per_pass` reads per pass; a reorg rebuilds the attestation with the field unset,
and the next pass reads it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select

from backend.store import Attestation, Store
from cvm.chain.errors import ChainError

log = logging.getLogger(__name__)

# (lease id, report hash) -> the end of its dispute window (unix seconds), None if unknown.
ReadWindow = Callable[[int, bytes], int | None]
PER_PASS = 50
# What `disputable_until` holds for a submission the registry keeps no window for.
NO_WINDOW = 0


class DisputeWindows:
    """Fills `attestations.disputable_until` for submissions that lack it."""

    def __init__(self, store: Store, read: ReadWindow, *, per_pass: int = PER_PASS) -> None:
        self.store = store
        self.read = read
        self.per_pass = per_pass

    def run(self) -> int:
        """Read the window of up to `per_pass` submissions; returns how many were filled."""
        with self.store.session() as session:
            rows = session.execute(
                select(Attestation.lease_id, Attestation.report_hash)
                .where(Attestation.disputable_until.is_(None))
                .order_by(Attestation.submitted_at)
                .limit(self.per_pass)
            ).all()
        filled = 0
        for lease_id, report_hash in rows:
            try:
                until = self.read(int(lease_id), bytes.fromhex(str(report_hash)[2:]))
            except ChainError as exc:
                log.warning("lease %s: dispute window not read: %s", lease_id, exc)
                break  # the chain is unreachable or refusing: try again next pass
            if until is None:
                # The registry keeps no window for it: recorded as none (0), not asked again.
                until = NO_WINDOW
            with self.store.session() as session:
                attestation = session.get(Attestation, int(lease_id))
                # Only if the same submission is still the latest (a newer one has its own).
                if attestation is not None and attestation.report_hash == report_hash:
                    attestation.disputable_until = until
                    filled += 1
        return filled
