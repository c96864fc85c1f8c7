"""The agent's small durable store (SQLite): its leases, guests, and attestation submissions.

It survives a SIGKILL of the agent: every step writes here before it acts on the world
(a report is stored before it is uploaded or submitted), so a restarted agent resumes
instead of repeating. Every connection is short-lived, so worker processes can share it.
The schema is versioned (SQLite's user_version): a store written by an older agent is
upgraded in place when opened, so its leases and reports are never lost to an upgrade.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from node_agent.errors import AgentError, CapacityExceeded

# Each step brings a store from the version before it (PRAGMA user_version) to its own, so a
# store written by an older agent is upgraded in place when it is opened.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first agent's tables (stores it made carry user_version 0 and these tables).
    (
        """CREATE TABLE IF NOT EXISTS leases (
            lease_id INTEGER PRIMARY KEY,
            state TEXT NOT NULL,
            vcpu INTEGER NOT NULL,
            memory_mb INTEGER NOT NULL,
            disk_gb INTEGER NOT NULL,
            expected_measurement BLOB NOT NULL,
            reattest_interval INTEGER NOT NULL,
            accept_tx TEXT,
            reason TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS submissions (
            lease_id INTEGER NOT NULL,
            nonce INTEGER NOT NULL,
            state TEXT NOT NULL,
            report BLOB NOT NULL,
            report_hash BLOB NOT NULL,
            vcek BLOB NOT NULL,
            cert_chain BLOB NOT NULL,
            evidence_hash TEXT,
            tx_hash TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (lease_id, nonce)
        )""",
    ),
    # 2: the chain's units in the column names; where the reconciler's event scans got to.
    (
        "ALTER TABLE leases RENAME COLUMN memory_mb TO memory_mib",
        "ALTER TABLE leases RENAME COLUMN disk_gb TO disk_gib",
        """CREATE TABLE checkpoints (
            name TEXT PRIMARY KEY,
            next_block INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
    ),
    # 3: the guest agent's public key that a report's REPORT_DATA binds (empty: none).
    ("ALTER TABLE submissions ADD COLUMN guest_key BLOB NOT NULL DEFAULT x''",),
    # 4: what a guest answered when it did not attest (refusals, timeouts, malformed answers):
    # the node's evidence when it declines a lease whose guest stays silent.
    (
        """CREATE TABLE guest_failures (
            lease_id INTEGER NOT NULL,
            at REAL NOT NULL,
            step TEXT NOT NULL,
            error TEXT NOT NULL
        )""",
        "CREATE INDEX guest_failures_by_lease ON guest_failures (lease_id, at)",
    ),
)
# Per lease, the newest failures kept (a guest failing every pass must not grow the store).
MAX_GUEST_FAILURES = 32
MAX_GUEST_FAILURE_CHARS = 1000
SCHEMA_VERSION = len(_MIGRATIONS)


class LeaseState(StrEnum):
    """Where the agent is with a lease; only the forward transitions below happen."""

    RESERVED = "reserved"  # capacity held, accept not yet confirmed on chain
    ACCEPTED = "accepted"  # acceptLease mined for this node
    LAUNCHED = "launched"  # the guest runs
    ATTESTED = "attested"  # an attestation for the current nonce is on chain
    # The guest was started again after it attested (a host reboot): the standing attestation
    # is about the old guest (old keys), so the new one owes its own report (back to ATTESTED).
    RELAUNCHED = "relaunched"
    STOPPED = "stopped"  # the guest is gone and the lease closed (terminal)
    REFUSED = "refused"  # not ours or does not fit (terminal)


ACTIVE_STATES = (
    LeaseState.RESERVED,
    LeaseState.ACCEPTED,
    LeaseState.LAUNCHED,
    LeaseState.ATTESTED,
    LeaseState.RELAUNCHED,
)
_SUM_OF_ACTIVE = (
    "SELECT COALESCE(SUM(vcpu),0), COALESCE(SUM(memory_mib),0), COALESCE(SUM(disk_gib),0)"  # noqa: S608
    f" FROM leases WHERE state IN ({','.join('?' for _ in ACTIVE_STATES)}) AND lease_id IS NOT ?"
)


class SubmissionState(StrEnum):
    """The steps of one attestation (one lease, one nonce)."""

    REPORTED = "reported"  # the report for this nonce is stored: it is never fetched again
    UPLOADED = "uploaded"  # the evidence is on the backend
    SUBMITTED = "submitted"  # the submit transaction is mined


@dataclass(frozen=True)
class Resources:
    """Guest resources, in the units the chain's lease spec uses."""

    vcpu: int
    memory_mib: int
    disk_gib: int

    def fits_within(self, other: Resources) -> bool:
        return (
            self.vcpu <= other.vcpu
            and self.memory_mib <= other.memory_mib
            and self.disk_gib <= other.disk_gib
        )

    def minus(self, other: Resources) -> Resources:
        return Resources(
            self.vcpu - other.vcpu,
            self.memory_mib - other.memory_mib,
            self.disk_gib - other.disk_gib,
        )


@dataclass(frozen=True)
class LeaseRecord:
    """One lease as the agent knows it."""

    lease_id: int
    state: LeaseState
    resources: Resources
    expected_measurement: bytes
    reattest_interval: int
    accept_tx: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class GuestFailure:
    """One time a lease's guest did not do what the node asked (kept as evidence)."""

    lease_id: int
    at: float  # unix time on this host
    step: str  # what the node asked: "attest"
    error: str


@dataclass(frozen=True)
class Submission:
    """One attestation of one lease at one nonce."""

    lease_id: int
    nonce: int
    state: SubmissionState
    report: bytes
    report_hash: bytes
    vcek: bytes
    cert_chain: bytes
    evidence_hash: str | None
    tx_hash: str | None
    guest_key: bytes = b""


class AgentStore:
    """SQLite-backed state of one node agent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def _migrate(self) -> None:
        """Bring the store to `SCHEMA_VERSION`, one step at a time, each in one transaction
        (agents sharing the store may open it at once: the write lock orders them)."""
        with self._transaction() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise AgentError(
                    f"{self.path} has schema version {version}; this agent knows up to "
                    f"{SCHEMA_VERSION}: run the newer agent or move the store aside"
                )
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number:d}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per thread, kept open: closing the last connection of a WAL
        # database checkpoints it and fsyncs (~5-20 ms a store call, several per lease).
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            # WAL with synchronous=NORMAL survives a killed process (the crash this store is
            # for) and skips an fsync per commit; only a power cut may lose the last commits,
            # which the reconciler then re-learns from the chain.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        yield conn

    def close(self) -> None:
        """Close the calling thread's connection (the others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: the write lock is taken up front, so check-then-write
        sequences (capacity, first submission per nonce) are atomic across processes."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # the kept connection must not stay in it
                    conn.execute("ROLLBACK")
                raise

    # --- leases and capacity -----------------------------------------------------
    @staticmethod
    def _lease(row: sqlite3.Row) -> LeaseRecord:
        return LeaseRecord(
            lease_id=row["lease_id"],
            state=LeaseState(row["state"]),
            resources=Resources(row["vcpu"], row["memory_mib"], row["disk_gib"]),
            expected_measurement=bytes(row["expected_measurement"]),
            reattest_interval=row["reattest_interval"],
            accept_tx=row["accept_tx"],
            reason=row["reason"],
        )

    def get_lease(self, lease_id: int) -> LeaseRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM leases WHERE lease_id = ?", (lease_id,)).fetchone()
        return None if row is None else self._lease(row)

    def leases(self, states: tuple[LeaseState, ...] = ACTIVE_STATES) -> list[LeaseRecord]:
        marks = ",".join("?" for _ in states)
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM leases WHERE state IN ({marks}) ORDER BY lease_id",  # noqa: S608
                tuple(str(s) for s in states),
            ).fetchall()
        return [self._lease(row) for row in rows]

    @staticmethod
    def _used(conn: sqlite3.Connection, excluding: int | None = None) -> Resources:
        row = conn.execute(
            _SUM_OF_ACTIVE, (*(str(state) for state in ACTIVE_STATES), excluding)
        ).fetchone()
        return Resources(int(row[0]), int(row[1]), int(row[2]))

    def used(self) -> Resources:
        """Resources held by every active lease."""
        with self._connect() as conn:
            return self._used(conn)

    def reserve(
        self,
        lease_id: int,
        resources: Resources,
        expected_measurement: bytes,
        reattest_interval: int,
        capacity: Resources,
    ) -> LeaseRecord:
        """Hold capacity for a lease, atomically; idempotent for a lease already known.

        Raises `CapacityExceeded` (and records the lease as refused) when it does not fit.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM leases WHERE lease_id = ?", (lease_id,)).fetchone()
            if row is not None and LeaseState(row["state"]) != LeaseState.REFUSED:
                return self._lease(row)
            free = capacity.minus(self._used(conn, excluding=lease_id))
            fits = resources.fits_within(free)
            state = LeaseState.RESERVED if fits else LeaseState.REFUSED
            reason = "" if fits else f"needs {resources}, free {free}"
            conn.execute(
                "INSERT OR REPLACE INTO leases (lease_id, state, vcpu, memory_mib, disk_gib,"
                " expected_measurement, reattest_interval, reason, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    lease_id,
                    str(state),
                    resources.vcpu,
                    resources.memory_mib,
                    resources.disk_gib,
                    expected_measurement,
                    reattest_interval,
                    reason,
                    time.time(),
                ),
            )
        if not fits:
            raise CapacityExceeded(f"lease {lease_id} does not fit: {reason}")
        record = self.get_lease(lease_id)
        assert record is not None
        return record

    def set_lease_state(
        self, lease_id: int, state: LeaseState, *, reason: str = "", accept_tx: str | None = None
    ) -> None:
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE leases SET state = ?, reason = ?, accept_tx = COALESCE(?, accept_tx),"
                " updated_at = ? WHERE lease_id = ?",
                (str(state), reason, accept_tx, time.time(), lease_id),
            )
            if cursor.rowcount != 1:
                raise AgentError(f"lease {lease_id} is not in the agent's store")

    # --- submissions ---------------------------------------------------------------
    @staticmethod
    def _submission(row: sqlite3.Row) -> Submission:
        return Submission(
            lease_id=row["lease_id"],
            nonce=row["nonce"],
            state=SubmissionState(row["state"]),
            report=bytes(row["report"]),
            report_hash=bytes(row["report_hash"]),
            vcek=bytes(row["vcek"]),
            cert_chain=bytes(row["cert_chain"]),
            evidence_hash=row["evidence_hash"],
            tx_hash=row["tx_hash"],
            guest_key=bytes(row["guest_key"]),
        )

    def get_submission(self, lease_id: int, nonce: int) -> Submission | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM submissions WHERE lease_id = ? AND nonce = ?", (lease_id, nonce)
            ).fetchone()
        return None if row is None else self._submission(row)

    def submissions(self, lease_id: int) -> list[Submission]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM submissions WHERE lease_id = ? ORDER BY nonce", (lease_id,)
            ).fetchall()
        return [self._submission(row) for row in rows]

    def record_report(
        self,
        lease_id: int,
        nonce: int,
        report: bytes,
        report_hash: bytes,
        vcek: bytes = b"",
        cert_chain: bytes = b"",
        guest_key: bytes = b"",
    ) -> Submission:
        """Keep the first report obtained for (lease, nonce); later calls get that one back,
        so a retried step never produces a second, different attestation for one nonce."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO submissions (lease_id, nonce, state, report, report_hash,"
                " vcek, cert_chain, guest_key, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    lease_id,
                    nonce,
                    str(SubmissionState.REPORTED),
                    report,
                    report_hash,
                    vcek,
                    cert_chain,
                    guest_key,
                    time.time(),
                ),
            )
        stored = self.get_submission(lease_id, nonce)
        assert stored is not None
        return stored

    def drop_report(self, lease_id: int, nonce: int) -> None:
        """Forget the report kept for (lease, nonce) unless it was submitted: it came from a
        guest that is gone (and its key with it), so a new one must be taken."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM submissions WHERE lease_id = ? AND nonce = ? AND state != ?",
                (lease_id, nonce, str(SubmissionState.SUBMITTED)),
            )

    def forget_submissions(self, lease_id: int, from_nonce: int) -> None:
        """Forget every report kept for the lease from `from_nonce` on, submitted ones too: the
        chain no longer holds them (a reorg dropped a combined accept) and their guest is gone."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM submissions WHERE lease_id = ? AND nonce >= ?", (lease_id, from_nonce)
            )

    def record_upload(self, lease_id: int, nonce: int, evidence_hash: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE submissions SET state = ?, evidence_hash = ?, updated_at = ?"
                " WHERE lease_id = ? AND nonce = ? AND state = ?",
                (
                    str(SubmissionState.UPLOADED),
                    evidence_hash,
                    time.time(),
                    lease_id,
                    nonce,
                    str(SubmissionState.REPORTED),
                ),
            )

    def record_submitted(self, lease_id: int, nonce: int, tx_hash: str | None) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE submissions SET state = ?, tx_hash = COALESCE(?, tx_hash), updated_at = ?"
                " WHERE lease_id = ? AND nonce = ?",
                (str(SubmissionState.SUBMITTED), tx_hash, time.time(), lease_id, nonce),
            )

    # --- guest failures -----------------------------------------------------------------
    def record_guest_failure(self, lease_id: int, step: str, error: str) -> None:
        """Keep what the guest did instead of `step` (the newest `MAX_GUEST_FAILURES`)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO guest_failures (lease_id, at, step, error) VALUES (?,?,?,?)",
                (lease_id, time.time(), step, error[:MAX_GUEST_FAILURE_CHARS]),
            )
            conn.execute(
                "DELETE FROM guest_failures WHERE lease_id = ? AND rowid NOT IN (SELECT rowid"
                " FROM guest_failures WHERE lease_id = ? ORDER BY at DESC, rowid DESC LIMIT ?)",
                (lease_id, lease_id, MAX_GUEST_FAILURES),
            )

    def guest_failures(self, lease_id: int) -> list[GuestFailure]:
        """The failures kept for the lease's guest, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM guest_failures WHERE lease_id = ? ORDER BY at, rowid", (lease_id,)
            ).fetchall()
        return [GuestFailure(row["lease_id"], row["at"], row["step"], row["error"]) for row in rows]

    # --- checkpoints ------------------------------------------------------------------
    def checkpoint(self, name: str) -> int | None:
        """The next block the scan `name` has to read, or None if it never completed."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT next_block FROM checkpoints WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else int(row[0])

    def save_checkpoint(self, name: str, next_block: int) -> None:
        """Record that the scan `name` has handled every block before `next_block`."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO checkpoints (name, next_block, updated_at) VALUES (?,?,?)"
                " ON CONFLICT (name) DO UPDATE SET next_block = excluded.next_block,"
                " updated_at = excluded.updated_at",
                (name, next_block, time.time()),
            )
