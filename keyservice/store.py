"""The holder's own store: one SQLite file (mode 0600) in its data directory.

Per lease it keeps exactly one share (the latest key version: a rekey replaces it at once),
the manifest it came under, the highest epoch record it verified (never lower), which report
hashes it released to (once each), and the cursors of what it read from the backend and the
chain. Leases it saw closed are remembered so a replayed deposit cannot bring a share back.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    lease_id      TEXT PRIMARY KEY,
    key_version   INTEGER NOT NULL,
    share_index   INTEGER NOT NULL,
    share         BLOB NOT NULL,
    manifest      TEXT NOT NULL,
    manifest_hash BLOB NOT NULL,
    renter        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    lease_id    TEXT PRIMARY KEY,
    key_version INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    snapshot    BLOB NOT NULL,
    signature   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    lease_id    TEXT NOT NULL,
    report_hash BLOB NOT NULL,
    PRIMARY KEY (lease_id, report_hash)
);
CREATE TABLE IF NOT EXISTS closed (lease_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class StoredShare:
    lease_id: int
    key_version: int
    index: int
    share: bytes
    manifest: dict
    manifest_hash: bytes
    renter: str

    def __repr__(self) -> str:  # never show the share
        return f"StoredShare(lease {self.lease_id}, v{self.key_version}, index {self.index})"


@dataclass(frozen=True)
class StoredEpoch:
    key_version: int
    epoch: int
    snapshot: bytes
    signature: bytes


class Store:
    FILE = "holder.sqlite3"

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = data_dir / self.FILE
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- shares ----------------------------------------------------------------------------

    def share(self, lease_id: int) -> StoredShare | None:
        row = self._db.execute(
            "SELECT key_version, share_index, share, manifest, manifest_hash, renter"
            " FROM shares WHERE lease_id = ?",
            (str(lease_id),),
        ).fetchone()
        if row is None:
            return None
        version, index, share, manifest, manifest_hash, renter = row
        return StoredShare(
            lease_id, version, index, bytes(share), json.loads(manifest), bytes(manifest_hash),
            renter,
        )  # fmt: skip

    def leases(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT lease_id FROM shares")]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM shares").fetchone()[0])

    def put_share(self, share: StoredShare) -> None:
        """Store `share`, replacing an older key version of its lease (and that version's
        releases) in the same transaction. The highest epoch record stays, whatever its key
        version: it is the floor a guest of the next version must not restore below."""
        lease = str(share.lease_id)
        with self._tx() as db:
            db.execute("DELETE FROM releases WHERE lease_id = ?", (lease,))
            db.execute(
                "INSERT OR REPLACE INTO shares VALUES (?, ?, ?, ?, ?, ?, ?)",
                (lease, share.key_version, share.index, share.share,
                 json.dumps(share.manifest, sort_keys=True), share.manifest_hash, share.renter),
            )  # fmt: skip

    def drop_lease(self, lease_id: int, *, closed: bool) -> None:
        """Forget the lease's share and releases; its epochs too and refuse it ever after
        when `closed` (a rekey keeps the epoch: the next version's guest gets it as a floor)."""
        lease = str(lease_id)
        with self._tx() as db:
            for table in ("shares", "epochs", "releases") if closed else ("shares", "releases"):
                db.execute(f"DELETE FROM {table} WHERE lease_id = ?", (lease,))  # noqa: S608
            if closed:
                db.execute("INSERT OR IGNORE INTO closed VALUES (?)", (lease,))

    def is_closed(self, lease_id: int) -> bool:
        row = self._db.execute("SELECT 1 FROM closed WHERE lease_id = ?", (str(lease_id),))
        return row.fetchone() is not None

    # --- epochs ----------------------------------------------------------------------------

    def epoch(self, lease_id: int) -> StoredEpoch | None:
        row = self._db.execute(
            "SELECT key_version, epoch, snapshot, signature FROM epochs WHERE lease_id = ?",
            (str(lease_id),),
        ).fetchone()
        return None if row is None else StoredEpoch(row[0], row[1], bytes(row[2]), bytes(row[3]))

    def raise_epoch(self, lease_id: int, record: StoredEpoch) -> bool:
        """Keep `record` if its epoch is above the stored one; False (kept nothing) if not."""
        lease = str(lease_id)
        with self._tx() as db:
            row = db.execute("SELECT epoch FROM epochs WHERE lease_id = ?", (lease,)).fetchone()
            if row is not None and row[0] >= record.epoch:
                return False
            db.execute(
                "INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?)",
                (lease, record.key_version, record.epoch, record.snapshot, record.signature),
            )
        return True

    # --- releases and cursors --------------------------------------------------------------

    def released(self, lease_id: int, report_hash: bytes) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM releases WHERE lease_id = ? AND report_hash = ?",
            (str(lease_id), report_hash),
        )
        return row.fetchone() is not None

    def mark_released(self, lease_id: int, report_hash: bytes) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO releases VALUES (?, ?)", (str(lease_id), report_hash)
        )

    def cursor(self, name: str) -> int | None:
        row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, name: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (name, value))
