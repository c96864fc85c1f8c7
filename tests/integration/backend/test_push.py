"""Push, not poll: the backend indexes a block as soon as the chain announces it
(`eth_subscribe` over anvil's WebSocket), falls back to polling without one, and a renter
following its lease (`Renter.wait`, behind `cvm rent`) is woken by the backend's
Server-Sent Events rather than by a polling interval.

Every poll interval here is an hour: only a push can make these tests pass in time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.service import BackendService
from backend.store import Lease
from cvm.api_client import ApiClient
from cvm.attestation import EvidenceBundle, SimulatedSecureProcessor, build_report_data
from cvm.attestation.binding import GuestKey, host_data
from cvm.config import Settings
from cvm.renter import LeaseReport, Renter, is_verified
from node_agent.launcher.signer import simulated_guest_key
from tests.fixtures.chain import MEASUREMENT, ChainSystem
from tests.fixtures.processes import free_port, serving, wait_for

pytestmark = pytest.mark.integration

AN_HOUR = 3600.0


@pytest.fixture(scope="module")
def amd_sp() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


def _service(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedSecureProcessor, **settings: object
) -> BackendService:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'push.db'}",
        "rpc_url": chain.anvil.rpc_url,
        "indexer_confirmations": 0,
        "indexer_poll_s": AN_HOUR,
        **settings,
    }
    return BackendService(
        Settings(_env_file=None, **values),  # type: ignore[call-arg, arg-type]
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda _lease, _node: None,  # the test plays the node itself
        verifier_account=chain.accounts.verifier,
        trusted_roots=[amd_sp.ark],
    )


@pytest.fixture
def service(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedSecureProcessor
) -> Iterator[BackendService]:
    backend = _service(chain, tmp_path, amd_sp)
    backend.start()
    yield backend
    backend.close()


def _indexed(service: BackendService, lease_id: int) -> bool:
    with service.store.session() as session:
        return session.get(Lease, lease_id) is not None


def _node_of(service: BackendService, lease_id: int) -> str | None:
    with service.store.session() as session:
        lease = session.get(Lease, lease_id)
        return lease.node if lease is not None else None


def test_new_blocks_are_indexed_when_announced(chain: ChainSystem, service: BackendService) -> None:
    assert service.new_heads is not None
    assert service.new_heads.subscribed.wait(30), "no newHeads subscription on anvil's ws"
    chain.staked_node()
    lease_id = chain.open_lease()
    wait_for(lambda: _indexed(service, lease_id), timeout=30, what="the lease indexed by push")


def test_without_a_websocket_the_indexer_polls(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedSecureProcessor
) -> None:
    backend = _service(
        chain,
        tmp_path,
        amd_sp,
        indexer_poll_s=0.2,
        indexer_ws_url=f"ws://127.0.0.1:{free_port()}",  # nobody listens
    )
    backend.start()
    try:
        chain.staked_node()
        lease_id = chain.open_lease()
        wait_for(lambda: _indexed(backend, lease_id), timeout=30, what="the lease indexed")
        assert backend.new_heads is not None and not backend.new_heads.subscribed.is_set()
    finally:
        backend.close()


def test_renter_follows_its_lease_by_server_push(
    chain: ChainSystem, service: BackendService, amd_sp: SimulatedSecureProcessor
) -> None:
    assert service.new_heads is not None and service.new_heads.subscribed.wait(30)
    chain.staked_node()
    lease_id = chain.open_lease()
    with serving(service.app) as url:
        renter = Renter(chain.renter, ApiClient(url))
        phases: list[str] = []
        outcome: list[LeaseReport] = []

        def follow() -> None:
            report = renter.wait(
                lease_id,
                is_verified,
                timeout_s=90,
                poll_s=AN_HOUR,  # a polling renter would sleep through the whole test
                on_change=lambda phase, _report: phases.append(phase),
            )
            outcome.append(report)

        follower = threading.Thread(target=follow)
        follower.start()
        # The test is the node: accept, upload signed evidence, submit on chain.
        wait_for(lambda: _indexed(service, lease_id), timeout=30, what="the lease indexed")
        chain.node.leases.accept_lease(lease_id)
        # Uploads are taken from the lease's node once the backend knows it accepted.
        wait_for(lambda: _node_of(service, lease_id), timeout=30, what="the accept indexed")
        deployment = chain.deployment
        # As an honest node makes it: a guest key, HOST_DATA of the lease and its renter.
        guest_key = simulated_guest_key()
        report_data = build_report_data(
            deployment.chain_id, deployment.attestation_registry, lease_id, 0, guest_key
        )
        launch = host_data(deployment.chain_id, deployment.attestation_registry, lease_id,
                           chain.accounts.renter.address)  # fmt: skip
        signed = amd_sp.attest(measurement=MEASUREMENT, report_data=report_data, host_data=launch)
        bundle = EvidenceBundle(
            report=signed.report,
            vcek=signed.vcek_der,
            chain=signed.chain_pem,
            chain_id=deployment.chain_id,
            registry=deployment.attestation_registry,
            lease_id=lease_id,
            nonce=0,
            guest_key=guest_key,
        )
        node_key = chain.accounts.node_key.key
        with ApiClient(url) as node_api:
            node_api.upload_evidence(bundle.encode(), node_key=node_key)
        chain.submit(lease_id, bundle.report_hash, signer=GuestKey.parse(guest_key).signer)
        follower.join(timeout=120)
        assert not follower.is_alive()
    assert outcome and is_verified(outcome[0])
    assert phases[0] == "open" and phases[-1] == "verified"
