"""The key service's relay and the snapshot index (issue 20): ciphertext and signed records
between a lease's renter, its key holders, its node and the object store.

The backend holds nothing that opens a key. Shares are HPKE-sealed to each holder's X25519
key, releases to the attested guest, the bundle and snapshots under keys derived from the
lease's root key; epoch records are signed by the lease's epoch key (derived from it too). What
the backend checks is who may put and read what, that signatures are the right party's (so junk
is refused early), that versions and epochs only move forward, and sizes:

- the renter (SIWE) deposits the manifest it signed (EIP-712 KeyManifest), one share per
  holder the manifest names, and the bundle; a higher keyVersion replaces the deposit and its
  shares (and the releases of the older key); the same keyVersion only with the same manifest;
- a holder (signed request, `cvm.holder_requests`; a registered, staked holder on chain) reads
  the shares addressed to it and the epoch records of its leases, and posts its share sealed to
  the lease's attested guest (one per holder and report);
- the lease's accepting node (signed request, as for sealed secrets) reads the manifest,
  bundle and releases to relay to its guest, posts the guest's epoch records (checked against
  the manifest's epochKey; never lower than the one kept), and puts and gets snapshot objects
  within the lease's quota.

A closed lease's data is removed `snapshot_retention_s` after the backend first sees it closed
(`collect`, in the leader's background round): long enough for nothing, as a closed lease
never runs again, but a short grace lets a last read finish.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, func, select, union
from sqlalchemy.orm import Session

from backend.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from backend.objects import ObjectNotFound, ObjectStore, lease_namespace, sha256_hex
from backend.store import Lease
from backend.store.models import (
    EpochRecord,
    KeyDeposit,
    KeyRelease,
    KeyShare,
    LeaseCleanup,
    SnapshotObject,
)
from cvm import guest_eip712
from cvm.api_models import (
    SNAPSHOT_CHUNK_MAX_BYTES,
    SNAPSHOT_MANIFEST_MAX_BYTES,
    EpochRecordIn,
    EpochRecordView,
    GuestKeysView,
    KeyDepositIn,
    KeyDepositView,
    KeyManifestJson,
    KeyReleaseIn,
    KeyReleaseView,
    KeyShareView,
    LeaseState,
    SnapshotLatestView,
    SnapshotObjectReceipt,
    epoch_record_message,
    snapshot_manifest_chunks,
)

# The newest releases kept per lease (16 holders, a few reports each); older ones go.
MAX_RELEASES_PER_LEASE = 64
# Kept per holder and lease (its latest reports): 16 holders x 4 = the lease's 64. Counted per
# holder, so one holder posting releases for made-up report hashes evicts only its own, never
# the others' shares for the guest's real report (they release once per report).
MAX_RELEASES_PER_HOLDER = 4
# Rows one holder read returns at most (it pages on with `after`).
MAX_PAGE = 500

CHUNK = "chunk"
MANIFEST = "manifest"

HolderCheck = Callable[[str], bool]


class CachedHolderCheck:
    """`is_holder(address)` from the chain, each answer kept `ttl_s` (a holder request must
    not cost an RPC call each), at most `max_entries` addresses."""

    def __init__(
        self,
        lookup: HolderCheck,
        *,
        ttl_s: float = 30.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[float, bool]] = OrderedDict()

    def __call__(self, address: str) -> bool:
        key = address.lower()
        now = self._clock()
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        answer = bool(self._lookup(address))
        with self._lock:
            self._answers[key] = (now + self._ttl_s, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)
        return answer


def chain_holder_check(keys: object) -> HolderCheck:
    """The check against the KeyService bindings (`chain.keys`): `is_active_holder` (registered
    with at least the minimum stake) where the bindings have it, else `holder_of` (registered,
    with a stake)."""
    active = getattr(keys, "is_active_holder", None)
    if callable(active):
        return CachedHolderCheck(lambda address: bool(active(address)))

    def is_holder(address: str) -> bool:
        info = keys.holder_of(address)  # type: ignore[attr-defined]
        return bool(info.registered) and int(info.stake) > 0

    return CachedHolderCheck(is_holder)


# --- helpers --------------------------------------------------------------------------------


def _lease(session: Session, lease_id: int, *, lock: bool = False) -> Lease:
    lease = session.get(Lease, lease_id, with_for_update=lock)
    if lease is None:
        raise NotFound(f"lease {lease_id}")
    return lease


def _hex(value: str) -> str:
    return "0x" + value.removeprefix("0x").lower()


def _manifest(row: KeyDeposit) -> KeyManifestJson:
    return KeyManifestJson.model_validate(row.manifest)


def _deposit(session: Session, lease_id: int) -> KeyDeposit:
    row = session.get(KeyDeposit, lease_id)
    if row is None:
        raise NotFound(f"key deposit of lease {lease_id}")
    return row


def _deposit_view(row: KeyDeposit) -> KeyDepositView:
    return KeyDepositView(
        lease_id=row.lease_id,
        key_version=row.key_version,
        manifest_hash=row.manifest_hash,
        holders=[holder.lower() for holder in row.manifest["holders"]],
        created_at=row.created_at,
    )


# --- the renter's deposit -------------------------------------------------------------------


def put_deposit(
    session: Session,
    lease_id: int,
    renter: str,
    body: KeyDepositIn,
    now: datetime,
    *,
    chain_id: int,
    registry: str,
) -> tuple[KeyDepositView, str | None]:
    """Keep the renter's signed manifest, its shares and bundle; the view and the node to
    tell (the lease's node while it runs, else None)."""
    lease = _lease(session, lease_id, lock=True)
    if lease.renter != renter.lower():
        raise Forbidden("only the lease's renter deposits its keys")
    if lease.status == LeaseState.CLOSED:
        raise Forbidden(f"lease {lease_id} is closed: its keys are of no use")
    manifest = body.manifest
    if manifest.leaseId != lease_id:
        raise InvalidInput(f"the manifest is for lease {manifest.leaseId}, not {lease_id}")
    holders = [holder.lower() for holder in manifest.holders]
    if len(manifest.holderKeys) != len(holders):
        raise InvalidInput("the manifest needs exactly one holder key per holder")
    if manifest.threshold > len(holders):
        raise InvalidInput(f"threshold {manifest.threshold} is above the {len(holders)} holders")
    shares = {share.holder.lower(): share for share in body.shares}
    if len(shares) != len(body.shares) or set(shares) != set(holders):
        raise InvalidInput("the shares must cover exactly the manifest's holders, one each")
    try:
        message = guest_eip712.key_manifest_message(chain_id, registry, manifest.message())
        signer = guest_eip712.recover(message, bytes.fromhex(body.signature.removeprefix("0x")))
    except (ValueError, KeyError) as exc:
        raise InvalidInput(f"the key manifest or its signature is malformed: {exc}") from None
    if signer.lower() != lease.renter:
        raise InvalidInput(f"the key manifest is signed by {signer}, not by the lease's renter")
    manifest_hash = "0x" + guest_eip712.digest(message).hex()
    for index, holder in enumerate(holders, start=1):  # each share is the renter's own
        share = shares[holder]
        try:
            share_signer = guest_eip712.recover(
                guest_eip712.key_share_message(
                    chain_id, registry, bytes.fromhex(manifest_hash[2:]), index,
                    base64.b64decode(share.enc), base64.b64decode(share.ciphertext),
                ),
                bytes.fromhex(share.signature.removeprefix("0x")),
            )  # fmt: skip
        except ValueError as exc:
            raise InvalidInput(
                f"the share of {holder} or its signature is malformed: {exc}"
            ) from None
        if share_signer.lower() != lease.renter:
            raise InvalidInput(f"the share of {holder} is not signed by the lease's renter")
    row = session.get(KeyDeposit, lease_id, with_for_update=True)
    if row is not None:
        if manifest.keyVersion < row.key_version:
            raise Conflict(
                f"keyVersion {manifest.keyVersion} is below the deposited {row.key_version}:"
                " an older key is refused"
            )
        if manifest.keyVersion == row.key_version and manifest_hash != row.manifest_hash:
            raise Conflict(
                f"keyVersion {row.key_version} is deposited with another manifest: a new key"
                f" needs keyVersion {row.key_version + 1}"
            )
        if manifest.keyVersion > row.key_version:
            # A new key: the older one's releases open nothing the guest should take.
            session.execute(delete(KeyRelease).where(KeyRelease.lease_id == lease_id))
        session.execute(delete(KeyShare).where(KeyShare.lease_id == lease_id))
    else:
        row = KeyDeposit(lease_id=lease_id)
        session.add(row)
    row.key_version, row.renter, row.manifest = (
        manifest.keyVersion,
        lease.renter,
        manifest.message(),
    )
    row.manifest_hash, row.signature, row.bundle = manifest_hash, _hex(body.signature), body.bundle
    row.created_at = now
    session.flush()
    for holder in holders:  # in the manifest's order: cursors follow share indices
        share = shares[holder]
        session.add(KeyShare(lease_id=lease_id, holder=holder, key_version=manifest.keyVersion,
                             enc=share.enc, ciphertext=share.ciphertext,
                             signature=_hex(share.signature)))  # fmt: skip
    session.flush()
    node = lease.node if lease.status == LeaseState.ACTIVE else None
    return _deposit_view(row), node


# --- the holders' reads and releases --------------------------------------------------------


def shares_for_holder(session: Session, holder: str, after: int, limit: int) -> list[KeyShareView]:
    """The shares addressed to `holder` with a cursor above `after`, oldest first."""
    rows = session.execute(
        select(KeyShare, KeyDeposit)
        .join(KeyDeposit, KeyDeposit.lease_id == KeyShare.lease_id)
        .where(KeyShare.holder == holder.lower(), KeyShare.id > after)
        .order_by(KeyShare.id)
        .limit(min(limit, MAX_PAGE))
    ).all()
    return [
        KeyShareView(
            cursor=share.id,
            lease_id=share.lease_id,
            key_version=share.key_version,
            manifest=_manifest(deposit),
            signature=deposit.signature,
            enc=share.enc,
            ciphertext=share.ciphertext,
            share_signature=share.signature,
        )
        for share, deposit in rows
    ]


def _release_view(row: KeyRelease, manifest: KeyManifestJson) -> KeyReleaseView:
    holders = [holder.lower() for holder in manifest.holders]
    index = holders.index(row.holder) + 1
    return KeyReleaseView(
        holder=row.holder,
        index=index,
        sender=manifest.holderKeys[index - 1].lower(),
        key_version=row.key_version,
        report_hash=row.report_hash,
        enc=row.enc,
        ciphertext=row.ciphertext,
        created_at=row.created_at,
    )


def put_release(
    session: Session, lease_id: int, holder: str, body: KeyReleaseIn, now: datetime
) -> tuple[KeyReleaseView, str | None]:
    """Keep a holder's share sealed to the lease's guest (one per holder and report: the same
    again replaces it); the view and the node to tell."""
    holder = holder.lower()
    if body.holder.lower() != holder:
        raise Forbidden(f"a release for {body.holder} signed by {holder}")
    lease = _lease(session, lease_id, lock=True)
    if lease.status != LeaseState.ACTIVE or lease.node is None:
        raise Forbidden(f"lease {lease_id} is {lease.status}: shares go to running guests only")
    deposit = _deposit(session, lease_id)
    manifest = _manifest(deposit)
    if holder not in (item.lower() for item in manifest.holders):
        raise Forbidden(f"{holder} is not a key holder of lease {lease_id}")
    if body.key_version != deposit.key_version:
        raise Conflict(
            f"keyVersion {body.key_version} is not lease {lease_id}'s current {deposit.key_version}"
        )
    report_hash = body.report_hash.lower()
    row = session.scalar(
        select(KeyRelease)
        .where(
            KeyRelease.lease_id == lease_id,
            KeyRelease.holder == holder,
            KeyRelease.report_hash == report_hash,
        )
        .with_for_update()
    )
    if row is None:
        row = KeyRelease(lease_id=lease_id, holder=holder, report_hash=report_hash)
        session.add(row)
    row.key_version, row.enc, row.ciphertext, row.created_at = (
        body.key_version, body.enc, body.ciphertext, now,
    )  # fmt: skip
    session.flush()
    older = select(KeyRelease.id).where(
        KeyRelease.lease_id == lease_id, KeyRelease.holder == holder
    )
    dropped = session.scalars(
        older.order_by(KeyRelease.id.desc()).offset(MAX_RELEASES_PER_HOLDER)
    ).all()
    if dropped:
        session.execute(delete(KeyRelease).where(KeyRelease.id.in_(dropped)))
    return _release_view(row, manifest), lease.node


def epochs_for_holder(
    session: Session, holder: str, after: int, limit: int
) -> list[EpochRecordView]:
    """The latest epoch record of each lease whose current manifest names `holder`, with a
    cursor above `after` (a newer record of a lease gets a new cursor)."""
    rows = session.scalars(
        select(EpochRecord)
        .join(KeyShare, KeyShare.lease_id == EpochRecord.lease_id)
        .where(KeyShare.holder == holder.lower(), EpochRecord.id > after)
        .order_by(EpochRecord.id)
        .limit(min(limit, MAX_PAGE))
    ).all()
    return [_epoch_view(row) for row in rows]


# --- the node's reads and records -----------------------------------------------------------


def guest_keys(session: Session, lease: Lease) -> GuestKeysView:
    """The manifest, bundle and releases of the lease's current key, for its node."""
    deposit = _deposit(session, lease.id)
    manifest = _manifest(deposit)
    releases = session.scalars(
        select(KeyRelease)
        .where(KeyRelease.lease_id == lease.id, KeyRelease.key_version == deposit.key_version)
        .order_by(KeyRelease.id)
    ).all()
    return GuestKeysView(
        lease_id=lease.id,
        key_version=deposit.key_version,
        manifest=manifest,
        signature=deposit.signature,
        bundle=deposit.bundle,
        releases=[_release_view(row, manifest) for row in releases],
    )


def _epoch_view(row: EpochRecord) -> EpochRecordView:
    return EpochRecordView(
        cursor=row.id,
        lease_id=row.lease_id,
        epoch=row.epoch,
        snapshot=row.snapshot,
        key_version=row.key_version,
        signature=row.signature,
        created_at=row.created_at,
    )


def put_epoch(
    session: Session,
    lease: Lease,
    body: EpochRecordIn,
    now: datetime,
    *,
    objects: ObjectStore,
    chain_id: int,
    registry: str,
) -> EpochRecordView:
    """Keep the guest's epoch record if it is signed by the manifest's epochKey, names a
    stored snapshot manifest of its epoch whose chunks are all stored, and is not below the
    one kept."""
    deposit = session.get(KeyDeposit, lease.id, with_for_update=True)
    if deposit is None:
        raise Conflict(f"lease {lease.id} has no key deposit: no epoch key to check against")
    if body.key_version != deposit.key_version:
        raise Conflict(
            f"keyVersion {body.key_version} is not lease {lease.id}'s current {deposit.key_version}"
        )
    snapshot = body.snapshot.removeprefix("0x").lower()
    signature = base64.b64decode(body.signature)
    epoch_key = bytes.fromhex(_manifest(deposit).epochKey.removeprefix("0x"))
    signed = epoch_record_message(
        chain_id, registry, lease.id, body.key_version, body.epoch, bytes.fromhex(snapshot)
    )
    try:
        Ed25519PublicKey.from_public_bytes(epoch_key).verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise InvalidInput("the epoch record is not signed by the lease's epoch key") from None
    stored = session.get(SnapshotObject, (lease.id, MANIFEST, str(body.epoch)))
    if stored is None or stored.sha256 != snapshot:
        raise Conflict(f"no snapshot manifest {snapshot} of epoch {body.epoch}: upload it first")
    listed = _check_chunks_stored(session, objects, lease.id, stored)
    row = session.scalar(
        select(EpochRecord).where(EpochRecord.lease_id == lease.id).with_for_update()
    )
    if row is not None:
        if body.epoch < row.epoch:
            raise Conflict(f"epoch {body.epoch} is below the recorded {row.epoch}: a rollback")
        if body.epoch == row.epoch:
            if row.snapshot == snapshot:
                return _epoch_view(row)  # the same record again
            raise Conflict(f"epoch {body.epoch} is recorded with another snapshot")
        session.delete(row)
        session.flush()  # a new row (a new cursor for the holders) replaces it
    row = EpochRecord(
        lease_id=lease.id,
        epoch=body.epoch,
        snapshot=snapshot,
        key_version=body.key_version,
        signature=body.signature,
        created_at=now,
    )
    session.add(row)
    session.flush()
    _prune_superseded(session, objects, lease.id, stored, listed)
    return _epoch_view(row)


CHUNK_QUERY_BATCH = 256  # ids per IN (...) query: far below any database's parameter limit


def _check_chunks_stored(
    session: Session, objects: ObjectStore, lease_id: int, manifest: SnapshotObject
) -> list[str]:
    """Every chunk the manifest object lists (in clear; the record's signature covers the
    object, so the list is the guest's) is stored for this lease; Conflict naming how many
    are missing. Without this a node could upload a manifest without its chunks and post the
    genuine record: the holders would raise the lease's floor to a snapshot that cannot be
    restored, and every older one would then be refused."""
    try:
        listed = snapshot_manifest_chunks(objects.get(lease_namespace(lease_id), manifest.sha256))
    except ValueError as exc:
        raise InvalidInput(f"snapshot manifest {manifest.sha256}: {exc}") from None
    except ObjectNotFound:  # the row says stored, the store lost it: upload it again
        raise Conflict(f"snapshot manifest {manifest.sha256} is lost: upload it again") from None
    present = 0
    for start in range(0, len(listed), CHUNK_QUERY_BATCH):
        batch = listed[start : start + CHUNK_QUERY_BATCH]
        present += (
            session.scalar(
                select(func.count()).where(
                    SnapshotObject.lease_id == lease_id,
                    SnapshotObject.kind == CHUNK,
                    SnapshotObject.name.in_(batch),
                )
            )
            or 0
        )
    if present != len(listed):
        raise Conflict(
            f"{len(listed) - present} of the {len(listed)} chunks snapshot manifest"
            f" {manifest.sha256} lists are not stored: upload them first"
        )
    return listed


# Manifests above the recorded epoch whose chunks a prune keeps (a snapshot being made); with
# more than this many, chunks are left for the next record's prune instead of read them all.
PRUNE_MAX_PENDING_MANIFESTS = 16


def _prune_superseded(
    session: Session,
    objects: ObjectStore,
    lease_id: int,
    recorded: SnapshotObject,
    listed: list[str],
) -> None:
    """Drop what the new epoch record superseded (no restore ever reads it: an older epoch is
    a rollback the holders refuse): manifests of lower epochs, and chunks that neither the
    recorded manifest nor one above it lists, stored before the recorded manifest (a newer
    chunk may belong to a snapshot whose manifest is still to come). Without this a lease
    running for long filled its quota with old snapshots, and every later upload was refused."""
    epoch = int(recorded.name)
    keep = set(listed)
    manifests = session.scalars(
        select(SnapshotObject).where(
            SnapshotObject.lease_id == lease_id, SnapshotObject.kind == MANIFEST
        )
    ).all()
    pending = [m for m in manifests if int(m.name) > epoch]
    for manifest in manifests:
        if int(manifest.name) < epoch:
            _drop_object(session, objects, lease_id, manifest)
    if len(pending) > PRUNE_MAX_PENDING_MANIFESTS:
        return
    for manifest in pending:
        try:
            keep.update(
                snapshot_manifest_chunks(objects.get(lease_namespace(lease_id), manifest.sha256))
            )
        except (ValueError, ObjectNotFound):
            continue  # it lists nothing restorable: its chunks are not kept for it
    stale = session.scalars(
        select(SnapshotObject).where(
            SnapshotObject.lease_id == lease_id,
            SnapshotObject.kind == CHUNK,
            SnapshotObject.created_at < recorded.created_at,
        )
    ).all()
    for chunk in stale:
        if chunk.name not in keep:
            _drop_object(session, objects, lease_id, chunk)


def latest_epoch(session: Session, lease_id: int) -> EpochRecordView:
    _lease(session, lease_id)
    row = session.scalar(select(EpochRecord).where(EpochRecord.lease_id == lease_id))
    if row is None:
        raise NotFound(f"epoch record of lease {lease_id}")
    return _epoch_view(row)


# --- snapshot objects -----------------------------------------------------------------------


def _used(session: Session, lease_id: int) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(SnapshotObject.size), 0)).where(
            SnapshotObject.lease_id == lease_id
        )
    )
    return int(total or 0)


def put_snapshot_object(
    session: Session,
    objects: ObjectStore,
    lease: Lease,
    kind: str,
    name: str,
    data: bytes,
    now: datetime,
    *,
    quota_bytes: int,
) -> SnapshotObjectReceipt:
    """Store a chunk (`name` = its SHA-256) or a sealed manifest (`name` = its epoch) of the
    lease, within its quota; the same again is a no-op."""
    limit = SNAPSHOT_CHUNK_MAX_BYTES if kind == CHUNK else SNAPSHOT_MANIFEST_MAX_BYTES
    if len(data) > limit:
        raise TooLarge(f"a snapshot {kind} is at most {limit} bytes, not {len(data)}")
    if not data:
        raise InvalidInput(f"an empty snapshot {kind}")
    object_id = sha256_hex(data)
    if kind == CHUNK and object_id != name:
        raise InvalidInput(f"the chunk's bytes hash to {object_id}, not {name}")
    record = None
    if kind == MANIFEST:
        record = session.scalar(select(EpochRecord).where(EpochRecord.lease_id == lease.id))
        if record is not None and int(name) < record.epoch:
            raise Conflict(f"epoch {name} is below the recorded {record.epoch}: a stale manifest")
    row = session.get(SnapshotObject, (lease.id, kind, name))
    if row is not None:
        if row.sha256 == object_id:
            # Stored again for a newer snapshot: a prune compares against when it was last
            # stored, so the newer snapshot's chunk is not taken for an old one's.
            row.created_at = max(row.created_at, now)
            return SnapshotObjectReceipt(
                lease_id=lease.id, id=object_id, size=row.size, used_bytes=_used(session, lease.id)
            )
        if record is not None and int(name) == record.epoch:
            raise Conflict(f"the snapshot manifest of epoch {name} is recorded with other bytes")
        # Not recorded (above the epoch record, or none yet): a manifest no record names may
        # be replaced. Otherwise a node (the one a lease failed away from, or a guest crash
        # before its record) would squat the next epochs and its successor could never record
        # one (its manifest of that epoch "stored with other bytes").
        _drop_object(session, objects, lease.id, row)
    used = _used(session, lease.id)
    if used + len(data) > quota_bytes:
        raise TooLarge(
            f"lease {lease.id}'s snapshots take {used} bytes; {len(data)} more would pass its"
            f" quota of {quota_bytes}"
        )
    # The bytes first, then their row: a row never names bytes that are not stored.
    objects.put(lease_namespace(lease.id), object_id, data)
    session.add(SnapshotObject(lease_id=lease.id, kind=kind, name=name, sha256=object_id,
                               size=len(data), created_at=now))  # fmt: skip
    session.flush()
    return SnapshotObjectReceipt(
        lease_id=lease.id, id=object_id, size=len(data), used_bytes=used + len(data)
    )


def _drop_object(
    session: Session, objects: ObjectStore, lease_id: int, row: SnapshotObject
) -> None:
    """Forget an object row and, unless another row of the lease has the same bytes, its
    bytes (so a replaced object takes no room outside the quota)."""
    session.delete(row)
    session.flush()
    shared = session.scalar(
        select(func.count()).where(
            SnapshotObject.lease_id == lease_id, SnapshotObject.sha256 == row.sha256
        )
    )
    if not shared:
        objects.delete(lease_namespace(lease_id), row.sha256)


def snapshot_object_id(session: Session, lease: Lease, kind: str, name: str) -> str:
    row = session.get(SnapshotObject, (lease.id, kind, name))
    if row is None:
        raise NotFound(f"snapshot {kind} {name} of lease {lease.id}")
    return row.sha256


def latest_snapshot(session: Session, lease: Lease) -> SnapshotLatestView:
    """The snapshot the lease's highest epoch record names."""
    row = session.scalar(select(EpochRecord).where(EpochRecord.lease_id == lease.id))
    if row is None:
        raise NotFound(f"snapshot of lease {lease.id} (no epoch recorded yet)")
    return SnapshotLatestView(
        lease_id=lease.id, epoch=row.epoch, manifest_id=row.snapshot, key_version=row.key_version
    )


# --- removal after close --------------------------------------------------------------------


def collect(
    session: Session, objects: ObjectStore, now: datetime, *, retention_s: float, limit: int = 50
) -> list[int]:
    """Remove the key and snapshot data of leases closed `retention_s` ago (first seen closed
    by this function); the lease ids removed. Bounded per call."""
    with_data = union(
        select(KeyDeposit.lease_id), select(SnapshotObject.lease_id), select(EpochRecord.lease_id)
    ).subquery()
    closed = session.scalars(
        select(Lease.id)
        .where(Lease.id.in_(select(with_data.c[0])), Lease.status == LeaseState.CLOSED)
        .limit(limit)
    ).all()
    removed = []
    for lease_id in closed:
        seen = session.get(LeaseCleanup, lease_id)
        if seen is None:
            session.add(LeaseCleanup(lease_id=lease_id, closed_seen_at=now))
            if retention_s > 0:
                continue
        elif now - seen.closed_seen_at < timedelta(seconds=retention_s):
            continue
        objects.delete_namespace(lease_namespace(lease_id))
        for model in (KeyShare, KeyRelease, EpochRecord, SnapshotObject, KeyDeposit, LeaseCleanup):
            session.execute(delete(model).where(model.lease_id == lease_id))
        removed.append(lease_id)
    session.flush()
    return removed
