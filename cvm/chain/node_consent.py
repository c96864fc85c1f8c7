"""The node key's EIP-712 consent to the operator that registers it in `NodeRegistry`.

`NodeRegistry.register` takes this signature so that nobody who copies a pending
registration can claim the node key under another operator (front-running). The domain is
the registry's own ("cvm NodeRegistry", version "1", chain id, registry address), which
binds a consent to one chain and one deployment; a node key registers at most once, so no
nonce is needed. The off-chain messages of `cvm.eip712` use a different domain name, so no
signature can serve as both.
"""

from __future__ import annotations

from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from cvm.chain.deployment import Deployment

DOMAIN_NAME = "cvm NodeRegistry"
DOMAIN_VERSION = "1"

NODE_CONSENT_TYPE = [
    {"name": "nodeKey", "type": "address"},
    {"name": "operator", "type": "address"},
]


def node_consent_message(node_key: str, operator: str, deployment: Deployment) -> SignableMessage:
    """The signable form of `NodeConsent(nodeKey, operator)` under the deployment's registry."""
    return encode_typed_data(
        domain_data={
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": deployment.chain_id,
            "verifyingContract": to_checksum_address(deployment.node_registry),
        },
        message_types={"NodeConsent": NODE_CONSENT_TYPE},
        message_data={
            "nodeKey": to_checksum_address(node_key),
            "operator": to_checksum_address(operator),
        },
    )


def sign_node_consent(node_account: LocalAccount, operator: str, deployment: Deployment) -> bytes:
    """The 65-byte signature (r || s || v) by which `node_account` consents to `operator`."""
    message = node_consent_message(node_account.address, operator, deployment)
    return bytes(node_account.sign_message(message).signature)
