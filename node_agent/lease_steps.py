"""Per-lease steps off the scheduler's thread: a bounded pool of threads, a time budget per
pass, and at most one step of a kind per lease at a time.

A guest can be slow on purpose (it trickles its answers, it never boots). Its steps then
hold one thread of the pool, never the scheduler: the pass waits for its steps until its
budget is spent and goes on, the other leases' steps run beside it, and a lease whose step
from an earlier pass still runs is skipped rather than queued a second time. Each step is
guarded: its failure is logged for its lease and spares the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from cvm.api_client import ApiError
from cvm.chain import ChainError
from node_agent.errors import AgentError

log = logging.getLogger(__name__)

# Threads for guest steps: each stuck guest holds one until its channel's deadline, so this
# is how many guests may stall at once before the others' steps have to wait in line.
DEFAULT_WORKERS = 8
# How long one pass waits for its leases' steps (a first boot, an image fetch or a guest's
# deadline may take longer: such a step goes on in its thread and the pass does not wait).
DEFAULT_BUDGET_S = 60.0

# Failures with a clear message of their own (no trace needed in the log).
_EXPECTED: tuple[type[Exception], ...] = (AgentError, ChainError, ApiError, OSError)


@dataclass
class StepsOutcome:
    """What became of one kind of step in one pass, by lease id (each list sorted)."""

    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)  # past the budget: still in its thread
    skipped: list[int] = field(default_factory=list)  # its step from before was still running


def guarded(kind: str, lease_id: int, step: Callable[[int], object]) -> bool:
    """`step(lease_id)`; False, and logged for this lease alone, if it raised anything."""
    try:
        step(lease_id)
        return True
    except _EXPECTED as exc:
        log.warning("%s lease %s: %s", kind, lease_id, exc)
        return False
    except Exception:
        # Anything else (a guest's answer no parser expected, a bug) concerns this lease
        # only: logged with its trace, and the other leases go on.
        log.exception("%s lease %s: unexpected error", kind, lease_id)
        return False


class LeaseSteps:
    """Runs per-lease steps on `workers` threads (0: in the caller's thread, for tests and
    tools that want a pass to be synchronous)."""

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self._pool = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cvm-lease-step")
            if workers > 0
            else None
        )
        self._busy: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def busy(self, kind: str, lease_id: int) -> bool:
        """Whether a `kind` step of the lease is queued or running now."""
        with self._lock:
            return (kind, lease_id) in self._busy

    def run(
        self,
        kind: str,
        lease_ids: Iterable[int],
        step: Callable[[int], object],
        deadline: float | None = None,
    ) -> StepsOutcome:
        """Start `step(lease_id)` for each lease whose previous `kind` step is over, and wait
        for them until `deadline` (time.monotonic(); None: until all are done)."""
        outcome = StepsOutcome()
        started: dict[Future[bool], int] = {}
        for lease_id in dict.fromkeys(lease_ids):  # each once, in order
            with self._lock:
                if (kind, lease_id) in self._busy:
                    outcome.skipped.append(lease_id)
                    continue
                self._busy.add((kind, lease_id))
            if self._pool is None:
                ok = self._guarded(kind, lease_id, step)
                (outcome.done if ok else outcome.failed).append(lease_id)
                continue
            try:
                started[self._pool.submit(self._guarded, kind, lease_id, step)] = lease_id
            except RuntimeError:  # shut down: the agent is stopping
                self._release(kind, lease_id)
                outcome.skipped.append(lease_id)
        if started:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            finished, _ = wait(started, timeout=timeout)
            for future, lease_id in started.items():
                if future not in finished:
                    outcome.running.append(lease_id)
                    log.warning(
                        "%s lease %s: still running after the pass's budget", kind, lease_id
                    )
                else:
                    (outcome.done if future.result() else outcome.failed).append(lease_id)
        for ids in (outcome.done, outcome.failed, outcome.running, outcome.skipped):
            ids.sort()
        return outcome

    def _guarded(self, kind: str, lease_id: int, step: Callable[[int], object]) -> bool:
        try:
            return guarded(kind, lease_id, step)
        finally:
            self._release(kind, lease_id)

    def _release(self, kind: str, lease_id: int) -> None:
        with self._lock:
            self._busy.discard((kind, lease_id))

    def close(self) -> None:
        """Start no more steps; those running end at their own deadlines (threads cannot be
        killed, and every guest exchange has a deadline)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
