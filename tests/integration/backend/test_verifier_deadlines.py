"""A submission without evidence (real anvil): the verifier does not reject it (the node
holding the report would overturn a NO_EVIDENCE rejection by disputing with it, and slash the
verifiers); unvoted, it lapses at the end of the verification window and the renter closes
the lease as a missed attestation. A genuine one is verified meanwhile."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backend.store import Store, Verification
from cvm.attestation import SimulatedSecureProcessor
from cvm.chain import AttestationStatus, CloseReason, LeaseStatus
from tests.fixtures.chain import ChainSystem
from tests.integration.backend.test_verifier import Backend, amd_sp, store  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_submission_without_evidence_is_not_voted_on_and_lapses_against_the_node(
    store: Store,  # noqa: F811
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,  # noqa: F811
) -> None:
    backend = Backend(store, chain, amd_sp)
    junk = chain.active_lease()
    genuine = chain.open_lease()
    chain.node.leases.accept_lease(genuine)
    withheld = backend.evidence(amd_sp, junk)  # a genuine report the node never uploads
    chain.submit(junk, withheld.report_hash)
    bundle = backend.evidence(amd_sp, genuine)
    backend.upload(bundle)
    chain.submit(genuine, bundle.report_hash)
    backend.indexer.poll()

    # Within the timeout the junk one is only waited for; the genuine one is verified.
    (verified,) = backend.verifier.run_pending()
    assert verified.lease_id == genuine and verified.ok
    assert chain.client().attestations.status_of(junk) == AttestationStatus.PENDING

    # Past the timeout: still no vote (FAILED on the old code: rejected as NO_EVIDENCE, which
    # the node, holding the genuine report, would overturn on chain).
    chain.advance(int(backend.verifier.evidence_timeout_s))
    assert backend.verifier.run_pending() == []
    client = chain.client()
    assert client.attestations.status_of(junk) == AttestationStatus.PENDING
    assert client.attestations.status_of(genuine) == AttestationStatus.VERIFIED
    with store.session() as session:
        assert session.scalar(select(Verification).where(Verification.lease_id == junk)) is None

    # Unvoted past the registry's window: Expired, a missed first attestation the renter
    # closes the lease on (refunded, the node's bond slashed).
    chain.advance(client.attestations.verification_window())
    assert client.attestations.status_of(junk) == AttestationStatus.EXPIRED
    assert backend.verifier.run_pending() == []
    chain.renter.leases.report_missed_attestation(junk)
    lease = client.leases.get_lease(junk)
    assert lease.status == LeaseStatus.CLOSED
    assert lease.close_reason == CloseReason.ATTESTATION_MISSED
