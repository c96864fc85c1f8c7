"""Failover (issue 20) on a real anvil: a lease whose node is at fault moves to another node under
the same id, through `chain.leases.failover` and `chain.keys`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from cvm.chain import ContractRevert, LeaseStatus
from tests.fixtures.chain import (
    CONFIG,
    DEPOSIT,
    LEASE_SPEC,
    MEASUREMENT,
    NODE_SPEC,
    STAKE,
    ChainSystem,
)

pytestmark = pytest.mark.integration

RATE = NODE_SPEC.price_per_vcpu_second * LEASE_SPEC.vcpu
BOND = CONFIG.min_stake * CONFIG.slash_bps // 10_000


def expect(call: Callable[[], object], name: str) -> ContractRevert:
    with pytest.raises(ContractRevert) as caught:
        call()
    assert caught.value.name == name, str(caught.value)
    return caught.value


def second_node(chain: ChainSystem) -> LocalAccount:
    """Another node key of the fixture operator, registered and staked."""
    node = chain.anvil.new_account()
    chain.register_node(node)
    chain.operator.nodes.stake(node.address, STAKE)
    return node


def test_failover_moves_the_lease_to_another_node(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, chain.key_policy(failover=True))
    old = chain.accounts.node_key.address
    nonce = chain.client().attestations.attestation_nonce(lease_id)
    chain.advance(LEASE_SPEC.reattest_interval + 10)

    result = chain.stranger.leases.failover(lease_id)
    event = result.event("LeaseFailedOver")
    args = event.args
    assert (args["leaseId"], args["oldNode"], args["reason"]) == (lease_id, old, 2)
    leases = chain.client().leases
    lease = leases.get_lease(lease_id)
    earned = LEASE_SPEC.reattest_interval * RATE
    assert lease.status is LeaseStatus.OPEN and lease.deposit == DEPOSIT - earned
    assert leases.credits(chain.accounts.operator.address) == earned
    assert leases.declined_by(lease_id, old) and leases.failovers(lease_id) == 1
    segment = leases.segment_of(lease_id, old)
    assert (segment.rate_per_second, segment.earned, segment.bond) == (RATE, earned, BOND)
    attestations = chain.client().attestations
    assert not attestations.is_attested(lease_id, MEASUREMENT)
    assert attestations.progress_of(lease_id).nonce == 0
    assert attestations.attestation_nonce(lease_id) == nonce
    expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_DeclinedBefore")

    new = second_node(chain)
    chain.client(new).leases.accept_lease(lease_id)
    chain.client(new).attestations.submit(
        lease_id, nonce, b"\x02" * 32, MEASUREMENT, 7, b"\xcc" * 32, signer="0x" + "9e" * 20
    )
    chain.verifier.attestations.confirm(lease_id, b"\x02" * 32, True)
    assert attestations.is_attested(lease_id, MEASUREMENT)
    keys = chain.client().keys
    assert keys is not None and keys.is_releasable(lease_id, MEASUREMENT)
    events = [e.name for e in chain.client().fetch_events(result.block_number)]
    assert events.index("LeaseFailedOver") < events.index("LeaseAccepted")


def test_first_attestation_missed_fails_over_with_the_bond_slashed(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, chain.key_policy(failover=True))
    chain.advance(CONFIG.attestation_window + 1)
    key = chain.accounts.node_key.address
    event = chain.stranger.leases.failover(lease_id).event("LeaseFailedOver")
    assert event.args["reason"] == 1
    assert chain.client().nodes.get_node(key).stake == STAKE - BOND
    assert chain.client().leases.get_lease(lease_id).deposit == DEPOSIT


def test_failover_refused_without_policy_consent_or_fault(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    expect(lambda: chain.stranger.leases.failover(lease_id), "LeaseMarket_FailoverNotAllowed")
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, chain.key_policy(failover=False))
    chain.advance(LEASE_SPEC.reattest_interval + 1)
    expect(lambda: chain.stranger.leases.failover(lease_id), "LeaseMarket_FailoverNotAllowed")
    # The renter allows it again: the lease may move.
    chain.renter.keys.set_failover(lease_id, True)
    chain.stranger.leases.failover(lease_id)


def test_not_at_fault_is_refused(chain: ChainSystem) -> None:
    lease_id = chain.attested_lease()
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, chain.key_policy(failover=True))
    expect(lambda: chain.stranger.leases.failover(lease_id), "LeaseMarket_NotAtFault")


def test_key_service_is_set_once(chain: ChainSystem) -> None:
    assert chain.client().leases.key_service() == chain.deployment.key_service
    expect(
        lambda: chain.admin.leases.set_key_service(chain.deployment.token),
        "LeaseMarket_KeyServiceAlreadySet",
    )


def test_a_rejected_attestation_moves_the_lease_instead_of_ending_it(chain: ChainSystem) -> None:
    # A node that submits a bad report must not end a lease its renter wants kept (the close
    # would make the holders delete the shares): the lease moves, the node's bond burns.
    lease_id = chain.attested_lease()
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, chain.key_policy(failover=True))
    old = chain.accounts.node_key.address
    chain.advance(100)
    chain.renter.leases.challenge(lease_id)  # a re-attestation is taken early only when challenged
    chain.submit(lease_id, b"\x0b" * 32)
    stake = chain.client().nodes.get_node(old).stake
    result = chain.verifier.attestations.confirm(lease_id, b"\x0b" * 32, False)
    names = [log.name for log in chain.client().fetch_events(result.block_number)]
    assert names.index("AttestationRejected") < names.index("LeaseFailedOver")
    assert "LeaseClosed" not in names
    args = result.event("LeaseFailedOver").args
    assert (args["leaseId"], args["oldNode"], args["reason"]) == (lease_id, old, 4)
    leases = chain.client().leases
    lease = leases.get_lease(lease_id)
    assert lease.status is LeaseStatus.OPEN and leases.failovers(lease_id) == 1
    segment = leases.segment_of(lease_id, old)
    assert segment.rejected and segment.bond == BOND
    assert lease.deposit == DEPOSIT - segment.earned and segment.earned > 0
    assert chain.client().nodes.get_node(old).stake == stake - BOND
    keys = chain.client().keys
    assert keys is not None and not keys.is_releasable(lease_id, MEASUREMENT)
    expect(lambda: chain.node.leases.accept_lease(lease_id), "LeaseMarket_DeclinedBefore")
