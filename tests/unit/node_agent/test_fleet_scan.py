"""The fleet's shared accept scan: one chain read serves every node of the fleet, each node
sees only its own accepts from its checkpoint on, a shallow reorg is read again, and a node
asking from before what the scan holds reads the chain itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cvm.chain import ChainClient
from node_agent.fleet import SharedAcceptScan

A, B = "0x" + "aa" * 20, "0x" + "bb" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class _Chain:
    """The chain reads the scan makes: the head, and every node's accepts in a range."""

    head: int = 100
    accepts: list[tuple[int, str, int]] = field(default_factory=list)
    range_reads: list[tuple[int, int]] = field(default_factory=list)
    node_reads: list[tuple[str, int]] = field(default_factory=list)
    head_reads: int = 0

    def client(self) -> ChainClient:
        chain = self

        class _Eth:
            @property
            def block_number(self) -> int:
                chain.head_reads += 1
                return chain.head

        class _Leases:
            def accepts(self, from_block: int, to_block: int) -> list[tuple[int, str, int]]:
                chain.range_reads.append((from_block, to_block))
                return [a for a in chain.accepts if from_block <= a[0] <= to_block]

            def leases_accepted_by(self, node_key: str, from_block: int = 0) -> list[int]:
                chain.node_reads.append((node_key, from_block))
                return sorted(
                    {lease for block, node, lease in chain.accepts
                     if node == node_key.lower() and block >= from_block}
                )  # fmt: skip

        fake: Any = SimpleNamespace(
            w3=SimpleNamespace(eth=_Eth()),
            leases=_Leases(),
            deployment=SimpleNamespace(start_block=10),
        )
        return cast(ChainClient, fake)


def test_one_read_serves_every_node_each_its_own_accepts(clock: Clock) -> None:
    chain = _Chain(accepts=[(20, A, 1), (30, B, 2), (90, A, 3)])
    scan = SharedAcceptScan(chain.client(), max_age_s=1.0, margin_blocks=12, clock=clock)
    head = scan.head()
    assert head == 100
    assert scan.accepted_by(A, 10, head) == [1, 3]
    assert scan.accepted_by("0x" + "BB" * 20, 10, head) == [2]  # any case
    assert scan.accepted_by(A, 50, head) == [3]  # from its checkpoint on
    assert scan.accepted_by("0x" + "cc" * 20, 10, head) == []
    # Many passes within the age: the chain was read once, the head once.
    for _ in range(50):
        assert scan.head() == 100
    assert chain.range_reads == [(10, 100)] and chain.head_reads == 1
    assert chain.node_reads == []


def test_a_newer_head_reads_the_new_blocks_and_the_margin_again(clock: Clock) -> None:
    chain = _Chain(accepts=[(95, A, 1)])
    scan = SharedAcceptScan(chain.client(), max_age_s=1.0, margin_blocks=12, clock=clock)
    assert scan.accepted_by(A, 10, scan.head()) == [1]
    # A reorg replaced block 95 (lease 1 accepted by B in the end), and lease 4 came after.
    chain.accepts = [(95, B, 1), (105, A, 4)]
    chain.head = 110
    clock.advance(1)
    head = scan.head()
    assert head == 110
    assert chain.range_reads[-1] == (89, 110)  # the last 12 blocks held, then the new ones
    assert scan.accepted_by(A, 10, head) == [4]
    assert scan.accepted_by(B, 10, head) == [1]


def test_a_head_the_scan_has_not_read_refreshes_it(clock: Clock) -> None:
    chain = _Chain(accepts=[(20, A, 1)])
    scan = SharedAcceptScan(chain.client(), max_age_s=60.0, margin_blocks=0, clock=clock)
    assert scan.accepted_by(A, 10, scan.head()) == [1]
    chain.accepts.append((120, A, 2))
    chain.head = 120
    # A node that read a newer head itself: the scan catches up before answering.
    assert scan.accepted_by(A, 10, 120) == [1, 2]
    assert chain.range_reads == [(10, 100), (101, 120)]


def test_a_node_asking_from_before_what_the_scan_holds_reads_the_chain(clock: Clock) -> None:
    chain = _Chain(head=1_000, accepts=[(20, A, 1), (990, A, 2)])
    scan = SharedAcceptScan(
        chain.client(), max_age_s=1.0, margin_blocks=0, keep_blocks=100, clock=clock
    )
    head = scan.head()
    assert scan.accepted_by(A, 950, head) == [2]  # held
    assert chain.node_reads == []
    assert scan.accepted_by(A, 10, head) == [1, 2]  # older than the 100 blocks held
    assert chain.node_reads == [(A, 10)]
