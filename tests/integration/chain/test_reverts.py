"""Every bad call surfaces in Python as the contract's named custom error, with arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from eth_utils import keccak

from cvm.chain import (
    ChainError,
    ContractRevert,
    LeaseStatus,
    TeeType,
    node_consent_message,
    sign_node_consent,
)
from tests.fixtures.chain import (
    GUEST_SIGNER,
    LEASE_SPEC,
    MEASUREMENT,
    NODE_SPEC,
    STAKE,
    ChainSystem,
)

pytestmark = pytest.mark.integration

ZERO_ADDRESS = "0x" + "00" * 20


def expect(action: Callable[[], object], name: str) -> ContractRevert:
    with pytest.raises(ContractRevert) as caught:
        action()
    assert caught.value.name == name, str(caught.value)
    assert str(caught.value).startswith(name + "(")
    assert isinstance(caught.value, ChainError)
    return caught.value


def test_bad_measurement_length(chain: ChainSystem) -> None:
    error = expect(
        lambda: chain.open_lease(measurement=b"\x01" * 47), "LeaseMarket_InvalidMeasurementLength"
    )
    assert error.args_by_name == {"length": 47}
    assert str(error) == "LeaseMarket_InvalidMeasurementLength(length=47)"


def test_zero_deposit_and_zero_price(chain: ChainSystem) -> None:
    expect(lambda: chain.open_lease(deposit=0), "LeaseMarket_ZeroAmount")
    expect(lambda: chain.open_lease(max_price=0), "LeaseMarket_ZeroMaxPrice")
    expect(
        lambda: chain.open_lease(spec=replace(LEASE_SPEC, vcpu=0)), "LeaseMarket_InvalidLeaseSpec"
    )


def test_unknown_lease(chain: ChainSystem) -> None:
    error = expect(lambda: chain.renter.leases.top_up(999, 1), "LeaseMarket_LeaseNotFound")
    assert error.args_by_name == {"leaseId": 999}


def test_only_the_renter_closes(chain: ChainSystem) -> None:
    lease_id = chain.open_lease()
    error = expect(lambda: chain.stranger.leases.close_lease(lease_id), "LeaseMarket_NotRenter")
    assert error.args_by_name == {
        "leaseId": lease_id,
        "caller": chain.accounts.stranger.address,
        "renter": chain.accounts.renter.address,
    }


def test_accept_checks_registration_stake_tee_and_price(chain: ChainSystem) -> None:
    lease_id = chain.open_lease()
    expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_NodeNotRegistered")
    key = chain.accounts.node_key.address
    chain.register_node(chain.accounts.node_key)
    error = expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_StakeTooLow")
    assert error.args_by_name["stake"] == 0
    chain.operator.nodes.stake(key, STAKE)
    chain.operator.nodes.update(key, replace(NODE_SPEC, tee_type=TeeType.TDX), "")
    error = expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_TeeTypeMismatch")
    assert (error.args_by_name["required"], error.args_by_name["offered"]) == (1, 2)
    expensive = replace(NODE_SPEC, price_per_vcpu_second=10**13)
    chain.operator.nodes.update(key, expensive, "")
    expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_PriceTooHigh")
    chain.operator.nodes.update(key, NODE_SPEC, "")
    chain.node.leases.accept_lease(lease_id)
    error = expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_UnexpectedStatus")
    assert error.args_by_name["status"] == LeaseStatus.ACTIVE


def test_registry_guards(chain: ChainSystem) -> None:
    key = chain.accounts.node_key.address
    chain.register_node(chain.accounts.node_key)
    expect(
        lambda: chain.register_node(chain.accounts.node_key), "NodeRegistry_NodeAlreadyRegistered"
    )
    expect(lambda: chain.stranger.nodes.stake(key, 1), "NodeRegistry_NotOperator")
    expect(lambda: chain.operator.nodes.stake(key, 0), "NodeRegistry_ZeroAmount")
    error = expect(
        lambda: chain.operator.nodes.request_unstake(key, 1), "NodeRegistry_UnstakeExceedsStake"
    )
    assert error.args_by_name == {"nodeKey": key, "amount": 1, "stake": 0}
    expect(lambda: chain.stranger.nodes.set_min_stake(1), "OwnableUnauthorizedAccount")


def test_register_needs_the_node_keys_consent(chain: ChainSystem) -> None:
    node, operator, stranger = (
        chain.accounts.node_key,
        chain.accounts.operator,
        chain.accounts.stranger,
    )
    by_stranger = sign_node_consent(stranger, operator.address, chain.deployment)
    error = expect(
        lambda: chain.operator.nodes.register(
            node.address, NODE_SPEC, node_key_signature=by_stranger
        ),
        "NodeRegistry_InvalidNodeKeySignature",
    )
    assert error.args_by_name == {"nodeKey": node.address, "operator": operator.address}

    # A front-runner who copies the operator's pending transaction cannot reuse the consent.
    for_operator = sign_node_consent(node, operator.address, chain.deployment)
    error = expect(
        lambda: chain.stranger.nodes.register(
            node.address, NODE_SPEC, node_key_signature=for_operator
        ),
        "NodeRegistry_InvalidNodeKeySignature",
    )
    assert error.args_by_name == {"nodeKey": node.address, "operator": stranger.address}

    other_chain = replace(chain.deployment, chain_id=chain.deployment.chain_id + 1)
    for_other_chain = sign_node_consent(node, operator.address, other_chain)
    expect(
        lambda: chain.operator.nodes.register(
            node.address, NODE_SPEC, node_key_signature=for_other_chain
        ),
        "NodeRegistry_InvalidNodeKeySignature",
    )
    expect(
        lambda: chain.operator.nodes.register(
            node.address, NODE_SPEC, node_key_signature=for_operator[:64]
        ),
        "NodeRegistry_InvalidNodeKeySignature",
    )
    assert chain.operator.nodes.operator_of(node.address) == ZERO_ADDRESS

    # eth-account's EIP-712 encoding is the contract's.
    message = node_consent_message(node.address, operator.address, chain.deployment)
    digest = keccak(b"\x19" + message.version + message.header + message.body)
    assert chain.operator.nodes.node_consent_digest(node.address, operator.address) == digest
    typehash = keccak(b"NodeConsent(address nodeKey,address operator)")
    assert chain.operator.nodes.node_consent_typehash() == typehash
    tx = chain.operator.nodes.register(node.address, NODE_SPEC, node_key_signature=for_operator)
    assert tx.event("NodeRegistered").args["operator"] == operator.address
    assert chain.operator.nodes.operator_of(node.address) == operator.address


def test_attestation_guards(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    report = b"\x07" * 32
    attestations = chain.node.attestations
    node_key = chain.accounts.node_key.address
    expect(
        lambda: attestations.submit(
            lease_id, 5, report, MEASUREMENT, 1, b"\x00" * 32, signer=GUEST_SIGNER.address
        ),
        "AttestationRegistry_StaleNonce",
    )
    expect(
        lambda: attestations.submit(
            lease_id, 0, report, b"\x00" * 48, 1, b"\x00" * 32, signer=GUEST_SIGNER.address
        ),
        "AttestationRegistry_MeasurementMismatch",
    )
    expect(
        lambda: chain.stranger.attestations.submit(
            lease_id, 0, report, MEASUREMENT, 1, b"\x00" * 32, signer=GUEST_SIGNER.address
        ),
        "AttestationRegistry_NotLeaseNode",
    )
    expect(
        lambda: attestations.submit(
            lease_id, 0, report, MEASUREMENT, 1, b"\x00" * 32, signer=node_key
        ),
        "AttestationRegistry_InvalidSigner",
    )
    expect(
        lambda: chain.verifier.attestations.confirm(lease_id, report, True),
        "AttestationRegistry_NotPending",
    )
    chain.submit(lease_id, report)
    expect(
        lambda: chain.stranger.attestations.confirm(lease_id, report, True),
        "AttestationRegistry_NotEligibleVoter",
    )
    error = expect(
        lambda: chain.verifier.attestations.confirm(lease_id, b"\x08" * 32, True),
        "AttestationRegistry_ReportHashMismatch",
    )
    assert error.args_by_name["pending"] == report


def test_a_token_error_from_inside_the_market_is_named_too(chain: ChainSystem) -> None:
    poor = chain.stranger
    poor.token.approve(chain.deployment.lease_market, 2**256 - 1)
    error = expect(
        lambda: poor.leases.create_lease(LEASE_SPEC, 1, 10, MEASUREMENT), "ERC20InsufficientBalance"
    )
    assert error.args_by_name["sender"] == chain.accounts.stranger.address


def test_a_transaction_that_reverts_after_mining_is_decoded(chain: ChainSystem) -> None:
    """With the gas given (no estimate), the revert happens on chain; the replay names it."""
    sender = chain.stranger.sender
    assert sender is not None
    function = chain.stranger.leases.contract.functions.closeLease(12345)
    with pytest.raises(ContractRevert) as caught:
        sender.transact(function, gas=200_000)
    assert caught.value.name == "LeaseMarket_LeaseNotFound"


def test_views_decode_reverts_and_read_only_clients_cannot_send(chain: ChainSystem) -> None:
    with pytest.raises(ChainError, match="only read"):
        chain.client().leases.close_lease(1)


def test_functions_reserved_for_contracts_refuse_everyone_else(chain: ChainSystem) -> None:
    key = chain.accounts.node_key.address
    stranger = chain.stranger
    error = expect(lambda: stranger.nodes.slash(key, 1, 0), "NodeRegistry_CallerNotLeaseMarket")
    assert error.args_by_name == {"caller": chain.accounts.stranger.address}
    expect(
        lambda: stranger.nodes.record_missed_attestation(key), "NodeRegistry_CallerNotLeaseMarket"
    )
    expect(
        lambda: stranger.attestations.open_lease(77, MEASUREMENT, 60),
        "AttestationRegistry_CallerNotLeaseMarket",
    )
    expect(
        lambda: stranger.leases.on_attestation_rejected(1),
        "LeaseMarket_CallerNotAttestationRegistry",
    )
    # The deployer is owner, not the lease market: owners cannot slash either.
    expect(lambda: chain.admin.nodes.slash(key, 1, 0), "NodeRegistry_CallerNotLeaseMarket")
