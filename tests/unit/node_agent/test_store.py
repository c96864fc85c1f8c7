"""The agent's durable store: capacity is reserved atomically, one report per nonce, older
stores are upgraded in place, scan checkpoints persist."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from node_agent.errors import AgentError, CapacityExceeded
from node_agent.store import (
    SCHEMA_VERSION,
    AgentStore,
    LeaseState,
    Resources,
    SubmissionState,
)

CAPACITY = Resources(vcpu=8, memory_mib=16384, disk_gib=100)
MEASUREMENT = bytes(range(48))


def _reserve(store: AgentStore, lease_id: int, vcpu: int, memory_mib: int = 1024) -> None:
    store.reserve(lease_id, Resources(vcpu, memory_mib, 10), MEASUREMENT, 3600, CAPACITY)


def test_reserve_holds_capacity_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    _reserve(store, 1, 6)
    assert store.used() == Resources(6, 1024, 10)
    with pytest.raises(CapacityExceeded, match="lease 2 does not fit"):
        _reserve(store, 2, 3)
    refused = store.get_lease(2)
    assert refused is not None and refused.state == LeaseState.REFUSED
    assert store.used() == Resources(6, 1024, 10)  # a refused lease holds nothing
    _reserve(store, 3, 2)
    assert store.used().vcpu == 8


def test_reserve_is_idempotent_for_a_known_lease(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    _reserve(store, 1, 6)
    _reserve(store, 1, 6)  # a redelivered task must not count the lease twice
    assert store.used().vcpu == 6


def test_stopped_lease_frees_capacity(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    _reserve(store, 1, 8)
    store.set_lease_state(1, LeaseState.STOPPED, reason="closed")
    _reserve(store, 2, 8)
    assert [lease.lease_id for lease in store.leases()] == [2]


def test_memory_and_disk_count_as_much_as_vcpus(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    _reserve(store, 1, 1, memory_mib=16000)
    with pytest.raises(CapacityExceeded):
        _reserve(store, 2, 1, memory_mib=1024)


def _reserve_in_process(path: str, lease_id: int) -> bool:
    try:
        _reserve(AgentStore(Path(path)), lease_id, 3)
    except CapacityExceeded:
        return False
    return True


def test_concurrent_reservations_never_overcommit(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    # Created, then closed before the fork: SQLite forbids carrying an open connection into a
    # child (its locks are not inherited, its bookkeeping of them is), and the store keeps
    # its connections open. The agents are separate processes, never forked from one.
    AgentStore(path).close()
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_reserve_in_process, [(str(path), i) for i in range(1, 9)])
    assert sum(results) == 2  # 8 vCPUs hold two 3-vCPU leases, never three
    assert AgentStore(path).used().vcpu == 6


def test_first_report_per_nonce_wins(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    first = store.record_report(7, 0, b"a" * 1184, b"\x01" * 32)
    second = store.record_report(7, 0, b"b" * 1184, b"\x02" * 32)
    assert second.report == first.report and second.report_hash == b"\x01" * 32
    assert store.record_report(7, 1, b"b" * 1184, b"\x02" * 32).report == b"b" * 1184


def test_submission_steps_only_move_forward(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    store.record_report(7, 0, b"a" * 1184, b"\x01" * 32)
    store.record_upload(7, 0, "0xevidence")
    store.record_upload(7, 0, "0xother")  # a late duplicate upload does not go back
    stored = store.get_submission(7, 0)
    assert stored is not None
    assert stored.state == SubmissionState.UPLOADED and stored.evidence_hash == "0xevidence"
    store.record_submitted(7, 0, "0xabc")
    store.record_upload(7, 0, "0xother")
    stored = store.get_submission(7, 0)
    assert stored is not None and stored.state == SubmissionState.SUBMITTED
    assert stored.tx_hash == "0xabc" and stored.evidence_hash == "0xevidence"


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    _reserve(AgentStore(path), 1, 2)
    AgentStore(path).set_lease_state(1, LeaseState.LAUNCHED)
    lease = AgentStore(path).get_lease(1)
    assert lease is not None and lease.state == LeaseState.LAUNCHED
    assert lease.expected_measurement == MEASUREMENT


# The schema the first agents wrote (units in the old names, no user_version).
_FIRST_SCHEMA = """
CREATE TABLE leases (
    lease_id INTEGER PRIMARY KEY, state TEXT NOT NULL, vcpu INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, expected_measurement BLOB NOT NULL,
    reattest_interval INTEGER NOT NULL, accept_tx TEXT, reason TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE submissions (
    lease_id INTEGER NOT NULL, nonce INTEGER NOT NULL, state TEXT NOT NULL,
    report BLOB NOT NULL, report_hash BLOB NOT NULL, vcek BLOB NOT NULL,
    cert_chain BLOB NOT NULL, evidence_hash TEXT, tx_hash TEXT, updated_at REAL NOT NULL,
    PRIMARY KEY (lease_id, nonce)
);
"""


def test_a_store_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_FIRST_SCHEMA)
        conn.execute(
            "INSERT INTO leases VALUES (4, 'attested', 2, 4096, 20, ?, 3600, '0xabc', '', 0)",
            (MEASUREMENT,),
        )
        conn.execute(
            "INSERT INTO submissions VALUES (4, 0, 'submitted', ?, ?, x'', x'', 'e', 't', 0)",
            (b"r" * 1184, b"h" * 32),
        )
    conn.close()
    store = AgentStore(path)
    record = store.get_lease(4)
    assert record is not None and record.state == LeaseState.ATTESTED
    assert record.resources == Resources(vcpu=2, memory_mib=4096, disk_gib=20)
    assert record.accept_tx == "0xabc"
    assert [s.state for s in store.submissions(4)] == [SubmissionState.SUBMITTED]
    assert store.used() == Resources(2, 4096, 20)
    _reserve(store, 5, 1)  # and it takes new leases in the new columns
    assert store.used() == Resources(3, 5120, 30)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert AgentStore(path).used() == Resources(3, 5120, 30)  # reopening migrates nothing


def test_a_store_of_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    AgentStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(AgentError, match=f"schema version {SCHEMA_VERSION + 1}"):
        AgentStore(path)


def test_checkpoints_are_kept_by_name_and_survive_reopening(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.sqlite")
    assert store.checkpoint("scan") is None
    store.save_checkpoint("scan", 120)
    store.save_checkpoint("other", 7)
    store.save_checkpoint("scan", 150)
    reopened = AgentStore(tmp_path / "agent.sqlite")
    assert (reopened.checkpoint("scan"), reopened.checkpoint("other")) == (150, 7)
