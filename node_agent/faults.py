"""Crash points for the recovery tests: the agent SIGKILLs itself right after a named step.

`CVM_NODE_CRASH_AT=<step>` (accepted, launched, reported, uploaded, submitted, and
accepted_submitted in the combined accept mode) makes the
agent kill its own process at the worst moment for that step: after it acted on the
world (chain, guest, backend) and before it recorded so in its store. Unset, this does
nothing; it exists so that tests crash a real worker at exact points, not at random.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "CVM_NODE_CRASH_AT"
STEPS = ("accepted", "launched", "reported", "uploaded", "submitted")
# The combined path's (`CVM_NODE_ACCEPT_MODE=combined`): acceptAndSubmit mined, not yet stored.
COMBINED_STEPS = ("launched", "reported", "uploaded", "accepted_submitted")


def crash_point(step: str) -> None:
    """Die here, as `kill -9` would, if the environment asks for it."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
