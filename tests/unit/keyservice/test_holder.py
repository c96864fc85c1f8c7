"""The holder's checks, one by one: what it keeps from a deposit, what it releases to a guest
and when, how epochs move (only up), and what closing or rekeying a lease does to its store."""

from __future__ import annotations

import base64
import stat
from dataclasses import replace

import pytest
from eth_account import Account

from cvm.attestation.sim import SimulatedSecureProcessor
from cvm.chain import AttestationStatus, LeaseStatus
from keyservice.holder import Holder, NotYet
from keyservice.wire import Refused
from tests.unit.keyservice.world import MEASUREMENT, OTHER_MEASUREMENT, World


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


@pytest.fixture
def world(tmp_path, chip) -> World:
    return World(tmp_path, chip=chip)


# --- deposits ----------------------------------------------------------------------------


def test_a_deposit_is_kept_with_its_index_in_an_owner_only_store(world):
    lease = world.lease(7)
    stored = world.holders[1].accept_deposit(world.deposit(lease, 1))
    assert (stored.index, stored.key_version, stored.share) == (2, 1, lease.shares[1])
    assert stat.S_IMODE(world.stores[1].path.stat().st_mode) == 0o600
    assert lease.shares[1].hex() not in repr(stored)
    # The same deposit again changes nothing.
    assert world.holders[1].accept_deposit(world.deposit(lease, 1)) == stored


def test_a_forged_manifest_signature_is_refused(world):
    lease = world.lease(7, sign_with=Account.create())
    with pytest.raises(Refused, match="not by the lease's renter"):
        world.holders[0].accept_deposit(world.deposit(lease, 0))
    assert world.stores[0].share(7) is None


def test_a_manifest_signed_by_the_renter_but_altered_is_refused(world):
    lease = world.lease(7)
    item = world.deposit(lease, 0)
    item["manifest"]["threshold"] = 1  # one holder alone would do
    with pytest.raises(Refused, match="not by the lease's renter"):
        world.holders[0].accept_deposit(item)


def test_a_share_claiming_another_index_is_refused(world):
    lease = world.lease(7)
    with pytest.raises(Refused, match="this holder is index 1"):
        world.holders[0].accept_deposit(world.deposit(lease, 0, index=2))


def test_a_share_sealed_to_another_holder_does_not_open(world):
    lease = world.lease(7)
    item = world.deposit(lease, 1, signed_index=1)  # sealed to holder 1's key
    with pytest.raises(Refused, match="does not open"):
        world.holders[0].accept_deposit(item)


def test_a_share_the_renter_did_not_sign_is_refused_and_never_blocks_the_real_one(world):
    """The deposit is HPKE base mode: the backend can seal a share of its own to a holder's
    public key under the public manifest. Were it kept, the renter's real share (the same key
    version) would be refused for good. A share is taken only with the renter's EIP-712
    KeyShare signature over its ciphertext: junk first, then the real share, is kept."""
    lease = world.lease(7)
    holder = world.holders[0]
    junk = world.deposit(lease, 0, share=bytes(32), share_signer=Account.create())
    with pytest.raises(Refused, match="not signed by the lease's renter"):
        holder.accept_deposit(junk)
    real = world.deposit(lease, 0)
    moved = world.deposit(lease, 0, share=bytes(32)) | {"share_signature": real["share_signature"]}
    with pytest.raises(Refused, match="not signed by the lease's renter"):
        holder.accept_deposit(moved)  # the renter's signature over other ciphertext
    unsigned = {k: v for k, v in world.deposit(lease, 0, share=bytes(32)).items()
                if k != "share_signature"}  # fmt: skip
    with pytest.raises(Refused, match="share_signature"):
        holder.accept_deposit(unsigned)
    assert world.stores[0].share(7) is None
    assert holder.accept_deposit(real).share == lease.shares[0]


def test_a_holder_not_in_the_manifest_or_with_another_key_is_refused(world):
    lease = world.lease(7)
    stranger = World(world.tmp / "other", holders=1, chip=world.chip)
    stranger.chain.leases = world.chain.leases
    stranger.chain.policies = world.chain.policies
    item = world.deposit(lease, 0)
    with pytest.raises(Refused, match="not among the manifest's holders"):
        stranger.holders[0].accept_deposit(item)
    impostor = replace(world.keys[1], account=world.keys[0].account)
    holder = Holder(impostor, world.chain, world.backends[0], world.stores[0])
    with pytest.raises(Refused, match="another X25519 key"):
        holder.accept_deposit(item)


def test_a_manifest_that_is_not_the_on_chain_policy_is_refused(world):
    lease = world.lease(7)
    policy = world.chain.policies[7]
    world.chain.policies[7] = replace(policy, manifest_hash=b"\x01" * 32)
    with pytest.raises(Refused, match=r"not the\s+lease's on-chain policy"):
        world.holders[0].accept_deposit(world.deposit(lease, 0))
    world.chain.policies[7] = replace(policy, holders=policy.holders[::-1])
    with pytest.raises(Refused, match="holders are not"):
        world.holders[0].accept_deposit(world.deposit(lease, 0))
    world.chain.policies[7] = replace(policy, threshold=3)
    with pytest.raises(Refused, match="threshold is not"):
        world.holders[0].accept_deposit(world.deposit(lease, 0))


def test_a_deposit_ahead_of_the_chain_waits(world):
    lease = world.lease(7, key_version=2)
    world.chain.policies[7] = replace(world.chain.policies[7], key_version=1)
    with pytest.raises(NotYet):
        world.holders[0].accept_deposit(world.deposit(lease, 0))
    del world.chain.policies[7]
    with pytest.raises(NotYet):
        world.holders[0].accept_deposit(world.deposit(lease, 0))


def test_a_replayed_deposit_of_an_older_key_version_or_a_closed_lease_is_refused(world):
    renter = Account.create()
    old = world.lease(7, renter=renter)
    old_deposit = world.deposit(old, 0)
    new = world.lease(7, key_version=2, renter=renter)
    world.holders[0].accept_deposit(world.deposit(new, 0))
    with pytest.raises(Refused, match="older than the kept 2"):
        world.holders[0].accept_deposit(old_deposit)
    world.holders[0].lease_closed(7)
    with pytest.raises(Refused, match="closed"):
        world.holders[0].accept_deposit(world.deposit(new, 0))
    other = world.lease(8, renter=renter)
    world.chain.leases[8] = (renter.address, LeaseStatus.CLOSED)
    with pytest.raises(Refused, match="closed on chain"):
        world.holders[0].accept_deposit(world.deposit(other, 0))


def test_malformed_deposits_are_refused_with_a_reason(world):
    lease = world.lease(7)
    good = world.deposit(lease, 0)
    for bad, match in [
        ([], "not a JSON object"),
        (good | {"manifest": None}, "manifest"),
        (good | {"lease_id": 8}, "not its manifest's"),
        (good | {"signature": "zz"}, "not hex"),
        (good | {"enc": "!!"}, "base64"),
        (good | {"ciphertext": base64.b64encode(b"x" * 9000).decode()}, "at most 4096"),
    ]:
        with pytest.raises(Refused, match=match):
            world.holders[0].accept_deposit(bad)


def test_no_holder_keeps_more_than_one_share_index_of_a_lease(world):
    """Every holder's store, read whole: one share per lease, its own index; no one holds
    two indices (t = 2) of any lease."""
    for lease_id in (1, 2, 3):
        lease = world.lease(lease_id)
        world.deposit_all(lease)
        # A second deposit of another holder's index is refused, not added.
        with pytest.raises(Refused):
            world.holders[0].accept_deposit(world.deposit(lease, 0, index=2))
    for position, store in enumerate(world.stores):
        rows = store._db.execute("SELECT lease_id, share_index FROM shares").fetchall()
        assert sorted(int(r[0]) for r in rows) == [1, 2, 3]
        assert {r[1] for r in rows} == {position + 1}
        per_lease = store._db.execute(
            "SELECT lease_id, COUNT(*) FROM shares GROUP BY lease_id"
        ).fetchall()
        assert all(count == 1 for _, count in per_lease)


# --- release -----------------------------------------------------------------------------


def test_a_verified_guest_gets_each_share_sealed_to_it_once(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    world.holders[0].accept_epoch(world.epoch(lease, 3, snapshot=b"\x05" * 32))
    report_hash = world.attest(lease)
    for position, holder in enumerate(world.holders):
        done = holder.release(7, report_hash)
        assert done is not None and done.index == position + 1
        assert holder.release(7, report_hash) is None  # once per report hash
        ((lease_id, body),) = world.backends[position].posted
        assert lease_id == 7 and body["report_hash"] == "0x" + report_hash.hex()
        assert body["holder"] == world.keys[position].address and body["key_version"] == 1
        opened = world.open_release(lease, position, body)
        assert base64.b64decode(opened["share"]) == lease.shares[position]
        assert (opened["lease_id"], opened["key_version"], opened["index"]) == (7, 1, position + 1)
        assert (opened["epoch"], opened["snapshot"]) == (
            (3, "05" * 32) if position == 0 else (0, None)
        )
        # The guest counts an epoch only with its record's signature (guest/keyshares.py).
        kept = world.epoch(lease, 3, snapshot=b"\x05" * 32)["signature"]
        assert opened["epoch_signature"] == (kept if position == 0 else None)


def test_a_share_is_not_opened_by_a_guest_that_trusts_another_sender(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    world.holders[0].release(7, world.attest(lease))
    _, body = world.backends[0].posted[0]
    with pytest.raises(Exception):  # noqa: B017 - pyhpke's own error: the sender key differs
        world.open_release(lease, 1, body)


def test_a_measurement_outside_the_policy_gets_nothing(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    report_hash = world.attest(lease, measurement=OTHER_MEASUREMENT)
    with pytest.raises(Refused, match="not allowed"):
        world.holders[0].release(7, report_hash)
    assert world.backends[0].posted == []


def test_a_policy_with_several_measurements_allows_each(world):
    lease = world.lease(7, measurements=(OTHER_MEASUREMENT, MEASUREMENT))
    world.deposit_all(lease)
    assert world.holders[0].release(7, world.attest(lease, measurement=OTHER_MEASUREMENT))


def test_a_report_that_is_not_the_chains_latest_gets_nothing(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    first = world.attest(lease)
    world.attest(lease)  # a newer one replaced it
    with pytest.raises(Refused, match="not lease 7's latest Verified"):
        world.holders[0].release(7, first)
    world.chain.attestations[7] = replace(
        world.chain.attestations[7], status=AttestationStatus.PENDING
    )
    with pytest.raises(Refused, match="not Verified"):
        world.holders[0].release(7, first)
    assert world.holders[0].release(7) is None  # a catch-up just waits
    assert world.backends[0].posted == []


def test_a_guest_launched_for_another_lease_gets_nothing(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    report_hash = world.attest(lease, launched_for=(8, lease.renter.address))
    with pytest.raises(Refused, match="HOST_DATA"):
        world.holders[0].release(7, report_hash)
    report_hash = world.attest(lease, launched_for=(7, Account.create().address))
    with pytest.raises(Refused, match="HOST_DATA"):
        world.holders[0].release(7, report_hash)
    assert world.backends[0].posted == []


def test_the_simulated_root_is_not_trusted_by_default(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    report_hash = world.attest(lease)
    holder = Holder(world.keys[0], world.chain, world.backends[0], world.stores[0])  # AMD only
    with pytest.raises(Refused, match="root"):
        holder.release(7, report_hash)
    assert world.backends[0].posted == []


def test_not_releasable_on_chain_or_evidence_of_another_report_gets_nothing(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    report_hash = world.attest(lease)
    world.chain.not_releasable.add(7)
    with pytest.raises(Refused, match="not releasable"):
        world.holders[0].release(7, report_hash)
    world.chain.not_releasable.clear()
    world.attest(lease)
    latest = world.chain.attestations[7].report_hash
    world.backends[0].evidence_by_hash[latest] = world.backends[0].evidence_by_hash[report_hash]
    with pytest.raises(Refused, match="another report"):
        world.holders[0].release(7, latest)
    assert world.backends[0].posted == []


def test_a_renter_that_changed_on_chain_or_a_lease_not_active_gets_nothing(world):
    lease = world.lease(7)
    world.deposit_all(lease)
    report_hash = world.attest(lease)
    world.chain.leases[7] = (lease.renter.address, LeaseStatus.OPEN)
    with pytest.raises(Refused, match="not active"):
        world.holders[0].release(7, report_hash)


# --- epochs ------------------------------------------------------------------------------


def test_epochs_only_go_up_and_are_signed_by_the_epoch_key(world):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    lease = world.lease(7)
    world.deposit_all(lease)
    holder = world.holders[0]
    assert holder.accept_epoch(world.epoch(lease, 5))
    record = world.epoch(lease, 5)
    with pytest.raises(Refused, match="never goes down"):
        holder.accept_epoch(record)  # the same epoch, another snapshot
    with pytest.raises(Refused, match="never goes down"):
        holder.accept_epoch(world.epoch(lease, 4))
    with pytest.raises(Refused, match="not signed by its epochKey"):
        holder.accept_epoch(world.epoch(lease, 9, signer=ed25519.Ed25519PrivateKey.generate()))
    tampered = world.epoch(lease, 6) | {"epoch": 60}
    with pytest.raises(Refused, match="not signed"):
        holder.accept_epoch(tampered)
    assert world.stores[0].epoch(7).epoch == 5
    assert holder.accept_epoch(world.epoch(lease, 6))
    assert world.stores[0].epoch(7).epoch == 6
    with pytest.raises(Refused, match="no share"):
        holder.accept_epoch(world.epoch(world.lease(9), 1))


# --- closing and rekeying ----------------------------------------------------------------


def test_closing_a_lease_deletes_its_share_and_a_rekey_drops_the_old_one(world):
    renter = Account.create()
    lease = world.lease(7, renter=renter)
    world.deposit_all(lease)
    world.holders[0].accept_epoch(world.epoch(lease, 2))
    world.lease(7, key_version=2, renter=renter)  # the renter rekeys on chain
    world.holders[0].policy_changed(7)
    assert world.stores[0].share(7) is None
    # The epoch record stays: the next version's guest must not restore below it.
    kept = world.stores[0].epoch(7)
    assert kept is not None and (kept.key_version, kept.epoch) == (1, 2)
    report_hash = world.attest(lease)
    with pytest.raises(Refused, match="rekeyed"):
        world.holders[1].release(7, report_hash)  # the old share is dropped, not released
    assert world.stores[1].share(7) is None
    world.holders[2].lease_closed(7)
    assert world.stores[2].share(7) is None and world.stores[2].is_closed(7)


def test_after_a_rekey_the_release_carries_the_earlier_versions_epoch_as_a_floor(world):
    """A rekey used to drop the epoch record: the first guest of the new version got epoch 0
    and would restore any old snapshot (the carried-over roots open them) until a record of
    the new version came. The record stays and goes out with its key version."""
    renter = Account.create()
    lease = world.lease(7, renter=renter)
    world.deposit_all(lease)
    record = world.epoch(lease, 4, snapshot=b"\x04" * 32)
    world.holders[0].accept_epoch(record)
    lease2 = world.lease(7, key_version=2, renter=renter)
    world.holders[0].policy_changed(7)
    world.holders[0].accept_deposit(world.deposit(lease2, 0))
    report_hash = world.attest(lease2)
    assert world.holders[0].release(7, report_hash) is not None
    ((_, body),) = world.backends[0].posted
    opened = world.open_release(lease2, 0, body)
    assert opened["key_version"] == 2
    assert (opened["epoch"], opened["snapshot"], opened["epoch_key_version"]) == (4, "04" * 32, 1)
    assert opened["epoch_signature"] == record["signature"]
