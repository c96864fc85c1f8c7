"""`python -m node_agent`: run the agent with the settings from the environment.

The keystore password comes from `CVM_NODE_PASSWORD_FILE` (how a service manager starts
it) or from the pipe `cvm node run` hands over after prompting (`CVM_PASSWORD_FD`).
"""

from __future__ import annotations

import logging
import sys

from cvm.config import get_settings
from cvm.wallet import WalletError
from node_agent.errors import AgentError
from node_agent.runtime import load_node_account
from node_agent.worker import run_worker


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    try:
        account = load_node_account(settings)
    except (AgentError, WalletError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_worker(settings, account)
    return 0


if __name__ == "__main__":
    sys.exit(main())
