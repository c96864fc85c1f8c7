"""The key service's relay and the snapshot store over HTTP (`cvm.api_client` against the real
app, on SQLite and PostgreSQL): the renter deposits its signed manifest and sealed shares, each
holder (signed requests, registered on chain) reads only its own shares and posts releases,
only the lease's accepting node reads keys and snapshot objects and posts epoch records (checked
against the manifest's epochKey), versions and epochs only move forward, and nobody else gets
anything."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account.signers.local import LocalAccount
from sqlalchemy import select, text

from backend.api.deps import AppContext
from backend.domain import keys_relay
from backend.objects import FileObjectStore, ObjectNotFound
from backend.store import Lease, Store
from backend.store.models import (
    EpochRecord,
    KeyDeposit,
    KeyRelease,
    KeyShare,
    LeaseCleanup,
    SnapshotObject,
)
from cvm import guest_eip712
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import (
    SNAPSHOT_CHUNK_MAX_BYTES,
    SNAPSHOT_MANIFEST_MAGIC,
    EpochRecordIn,
    KeyDepositIn,
    KeyManifestJson,
    KeyReleaseIn,
    KeyShareIn,
    LeaseState,
    epoch_record_message,
)
from cvm.holder_requests import sign_holder_request
from tests.unit.backend.factories import Clock, add_lease, add_match, new_account

CHAIN_ID = 31337
REGISTRY = "0x" + "33" * 20  # conftest's chain_info: the attestation registry
LEASE = 7


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class KeyWorld:
    """A running lease 7 of `renter` on `node`, three registered holders and a stranger."""

    url: str
    store: Store
    context: AppContext
    renter: LocalAccount
    node: LocalAccount
    holders: list[LocalAccount]
    stranger: LocalAccount
    objects_dir: Path
    notified: list[tuple[int, str]] = field(default_factory=list)
    epoch_keys: dict[int, Ed25519PrivateKey] = field(default_factory=dict)

    def client(self, account: LocalAccount | None = None) -> ApiClient:
        api = ApiClient(self.url)
        if account is not None:
            api.login(account.key)
        return api

    def manifest(self, key_version: int = 1, **changes: Any) -> KeyManifestJson:
        epoch_key = self.epoch_keys.setdefault(key_version, Ed25519PrivateKey.generate())
        values: dict[str, Any] = {
            "leaseId": LEASE,
            "keyVersion": key_version,
            "threshold": 2,
            "holders": [holder.address for holder in self.holders],
            "holderKeys": ["0x" + os.urandom(32).hex() for _ in self.holders],
            "rootCommitment": "0x" + os.urandom(32).hex(),
            "epochKey": "0x" + epoch_key.public_key().public_bytes_raw().hex(),
        }
        values.update(changes)
        return KeyManifestJson.model_validate(values)

    def deposit(
        self,
        manifest: KeyManifestJson | None = None,
        *,
        signer: LocalAccount | None = None,
        shares: list[KeyShareIn] | None = None,
    ) -> KeyDepositIn:
        manifest = manifest or self.manifest()
        message = guest_eip712.key_manifest_message(CHAIN_ID, REGISTRY, manifest.message())
        signature = guest_eip712.sign(message, signer or self.renter).hex()
        if shares is None:
            shares = [
                self.share(manifest, index, os.urandom(32), os.urandom(80), signer)
                for index in range(1, len(manifest.holders) + 1)
            ]
        return KeyDepositIn(
            manifest=manifest, signature=signature, shares=shares, bundle=_b64(os.urandom(200))
        )

    def share(
        self, manifest: KeyManifestJson, index: int, enc: bytes, ciphertext: bytes,
        signer: LocalAccount | None = None,
    ) -> KeyShareIn:  # fmt: skip
        """Holder `index`'s share, signed (EIP-712 KeyShare) by the renter or `signer`."""
        manifest_hash = guest_eip712.key_manifest_hash(CHAIN_ID, REGISTRY, manifest.message())
        signature = guest_eip712.sign(
            guest_eip712.key_share_message(
                CHAIN_ID, REGISTRY, manifest_hash, index, enc, ciphertext
            ),
            signer or self.renter,
        )
        return KeyShareIn(holder=manifest.holders[index - 1], enc=_b64(enc),
                          ciphertext=_b64(ciphertext), signature=signature.hex())  # fmt: skip

    def epoch(self, epoch: int, snapshot: str, key_version: int = 1) -> EpochRecordIn:
        message = epoch_record_message(
            CHAIN_ID,
            REGISTRY,
            LEASE,
            key_version,
            epoch,
            bytes.fromhex(snapshot.removeprefix("0x")),
        )
        signature = self.epoch_keys[key_version].sign(message)
        return EpochRecordIn(
            epoch=epoch, snapshot=snapshot, key_version=key_version, signature=_b64(signature)
        )


@pytest.fixture
def world(live_api: str, store: Store, context: AppContext, tmp_path: Path) -> Iterator[KeyWorld]:
    renter, node, stranger = new_account(), new_account(), new_account()
    holders = [new_account() for _ in range(3)]
    add_lease(store, LEASE, renter.address, status=LeaseState.ACTIVE, node=node.address.lower())
    registered = {holder.address.lower() for holder in holders}
    world = KeyWorld(
        live_api, store, context, renter, node, holders, stranger, tmp_path / "objects"
    )
    # The chain's word on holders (chain.keys.holder_of, behind one function): the three.
    context.key_holders = lambda address: address.lower() in registered
    context.objects = FileObjectStore(world.objects_dir)
    context.key_listeners.append(lambda lease_id, node: world.notified.append((lease_id, node)))
    yield world


def _status(call: Callable[[], Any]) -> int:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value.status_code


def test_the_renter_deposits_and_each_holder_reads_only_its_own_share(world: KeyWorld) -> None:
    deposit = world.deposit()
    with world.client(world.renter) as renter, world.client() as holders:
        view = renter.put_keys(LEASE, deposit)
        assert view.key_version == 1 and view.holders == [h.address.lower() for h in world.holders]
        digest = guest_eip712.key_manifest_hash(CHAIN_ID, REGISTRY, deposit.manifest.message())
        assert view.manifest_hash == "0x" + digest.hex()  # what the key policy stores on chain
        # Committed for a running lease: its node is told at once.
        assert world.notified == [(LEASE, world.node.address.lower())]
        cursors = []
        for holder, share in zip(world.holders, deposit.shares, strict=True):
            (got,) = holders.list_shares(holder_key=holder.key)
            assert (got.lease_id, got.enc, got.ciphertext) == (LEASE, share.enc, share.ciphertext)
            assert got.manifest == deposit.manifest
            assert got.signature == "0x" + deposit.signature.removeprefix("0x")
            assert holders.list_shares(holder_key=holder.key, after=got.cursor) == []
            cursors.append(got.cursor)
        assert cursors == sorted(cursors)


def test_only_the_lease_renter_deposits_and_only_its_own_signature_counts(world: KeyWorld) -> None:
    with world.client(world.stranger) as stranger, world.client(world.renter) as renter:
        # Renter B cannot deposit for renter A's lease, even signing the manifest itself.
        assert (
            _status(lambda: stranger.put_keys(LEASE, world.deposit(signer=world.stranger))) == 403
        )
        assert _status(lambda: world.client().put_keys(LEASE, world.deposit())) == 401
        # A's session with a manifest someone else signed: refused.
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(signer=world.stranger))) == 422
        # Another lease's manifest.
        other = world.manifest(leaseId=LEASE + 1)
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(other))) == 422
        # Shares not covering exactly the manifest's holders.
        full = world.deposit()
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(shares=full.shares[:2]))) == 422
        swapped = [
            *full.shares[:2],
            full.shares[2].model_copy(update={"holder": world.stranger.address}),
        ]
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(shares=swapped))) == 422
        twice = [*full.shares[:2], full.shares[0]]
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(shares=twice))) == 422
        # A share not signed by the renter (the backend's own junk, or a stranger's), or the
        # renter's signature moved to other ciphertext or another manifest: refused.
        manifest = world.manifest()
        good = world.deposit(manifest)
        junk = world.share(manifest, 2, os.urandom(32), os.urandom(80), world.stranger)
        moved = good.shares[1].model_copy(update={"ciphertext": _b64(os.urandom(80))})
        for bad in (junk, moved):
            tampered = world.deposit(manifest, shares=[good.shares[0], bad, good.shares[2]])
            assert _status(lambda d=tampered: renter.put_keys(LEASE, d)) == 422
        other_manifest = world.deposit(shares=good.shares)  # signed for `manifest`, not this one
        assert _status(lambda: renter.put_keys(LEASE, other_manifest)) == 422
        assert _status(lambda: renter.put_keys(LEASE + 5, world.deposit())) == 404
    with world.store.session() as session:
        assert session.scalars(select(KeyShare)).all() == []


def test_a_higher_key_version_replaces_the_deposit_and_an_older_one_is_refused(
    world: KeyWorld,
) -> None:
    holder = world.holders[0]
    with world.client(world.renter) as renter, world.client() as holders:
        first = world.deposit(world.manifest(3))
        renter.put_keys(LEASE, first)
        (old,) = holders.list_shares(holder_key=holder.key)
        # The same deposit again (a retry): idempotent, the share re-announced.
        renter.put_keys(LEASE, first)
        # The same keyVersion with another manifest, or an older keyVersion: refused.
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(world.manifest(3)))) == 409
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(world.manifest(2)))) == 409
        newer = world.deposit(world.manifest(4))
        assert renter.put_keys(LEASE, newer).key_version == 4
        (new,) = holders.list_shares(holder_key=holder.key, after=old.cursor)
        assert new.key_version == 4 and new.ciphertext == newer.shares[0].ciphertext
    with world.store.session() as session:
        versions = {row.key_version for row in session.scalars(select(KeyShare))}
        assert versions == {4}, "the older key's shares are deleted"


def test_holder_requests_are_signed_registered_fresh_and_single_use(world: KeyWorld) -> None:
    holder = world.holders[0]
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        # Not a registered holder on chain: no shares, whatever it signs.
        assert _status(lambda: api.list_shares(holder_key=world.stranger.key)) == 403
        assert _status(lambda: api.list_epochs(holder_key=world.stranger.key)) == 403
        domain = api.domain()
    path = f"/v1/keyholders/{holder.address}/shares?after=0&limit=100"
    headers = sign_holder_request(holder.key, domain, "GET", path)
    assert httpx.get(world.url + path, headers=headers).status_code == 200
    # The same signed request again: a replay.
    assert httpx.get(world.url + path, headers=headers).status_code == 409
    # Signed for another query (cursor), another holder's path, another signer, no signature.
    fresh = sign_holder_request(holder.key, domain, "GET", path)
    assert (
        httpx.get(world.url + path.replace("after=0", "after=5"), headers=fresh).status_code == 401
    )
    other = f"/v1/keyholders/{world.holders[1].address}/shares"
    mine = sign_holder_request(holder.key, domain, "GET", other)
    assert httpx.get(world.url + other, headers=mine).status_code == 403
    forged = sign_holder_request(world.stranger.key, domain, "GET", path)
    forged["X-CVM-Holder"] = holder.address
    assert httpx.get(world.url + path, headers=forged).status_code == 401
    assert httpx.get(world.url + path).status_code == 401
    # Too old a timestamp.
    stale = sign_holder_request(
        holder.key, domain, "GET", path, now=int(world.context.clock()) - 3600
    )
    assert httpx.get(world.url + path, headers=stale).status_code == 401
    # A deployment without a key service refuses holders plainly.
    world.context.key_holders = None
    again = sign_holder_request(holder.key, domain, "GET", path)
    assert httpx.get(world.url + path, headers=again).status_code == 503


def _report_hash() -> str:
    return "0x" + os.urandom(32).hex()


def _release(holder: LocalAccount, report_hash: str, key_version: int = 1) -> KeyReleaseIn:
    return KeyReleaseIn(holder=holder.address, key_version=key_version, report_hash=report_hash,
                        enc=_b64(os.urandom(32)), ciphertext=_b64(os.urandom(150)))  # fmt: skip


def test_holders_release_to_the_guest_and_only_the_accepting_node_reads_keys(
    world: KeyWorld, clock: Clock
) -> None:
    matched = new_account()
    add_match(world.store, LEASE, matched.address, clock)  # matched, never accepted
    report = _report_hash()
    with world.client(world.renter) as renter, world.client() as api:
        deposit = world.deposit()
        renter.put_keys(LEASE, deposit)
        world.notified.clear()
        first = api.post_release(
            LEASE, _release(world.holders[1], report), holder_key=world.holders[1].key
        )
        assert (first.index, first.sender) == (2, deposit.manifest.holderKeys[1].lower())
        assert world.notified == [(LEASE, world.node.address.lower())]
        # The same release (holder, report) again: one row, the newest ciphertext.
        again = _release(world.holders[1], report)
        api.post_release(LEASE, again, holder_key=world.holders[1].key)
        api.post_release(LEASE, _release(world.holders[2], report), holder_key=world.holders[2].key)
        # Signed by one holder for another; an older key version; a registered holder that the
        # manifest does not name.
        forged = _release(world.holders[0], report)
        assert (
            _status(lambda: api.post_release(LEASE, forged, holder_key=world.holders[1].key)) == 403
        )
        old = _release(world.holders[0], report, key_version=0)
        assert _status(lambda: api.post_release(LEASE, old, holder_key=world.holders[0].key)) == 409
        extra = new_account()
        world.context.key_holders = lambda address: True
        outsider = _release(extra, report)
        assert _status(lambda: api.post_release(LEASE, outsider, holder_key=extra.key)) == 403

        keys = api.get_guest_keys(LEASE, node_key=world.node.key)
        assert keys.manifest == deposit.manifest and keys.bundle == deposit.bundle
        assert [(r.holder, r.index, r.ciphertext) for r in keys.releases] == [
            (world.holders[1].address.lower(), 2, again.ciphertext),
            (world.holders[2].address.lower(), 3, keys.releases[1].ciphertext),
        ]
        assert _status(lambda: api.get_guest_keys(LEASE, node_key=matched.key)) == 403
        assert _status(lambda: api.get_guest_keys(LEASE, node_key=world.stranger.key)) == 403
    with world.store.session() as session:
        assert len(session.scalars(select(KeyRelease)).all()) == 2


def manifest_object(chunk_ids: list[str], body: bytes | None = None) -> bytes:
    """A manifest object as the guest makes it (guest/snapshot.py): its distinct chunk ids in
    clear, then the sealed manifest (random bytes stand for it here)."""
    return (
        SNAPSHOT_MANIFEST_MAGIC
        + len(chunk_ids).to_bytes(4, "big")
        + b"".join(bytes.fromhex(c) for c in chunk_ids)
        + (body if body is not None else os.urandom(300))
    )


def _snapshot(world: KeyWorld, api: ApiClient, epoch: int, size: int = 1000) -> str:
    """A chunk and a manifest of `epoch` listing it, uploaded by the node; the manifest's id."""
    chunk = api.put_chunk(LEASE, os.urandom(size), node_key=world.node.key).id
    return api.put_manifest(LEASE, epoch, manifest_object([chunk]), node_key=world.node.key).id


def test_an_epoch_record_waits_for_every_chunk_its_manifest_lists(world: KeyWorld) -> None:
    """A hostile node uploads a snapshot's manifest but not (all) its chunks and posts the
    genuine record: had it been kept, holders would raise the lease's floor to a snapshot that
    cannot be restored and refuse every older one. The record's signature covers the manifest
    object, whose clear header lists the chunks: the backend keeps the record only once every
    chunk listed is stored; a manifest object that lists none is refused."""
    key = world.node.key
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        stored = api.put_chunk(LEASE, os.urandom(500), node_key=key).id
        missing = [os.urandom(500) for _ in range(2)]
        ids = [stored, *(hashlib.sha256(m).hexdigest() for m in missing)]
        manifest = api.put_manifest(LEASE, 1, manifest_object(ids), node_key=key).id
        refused = _status(lambda: api.post_epoch(LEASE, world.epoch(1, manifest), node_key=key))
        assert refused == 409 and api.latest_epoch(LEASE) is None
        api.put_chunk(LEASE, missing[0], node_key=key)
        assert _status(lambda: api.post_epoch(LEASE, world.epoch(1, manifest), node_key=key)) == 409
        api.put_chunk(LEASE, missing[1], node_key=key)
        assert api.post_epoch(LEASE, world.epoch(1, manifest), node_key=key).epoch == 1
        # A manifest with no clear chunk list (an old format, or junk): never recorded.
        bare = api.put_manifest(LEASE, 2, os.urandom(300), node_key=key).id
        assert _status(lambda: api.post_epoch(LEASE, world.epoch(2, bare), node_key=key)) == 422
        assert api.latest_epoch(LEASE).epoch == 1


def test_epoch_records_are_checked_against_the_manifest_and_never_go_back(world: KeyWorld) -> None:
    with world.client(world.renter) as renter, world.client() as api:
        key = world.node.key
        snapshot = "ab" * 32
        deposit = world.deposit()
        assert api.latest_epoch(LEASE) is None  # none recorded yet
        assert _status(lambda: api.latest_epoch(LEASE + 100)) == 404  # no such lease
        # No key deposit yet: no epoch key to check a record against.
        assert _status(lambda: api.post_epoch(LEASE, world.epoch(1, snapshot), node_key=key)) == 409
        renter.put_keys(LEASE, deposit)
        # The manifest it names is not stored yet.
        assert _status(lambda: api.post_epoch(LEASE, world.epoch(1, snapshot), node_key=key)) == 409
        first = _snapshot(world, api, 1)
        # Signed by another key, or for another epoch than claimed: refused.
        bad = world.epoch(1, first).model_copy(update={"signature": _b64(os.urandom(64))})
        assert _status(lambda: api.post_epoch(LEASE, bad, node_key=key)) == 422
        lying = world.epoch(2, first).model_copy(update={"epoch": 1})
        assert _status(lambda: api.post_epoch(LEASE, lying, node_key=key)) == 422
        recorded = api.post_epoch(LEASE, world.epoch(1, first), node_key=key)
        assert api.post_epoch(LEASE, world.epoch(1, first), node_key=key).cursor == recorded.cursor
        second = _snapshot(world, api, 5)
        api.post_epoch(LEASE, world.epoch(5, "0x" + second), node_key=key)
        # A replayed older record: a rollback, refused; and an older manifest upload too.
        assert _status(lambda: api.post_epoch(LEASE, world.epoch(1, first), node_key=key)) == 409
        assert _status(lambda: api.put_manifest(LEASE, 4, b"old", node_key=key)) == 409
        latest = api.latest_epoch(LEASE)  # public
        assert latest is not None and (latest.epoch, latest.snapshot) == (5, second)
        assert api.latest_snapshot(LEASE, node_key=key).manifest_id == second
        # Holders follow the epochs of their leases; a stranger node posts none.
        (seen,) = api.list_epochs(holder_key=world.holders[0].key)
        assert (seen.epoch, seen.cursor) == (5, latest.cursor)
        assert api.list_epochs(holder_key=world.holders[0].key, after=seen.cursor) == []
        stranger = world.stranger.key
        assert (
            _status(lambda: api.post_epoch(LEASE, world.epoch(6, second), node_key=stranger)) == 403
        )


def test_snapshot_objects_are_content_addressed_bounded_and_the_nodes_alone(
    world: KeyWorld,
) -> None:
    key = world.node.key
    with world.client() as api:
        chunk = os.urandom(SNAPSHOT_CHUNK_MAX_BYTES)
        receipt = api.put_chunk(LEASE, chunk, node_key=key)
        assert receipt.id == hashlib.sha256(chunk).hexdigest() and receipt.size == len(chunk)
        assert api.put_chunk(LEASE, chunk, node_key=key).used_bytes == len(chunk)  # idempotent
        assert api.get_chunk(LEASE, receipt.id, node_key=key) == chunk
        assert _status(lambda: api.get_chunk(LEASE, "00" * 32, node_key=key)) == 404
        manifest = b"sealed manifest"
        assert (
            api.put_manifest(LEASE, 3, manifest, node_key=key).id
            == hashlib.sha256(manifest).hexdigest()
        )
        assert api.get_manifest(LEASE, 3, node_key=key) == manifest
        # Nobody but the lease's node reads or writes them.
        for other in (world.stranger.key, world.holders[0].key):
            assert (
                _status(lambda other=other: api.get_chunk(LEASE, receipt.id, node_key=other)) == 403
            )
            assert _status(lambda other=other: api.put_chunk(LEASE, b"x", node_key=other)) == 403
            assert _status(lambda other=other: api.get_manifest(LEASE, 3, node_key=other)) == 403
        headers = api._node_request_headers(LEASE, key, None)
        # Bytes that do not hash to the id in the path.
        wrong = httpx.put(f"{world.url}/v1/leases/{LEASE}/snapshots/chunks/{'00' * 32}",
                          content=b"abc", headers=headers)  # fmt: skip
        assert wrong.status_code == 422
        # Over the chunk limit: refused before it is kept.
        huge = os.urandom(SNAPSHOT_CHUNK_MAX_BYTES + 1)
        headers = api._node_request_headers(LEASE, key, None)
        path = f"{world.url}/v1/leases/{LEASE}/snapshots/chunks/{hashlib.sha256(huge).hexdigest()}"
        assert httpx.put(path, content=huge, headers=headers).status_code == 413
        # The lease's quota.
        world.context.settings.snapshot_lease_quota_bytes = len(chunk) + len(manifest) + 10
        assert _status(lambda: api.put_chunk(LEASE, os.urandom(11), node_key=key)) == 413
        api.put_chunk(LEASE, os.urandom(10), node_key=key)
    files = [path for path in world.objects_dir.rglob("*") if path.is_file()]
    assert len(files) == 3 and not any(path.name.startswith(".put-") for path in files)


def test_a_node_the_lease_failed_away_from_reads_and_writes_nothing(world: KeyWorld) -> None:
    successor = new_account()
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        manifest_id = _snapshot(world, api, 1)
        api.post_epoch(LEASE, world.epoch(1, manifest_id), node_key=world.node.key)
        # Failover: back on the market (no node), then accepted by another node.
        with world.store.session() as session:
            lease = session.get(Lease, LEASE)
            lease.status, lease.node = LeaseState.OPEN, None
        old = world.node.key
        assert _status(lambda: api.get_guest_keys(LEASE, node_key=old)) == 403
        with world.store.session() as session:
            lease = session.get(Lease, LEASE)
            lease.status, lease.node = LeaseState.ACTIVE, successor.address.lower()
        assert _status(lambda: api.get_guest_keys(LEASE, node_key=old)) == 403
        assert _status(lambda: api.latest_snapshot(LEASE, node_key=old)) == 403
        assert _status(lambda: api.get_manifest(LEASE, 1, node_key=old)) == 403
        assert _status(lambda: api.put_chunk(LEASE, b"stale", node_key=old)) == 403
        assert (
            _status(lambda: api.post_epoch(LEASE, world.epoch(2, manifest_id), node_key=old)) == 403
        )
        # The new node restores the latest snapshot and gets the key material.
        latest = api.latest_snapshot(LEASE, node_key=successor.key)
        assert (latest.epoch, latest.manifest_id) == (1, manifest_id)
        assert (
            hashlib.sha256(api.get_manifest(LEASE, 1, node_key=successor.key)).hexdigest()
            == manifest_id
        )
        assert api.get_guest_keys(LEASE, node_key=successor.key).key_version == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body["shares"][0].update(ciphertext="not base64!"),
        lambda body: body["shares"][0].update(ciphertext="QUJD"[:3]),  # not padded
        lambda body: body["shares"][0].update(enc=_b64(os.urandom(31))),  # not an X25519 enc
        lambda body: body["shares"][0].update(ciphertext=_b64(os.urandom(513))),
        lambda body: body.update(shares=body["shares"] * 6),  # 18 shares: too many
        lambda body: body["manifest"].update(holders=body["manifest"]["holders"] * 6),
        lambda body: body["manifest"].update(threshold=0),
        lambda body: body["manifest"].update(keyVersion=2**32),
        lambda body: body.update(bundle=_b64(os.urandom(33 * 1024))),
        lambda body: body.update(signature="00"),
        lambda body: body.update(plaintext="the root key"),
    ],
)
def test_malformed_deposits_are_refused_with_4xx(world: KeyWorld, change: Callable) -> None:
    body = world.deposit().model_dump(mode="json")
    change(body)
    with world.client(world.renter) as renter:
        token = renter.token
    response = httpx.put(f"{world.url}/v1/leases/{LEASE}/keys", json=body,
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code in (413, 422), response.text
    with world.store.session() as session:
        assert session.get(KeyDeposit, LEASE) is None


def test_the_backend_keeps_only_what_it_was_sent_ciphertext_and_public_records(
    world: KeyWorld,
) -> None:
    """The root key, its shares and the plaintext of snapshots never reach the backend: the
    client seals them first. What the backend stores is byte for byte what it was sent."""
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    suite = CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
    )
    holder_keys = [suite.kem.derive_key_pair(os.urandom(32)) for _ in world.holders]
    root = os.urandom(32)
    manifest = world.manifest(holderKeys=["0x" + pair.public_key.to_public_bytes().hex()
                                          for pair in holder_keys])  # fmt: skip
    shares = []
    for index, pair in enumerate(holder_keys, start=1):
        enc, sender = suite.create_sender_context(pair.public_key, info=b"cvm.keyshare.v1")
        shares.append(world.share(manifest, index, bytes(enc),
                                  bytes(sender.seal(root[:16] + root[16:]))))  # fmt: skip
    plaintext_chunk = b"the service's data " * 100
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit(manifest, shares=shares))
        sealed_chunk = bytes(b ^ 0x5A for b in plaintext_chunk)  # stands for the guest's AEAD
        api.put_chunk(LEASE, sealed_chunk, node_key=world.node.key)
    dump = _dump(world.store)
    for secret in (root, root[:16], root[16:], plaintext_chunk[:32]):
        assert secret.hex() not in dump and _b64(secret) not in dump
        assert secret not in b"".join(
            p.read_bytes() for p in world.objects_dir.rglob("*") if p.is_file()
        )
    # Each holder's row holds its sealed share exactly as sent, and it opens with its key only.
    with world.store.session() as session:
        rows = session.scalars(select(KeyShare).order_by(KeyShare.id)).all()
    for row, pair in zip(rows, holder_keys, strict=True):
        receiver = suite.create_recipient_context(
            base64.b64decode(row.enc), pair.private_key, info=b"cvm.keyshare.v1"
        )
        assert receiver.open(base64.b64decode(row.ciphertext)) == root


def _dump(store: Store) -> str:
    tables = ("key_deposits", "key_shares", "key_releases", "epoch_records", "snapshot_objects")
    with store.engine.connect() as connection:
        return repr([connection.execute(text(f"SELECT * FROM {name}")).all() for name in tables])


def test_a_closed_lease_loses_its_key_and_snapshot_data_after_the_retention(
    world: KeyWorld, clock: Clock
) -> None:
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        manifest_id = _snapshot(world, api, 1)
        api.post_epoch(LEASE, world.epoch(1, manifest_id), node_key=world.node.key)
    add_lease(world.store, LEASE + 1, world.renter.address, status=LeaseState.ACTIVE)
    objects = world.context.object_store

    def collect() -> list[int]:
        with world.store.session() as session:
            return keys_relay.collect(session, objects, clock.datetime(), retention_s=3600)

    assert collect() == []  # running
    with world.store.session() as session:
        session.get(Lease, LEASE).status = LeaseState.CLOSED
    assert collect() == []  # first seen closed: kept for the retention
    clock.advance(3599)
    assert collect() == []
    clock.advance(2)
    assert collect() == [LEASE]
    with world.store.session() as session:
        for model in (KeyDeposit, KeyShare, EpochRecord, SnapshotObject, LeaseCleanup):
            assert session.scalars(select(model)).all() == []
    assert not (world.objects_dir / f"lease-{LEASE}").exists()
    assert collect() == []


def test_huge_bodies_are_refused_before_they_are_read(world: KeyWorld) -> None:
    with world.client(world.renter) as renter:
        token = renter.token
        domain = renter.domain()
    huge = b'{"manifest": "' + b"A" * (200 * 1024) + b'"}'
    response = httpx.put(f"{world.url}/v1/leases/{LEASE}/keys", content=huge,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    path = f"/v1/leases/{LEASE}/key-releases"
    headers = sign_holder_request(world.holders[0].key, domain, "POST", path, huge)
    response = httpx.post(world.url + path, content=huge,
                          headers={**headers, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    manifest = os.urandom(256 * 1024 + 1)
    with world.client() as api:
        assert _status(lambda: api.put_manifest(LEASE, 1, manifest, node_key=world.node.key)) == 413


def test_a_deposit_before_the_lease_runs_tells_no_node_and_a_closed_lease_takes_none(
    world: KeyWorld,
) -> None:
    with world.store.session() as session:
        lease = session.get(Lease, LEASE)
        lease.status, lease.node = LeaseState.OPEN, None
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        assert world.notified == []
        # Nothing runs it: no release is taken for it.
        release = _release(world.holders[0], _report_hash())
        assert (
            _status(lambda: api.post_release(LEASE, release, holder_key=world.holders[0].key))
            == 403
        )
        with world.store.session() as session:
            session.get(Lease, LEASE).status = LeaseState.CLOSED
        assert _status(lambda: renter.put_keys(LEASE, world.deposit(world.manifest(2)))) == 403


def test_snapshots_go_to_an_s3_compatible_store_when_one_is_set(
    world: KeyWorld, s3_url: str
) -> None:
    from backend.objects import S3ObjectStore

    bucket = f"cvm-{os.urandom(4).hex()}"
    world.context.objects = S3ObjectStore(s3_url, bucket, access_key="test", secret_key="test",
                                          create_bucket=True)  # fmt: skip
    chunk = os.urandom(70_000)
    with world.client() as api:
        receipt = api.put_chunk(LEASE, chunk, node_key=world.node.key)
        assert api.get_chunk(LEASE, receipt.id, node_key=world.node.key) == chunk
    assert not world.objects_dir.exists()  # nothing went to the filesystem store
    with world.store.session() as session:
        session.get(Lease, LEASE).status = LeaseState.CLOSED
        assert keys_relay.collect(session, world.context.object_store, world.context.now(),
                                  retention_s=0) == [LEASE]  # fmt: skip
    with pytest.raises(ObjectNotFound):
        world.context.object_store.get(f"lease-{LEASE}", receipt.id)


def test_an_unrecorded_manifest_is_replaced_and_a_recorded_one_is_not(world: KeyWorld) -> None:
    """A node squats the next epochs with junk manifests (no record names them); its successor
    after a failover (or the same guest after a crash before its record) must still be able
    to upload and record its manifests of those epochs. A recorded one stays as it is."""
    successor = new_account()
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        old = world.node.key
        first = _snapshot(world, api, 1)
        api.post_epoch(LEASE, world.epoch(1, first), node_key=old)
        for epoch in (2, 3):
            api.put_manifest(LEASE, epoch, b"junk %d" % epoch, node_key=old)
        with world.store.session() as session:
            lease = session.get(Lease, LEASE)
            lease.status, lease.node = LeaseState.ACTIVE, successor.address.lower()
        chunk = api.put_chunk(LEASE, os.urandom(100), node_key=successor.key).id
        real = manifest_object([chunk])
        receipt = api.put_manifest(LEASE, 2, real, node_key=successor.key)
        assert receipt.id == hashlib.sha256(real).hexdigest()
        assert api.get_manifest(LEASE, 2, node_key=successor.key) == real
        api.post_epoch(LEASE, world.epoch(2, receipt.id), node_key=successor.key)
        # Epoch 2 is recorded now: its manifest is fixed.
        assert _status(lambda: api.put_manifest(LEASE, 2, b"other", node_key=successor.key)) == 409
        # The replaced junk's bytes are gone from the store (no room taken outside the quota).
        junk = hashlib.sha256(b"junk 2").hexdigest()
    assert not [path for path in world.objects_dir.rglob(junk) if path.is_file()]


def test_one_holder_flooding_releases_evicts_only_its_own(world: KeyWorld) -> None:
    """A hostile holder of the manifest posts releases for 70 made-up report hashes: the
    other holders' releases to the guest's real report stay (they release once per report,
    so an evicted one never came back and the guest stayed short of its threshold)."""
    report = _report_hash()
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        for holder in world.holders[1:]:
            api.post_release(LEASE, _release(holder, report), holder_key=holder.key)
    hostile = world.holders[0].address.lower()
    for _ in range(70):
        with world.store.session() as session:
            keys_relay.put_release(
                session, LEASE, hostile, _release(world.holders[0], _report_hash()),
                datetime.now(UTC),
            )  # fmt: skip
    with world.client() as api:
        releases = api.get_guest_keys(LEASE, node_key=world.node.key).releases
    honest = {(r.holder, r.report_hash) for r in releases if r.holder != hostile}
    assert honest == {(h.address.lower(), report) for h in world.holders[1:]}
    assert sum(r.holder == hostile for r in releases) == keys_relay.MAX_RELEASES_PER_HOLDER


def test_a_recorded_epoch_drops_what_it_superseded_so_the_quota_holds_a_long_lease(
    world: KeyWorld, clock: Clock
) -> None:
    """A lease that snapshots for days: each epoch record supersedes the snapshots before it
    (no restore reads them; an older epoch is a rollback), so the backend drops their
    manifests and the chunks no newer manifest lists, but not a chunk stored after the
    recorded manifest (the next snapshot's, its manifest still to come). FAILED on the old
    code: nothing was ever dropped, and the third snapshot passed the quota (413)."""
    key = world.node.key
    size = 1000
    with world.client(world.renter) as renter, world.client() as api:
        renter.put_keys(LEASE, world.deposit())
        shared = api.put_chunk(LEASE, os.urandom(size), node_key=key).id  # in every snapshot
        # Room for the shared chunk, two snapshots (a chunk and a manifest each) and the
        # next snapshot's first chunk.
        manifest_size = len(manifest_object([shared, shared]))
        world.context.settings.snapshot_lease_quota_bytes = 4 * size + 2 * manifest_size + 10
        chunks: dict[int, str] = {}
        pending = ""
        for epoch in range(1, 8):
            clock.advance(0.01)  # the request window follows the real clock: small steps
            chunks[epoch] = api.put_chunk(LEASE, os.urandom(size), node_key=key).id
            clock.advance(0.01)
            manifest = api.put_manifest(
                LEASE, epoch, manifest_object([shared, chunks[epoch]]), node_key=key
            ).id
            if epoch == 7:  # the next snapshot starts before this record lands
                clock.advance(0.01)
                pending = api.put_chunk(LEASE, os.urandom(size), node_key=key).id
            api.post_epoch(LEASE, world.epoch(epoch, manifest), node_key=key)
        assert api.latest_epoch(LEASE).epoch == 7
        # The latest snapshot restores (its manifest and chunks are there), the next one's
        # chunk is kept, and nothing older is.
        assert api.get_manifest(LEASE, 7, node_key=key)
        for chunk in (shared, chunks[7], pending):
            assert api.get_chunk(LEASE, chunk, node_key=key)
        for epoch in range(1, 7):
            assert _status(lambda e=epoch: api.get_manifest(LEASE, e, node_key=key)) == 404
            assert _status(lambda e=epoch: api.get_chunk(LEASE, chunks[e], node_key=key)) == 404
    stored = {path.name for path in world.objects_dir.rglob("*") if path.is_file()}
    assert chunks[1] not in stored and {shared, chunks[7], pending} <= stored
