"""The node survives its guests (real anvil, the agent's real channel to fake guest agents on
Unix sockets): a guest that trickles its answers delays neither heartbeats nor the other
leases, a malformed answer on one lease stops neither the others' secrets nor their
consoles, and a guest that refuses to attest is declined while that is free, so the node is
never slashed for it. Each test failed on the old agent, as its docstring says."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cvm.api_client import ApiError
from cvm.api_models import EvidenceReceipt
from cvm.attestation.binding import build_report_data
from cvm.chain import LeaseStatus
from node_agent.agent import NodeAgent
from node_agent.errors import LauncherError, LeaseUnservable
from node_agent.guest_channel import GuestChannel
from node_agent.launcher.base import GuestInfo, GuestReport, GuestSpec, GuestState
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.signer import SimulatedAmdSp, simulated_guest_key
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.lifecycle import DECLINE_MARGIN_S
from node_agent.store import AgentStore, LeaseState
from node_agent.tasks import Scheduler
from tests.fixtures.chain import MEASUREMENT, ChainSystem
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.conftest import NODE_CAPACITY
from tests.unit.node_agent.fake_guest import (
    Behaviour,
    FakeGuest,
    answering,
    answering_raw,
    trickling,
)

pytestmark = [pytest.mark.integration, pytest.mark.guests]


@pytest.fixture
def guests(tmp_path: Path) -> Iterator[Callable[[Path, Behaviour], FakeGuest]]:
    """Start fake guest agents; all closed at the end of the test."""
    started: list[FakeGuest] = []

    def start(path: Path, behave: Behaviour) -> FakeGuest:
        started.append(FakeGuest(path, behave))
        return started[-1]

    yield start
    for guest in started:
        guest.close()


class ChannelGuests(SimulatedLauncher):
    """Simulated guests; those given an agent socket are asked for their report over the
    node's real GuestChannel first (a guest that refuses or stalls there gives none)."""

    def __init__(self, state_dir: Path, signer: SimulatedAmdSp, timeout_s: float) -> None:
        super().__init__(state_dir, signer)
        self.sockets: dict[int, Path] = {}
        self.timeout_s = timeout_s

    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        if lease_id in self.sockets:
            channel = GuestChannel(self.sockets[lease_id], timeout_s=self.timeout_s)
            channel.request({"op": "attest", "nonce": nonce})
        return super().get_report(lease_id, nonce)


def _agent(chain: ChainSystem, launcher: Any, state: Path, **options: Any) -> NodeAgent:
    return NodeAgent(
        chain.node,
        launcher,
        AgentStore(state / "agent.sqlite"),
        NODE_CAPACITY,
        state / "locks",
        measurements=(MEASUREMENT,),
        **options,
    )


def _near_free_decline_deadline(chain: ChainSystem, lease_id: int) -> None:
    """To `DECLINE_MARGIN_S` before the last moment the node may decline for free."""
    chain.advance(
        chain.node.leases.free_decline_deadline(lease_id) - DECLINE_MARGIN_S - chain.now()
    )


def test_a_guest_that_refuses_to_attest_is_declined_without_slash(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, guests: Any
) -> None:
    """The old agent retried the refusing guest on every pass and never declined: the
    renter closed after the deadline with a full refund and the node was slashed."""
    chain.staked_node()
    lease_id = chain.open_lease()
    launcher = ChannelGuests(tmp_path / "guests", amd_sp, timeout_s=10)
    launcher.sockets[lease_id] = tmp_path / "agent.sock"
    guests(launcher.sockets[lease_id], answering({"ok": False, "error": "I attest nothing"}))
    agent = _agent(chain, launcher, tmp_path / "agent", accept_mode="separate")
    node = chain.accounts.node_key.address
    stake_before = chain.client().nodes.get_node(node).stake
    with pytest.raises(LauncherError, match="I attest nothing"):  # early: may pass, retried
        agent.handle_lease(lease_id)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.ACTIVE
    _near_free_decline_deadline(chain, lease_id)
    agent.reconcile()  # the guest has not attested this close to the deadline: declined
    lease = chain.node.leases.get_lease(lease_id)
    assert lease.status == LeaseStatus.OPEN  # back on the market (LeaseMarket's decline rule)
    assert chain.client().nodes.get_node(node).stake == stake_before  # no slash
    assert chain.client().leases.bonded_stake(node) == 0
    assert launcher.running() == []  # its guest stopped
    record = agent.store.get_lease(lease_id)
    assert record is not None and record.state == LeaseState.STOPPED
    # The refusal is kept as the node's evidence, for this lease.
    evidence = agent.store.guest_failures(lease_id)
    assert [failure.step for failure in evidence] == ["attest"]
    assert "I attest nothing" in evidence[0].error
    # Past the deadline the renter has nothing to close: the lease was given back.
    chain.advance(DECLINE_MARGIN_S + 60)
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN


def test_a_guest_silent_when_accepted_is_declined_before_it_is_asked_again(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, guests: Any
) -> None:
    """Near the deadline the agent declines before spending a guest step on a guest that
    never attested (the step itself could run past the deadline)."""
    chain.staked_node()
    lease_id = chain.open_lease()
    launcher = ChannelGuests(tmp_path / "guests", amd_sp, timeout_s=1)
    launcher.sockets[lease_id] = tmp_path / "agent.sock"
    guest = guests(launcher.sockets[lease_id], trickling(10_000))
    agent = _agent(chain, launcher, tmp_path / "agent", accept_mode="separate")
    with pytest.raises(LauncherError, match="deadline"):
        agent.handle_lease(lease_id)
    asked = len(guest.requests)
    _near_free_decline_deadline(chain, lease_id)
    with pytest.raises(LeaseUnservable, match="did not attest in time"):
        agent.reattest(lease_id)
    assert len(guest.requests) == asked  # declined without asking the guest once more
    assert chain.node.leases.get_lease(lease_id).status == LeaseStatus.OPEN
    assert "deadline" in agent.store.guest_failures(lease_id)[0].error


def test_a_trickling_guest_delays_neither_heartbeats_nor_other_leases(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, guests: Any
) -> None:
    """A guest answering one byte every 50 ms: on the old agent its lease's attestation held
    the scheduler's only thread until the guest was done (the channel's timeout was per
    read), so the next lease waited and no heartbeat went out meanwhile."""
    chain.staked_node()
    stalling, sound = chain.open_lease(), chain.open_lease()  # the stalling one comes first
    for lease_id in (stalling, sound):
        chain.node.leases.accept_lease(lease_id)
    launcher = ChannelGuests(tmp_path / "guests", amd_sp, timeout_s=20)
    launcher.sockets[stalling] = tmp_path / "agent.sock"
    trickler = guests(launcher.sockets[stalling], trickling(10_000))  # 500 s of answer
    agent = _agent(chain, launcher, tmp_path / "agent", step_budget_s=120)
    beats: list[int] = []

    def heartbeat() -> Any:  # the backend's end of it is not under test here
        beats.append(1)

    agent.heartbeat = heartbeat  # type: ignore[method-assign]
    scheduler = Scheduler(agent, reconcile_s=3600, heartbeat_s=0.05)
    scheduler.start()
    try:
        wait_for(
            lambda: chain.node.attestations.attestation_nonce(sound) == 1 and len(beats) >= 3,
            timeout=60,
            what="the sound lease attested and heartbeats sent",
        )
        assert trickler.requests and not trickler.finished.is_set()  # still trickling
        assert chain.node.attestations.attestation_nonce(stalling) == 0
        # The stalling lease's step ends at its own deadline, its failure kept for it alone.
        wait_for(lambda: agent.store.guest_failures(stalling), timeout=60)
        assert "deadline" in agent.store.guest_failures(stalling)[0].error
        assert agent.store.guest_failures(sound) == []
    finally:
        scheduler.stop()
    assert not trickler.finished.is_set()


# --- a malformed answer on one lease -------------------------------------------------------
@dataclass
class Sealed:
    id: int
    seq: int = 1

    def model_dump(self) -> dict[str, Any]:
        return {"report_data": "00" * 64, "enc": "00" * 32, "ciphertext": "00" * 16,
                "seq": 1, "signature": "00" * 65}  # fmt: skip


class FakeBackend:
    """The backend's node endpoints the agent uses here: evidence, specs, access, secrets,
    console."""

    def __init__(self) -> None:
        self.consoles: dict[int, bytes] = {}
        self.announced: list[int] = []
        self.lock = threading.Lock()

    def upload_evidence_receipt(self, evidence: bytes, **kwargs: Any) -> EvidenceReceipt:
        # The backend's answer names no claim on the guest key, but says it did not look:
        # the agent asks the claim route (below) as it does of a backend that does not say.
        return EvidenceReceipt(hash="0x" + "ee" * 32, report_hash="0x" + "dd" * 32, size=1)

    def guest_key_claim(self, key_hash: str, **kwargs: Any) -> None:
        return None  # no other lease claimed it: each guest here makes its own key

    def lease_spec_as_node(self, lease_id: int, **kwargs: Any) -> Any:
        raise ApiError(404, "no private spec")

    def announce_guest_access(self, lease_id: int, *args: Any, **kwargs: Any) -> None:
        self.announced.append(lease_id)

    def sealed_secrets_as_node(self, lease_id: int, **kwargs: Any) -> list[Sealed]:
        return [Sealed(lease_id * 10)]

    def get_guest_keys(self, lease_id: int, **kwargs: Any) -> Any:
        raise ApiError(404, "no key deposit")  # these leases take secrets from their renter

    def domain(self) -> Any:
        return None

    def upload_console(self, lease_id: int, offset: int, chunk: bytes, **kwargs: Any) -> None:
        with self.lock:
            self.consoles[lease_id] = self.consoles.get(lease_id, b"") + chunk


class AgentGuests(QemuLauncher):
    """The `qemu` launcher's guest channel, relay and console paths, over guests that are
    fake agents on its sockets (no QEMU): a launch writes the guest's record, reports come
    from the simulated AMD-SP, the console from `console`."""

    def __init__(self, run_dir: Path, signer: SimulatedAmdSp) -> None:
        super().__init__(run_dir, signer)
        self.console: dict[int, bytes] = {}

    def launch(self, spec: GuestSpec) -> GuestInfo:
        self.guest_dir(spec.lease_id).mkdir(parents=True, exist_ok=True)
        record = {
            "image": "i",
            "ssh_port": 2222,
            "expected_measurement": MEASUREMENT.hex(),
            "guest_key": simulated_guest_key().hex(),
            "binding": spec.host_binding().to_json(),
        }
        (self.guest_dir(spec.lease_id) / "spec.json").write_text(json.dumps(record))
        return self.status(spec.lease_id)

    def status(self, lease_id: int) -> GuestInfo:
        running = (self.guest_dir(lease_id) / "spec.json").exists()
        return GuestInfo(lease_id, GuestState.RUNNING if running else GuestState.MISSING)

    def running(self) -> list[GuestInfo]:
        found = [self.status(int(p.name.split("-")[1])) for p in self.run_dir.glob("lease-*")]
        return [info for info in found if info.state == GuestState.RUNNING]

    def stop(self, lease_id: int) -> None:
        shutil.rmtree(self.guest_dir(lease_id), ignore_errors=True)

    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        # A report bound as the verifiers want it (the node appraises before submitting).
        record, binding = self._record(lease_id), self.binding(lease_id)
        guest_key = bytes.fromhex(record["guest_key"])
        report_data = build_report_data(
            binding.chain_id, binding.registry, lease_id, nonce, guest_key
        )
        signed = self.signer.sign_report(MEASUREMENT, report_data, binding.host_data(lease_id))
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, guest_key)

    def read_console(self, lease_id: int, max_bytes: int = 0) -> bytes:
        return self.console.pop(lease_id, b"")


def _relayed(guest: FakeGuest) -> list[str]:
    """The ops the relay sent, but the status reads (the signed one that follows each delivery,
    the snapshot relay's `snapshot_status`)."""
    return [r["op"] for r in guest.requests if r["op"] not in ("status", "snapshot_status")]


@pytest.mark.parametrize(
    "malformed",
    [b'"ok": true, "installed": 5}', b'"ok": true, "installed": ' + b"[" * 100_000 + b"}"],
    ids=["installed-5", "deep-nesting"],
)
def test_a_malformed_answer_on_one_lease_spares_the_others_secrets_and_console(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp, guests: Any, malformed: bytes
) -> None:
    """`"installed": 5` (a TypeError) or 100,000 brackets (a RecursionError) from one guest:
    on the old agent the error escaped the relay loop, so the next lease's secrets and every
    console were not shipped on that pass, nor on any later one."""
    chain.staked_node()
    broken, sound = chain.open_lease(), chain.open_lease()  # the broken one comes first
    for lease_id in (broken, sound):
        chain.node.leases.accept_lease(lease_id)
    launcher = AgentGuests(tmp_path / "run", amd_sp)
    backend = FakeBackend()
    agent = _agent(chain, launcher, tmp_path / "agent", api=backend)
    broken_guest = guests(launcher.agent_socket(broken), answering_raw(malformed))
    sound_guest = guests(launcher.agent_socket(sound), answering({"ok": True, "installed": ["db"]}))
    launcher.console = {broken: b"broken booted\n", sound: b"sound booted\n"}
    result = agent.reconcile()
    assert result.attested == [broken, sound]
    assert _relayed(broken_guest) == ["secrets"]
    assert _relayed(sound_guest) == ["secrets"]  # delivered all the same
    assert backend.consoles == {broken: b"broken booted\n", sound: b"sound booted\n"}
    # The broken lease's message is kept for the next pass; the sound one's is done.
    launcher.console = {sound: b"still here\n"}
    agent.reconcile()
    assert _relayed(broken_guest) == ["secrets", "secrets"]
    assert _relayed(sound_guest) == ["secrets"]
    assert backend.consoles[sound] == b"sound booted\nstill here\n"
