"""Sealed secrets reach the guest once: marked delivered when the guest installed them or
refused them for good, retried when the channel failed (the renter's secrets are not lost)."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node_agent.errors import GuestRefused, LauncherError
from node_agent.guest_channel import GuestChannel
from node_agent.guest_relay import GuestRelay


@dataclass
class Sealed:
    id: int
    seq: int = 0

    def model_dump(self) -> dict[str, Any]:
        return {"report_data": "00", "enc": "00", "ciphertext": "00", "seq": self.seq or self.id,
                "signature": f"{self.id:02x}" * 65}  # fmt: skip


class FakeApi:
    def __init__(self, messages: list[Sealed]) -> None:
        self.messages = messages
        self.statuses: list[tuple[int, str]] = []
        self.announced: list[tuple[Any, ...]] = []

    def put_guest_status(self, lease_id: int, seq: int, signature: str, **kwargs: Any) -> None:
        self.statuses.append((seq, signature))

    def announce_guest_access(
        self, lease_id: int, host: str, ssh_port: int, *, ports: Any = (), **kwargs: Any
    ) -> None:
        self.announced.append((lease_id, host, ssh_port, list(ports)))

    def sealed_secrets_as_node(self, lease_id: int, **kwargs: Any) -> list[Sealed]:
        return self.messages


class FakeChannel:
    def __init__(self, answers: list[dict[str, Any] | Exception]) -> None:
        self.answers = answers

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert message == {"op": "status"}
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeLauncher:
    public_host = "198.51.100.4"

    def __init__(self, directory: Path) -> None:
        self.forwards = [(8080, 40001)]
        self.directory = directory
        directory.mkdir()
        self.status_answers: list[dict[str, Any] | Exception] = [
            GuestRefused("guest agent refused status: status needs a bound lease: bind first")
        ]

    def channel(self, lease_id: int) -> FakeChannel:
        return FakeChannel(self.status_answers)

    def ssh_port(self, lease_id: int) -> int:
        return 2222

    def port_forwards(self, lease_id: int) -> list[tuple[int, int]]:
        return list(self.forwards)

    def guest_dir(self, lease_id: int) -> Path:
        return self.directory

    def deliver_secrets(self, lease_id: int, sealed: dict[str, str]) -> list[str]:
        raise AssertionError("replaced per message below")


@dataclass
class Key:
    key: bytes = b"k"


def _relay(
    tmp_path: Path, outcomes: list[Exception | list[str]], messages: list[Sealed] | None = None
) -> tuple[GuestRelay, list[dict[str, Any]]]:
    launcher = FakeLauncher(tmp_path / "guest")
    tried: list[dict[str, Any]] = []
    queue = list(outcomes)

    def deliver(lease_id: int, sealed: dict[str, Any]) -> list[str]:
        tried.append(sealed)
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    launcher.deliver_secrets = deliver  # type: ignore[method-assign]
    api = FakeApi(messages or [Sealed(1), Sealed(2)])
    relay = GuestRelay(api, Key(), launcher, tmp_path / "state")  # type: ignore[arg-type]
    return relay, tried


def test_a_channel_failure_is_retried_next_pass(tmp_path: Path) -> None:
    relay, tried = _relay(
        tmp_path, [LauncherError("no answer on the guest channel: timed out"), ["x"], ["y"]]
    )
    assert relay.sync(5) == []  # the guest agent is not up yet: nothing marked delivered
    assert relay.sync(5) == ["x", "y"]  # both messages go again, in order
    assert relay.sync(5) == [] and len(tried) == 3


def test_a_refusal_by_the_guest_is_final(tmp_path: Path) -> None:
    relay, tried = _relay(
        tmp_path, [GuestRefused("guest agent refused secrets: sealed to another guest"), ["y"]]
    )
    assert relay.sync(5) == ["y"]
    assert relay.sync(5) == [] and len(tried) == 2  # the refused one is not asked again


def test_seq_and_the_renters_signature_pass_through_in_seq_order(tmp_path: Path) -> None:
    """The guest checks the renter's signature over the seq: the node carries both unchanged,
    lowest seq first (the guest refuses a seq below one it installed)."""
    relay, tried = _relay(tmp_path, [["b"], ["a"]], [Sealed(1, seq=9), Sealed(2, seq=4)])
    assert relay.sync(5) == ["b", "a"]
    assert [(m["seq"], m["signature"]) for m in tried] == [(4, "02" * 65), (9, "01" * 65)]


def test_the_guests_signed_status_is_relayed_after_a_delivery(tmp_path: Path) -> None:
    """The renter sees the installed seq the guest signed, relayed by the node once something
    was handed over (and once per guest), not on every pass."""
    relay, _ = _relay(tmp_path, [["a"], ["b"]])
    api: FakeApi = relay.api  # type: ignore[assignment]
    launcher: FakeLauncher = relay.launcher  # type: ignore[assignment]
    launcher.status_answers = [{"ok": True, "seq": 2, "signature": "ab" * 65}]
    assert relay.sync(5) == ["a", "b"]
    assert api.statuses == [(2, "ab" * 65)]
    relay.sync(5)  # nothing new: no exchange with the guest, nothing relayed
    assert api.statuses == [(2, "ab" * 65)]


@pytest.mark.parametrize(
    "answer",
    [GuestRefused("status needs a bound lease: bind first"), {"ok": True, "seq": "2"},
     {"ok": True, "seq": 2, "signature": "zz"}, {"ok": True, "seq": True, "signature": "ab" * 65},
     {"ok": True, "seq": -1, "signature": "ab" * 65}],
)  # fmt: skip
def test_no_status_or_a_malformed_one_is_not_relayed(tmp_path: Path, answer: Any) -> None:
    relay, _ = _relay(tmp_path, [["a"], ["b"]])
    relay.launcher.status_answers = [answer]  # type: ignore[attr-defined]
    assert relay.sync(5) == ["a", "b"]
    assert relay.api.statuses == []  # type: ignore[attr-defined]


def _serve_once(path: Path, answer: dict[str, Any]) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            request = json.loads(stream.readline())
            stream.write(json.dumps({**answer, "id": request["id"]}).encode() + b"\n")
            stream.flush()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ({"ok": False, "error": "secrets are sealed to a report this guest never made"}, True),
        ({"ok": False, "error": "secrets failed: [Errno 28] No space left", "retry": True}, False),
    ],
)
def test_the_channel_tells_a_refusal_from_a_failure(
    tmp_path: Path, answer: dict[str, Any], refused: bool
) -> None:
    path = tmp_path / "agent.sock"
    thread = _serve_once(path, answer)
    with pytest.raises(LauncherError) as caught:
        GuestChannel(path, timeout_s=5).request({"op": "secrets"})
    thread.join(timeout=5)
    assert isinstance(caught.value, GuestRefused) is refused


def test_ssh_and_the_service_ports_are_announced_from_the_public_host_once_per_change(
    tmp_path: Path,
) -> None:
    relay, _ = _relay(tmp_path, [["a"], ["b"]])
    api: FakeApi = relay.api  # type: ignore[assignment]
    launcher: FakeLauncher = relay.launcher  # type: ignore[assignment]
    relay.sync(5)
    relay.sync(5)
    assert api.announced == [(5, "198.51.100.4", 2222, [(8080, 40001)])]
    launcher.forwards = [(8080, 40009)]  # relaunched with other host ports
    relay.sync(5)
    assert api.announced[-1] == (5, "198.51.100.4", 2222, [(8080, 40009)])
