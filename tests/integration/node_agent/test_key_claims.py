"""A renter copies its guest's keys from one node into its guest on another: the second node
asks the backend whose key it is before submitting, and gives the lease back instead of
being slashed (real anvil, the real backend service over HTTP, the verifier)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from backend.service import BackendService
from backend.store import Attestation, Lease
from backend.verifier import Verifier, VerifierConfig
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import AttestationState
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.chain import ChainClient, LeaseStatus
from cvm.config import Settings
from node_agent.agent import NodeAgent
from node_agent.errors import LeaseUnservable
from node_agent.launcher.base import GuestReport
from node_agent.launcher.signer import SimulatedAmdSp, simulated_guest_key
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.lease_terms import decline_deadline
from node_agent.lifecycle import DECLINE_MARGIN_S
from node_agent.store import AgentStore, LeaseState
from tests.fixtures.chain import MEASUREMENT, NODE_SPEC, STAKE, ChainSystem
from tests.fixtures.processes import free_port, serving, wait_for
from tests.integration.node_agent.conftest import NODE_CAPACITY

pytestmark = pytest.mark.integration


@dataclass
class LiveBackend:
    service: BackendService
    url: str

    def wait(self, what: str, lease_id: int, check: str) -> None:
        """Until the backend indexed the lease as accepted by `check`'s node, or ("pending")
        its attestation."""

        def indexed() -> bool:
            with self.service.store.session() as session:
                if check == "pending":
                    row = session.get(Attestation, lease_id)
                    return row is not None and row.status == AttestationState.PENDING
                lease = session.get(Lease, lease_id)
                return lease is not None and lease.node == check.lower()

        wait_for(indexed, timeout=30, what=what)


@contextmanager
def _live_backend(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, *, indexing: bool
) -> Iterator[LiveBackend]:
    """The backend service over HTTP, trusting the simulated AMD-SP as `cvm up` does (its
    uploads prove their guest keys only then); `indexing`: its loop follows the chain by
    itself (otherwise the test steps it, to hold the indexer back as confirmations do)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'backend.db'}",
        broker_url="memory://",
        rpc_url=chain.anvil.rpc_url,
        indexer_confirmations=0,
        indexer_poll_s=0.05,
    )
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda *_: None,
        trusted_roots=[amd_sp.ark],
    )
    if indexing:
        service.start()
    try:
        with serving(service.app) as url:
            yield LiveBackend(service, url)
    finally:
        service.close()


@pytest.fixture
def backend(chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp) -> Iterator[LiveBackend]:
    with _live_backend(chain, tmp_path, amd_sp, indexing=True) as live:
        yield live


def _agent(
    client: ChainClient,
    state: Path,
    amd_sp: SimulatedAmdSp,
    api: ApiClient,
    accept_mode: str = "combined",
) -> NodeAgent:
    return NodeAgent(
        client,
        SimulatedLauncher(state / "guests", amd_sp),
        AgentStore(state / "agent.sqlite"),
        NODE_CAPACITY,
        state / "locks",
        api=api,
        measurements=(MEASUREMENT,),
        accept_mode=accept_mode,
    )


def _second_node(chain: ChainSystem) -> LocalAccount:
    node = chain.anvil.new_account()
    chain.register_node(node, NODE_SPEC, "https://b.node.test")
    chain.operator.nodes.stake(node.address, STAKE)
    return node


def _accepted(chain: ChainSystem, backend: LiveBackend, node: LocalAccount) -> int:
    """A lease `node` accepted, indexed by the backend (which takes evidence only then)."""
    lease_id = chain.open_lease()
    chain.client(node).leases.accept_lease(lease_id)
    backend.wait(f"lease {lease_id} indexed", lease_id, node.address)
    return lease_id


def _answering_with(agent: NodeAgent, chain: ChainSystem, key: bytes) -> None:
    """Make `agent`'s guests answer with `key` in reports that are genuine for their lease."""
    deployment = chain.deployment
    signer = agent.launcher.signer  # type: ignore[attr-defined]

    def report(asked: int, nonce: int) -> GuestReport:
        renter = chain.client().leases.get_lease(asked).renter
        data = build_report_data(
            deployment.chain_id, deployment.attestation_registry, asked, nonce, key
        )
        host = host_data(deployment.chain_id, deployment.attestation_registry, asked, renter)
        signed = signer.sign_report(MEASUREMENT, data, host)
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, key)

    agent.launcher.get_report = report  # type: ignore[method-assign, assignment]


def test_a_guest_key_copied_from_another_node_is_never_submitted(
    chain: ChainSystem, backend: LiveBackend, amd_sp: SimulatedAmdSp, tmp_path: Path
) -> None:
    """The renter has root in its guest on node A (lease 1, attested with key K) and in its
    guest on node B (lease 2): it kills B's guest agent and answers with K, in a report that
    is genuine for lease 2. The verifiers reject it as GUEST_KEY_REUSED and would slash B,
    which cannot see A's guests: B asks the backend, refuses to submit, keeps the refusal as
    evidence and declines the lease while that is free. FAILED on the old code: B submitted
    the report (which the verifiers reject as GUEST_KEY_REUSED, slashing B's bond)."""
    chain.staked_node()
    other = _second_node(chain)
    with ApiClient(backend.url) as api:
        node_a = _agent(chain.node, tmp_path / "a", amd_sp, api)
        node_b = _agent(chain.client(other), tmp_path / "b", amd_sp, api)
        first = _accepted(chain, backend, chain.accounts.node_key)
        assert node_a.handle_lease(first) == LeaseState.ATTESTED
        backend.wait(f"lease {first} attested", first, "pending")
        [kept] = node_a.store.submissions(first)

        second = _accepted(chain, backend, other)
        _answering_with(node_b, chain, kept.guest_key)
        asked: list[str] = []
        api.guest_key_claim = lambda key_hash, **_: asked.append(key_hash)  # type: ignore[method-assign, assignment, func-returns-value]
        with pytest.raises(LeaseUnservable, match="claimed"):
            node_b.handle_lease(second)
        assert asked == []  # the upload's answer named the claim: no second request

    assert chain.node.attestations.attestation_nonce(second) == 0  # never submitted
    lease = chain.client().leases.get_lease(second)
    assert lease.status == LeaseStatus.OPEN  # given back to the market, for free
    assert node_b.launcher.running() == []
    [failure] = node_b.store.guest_failures(second)
    assert "GUEST_KEY_CLAIMED" in failure.error and f"lease {first}'s" in failure.error
    # The verifiers see only lease 1's honest report: nothing of B's to reject or slash.
    deployment = chain.deployment
    verifier = Verifier(
        backend.service.store,
        lambda lease_id, report, ok: chain.verifier.attestations.confirm(
            lease_id, report, ok
        ).tx_hash,
        VerifierConfig(deployment.chain_id, deployment.attestation_registry, [amd_sp.ark]),
        clock=chain.now,
    )
    results = verifier.run_pending()
    assert [(r.lease_id, r.ok) for r in results] == [(first, True)]
    assert chain.client().nodes.get_node(other.address).stake == STAKE
    assert chain.client().leases.bonded_stake(other.address) == 0


def test_a_renter_racing_the_indexer_cannot_get_the_first_node_slashed(
    chain: ChainSystem, amd_sp: SimulatedAmdSp, tmp_path: Path
) -> None:
    """The renter reads its guest's key K on node A before A attests (root in the guest) and
    has its guest on node B answer with K first: B's evidence names K first and B submits.
    A asks before the backend has indexed B's submission (the indexer trails the chain by
    its confirmations), so B's claim is not live yet; the verifiers will hold it against A
    as soon as it is. A must not submit: it declines for free. FAILED on the old code (A
    submitted, to be rejected as GUEST_KEY_REUSED and slashed), and would with a check of
    live claims only."""
    chain.staked_node()
    other = _second_node(chain)
    key = simulated_guest_key()
    with (
        _live_backend(chain, tmp_path, amd_sp, indexing=False) as backend,
        ApiClient(backend.url) as api,
    ):
        node_a = _agent(chain.node, tmp_path / "a", amd_sp, api)
        node_b = _agent(chain.client(other), tmp_path / "b", amd_sp, api)
        first, second = chain.open_lease(), chain.open_lease()
        chain.node.leases.accept_lease(first)
        chain.client(other).leases.accept_lease(second)
        backend.service.step()  # both accepts indexed; nothing after this
        _answering_with(node_a, chain, key)
        _answering_with(node_b, chain, key)
        assert node_b.handle_lease(second) == LeaseState.ATTESTED
        with pytest.raises(LeaseUnservable, match="claimed"):
            node_a.handle_lease(first)
    assert chain.node.attestations.attestation_nonce(first) == 0
    assert chain.client().leases.get_lease(first).status == LeaseStatus.OPEN
    assert chain.client().leases.bonded_stake(chain.accounts.node_key.address) == 0
    [failure] = node_a.store.guest_failures(first)
    assert f"lease {second}'s, claimed (its attestation pending)" in failure.error


def test_a_node_naming_another_guests_key_cannot_make_it_give_its_lease_back(
    chain: ChainSystem, backend: LiveBackend, amd_sp: SimulatedAmdSp, tmp_path: Path
) -> None:
    """A hostile node B learns the key K of the guest on node A's lease (it is public) and,
    before A uploads, posts evidence for its own lease naming K: its own guest's genuine
    report in a bundle carrying K, and A's genuine report of lease 1 in a bundle of lease 2.
    Neither proves K is B's guest's, so neither claims it: A attests and keeps its lease.
    FAILED on the old code (the first bundle naming K claimed it: A gave its lease back)."""
    chain.staked_node()
    hostile = _second_node(chain)
    key = simulated_guest_key()
    deployment = chain.deployment
    with ApiClient(backend.url) as api:
        node_a = _agent(chain.node, tmp_path / "a", amd_sp, api)
        first = _accepted(chain, backend, chain.accounts.node_key)
        second = _accepted(chain, backend, hostile)
        renter = chain.client().leases.get_lease(first).renter
        _answering_with(node_a, chain, key)

        def bundle(lease_id: int, bound_lease: int, bound_key: bytes) -> bytes:
            data = build_report_data(
                deployment.chain_id, deployment.attestation_registry, bound_lease, 0, bound_key
            )
            host = host_data(
                deployment.chain_id, deployment.attestation_registry, bound_lease, renter
            )
            signed = amd_sp.sign_report(MEASUREMENT, data, host)
            return EvidenceBundle(
                report=signed.report, vcek=signed.vcek_der, chain=signed.cert_chain_pem,
                chain_id=deployment.chain_id, registry=deployment.attestation_registry,
                lease_id=lease_id, nonce=0, guest_key=key,
            ).encode()  # fmt: skip

        for forged in (bundle(second, second, simulated_guest_key()), bundle(second, first, key)):
            api.upload_evidence(forged, node_key=hostile.key)
        assert node_a.handle_lease(first) == LeaseState.ATTESTED

    assert chain.node.attestations.attestation_nonce(first) == 1
    assert chain.client().leases.get_lease(first).status == LeaseStatus.ACTIVE
    assert node_a.store.guest_failures(first) == []


def test_an_unreachable_backend_holds_the_submission_until_the_free_decline(
    chain: ChainSystem, amd_sp: SimulatedAmdSp, tmp_path: Path
) -> None:
    """Whether the guest's key is claimed cannot be known without the backend: the node
    never submits blind (a rejected report is slashed), tries again on the next pass, and
    declines the lease for free near the deadline. FAILED on the old code at the deadline:
    the report kept from the first pass made the agent skip the decline, so the deadline
    passed and the renter could have the node slashed."""
    chain.staked_node()
    lease_id = chain.open_lease()
    with ApiClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as api:  # nobody listens
        agent = _agent(chain.node, tmp_path / "a", amd_sp, api, "separate")
        with pytest.raises(ApiError):  # the upload: tried again on the next pass
            agent.handle_lease(lease_id)
        assert chain.node.attestations.attestation_nonce(lease_id) == 0
        assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.ACTIVE
        # To the agent's own free-decline deadline, minus its margin.
        deadline = decline_deadline(chain.node, lease_id)
        chain.advance(deadline - DECLINE_MARGIN_S - chain.now())
        with pytest.raises(LeaseUnservable):
            agent.handle_lease(lease_id)
    assert chain.node.attestations.attestation_nonce(lease_id) == 0
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert chain.client().leases.bonded_stake(chain.accounts.node_key.address) == 0
