"""Per-lease steps off the scheduler's thread: a step still running from an earlier pass is
skipped, not queued twice; a failing step is logged for its lease and spares the others;
the pass waits no longer than its budget."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from node_agent.lease_steps import LeaseSteps
from tests.fixtures.processes import wait_for


def test_a_lease_whose_step_still_runs_is_skipped_and_the_others_go_on() -> None:
    steps = LeaseSteps(workers=4)
    release = threading.Event()
    calls: list[int] = []

    def step(lease_id: int) -> None:
        calls.append(lease_id)
        if lease_id == 1:
            assert release.wait(30)  # a guest that stalls

    try:
        first = steps.run("lease", [1, 2], step, deadline=time.monotonic() + 3)
        assert (first.done, first.running) == ([2], [1])
        second = steps.run("lease", [1, 2], step, deadline=time.monotonic() + 30)
        assert (second.done, second.skipped) == ([2], [1])  # not queued a second time
        assert calls.count(1) == 1 and steps.busy("lease", 1)
        release.set()
        wait_for(lambda: not steps.busy("lease", 1), timeout=30)  # its step ends
        third = steps.run("lease", [1, 2], step)  # no deadline: waits for all of them
        assert third.done == [1, 2] and calls.count(1) == 2
    finally:
        release.set()
        steps.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_step_is_logged_for_its_lease_and_spares_the_others(
    workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    steps = LeaseSteps(workers=workers)
    done: list[int] = []

    def step(lease_id: int) -> None:
        if lease_id == 1:
            raise TypeError("'int' object is not iterable")  # a guest's answer nobody expected
        done.append(lease_id)

    caplog.set_level(logging.WARNING, logger="node_agent.lease_steps")
    outcome = steps.run("relay", [1, 2, 3], step)
    steps.close()
    assert (outcome.failed, outcome.done, sorted(done)) == ([1], [2, 3], [2, 3])
    assert [r.getMessage() for r in caplog.records] == ["relay lease 1: unexpected error"]
    assert not steps.busy("relay", 1)  # free for the next pass
