"""The local stack's faucet: test tokens and ether for a wallet, from the deployer.

Only a deployment made by `cvm up` has one: it deploys from anvil's public development
account 0, which owns the test token. Anywhere else this refuses rather than guess.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cvm.chain import ChainClient, Deployment
from cvm.chain.anvil import DEV_MNEMONIC
from devstack.errors import StackError


def local_deployer(deployment: Deployment) -> LocalAccount:
    """The deployer's key of a local stack; StackError for any other deployment."""
    Account.enable_unaudited_hdwallet_features()
    deployer: LocalAccount = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/0")
    if not deployment.extra.get("local") or deployer.address != deployment.deployer:
        raise StackError("no faucet: this deployment is not a local `cvm up` stack")
    return deployer


def fund(admin: ChainClient, address: str, token_amount: int, wei: int) -> int:
    """Mint `token_amount` test tokens and send `wei` to `address`; its new token balance."""
    if admin.sender is None:
        raise StackError("the faucet needs the deployer's key")
    if token_amount:
        admin.token.mint(address, token_amount)
    if wei:
        admin.sender.send({"to": address, "value": wei})
    return admin.token.balance_of(address)
