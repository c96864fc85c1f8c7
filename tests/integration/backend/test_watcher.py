"""The watcher on a real anvil with the real contracts (SnpVerifier pinning a simulated AMD's
ARK, the attestation court) and a real backend: a colluding verifier key decides a verdict
alone (quorum 1), the honest verifier's backend re-checks it and disputes a wrong one, and
the EVM reverses it; a right verdict is left alone. Also `cvm attestation dispute`, by hand.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from backend.service import BackendService
from backend.store import DisputeCheck
from cvm.api_models import NODE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cvm.attestation import EvidenceBundle, SimulatedSecureProcessor, build_report_data
from cvm.attestation.binding import GuestKey, host_data
from cvm.attestation.kds import CachingKds, vcek_url
from cvm.attestation.onchain import der
from cvm.attestation.sim import SimulatedAmd
from cvm.chain import Anvil, AttestationStatus, ChainClient, Deployment, LeaseStatus, deploy
from cvm.chain.key_service import KeyPolicy
from cvm.chain.node_consent import sign_node_consent
from cvm.cli import app
from cvm.config import Settings
from cvm.eip712 import Domain, EvidenceUpload, sign_node_message
from cvm.wallet import import_keystore
from node_agent.launcher.signer import simulated_guest_key
from tests.fixtures.chain import (
    CONFIG,
    LEASE_SPEC,
    MAX_PRICE,
    NODE_SPEC,
    STAKE,
    TOKEN,
    staked_holder,
)
from tests.fixtures.processes import serving

pytestmark = pytest.mark.integration

MEASUREMENT = CONFIG.example_measurement
cli = CliRunner()


@dataclass(frozen=True)
class Roles:
    deployer: LocalAccount
    operator: LocalAccount
    node: LocalAccount
    renter: LocalAccount
    colluder: LocalAccount  # a verifier key that votes whatever it is paid to
    honest: LocalAccount  # the verifier key of the backend under test
    disputer: LocalAccount  # anyone, by hand (the CLI)


@dataclass(frozen=True)
class Court:
    anvil: Anvil
    deployment: Deployment
    roles: Roles
    chip: SimulatedSecureProcessor  # a chip of the simulated AMD the SnpVerifier pins
    forger: SimulatedSecureProcessor  # a key under another root, claiming that chip's id

    def client(self, account: LocalAccount | None = None) -> ChainClient:
        return ChainClient(self.anvil.w3, self.deployment, account)

    def lease(self) -> int:
        """A lease the node accepted."""
        renter = self.client(self.roles.renter)
        lease_id = renter.leases.create_lease(
            LEASE_SPEC, MAX_PRICE, 10 * TOKEN, MEASUREMENT
        ).lease_id
        self.client(self.roles.node).leases.accept_lease(lease_id)
        return lease_id

    def evidence(self, lease_id: int, *, forged: bool = False) -> EvidenceBundle:
        """What the node's guest reports (bound to the lease, its nonce, key and renter)."""
        nonce = self.client().attestations.attestation_nonce(lease_id)
        key = simulated_guest_key()
        registry = self.deployment.attestation_registry
        signed = (self.forger if forged else self.chip).attest(
            measurement=MEASUREMENT,
            report_data=build_report_data(self.deployment.chain_id, registry, lease_id, nonce, key),
            host_data=host_data(
                self.deployment.chain_id, registry, lease_id, self.roles.renter.address
            ),
        )
        return EvidenceBundle(signed.report, signed.vcek_der, signed.chain_pem,
                              self.deployment.chain_id, registry, lease_id, nonce, key)  # fmt: skip

    def submit(self, bundle: EvidenceBundle) -> None:
        node = self.client(self.roles.node)
        node.attestations.submit(
            bundle.lease_id, bundle.nonce, bundle.report_hash, MEASUREMENT, 7, b"\xcc" * 32,
            signer=GuestKey.parse(bundle.guest_key).signer,
        )  # fmt: skip

    def vote(self, lease_id: int, report_hash: bytes, ok: bool) -> None:
        self.client(self.roles.colluder).attestations.confirm(lease_id, report_hash, ok)

    def stake_of(self, verifier: str) -> int:
        court = self.client().court
        assert court is not None
        return court.stake_of(verifier).stake


@pytest.fixture(scope="module")
def sim_amd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the simulated AMD keeps its roots (as a local stack's CVM_SIM_AMD_DIR)."""
    return tmp_path_factory.mktemp("sim-amd")


@pytest.fixture(scope="module")
def court_system(anvil: Anvil, sim_amd_dir: Path) -> Court:
    accounts = [anvil.dev_account(i) for i in range(10)]
    roles = Roles(accounts[0], accounts[1], accounts[2], accounts[3], accounts[4], accounts[6],
                  accounts[7])  # fmt: skip
    chip = SimulatedSecureProcessor("Milan", amd=SimulatedAmd(sim_amd_dir))
    forger = SimulatedSecureProcessor(
        "Milan", amd=SimulatedAmd(rsa_key_size=2048), chip_id=chip.hwid
    )
    config = replace(
        CONFIG,
        verifiers=[roles.colluder.address, roles.honest.address],
        snp_ark_certificates=[der(chip.ark)],
    )
    deployment = deploy(anvil.w3, roles.deployer, config, rpc_url=anvil.rpc_url)
    system = Court(anvil, deployment, roles, chip, forger)
    # `deploy` staked both verifiers in the court; the others need tokens to lease, and the
    # honest verifier and the disputer for their bonds.
    assert deployment.attestation_court is not None
    for account in (roles.operator, roles.renter, roles.honest, roles.disputer):
        client = system.client(account)
        client.token.mint(account.address, 1_000_000 * TOKEN)
        for spender in (deployment.node_registry, deployment.lease_market):
            client.token.approve(spender, 2**256 - 1)
    operator = system.client(roles.operator)
    consent = sign_node_consent(roles.node, roles.operator.address, deployment)
    operator.nodes.register(roles.node.address, NODE_SPEC, "", node_key_signature=consent)
    operator.nodes.stake(roles.node.address, STAKE)
    return system


@pytest.fixture
def system(court_system: Court) -> Iterator[Court]:
    snapshot = court_system.anvil.snapshot()
    try:
        yield court_system
    finally:
        court_system.anvil.revert(snapshot)


class HonestBackend:
    """The honest verifier's backend: its API, indexer, verifier and watcher, stepped by hand."""

    def __init__(self, system: Court, tmp_path: Path) -> None:
        self.system = system
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'backend.db'}",
            broker_url="memory://",
            rpc_url=system.anvil.rpc_url,
            indexer_confirmations=0,
            image_dir=tmp_path / "images",
            verifier_challenge_stale_s=0,  # no heartbeats here: no liveness challenges
        )
        # The chip's genuine VCEK, as AMD's KDS serves it (the cache is what a verifier keeps).
        kds = CachingKds(settings.data_dir / "kds-cache")
        probe = system.chip.attest()
        from cvm.attestation import parse

        kds.store(vcek_url(parse(probe.report), system.chip.product), system.chip.vcek_der)
        self.service = BackendService(
            settings,
            system.deployment,
            system.anvil.w3,
            dispatch=lambda _lease, _node: None,
            verifier_account=system.roles.honest,
            trusted_roots=[system.chip.ark],
            trusted_intermediates=[system.chip.ask],
        )
        self.api = TestClient(self.service.app)

    def step(self) -> Any:
        return self.service.step()

    def upload(self, bundle: EvidenceBundle) -> None:
        self.step()  # the backend takes evidence only for a lease it indexed
        raw = bundle.encode()
        node = self.system.roles.node
        upload = EvidenceUpload(node.address, bundle.lease_id, bundle.nonce, bytes(keccak(raw)),
                                int(time.time()))  # fmt: skip
        domain = Domain(self.system.deployment.chain_id, self.system.deployment.node_registry)
        headers = {
            NODE_HEADER: node.address,
            TIMESTAMP_HEADER: str(upload.timestamp),
            SIGNATURE_HEADER: sign_node_message(upload, domain, node.key),
        }
        response = self.api.post("/v1/evidence", content=raw, headers=headers)
        assert response.status_code == 201, response.text

    def status(self, lease_id: int) -> dict[str, Any]:
        time.sleep(self.service.settings.api_attestation_cache_s)  # past the status cache
        response = self.api.get(f"/v1/leases/{lease_id}/attestation")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def checks(self) -> list[DisputeCheck]:
        with self.service.store.session() as session:
            return list(session.query(DisputeCheck).order_by(DisputeCheck.lease_id))

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def backend(system: Court, tmp_path: Path) -> Iterator[HonestBackend]:
    honest = HonestBackend(system, tmp_path)
    try:
        yield honest
    finally:
        honest.close()


def _decided(system: Court, backend: HonestBackend, *, forged: bool, ok: bool) -> EvidenceBundle:
    """A lease whose report the colluder decided alone, before the honest verifier voted."""
    lease_id = system.lease()
    bundle = system.evidence(lease_id, forged=forged)
    backend.upload(bundle)
    system.submit(bundle)
    system.vote(lease_id, bundle.report_hash, ok)
    return bundle


def test_a_forged_report_verified_by_a_colluder_is_disputed_and_reversed(
    system: Court, backend: HonestBackend
) -> None:
    """A report signed by a key AMD never certified, naming a real chip: the colluder votes
    Verified; the honest watcher disputes with the chip's genuine VCEK and the EVM reverses
    the verdict, slashing the colluder. Without the watcher the Verified verdict would stand."""
    bundle = _decided(system, backend, forged=True, ok=True)
    lease_id = bundle.lease_id
    assert system.client().attestations.status_of(lease_id) == AttestationStatus.VERIFIED
    colluder_stake = system.stake_of(system.roles.colluder.address)

    report = backend.step()
    (watched,) = report.watched
    assert watched.action == "dispute" and watched.dispute_tx is not None, watched
    assert system.client().attestations.status_of(lease_id) == AttestationStatus.REJECTED
    assert system.stake_of(system.roles.colluder.address) < colluder_stake

    backend.step()  # indexes the dispute
    status = backend.status(lease_id)
    assert status["status"] == "rejected"
    assert status["dispute"]["overturned"] is True
    assert status["dispute"]["verdict"] == "verified"
    assert status["dispute"]["disputer"].lower() == system.roles.honest.address.lower()
    assert status["dispute_window_ends_at"] > system.client().block_timestamp()
    # One dispute per submission: nothing more to do.
    assert backend.step().watched == []
    # Judged with the chip's genuine VCEK (KDS's), which does not verify the report.
    (check,) = backend.checks()
    assert check.action == "dispute" and check.reason_codes == ["SIGNATURE_INVALID"]


def _failover_policy(system: Court, lease_id: int) -> None:
    """The renter's key policy for `lease_id`, allowing failover (two fresh staked holders)."""
    holders = tuple(staked_holder(system.anvil, system.deployment).address for _ in range(2))
    renter = system.client(system.roles.renter)
    assert renter.keys is not None
    renter.keys.set_key_policy(
        lease_id,
        KeyPolicy((MEASUREMENT,), True, 2, holders, 1, bytes.fromhex("4d" * 32)),
    )


def test_a_forged_verdict_on_a_lease_that_may_fail_over_moves_it_rather_than_ending_it(
    system: Court, backend: HonestBackend
) -> None:
    """The same forgery on a lease whose renter wants it to survive its node: the reversal
    moves the lease (reason `verdict_overturned`) instead of closing it, which would make the
    key holders delete the renter's key, and with it the disk and snapshots."""
    lease_id = system.lease()
    _failover_policy(system, lease_id)
    bundle = system.evidence(lease_id, forged=True)
    backend.upload(bundle)
    system.submit(bundle)
    system.vote(lease_id, bundle.report_hash, True)
    node = system.roles.node.address
    stake = system.client().nodes.get_node(node).stake

    (watched,) = backend.step().watched
    assert watched.action == "dispute" and watched.dispute_tx is not None, watched
    leases = system.client().leases
    lease = leases.get_lease(lease_id)
    assert lease.status is LeaseStatus.OPEN and leases.failovers(lease_id) == 1
    assert lease.deposit == 10 * TOKEN  # nothing verified before the forged report
    assert leases.declined_by(lease_id, node)
    assert system.client().nodes.get_node(node).stake < stake  # the bond slashed
    keys = system.client().keys
    assert keys is not None and not keys.is_releasable(lease_id, MEASUREMENT)

    backend.step()  # indexes the dispute and the move
    shown = backend.api.get(f"/v1/leases/{lease_id}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["status"] == "open"
    assert [(n["node"].lower(), n["reason"]) for n in body["nodes"]] == [
        (node.lower(), "verdict_overturned")
    ]
    assert backend.status(lease_id)["dispute"]["overturned"] is True


def test_a_genuine_report_rejected_by_a_colluder_is_disputed_and_restored(
    system: Court, backend: HonestBackend
) -> None:
    bundle = _decided(system, backend, forged=False, ok=False)
    assert system.client().attestations.status_of(bundle.lease_id) == AttestationStatus.REJECTED
    (watched,) = backend.step().watched
    assert watched.action == "dispute"
    # The verdict is Verified now (the lease itself stays closed by the rejection: the
    # registry reads its attestation as expired, the node paid for its time).
    restored = system.client().attestations.submission_of(bundle.lease_id, bundle.report_hash)
    assert restored.verdict == AttestationStatus.VERIFIED
    backend.step()
    assert backend.status(bundle.lease_id)["dispute"]["overturned"] is True


def test_an_unprovable_forged_verdict_is_challenged_and_resolved_after_the_deadline(
    system: Court, backend: HonestBackend
) -> None:
    """A forged report that says it is VLEK-signed can never be bound to a VCEK, so the EVM
    cannot prove it false: the colluder votes Verified; the honest watcher's dispute opens a
    challenge (the bond held); nobody defends it; once the deadline has passed the watcher
    resolves it and the verdict is reversed, the colluder slashed."""
    lease_id = system.lease()
    signed = system.evidence(lease_id, forged=True)
    report = bytearray(signed.report)
    report[0x48] |= 0x04  # SIGNING_KEY = VLEK
    bundle = replace(signed, report=bytes(report))
    backend.upload(bundle)
    system.submit(bundle)
    system.vote(lease_id, bundle.report_hash, True)
    colluder_stake = system.stake_of(system.roles.colluder.address)
    # The watcher compares deadlines with the chain's time here (the test moves it).
    watcher = backend.service.watcher
    assert watcher is not None
    watcher.clock = lambda: float(system.client().block_timestamp())

    (watched,) = backend.step().watched
    assert watched.action == "dispute" and watched.dispute_tx is not None, watched
    court = system.client().court
    assert court is not None
    challenge = court.challenge_of(lease_id, bundle.report_hash)
    assert challenge.pending and challenge.disputer.lower() == system.roles.honest.address.lower()
    assert court.bonded() == challenge.bond
    assert system.client().attestations.status_of(lease_id) == AttestationStatus.VERIFIED
    assert system.client().attestations.submission_of(lease_id, bundle.report_hash).challenged
    assert not system.client().attestations.is_attested_final(lease_id, MEASUREMENT)
    # Before the deadline: nothing to resolve.
    assert backend.step().watched == []
    assert court.challenge_of(lease_id, bundle.report_hash).pending

    system.anvil.increase_time(court.response_window() + 1)
    system.anvil.mine()
    (resolved,) = backend.step().watched
    assert resolved.action == "resolved" and resolved.dispute_tx is not None, resolved
    assert not court.challenge_of(lease_id, bundle.report_hash).pending
    assert system.client().attestations.status_of(lease_id) == AttestationStatus.REJECTED
    assert system.stake_of(system.roles.colluder.address) < colluder_stake
    backend.step()  # indexes the settlement
    assert backend.step().watched == []


def test_a_right_verdict_is_not_disputed(system: Court, backend: HonestBackend) -> None:
    bundle = _decided(system, backend, forged=False, ok=True)
    balance = system.client().token.balance_of(system.roles.honest.address)
    (watched,) = backend.step().watched
    assert watched.action == "agree" and watched.dispute_tx is None
    assert system.client().attestations.status_of(bundle.lease_id) == AttestationStatus.VERIFIED
    assert system.client().token.balance_of(system.roles.honest.address) == balance
    assert backend.status(bundle.lease_id)["dispute"] is None


def _other_key() -> bytes:
    """A well-formed guest key that is not the one the report binds."""
    return simulated_guest_key()


def test_a_genuine_verified_report_with_another_guest_key_in_its_bundle_is_not_disputed(
    system: Court, backend: HonestBackend
) -> None:
    """The node uploads its genuine report with a guest key REPORT_DATA does not bind: the
    EVM takes the key from the dispute, and the node would defend with the right one. The
    watcher does not bet its bond on what it cannot tell (the honest verifier did not vote
    either). FAILED on the old code (disputed as a REPORT_DATA mismatch: a challenge the node
    wins by defending)."""
    lease_id = system.lease()
    genuine = system.evidence(lease_id)
    backend.upload(replace(genuine, guest_key=_other_key()))
    system.submit(genuine)  # the guest's own signer, as the node submits it
    system.vote(lease_id, genuine.report_hash, True)
    balance = system.client().token.balance_of(system.roles.honest.address)
    (watched,) = backend.step().watched
    assert watched.action == "not_disputable" and watched.dispute_tx is None, watched
    assert system.client().token.balance_of(system.roles.honest.address) == balance
    court = system.client().court
    assert court is not None
    assert not court.challenge_of(lease_id, genuine.report_hash).pending
    assert system.client().attestations.status_of(lease_id) == AttestationStatus.VERIFIED


def test_a_genuine_report_under_another_lease_id_rejected_by_a_colluder_is_restored(
    system: Court, backend: HonestBackend
) -> None:
    """A genuine report uploaded under another lease's id: the watcher checks it against the
    chain's lease, finds it good and disputes the colluder's Rejected, which the EVM reverses.
    FAILED on the old code (its check said LEASE_MISMATCH: it agreed with the rejection)."""
    lease_id, other = system.lease(), system.lease()
    genuine = system.evidence(lease_id)
    backend.upload(replace(genuine, lease_id=other))
    system.submit(genuine)
    system.vote(lease_id, genuine.report_hash, False)
    (watched,) = backend.step().watched
    assert watched.action == "dispute" and watched.dispute_tx is not None, watched
    restored = system.client().attestations.submission_of(lease_id, genuine.report_hash)
    assert restored.verdict == AttestationStatus.VERIFIED


def test_a_report_of_another_lease_verified_with_a_wrong_guest_key_is_still_disputed(
    system: Court, backend: HonestBackend
) -> None:
    """A genuine report of another lease (REPORT_DATA and HOST_DATA bind that one), uploaded
    with a key REPORT_DATA does not bind: false on chain whatever key defends it. The
    colluder votes Verified; the watcher disputes; the EVM cannot decide with the bundle's
    key, so a challenge opens; nobody can defend it, and the watcher resolves it: reversed."""
    lease_id, other = system.lease(), system.lease()
    foreign = system.evidence(other)
    bundle = replace(foreign, lease_id=lease_id, nonce=0, guest_key=_other_key())
    backend.upload(bundle)
    system.client(system.roles.node).attestations.submit(
        lease_id, 0, bundle.report_hash, MEASUREMENT, 7, b"\xcc" * 32,
        signer=GuestKey.parse(foreign.guest_key).signer,
    )  # fmt: skip
    system.vote(lease_id, bundle.report_hash, True)
    colluder_stake = system.stake_of(system.roles.colluder.address)
    watcher = backend.service.watcher
    assert watcher is not None
    watcher.clock = lambda: float(system.client().block_timestamp())
    (watched,) = backend.step().watched
    assert watched.action == "dispute" and watched.dispute_tx is not None, watched
    court = system.client().court
    assert court is not None
    assert court.challenge_of(lease_id, bundle.report_hash).pending
    system.anvil.increase_time(court.response_window() + 1)
    system.anvil.mine()
    (resolved,) = backend.step().watched
    assert resolved.action == "resolved", resolved
    assert system.client().attestations.status_of(lease_id) == AttestationStatus.REJECTED
    assert system.stake_of(system.roles.colluder.address) < colluder_stake


# --- `cvm attestation dispute N`, by hand ---------------------------------------------------


@pytest.fixture
def by_hand(
    system: Court,
    backend: HonestBackend,
    tmp_path: Path,
    sim_amd_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[list[str]]:
    """The disputer's CLI arguments: a record naming the backend, a wallet and its password,
    trusting the simulated AMD's roots (as on a local stack)."""
    backend.service.watcher = None  # nobody watches here: the disputer acts by hand
    monkeypatch.setenv("CVM_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("CVM_SIM_AMD_DIR", str(sim_amd_dir))
    keystore = tmp_path / "disputer.json"
    import_keystore(keystore, system.roles.disputer.key, "pw", kdf="pbkdf2", iterations=2)
    password = tmp_path / "disputer.pw"
    password.write_text("pw\n")
    os.chmod(password, 0o600)
    with serving(backend.service.app) as url:
        record = tmp_path / "deployment.json"
        replace(system.deployment, api_url=url).save(record)
        yield ["--deployment", str(record), "--wallet", str(keystore), "--password-file",
               str(password), "--trust-simulated-amd"]  # fmt: skip


def dispute(*args: str) -> tuple[int, dict[str, Any]]:
    result = cli.invoke(app, ["attestation", "dispute", *args, "--json"])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, json.loads("\n".join(lines)) if lines else {}


def test_dispute_by_hand_refuses_what_it_cannot_win(
    system: Court, backend: HonestBackend, by_hand: list[str]
) -> None:
    code, out = dispute("999", *by_hand)
    assert code == 1 and "does not exist" in out["error"]
    pending = system.lease()
    bundle = system.evidence(pending)
    backend.upload(bundle)
    system.submit(bundle)
    code, out = dispute(str(pending), *by_hand)
    assert code == 1 and "no verdict yet" in out["error"]
    # A right verdict: the check agrees, nothing is sent.
    system.vote(pending, bundle.report_hash, True)
    code, out = dispute(str(pending), *by_hand)
    assert code == 1 and "nothing to dispute" in out["error"]
    code, out = dispute(str(pending), "--report-hash", "0x" + "11" * 32, *by_hand)
    assert code == 1 and "never submitted" in out["error"]
    code, out = dispute(str(pending), "--report-hash", "zz", *by_hand)
    assert code == 2


def test_dispute_by_hand_reverses_a_wrong_verdict_once_within_the_window(
    system: Court, backend: HonestBackend, by_hand: list[str]
) -> None:
    bundle = _decided(system, backend, forged=False, ok=False)
    # Another wrong verdict by the same colluder (before a dispute slashes it below the
    # stake a vote needs), left until its window closed.
    late = _decided(system, backend, forged=False, ok=False)
    lease_id = str(bundle.lease_id)
    code, out = dispute(lease_id, "--check-only", *by_hand)
    assert code == 0 and out["action"] == "dispute" and out["chain_will_overturn"] is True
    assert out["dispute_tx"] is None  # nothing sent
    code, out = dispute(lease_id, *by_hand)
    assert code == 0, out
    assert out["overturned"] is True and out["dispute_tx"]
    restored = system.client().attestations.submission_of(bundle.lease_id, bundle.report_hash)
    assert restored.verdict == AttestationStatus.VERIFIED
    code, out = dispute(lease_id, *by_hand)
    assert code == 1 and "already disputed" in out["error"]
    # `cvm attestation status` shows the window and the outcome (from the backend's index).
    backend.step()
    status = cli.invoke(app, ["attestation", "status", lease_id, "--json", *by_hand[:2]])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["dispute"]["overturned"] is True and shown["dispute_window_ends_at"]
    # The other one's window closed: final.
    system.anvil.increase_time(8 * 86_400)
    system.anvil.mine()
    code, out = dispute(str(late.lease_id), *by_hand)
    assert code == 1 and "window" in out["error"] and "closed" in out["error"]


def test_dispute_by_hand_of_an_unprovable_verified_report_opens_a_challenge(
    system: Court, backend: HonestBackend, by_hand: list[str]
) -> None:
    """A forged report that says it is VLEK-signed: no certificate proves it false on chain,
    so the CLI's dispute opens a challenge and says by when it must be defended."""
    lease_id = system.lease()
    signed = system.evidence(lease_id, forged=True)
    report = bytearray(signed.report)
    report[0x48] |= 0x04  # SIGNING_KEY = VLEK
    bundle = replace(signed, report=bytes(report))
    backend.upload(bundle)
    system.submit(bundle)
    system.vote(lease_id, bundle.report_hash, True)
    code, out = dispute(str(lease_id), *by_hand)
    assert code == 0, out
    assert out["dispute_tx"] and out["overturned"] is None
    court = system.client().court
    assert court is not None
    challenge = court.challenge_of(lease_id, bundle.report_hash)
    assert challenge.pending and out["challenge_deadline"] == challenge.deadline
    assert challenge.disputer.lower() == system.roles.disputer.address.lower()
    table = cli.invoke(app, ["attestation", "dispute", str(lease_id), *by_hand])
    assert table.exit_code == 1 and "challenge" in table.output.lower()


def test_dispute_by_hand_does_not_bet_on_a_guest_key_it_cannot_tell(
    system: Court, backend: HonestBackend, by_hand: list[str]
) -> None:
    """A genuine report Verified, uploaded with a key REPORT_DATA does not bind: the CLI's
    check is the verifiers' (the chain's lease, the EVM's view of the key), so it refuses."""
    lease_id = system.lease()
    genuine = system.evidence(lease_id)
    backend.upload(replace(genuine, guest_key=_other_key()))
    system.submit(genuine)
    system.vote(lease_id, genuine.report_hash, True)
    code, out = dispute(str(lease_id), *by_hand)
    assert code == 1 and "not disputable" in out["error"], out
    assert "GUEST_KEY_UNKNOWN" in out["error"]


def test_dispute_by_hand_checks_a_garbage_vcek_with_kds_first(
    system: Court,
    backend: HonestBackend,
    by_hand: list[str],
    tmp_path: Path,
) -> None:
    """A genuine report uploaded with a garbage VCEK and Rejected by the colluder: the CLI
    fetches the chip's VCEK (from its KDS cache here, as from CVM_KDS_URL), finds the report
    genuine, disputes and the EVM restores it. FAILED on the old code (its check failed on the
    bundle's certificate and agreed with the rejection: "nothing to dispute")."""
    lease_id = system.lease()
    genuine = system.evidence(lease_id)
    backend.upload(replace(genuine, vcek=b"\x30\x03\x02\x01\x00", chain=b""))
    system.submit(genuine)
    system.vote(lease_id, genuine.report_hash, False)
    from cvm.attestation import parse

    cache = CachingKds(tmp_path / "cli" / "kds-cache")
    cache.store(vcek_url(parse(genuine.report), system.chip.product), system.chip.vcek_der)
    code, out = dispute(str(lease_id), *by_hand)
    assert code == 0 and out["overturned"] is True, out
    assert any("AMD's KDS" in message for message in out["messages"])
    restored = system.client().attestations.submission_of(lease_id, genuine.report_hash)
    assert restored.verdict == AttestationStatus.VERIFIED
