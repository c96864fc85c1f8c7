"""The threshold key's `keys` op and the snapshots together (i-guestkeys + i-snapshots): the
guest's snapshot keys come from the combined root, its epoch record verifies under the
manifest's epochKey, and a second guest released with the holders' epoch restores."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guest import agent as guest_agent
from guest import snapshot as snap
from tests.unit.guest.test_keyshares import (
    CHAIN_ID,
    HOLDERS,
    LEASE,
    REGISTRY,
    RENTER,
    FakeVolume,
    attest,
    deposit_for,
    hpke_key,
    keys_op,
    wait_volume,
)
from tests.unit.guest.test_snapshot import fill, tree


def keyed_agent(tmp_path: Path) -> tuple[guest_agent.GuestAgent, Path]:
    mount = tmp_path / "data"
    mount.mkdir(parents=True)
    snapshots = snap.SnapshotManager(
        mount,
        freezer=snap.no_freeze,
        spool=tmp_path / "spool",
        console=lambda text: None,
        is_mounted=lambda path: True,
    )
    agent = guest_agent.GuestAgent(
        guest_agent.GuestKeys(),
        secrets_dir=tmp_path / "secrets",
        ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no",
        device=tmp_path / "no",
        volume=FakeVolume(),  # type: ignore[arg-type]
        find_volume=lambda: tmp_path / "vdb",
        workload_file=tmp_path / "no-workload.json",
        snapshots=snapshots,
    )
    assert agent.handle(
        {
            "op": "bind",
            "chain_id": CHAIN_ID,
            "registry": REGISTRY,
            "lease_id": LEASE,
            "renter": RENTER.address,
        }
    )["ok"]
    return agent, mount


def release(agent, deposit, epoch: int, snapshot: str | None, signature: str | None = None) -> None:
    report_data = attest(agent)
    rel = [
        HOLDERS[i].release(
            hpke_key(agent),
            report_data,
            HOLDERS[i].share_of(deposit),
            epoch=epoch,
            snapshot=snapshot,
            epoch_signature=signature,  # the record's, as the holders keep it
        )
        for i in (0, 1)
    ]
    answer = keys_op(agent, deposit, rel)
    assert answer["ok"], answer
    wait_volume(agent)


def test_keys_then_snapshot_then_restore_on_a_new_guest(tmp_path):
    deposit, _root = deposit_for(threshold=2)
    first, source = keyed_agent(tmp_path / "a")
    fill(source)
    release(first, deposit, 0, None)
    assert first.handle({"op": "snapshot_status"})["epoch"] == 0
    taken = first.handle({"op": "snapshot"})
    assert taken["ok"], taken
    record = taken["record"]
    message = (
        b"cvm.epoch.v1"
        + CHAIN_ID.to_bytes(32, "big")
        + bytes.fromhex(REGISTRY[2:])
        + LEASE.to_bytes(32, "big")
        + (1).to_bytes(4, "big")
        + (1).to_bytes(8, "big")
        + bytes.fromhex(record["snapshot"])
    )
    Ed25519PublicKey.from_public_bytes(deposit.manifest.epoch_key).verify(
        base64.b64decode(record["signature"]), message
    )
    objects = {
        c: first.handle({"op": "snapshot_chunk", "chunk": c})["data"] for c in taken["chunks"]
    }
    manifest = first.handle({"op": "snapshot_manifest"})["data"]

    second, target = keyed_agent(tmp_path / "b")
    release(second, deposit, 1, record["snapshot"], record["signature"])
    status = second.handle({"op": "snapshot_status"})
    assert (status["restore_needed"], status["required_epoch"]) == (True, 1)
    need = second.handle({"op": "restore_manifest", "epoch": 1, "data": manifest})["need"]
    for chunk_id in need:
        assert second.handle({"op": "restore_chunk", "chunk": chunk_id, "data": objects[chunk_id]})[
            "ok"
        ]
    assert second.handle({"op": "restore_finish"})["epoch"] == 1
    assert tree(target) == tree(source)
