"""The failover watch (`backend.liveness`) over a real store and a scripted chain: a silent
node's failover-allowed lease is challenged, then failed over once the chain says it is at
fault; a lease without that policy gets nothing new; nothing is ever sent twice; a pass is
bounded and survives errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from backend.domain import challenge_requests
from backend.liveness import AttestationFacts, FailoverWatch
from backend.store import ChallengeRequest, Heartbeat, Lease, Store
from cvm.api_models import LeaseState
from cvm.chain import AttestationStatus
from cvm.chain.errors import ChainError, ContractRevert
from tests.unit.backend.factories import Clock, add_lease, add_node

NODE = "0x" + "0a" * 20
OTHER = "0x" + "0b" * 20
RENTER = "0x" + "cc" * 20
TIMEOUT = 60
WINDOW = 120


@dataclass
class ScriptedChain:
    """The chain as the watch sees it; every transaction recorded, each read counted."""

    allowed: set[int] = field(default_factory=set)
    facts: dict[int, AttestationFacts] = field(default_factory=dict)
    at_fault: set[int] = field(default_factory=set)  # failover accepted for these
    sent: list[tuple[str, int]] = field(default_factory=list)
    reads: int = 0
    broken: bool = False  # every read fails (an RPC outage)
    unsure: bool = False  # transactions get no receipt
    nodes: dict[int, str | None] = field(default_factory=dict)  # on chain (NODE if unset)

    def active_node(self, lease_id: int) -> str | None:
        self.reads += 1
        return self.nodes.get(lease_id, NODE)

    def failover_allowed(self, lease_id: int) -> bool:
        self.reads += 1
        if self.broken:
            raise ChainError("connection refused")
        return lease_id in self.allowed

    def attestation(self, lease_id: int) -> AttestationFacts:
        self.reads += 1
        if self.broken:
            raise ChainError("connection refused")
        return self.facts.get(lease_id, AttestationFacts(AttestationStatus.NONE, 0, 0))

    def challenge(self, lease_id: int) -> str:
        if self.unsure:
            raise ChainError("no receipt within 120s")
        self.sent.append(("challenge", lease_id))
        old = self.facts[lease_id]
        self.facts[lease_id] = AttestationFacts(old.status, old.submitted_at, old.submitted_at + 5)
        return "0x" + "11" * 32

    def failover(self, lease_id: int) -> str:
        if lease_id not in self.at_fault:
            raise ContractRevert("LeaseMarket_NotAtFault", {})
        if self.unsure:
            raise ChainError("no receipt within 120s")
        self.sent.append(("failover", lease_id))
        return "0x" + "22" * 32

    def challenge_window(self) -> int:
        return WINDOW

    def min_challenge_interval(self) -> int:
        return 3600


def heartbeat(store: Store, node: str, at: float) -> None:
    with store.session() as session:
        session.merge(
            Heartbeat(
                node=node,
                free_vcpus=1,
                free_memory_mib=1,
                free_disk_gib=1,
                running_leases=1,
                timestamp=int(at),
                signature="0x",
                received_at=datetime.fromtimestamp(at, UTC),
            )
        )


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


def active(store: Store, lease_id: int, node: str = NODE) -> None:
    add_lease(store, lease_id, RENTER, node=node, status=LeaseState.ACTIVE, rate_per_second=1)


def watch(store: Store, chain: ScriptedChain, clock: Clock, **kwargs: object) -> FailoverWatch:
    return FailoverWatch(store, chain, timeout_s=TIMEOUT, clock=clock, retry_s=5, **kwargs)  # type: ignore[arg-type]


def verified(submitted_at: float) -> AttestationFacts:
    return AttestationFacts(AttestationStatus.VERIFIED, int(submitted_at), 0)


def test_a_silent_nodes_lease_is_challenged_then_failed_over_once(
    store: Store, clock: Clock
) -> None:
    add_node(store, NODE)
    active(store, 1)
    heartbeat(store, NODE, clock.now)
    chain = ScriptedChain(allowed={1}, facts={1: verified(clock.now - 10)})
    silenced: list[str] = []
    failover = watch(store, chain, clock, on_silent=silenced.append)

    # Heard within the timeout: nothing is even read.
    clock.advance(TIMEOUT - 1)
    assert failover.run().silent == []
    assert chain.reads == 0

    clock.advance(2)
    result = failover.run()
    assert result.challenged == [1]
    assert chain.sent == [("challenge", 1)]
    assert silenced == [NODE]
    assert failover.handles(1)

    # The window runs: however often the loop turns, nothing more is sent.
    for _ in range(10):
        clock.advance(10)
        failover.run()
    assert chain.sent == [("challenge", 1)]

    # Unanswered: the registry says Expired and the market takes the failover.
    chain.facts[1] = AttestationFacts(AttestationStatus.EXPIRED, int(clock.now), 0)
    chain.at_fault.add(1)
    clock.advance(WINDOW)
    assert failover.run().failed_over == [1]
    for _ in range(5):
        clock.advance(10)
        failover.run()  # the store still shows the lease on the old node (not indexed yet)
    assert chain.sent == [("challenge", 1), ("failover", 1)]


def test_a_lease_whose_policy_forbids_failover_gets_nothing_new(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    active(store, 1)  # never a heartbeat
    chain = ScriptedChain(allowed=set(), facts={1: verified(clock.now)}, at_fault={1})
    failover = watch(store, chain, clock)
    result = failover.run()
    assert result.not_allowed == [1]
    assert chain.sent == []
    assert not failover.handles(1)
    # The answer is remembered a while: not asked on every pass.
    reads = chain.reads
    clock.advance(5)
    failover.run()
    assert chain.reads == reads


def test_a_first_attestation_never_delivered_is_failed_over_once_the_chain_says_so(
    store: Store, clock: Clock
) -> None:
    add_node(store, NODE)
    active(store, 1)
    chain = ScriptedChain(allowed={1})  # no attestation at all
    failover = watch(store, chain, clock)
    result = failover.run()
    assert result.waiting == [1] and chain.sent == []  # deadline ahead: estimate refused
    clock.advance(5)
    chain.at_fault.add(1)
    assert failover.run().failed_over == [1]
    assert chain.sent == [("failover", 1)]


def test_a_node_that_speaks_again_is_left_alone(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    active(store, 1)
    chain = ScriptedChain(allowed={1}, facts={1: verified(clock.now)})
    failover = watch(store, chain, clock)
    assert failover.run().challenged == [1]
    clock.advance(WINDOW + 5)
    heartbeat(store, NODE, clock.now - 1)  # it speaks again (and answers: not our business)
    chain.at_fault.add(1)
    assert failover.run().silent == []
    assert chain.sent == [("challenge", 1)]


def test_a_pass_is_bounded_and_survives_a_broken_chain(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    for lease_id in range(1, 8):
        active(store, lease_id)
    chain = ScriptedChain(allowed=set(range(1, 8)), broken=True)
    failover = watch(store, chain, clock, per_pass=3)
    result = failover.run()
    assert sorted(result.errors) == [1, 2, 3]  # three looked at, each failed, none raised
    chain.broken = False
    chain.at_fault |= set(range(1, 8))
    result = failover.run()  # the three wait their retry; the next three go
    assert result.failed_over == [4, 5, 6]
    clock.advance(5)
    assert failover.run().failed_over == [1, 2, 3]
    clock.advance(5)
    assert failover.run().failed_over == [7]
    assert sorted(lease for _, lease in chain.sent) == list(range(1, 8))


def test_a_send_without_receipt_is_not_repeated_at_once(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    active(store, 1)
    chain = ScriptedChain(allowed={1}, at_fault={1}, unsure=True)
    failover = watch(store, chain, clock, unsure_hold_s=300)
    assert 1 in failover.run().errors
    chain.unsure = False
    for _ in range(10):
        clock.advance(20)
        failover.run()
    assert chain.sent == []  # held: the first may still be mined
    clock.advance(200)
    assert failover.run().failed_over == [1]


def test_only_active_leases_on_silent_nodes_are_candidates(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    add_node(store, OTHER)
    heartbeat(store, OTHER, clock.now + TIMEOUT)
    active(store, 1)
    active(store, 2, node=OTHER)
    add_lease(store, 3, RENTER)  # open
    add_lease(store, 4, RENTER, node=NODE, status=LeaseState.CLOSED)
    clock.advance(TIMEOUT + 1)
    failover = watch(store, ScriptedChain(allowed={1, 2, 3, 4}), clock)
    assert failover.silent_leases() == [(1, NODE)]


def test_bad_bounds_are_refused(store: Store, clock: Clock) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        FailoverWatch(store, ScriptedChain(), timeout_s=0, clock=clock)


# --- challenges a node asked for (its guest was relaunched) ---------------------------------


def request(store: Store, lease_id: int, node: str = NODE) -> None:
    """What `POST /v1/leases/{id}/challenge-request` records (the route checked the node)."""
    with store.session() as session:
        lease = session.get(Lease, lease_id)
        assert lease is not None
        challenge_requests.request_challenge(session, lease, node, datetime.now(UTC))


def pending(store: Store) -> list[tuple[int, str]]:
    with store.new_session(read_only=True) as session:
        return challenge_requests.pending(session, 100)


def test_a_requested_challenge_is_sent_once_and_the_request_cleared(
    store: Store, clock: Clock
) -> None:
    add_node(store, NODE)
    active(store, 1)
    heartbeat(store, NODE, clock.now)  # the node is alive: it asked, it is not silent
    # No failover policy needed: any lease's node may ask to be challenged.
    submitted = int(clock.now - 100)
    chain = ScriptedChain(allowed=set(), facts={1: verified(submitted)})
    failover = watch(store, chain, clock)
    request(store, 1)
    request(store, 1)  # the same again: still one request
    assert pending(store) == [(1, NODE)]

    result = failover.run()
    assert result.requested == [1] and result.challenged == [1]
    assert chain.sent == [("challenge", 1)]
    assert pending(store) == []

    # Asked again while the challenge stands: nothing is sent, the request goes.
    request(store, 1)
    clock.advance(5)
    assert failover.run().requested == []
    assert pending(store) == []
    # Even if the chain read showed no challenge (a request cleared late): never twice for
    # the same standing attestation.
    chain.facts[1] = verified(submitted)
    request(store, 1)
    clock.advance(5)
    failover.run()
    assert chain.sent == [("challenge", 1)]


def test_a_request_from_a_node_the_lease_is_not_on_is_dropped(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    add_node(store, OTHER)
    active(store, 1, node=OTHER)
    active(store, 2)
    heartbeat(store, NODE, clock.now)
    heartbeat(store, OTHER, clock.now)
    chain = ScriptedChain(facts={1: verified(clock.now), 2: verified(clock.now)})
    chain.nodes[2] = OTHER  # the store still says NODE; the chain moved it on
    with store.session() as session:  # as if recorded before the lease moved
        session.add(ChallengeRequest(lease_id=1, node=NODE, requested_at=datetime.now(UTC)))
    request(store, 2)
    failover = watch(store, chain, clock)
    result = failover.run()
    assert result.requested == []
    assert chain.sent == []
    assert pending(store) == []


def test_a_request_waits_for_the_chains_challenge_interval(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    active(store, 1)
    heartbeat(store, NODE, clock.now)
    # Challenged 200 s ago and answered 100 s ago: the chain takes a new challenge only
    # MIN_CHALLENGE_INTERVAL (3600 s here) after the last one.
    last = int(clock.now - 200)
    chain = ScriptedChain(
        facts={1: AttestationFacts(AttestationStatus.VERIFIED, int(clock.now - 100), last)}
    )
    failover = watch(store, chain, clock)
    request(store, 1)
    for _ in range(5):
        failover.run()
        clock.advance(60)
        heartbeat(store, NODE, clock.now)
    assert chain.sent == []
    assert pending(store) == [(1, NODE)]  # kept until the chain allows it
    clock.advance(last + 3600 - clock.now)
    heartbeat(store, NODE, clock.now)
    assert failover.run().requested == [1]
    assert chain.sent == [("challenge", 1)]
    assert pending(store) == []


def test_a_request_is_moot_once_the_node_re_attested(store: Store, clock: Clock) -> None:
    add_node(store, NODE)
    active(store, 1)
    heartbeat(store, NODE, clock.now)
    chain = ScriptedChain(facts={1: AttestationFacts(AttestationStatus.PENDING, int(clock.now), 0)})
    request(store, 1)
    assert watch(store, chain, clock).run().requested == []
    assert chain.sent == []
    assert pending(store) == []


def test_a_requested_challenge_without_a_receipt_is_not_sent_again_at_once(
    store: Store, clock: Clock
) -> None:
    add_node(store, NODE)
    active(store, 1)
    heartbeat(store, NODE, clock.now)
    chain = ScriptedChain(facts={1: verified(clock.now - 100)}, unsure=True)
    request(store, 1)
    failover = watch(store, chain, clock, unsure_hold_s=300)
    assert 1 in failover.run().errors
    chain.unsure = False
    clock.advance(60)
    heartbeat(store, NODE, clock.now)
    failover.run()
    assert chain.sent == []  # held: the first one may still land
    assert pending(store) == [(1, NODE)]
