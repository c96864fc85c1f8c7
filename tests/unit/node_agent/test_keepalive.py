"""`ReservationKeepalive`: calls the backend while the block runs, the next call at half the
time the backend says is left (bounded), stops once the reservation is accepted or the backend
refuses it, and logs a failure once without ever raising into the boot."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from eth_account import Account

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import ReservationKeepaliveView
from cvm.eip712 import Domain
from node_agent.keepalive import ReservationKeepalive
from tests.fixtures.processes import wait_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _view(status: str = "reserved", expires_in_s: float = 0.0) -> ReservationKeepaliveView:
    return ReservationKeepaliveView(
        lease_id=7, node="0x" + "11" * 20, status=status, deadline=NOW, max_deadline=NOW,
        expires_in_s=expires_in_s,
    )  # fmt: skip


class FakeApi:
    """Answers keepalives from a script (the last answer repeats), counting the calls."""

    def __init__(self, *answers: ReservationKeepaliveView | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def keep_reservation_alive(self, lease_id: int, **_: Any) -> ReservationKeepaliveView:
        with self.lock:
            self.calls.append(lease_id)
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def count(self) -> int:
        with self.lock:
            return len(self.calls)


def _keepalive(api: FakeApi, first_delay_s: float = 0.01) -> ReservationKeepalive:
    return ReservationKeepalive(
        cast(ApiClient, api), Account.create(), Domain(1, "0x" + "22" * 20),
        max_interval_s=0.05, min_interval_s=0.01, first_delay_s=first_delay_s,
    )  # fmt: skip


def test_it_keeps_calling_while_the_block_runs_and_stops_after() -> None:
    api = FakeApi(_view(expires_in_s=0.04))
    with _keepalive(api).kept(7):
        wait_for(lambda: api.count() >= 3, timeout=10, what="three keepalives")
    after = api.count()
    assert set(api.calls) == {7}
    threading.Event().wait(0.2)
    assert api.count() == after


@pytest.mark.parametrize(
    "answer",
    [_view(status="accepted", expires_in_s=0.01), ApiError(409, "no live reservation")],
    ids=["accepted", "refused"],
)
def test_it_stops_once_accepted_or_refused(answer: Any) -> None:
    api = FakeApi(answer)
    keepalive = _keepalive(api)
    with keepalive.kept(7):
        wait_for(lambda: api.count() >= 1, timeout=10, what="a keepalive")
        threading.Event().wait(0.2)
        assert api.count() == 1


def test_a_backend_not_heard_is_logged_once_and_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi(ApiError(0, "connection refused"), ApiError(503, "busy"), _view(expires_in_s=1))
    with caplog.at_level(logging.WARNING, logger="node_agent.keepalive"):
        with _keepalive(api).kept(7):  # never raises into the block
            wait_for(lambda: api.count() >= 4, timeout=10, what="keepalives after failures")
    warnings = [r for r in caplog.records if "keepalive failed" in r.getMessage()]
    assert len(warnings) == 1


def test_a_block_done_before_the_first_delay_sends_none() -> None:
    """A boot, report and upload done sooner than the first delay (the simulated launcher, a
    warm guest) costs the backend no request at all; a longer one is kept alive."""
    api = FakeApi(_view(expires_in_s=0.04))
    with _keepalive(api, first_delay_s=0.3).kept(7):
        pass
    threading.Event().wait(0.5)
    assert api.count() == 0
    with _keepalive(api, first_delay_s=0.3).kept(8):
        wait_for(lambda: api.count() >= 1, timeout=10, what="a keepalive after the delay")
    assert set(api.calls) == {8}
