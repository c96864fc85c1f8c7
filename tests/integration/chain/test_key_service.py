"""KeyService on a real anvil: holders, key policies and their rules, through `chain.keys`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cvm.chain import ContractRevert, KeyPolicy
from tests.fixtures.chain import MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


def test_deployment_records_the_key_service(chain: ChainSystem) -> None:
    keys = chain.client().keys
    assert keys is not None
    assert keys.address == chain.deployment.key_service
    assert keys.lease_market() == chain.deployment.lease_market
    assert keys.attestation_registry() == chain.deployment.attestation_registry
    assert keys.stake_token() == chain.deployment.token
    assert keys.min_holder_stake() == 10**18
    assert keys.unbonding_delay() == 86_400
    assert keys.limits() == {
        "measurement_length": 48,
        "max_measurements": 8,
        "max_policy_holders": 16,
        "max_holders": 64,
    }
    assert "KeyService" in chain.deployment.contracts()
    assert chain.client().attestations.challenge_window() == 900


def test_holder_registers_stakes_unstakes(chain: ChainSystem) -> None:
    holder = chain.staked_holder(b"\x11" * 32)
    keys = chain.client(holder).keys
    assert keys is not None
    info = keys.holder_of(holder.address)
    assert info.registered and info.key == b"\x11" * 32 and info.stake == 10**18
    assert holder.address in keys.active_holders()
    assert keys.is_active_holder(holder.address)
    result = keys.request_unstake_holder(10**18)
    assert result.event("HolderUnstakeRequested").args["amount"] == 10**18
    assert holder.address not in keys.active_holders()
    with pytest.raises(ContractRevert) as caught:
        keys.withdraw_holder_stake()
    assert caught.value.name == "KeyService_StakeLocked"
    chain.advance(86_400)
    assert keys.withdraw_holder_stake().event("HolderUnstaked").args["amount"] == 10**18
    keys.deregister_holder()
    assert not keys.holder_of(holder.address).registered


def test_renter_sets_and_changes_the_policy(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    policy = chain.key_policy(failover=False)
    renter_keys = chain.renter.keys
    assert renter_keys is not None
    assert renter_keys.key_policy_of(lease_id) is None
    event = renter_keys.set_key_policy(lease_id, policy).event("KeyPolicySet")
    assert event.args["leaseId"] == lease_id and event.args["keyVersion"] == 1
    assert renter_keys.key_policy_of(lease_id) == policy
    assert renter_keys.has_key_policy(lease_id)
    assert not renter_keys.failover_allowed(lease_id)
    renter_keys.set_failover(lease_id, True)
    assert renter_keys.failover_allowed(lease_id)
    other = bytes.fromhex("77" * 48)
    renter_keys.update_measurements(lease_id, [MEASUREMENT, other])
    stored = renter_keys.key_policy_of(lease_id)
    assert stored is not None and stored.measurements == (MEASUREMENT, other)
    # A rekey needs a higher version.
    with pytest.raises(ContractRevert) as caught:
        renter_keys.set_key_policy(lease_id, replace(policy, manifest_hash=b"\x01" * 32))
    assert caught.value.name == "KeyService_KeyVersionNotIncreased"
    renter_keys.set_key_policy(lease_id, replace(policy, manifest_hash=b"\x01" * 32, key_version=2))


def test_only_the_renter_and_only_staked_holders(chain: ChainSystem) -> None:
    lease_id = chain.open_lease()
    policy = chain.key_policy()
    stranger_keys = chain.stranger.keys
    assert stranger_keys is not None
    with pytest.raises(ContractRevert) as caught:
        stranger_keys.set_key_policy(lease_id, policy)
    assert caught.value.name == "KeyService_NotRenter"
    sybil = chain.anvil.new_account().address
    bad = replace(policy, holders=(*policy.holders[:2], sybil))
    assert chain.renter.keys is not None
    with pytest.raises(ContractRevert) as caught:
        chain.renter.keys.set_key_policy(lease_id, bad)
    assert caught.value.name == "KeyService_HolderNotActive"


def test_policy_bounds_are_checked_before_sending() -> None:
    good = {
        "measurements": (MEASUREMENT,),
        "failover": True,
        "threshold": 1,
        "holders": ("0x" + "11" * 20,),
        "key_version": 1,
        "manifest_hash": b"\x01" * 32,
    }
    KeyPolicy(**good)  # type: ignore[arg-type]
    for change in (
        {"measurements": ()},
        {"measurements": (b"\x01",)},
        {"threshold": 0},
        {"threshold": 2},
        {"holders": ()},
        {"key_version": -1},
        {"manifest_hash": b"\x01"},
    ):
        with pytest.raises(ValueError):
            KeyPolicy(**(good | change))  # type: ignore[arg-type]


def test_releasable_only_while_verified(chain: ChainSystem) -> None:
    lease_id = chain.active_lease()
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, chain.key_policy())
    keys = chain.client().keys
    assert keys is not None
    assert not keys.is_releasable(lease_id, MEASUREMENT)
    chain.submit(lease_id, b"\xab" * 32)
    assert not keys.is_releasable(lease_id, MEASUREMENT)
    chain.verifier.attestations.confirm(lease_id, b"\xab" * 32, True)
    assert keys.is_releasable(lease_id, MEASUREMENT)
    assert not keys.is_releasable(lease_id, bytes(48))
