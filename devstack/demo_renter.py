"""The renter both demos start from (`cvm demo` and `cvm demo --launcher qemu`): a fresh
keystore funded from the local faucet.

Both `devstack.cli.demo` and `devstack.vm_demo` import it, and the VM demo imports nothing
of the CLI module, so the two never import each other in a circle (an import-linter contract
in pyproject.toml keeps it so).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cvm.cli.plumbing import literal, out

if TYPE_CHECKING:
    from cvm.chain import ChainClient
    from cvm.renter import Renter
    from devstack import StackState


def new_demo_renter(state: StackState, chain: ChainClient) -> Renter:
    """A fresh renter keystore, funded from the local faucet (both demos share it).

    Its name is unique, so a second demo on the same running stack makes its own."""
    from cvm.api_client import ApiClient
    from cvm.chain import Deployment
    from cvm.renter import Renter
    from devstack.faucet import fund, local_deployer
    from devstack.keys import new_stack_key

    wallets = Path(state.data_dir) / "stack" / "demo-wallets"
    key = new_stack_key(wallets, f"renter-{int(time.time() * 1000)}-{secrets.token_hex(4)}")
    out().print(f"keystore {literal(key.keystore)} for renter {key.address}")
    deployer = local_deployer(Deployment.load(state.deployment_file))
    fund(chain.with_account(deployer), key.address, 100 * 10**18, 10**19)
    out().print("funded from the local faucet: 100 tokens, 10 ETH")
    return Renter(chain.with_account(key.account), ApiClient(state.api_url))
