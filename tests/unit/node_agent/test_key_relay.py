"""The node carries the threshold key to its guest: the renter's manifest, the sealed bundle
and the holders' releases as the backend holds them, handed again only when new releases
came (or the guest is a new one), not at all without a deposit, and a guest's refusal is not
retried with the same pieces."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_account import Account

from cvm.api_client import ApiError
from cvm.api_models import GuestKeysView
from node_agent.errors import GuestRefused, LauncherError
from node_agent.guest_channel import GuestAnswer
from node_agent.key_relay import KeyRelay

HOLDER = "0x" + "11" * 20
MANIFEST = {
    "leaseId": 1, "keyVersion": 1, "threshold": 1, "holders": [HOLDER],
    "holderKeys": ["0x" + "22" * 32], "rootCommitment": "0x" + "33" * 32,
    "epochKey": "0x" + "44" * 32,
}  # fmt: skip


def keys(releases: int) -> GuestKeysView:
    return GuestKeysView.model_validate({
        "lease_id": 1, "key_version": 1, "manifest": MANIFEST, "signature": "0x" + "55" * 65,
        "bundle": None,
        "releases": [{
            "holder": HOLDER, "index": 1, "sender": "0x" + "22" * 32, "key_version": 1,
            "report_hash": "0x" + f"{n:064x}", "enc": "ZW5j", "ciphertext": "Y2lwaGVy",
            "created_at": datetime(2026, 12, 7, 12, n, tzinfo=UTC),
        } for n in range(releases)],
    })  # fmt: skip


class FakeApi:
    def __init__(self) -> None:
        self.view: GuestKeysView | None = None

    def get_guest_keys(self, lease_id: int, **kwargs: Any) -> GuestKeysView:
        if self.view is None:
            raise ApiError(404, "lease 1 has no key deposit")
        return self.view


class FakeChannel:
    def __init__(self, launcher: FakeLauncher) -> None:
        self.launcher = launcher

    def request(self, message: dict[str, Any]) -> GuestAnswer:
        self.launcher.requests.append(message)
        answer = self.launcher.answer
        if isinstance(answer, Exception):
            raise answer
        return GuestAnswer("keys", answer)


class FakeLauncher:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self.requests: list[dict[str, Any]] = []
        self.answer: dict[str, Any] | Exception = {"ok": True, "shares": 0, "installed": False}

    def channel(self, lease_id: int) -> FakeChannel:
        return FakeChannel(self)

    def guest_dir(self, lease_id: int) -> Path:
        return self.directory


def relay(tmp_path: Path) -> tuple[KeyRelay, FakeApi, FakeLauncher]:
    api, launcher = FakeApi(), FakeLauncher(tmp_path / "guest")
    return KeyRelay(api, Account.create(), launcher, tmp_path / "keys"), api, launcher  # type: ignore[arg-type]


def test_nothing_is_carried_without_a_deposit(tmp_path: Path) -> None:
    keys_relay, _api, launcher = relay(tmp_path)
    assert keys_relay.sync(1) is False
    assert launcher.requests == []


def test_the_pieces_go_once_and_again_only_when_new_releases_come(tmp_path: Path) -> None:
    keys_relay, api, launcher = relay(tmp_path)
    api.view = keys(1)
    assert keys_relay.sync(1) is False  # one share: the guest waits for more
    (sent,) = launcher.requests
    assert sent["op"] == "keys" and sent["manifest"] == MANIFEST
    assert sent["signature"] == "0x" + "55" * 65 and sent["bundle"] is None
    assert sent["releases"] == [
        {"enc": "ZW5j", "ciphertext": "Y2lwaGVy", "sender": "0x" + "22" * 32}
    ]
    assert keys_relay.sync(1) is False and len(launcher.requests) == 1  # nothing new: not asked
    api.view = keys(2)
    launcher.answer = {"ok": True, "shares": 2, "installed": True}
    assert keys_relay.sync(1) is True and len(launcher.requests) == 2
    assert keys_relay.sync(1) is True and len(launcher.requests) == 2  # installed: left alone


def test_a_new_guest_gets_them_again_and_a_silent_one_is_retried(tmp_path: Path) -> None:
    keys_relay, api, launcher = relay(tmp_path)
    api.view = keys(2)
    launcher.answer = LauncherError("no answer in 10 s")
    assert keys_relay.sync(1) is False
    launcher.answer = {"ok": True, "shares": 2, "installed": True}
    assert keys_relay.sync(1) is True and len(launcher.requests) == 2
    # The guest was relaunched (a new directory): its key is handed over afresh.
    launcher.directory.rmdir()
    launcher.directory.mkdir()
    (launcher.directory / "new").touch()
    launcher.directory = launcher.directory / "new"
    assert keys_relay.sync(1) is True and len(launcher.requests) == 3


def test_a_refusal_is_not_repeated_with_the_same_pieces(tmp_path: Path) -> None:
    keys_relay, api, launcher = relay(tmp_path)
    api.view = keys(1)
    launcher.answer = GuestRefused("guest agent refused keys: 'signed by another renter'")
    assert keys_relay.sync(1) is False
    assert keys_relay.sync(1) is False
    assert len(launcher.requests) == 1
