"""One lock per lease across the agent's threads and processes (fcntl locks on small files).

A lease's steps must not interleave: a redelivered task and the reconciler could otherwise
both find the guest missing and start two. The kernel drops the lock when its holder dies,
so a SIGKILLed agent never leaves a lease locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def lease_lock(directory: Path, lease_id: int) -> Iterator[None]:
    """Hold the lock of `lease_id` for the duration of the block (waits for it)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"lease-{lease_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
