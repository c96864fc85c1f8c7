"""The in-memory node index the matcher answers from, with atomic capacity reservations.

Nodes are bucketed by TEE type; each bucket is kept sorted by score (best first), so a
match walks the bucket and takes the first node that fits. Reserving capacity changes a
node's load and therefore its score, so the node moves down its bucket: equal nodes take
turns (fairness) instead of one node taking every lease.

Score of a node, every term in [0, 1], higher is better:

    score = 0.40 * price_score + 0.25 * stake_score + 0.20 * reputation + 0.15 * (1 - load)

    price_score = P / (P + price)   P = median price per vCPU of the indexed nodes
    stake_score = stake / (stake + S)   S = median stake of the indexed nodes
    reputation  = (verified + 1) / (verified + rejected + faults + 2)   (on-chain history)
    load        = max(used vCPU share, used memory share) after reservations

Free capacity is the node's last signed heartbeat minus the capacity reserved for leases
it has not absorbed yet. A node without a fresh heartbeat is never chosen.
"""

from __future__ import annotations

import bisect
import statistics
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

W_PRICE = 0.40
W_STAKE = 0.25
W_REPUTATION = 0.20
W_LOAD = 0.15


@dataclass(slots=True)
class Demand:
    """What a lease needs from a node (the public spec on chain)."""

    lease_id: int
    tee_type: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    min_node_stake: int
    max_rate_per_second: int  # for the whole lease: price per vCPU-second times vCPUs


@dataclass(slots=True)
class NodeEntry:
    """One node as the matcher sees it."""

    address: str
    tee_type: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    price_per_vcpu_second: int
    stake: int
    reputation: float
    active: bool = True
    # Last heartbeat (None: never heard from) and when it was received (index clock).
    free_vcpus: int | None = None
    free_memory_mib: int = 0
    free_disk_gib: int = 0
    heartbeat_timestamp: int = 0
    heard_at: float = float("-inf")
    reserved_vcpus: int = 0
    reserved_memory_mib: int = 0
    reserved_disk_gib: int = 0
    score: float = 0.0
    seq: int = 0  # tie-breaker: stable order among equal scores

    def available(self) -> tuple[int, int, int]:
        if self.free_vcpus is None:
            return (0, 0, 0)
        return (
            self.free_vcpus - self.reserved_vcpus,
            self.free_memory_mib - self.reserved_memory_mib,
            self.free_disk_gib - self.reserved_disk_gib,
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held on `node` for `lease_id` until it is accepted, expires or is released."""

    lease_id: int
    node: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    score: float


@dataclass
class _Bucket:
    keys: list[tuple[float, int]] = field(default_factory=list)  # (-score, seq), ascending
    entries: list[NodeEntry] = field(default_factory=list)  # same order as keys


class MatchIndex:
    """Thread-safe: every read-modify-write of capacity happens under one lock."""

    def __init__(self, *, stale_after_s: float, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeEntry] = {}
        self._buckets: dict[int, _Bucket] = {}
        self._seq = 0
        self._price_ref = 1.0
        self._stake_ref = 1.0
        self.stale_after_s = stale_after_s
        self.clock = clock

    # --- building -----------------------------------------------------------------------

    def load(self, entries: Iterable[NodeEntry]) -> None:
        """Replace the whole index (at start, or after a reorg rebuilt the store)."""
        with self._lock:
            self._nodes = {}
            self._buckets = {}
            nodes = list(entries)
            prices = [n.price_per_vcpu_second for n in nodes] or [1]
            stakes = [n.stake for n in nodes] or [1]
            self._price_ref = float(statistics.median(prices)) or 1.0
            self._stake_ref = float(statistics.median(stakes)) or 1.0
            for entry in nodes:
                self._insert(entry)

    def upsert(self, entry: NodeEntry) -> None:
        """Add a node or replace its on-chain facts, keeping its heartbeat and reservations."""
        with self._lock:
            old = self._nodes.get(entry.address)
            if old is not None:
                self._remove(old)
                entry.free_vcpus = old.free_vcpus
                entry.free_memory_mib = old.free_memory_mib
                entry.free_disk_gib = old.free_disk_gib
                entry.heartbeat_timestamp = old.heartbeat_timestamp
                entry.heard_at = old.heard_at
                entry.reserved_vcpus = old.reserved_vcpus
                entry.reserved_memory_mib = old.reserved_memory_mib
                entry.reserved_disk_gib = old.reserved_disk_gib
            self._insert(entry)

    def heartbeat(
        self,
        address: str,
        free_vcpus: int,
        free_memory_mib: int,
        free_disk_gib: int,
        timestamp: int,
        heard_at: float | None = None,
    ) -> bool:
        """Record a heartbeat; False if the node is not indexed or the heartbeat is older.

        `heard_at` is when it arrived (index clock; default now), which decides staleness.
        """
        with self._lock:
            entry = self._nodes.get(address)
            if entry is None or timestamp <= entry.heartbeat_timestamp:
                return False
            self._remove(entry)
            entry.free_vcpus = free_vcpus
            entry.free_memory_mib = free_memory_mib
            entry.free_disk_gib = free_disk_gib
            entry.heartbeat_timestamp = timestamp
            entry.heard_at = self.clock() if heard_at is None else heard_at
            self._insert(entry)
            return True

    def mark_silent(self, address: str) -> None:
        """Treat the node's last heartbeat as stale now (its next heartbeat revives it)."""
        with self._lock:
            entry = self._nodes.get(address)
            if entry is not None:
                entry.heard_at = float("-inf")

    # --- matching -----------------------------------------------------------------------

    def match(self, demand: Demand, exclude: frozenset[str] = frozenset()) -> Reservation | None:
        """Choose the best fitting node and reserve the demand on it, atomically."""
        with self._lock:
            bucket = self._buckets.get(demand.tee_type)
            if bucket is None:
                return None
            fresh_since = self.clock() - self.stale_after_s
            # The hot loop: cheapest and most selective tests first, locals only.
            vcpus, memory, disk = demand.vcpus, demand.memory_mib, demand.disk_gib
            min_stake = max(demand.min_node_stake, 1)
            # price * vcpus <= max  <=>  price <= max // vcpus (non-negative integers)
            max_unit_price = demand.max_rate_per_second // vcpus if vcpus else 2**256
            for entry in bucket.entries:
                if (
                    entry.stake < min_stake
                    or entry.price_per_vcpu_second > max_unit_price
                    or entry.free_vcpus is None
                    or entry.free_vcpus - entry.reserved_vcpus < vcpus
                    or entry.free_memory_mib - entry.reserved_memory_mib < memory
                    or entry.free_disk_gib - entry.reserved_disk_gib < disk
                    or entry.vcpus < vcpus
                    or entry.memory_mib < memory
                    or entry.disk_gib < disk
                    or not entry.active
                    or entry.heard_at < fresh_since
                    or (exclude and entry.address in exclude)
                ):
                    continue
                score = entry.score
                self._remove(entry)
                entry.reserved_vcpus += demand.vcpus
                entry.reserved_memory_mib += demand.memory_mib
                entry.reserved_disk_gib += demand.disk_gib
                self._insert(entry)
                return Reservation(
                    demand.lease_id,
                    entry.address,
                    demand.vcpus,
                    demand.memory_mib,
                    demand.disk_gib,
                    score,
                )
            return None

    def reserve(self, reservation: Reservation) -> None:
        """Re-apply a reservation read back from the store (at rebuild)."""
        with self._lock:
            entry = self._nodes.get(reservation.node)
            if entry is None:
                return
            self._remove(entry)
            entry.reserved_vcpus += reservation.vcpus
            entry.reserved_memory_mib += reservation.memory_mib
            entry.reserved_disk_gib += reservation.disk_gib
            self._insert(entry)

    def release(self, reservation: Reservation) -> None:
        """Give reserved capacity back (expired, released, or absorbed by a heartbeat)."""
        with self._lock:
            entry = self._nodes.get(reservation.node)
            if entry is None:
                return
            self._remove(entry)
            entry.reserved_vcpus = max(0, entry.reserved_vcpus - reservation.vcpus)
            entry.reserved_memory_mib = max(0, entry.reserved_memory_mib - reservation.memory_mib)
            entry.reserved_disk_gib = max(0, entry.reserved_disk_gib - reservation.disk_gib)
            self._insert(entry)

    def stale_nodes(self) -> set[str]:
        """Nodes whose last heartbeat is older than `stale_after_s` (or that never sent one)."""
        with self._lock:
            fresh_since = self.clock() - self.stale_after_s
            return {a for a, entry in self._nodes.items() if entry.heard_at < fresh_since}

    def holds_reservation(self, address: str) -> bool:
        """Whether any capacity is reserved on the node (every lease needs some of each)."""
        with self._lock:
            entry = self._nodes.get(address)
            return entry is not None and (
                entry.reserved_vcpus > 0
                or entry.reserved_memory_mib > 0
                or entry.reserved_disk_gib > 0
            )

    def get(self, address: str) -> NodeEntry | None:
        with self._lock:
            return self._nodes.get(address)

    def __len__(self) -> int:
        return len(self._nodes)

    # --- internals (lock held) ----------------------------------------------------------------

    def _score(self, entry: NodeEntry) -> float:
        price_score = self._price_ref / (self._price_ref + entry.price_per_vcpu_second)
        stake_score = entry.stake / (entry.stake + self._stake_ref)
        if entry.free_vcpus is None:
            load = 1.0
        else:
            free_v, free_m, _ = entry.available()
            load = max(
                1 - free_v / entry.vcpus if entry.vcpus else 1.0,
                1 - free_m / entry.memory_mib if entry.memory_mib else 1.0,
            )
            load = min(1.0, max(0.0, load))
        return (
            W_PRICE * price_score
            + W_STAKE * stake_score
            + W_REPUTATION * entry.reputation
            + W_LOAD * (1 - load)
        )

    def _insert(self, entry: NodeEntry) -> None:
        entry.score = self._score(entry)
        self._seq += 1
        entry.seq = self._seq
        self._nodes[entry.address] = entry
        bucket = self._buckets.setdefault(entry.tee_type, _Bucket())
        key = (-entry.score, entry.seq)
        position = bisect.bisect_left(bucket.keys, key)
        bucket.keys.insert(position, key)
        bucket.entries.insert(position, entry)

    def _remove(self, entry: NodeEntry) -> None:
        bucket = self._buckets[entry.tee_type]
        position = bisect.bisect_left(bucket.keys, (-entry.score, entry.seq))
        del bucket.keys[position]
        del bucket.entries[position]
        del self._nodes[entry.address]
