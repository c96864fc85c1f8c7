"""`cvm lease policy N` on a real anvil tells the renter which of the lease's key holders are
still staked: a holder that unstakes (leaving) or deregisters no longer has anything at stake
and may stop serving, and once fewer than the threshold are staked the renter is told to rekey
before a new guest of the lease (a relaunch, a failover) can no longer get its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.chain import KeyPolicy
from tests.fixtures.chain import MEASUREMENT, ChainSystem
from tests.integration.cli.test_no_surprises import (  # noqa: F401
    cvm,
    no_traceback,
    record,
    renter_wallet,
)

pytestmark = pytest.mark.integration


def test_the_policy_shows_each_holders_standing_and_warns_below_the_threshold(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
) -> None:
    lease_id = chain.active_lease()
    holders = [chain.staked_holder() for _ in range(3)]
    policy = KeyPolicy(
        measurements=(MEASUREMENT,),
        failover=True,
        threshold=2,
        holders=tuple(h.address for h in holders),
        key_version=1,
        manifest_hash=bytes.fromhex("4d" * 32),
    )
    assert chain.renter.keys is not None
    chain.renter.keys.set_key_policy(lease_id, policy)
    args = ["lease", "policy", str(lease_id), "--deployment", str(record),
            "--wallet", str(renter_wallet)]  # fmt: skip

    def shown() -> dict[str, object]:
        result = cvm(*args, "--json")
        no_traceback(result)
        assert result.exit_code == 0, result.output
        view: dict[str, object] = json.loads(result.stdout)
        return view

    view = shown()
    assert [s["standing"] for s in view["holder_standings"]] == ["staked"] * 3  # type: ignore[union-attr]
    assert view["staked_holders"] == 3 and view["below_threshold"] is False
    assert view["holders"] == [h.address for h in holders]

    # The second holder unstakes everything: leaving, withdrawable after the unbonding delay.
    second = chain.client(holders[1]).keys
    assert second is not None
    unlocks_at = (
        second.request_unstake_holder(second.min_holder_stake())
        .event("HolderUnstakeRequested")
        .args["unlocksAt"]
    )
    view = shown()
    assert view["holder_standings"][1] == {  # type: ignore[index]
        "address": holders[1].address,
        "standing": "leaving",
        "unlocks_at": unlocks_at,
    }
    assert view["staked_holders"] == 2 and view["below_threshold"] is False

    # The third one leaves for good: below the threshold now, and the renter is told to rekey.
    third = chain.client(holders[2]).keys
    assert third is not None
    third.request_unstake_holder(third.min_holder_stake())
    chain.advance(third.unbonding_delay() + 1)
    third.withdraw_holder_stake()
    third.deregister_holder()
    view = shown()
    assert [s["standing"] for s in view["holder_standings"]] == [  # type: ignore[union-attr]
        "staked",
        "leaving",
        "deregistered",
    ]
    assert view["staked_holders"] == 1 and view["below_threshold"] is True
    text = cvm(*args)
    no_traceback(text)
    assert text.exit_code == 0, text.output
    flat = " ".join(text.output.split())
    assert "holders (1 staked):" in flat and "deregistered" in flat
    assert f"cvm lease rekey {lease_id} --holders auto" in flat and "WARNING" in flat
