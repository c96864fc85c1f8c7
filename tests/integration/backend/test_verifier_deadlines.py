"""The verifier never leaves a submission undecided (real anvil): one without evidence is
rejected as NO_EVIDENCE once the evidence timeout passed, while a genuine one is verified."""

from __future__ import annotations

import pytest

from backend.store import Store
from backend.verifier import NO_EVIDENCE
from cvm.attestation import SimulatedSecureProcessor
from cvm.chain import AttestationStatus, CloseReason, LeaseStatus
from tests.fixtures.chain import ChainSystem
from tests.integration.backend.test_verifier import Backend, amd_sp, store  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_submission_without_evidence_is_rejected_in_time_and_a_genuine_one_verified(
    store: Store,  # noqa: F811
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,  # noqa: F811
) -> None:
    backend = Backend(store, chain, amd_sp)
    junk = chain.active_lease()
    genuine = chain.open_lease()
    chain.node.leases.accept_lease(genuine)
    chain.submit(junk, b"\x77" * 32)  # a report hash nobody can back with evidence
    bundle = backend.evidence(amd_sp, genuine)
    backend.upload(bundle)
    chain.submit(genuine, bundle.report_hash)
    backend.indexer.poll()

    # Within the timeout the junk one is only waited for; the genuine one is verified.
    (verified,) = backend.verifier.run_pending()
    assert verified.lease_id == genuine and verified.ok
    assert chain.client().attestations.status_of(junk) == AttestationStatus.PENDING

    timeout = backend.verifier.evidence_timeout_s
    window = chain.client().attestations.verification_window()
    assert timeout < window  # decided well before the registry would count it as missed
    chain.advance(int(timeout))
    (rejected,) = backend.verifier.run_pending()
    assert rejected.lease_id == junk and not rejected.ok
    assert rejected.reason_codes == [NO_EVIDENCE] and rejected.evidence_hash is None
    assert rejected.confirm_tx is not None
    client = chain.client()
    assert client.attestations.status_of(junk) == AttestationStatus.REJECTED
    lease = client.leases.get_lease(junk)
    assert lease.status == LeaseStatus.CLOSED
    assert lease.close_reason == CloseReason.ATTESTATION_REJECTED
    assert client.attestations.status_of(genuine) == AttestationStatus.VERIFIED
    assert backend.verifier.run_pending() == []  # voted once

    backend.indexer.poll()
    status = backend.api.get(f"/v1/leases/{junk}/attestation").json()
    assert status["status"] == "rejected"
    assert status["verification"]["reason_codes"] == [NO_EVIDENCE]
