"""The node's snapshot relay between a real guest agent (guest/agent.py with its snapshot
manager on temporary directories, served on a Unix socket as QEMU would) and a backend's
snapshot store: periodic snapshots with only the missing chunks uploaded, the epoch record
posted last; a restore fed to a new guest; a stale or damaged snapshot never restored;
bounded retries of a failing backend."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account

from cvm.api_client import ApiError
from cvm.api_models import EpochRecordIn, snapshot_manifest_chunks
from guest import agent as guest_agent
from guest import snapshot as snap
from node_agent.guest_channel import GuestChannel
from node_agent.snapshots import SnapshotRelay
from tests.unit.guest.test_snapshot import fill, keys, manager, tree

LEASE = 7
NODE = Account.create()


class GuestServer:
    """The guest agent behind a Unix socket, one JSON line per request, as on the port."""

    def __init__(self, path: Path, agent: guest_agent.GuestAgent) -> None:
        self.agent = agent
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    answer = guest_agent.answer_line(self.agent, line)
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self.stopping = True
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        self.thread.join(timeout=5)


class Launcher:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def channel(self, lease_id: int) -> GuestChannel:
        return GuestChannel(self.socket_path, timeout_s=30)


class Store:
    """The backend's snapshot routes as INTERFACES 4 states them (ciphertext, sha256-checked)."""

    def __init__(self) -> None:
        self.chunks: dict[str, bytes] = {}
        self.manifests: dict[int, bytes] = {}
        self.records: list[dict[str, Any]] = []
        self.puts: list[str] = []
        # What the next writes do, in order: raise the error, or (None) succeed.
        self.failures: list[ApiError | None] = []

    def _fail(self) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure

    def put_chunk(self, lease_id: int, data: bytes, **kw: Any) -> None:
        self._fail()
        chunk_id = hashlib.sha256(data).hexdigest()
        self.puts.append(chunk_id)
        self.chunks[chunk_id] = data

    def get_chunk(self, lease_id: int, chunk_id: str, **kw: Any) -> bytes:
        if chunk_id not in self.chunks:
            raise ApiError(404, "no such chunk")
        return self.chunks[chunk_id]

    def put_manifest(self, lease_id: int, epoch: int, data: bytes, **kw: Any) -> None:
        self._fail()
        self.manifests[epoch] = data

    def get_manifest(self, lease_id: int, epoch: int, **kw: Any) -> bytes:
        return self.manifests[epoch]

    def latest_snapshot(self, lease_id: int, **kw: Any) -> SimpleNamespace:
        if not self.records:
            raise ApiError(404, "no epoch recorded")
        latest = self.records[-1]
        return SimpleNamespace(epoch=latest["epoch"], manifest_id=latest["snapshot"])

    def post_epoch(self, lease_id: int, record: EpochRecordIn, **kw: Any) -> None:
        self._fail()
        assert record.epoch in self.manifests  # the record comes after its manifest
        # As the backend: only once every chunk the manifest lists in clear is stored.
        listed = snapshot_manifest_chunks(self.manifests[record.epoch])
        if any(c not in self.chunks for c in listed):
            raise ApiError(409, "chunks the manifest lists are not stored")
        self.records.append(record.model_dump())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stack(tmp_path: Path):
    """A guest factory on sockets in tmp_path, closed after the test."""
    servers: list[GuestServer] = []

    def guest(name: str, required: int | None, *, data: bool = False) -> tuple[Path, Path]:
        base = tmp_path / name
        mount = base / "data"
        agent = guest_agent.GuestAgent(
            guest_agent.GuestKeys(), secrets_dir=base / "secrets", ssh_dir=base / "ssh",
            tsm=base / "no", device=base / "no", snapshots=manager(mount, base / "spool"),
        )  # fmt: skip
        agent.handle({"op": "bind", "chain_id": 31337, "registry": "0x" + "5a" * 20,
                      "lease_id": LEASE, "renter": Account.create().address})  # fmt: skip
        if data:
            fill(mount)
        if required is not None:
            agent.install_snapshot_keys(keys(required))
        path = base / "agent.sock"
        servers.append(GuestServer(path, agent))
        return path, mount

    yield guest
    for server in servers:
        server.close()


def relay(path: Path, store: Store, tmp_path: Path, clock: Clock, name: str) -> SnapshotRelay:
    return SnapshotRelay(
        store, NODE, Launcher(path), tmp_path / "relay" / name,  # type: ignore[arg-type]
        interval_s=60, clock=clock, sleep=lambda s: None,
    )  # fmt: skip


def test_snapshots_upload_only_what_is_missing_and_restore_on_another_node(stack, tmp_path):
    store, clock = Store(), Clock()
    path, mount = stack("first", 0, data=True)
    first = relay(path, store, tmp_path, clock, "first")
    assert first.sync(LEASE) == "snapshot"
    assert [r["epoch"] for r in store.records] == [1]
    status = GuestChannel(path).request({"op": "status"})  # the signed status carries them too
    assert (status["restore_needed"], status["required_epoch"], status["epoch"]) == (False, 0, 1)
    uploaded = len(store.puts)
    assert uploaded == len(store.chunks) >= 3
    assert first.sync(LEASE) == ""  # not due yet
    clock.now += 61
    assert first.sync(LEASE) == "snapshot"  # unchanged: no chunk uploaded again
    assert len(store.puts) == uploaded and [r["epoch"] for r in store.records] == [1, 2]
    with open(mount / "private" / "key", "ab") as handle:
        handle.write(b"+")
    assert first.snapshot(LEASE) == 3  # on demand
    assert len(store.puts) == uploaded + 1  # the one chunk that changed
    record = store.records[-1]
    assert set(record) == {"epoch", "snapshot", "key_version", "signature"}
    assert record["snapshot"] == hashlib.sha256(store.manifests[3]).hexdigest()

    # The node dies; the second node's guest has its keys and required epoch 3.
    path, target = stack("second", 3)
    second = relay(path, store, tmp_path, clock, "second")
    assert second.guest_state(LEASE) == (True, 3, None)
    assert second.sync(LEASE) == "restored"
    assert tree(target) == tree(mount)
    assert second.guest_state(LEASE) == (False, 3, 3)
    clock.now += 61
    assert second.sync(LEASE) == "snapshot"  # and it goes on from there
    assert store.records[-1]["epoch"] == 4


def test_a_stale_snapshot_is_refused_by_the_guest_and_retried_later(stack, tmp_path):
    store, clock = Store(), Clock()
    path, _ = stack("first", 0, data=True)
    relay(path, store, tmp_path, clock, "first").sync(LEASE)  # epoch 1 on the backend
    # The holders saw epoch 2 (the backend withholds it, or an operator serves an old one).
    path, target = stack("second", 2)
    second = relay(path, store, tmp_path, clock, "second")
    assert second.sync(LEASE) == ""
    assert second.guest_state(LEASE) == (True, 2, None)
    assert not any(target.iterdir())  # nothing restored
    assert second.sync(LEASE) == ""  # backing off: not even asked
    clock.now += 3
    assert second.sync(LEASE) == ""  # asked again, refused again


def test_a_damaged_chunk_from_the_backend_is_not_fed(stack, tmp_path):
    store, clock = Store(), Clock()
    path, _ = stack("first", 0, data=True)
    relay(path, store, tmp_path, clock, "first").sync(LEASE)
    victim = next(iter(store.chunks))
    store.chunks[victim] = store.chunks[victim][:-1] + bytes([store.chunks[victim][-1] ^ 1])
    path, target = stack("second", 1)
    second = relay(path, store, tmp_path, clock, "second")
    assert second.sync(LEASE) == ""
    assert second.guest_state(LEASE) == (True, 1, None)
    assert not any(p.name != snap.RESERVED for p in target.iterdir())


def test_a_failing_backend_is_retried_a_bounded_number_of_times(stack, tmp_path):
    store, clock = Store(), Clock()
    path, _ = stack("first", 0, data=True)
    node = relay(path, store, tmp_path, clock, "first")
    store.failures = [ApiError(503, "busy"), ApiError(0, "connection refused")]
    assert node.sync(LEASE) == "snapshot"  # two retries, then stored
    assert [r["epoch"] for r in store.records] == [1]
    store.failures = [ApiError(503, "busy")] * 3
    clock.now += 61
    assert node.sync(LEASE) == ""  # three attempts, then given up until the next pass
    store.failures = [ApiError(413, "over the lease's quota")]
    clock.now += 61
    assert node.sync(LEASE) == ""  # a refusal is not retried
    assert [r["epoch"] for r in store.records] == [1]
    clock.now += 61
    assert node.sync(LEASE) == "snapshot"
    assert store.records[-1]["epoch"] == 4  # epochs are never reused


def test_a_guest_without_keys_or_disk_is_left_alone(stack, tmp_path):
    store, clock = Store(), Clock()
    path, _ = stack("keyless", None, data=True)
    node = relay(path, store, tmp_path, clock, "keyless")
    assert node.guest_state(LEASE) == (False, None, None)
    assert node.sync(LEASE) == "" and store.records == [] and store.puts == []
    silent = relay(tmp_path / "nobody.sock", store, tmp_path, clock, "silent")
    assert silent.guest_state(LEASE) is None and silent.sync(LEASE) == ""


def test_an_interrupted_upload_resumes_where_it_stopped(stack, tmp_path):
    store, clock = Store(), Clock()
    path, _ = stack("first", 0, data=True)
    node = relay(path, store, tmp_path, clock, "first")
    store.failures = [None, ApiError(429, "too many requests")]  # the rate limit, mid-way
    assert node.sync(LEASE) == ""
    assert len(store.puts) == 1 and store.records == []
    clock.now += 61
    assert node.sync(LEASE) == "snapshot"
    assert len(store.puts) == len(set(store.puts)) == len(store.chunks)  # none sent twice
    assert [r["epoch"] for r in store.records] == [2]


def test_a_record_refused_for_missing_chunks_makes_the_next_snapshot_upload_them(stack, tmp_path):
    """The backend lost chunks the node took as held: it refuses the next record (its
    manifest lists them); the node forgets what it held and the next snapshot uploads every
    chunk again, instead of never recording an epoch again."""
    store, clock = Store(), Clock()
    path, _ = stack("first", 0, data=True)
    node = relay(path, store, tmp_path, clock, "first")
    assert node.sync(LEASE) == "snapshot"
    lost = sorted(store.chunks)[0]
    del store.chunks[lost]
    clock.now += 61
    assert node.sync(LEASE) == ""  # refused: a chunk is missing
    assert [r["epoch"] for r in store.records] == [1]
    clock.now += 600
    assert node.sync(LEASE) == "snapshot"
    assert lost in store.chunks and [r["epoch"] for r in store.records] == [1, 3]


def test_leases_no_longer_held_are_forgotten(stack, tmp_path):
    store, clock = Store(), Clock()
    path, _ = stack("first", 0, data=True)
    node = relay(path, store, tmp_path, clock, "first")
    assert node.sync(LEASE) == "snapshot"
    assert (node.state_dir / f"lease-{LEASE}.json").exists()
    node.prune({LEASE})
    assert (node.state_dir / f"lease-{LEASE}.json").exists() and node.sync(LEASE) == ""
    node.prune(set())
    assert not (node.state_dir / f"lease-{LEASE}.json").exists()
    assert node.sync(LEASE) == "snapshot"  # a lease held again starts afresh
