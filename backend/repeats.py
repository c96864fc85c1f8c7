"""Log a repeating condition once, with a count, instead of once per background pass.

`report(key, ...)` logs the first occurrence of `key` and only counts the next ones;
`clear(key)` logs how many times it was seen when it ends (e.g. the node finally fits,
the database is back). A summary with the running count is logged at most every
`summary_s` while the condition lasts, so a long outage stays visible without flooding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Seen:
    message: str
    count: int
    last_summary: float


class RepeatedConditions:
    """The conditions one component is reporting, by key."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.INFO,
        summary_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.log = logger
        self.level = level
        self.summary_s = summary_s
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[object, _Seen] = {}

    def report(self, key: object, message: str, *args: object, exc_info: bool = False) -> None:
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_keys:
                self._seen.clear()  # bounded memory; worst case a condition is logged again
            text = message % args if args else message
            self._seen[key] = _Seen(text, 1, now)
            self.log.log(self.level, "%s", text, exc_info=exc_info)
            return
        seen.count += 1
        if now - seen.last_summary >= self.summary_s:
            seen.last_summary = now
            self.log.log(self.level, "%s (still, %d times so far)", seen.message, seen.count)

    def clear(self, key: object) -> None:
        seen = self._seen.pop(key, None)
        if seen is not None and seen.count > 1:
            self.log.log(self.level, "%s (ended after %d times)", seen.message, seen.count)

    def count(self, key: object) -> int:
        seen = self._seen.get(key)
        return seen.count if seen is not None else 0
