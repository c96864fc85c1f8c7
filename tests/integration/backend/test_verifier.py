"""The verifier service on a real anvil, with reports signed by the simulated AMD-SP: a
report must bind the lease, its nonce and a well-formed guest key (REPORT_DATA), the lease
and its renter as the chain has them (HOST_DATA), and a guest key no other live lease
claimed first."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from eth_utils import keccak
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from backend.api import create_app
from backend.api.deps import AppContext
from backend.domain import evidence as evidence_rules
from backend.indexer import Indexer, marketplace_decoder
from backend.store import Evidence, Store, Verification
from backend.verifier import Judgement, KdsVceks, Verifier, VerifierConfig
from cvm.api_models import (
    AMD_ROOT_HEADER,
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ChainInfo,
)
from cvm.attestation import (
    AmdRoot,
    EvidenceBundle,
    SimulatedSecureProcessor,
    amd_roots,
    build_report_data,
)
from cvm.attestation.binding import host_data
from cvm.chain import AttestationStatus
from cvm.cli import app
from cvm.config import Settings
from cvm.eip712 import Domain, EvidenceUpload, sign_node_message
from node_agent.launcher.signer import simulated_guest_key
from tests.fixtures.chain import GUEST_SIGNER, MEASUREMENT, ChainSystem
from tests.fixtures.kds import LocalKds
from tests.fixtures.processes import serving

pytestmark = pytest.mark.integration

cli = CliRunner()


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

    def __init__(
        self,
        store: Store,
        chain: ChainSystem,
        amd_sp: SimulatedSecureProcessor,
        trusted_roots: list[x509.Certificate] | None | Literal["sim"] = "sim",
        kds: KdsVceks | None = None,
    ) -> None:
        # "sim": only the simulated AMD-SP's root; None: the verifier's default (AMD's).
        # `kds`: where the verifier fetches a chip's VCEK (the simulated AMD's ASK checks it).
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
        roots = [amd_sp.ark] if trusted_roots == "sim" else trusted_roots

        def confirm(lease_id: int, report_hash: bytes, ok: bool) -> str:
            return verifier_chain.attestations.confirm(lease_id, report_hash, ok).tx_hash

        self.verifier = Verifier(
            store,
            confirm,
            VerifierConfig(
                chain_id=deployment.chain_id,
                attestation_registry=deployment.attestation_registry,
                trusted_roots=roots,
                trusted_intermediates=(amd_sp.ask,),
            ),
            clock=chain.now,
            kds=kds,
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
            trusted_roots=roots,  # the verifier's: uploads prove their guest keys as it would
        )
        self.app = create_app(context)
        self.api = TestClient(self.app)

    def evidence(
        self,
        amd_sp: SimulatedSecureProcessor,
        lease_id: int,
        *,
        nonce: int = 0,
        measurement: bytes = MEASUREMENT,
        bound_nonce: int | None = None,
        policy: int | None = None,
        guest_key: bytes | None = None,
        host_lease: int | None = None,
        host_renter: str | None = None,
    ) -> EvidenceBundle:
        """Evidence as an honest node makes it (a fresh guest key, HOST_DATA of the lease and
        its renter) unless told to lie about a part."""
        deployment = self.chain.deployment
        guest_key = honest_guest_key() if guest_key is None else guest_key
        report_data = build_report_data(
            deployment.chain_id,
            deployment.attestation_registry,
            lease_id,
            nonce if bound_nonce is None else bound_nonce,
            guest_key,
        )
        launch = host_data(
            deployment.chain_id,
            deployment.attestation_registry,
            lease_id if host_lease is None else host_lease,
            self.chain.accounts.renter.address if host_renter is None else host_renter,
        )
        extra = {} if policy is None else {"policy": policy}
        signed = amd_sp.attest(
            measurement=measurement, report_data=report_data, host_data=launch, **extra
        )
        return EvidenceBundle(
            report=signed.report,
            vcek=signed.vcek_der,
            chain=signed.chain_pem,
            chain_id=deployment.chain_id,
            registry=deployment.attestation_registry,
            lease_id=lease_id,
            nonce=nonce,
            guest_key=guest_key,
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
            SIGNATURE_HEADER: sign_node_message(upload, domain, node.key),
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
    # Trusted only because this verifier was told to: marked as the simulated AMD-SP's.
    assert status["verification"]["amd_root"] == "simulated"


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
    # A report bound to nonce 1 (a future round) while the chain recorded nonce 0: REPORT_DATA
    # is checked against the chain's nonce (the bundle's own claim of nonce 1 counts for nothing).
    bundle = backend.evidence(amd_sp, lease_id, nonce=1, policy=0xB0000)
    backend.upload(bundle)
    chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    assert not result.ok
    assert set(result.reason_codes) == {"BINDING_MISMATCH", "DEBUG_ALLOWED"}
    with store.session() as session:
        stored = session.get(Verification, result.id)
        assert stored is not None and stored.reason_codes == result.reason_codes


def honest_guest_key() -> bytes:
    """A fresh guest key naming the signer `ChainSystem.submit` puts on chain by default."""
    key = simulated_guest_key()
    return key[:64] + bytes.fromhex(GUEST_SIGNER.address[2:]) + key[84:]


def _verdict(backend: Backend, bundle: EvidenceBundle) -> Verification:
    backend.upload(bundle)
    backend.chain.submit(bundle.lease_id, bundle.report_hash)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    return result


@pytest.mark.parametrize("lie", ["another lease", "another renter", "unset"])
def test_a_host_data_for_another_lease_or_renter_is_rejected(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor, lie: str
) -> None:
    """A guest launched for another lease or another renter (or with no HOST_DATA at all)
    is not this lease's guest, whatever its REPORT_DATA says. Accepted by the old verifier,
    which never looked at HOST_DATA."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    if lie == "another lease":
        other = chain.open_lease()  # the same renter's other lease
        bundle = backend.evidence(amd_sp, lease_id, host_lease=other)
    elif lie == "another renter":
        bundle = backend.evidence(amd_sp, lease_id, host_renter=chain.accounts.stranger.address)
    else:
        deployment = chain.deployment
        key = honest_guest_key()
        data = build_report_data(deployment.chain_id, deployment.attestation_registry,
                                 lease_id, 0, key)  # fmt: skip
        signed = amd_sp.attest(measurement=MEASUREMENT, report_data=data)  # HOST_DATA zeros
        bundle = EvidenceBundle(signed.report, signed.vcek_der, signed.chain_pem,
                                deployment.chain_id, deployment.attestation_registry,
                                lease_id, 0, key)  # fmt: skip
    result = _verdict(backend, bundle)
    assert not result.ok
    assert result.reason_codes == ["HOST_DATA_MISMATCH"], result.detail
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.REJECTED


@pytest.mark.parametrize("key", [b"", b"\x01" * 32], ids=["empty", "short"])
def test_a_guest_key_the_evm_cannot_take_is_rejected(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor, key: bytes
) -> None:
    """REPORT_DATA binds no key (zeros) or one that is not 116 bytes: no dispute can prove
    the report genuine (`truth` reverts GuestKeyMismatch for every key), so a rejection
    stands. The old verifier accepted an empty one (nothing could be sealed to that guest)."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    result = _verdict(backend, backend.evidence(amd_sp, lease_id, guest_key=key))
    assert not result.ok
    assert result.reason_codes == ["GUEST_KEY_MALFORMED"], result.detail
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.REJECTED


def _with_signer(key: bytes) -> bytes:
    return key[:64] + bytes.fromhex(GUEST_SIGNER.address[2:]) + key[84:]


@pytest.mark.parametrize(
    "key",
    [
        _with_signer(bytes(32) + simulated_guest_key()[32:]),
        _with_signer(simulated_guest_key()[:84] + bytes(32)),
    ],
    ids=["zero-x25519", "zero-tls"],
)
def test_an_unusable_guest_key_the_evm_would_accept_is_not_voted_on(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor, key: bytes
) -> None:
    """A 116-byte key with the submitted signer but unusable keys: the EVM checks only the
    length and the signer, so it would find the report genuine and slash a rejection. No
    vote (nothing stored): the submission lapses unverified. FAILED on the old code (rejected
    as GUEST_KEY_MALFORMED)."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id, guest_key=key)
    backend.upload(bundle)
    chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    assert backend.verifier.run_pending() == []
    assert _stored(store, lease_id) is None
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.PENDING
    judged = _appraise(backend, lease_id, bundle)
    assert judged.reasons == ["GUEST_KEY_UNUSABLE"] and judged.undecided is not None


def test_a_zero_signer_key_is_rejected_as_on_chain(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """The EVM compares the key's signer bytes, parsed or not: a zero signer is not the one
    submitted, so the report is false on chain too."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    key = simulated_guest_key()[:64] + bytes(20) + simulated_guest_key()[84:]
    result = _verdict(backend, backend.evidence(amd_sp, lease_id, guest_key=key))
    assert not result.ok
    assert set(result.reason_codes) == {"GUEST_SIGNER_MISMATCH", "GUEST_KEY_UNUSABLE"}


def _stored(store: Store, lease_id: int) -> Verification | None:
    with store.session() as session:
        return session.scalar(select(Verification).where(Verification.lease_id == lease_id))


def _appraise(backend: Backend, lease_id: int, bundle: EvidenceBundle) -> Judgement:
    """The verifier's judgement of `bundle` for the lease's pending submission (no vote)."""
    from backend.store import Attestation, Lease

    with backend.verifier.store.session() as session:
        lease = session.get(Lease, lease_id)
        attestation = session.get(Attestation, lease_id)
        assert lease is not None and attestation is not None
        return backend.verifier.appraise(session, lease, attestation, bundle.encode())


def test_a_signer_the_guest_never_made_is_rejected(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """The node submits the attested signer on chain; one that is not the signer in the guest
    key the report binds (say the operator's own key) would let `attestedSignerOf` vouch for
    results the guest never signed. Verified by the old verifier, which never compared them."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id)
    backend.upload(bundle)
    chain.submit(lease_id, bundle.report_hash, signer=chain.accounts.stranger.address)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    assert not result.ok
    assert result.reason_codes == ["GUEST_SIGNER_MISMATCH"], result.detail
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.REJECTED
    assert chain.client().attestations.attested_signer_of(lease_id) == "0x" + "00" * 20


def _accepted_lease(chain: ChainSystem) -> int:
    """Another lease the (already staked) node accepted."""
    lease_id = chain.open_lease()
    chain.node.leases.accept_lease(lease_id)
    return lease_id


def test_a_guest_key_reused_across_two_live_leases_is_not_voted_on_for_the_second(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """A second live lease whose genuine report carries the first one's key (a renter with
    root in its guest copied it): the EVM cannot see the reuse, so a rejection would be
    overturned by the node's dispute and slash the verifiers; HOST_DATA already keeps one
    guest from serving two leases. The verifier does not vote on it (the first lease is
    Verified, whatever order they come in), and the unvoted one lapses at the end of the
    verification window. FAILED on the old code (rejected as GUEST_KEY_REUSED)."""
    backend = Backend(store, chain, amd_sp)
    first, second = chain.active_lease(), _accepted_lease(chain)
    key = honest_guest_key()
    bundles = [backend.evidence(amd_sp, lease, guest_key=key) for lease in (first, second)]
    for bundle in bundles:
        backend.upload(bundle)
    for bundle in reversed(bundles):
        chain.submit(bundle.lease_id, bundle.report_hash)
    backend.indexer.poll()
    results = {result.lease_id: result for result in backend.verifier.run_pending()}
    assert list(results) == [first] and results[first].ok, results
    assert _stored(store, second) is None
    judged = _appraise(backend, second, bundles[1])
    assert judged.reasons == ["GUEST_KEY_REUSED"] and judged.undecided is not None
    assert f"live lease {first}" in judged.detail["errors"][0]
    attestations = chain.client().attestations
    assert attestations.attestation_of(first).status == AttestationStatus.VERIFIED
    assert attestations.attestation_of(second).status == AttestationStatus.PENDING
    # Unvoted past the registry's window: Expired (never paid; a first one is missed).
    chain.advance(attestations.verification_window() + 1)
    assert attestations.attestation_of(second).status == AttestationStatus.EXPIRED
    assert backend.verifier.run_pending() == []

    # Once the first lease is closed its key binds no live lease any more.
    chain.renter.leases.close_lease(first)
    third = _accepted_lease(chain)
    assert _verdict(backend, backend.evidence(amd_sp, third, guest_key=key)).ok


def test_a_genuine_report_under_another_lease_id_in_its_bundle_is_verified(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """The node uploads its genuine report with another lease's id and nonce in the bundle:
    the chain's lease and nonce are what the report is checked against, so it is Verified
    (the EVM would find it genuine). FAILED on the old code (Rejected as LEASE_MISMATCH,
    then overturned by the node's dispute, slashing the verifiers)."""
    backend = Backend(store, chain, amd_sp)
    lease_id, other = chain.active_lease(), _accepted_lease(chain)
    genuine = backend.evidence(amd_sp, lease_id)
    lying = dataclasses.replace(genuine, lease_id=other, nonce=3)
    backend.upload(lying)
    chain.submit(lease_id, genuine.report_hash)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    assert result.lease_id == lease_id and result.ok, result.detail
    assert result.reason_codes == []
    assert any(f"lease id {other}" in m for m in result.detail["errors"])
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.VERIFIED


def test_a_genuine_report_with_another_guest_key_in_its_bundle_is_not_voted_on(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """The report binds the guest's key K; the bundle carries another key. The EVM takes the
    key from the disputer: with K, whose signer is the one submitted, it finds the report
    genuine, so a rejection would be overturned; whether K names that signer cannot be told
    here. No vote. FAILED on the old code (Rejected as BINDING_MISMATCH)."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    genuine = backend.evidence(amd_sp, lease_id)
    lying = dataclasses.replace(genuine, guest_key=honest_guest_key())
    backend.upload(lying)
    chain.submit(lease_id, genuine.report_hash)
    backend.indexer.poll()
    assert backend.verifier.run_pending() == []
    assert _stored(store, lease_id) is None
    judged = _appraise(backend, lease_id, lying)
    assert judged.reasons == ["GUEST_KEY_UNKNOWN"] and judged.undecided is not None
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.PENDING
    # The node's dispute would need a verdict: there is none to overturn, nobody is slashed.


def test_a_wrong_guest_key_does_not_save_a_report_false_on_chain(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """What the EVM checks without the guest key (here the measurement and REPORT_DATA's lease
    binding) still rejects, whatever key the bundle carries: no key the node could dispute
    with makes the report genuine on chain."""
    backend = Backend(store, chain, amd_sp)
    lease_id, other = chain.active_lease(), _accepted_lease(chain)
    report_for_other = backend.evidence(amd_sp, other)  # genuine, but bound to `other`
    lying = dataclasses.replace(report_for_other, lease_id=lease_id, guest_key=honest_guest_key())
    backend.upload(lying)
    chain.submit(lease_id, lying.report_hash)
    backend.indexer.poll()
    (result,) = backend.verifier.run_pending()
    assert not result.ok
    assert set(result.reason_codes) == {"BINDING_MISMATCH", "HOST_DATA_MISMATCH",
                                        "GUEST_KEY_UNKNOWN"}, result.detail  # fmt: skip
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.REJECTED


def _submittable_guest_key() -> bytes:
    """A fresh guest key whose attested signer is the one `ChainSystem.submit` names, where
    the fixtures name one (the contracts' attested signer): the verifier checks the two."""
    from tests.fixtures import chain as chain_fixtures  # the name is newer than this test

    signer = getattr(chain_fixtures, "GUEST_SIGNER", None)
    key = simulated_guest_key()
    return key if signer is None else key[:64] + bytes.fromhex(signer.address[2:]) + key[84:]


def _claim(backend: Backend, key: bytes, lease_id: int) -> dict[str, object] | None:
    """What the claim route tells the node of `lease_id` about `key` (None: free for it)."""
    key_hash = "0x" + hashlib.sha256(key).hexdigest()
    response = backend.api.get(f"/v1/guest-keys/{key_hash}/claim", params={"lease_id": lease_id})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_the_claim_route_answers_with_the_verifiers_rule(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """The route a node asks before submitting says "claimed" exactly when the verifier then
    rejects the report as GUEST_KEY_REUSED (first claim wins, ties to the lower lease id,
    only leases still live), and names the same lease; it also reports an earlier claim
    whose attestation is not live yet (the verifier holds it against the report once it
    is). FAILED on the old code: there was no such route (404 for every key), so a node could
    not learn that its renter had copied another lease's key into its guest."""
    backend = Backend(store, chain, amd_sp)
    first, second = chain.active_lease(), _accepted_lease(chain)
    key = _submittable_guest_key()
    backend.indexer.poll()
    assert _claim(backend, key, first) is None and _claim(backend, key, second) is None
    bundles = [backend.evidence(amd_sp, lease, guest_key=key) for lease in (first, second)]
    for bundle in bundles:
        backend.upload(bundle)
    # Both proved the key, neither attested yet: the first claim is a pending one for the
    # second lease; the first lease loses to nobody.
    assert _claim(backend, key, first) is None
    pending = _claim(backend, key, second)
    assert pending is not None and pending["lease_id"] == first and pending["live"] is False
    for bundle in reversed(bundles):
        chain.submit(bundle.lease_id, bundle.report_hash)
    backend.indexer.poll()
    live = _claim(backend, key, second)
    assert live is not None and live["lease_id"] == first and live["live"] is True
    assert live["claimed_at"] == pending["claimed_at"]
    results = {result.lease_id: result for result in backend.verifier.run_pending()}
    # Same cases, same answers: the verifier rejects exactly the lease the route warned.
    assert list(results) == [first] and results[first].ok
    assert _claim(backend, key, first) is None
    judged = _appraise(backend, second, bundles[1])
    assert judged.reasons == ["GUEST_KEY_REUSED"] and judged.undecided is not None
    assert f"live lease {live['lease_id']}" in judged.detail["errors"][0]

    # Both leases closed (the second, left unvoted, holds a live claim while it lasts): the
    # claims end, and a new lease may use the key.
    chain.renter.leases.close_lease(first)
    chain.renter.leases.close_lease(second)
    third = _accepted_lease(chain)
    backend.indexer.poll()
    assert _claim(backend, key, third) is None
    bundle = backend.evidence(amd_sp, third, guest_key=key)
    backend.upload(bundle)
    chain.submit(third, bundle.report_hash)
    backend.indexer.poll()
    results = {result.lease_id: result for result in backend.verifier.run_pending()}
    assert results[third].ok and results[third].confirm_tx is not None
    # The second lease's genuine report, free of the first's claim now, is voted on too:
    # Verified, as the EVM would find it (the registry pays a closed lease's held time).
    assert results[second].ok
    # Now the third lease holds it: a fourth would lose to it.
    fourth = _accepted_lease(chain)
    backend.indexer.poll()
    claim = _claim(backend, key, fourth)
    assert claim is not None and claim["lease_id"] == third and claim["live"] is True


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/guest-keys/0x1234/claim", 422),  # short
        ("/v1/guest-keys/" + "ab" * 32 + "/claim", 422),  # no 0x
        ("/v1/guest-keys/0x" + "zz" * 32 + "/claim", 422),  # not hex
        ("/v1/guest-keys/0x" + "ab" * 500 + "/claim", 422),  # far too long
        ("/v1/guest-keys/0x" + "ab" * 32 + "/claim?lease_id=-1", 422),
        ("/v1/guest-keys/0x" + "ab" * 32 + "/claim?lease_id=" + str(2**64), 422),
        ("/v1/guest-keys/0x" + "ab" * 32 + "/claim?lease_id=one", 422),
        ("/v1/guest-keys/0x" + "ab" * 32 + "/claim", 404),  # well formed, unclaimed
        ("/v1/guest-keys/0x" + "ab" * 32 + "/claim/more", 404),
        ("/v1/guest-keys/0x" + "ab" * 32, 404),
    ],
)
def test_the_claim_route_refuses_malformed_input(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor, path: str, status: int
) -> None:
    backend = Backend(store, chain, amd_sp)
    response = backend.api.get(path)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


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


def _lease_and_chain_verdict(backend: Backend, amd_sp: SimulatedSecureProcessor) -> int:
    lease_id = backend.chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id)
    backend.upload(bundle)
    backend.chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()
    backend.verifier.run_pending()
    backend.indexer.poll()
    return lease_id


def test_a_simulated_report_is_marked_in_every_api_response(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    # As `cvm up` configures its verifier: AMD's roots and the stack's simulated one.
    backend = Backend(store, chain, amd_sp, trusted_roots=[*amd_roots(), amd_sp.ark])
    lease_id = _lease_and_chain_verdict(backend, amd_sp)
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.VERIFIED
    with store.session() as session:
        (stored,) = session.scalars(select(Verification).where(Verification.lease_id == lease_id))
        assert stored.ok and stored.amd_root is AmdRoot.SIMULATED
    attestation = backend.api.get(f"/v1/leases/{lease_id}/attestation").json()
    assert attestation["verification"]["amd_root"] == "simulated"
    assert backend.api.get(f"/v1/leases/{lease_id}").json()["amd_root"] == "simulated"
    listed = backend.api.get("/v1/leases").json()
    assert [lease["amd_root"] for lease in listed if lease["id"] == lease_id] == ["simulated"]
    timeline = backend.api.get(f"/v1/leases/{lease_id}/timeline").json()
    (verified,) = [step for step in timeline["steps"] if step["name"] == "verified"]
    assert verified["at"] is not None and verified["detail"]["amd_root"] == "simulated"
    report_hash = attestation["report_hash"]
    evidence = backend.api.get(f"/v1/evidence/{report_hash}")
    assert evidence.status_code == 200 and evidence.headers[AMD_ROOT_HEADER] == "simulated"


def test_an_unverified_report_names_no_root(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id)
    backend.upload(bundle)
    # Uploaded, not yet verified: nobody has said who signed it.
    evidence = backend.api.get(f"/v1/evidence/0x{bundle.report_hash.hex()}")
    assert evidence.status_code == 200 and AMD_ROOT_HEADER not in evidence.headers
    assert backend.api.get(f"/v1/leases/{lease_id}").json()["amd_root"] is None


def test_the_default_verifier_rejects_the_simulated_amd_sp(
    store: Store,
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,
    local_kds: LocalKds,
    tmp_path: Path,
) -> None:
    # VerifierConfig's default (what `python -m backend` runs without --trust-simulated-amd,
    # as in docker-compose.yml): AMD's pinned roots only; AMD's KDS knows no simulated chip.
    kds = KdsVceks(local_kds.cache(tmp_path / "kds"), base_url=local_kds.url, clock=chain.now)
    backend = Backend(store, chain, amd_sp, trusted_roots=None, kds=kds)
    lease_id = _lease_and_chain_verdict(backend, amd_sp)
    assert len(local_kds.requests) == 1  # asked before rejecting: no VCEK for that chip
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.REJECTED
    attestation = backend.api.get(f"/v1/leases/{lease_id}/attestation").json()
    verification = attestation["verification"]
    assert not verification["ok"] and verification["reason_codes"] == ["UNTRUSTED_ROOT"]
    (error,) = verification["detail"]["errors"]
    assert "simulated AMD-SP" in error and "does not trust" in error
    assert verification["amd_root"] is None
    assert backend.api.get(f"/v1/leases/{lease_id}").json()["amd_root"] is None


def test_the_cli_marks_a_simulated_attestation(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor, tmp_path: Path
) -> None:
    backend = Backend(store, chain, amd_sp)
    lease_id = _lease_and_chain_verdict(backend, amd_sp)
    renter = chain.accounts.renter.address
    with serving(backend.app) as url:
        record = tmp_path / "deployment.json"
        dataclasses.replace(chain.deployment, api_url=url).save(record)
        common = ["--deployment", str(record)]
        shown = cli.invoke(app, ["lease", "show", str(lease_id), *common, "--address", renter])
        assert shown.exit_code == 0, shown.output
        assert "SIMULATED AMD-SP" in shown.output
        as_json = cli.invoke(
            app, ["lease", "show", str(lease_id), *common, "--address", renter, "--json"]
        )
        assert json.loads(as_json.stdout)["attestation"]["amd_root"] == "simulated"
        status = cli.invoke(app, ["attestation", "status", str(lease_id), *common])
        assert status.exit_code == 0, status.output
        assert "SIMULATED AMD-SP" in status.output
        status_json = cli.invoke(app, ["attestation", "status", str(lease_id), *common, "--json"])
        result = json.loads(status_json.stdout)
        assert result["amd_root"] == "simulated"
        assert result["verification"]["amd_root"] == "simulated"
    # Without the backend the chain's answer stands, and claims nothing about the signer.
    quiet = cli.invoke(
        app, ["lease", "show", str(lease_id), *common, "--address", renter, "--json"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["attestation"]["amd_root"] is None


def test_the_cli_says_amd_for_a_report_on_amds_root(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor, tmp_path: Path
) -> None:
    # A verdict recorded as `amd` (real hardware; no AMD chip signs here, so the store is
    # told so directly): the CLI names AMD and shows no SIMULATED marker.
    backend = Backend(store, chain, amd_sp)
    lease_id = _lease_and_chain_verdict(backend, amd_sp)
    with store.session() as session:
        (stored,) = session.scalars(select(Verification).where(Verification.lease_id == lease_id))
        stored.amd_root = AmdRoot.AMD
    with serving(backend.app) as url:
        record = tmp_path / "deployment.json"
        dataclasses.replace(chain.deployment, api_url=url).save(record)
        status = cli.invoke(app, ["attestation", "status", str(lease_id), "--deployment",
                                  str(record)])  # fmt: skip
        assert status.exit_code == 0, status.output
        assert "SIMULATED" not in status.output and "AMD (chains to AMD" in status.output


def test_the_verifier_appraises_the_first_evidence_uploaded_for_a_report(
    store: Store, chain: ChainSystem, amd_sp: SimulatedSecureProcessor
) -> None:
    """Several bundles can carry one report: a node once matched to the lease may upload the
    honest node's report (public once uploaded) with another guest key, under the pending
    nonce. The old verifier took whichever row the database returned first for the report
    hash (no ORDER BY: PostgreSQL reuses freed heap space, so a later row can come first)
    and rejected the honest node's report, slashing it. The first upload is the node's own
    (nobody else has the report before), and is what the renter's client is served too.
    The copy is stored first here to stand in for that reuse; it failed on the old verifier."""
    backend = Backend(store, chain, amd_sp)
    lease_id = chain.active_lease()
    bundle = backend.evidence(amd_sp, lease_id)
    copy = dataclasses.replace(bundle, guest_key=honest_guest_key()).encode()
    backend.indexer.poll()
    with store.session() as session:
        session.add(
            Evidence(
                hash=evidence_rules.evidence_hash(copy),
                report_hash=evidence_rules.report_hash_of(copy),
                content=copy,
                size=len(copy),
                created_at=datetime.now(UTC) + timedelta(hours=1),  # uploaded after the node's
                lease_id=lease_id,
                guest_key_hash=evidence_rules.guest_key_hash(honest_guest_key()),
            )
        )
    result = _verdict(backend, bundle)
    assert result.ok, result.detail
    assert result.evidence_hash == "0x" + bundle.evidence_hash.hex()


# --- a genuine report with the wrong certificates: the chip's VCEK from KDS decides ----------


def _kds_backend(
    store: Store,
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,
    local_kds: LocalKds,
    cache: Path,
) -> Backend:
    """A verifier whose KDS is `local_kds` (backing off 30 s after it fails to answer)."""
    kds = KdsVceks(local_kds.cache(cache), base_url=local_kds.url, clock=chain.now)
    return Backend(store, chain, amd_sp, kds=kds)


def _submitted(backend: Backend, bundle: EvidenceBundle, lease_id: int) -> None:
    backend.upload(bundle)
    backend.chain.submit(lease_id, bundle.report_hash)
    backend.indexer.poll()


def _another_tcb(amd_sp: SimulatedSecureProcessor) -> bytes:
    """The VCEK of the same chip at another TCB (a stale one: before a firmware update)."""
    older = dataclasses.replace(amd_sp.tcb, snp=amd_sp.tcb.snp - 1)
    return SimulatedSecureProcessor(
        amd_sp.product, amd=amd_sp.amd, chip_id=amd_sp.hwid, tcb=older
    ).vcek_der


@pytest.mark.parametrize("certificates", ["garbage", "another_tcb", "no_chain"])
def test_a_genuine_report_with_wrong_certificates_is_verified_with_the_kds_vcek(
    store: Store,
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,
    local_kds: LocalKds,
    tmp_path: Path,
    certificates: str,
) -> None:
    # The bait: a rejection for the bundle's certificates, which the node would overturn on
    # chain with the right VCEK (slashing the verifiers who rejected).
    backend = _kds_backend(store, chain, amd_sp, local_kds, tmp_path / "kds")
    lease_id = chain.active_lease()
    honest = backend.evidence(amd_sp, lease_id)
    vcek = {"garbage": b"\x30\x03not a certificate", "another_tcb": _another_tcb(amd_sp)}
    # "no_chain": the right VCEK without the ASK it chains through.
    bundle = dataclasses.replace(honest, vcek=vcek.get(certificates, honest.vcek), chain=b"")
    local_kds.serve_vcek(amd_sp, bundle.report, amd_sp.vcek_der)
    _submitted(backend, bundle, lease_id)
    (result,) = backend.verifier.run_pending()
    assert result.ok and result.reason_codes == [], result.detail
    assert "KDS" in result.detail["kds"] and result.confirm_tx is not None
    assert result.amd_root is AmdRoot.SIMULATED
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.VERIFIED
    assert len(local_kds.requests) == 1


def test_kds_down_leaves_the_report_unvoted_and_it_is_checked_again_later(
    store: Store,
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,
    local_kds: LocalKds,
    tmp_path: Path,
) -> None:
    backend = _kds_backend(store, chain, amd_sp, local_kds, tmp_path / "kds")
    lease_id = chain.active_lease()
    bundle = dataclasses.replace(
        backend.evidence(amd_sp, lease_id), vcek=_another_tcb(amd_sp), chain=b""
    )
    local_kds.serve_vcek(amd_sp, bundle.report, amd_sp.vcek_der)
    local_kds.down = True
    _submitted(backend, bundle, lease_id)
    # No vote, nothing stored: the registry counts no verifier that did not vote.
    assert backend.verifier.run_pending() == []
    assert backend.verifier.run_pending() == []  # backing off: KDS is not asked again yet
    assert len(local_kds.requests) == 1
    with store.session() as session:
        assert session.scalars(select(Verification)).all() == []
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.PENDING
    local_kds.down = False
    chain.advance(31)  # past the first backoff
    (result,) = backend.verifier.run_pending()
    assert result.ok and result.confirm_tx is not None, result.detail
    assert len(local_kds.requests) == 2
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.VERIFIED


def test_a_report_the_kds_vcek_does_not_verify_is_rejected(
    store: Store,
    chain: ChainSystem,
    amd_sp: SimulatedSecureProcessor,
    local_kds: LocalKds,
    tmp_path: Path,
) -> None:
    # KDS's VCEK for the report's chip is another chip's key (as for a report forged for a
    # chip id): AMD certified no key that signed this report.
    backend = _kds_backend(store, chain, amd_sp, local_kds, tmp_path / "kds")
    lease_id = chain.active_lease()
    bundle = dataclasses.replace(
        backend.evidence(amd_sp, lease_id), vcek=b"\x30\x03not a certificate", chain=b""
    )
    other_chip = SimulatedSecureProcessor(amd_sp.product, amd=amd_sp.amd)
    local_kds.serve_vcek(amd_sp, bundle.report, other_chip.vcek_der)
    _submitted(backend, bundle, lease_id)
    (result,) = backend.verifier.run_pending()
    assert not result.ok and result.reason_codes == ["SIGNATURE_INVALID"], result.detail
    assert "does not verify the report" in result.detail["kds"]
    assert chain.client().attestations.attestation_of(lease_id).status == AttestationStatus.REJECTED
