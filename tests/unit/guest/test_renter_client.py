"""The renter's client against the guest agent run in-process: the sequence number it picks,
and the guest's signed status read back through an untrusted runner (the SSH session)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account

from cvm.api_client import ApiError
from cvm.api_models import GuestStatusView
from cvm.attestation.release import GuestIdentity, StatusRefused, seal
from cvm.secret_release import SeqLedger, guest_status, next_seq, relayed_status
from guest import agent as guest_agent

CHAIN_ID, REGISTRY, LEASE = 31337, "0x" + "5a" * 20, 7
RENTER = Account.create()


@pytest.fixture
def agent(tmp_path: Path) -> guest_agent.GuestAgent:
    agent = guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=tmp_path / "s", ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no", device=tmp_path / "no",
    )  # fmt: skip
    assert agent.handle({"op": "bind", "chain_id": CHAIN_ID, "registry": REGISTRY,
                         "lease_id": LEASE, "renter": RENTER.address})["ok"]  # fmt: skip
    return agent


def identity(agent: guest_agent.GuestAgent, nonce: int = 0) -> GuestIdentity:
    answer = agent.handle({"op": "attest", "nonce": nonce})
    return GuestIdentity.from_guest_key(
        agent.keys.public, bytes.fromhex(answer["report_data"]), bytes(48), chain_id=CHAIN_ID,
        registry=REGISTRY, lease_id=LEASE, renter=RENTER.address,
    )  # fmt: skip


class Backend:
    def __init__(self, seq: int) -> None:
        self.seq = seq

    def sealed_secrets_seq(self, lease_id: int) -> int:
        return self.seq


def test_the_next_seq_is_above_both_our_record_and_the_backends(agent, tmp_path):
    guest = identity(agent)
    ledger = SeqLedger(tmp_path / "sealed-seq.json")
    assert next_seq(Backend(0), guest, ledger) == 1  # type: ignore[arg-type]
    ledger.record(guest, 7)
    # A backend that forgot (or lies low) cannot make the client reuse a number.
    assert next_seq(Backend(2), guest, ledger) == 8  # type: ignore[arg-type]
    assert next_seq(Backend(11), guest, ledger) == 12  # type: ignore[arg-type]
    ledger.record(guest, 3)  # never goes down
    assert ledger.last(guest) == 7
    other = GuestIdentity(**{**_fields(guest), "lease_id": LEASE + 1})
    assert ledger.last(other) == 0


def _fields(guest: GuestIdentity) -> dict:
    return {name: getattr(guest, name) for name in guest.__slots__}


def test_the_guests_status_through_the_ssh_runner_shows_a_withheld_update(agent):
    guest = identity(agent)
    asked: list[list[str]] = []

    def run(argv: list[str]) -> str:
        # What `python3 /usr/lib/cvm/agent.py status CHALLENGE` prints in the guest.
        asked.append(argv)
        answer = agent.handle_local({"op": "status", "challenge": argv[-1]})
        return "some login banner\n" + json.dumps(answer) + "\n"

    assert agent.handle({"op": "secrets", **seal(guest, RENTER, seq=1, secrets={"a": b"1"})
                         .to_json_dict()})["ok"]  # fmt: skip
    # The renter sealed seq 2, the node withheld it: the guest says 1, signed.
    assert guest_status(guest, run) == 1
    assert asked[0][:3] == ["python3", "/usr/lib/cvm/agent.py", "status"]
    assert len(bytes.fromhex(asked[0][3])) == 32


def test_a_status_the_host_replays_or_forges_is_refused(agent):
    guest = identity(agent)
    old = agent.handle_local({"op": "status", "challenge": "00" * 32})
    with pytest.raises(StatusRefused):  # an old status: signed for another challenge
        guest_status(guest, lambda argv: json.dumps(old))
    forged = {**old, "seq": 99}
    with pytest.raises(StatusRefused):
        guest_status(guest, lambda argv: json.dumps(forged))
    with pytest.raises(StatusRefused):
        guest_status(guest, lambda argv: "not json")
    # Another guest's signer (a host running its own VM) is not this guest's.
    other = guest_agent.GuestKeys()
    impostor = GuestIdentity.from_guest_key(
        other.public, guest.report_data, bytes(48), chain_id=CHAIN_ID, registry=REGISTRY,
        lease_id=LEASE, renter=RENTER.address,
    )  # fmt: skip
    with pytest.raises(StatusRefused, match="attested signer"):
        guest_status(
            impostor,
            lambda argv: json.dumps(agent.handle_local({"op": "status", "challenge": argv[-1]})),
        )


class RelayingBackend:
    """The backend's copy of the guest's status as the node relayed it (or none: 404)."""

    def __init__(self, answer: dict | None) -> None:
        self.answer = answer

    def guest_status(self, lease_id: int) -> GuestStatusView:
        if self.answer is None:
            raise ApiError(404, "not relayed yet")
        return GuestStatusView(lease_id=lease_id, seq=self.answer["seq"],
                               signature=self.answer["signature"],
                               updated_at=datetime.now(UTC))  # fmt: skip


def test_the_status_the_node_relays_counts_only_as_the_guest_signed_it(agent):
    guest = identity(agent)
    assert agent.handle({"op": "secrets", **seal(guest, RENTER, seq=4, secrets={"a": b"1"})
                         .to_json_dict()})["ok"]  # fmt: skip
    relayed = agent.handle({"op": "status"})  # what the node asks on the host channel
    assert relayed_status(RelayingBackend(relayed), guest) == 4  # type: ignore[arg-type]
    assert relayed_status(RelayingBackend(None), guest) is None  # type: ignore[arg-type]
    # A node that claims more was installed than was (to hide a withheld update): refused.
    with pytest.raises(StatusRefused):
        relayed_status(RelayingBackend({**relayed, "seq": 5}), guest)  # type: ignore[arg-type]


def test_a_backends_seq_far_above_ours_is_refused(agent, tmp_path):
    """A lying backend answering seq 2**64-2 got the old client to sign 2**64-1: the guest
    installs it and then refuses every later message for its life (no SSH key rotation).
    The client now refuses a jump of more than MAX_SEQ_JUMP above its own record."""
    from cvm.attestation.release import ReleaseRefused

    guest = identity(agent)
    ledger = SeqLedger(tmp_path / "sealed-seq.json")
    with pytest.raises(ReleaseRefused, match="lying backend"):
        next_seq(Backend(2**64 - 2), guest, ledger)  # type: ignore[arg-type]
    from cvm.secret_release import MAX_SEQ_JUMP

    ledger.record(guest, 5)
    jump = Backend(5 + MAX_SEQ_JUMP)
    assert next_seq(jump, guest, ledger) == 6 + MAX_SEQ_JUMP  # type: ignore[arg-type]
    with pytest.raises(ReleaseRefused):
        next_seq(Backend(6 + MAX_SEQ_JUMP), guest, ledger)  # type: ignore[arg-type]
