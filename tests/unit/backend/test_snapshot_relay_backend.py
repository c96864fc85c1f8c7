"""The node's snapshot relay against the real backend (uvicorn on a free port, SQLite and
PostgreSQL): a guest agent's snapshots go up as ciphertext objects through the node-signed
routes, the epoch record is accepted because the guest signed it with the epoch key the
renter's key manifest names, an unchanged snapshot uploads no chunk again, and a new guest
on the lease is restored from what the backend holds."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from backend.api.deps import AppContext
from backend.objects import FileObjectStore
from backend.store import Store
from cvm import guest_eip712
from cvm.api_client import ApiClient
from cvm.api_models import KeyDepositIn, KeyManifestJson, KeyShareIn, LeaseState
from guest import agent as guest_agent
from guest import snapshot as snap
from node_agent.snapshots import SnapshotRelay
from tests.unit.backend.factories import add_lease, new_account
from tests.unit.guest.test_snapshot import fill, manager, tree
from tests.unit.node_agent.test_snapshots import Clock, GuestServer, Launcher

CHAIN_ID = 31337
REGISTRY = "0x" + "33" * 20  # conftest's chain_info: the attestation registry
LEASE = 11
ROOT = os.urandom(32)


def lease_keys(required: int) -> snap.SnapshotKeys:
    return snap.SnapshotKeys.from_root(
        ROOT, chain_id=CHAIN_ID, registry=bytes.fromhex(REGISTRY[2:]), lease_id=LEASE,
        key_version=1, required_epoch=required,
    )  # fmt: skip


class CountingApi(ApiClient):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.chunk_puts = 0

    def put_chunk(self, *args: Any, **kwargs: Any) -> Any:
        self.chunk_puts += 1
        return super().put_chunk(*args, **kwargs)


def guest(base: Path, required: int, *, data: bool) -> tuple[GuestServer, Path]:
    mount = base / "data"
    agent = guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=base / "secrets", ssh_dir=base / "ssh",
        tsm=base / "no", device=base / "no", snapshots=manager(mount, base / "spool"),
    )  # fmt: skip
    agent.handle({"op": "bind", "chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE,
                  "renter": new_account().address})  # fmt: skip
    if data:
        fill(mount)
    agent.install_snapshot_keys(lease_keys(required))
    return GuestServer(base / "agent.sock", agent), mount


def test_the_relay_stores_and_restores_through_the_real_backend(
    live_api: str, store: Store, context: AppContext, tmp_path: Path
) -> None:
    renter, node = new_account(), new_account()
    holders = [new_account() for _ in range(3)]
    add_lease(store, LEASE, renter.address, status=LeaseState.ACTIVE, node=node.address.lower())
    context.key_holders = lambda address: address.lower() in {h.address.lower() for h in holders}
    context.objects = FileObjectStore(tmp_path / "objects")
    # The renter's key deposit: its manifest names the epoch key the guest derives.
    manifest = KeyManifestJson.model_validate({
        "leaseId": LEASE, "keyVersion": 1, "threshold": 2,
        "holders": [h.address for h in holders],
        "holderKeys": ["0x" + os.urandom(32).hex() for _ in holders],
        "rootCommitment": "0x" + os.urandom(32).hex(),
        "epochKey": "0x" + lease_keys(0).epoch_public().hex(),
    })  # fmt: skip
    signature = guest_eip712.sign(
        guest_eip712.key_manifest_message(CHAIN_ID, REGISTRY, manifest.message()), renter
    ).hex()
    manifest_hash = guest_eip712.key_manifest_hash(CHAIN_ID, REGISTRY, manifest.message())
    shares = []
    for index, h in enumerate(holders, start=1):
        enc, ciphertext = os.urandom(32), os.urandom(80)
        share_signature = guest_eip712.sign(
            guest_eip712.key_share_message(CHAIN_ID, REGISTRY, manifest_hash, index, enc,
                                           ciphertext), renter,
        ).hex()  # fmt: skip
        shares.append(KeyShareIn(holder=h.address, enc=base64.b64encode(enc).decode(),
                                 ciphertext=base64.b64encode(ciphertext).decode(),
                                 signature=share_signature))  # fmt: skip
    owner = ApiClient(live_api)
    owner.login(renter.key)
    owner.put_keys(LEASE, KeyDepositIn(manifest=manifest, signature=signature, shares=shares))

    clock = Clock()
    first_guest, source = guest(tmp_path / "first", 0, data=True)
    try:
        api = CountingApi(live_api)
        first = SnapshotRelay(
            api, node, Launcher(first_guest.path), tmp_path / "relay-1",  # type: ignore[arg-type]
            clock=clock, sleep=lambda s: None,
        )  # fmt: skip
        assert first.sync(LEASE) == "snapshot"
        uploaded = api.chunk_puts
        assert uploaded >= 3
        clock.now += 61
        assert first.sync(LEASE) == "snapshot"
        assert api.chunk_puts == uploaded  # nothing changed, nothing uploaded again
        assert ApiClient(live_api).latest_epoch(LEASE).epoch == 2
    finally:
        first_guest.close()

    second_guest, target = guest(tmp_path / "second", 2, data=False)
    try:
        second = SnapshotRelay(
            CountingApi(live_api), node, Launcher(second_guest.path),  # type: ignore[arg-type]
            tmp_path / "relay-2", clock=clock, sleep=lambda s: None,
        )  # fmt: skip
        assert second.sync(LEASE) == "restored"
        assert tree(target) == tree(source)
        clock.now += 61
        assert second.sync(LEASE) == "snapshot"
        assert ApiClient(live_api).latest_epoch(LEASE).epoch == 3
    finally:
        second_guest.close()
