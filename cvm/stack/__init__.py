"""The embedded stack behind `cvm up`, `cvm down` and `cvm demo`.

    from cvm.stack import EmbeddedStack, StackConfig
    with EmbeddedStack(StackConfig(Path(".cvm"), nodes=3)) as stack:
        stack.state.api_url, stack.deployment

Layout of the data directory: `deployment.json` (the record every command reads),
`stack.json` (pid file: runner, process groups, URLs, nodes), `wallets/` (renter keystores,
kept across restarts) and `stack/` (keys, logs, store, Redis, agents' state; wiped at start).
"""

from cvm.stack.errors import StackError
from cvm.stack.fleet import NodeProfile, default_profiles
from cvm.stack.runner import DEMO_MEASUREMENT, DEPLOYMENT_FILE, EmbeddedStack, StackConfig
from cvm.stack.state import NodeRecord, StackState, read_state, running_state, stop_stack

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
