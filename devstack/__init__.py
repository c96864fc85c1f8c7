"""The embedded stack behind `cvm up`, `cvm down` and `cvm demo`.

    from devstack import EmbeddedStack, StackConfig
    with EmbeddedStack(StackConfig(Path(".cvm"), nodes=3)) as stack:
        stack.state.api_url, stack.deployment

Layout of the data directory: `deployment.json` (the record every command reads),
`stack.json` (pid file: runner, process groups, URLs, nodes), `wallets/` (renter keystores,
kept across restarts) and `stack/` (keys, logs, store, Redis, agents' state; wiped at start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.errors import StackError
    from devstack.fleet import NodeProfile, default_profiles
    from devstack.runner import DEMO_MEASUREMENT, DEPLOYMENT_FILE, EmbeddedStack, StackConfig
    from devstack.state import NodeRecord, StackState, read_state, running_state, stop_stack

# Loaded on first use: `cvm --help` imports `devstack.cli`, and with it this package, and
# must not pay for web3 (see cvm/cli/__init__.py).
_EXPORTS = {
    "StackError": "devstack.errors",
    "NodeProfile": "devstack.fleet",
    "default_profiles": "devstack.fleet",
    "DEMO_MEASUREMENT": "devstack.runner",
    "DEPLOYMENT_FILE": "devstack.runner",
    "EmbeddedStack": "devstack.runner",
    "StackConfig": "devstack.runner",
    "NodeRecord": "devstack.state",
    "StackState": "devstack.state",
    "read_state": "devstack.state",
    "running_state": "devstack.state",
    "stop_stack": "devstack.state",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'devstack' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [
    "DEMO_MEASUREMENT",
    "DEPLOYMENT_FILE",
    "EmbeddedStack",
    "NodeProfile",
    "NodeRecord",
    "StackConfig",
    "StackError",
    "StackState",
    "default_profiles",
    "read_state",
    "running_state",
    "stop_stack",
]
