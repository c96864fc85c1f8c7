"""What the benchmarks share: a free port for a server they start, a wait until it answers,
and one percentile formula (bench never imports tests, which have their own port and wait)."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """Poll `condition` until it returns something truthy (that value); TimeoutError after
    `timeout` s. An exception from `condition` counts as "not up yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `fraction` of all values
    at or below it (so p50 of 1..100 is 50 and p99 is 99)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds_by_group(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process group has used so far, by name: every live
    process whose group id is the named one (a stack's child and all it forked), plus what
    its reaped children used. Sampled before and after a run, the difference says where the
    machine's time went."""
    import psutil

    names = {pgid: name for name, pgid in groups.items()}
    used = dict.fromkeys(groups, 0.0)
    for process in psutil.process_iter():
        try:
            name = names.get(os.getpgid(process.pid))
            if name is None:
                continue
            times = process.cpu_times()
            used[name] += times.user + times.system + times.children_user + times.children_system
        except (psutil.Error, ProcessLookupError):
            continue  # gone meanwhile
    return used


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used so far."""
    times = os.times()
    return times.user + times.system
