"""Disputes off chain, on the store: the indexed `AttestationDisputed` (projection, reorg
rebuild, the API's view with the window's end), and the watcher's decisions (dispute a wrong
verdict once, never a right one, keep the bond where the EVM cannot decide, bounded work).
The chain is faked here; tests/integration/backend/test_watcher.py runs it on a real one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.domain.evidence import guest_key_hash
from backend.indexer import projections
from backend.indexer.dispute_windows import DisputeWindows
from backend.store import (
    Attestation,
    ChainEvent,
    Dispute,
    DisputeCheck,
    Evidence,
    Store,
)
from backend.verifier import Verifier, VerifierConfig, Watcher
from cvm.api_models import AttestationState, LeaseState
from cvm.attestation import EvidenceBundle, SimulatedSecureProcessor, build_report_data
from cvm.attestation.binding import GuestKey, host_data
from cvm.attestation.sim import SimulatedAmd
from cvm.chain.errors import ChainError, ContractRevert
from cvm.disputes import DisputeCertificates, DisputeEvidenceError
from node_agent.launcher.signer import simulated_guest_key
from tests.unit.backend.factories import Clock, add_lease

CHAIN_ID = 31337
REGISTRY = "0x" + "33" * 20
RENTER = "0x" + "44" * 20
MEASUREMENT = bytes.fromhex("ab" * 48)
WINDOW_S = 86_400
CACHE_S = 60  # more than the API caches an attestation status for

_honest: SimulatedSecureProcessor | None = None


def honest_sp() -> SimulatedSecureProcessor:
    """One simulated chip whose root the verifier trusts (made once: RSA keys are slow)."""
    global _honest
    if _honest is None:
        _honest = SimulatedSecureProcessor("Milan")
    return _honest


def forger_sp() -> SimulatedSecureProcessor:
    """A chip under another (untrusted) root claiming the honest chip's id: a forgery."""
    honest = honest_sp()
    return SimulatedSecureProcessor(
        "Milan", amd=SimulatedAmd(rsa_key_size=2048), chip_id=honest.hwid
    )


class World:
    """A store holding what the indexer would have for leases with decided attestations."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.block = 10
        self.verifier = Verifier(
            store,
            lambda *_args: "0x" + "00" * 32,
            VerifierConfig(CHAIN_ID, REGISTRY, trusted_roots=[honest_sp().ark]),
            clock=clock,
        )
        self.sent: list[tuple[int, str]] = []

    def event(self, name: str, lease_id: int, **args: Any) -> ChainEvent:
        self.block += 1
        event = ChainEvent(
            block_number=self.block,
            block_hash="0x" + f"{self.block:064x}",
            log_index=0,
            tx_hash="0x" + f"{self.block:064x}",
            contract="AttestationRegistry",
            name=name,
            block_timestamp=int(self.clock()),
            lease_id=lease_id,
            node=None,
            args={"leaseId": lease_id, **args},
        )
        with self.store.session() as session:
            session.add(event)
            session.flush()
            projections.apply(session, event)
        return event

    def decided(
        self,
        lease_id: int,
        verdict: AttestationState,
        *,
        sp: SimulatedSecureProcessor | None = None,
        measurement: bytes = MEASUREMENT,
        mask_chip_id: bool = False,
        tamper: Callable[[EvidenceBundle], EvidenceBundle] | None = None,
    ) -> EvidenceBundle:
        """A lease whose node submitted a report of `sp` and whose verdict is `verdict`
        (the evidence as `tamper` makes it, if given)."""
        add_lease(
            self.store, lease_id, RENTER, status=LeaseState.ACTIVE, node="0x" + "55" * 20,
            expected_measurement="0x" + MEASUREMENT.hex(),
        )  # fmt: skip
        key = simulated_guest_key()
        signer = GuestKey.parse(key).signer
        chip = sp or honest_sp()
        signed = chip.attest(
            measurement=measurement,
            report_data=build_report_data(CHAIN_ID, REGISTRY, lease_id, 0, key),
            host_data=host_data(CHAIN_ID, REGISTRY, lease_id, RENTER),
            mask_chip_id=mask_chip_id,
        )
        bundle = EvidenceBundle(
            signed.report, signed.vcek_der, signed.chain_pem, CHAIN_ID, REGISTRY, lease_id, 0, key
        )
        if tamper is not None:
            bundle = tamper(bundle)
        report_hash = "0x" + bundle.report_hash.hex()
        raw = bundle.encode()
        with self.store.session() as session:
            session.add(
                Evidence(
                    hash="0x" + keccak(raw).hex(),
                    report_hash=report_hash,
                    content=raw,
                    size=len(raw),
                    created_at=self.clock.datetime(),
                    lease_id=lease_id,
                    guest_key_hash=None,
                )
            )
        self.event(
            "AttestationSubmitted", lease_id, node="0x" + "55" * 20,
            reportHash=report_hash, measurement="0x" + MEASUREMENT.hex(),
        )  # fmt: skip
        self.event("AttestationEvidence", lease_id, nonce=0, signer=signer.lower())
        name = (
            "AttestationVerified" if verdict == AttestationState.VERIFIED else "AttestationRejected"
        )
        self.event(name, lease_id, reportHash=report_hash)
        DisputeWindows(self.store, lambda _lease, _hash: int(self.clock()) + WINDOW_S).run()
        return bundle

    def watcher(
        self,
        *,
        send: Callable[[int, EvidenceBundle, DisputeCertificates], str] | None = None,
        preview: Callable[[int, EvidenceBundle, DisputeCertificates], bool | None] | None = None,
        per_tick: int = 8,
    ) -> Watcher:
        def sent(lease_id: int, bundle: EvidenceBundle, certs: DisputeCertificates) -> str:
            assert certs.signer == bundle.vcek
            self.sent.append((lease_id, "0x" + bundle.report_hash.hex()))
            return "0x" + f"{len(self.sent):064x}"

        def certificates(bundle: EvidenceBundle) -> DisputeCertificates:
            return DisputeCertificates(bundle.vcek, b"ask", honest_sp().ark)

        return Watcher(
            self.store,
            self.verifier,
            send or sent,
            certificates=certificates,
            address="0x" + "77" * 20,
            clock=self.clock,
            preview=preview,
            per_tick=per_tick,
        )

    def checks(self) -> list[DisputeCheck]:
        with self.store.session() as session:
            return list(session.scalars(select(DisputeCheck).order_by(DisputeCheck.lease_id)))


@pytest.fixture
def world(store: Store, clock: Clock) -> World:
    return World(store, clock)


def test_a_verified_forgery_is_disputed_once(world: World) -> None:
    bundle = world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    watcher = world.watcher()
    (result,) = watcher.run()
    assert result.action == "dispute" and result.dispute_tx is not None
    assert world.sent == [(1, "0x" + bundle.report_hash.hex())]
    (check,) = world.checks()
    assert check.ok is False and "UNTRUSTED_ROOT" in check.reason_codes
    assert check.dispute_tx == result.dispute_tx and check.verdict == AttestationState.VERIFIED
    # Idempotent: checked once; the next passes do nothing.
    assert watcher.run() == [] and len(world.sent) == 1


def test_a_right_verdict_is_not_disputed(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED)  # genuine, and Verified: right
    world.decided(2, AttestationState.REJECTED, measurement=b"\x01" * 48)  # wrong code: right
    results = world.watcher().run()
    assert [r.action for r in results] == ["agree", "agree"]
    assert world.sent == []
    assert [c.action for c in world.checks()] == ["agree", "agree"]


def test_a_genuine_report_wrongly_rejected_is_disputed(world: World) -> None:
    world.decided(1, AttestationState.REJECTED)
    (result,) = world.watcher().run()
    assert result.action == "dispute"
    assert world.sent and world.sent[0][0] == 1


def test_a_disagreement_the_evm_cannot_decide_keeps_the_bond(world: World) -> None:
    """A guest key another live lease claimed first: the off-chain check rejects it, but the
    EVM sees one lease only: a dispute would lose its bond."""
    first = world.decided(1, AttestationState.VERIFIED)
    # Lease 2's evidence reuses lease 1's guest key (its report binds the same key).
    second = world.decided(2, AttestationState.VERIFIED)
    del first
    with world.store.session() as session:
        for lease_id in (1, 2):
            row = session.scalar(select(Evidence).where(Evidence.lease_id == lease_id))
            assert row is not None
            row.guest_key_hash = guest_key_hash(second.guest_key)  # both name one key
    results = {r.lease_id: r for r in world.watcher().run()}
    assert results[1].action == "agree"
    assert results[2].action == "not_disputable"
    assert world.sent == []


def test_a_dispute_the_registry_would_lose_is_not_sent(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    (result,) = world.watcher(preview=lambda *_: False).run()
    assert result.action == "not_disputable" and world.sent == []


def test_evidence_without_acceptable_certificates_is_not_disputed(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())

    def refuse(*_args: Any) -> bool:
        raise DisputeEvidenceError("no genuine VCEK")

    (result,) = world.watcher(preview=refuse).run()
    assert result.action == "not_disputable" and "no genuine VCEK" in (result.error or "")


def test_a_refused_dispute_is_recorded_and_not_retried(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    calls = []

    def refused(*args: Any) -> str:
        calls.append(args)
        raise ChainError("AttestationRegistry_AlreadySettled(leaseId=1)")

    watcher = world.watcher(send=refused)
    (result,) = watcher.run()
    assert result.action == "missed" and "AlreadySettled" in (result.error or "")
    assert watcher.run() == [] and len(calls) == 1


def test_a_dispute_that_cannot_be_paid_yet_is_retried(world: World) -> None:
    """No tokens for the bond (or the chain unreachable): nothing is recorded, the next pass
    tries again, and disputes once it can."""
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    broke = True

    def preview(*_args: Any) -> bool:
        if broke:
            raise ContractRevert("ERC20InsufficientBalance", {"balance": 0})
        return True

    watcher = world.watcher(preview=preview)
    (result,) = watcher.run()
    assert result.action == "retry" and world.checks() == [] and world.sent == []
    broke = False
    (result,) = watcher.run()
    assert result.action == "dispute" and len(world.sent) == 1


def test_a_dispute_the_court_refuses_is_not_sent(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())

    def refused(*_args: Any) -> bool:
        raise ContractRevert("AttestationCourt_Inconclusive", {"leaseId": 1, "reason": 6})

    (result,) = world.watcher(preview=refused).run()
    assert result.action == "not_disputable" and "Inconclusive" in (result.error or "")
    assert world.sent == []


def test_work_per_pass_is_bounded_oldest_window_first(world: World) -> None:
    for lease_id in (1, 2, 3):
        world.decided(lease_id, AttestationState.VERIFIED, sp=forger_sp())
        world.clock.advance(10)
    watcher = world.watcher(per_tick=2)
    assert [r.lease_id for r in watcher.run()] == [1, 2]
    assert [r.lease_id for r in watcher.run()] == [3]
    assert watcher.run() == []


def test_closed_windows_and_disputed_verdicts_are_left_alone(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    bundle = world.decided(2, AttestationState.VERIFIED, sp=forger_sp())
    world.event(
        "AttestationDisputed", 2, reportHash="0x" + bundle.report_hash.hex(),
        disputer="0x" + "88" * 20, overturned=True,
    )  # fmt: skip
    world.clock.advance(WINDOW_S + 1)  # lease 1's window closed
    assert world.watcher().run() == []


def test_a_crash_before_sending_is_sent_on_the_next_pass(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED, sp=forger_sp())

    def crash(*_args: Any) -> str:
        raise RuntimeError("the process died here")

    with pytest.raises(RuntimeError):
        world.watcher(send=crash).run()
    (check,) = world.checks()
    assert check.action == "dispute" and check.dispute_tx is None
    (result,) = world.watcher().run()
    assert result.dispute_tx is not None and len(world.sent) == 1


# --- the indexed dispute and the API ----------------------------------------------------------


def test_an_overturned_verified_verdict_reads_rejected_with_its_dispute(
    world: World, client: TestClient
) -> None:
    bundle = world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    report_hash = "0x" + bundle.report_hash.hex()
    before = client.get("/v1/leases/1/attestation").json()
    assert before["status"] == "verified" and before["dispute"] is None
    assert before["dispute_window_ends_at"] == int(world.clock()) + WINDOW_S
    assert before["decided_at"] == int(world.clock())
    world.event(
        "AttestationDisputed", 1, reportHash=report_hash, disputer="0x" + "88" * 20,
        overturned=True,
    )  # fmt: skip
    world.clock.advance(CACHE_S)  # past the API's short cache of the attestation status
    after = client.get("/v1/leases/1/attestation").json()
    assert after["status"] == "rejected"
    assert after["dispute"]["overturned"] is True
    assert after["dispute"]["verdict"] == "verified"
    assert after["dispute"]["disputer"].lower() == "0x" + "88" * 20
    assert after["dispute_window_ends_at"] == before["dispute_window_ends_at"]


def test_an_upheld_verdict_keeps_its_status(world: World, client: TestClient) -> None:
    bundle = world.decided(1, AttestationState.VERIFIED)
    world.event(
        "AttestationDisputed", 1, reportHash="0x" + bundle.report_hash.hex(),
        disputer="0x" + "88" * 20, overturned=False,
    )  # fmt: skip
    view = client.get("/v1/leases/1/attestation").json()
    assert view["status"] == "verified" and view["dispute"]["overturned"] is False


def test_an_overturned_rejection_reads_verified(world: World, client: TestClient) -> None:
    bundle = world.decided(1, AttestationState.REJECTED)
    world.event(
        "AttestationDisputed", 1, reportHash="0x" + bundle.report_hash.hex(),
        disputer="0x" + "88" * 20, overturned=True,
    )  # fmt: skip
    view = client.get("/v1/leases/1/attestation").json()
    assert view["status"] == "verified" and view["verified_at"] is not None
    assert view["dispute"]["verdict"] == "rejected"


def test_a_reorg_rebuild_keeps_only_the_disputes_still_on_chain(world: World) -> None:
    bundle = world.decided(1, AttestationState.VERIFIED, sp=forger_sp())
    disputed = world.event(
        "AttestationDisputed", 1, reportHash="0x" + bundle.report_hash.hex(),
        disputer="0x" + "88" * 20, overturned=True,
    )  # fmt: skip
    with world.store.session() as session:
        session.delete(session.get(ChainEvent, disputed.id))
        session.flush()
        projections.rebuild_lease(session, 1)
    with world.store.session() as session:
        assert session.scalars(select(Dispute)).all() == []
        attestation = session.get(Attestation, 1)
        assert attestation is not None and attestation.status == AttestationState.VERIFIED
        # Read from the registry again on the next pass.
        assert attestation.disputable_until is None


def test_dispute_windows_are_read_once_per_submission(world: World) -> None:
    world.decided(1, AttestationState.VERIFIED)
    reads: list[int] = []

    def read(lease_id: int, _hash: bytes) -> int:
        reads.append(lease_id)
        return 123

    with world.store.session() as session:
        attestation = session.get(Attestation, 1)
        assert attestation is not None
        attestation.disputable_until = None
    windows = DisputeWindows(world.store, read)
    assert windows.run() == 1 and windows.run() == 0 and reads == [1]


def test_a_submission_without_a_window_is_asked_once(world: World, client: TestClient) -> None:
    world.decided(1, AttestationState.VERIFIED)
    reads: list[int] = []

    def unknown(lease_id: int, _hash: bytes) -> None:
        reads.append(lease_id)
        return None

    with world.store.session() as session:
        attestation = session.get(Attestation, 1)
        assert attestation is not None
        attestation.disputable_until = None
    windows = DisputeWindows(world.store, unknown)
    assert windows.run() == 1 and windows.run() == 0 and reads == [1]
    assert client.get("/v1/leases/1/attestation").json()["dispute_window_ends_at"] is None
    assert world.watcher().run() == []


def test_a_deployment_without_disputes_shows_no_window(client: TestClient, store: Store) -> None:
    add_lease(store, 5, RENTER)
    view = client.get("/v1/leases/5/attestation").json()
    assert view["dispute_window_ends_at"] is None and view["dispute"] is None
