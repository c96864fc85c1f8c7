"""The verifier service on a real anvil, with reports signed by the simulated AMD-SP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient

from backend.api import create_app
from backend.api.deps import AppContext
from backend.indexer import Indexer, marketplace_decoder
from backend.store import Store, Verification
from backend.verifier import Verifier, VerifierConfig
from cvm.api_models import NODE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, ChainInfo
from cvm.attestation import EvidenceBundle, SimulatedSecureProcessor, build_report_data
from cvm.chain import AttestationStatus
from cvm.config import Settings
from cvm.eip712 import Domain, EvidenceUpload, sign_evidence_upload
from tests.fixtures.chain import MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def amd_sp() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'verifier.db'}")
    yield store
    store.close()


class Backend:
    """The pieces of the backend this test drives: API, indexer, verifier."""

    def __init__(self, store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor) -> None:
        deployment = chain.deployment
        self.chain = chain
        self.indexer = Indexer(
            store,
            chain.anvil.w3,
            marketplace_decoder(deployment),
            start_block=deployment.start_block,
            confirmations=0,
            batch_blocks=100,
        )
        verifier_chain = chain.verifier

        def confirm(lease_id: int, report_hash: bytes, ok: bool) -> str:
            return verifier_chain.attestations.confirm(lease_id, report_hash, ok).tx_hash

        self.verifier = Verifier(
            store,
            confirm,
            VerifierConfig(
                chain_id=deployment.chain_id,
                attestation_registry=deployment.attestation_registry,
                trusted_roots=[amd_sp.ark],
            ),
            clock=chain.now,
        )
        context = AppContext(
            settings=Settings(database_url=str(store.url)),
            store=store,
            chain=ChainInfo(
                chain_id=deployment.chain_id,
                node_registry=deployment.node_registry,
                lease_market=deployment.lease_market,
                attestation_registry=deployment.attestation_registry,
            ),
        )
        self.api = TestClient(create_app(context))

    def evidence(
        self,
        amd_sp: SimulatedSecureProcessor,
        lease_id: int,
        *,
        nonce: int = 0,
        measurement: bytes = MEASUREMENT,
        bound_nonce: int | None = None,
        policy: int | None = None,
    ) -> EvidenceBundle:
        deployment = self.chain.deployment
        report_data = build_report_data(
            deployment.chain_id,
            deployment.attestation_registry,
            lease_id,
            nonce if bound_nonce is None else bound_nonce,
        )
        extra = {} if policy is None else {"policy": policy}
        signed = amd_sp.attest(measurement=measurement, report_data=report_data, **extra)
        return EvidenceBundle(
            report=signed.report,
            vcek=signed.vcek_der,
            chain=signed.chain_pem,
            chain_id=deployment.chain_id,
            registry=deployment.attestation_registry,
            lease_id=lease_id,
            nonce=nonce,
        )

    def upload(self, bundle: EvidenceBundle) -> None:
        # The backend stores evidence only for a lease it has indexed, signed by its node.
        self.indexer.poll()
        raw = bundle.encode()
        node = self.chain.node.account
        assert node is not None
        upload = EvidenceUpload(
            node=node.address,
            lease_id=bundle.lease_id,
            nonce=bundle.nonce,
            evidence_hash=bytes(keccak(raw)),
            timestamp=int(time.time()),
        )
        domain = Domain(self.chain.deployment.chain_id, self.chain.deployment.node_registry)
        headers = {
            NODE_HEADER: node.address,
            TIMESTAMP_HEADER: str(upload.timestamp),
            SIGNATURE_HEADER: sign_evidence_upload(upload, domain, node.key),
        }
        response = self.api.post("/v1/evidence", content=raw, headers=headers)
        assert response.status_code == 201, response.text


def test_good_attestation_is_confirmed_on_chain(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id)
    backend.upload(bundle)
    chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    results = backend.verifier.run_pending()
    assert len(results) == 1
    result = results[0]
    assert result.ok, result.detail
    assert result.reason_codes == [] and result.confirm_tx is not None
    assert result.detail["measurement"] == "0x" + MEASUREMENT.hex()
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.VERIFIED
    # Idempotent: nothing left to do, and a second run does not vote twice.
    assert backend.verifier.run_pending() == []
    backend.indexer.poll()
    status = backend.api.get(f"/v1/leases/{lease_id}/attestation").json()
    assert status["status"] == "verified"
    assert status["verification"]["ok"] is True
    assert status["verification"]["confirm_tx"] == result.confirm_tx


def test_a_report_with_another_measurement_is_rejected(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    # The node claims the expected measurement on chain, but the guest runs other code.
    bundle = backend.evidence(amd_sp, lease_id, measurement=b"\x66" * 48)
    backend.upload(bundle)
    chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    assert not result.ok and "MEASUREMENT_MISMATCH" in result.reason_codes
    on_chain = chain.client().attestations.attestation_of(lease_id)
    assert on_chain.status == AttestationStatus.REJECTED
    backend.indexer.poll()
    lease = backend.api.get(f"/v1/leases/{lease_id}").json()
    assert lease["status"] == "closed"
    assert backend.api.get(f"/v1/leases/{lease_id}/attestation").json()["status"] == "rejected"


def test_replayed_binding_and_debug_policy_are_rejected(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    # Evidence claiming nonce 1 (a future round) while the chain recorded nonce 0.
    bundle = backend.evidence(amd_sp, lease_id, nonce=1, policy=0xB0000)
    backend.upload(bundle)
    chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    assert not result.ok
    assert {"NONCE_MISMATCH", "DEBUG_ALLOWED"} <= set(result.reason_codes)
    with store.session() as session:
        stored = session.get(Verification, result.id)
        assert stored is not None and stored.reason_codes == result.reason_codes


def test_waits_for_evidence(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id)
    chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    assert backend.verifier.run_pending() == []
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.PENDING
    backend.upload(bundle)
    (result,) = backend.verifier.run_pending()
    assert result.ok
