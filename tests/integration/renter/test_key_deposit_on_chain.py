"""The renter's key deposit against the real KeyService on anvil: holders picked from the
chain's active staked set, the policy's manifestHash is the deposit's EIP-712 digest, a rekey
raises the key version (new holders, new threshold), only the renter may set it (the chain
refuses anyone else before anything is uploaded), and a measurement change keeps the version.

Needs the KeyService contract and `chain.keys` (branch i-contracts): fails, saying so, where
they are missing."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cvm import key_release as kr
from cvm.chain import ContractRevert
from tests.fixtures.chain import MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


class Backend:
    def __init__(self) -> None:
        self.deposits: list[Any] = []

    def get_lease(self, lease_id: int) -> None:
        """The backend knows every lease here (the real one once it indexed the create)."""

    def put_keys(self, lease_id: int, deposit: Any) -> None:
        self.deposits.append((lease_id, deposit))


def test_the_renters_deposit_sets_the_chains_key_policy(chain: ChainSystem) -> None:
    if getattr(chain.renter, "keys", None) is None or not hasattr(chain, "staked_holder"):
        pytest.fail("this needs KeyService and chain.keys (branch i-contracts)")
    privates = [X25519PrivateKey.generate() for _ in range(4)]
    holders = [
        chain.staked_holder(p.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).address
        for p in privates
    ]
    lease_id = chain.open_lease()
    renter, backend = chain.renter, Backend()
    chosen = kr.resolve_holders(renter, None, 3)
    assert [h.address for h in chosen] == holders[:3]
    assert chosen[0].key == privates[0].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    first = kr.deposit_keys(renter, backend, lease_id, renter=chain.accounts.renter,
                            holders=chosen, threshold=2, measurements=[MEASUREMENT],
                            failover=True, secrets={"kv_token": b"t"})  # fmt: skip
    policy = renter.keys.key_policy_of(lease_id)
    assert policy.key_version == first.key_version == 1
    assert "0x" + policy.manifest_hash.hex() == first.manifest_hash
    [(_, deposit)] = backend.deposits
    assert deposit.manifest.leaseId == lease_id and len(deposit.shares) == 3

    with pytest.raises(kr.KeyServiceError, match="not an active key holder"):
        kr.resolve_holders(renter, [chain.accounts.stranger.address], 1)
    again = kr.resolve_holders(renter, [holders[1], holders[3]], 2)
    second = kr.deposit_keys(renter, backend, lease_id, renter=chain.accounts.renter,
                             holders=again, threshold=1, measurements=list(policy.measurements),
                             failover=False)  # fmt: skip
    policy = renter.keys.key_policy_of(lease_id)
    assert (policy.key_version, policy.threshold, policy.failover) == (2, 1, False)
    assert list(policy.holders) == [holders[1], holders[3]] and second.key_version == 2

    with pytest.raises(ContractRevert, match="NotRenter"):
        kr.deposit_keys(chain.stranger, backend, lease_id, renter=chain.accounts.stranger,
                        holders=again, threshold=1, measurements=[MEASUREMENT],
                        failover=False)  # fmt: skip
    assert len(backend.deposits) == 2  # the chain refused before anything was uploaded

    renter.keys.update_measurements(lease_id, [MEASUREMENT, bytes(48)])
    assert renter.keys.key_policy_of(lease_id).key_version == 2
