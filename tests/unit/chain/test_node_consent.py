"""The node key's consent signature: recoverable to the node key, bound to operator and domain."""

from __future__ import annotations

from dataclasses import replace

from eth_account import Account

from cvm.chain import Deployment, node_consent_message, sign_node_consent

DEPLOYMENT = Deployment(
    chain_id=31337,
    deployer="0x" + "11" * 20,
    start_block=0,
    token="0x" + "22" * 20,
    node_registry="0x" + "33" * 20,
    attestation_registry="0x" + "44" * 20,
    lease_market="0x" + "55" * 20,
    attested_service="0x" + "66" * 20,
)


def test_consent_recovers_to_the_node_key_only_for_its_operator_and_domain() -> None:
    node, operator, other = Account.create(), Account.create(), Account.create()
    signature = sign_node_consent(node, operator.address, DEPLOYMENT)
    assert len(signature) == 65
    message = node_consent_message(node.address, operator.address, DEPLOYMENT)
    assert Account.recover_message(message, signature=signature) == node.address
    for_other = node_consent_message(node.address, other.address, DEPLOYMENT)
    assert Account.recover_message(for_other, signature=signature) != node.address
    other_registry = replace(DEPLOYMENT, node_registry="0x" + "77" * 20)
    elsewhere = node_consent_message(node.address, operator.address, other_registry)
    assert Account.recover_message(elsewhere, signature=signature) != node.address
