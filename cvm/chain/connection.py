"""The one way to reach the chain: which RPC URL wins, and a check that it serves the deployment.

Every part (CLI, SDK, backend, node agent) connects through `connect` (a typed client on
a deployment) or `open_web3` (a bare connection, e.g. to deploy). The precedence rule:

1. an explicit URL (a `--rpc` option, a constructor argument);
2. `CVM_RPC_URL` when it is set (environment or settings file);
3. the `rpc_url` the deployment record remembers;
4. the built-in default, `http://127.0.0.1:8545`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from web3 import Web3
from web3.types import RPCEndpoint

from cvm.chain.client import ChainClient
from cvm.chain.deployment import Deployment
from cvm.chain.errors import ChainError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from cvm.config import Settings

# Seconds one JSON-RPC request may take before it counts as unreachable.
RPC_TIMEOUT_S = 30


class ChainUnreachable(ChainError):
    """No answer from the RPC URL."""


class WrongNetwork(ChainError):
    """The RPC URL answers, but for another chain or without the deployment's contracts."""


def resolve_rpc_url(
    explicit: str | None = None,
    deployment: Deployment | None = None,
    settings: Settings | None = None,
) -> str:
    """The RPC URL to use, by the module's precedence rule."""
    if explicit:
        return explicit
    if settings is None:
        from cvm.config import get_settings

        settings = get_settings()
    if "rpc_url" in settings.model_fields_set:
        return settings.rpc_url
    if deployment is not None and deployment.rpc_url:
        return deployment.rpc_url
    return settings.rpc_url


def open_web3(rpc_url: str) -> Web3:
    """A bare HTTP JSON-RPC connection to `rpc_url` (no check made).

    The endpoint's chain id is asked once per thread and remembered: web3's validation
    asks for it before every `eth_call` and gas estimate otherwise (one more round trip
    each). The check itself stays: a transaction naming another chain is still refused.
    """
    provider = Web3.HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": RPC_TIMEOUT_S},
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    return Web3(provider)


def check_network(w3: Web3, deployment: Deployment, rpc_url: str = "the RPC") -> None:
    """Raise `ChainUnreachable` or `WrongNetwork` unless `w3` serves `deployment`."""
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # any transport failure means the same to the caller
        raise ChainUnreachable(
            f"cannot reach the chain at {rpc_url} ({type(exc).__name__}): is it running?"
        ) from None
    if chain_id != deployment.chain_id:
        raise WrongNetwork(
            f"wrong network: {rpc_url} is chain {chain_id}, the deployment is on chain "
            f"{deployment.chain_id}"
        )
    try:
        code = w3.eth.get_code(Web3.to_checksum_address(deployment.lease_market))
    except Exception as exc:
        raise ChainUnreachable(f"cannot read from {rpc_url} ({type(exc).__name__})") from None
    if not code:
        raise WrongNetwork(
            f"wrong network: no LeaseMarket at {deployment.lease_market} on chain {chain_id} "
            "(a restarted local chain? read the new deployment record)"
        )


def connect(
    deployment: Deployment,
    account: LocalAccount | None = None,
    *,
    rpc_url: str | None = None,
    settings: Settings | None = None,
    check: bool = True,
) -> ChainClient:
    """A typed client of `deployment` acting as `account` (None: read-only).

    `rpc_url` overrides the precedence rule's later steps; `check=False` skips the network
    check (for a process that must start before the chain answers and retries by itself).
    """
    url = resolve_rpc_url(rpc_url, deployment, settings)
    w3 = open_web3(url)
    if check:
        check_network(w3, deployment, url)
    return ChainClient(w3, deployment, account)
