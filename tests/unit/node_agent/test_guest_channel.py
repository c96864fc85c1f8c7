"""The node survives its guest's answers: the channel to a guest agent has an absolute
deadline per exchange, reads only so many lines looking for its answer, refuses deep nesting
before parsing, and checks the type of every field it uses. Every failure is a
LauncherError (or GuestRefused) with a clear message, never a hang, a RecursionError or a
TypeError. Each attack below failed (or hung) on the old channel, as its docstring says."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.errors import GuestRefused, LauncherError
from node_agent.guest_channel import MAX_JSON_DEPTH, GuestAnswer, GuestChannel
from node_agent.launcher.qemu import QemuLauncher
from tests.unit.node_agent.fake_guest import (
    Behaviour,
    FakeGuest,
    answering,
    answering_raw,
    chattering,
    trickling,
)

# Far above every deadline below: only a channel that ignores its deadline gets near it.
HANG_S = 30.0


@pytest.fixture
def guest_at(tmp_path: Path) -> Iterator[Callable[[Behaviour], tuple[FakeGuest, Path]]]:
    guests: list[FakeGuest] = []

    def start(behave: Behaviour) -> tuple[FakeGuest, Path]:
        path = tmp_path / f"agent-{len(guests)}.sock"
        guests.append(FakeGuest(path, behave))
        return guests[-1], path

    yield start
    for guest in guests:
        guest.close()


SEALED = {"report_data": "00", "enc": "00", "ciphertext": "00", "seq": 1, "signature": "00"}


def outcome_within(call: Callable[[], Any], seconds: float = HANG_S) -> BaseException | Any:
    """What `call` returned or raised, run in a thread; fails the test if it still runs
    after `seconds` (the old channel hung there)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the exchange still runs after {seconds} s"
    return result[0]


def test_a_trickling_guest_cannot_stretch_the_deadline(guest_at: Any) -> None:
    """One byte every 50 ms answers every read: the old channel's timeout was per read, so
    it waited the whole 500 s answer out. Now the deadline is absolute."""
    guest, path = guest_at(trickling(10_000))
    failure = outcome_within(lambda: GuestChannel(path, timeout_s=1).request({"op": "hello"}))
    assert isinstance(failure, LauncherError) and "deadline" in str(failure)
    assert not guest.finished.is_set()  # it was still trickling when the node gave up


def test_wait_ready_ends_at_its_deadline_whatever_the_guest_does(guest_at: Any) -> None:
    """The old `wait_ready` capped each hello at 3 s but a trickler stretched it for ever."""
    guest, path = guest_at(trickling(10_000))
    failure = outcome_within(lambda: GuestChannel(path).wait_ready(2))
    assert isinstance(failure, LauncherError) and "did not answer within 2 s" in str(failure)
    assert not guest.finished.is_set()


def test_a_chattering_guest_is_given_up_after_a_bounded_number_of_lines(guest_at: Any) -> None:
    """Lines for some other request, as fast as it can: the old channel read them for ever
    (each read returned something, so its per-read timeout never fired)."""
    _, path = guest_at(chattering)
    failure = outcome_within(lambda: GuestChannel(path, timeout_s=20).request({"op": "hello"}))
    assert isinstance(failure, LauncherError) and "lines without answering" in str(failure)


def test_deep_nesting_is_refused_before_parsing(guest_at: Any) -> None:
    """100,000 nested brackets: the old channel handed them to json.loads, which raised
    RecursionError, an error no caller caught."""
    _, path = guest_at(answering_raw(b'"ok": true, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
    failure = outcome_within(lambda: GuestChannel(path, timeout_s=5).request({"op": "hello"}))
    assert isinstance(failure, LauncherError) and "nests deeper" in str(failure)


def test_nesting_within_the_limit_and_brackets_in_strings_are_fine(guest_at: Any) -> None:
    nested = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    _, path = guest_at(
        answering_raw(b'"ok": true, "s": "' + b"[{" * 10_000 + b'", "x": ' + nested + b"}")
    )
    answer = GuestChannel(path, timeout_s=5).request({"op": "hello"})
    assert answer.text("s", max_chars=20_000) == "[{" * 10_000


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ok": "yes"}, "ok is not true or false"),  # the old channel took "yes" for true
        ({"ok": 1}, "ok is not true or false"),
        ({}, "has no ok"),
        ({"ok": False, "error": "no", "retry": "please"}, "retry is not true or false"),
    ],
)
def test_the_ok_and_retry_flags_must_be_booleans(
    guest_at: Any, fields: dict[str, Any], message: str
) -> None:
    """The old channel treated any truthy `ok` as success and any falsy one as a refusal."""
    _, path = guest_at(answering(fields))
    with pytest.raises(LauncherError, match=message) as caught:
        GuestChannel(path, timeout_s=5).request({"op": "hello"})
    assert not isinstance(caught.value, GuestRefused)


def test_a_refusal_quotes_the_guests_reason_and_bounds_it(guest_at: Any) -> None:
    _, path = guest_at(answering({"ok": False, "error": "no\nFAKE LOG LINE"}))
    with pytest.raises(GuestRefused) as refused:
        GuestChannel(path, timeout_s=5).request({"op": "attest"})
    assert "\n" not in str(refused.value)  # repr-quoted: the guest writes no log lines of its own
    _, path = guest_at(answering({"ok": False, "error": "x" * 100_000}))
    with pytest.raises(LauncherError, match="error is not"):
        GuestChannel(path, timeout_s=5).request({"op": "attest"})


@pytest.mark.parametrize(
    "installed", [5, "secret", [1, 2], None, {"a": "b"}, ["x" * 5000], ["n"] * 10_000]
)
def test_installed_of_the_wrong_type_is_a_clean_error(tmp_path: Path, installed: Any) -> None:
    """`"installed": 5` made the old launcher raise TypeError (iterating an int), which no
    relay caught: every later relay and console pass aborted, for every lease."""
    launcher = QemuLauncher(tmp_path / "run", signer=None)  # type: ignore[arg-type]
    launcher.guest_dir(7).mkdir(parents=True)
    (launcher.guest_dir(7) / "spec.json").write_text(json.dumps({"image": "i"}))
    guest = FakeGuest(launcher.agent_socket(7), answering({"ok": True, "installed": installed}))
    try:
        with pytest.raises(LauncherError, match="installed is not"):
            launcher.deliver_secrets(7, SEALED)
    finally:
        guest.close()
        launcher.stop(7)


def test_the_accessors_check_types_and_bounds() -> None:
    answer = GuestAnswer(
        "attest",
        {"n": 5, "b": True, "h": "00ff", "odd": "0f0", "s": "x", "o": {"k": 1}, "z": None},
    )
    assert answer.integer("n") == 5 and answer.flag("b") is True
    assert answer.hex_bytes("h", size=2) == b"\x00\xff"
    assert answer.record("o") is not None and answer.record("z") is None
    assert answer.integer("missing", default=3) == 3
    for bad, message in [
        (lambda: answer.integer("b"), "b is not an integer"),  # True is no integer here
        (lambda: answer.integer("n", maximum=4), "n is not between"),
        (lambda: answer.hex_bytes("odd"), "odd is not hex"),
        (lambda: answer.hex_bytes("n"), "n is not hex"),
        (lambda: answer.hex_bytes("h", size=84), "h is not 84 bytes"),
        (lambda: answer.text("n"), "n is not a string"),
        (lambda: answer.record("s"), "s is not an object"),
        (lambda: answer.texts("missing"), "has no missing"),
        (lambda: (answer.record("o") or answer).text("k"), "attest.o: k is not a string"),
    ]:
        with pytest.raises(LauncherError, match=message):
            bad()
