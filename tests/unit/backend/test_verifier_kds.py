"""The chip's VCEK from AMD's KDS before a rejection or a dispute on certificates: a local
KDS on a free port (tests/fixtures/kds.py) serves the simulated chips' VCEKs. What cannot be
decided (KDS silent, a VLEK, a masked CHIP_ID, a genuine VCEK out of its dates) is never
voted Rejected; KDS itself is backed off while it does not answer. The verifier's votes on a
real chain are in tests/integration/backend/test_verifier.py."""

from __future__ import annotations

import dataclasses
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.store import Attestation, Evidence, Lease, Store
from backend.verifier import Judgement, KdsVceks, Verifier, VerifierConfig
from backend.verifier.watcher import RETRY
from cvm.api_models import AttestationState
from cvm.attestation import EvidenceBundle, SigningKey, parse
from cvm.attestation.errors import KdsError, KdsNotFound
from cvm.attestation.kds import CachingKds, HttpKds, KdsRateLimit
from cvm.attestation.sim import SimulatedSecureProcessor
from tests.fixtures.kds import LocalKds
from tests.unit.backend.factories import Clock
from tests.unit.backend.test_disputes import CHAIN_ID, REGISTRY, World, honest_sp

GARBAGE = b"\x30\x03not a certificate"


def _garbage_vcek(bundle: EvidenceBundle) -> EvidenceBundle:
    return dataclasses.replace(bundle, vcek=GARBAGE, chain=b"")


def _kds(local_kds: LocalKds, tmp_path: Path, clock: Clock) -> KdsVceks:
    return KdsVceks(local_kds.cache(tmp_path / "kds"), base_url=local_kds.url, clock=clock)


def _verifier(world: World, kds: KdsVceks | None) -> Verifier:
    """The world's verifier with a KDS (its chips' ASK checks the VCEKs KDS serves)."""
    chip = honest_sp()
    world.verifier = Verifier(
        world.store,
        lambda *_args: "0x" + "00" * 32,
        VerifierConfig(
            CHAIN_ID, REGISTRY, trusted_roots=[chip.ark], trusted_intermediates=(chip.ask,)
        ),
        clock=world.clock,
        kds=kds,
    )
    return world.verifier


def _judge(store: Store, verifier: Verifier, lease_id: int) -> Judgement:
    with store.session() as session:
        lease = session.get(Lease, lease_id)
        attestation = session.get(Attestation, lease_id)
        evidence = session.scalar(select(Evidence).where(Evidence.lease_id == lease_id))
        assert lease is not None and attestation is not None and evidence is not None
        return verifier.appraise(session, lease, attestation, evidence.content)


@pytest.fixture
def world(store: Store, clock: Clock) -> World:
    return World(store, clock)


# --- the KDS client the verifier uses -------------------------------------------------------


def test_kds_is_backed_off_while_it_does_not_answer_and_not_when_it_says_none(
    local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    chip = honest_sp()
    report = chip.attest().report
    kds = _kds(local_kds, tmp_path, clock)
    with pytest.raises(KdsNotFound):  # an answer: asked again at once
        kds(parse(report), chip.product)
    with pytest.raises(KdsNotFound):
        kds(parse(report), chip.product)
    assert len(local_kds.requests) == 2
    local_kds.serve_vcek(chip, report, chip.vcek_der)
    local_kds.down = True
    with pytest.raises(KdsError) as down:
        kds(parse(report), chip.product)
    assert not isinstance(down.value, KdsNotFound)
    with pytest.raises(KdsError, match="next try in 30 s"):
        kds(parse(report), chip.product)  # backing off: not asked
    assert len(local_kds.requests) == 3
    local_kds.down = False
    clock.advance(31)
    assert kds(parse(report), chip.product) == chip.vcek_der
    local_kds.down = True
    assert kds(parse(report), chip.product) == chip.vcek_der  # the cache, without asking
    assert len(local_kds.requests) == 4


def test_an_unreachable_kds_is_a_kds_error_and_backs_off_doubling(
    tmp_path: Path, clock: Clock
) -> None:
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = CachingKds(tmp_path / "kds", HttpKds(timeout=2.0, rate_limit=KdsRateLimit(0.0)))
    kds = KdsVceks(cache, base_url=f"http://127.0.0.1:{port}", clock=clock)
    chip = honest_sp()
    report = parse(chip.attest().report)
    with pytest.raises(KdsError, match="KDS request failed"):
        kds(report, chip.product)
    clock.advance(31)
    with pytest.raises(KdsError, match="KDS request failed"):
        kds(report, chip.product)
    with pytest.raises(KdsError, match="next try in 60 s"):
        kds(report, chip.product)


# --- what the verifier makes of certificate failures ----------------------------------------


def test_a_genuine_report_with_a_garbage_vcek_is_judged_with_the_kds_one(
    world: World, local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    bundle = world.decided(1, AttestationState.VERIFIED, tamper=_garbage_vcek)
    local_kds.serve_vcek(honest_sp(), bundle.report, honest_sp().vcek_der)
    judged = _judge(world.store, _verifier(world, _kds(local_kds, tmp_path, clock)), 1)
    assert judged.ok and judged.undecided is None and judged.reasons == []
    assert "verified with the VCEK AMD's KDS serves" in judged.detail["kds"]


def test_kds_with_no_vcek_for_the_chip_decides_a_rejection(
    world: World, local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    world.decided(1, AttestationState.VERIFIED, tamper=_garbage_vcek)
    judged = _judge(world.store, _verifier(world, _kds(local_kds, tmp_path, clock)), 1)
    assert not judged.ok and judged.undecided is None
    assert judged.reasons == ["MALFORMED_CERTIFICATE"]
    assert "AMD's KDS has no VCEK for Milan chip" in judged.detail["kds"]


def test_a_conclusive_failure_of_the_report_itself_does_not_ask_kds(
    world: World, local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    world.decided(1, AttestationState.VERIFIED, measurement=b"\x01" * 48)
    judged = _judge(world.store, _verifier(world, _kds(local_kds, tmp_path, clock)), 1)
    assert not judged.ok and judged.reasons == ["MEASUREMENT_MISMATCH"]
    assert "kds" not in judged.detail
    assert local_kds.requests == []


def test_what_no_certificate_can_decide_is_left_undecided(
    world: World, local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    chip = honest_sp()
    vlek = SimulatedSecureProcessor(chip.product, amd=chip.amd, signer=SigningKey.VLEK)
    expired = SimulatedSecureProcessor(
        chip.product,
        amd=chip.amd,
        not_before=datetime.now(UTC) - timedelta(days=10),
        validity=timedelta(days=1),
    )
    world.decided(1, AttestationState.VERIFIED, sp=vlek, tamper=_garbage_vcek)
    world.decided(2, AttestationState.VERIFIED, mask_chip_id=True, tamper=_garbage_vcek)
    stale = world.decided(3, AttestationState.VERIFIED, sp=expired, tamper=_garbage_vcek)
    local_kds.serve_vcek(expired, stale.report, expired.vcek_der)
    verifier = _verifier(world, _kds(local_kds, tmp_path, clock))
    judged = {lease: _judge(world.store, verifier, lease) for lease in (1, 2, 3)}
    assert all(j.undecided is not None and not j.retry for j in judged.values())
    assert "VLEK" in (judged[1].undecided or "")
    assert "masked" in (judged[2].undecided or "")
    assert "out of its dates" in (judged[3].undecided or "")
    assert len(local_kds.requests) == 1  # only the chip whose VCEK can be located
    # Without a KDS nothing failing on certificates is decided either.
    assert _judge(world.store, _verifier(world, None), 3).undecided is not None


def test_an_undecided_report_is_not_voted(
    world: World, local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    world.decided(1, AttestationState.VERIFIED, tamper=_garbage_vcek)
    with world.store.session() as session:  # as if still awaiting the verifiers
        row = session.get(Attestation, 1)
        assert row is not None
        row.status = AttestationState.PENDING
    votes: list[tuple[int, bool]] = []
    local_kds.down = True
    verifier = _verifier(world, _kds(local_kds, tmp_path, clock))

    def confirm(lease_id: int, _report_hash: bytes, ok: bool) -> str:
        votes.append((lease_id, ok))
        return "0x" + "11" * 32

    verifier.confirm = confirm
    assert verifier.run_pending() == [] and votes == []
    local_kds.down = False
    local_kds.serve_vcek(honest_sp(), world_report(world, 1), honest_sp().vcek_der)
    clock.advance(31)
    (result,) = verifier.run_pending()
    assert result.ok and votes == [(1, True)]


def world_report(world: World, lease_id: int) -> bytes:
    with world.store.session() as session:
        evidence = session.scalar(select(Evidence).where(Evidence.lease_id == lease_id))
        assert evidence is not None
        return EvidenceBundle.decode(evidence.content).report


# --- the watcher -----------------------------------------------------------------------------


def test_the_watcher_does_not_dispute_on_certificates_before_kds_answers(
    world: World, local_kds: LocalKds, tmp_path: Path, clock: Clock
) -> None:
    # Verified, with another chip's VCEK in the bundle (SIGNATURE_INVALID under it, which
    # the EVM checks): genuine all the same, as the chip's own VCEK shows.
    other = SimulatedSecureProcessor(honest_sp().product, amd=honest_sp().amd)
    bundle = world.decided(
        1,
        AttestationState.VERIFIED,
        tamper=lambda b: dataclasses.replace(b, vcek=other.vcek_der),
    )
    world.decided(2, AttestationState.VERIFIED)  # genuine, with its own VCEK
    local_kds.down = True
    _verifier(world, _kds(local_kds, tmp_path, clock))
    watcher = world.watcher(per_tick=1)
    (result,) = watcher.run()
    assert result.lease_id == 1 and result.action == RETRY and "KDS" in (result.error or "")
    assert world.sent == [] and world.checks() == []
    # The one waiting for KDS does not take the pass's only place from the others.
    (result,) = watcher.run()
    assert result.lease_id == 2 and result.action == "agree"
    assert watcher.run() == []
    local_kds.down = False
    local_kds.serve_vcek(honest_sp(), bundle.report, honest_sp().vcek_der)
    clock.advance(61)  # past KDS's backoff and the watcher's wait
    (result,) = watcher.run()
    assert result.lease_id == 1 and result.action == "agree" and world.sent == []
    assert [(c.lease_id, c.ok, c.action) for c in world.checks()] == [
        (1, True, "agree"),
        (2, True, "agree"),
    ]
