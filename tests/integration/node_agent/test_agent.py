"""The agent's lease path against a real anvil: accept, launch, attest, re-attest, stop,
capacity refusal, and the reconciler converging chain, store and guests."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from cvm.api_client import ApiError
from cvm.attestation.abi import parse
from cvm.attestation.binding import GuestKey, build_report_data, host_data
from cvm.chain import AttestationStatus, LeaseStatus
from node_agent.agent import NodeAgent
from node_agent.errors import CapacityExceeded, LauncherError, LeaseNotOurs
from node_agent.launcher.base import GuestReport, GuestSpec, GuestState, HostBinding
from node_agent.store import LeaseState, Resources, SubmissionState
from tests.fixtures.chain import LEASE_SPEC, MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


def _verified_lease(chain: ChainSystem, agent: NodeAgent, **lease: int) -> int:
    """A lease of a staked node that `agent` took and whose attestation the verifier passed."""
    chain.staked_node()
    lease_id = chain.open_lease(**lease)
    agent.handle_lease(lease_id)
    report_hash = chain.node.attestations.attestation_of(lease_id).report_hash
    chain.verifier.attestations.confirm(lease_id, report_hash, True)
    return lease_id


def close_after_verification(chain: ChainSystem, lease_id: int) -> None:
    """The renter closes once the verifier decided the agent's attestation (no lease ends while
    one awaits the verifiers within its window)."""
    report_hash = chain.node.attestations.attestation_of(lease_id).report_hash
    chain.verifier.attestations.confirm(lease_id, report_hash, True)
    chain.renter.leases.close_lease(lease_id)


def test_handle_lease_accepts_launches_and_submits_a_bound_report(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent = make_agent()
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.ACTIVE and lease.node_key == agent.address
    assert agent.launcher.status(lease_id).state == GuestState.RUNNING
    attestation = chain.node.attestations.attestation_of(lease_id)
    assert attestation.status == AttestationStatus.PENDING
    assert attestation.measurement == MEASUREMENT
    [submission] = agent.store.submissions(lease_id)
    assert submission.state == SubmissionState.SUBMITTED and submission.nonce == 0
    assert attestation.report_hash == submission.report_hash
    # Bound to the lease, its nonce and a well-formed guest key, launched for its renter.
    GuestKey.parse(submission.guest_key)
    deployment = chain.deployment
    expected = build_report_data(
        deployment.chain_id, deployment.attestation_registry, lease_id, 0, submission.guest_key
    )
    assert parse(submission.report).report_data == expected
    assert parse(submission.report).host_data == host_data(
        deployment.chain_id, deployment.attestation_registry, lease_id, lease.renter
    )
    # The node submits the attested signer of that key, never its own address.
    signer = GuestKey.parse(submission.guest_key).signer
    assert chain.node.attestations.signer_of(lease_id) == signer != agent.address


def test_handling_twice_never_submits_twice(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent = make_agent()
    agent.handle_lease(lease_id)
    agent.handle_lease(lease_id)  # a redelivered task
    assert chain.node.attestations.attestation_nonce(lease_id) == 1
    assert len(agent.store.submissions(lease_id)) == 1
    assert [g.lease_id for g in agent.launcher.running()] == [lease_id]


def test_a_lease_that_does_not_fit_is_refused_and_left_open(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()  # 4 vCPUs
    agent = make_agent(capacity=Resources(vcpu=2, memory_mib=65_536, disk_gib=500))
    with pytest.raises(CapacityExceeded):
        agent.handle_lease(lease_id)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert agent.launcher.running() == []


def test_capacity_is_shared_between_leases(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    agent = make_agent(capacity=Resources(vcpu=8, memory_mib=65_536, disk_gib=500))
    first, second, third = (chain.open_lease() for _ in range(3))
    agent.handle_lease(first)
    agent.handle_lease(second)
    with pytest.raises(CapacityExceeded):
        agent.handle_lease(third)
    close_after_verification(chain, first)
    agent.stop_lease(first)  # closing frees the capacity
    assert agent.handle_lease(third) == LeaseState.ATTESTED


def test_a_lease_taken_by_another_node_is_dropped(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    other = chain.accounts.stranger
    chain.register_node(other)
    chain.operator.nodes.stake(other.address, 1_000 * 10**18)
    lease_id = chain.open_lease()
    chain.client(other).leases.accept_lease(lease_id)
    agent = make_agent()
    assert agent.handle_lease(lease_id) in (LeaseState.REFUSED, LeaseState.STOPPED)
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)


def test_reattest_when_due_after_verification(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    agent = make_agent()
    lease_id = _verified_lease(chain, agent)
    assert agent.reattest(lease_id) is False  # verified and not yet due
    chain.advance(3_600)  # the re-attestation interval of the lease spec
    assert agent.reattest(lease_id) is True
    assert chain.node.attestations.attestation_nonce(lease_id) == 2
    assert [s.nonce for s in agent.store.submissions(lease_id)] == [0, 1]


def test_stop_lease_stops_the_guest_only_when_the_lease_is_over(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    agent = make_agent()
    agent.handle_lease(lease_id)
    agent.stop_lease(lease_id)  # still active and paid for
    assert agent.launcher.status(lease_id).state == GuestState.RUNNING
    close_after_verification(chain, lease_id)
    assert agent.stop_lease(lease_id) == LeaseState.STOPPED
    assert agent.launcher.status(lease_id).state == GuestState.MISSING


def test_reconciler_adopts_relaunches_and_stops(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    agent = make_agent()
    # Accepted on chain but never seen by the store (killed right after accept).
    adopted = chain.open_lease()
    chain.node.leases.accept_lease(adopted)
    # Running and attested, then its guest vanished (host reboot).
    vanished = chain.open_lease()
    agent.handle_lease(vanished)
    agent.launcher.stop(vanished)
    # Closed by the renter while the agent was down.
    closed = chain.open_lease()
    agent.handle_lease(closed)
    close_after_verification(chain, closed)

    result = agent.reconcile()
    assert result.adopted == [adopted]
    assert result.relaunched == [adopted, vanished]
    assert result.stopped == [closed]
    assert result.attested == [adopted]  # the vanished one was attested already
    assert {g.lease_id for g in agent.launcher.running()} == {adopted, vanished}
    assert chain.node.attestations.attestation_nonce(adopted) == 1
    again = agent.reconcile()
    assert (again.adopted, again.relaunched, again.stopped, again.attested) == ([], [], [], [])


def test_reconciler_stops_a_guest_it_has_no_lease_for(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    agent = make_agent()
    lease_id = chain.open_lease()  # open, never accepted by us
    binding = HostBinding(chain.deployment.chain_id, chain.deployment.attestation_registry,
                          chain.node.leases.get_lease(lease_id).renter)  # fmt: skip
    agent.launcher.launch(GuestSpec(lease_id, 1, 64, 1, MEASUREMENT, binding=binding))
    assert agent.reconcile().stopped == [lease_id]
    assert agent.launcher.running() == []


def test_concurrent_leases_share_the_node_key_without_nonce_clashes(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    """The worker runs tasks in threads: four leases at once, one node key, no lost tx."""
    chain.staked_node()
    agent = make_agent()
    lease_ids = [chain.open_lease() for _ in range(4)]  # 4 x 4 vCPUs fill the node
    with ThreadPoolExecutor(max_workers=4) as pool:
        states = list(pool.map(agent.handle_lease, lease_ids))
    assert states == [LeaseState.ATTESTED] * 4
    for lease_id in lease_ids:
        assert chain.node.attestations.attestation_nonce(lease_id) == 1
    assert agent.store.used() == Resources(16, 4 * 8_192, 4 * 40)


def test_a_lease_the_chain_will_not_let_us_accept_frees_its_capacity(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    chain.staked_node()
    lease_id = chain.open_lease(max_price=1)  # far below the node's price
    agent = make_agent(accept_mode="separate")
    with pytest.raises(LeaseNotOurs, match="accept refused"):
        agent.handle_lease(lease_id)
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.REFUSED
    assert agent.store.used() == Resources(0, 0, 0)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert agent.reconcile().adopted == []  # and the reconciler leaves it alone


def test_a_lease_that_ran_out_is_settled_and_its_guest_stopped(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    agent = make_agent()
    lease_id = _verified_lease(chain, agent, deposit=10**16)  # about 2,500 s at its rate
    assert agent.reconcile().stopped == []  # paid for: keeps running
    chain.advance(3_000)
    assert agent.reconcile().stopped == [lease_id]
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.CLOSED
    assert agent.launcher.running() == []
    assert agent.store.used() == Resources(0, 0, 0)


def test_a_relaunched_guest_is_attested_again(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    agent = make_agent()
    lease_id = _verified_lease(chain, agent)
    agent.launcher.stop(lease_id)  # the host rebooted: the verified guest is gone
    result = agent.reconcile()
    # Relaunched at once; re-attested once the registry allows it (half the interval, so a
    # node cannot keep its lease Pending), the previous verified attestation vouching till then.
    assert (result.relaunched, result.attested) == ([lease_id], [])
    assert chain.node.attestations.attestation_nonce(lease_id) == 1
    assert agent.store.get_lease(lease_id).state == LeaseState.RELAUNCHED  # owes its report
    assert agent.reconcile().attested == []  # still too early: nothing is sent
    chain.advance(LEASE_SPEC.reattest_interval // 2)
    result = agent.reconcile()
    assert (result.relaunched, result.attested) == ([], [lease_id])
    assert chain.node.attestations.attestation_nonce(lease_id) == 2
    assert agent.store.get_lease(lease_id).state == LeaseState.ATTESTED


class ChallengeAsks:
    """The backend as the poster asks it for a challenge (`request_challenge`); the first
    `down` asks fail as a backend that is not reachable does."""

    def __init__(self, down: int = 0, status: int = 0) -> None:
        self.asked: list[int] = []
        self.down = down
        self.status = status

    def request_challenge(self, lease_id: int, *, node_key: object, domain: object) -> None:
        assert node_key and domain  # signed by the node key, for this deployment
        self.asked.append(lease_id)
        if len(self.asked) <= self.down:
            raise ApiError(self.status, "refused" if self.status else "connection refused")


def test_a_relaunched_guest_asks_for_a_challenge_once_and_answers_it(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    agent = make_agent()
    lease_id = _verified_lease(chain, agent)
    backend = ChallengeAsks(down=1)
    agent.poster.api = backend  # type: ignore[assignment]
    chain.advance(10)  # a while later (the chain counts a challenge after the report)
    agent.launcher.stop(lease_id)  # the guest crashed
    result = agent.reconcile()
    assert (result.relaunched, result.attested) == ([lease_id], [])
    assert backend.asked == [lease_id]  # not heard: asked again on the next pass
    agent.reconcile()
    assert backend.asked == [lease_id, lease_id]
    for _ in range(3):  # heard: never again for this relaunch
        assert agent.reconcile().attested == []
    assert backend.asked == [lease_id, lease_id]
    assert agent.store.get_lease(lease_id).state == LeaseState.RELAUNCHED

    # The backend's failover watch challenges (the verifier key): the node answers at once.
    chain.verifier.leases.challenge(lease_id)
    agent.poster.api = None  # offline from here: nothing uploaded
    result = agent.reconcile()
    assert (result.attested, result.answered) == ([lease_id], [lease_id])
    assert chain.node.attestations.attestation_nonce(lease_id) == 2
    assert backend.asked == [lease_id, lease_id]

    # A guest that attested as it should never asks.
    report_hash = chain.node.attestations.attestation_of(lease_id).report_hash
    chain.verifier.attestations.confirm(lease_id, report_hash, True)
    agent.poster.api = backend  # type: ignore[assignment]
    assert agent.reconcile().attested == []
    assert backend.asked == [lease_id, lease_id]
    # A new relaunch asks once more.
    agent.launcher.stop(lease_id)
    assert agent.reconcile().relaunched == [lease_id]
    assert backend.asked == [lease_id, lease_id, lease_id]


@pytest.mark.parametrize("status", [403, 501])
def test_a_refused_challenge_request_is_not_repeated(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent], status: int
) -> None:
    agent = make_agent()
    lease_id = _verified_lease(chain, agent)
    backend = ChallengeAsks(down=10, status=status)  # not its lease / no key service
    agent.poster.api = backend  # type: ignore[assignment]
    agent.launcher.stop(lease_id)
    for _ in range(3):
        assert agent.reconcile().attested == []
    assert backend.asked == [lease_id]
    chain.advance(LEASE_SPEC.reattest_interval // 2)  # it attests when the registry allows
    agent.poster.api = None
    assert agent.reconcile().attested == [lease_id]


@pytest.mark.parametrize("lie", ["empty guest key", "another renter", "another lease"])
def test_a_report_the_verifiers_would_reject_is_never_submitted(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent], lie: str
) -> None:
    """The renter has root in its guest and may answer anything: a report the verifiers
    reject slashes the node, so the agent appraises each report with their exact binding
    (REPORT_DATA with a well-formed key, HOST_DATA of the lease and its renter) and submits
    none that fails. FAILED on the old code for the empty key (sha256(b"") was compared,
    and passed) and for HOST_DATA (never set nor checked)."""
    chain.staked_node()
    lease_id = chain.open_lease()
    agent = make_agent(accept_mode="separate")
    deployment = chain.deployment
    signer = agent.launcher.signer  # type: ignore[attr-defined]
    renter = chain.node.leases.get_lease(lease_id).renter

    def lying(asked: int, nonce: int) -> GuestReport:
        honest = real(asked, nonce)
        key, bound_lease, bound_renter = honest.guest_key, asked, renter
        if lie == "empty guest key":
            key = b""
        elif lie == "another renter":
            bound_renter = "0x" + "11" * 20
        else:
            bound_lease = asked + 1000
        data = build_report_data(
            deployment.chain_id, deployment.attestation_registry, asked, nonce, key
        )
        host = host_data(deployment.chain_id, deployment.attestation_registry, bound_lease,
                         bound_renter)  # fmt: skip
        signed = signer.sign_report(MEASUREMENT, data, host)
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, key)

    real = agent.launcher.get_report
    agent.launcher.get_report = lying  # type: ignore[method-assign, assignment]
    with pytest.raises(LauncherError, match="would be rejected"):
        agent.handle_lease(lease_id)
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    assert agent.store.submissions(lease_id) == []
    agent.launcher.get_report = real  # type: ignore[method-assign]
    assert agent.handle_lease(lease_id) == LeaseState.ATTESTED  # the honest guest's report


def test_a_guest_answering_with_another_leases_key_is_never_submitted(
    chain: ChainSystem, make_agent: Callable[..., NodeAgent]
) -> None:
    """The renter of two leases on this node makes its second guest answer with the first
    one's key (public, in the evidence): the verifiers reject a key another live lease
    claimed first, so the node must not submit it (it would be slashed). FAILED on the old
    code, which had no notion of a key's lease."""
    chain.staked_node()
    agent = make_agent(accept_mode="separate")
    first, second = chain.open_lease(), chain.open_lease()
    assert agent.handle_lease(first) == LeaseState.ATTESTED
    [kept] = agent.store.submissions(first)
    deployment = chain.deployment
    signer = agent.launcher.signer  # type: ignore[attr-defined]
    renter = chain.node.leases.get_lease(second).renter

    def copied(asked: int, nonce: int) -> GuestReport:
        data = build_report_data(
            deployment.chain_id, deployment.attestation_registry, asked, nonce, kept.guest_key
        )
        host = host_data(deployment.chain_id, deployment.attestation_registry, asked, renter)
        signed = signer.sign_report(MEASUREMENT, data, host)
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, kept.guest_key)

    agent.launcher.get_report = copied  # type: ignore[method-assign, assignment]
    with pytest.raises(LauncherError, match=f"GUEST_KEY_REUSED: the guest key of lease {first}"):
        agent.handle_lease(second)
    assert chain.node.attestations.attestation_nonce(second) == 0
    assert agent.store.submissions(second) == []


@pytest.mark.parametrize(
    "bad_key",
    [b"", bytes(range(1, 65)), bytes(range(1, 85)), bytes(range(1, 65)) + bytes(20) + b"\x01" * 32],
    ids=["empty", "old-64-byte", "old-84-byte", "zero-signer"],
)
def test_a_report_without_a_well_formed_guest_key_is_never_submitted(
    chain: ChainSystem,
    make_agent: Callable[..., NodeAgent],
    monkeypatch: pytest.MonkeyPatch,
    bad_key: bytes,
) -> None:
    """Issue 17: the node submits the attested signer from the guest key; a report whose key
    is empty, short or names no signer is neither uploaded nor submitted (on main an empty key
    passed the node's check, and the verifier's rejection slashed the node)."""
    chain.staked_node()
    lease_id = chain.open_lease()
    agent = make_agent(accept_mode="separate")
    real = agent.launcher.get_report
    monkeypatch.setattr(
        agent.launcher, "get_report", lambda lid, n: replace(real(lid, n), guest_key=bad_key)
    )
    # Refused by the node's own appraisal, exactly as the verifiers would refuse it.
    with pytest.raises(LauncherError, match="would be rejected"):
        agent.handle_lease(lease_id)
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    assert agent.store.submissions(lease_id) == []
