"""Rollback-proof snapshots of the workload's declared disk (`[disk] mount`), inside the guest.

A snapshot is a deterministic tar of the mount directory, read while the file system is
frozen (FIFREEZE, thawed always), cut into CHUNK_SIZE pieces, each encrypted with
ChaCha20-Poly1305 under k_snapshot with a convergent nonce (HMAC-SHA256(k_nonce, plain)[:12],
so an unchanged piece encrypts to the same object and is uploaded once). A chunk object is
`nonce(12) || ciphertext`; its id is sha256(object). A sealed manifest lists the chunk ids in
order with their sizes and the tar's sha256; its associated data binds the lease and the
epoch, so a manifest of another lease, key version or epoch does not open. Its id is
sha256(sealed manifest), and the epoch record (signed with the Ed25519 epoch key) names it.

The epoch is a counter kept inside the volume (`<mount>/.cvm/epoch`, written atomically and
fsynced; dm-integrity authenticates it), bumped by each snapshot. The key holders remember
the latest epoch record; a new guest gets `required_epoch` with its key shares and:
- uses the local volume as it is when its epoch >= required (a relaunch on the same node
  keeps what was written after the last snapshot);
- otherwise refuses it (`cvm-guest: REFUSING stale state (epoch X < required Y)`) and waits
  for the host to restore a snapshot whose authenticated epoch is >= required; services do
  not start before.

Where the keys come from (the threshold key, guest/keyshares.py and the agent's `keys` op):
`SnapshotKeys.from_root(R, ...)` derives them (docs/guest-agent.md, INTERFACES 1 and 6).

Runs in the guest: standard library and `cryptography` only.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK_SIZE = 512 * 1024
# What one snapshot may hold (the tar): chunks are spooled in the guest's memory (tmpfs)
# between `snapshot` and their upload, so this is also what a snapshot costs in RAM.
MAX_SNAPSHOT_BYTES = 256 * 2**20
MAX_MEMBERS = 100_000  # files, directories and links in one snapshot
MAX_MANIFEST_BYTES = 256 * 1024
MAX_NAME_BYTES = 4096
RESERVED = ".cvm"  # <mount>/.cvm: the epoch file and the restore staging; never in a snapshot
SKIPPED = ("lost+found",)  # ext4's own; never in a snapshot, refused in one
EPOCH_FILE = "epoch"
NUMBER_ABOVE_MAX = 2**40  # keyshares.EPOCH_HINT_MAX: a hint, never the whole counter
SPOOL_DIR = Path("/run/cvm/snapshot")
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
FORMAT = "cvm.snapshot.v1"
CHUNK_AAD = b"cvm.snapshot-chunk.v1"
MANIFEST_AAD = b"cvm.snapshot-manifest.v1"
# The manifest object = a clear header listing the snapshot's distinct chunk ids, then the
# sealed manifest: MANIFEST_MAGIC (8) || count (4 BE) || count x 32-byte ids || nonce (12) ||
# ChaCha20-Poly1305 (aad = manifest_aad(epoch) || sha256(header)). Its id, sha256 of the whole
# object, is what the epoch record signs, so the record commits to the chunk list: the backend
# refuses a record until every chunk listed is stored (cvm.api_models.snapshot_manifest_chunks
# reads the same header), so no node can raise the holders' floor to a snapshot whose chunks
# it never uploaded. The ids are SHA-256 of ciphertext, which the backend sees anyway.
MANIFEST_MAGIC = b"CVMSNAP2"
MAX_MANIFEST_CHUNKS = 1024  # node_agent.snapshots.MAX_CHUNKS: 256 MiB in 512 KiB chunks, twice
EPOCH_DOMAIN = b"cvm.epoch.v1"
# linux/fs.h: FIFREEZE _IOWR('X', 119, int), FITHAW _IOWR('X', 120, int)
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
_ID = re.compile(r"[0-9a-f]{64}")


class SnapshotError(Exception):
    """A snapshot or restore that cannot be made or is refused; the message says why."""


class StaleState(SnapshotError):
    """State older than the epoch the key holders have seen: refused."""


# --- keys --------------------------------------------------------------------------------
def hkdf(root: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


@dataclass(frozen=True)
class SnapshotKeys:
    """What snapshots need of the lease and its root key R (INTERFACES 1, 6): the keys are
    HKDF-SHA256(R, info) with info `cvm.snapshot.v1`, `cvm.snapshot-nonce.v1`, `cvm.epoch.v1`;
    `required_epoch` = the largest epoch in the key shares used."""

    chain_id: int
    registry: bytes  # the AttestationRegistry, 20 bytes
    lease_id: int
    key_version: int
    snapshot_key: bytes
    nonce_key: bytes
    epoch_seed: bytes
    required_epoch: int = 0
    # Number new epochs above this too (not a floor: an epoch named by a record this guest
    # could not check, e.g. of the version before a rekey without a carried-over root).
    number_above: int = 0
    # The same lease's keys of earlier key versions (a rekey): a snapshot sealed before the
    # rekey still restores; new snapshots are sealed under this version only.
    previous: tuple[SnapshotKeys, ...] = ()

    def __post_init__(self) -> None:
        if len(self.registry) != 20:
            raise SnapshotError("registry must be 20 bytes")
        for name in ("snapshot_key", "nonce_key", "epoch_seed"):
            if len(getattr(self, name)) != 32:
                raise SnapshotError(f"{name} must be 32 bytes")
        if not 0 <= self.key_version <= UINT32_MAX or not 0 <= self.required_epoch <= UINT64_MAX:
            raise SnapshotError("key_version or required_epoch out of range")
        if not 0 <= self.number_above <= NUMBER_ABOVE_MAX:
            raise SnapshotError("number_above out of range")
        if not 0 <= self.lease_id < 2**256 or not 0 <= self.chain_id < 2**256:
            raise SnapshotError("lease_id or chain_id out of range")

    @classmethod
    def from_root(
        cls,
        root: bytes,
        *,
        chain_id: int,
        registry: bytes,
        lease_id: int,
        key_version: int,
        required_epoch: int = 0,
    ) -> SnapshotKeys:
        if len(root) != 32:
            raise SnapshotError("the root key must be 32 bytes")
        return cls(
            chain_id,
            registry,
            lease_id,
            key_version,
            hkdf(root, b"cvm.snapshot.v1"),
            hkdf(root, b"cvm.snapshot-nonce.v1"),
            hkdf(root, b"cvm.epoch.v1"),
            required_epoch,
        )

    @property
    def _lease_words(self) -> bytes:
        return (
            self.chain_id.to_bytes(32, "big")
            + self.registry
            + self.lease_id.to_bytes(32, "big")
            + self.key_version.to_bytes(4, "big")
        )

    def chunk_aad(self) -> bytes:
        return CHUNK_AAD + self._lease_words

    def manifest_aad(self, epoch: int) -> bytes:
        return MANIFEST_AAD + self._lease_words + epoch.to_bytes(8, "big")

    def epoch_message(self, epoch: int, snapshot: bytes) -> bytes:
        """What the epoch key signs (INTERFACES 6)."""
        return EPOCH_DOMAIN + self._lease_words + epoch.to_bytes(8, "big") + snapshot

    def epoch_public(self) -> bytes:
        """The epoch key's public half ("epochKey" of the key manifest), 32 bytes."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = Ed25519PrivateKey.from_private_bytes(self.epoch_seed).public_key()
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign_epoch(self, epoch: int, snapshot: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.from_private_bytes(self.epoch_seed)
        return key.sign(self.epoch_message(epoch, snapshot))


def seal_chunk(keys: SnapshotKeys, plain: bytes) -> bytes:
    """nonce(12) || ChaCha20-Poly1305(k_snapshot, nonce, plain, aad): the same plain, the
    same object (convergent nonce, keyed: no one without the key can test a guess)."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    nonce = hmac.new(keys.nonce_key, plain, hashlib.sha256).digest()[:12]
    return nonce + ChaCha20Poly1305(keys.snapshot_key).encrypt(nonce, plain, keys.chunk_aad())


def open_chunk(keys: SnapshotKeys, chunk_id: str, data: bytes) -> bytes:
    """The plaintext of a chunk object whose id is `chunk_id`; SnapshotError otherwise."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if hashlib.sha256(data).hexdigest() != chunk_id:
        raise SnapshotError(f"chunk {chunk_id[:16]}: its content does not hash to its id")
    if len(data) < 12 + 16 or len(data) > 12 + CHUNK_SIZE + 16:
        raise SnapshotError(f"chunk {chunk_id[:16]}: wrong size")
    try:
        plain = ChaCha20Poly1305(keys.snapshot_key).decrypt(data[:12], data[12:], keys.chunk_aad())
    except InvalidTag:
        raise SnapshotError(f"chunk {chunk_id[:16]}: does not authenticate") from None
    if hmac.new(keys.nonce_key, plain, hashlib.sha256).digest()[:12] != data[:12]:
        raise SnapshotError(f"chunk {chunk_id[:16]}: not made by a snapshot of this lease")
    return plain


@dataclass(frozen=True)
class Manifest:
    epoch: int
    chunks: tuple[tuple[str, int], ...]  # (id, plaintext size), in tar order
    tar_size: int
    tar_sha256: str

    def to_json(self, keys: SnapshotKeys) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "chain_id": keys.chain_id,
                "registry": "0x" + keys.registry.hex(),
                "lease_id": keys.lease_id,
                "key_version": keys.key_version,
                "epoch": self.epoch,
                "chunks": [{"id": i, "size": s} for i, s in self.chunks],
                "tar_size": self.tar_size,
                "tar_sha256": self.tar_sha256,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    def distinct_chunks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(chunk_id for chunk_id, _ in self.chunks))  # tar order

    def seal(self, keys: SnapshotKeys) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        header = manifest_header(self.distinct_chunks())
        nonce = os.urandom(12)
        aead = ChaCha20Poly1305(keys.snapshot_key)
        aad = keys.manifest_aad(self.epoch) + hashlib.sha256(header).digest()
        return header + nonce + aead.encrypt(nonce, self.to_json(keys), aad)


def manifest_header(chunk_ids: tuple[str, ...]) -> bytes:
    if len(chunk_ids) > MAX_MANIFEST_CHUNKS:
        raise SnapshotError(f"a snapshot has at most {MAX_MANIFEST_CHUNKS} distinct chunks")
    return (
        MANIFEST_MAGIC
        + len(chunk_ids).to_bytes(4, "big")
        + b"".join(bytes.fromhex(chunk_id) for chunk_id in chunk_ids)
    )


def split_manifest(data: bytes) -> tuple[tuple[str, ...], bytes, bytes]:
    """(chunk ids, header, sealed part) of a manifest object; SnapshotError if malformed."""
    if len(data) < 12 or data[:8] != MANIFEST_MAGIC:
        raise SnapshotError("the manifest object has no chunk list")
    count = int.from_bytes(data[8:12], "big")
    end = 12 + 32 * count
    if count > MAX_MANIFEST_CHUNKS or len(data) < end + 28:
        raise SnapshotError("the manifest object's chunk list is malformed")
    ids = tuple(data[i : i + 32].hex() for i in range(12, end, 32))
    return ids, data[:end], data[end:]


def open_manifest(keys: SnapshotKeys, epoch: int, sealed: bytes) -> Manifest:
    """The manifest sealed for this lease, key version and `epoch`, checked; SnapshotError
    for anything else (another lease's, another epoch's, tampered, malformed)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if not 0 <= epoch <= UINT64_MAX:
        raise SnapshotError("epoch out of range")
    if not 28 <= len(sealed) <= MAX_MANIFEST_BYTES:
        raise SnapshotError("the manifest's size is out of bounds")
    listed, header, body = split_manifest(sealed)
    try:
        plain = ChaCha20Poly1305(keys.snapshot_key).decrypt(
            body[:12], body[12:], keys.manifest_aad(epoch) + hashlib.sha256(header).digest()
        )
    except InvalidTag:
        raise SnapshotError(
            f"the manifest does not authenticate for lease {keys.lease_id} key version"
            f" {keys.key_version} epoch {epoch}"
        ) from None
    try:
        doc = json.loads(plain)
        want = {
            "format": FORMAT,
            "chain_id": keys.chain_id,
            "registry": "0x" + keys.registry.hex(),
            "lease_id": keys.lease_id,
            "key_version": keys.key_version,
            "epoch": epoch,
        }
        if any(doc.get(k) != v for k, v in want.items()):
            raise SnapshotError("the manifest names another lease, key version or epoch")
        chunks = tuple((str(c["id"]), c["size"]) for c in doc["chunks"])
        tar_size, tar_sha256 = doc["tar_size"], doc["tar_sha256"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError("the manifest is malformed") from exc
    _check_layout(chunks, tar_size, tar_sha256)
    manifest = Manifest(epoch, chunks, tar_size, tar_sha256)
    if manifest.distinct_chunks() != listed:
        raise SnapshotError("the manifest's clear chunk list is not its sealed one")
    return manifest


def _check_layout(chunks: tuple[tuple[str, Any], ...], tar_size: Any, tar_sha256: Any) -> None:
    if not isinstance(tar_size, int) or isinstance(tar_size, bool):
        raise SnapshotError("the manifest's tar_size is not an integer")
    if not 0 < tar_size <= MAX_SNAPSHOT_BYTES:
        raise SnapshotError("the manifest's tar size is out of bounds")
    if not isinstance(tar_sha256, str) or not _ID.fullmatch(tar_sha256):
        raise SnapshotError("the manifest's tar_sha256 is not a sha256")
    if len(chunks) != -(-tar_size // CHUNK_SIZE):
        raise SnapshotError("the manifest's chunks do not cover its tar")
    sizes: dict[str, int] = {}
    for index, (chunk_id, size) in enumerate(chunks):
        if not _ID.fullmatch(chunk_id) or not isinstance(size, int) or isinstance(size, bool):
            raise SnapshotError("a manifest chunk is malformed")
        last = index == len(chunks) - 1
        expected = tar_size - CHUNK_SIZE * index if last else CHUNK_SIZE
        if size != expected or sizes.setdefault(chunk_id, size) != size:
            raise SnapshotError("the manifest's chunk sizes are inconsistent")


# --- the local epoch ---------------------------------------------------------------------
def read_local_epoch(mount: Path, lease_id: int) -> int | None:
    """The epoch this volume holds (None: never set, or set for another lease, or unreadable)."""
    try:
        doc = json.loads((mount / RESERVED / EPOCH_FILE).read_bytes()[:4096])
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("lease_id") != lease_id:
        return None
    epoch = doc.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= UINT64_MAX:
        return None
    return epoch


def write_local_epoch(mount: Path, lease_id: int, epoch: int) -> None:
    """Atomically (temporary file, fsync, rename, fsync of the directory)."""
    directory = mount / RESERVED
    directory.mkdir(mode=0o700, exist_ok=True)
    data = json.dumps({"lease_id": lease_id, "epoch": epoch}).encode()
    temporary = directory / f".{EPOCH_FILE}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, directory / EPOCH_FILE)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- freezing ----------------------------------------------------------------------------
Ioctl = Callable[[int, int, Any], Any]
Freezer = Callable[[Path], Any]  # path -> a context manager: the file system frozen inside


def ioctl_freezer(ioctl: Ioctl = fcntl.ioctl) -> Freezer:
    """FIFREEZE on entry, FITHAW on exit, whatever happened inside."""

    @contextmanager
    def frozen(path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                ioctl(fd, FIFREEZE, 0)
            except OSError as exc:
                raise SnapshotError(
                    f"cannot freeze {path} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
                ) from exc
            try:
                yield
            finally:
                ioctl(fd, FITHAW, 0)
        finally:
            os.close(fd)

    return frozen


@contextmanager
def no_freeze(path: Path) -> Iterator[None]:
    """For tests on file systems that cannot freeze (tmpfs): nothing."""
    yield


# --- the tar -----------------------------------------------------------------------------
class _ChunkSink:
    """A write-only stream: cuts what is written into CHUNK_SIZE pieces, seals each, spools
    the objects under their ids, hashes the whole."""

    def __init__(self, keys: SnapshotKeys, spool: Path, limit: int) -> None:
        self.keys = keys
        self.spool = spool
        self.limit = limit
        self.buffer = bytearray()
        self.size = 0
        self.digest = hashlib.sha256()
        self.chunks: list[tuple[str, int]] = []

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise SnapshotError(f"the disk holds more than a snapshot may ({self.limit} bytes)")
        self.digest.update(data)
        self.buffer += data
        while len(self.buffer) >= CHUNK_SIZE:
            self._emit(bytes(self.buffer[:CHUNK_SIZE]))
            del self.buffer[:CHUNK_SIZE]
        return len(data)

    def close(self) -> None:
        if self.buffer:
            self._emit(bytes(self.buffer))
            self.buffer.clear()

    def _emit(self, plain: bytes) -> None:
        sealed = seal_chunk(self.keys, plain)
        chunk_id = hashlib.sha256(sealed).hexdigest()
        path = self.spool / chunk_id
        if not path.exists():
            path.write_bytes(sealed)
        self.chunks.append((chunk_id, len(plain)))


def write_tar(root: Path, sink: IO[bytes] | _ChunkSink, *, max_members: int = MAX_MEMBERS) -> int:
    """A deterministic tar of `root` (the same tree, the same bytes): entries in byte order
    of their names, "." first; regular files, directories and symbolic links only (sockets,
    devices and fifos are left out, a hard link is stored as a file); owner ids, mode and
    mtime (whole seconds) kept, no user or group names. The number of entries."""
    members = 0
    skipped = 0
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=sink,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:

        def add(path: Path, name: str, info: os.stat_result) -> None:
            nonlocal members
            members += 1
            if members > max_members:
                raise SnapshotError(f"the disk holds more than {max_members} entries")
            entry = tarfile.TarInfo(name)
            entry.mode = stat.S_IMODE(info.st_mode)
            entry.uid, entry.gid = info.st_uid, info.st_gid
            entry.uname = entry.gname = ""
            entry.mtime = int(info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                entry.type = tarfile.DIRTYPE
                tar.addfile(entry)
            elif stat.S_ISLNK(info.st_mode):
                entry.type = tarfile.SYMTYPE
                entry.linkname = os.readlink(path)
                tar.addfile(entry)
            else:
                entry.type = tarfile.REGTYPE
                entry.size = info.st_size
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as handle:
                    tar.addfile(entry, handle)

        def walk(directory: Path, prefix: str, top: bool) -> None:
            nonlocal skipped
            for name in sorted(os.listdir(directory), key=os.fsencode):
                if top and (name == RESERVED or name in SKIPPED):
                    continue
                path = directory / name
                info = os.lstat(path)
                mode = info.st_mode
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    skipped += 1
                    continue
                member = f"{prefix}{name}"
                add(path, member, info)
                if stat.S_ISDIR(mode):
                    walk(path, member + "/", False)

        add(root, ".", os.lstat(root))
        walk(root, "", True)
    if isinstance(sink, _ChunkSink):
        sink.close()
    return members


# --- safe extraction ---------------------------------------------------------------------
def _member_name(name: str) -> str:
    """The member's path relative to the root ("." for the root), or SnapshotError."""
    if name in (".", "./"):
        return "."
    name = name[:-1] if name.endswith("/") else name
    if not name or "\0" in name or len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise SnapshotError("an entry of the snapshot has an empty or bad name")
    if name.startswith("/"):
        raise SnapshotError(f"an entry of the snapshot has an absolute path: {name[:80]!r}")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SnapshotError(f"an entry of the snapshot leaves its directory: {name[:80]!r}")
    if parts[0] == RESERVED or parts[0] in SKIPPED:
        raise SnapshotError(f"an entry of the snapshot is in a reserved place: {name[:80]!r}")
    return name


def extract_tar(
    stream: IO[bytes],
    target: Path,
    *,
    max_bytes: int = MAX_SNAPSHOT_BYTES,
    max_members: int = MAX_MEMBERS,
) -> int:
    """Unpack a snapshot's tar into the empty directory `target`, refusing (SnapshotError)
    absolute paths, `..`, links that point out of `target` (or any link to write through),
    hard links, devices, fifos, duplicates, and more than `max_bytes` / `max_members`.
    Symbolic links are made last, so nothing is ever written through one. The entry count."""
    is_root = os.geteuid() == 0
    dirs: dict[str, tarfile.TarInfo] = {}
    files: list[tuple[str, tarfile.TarInfo]] = []
    links: list[tuple[str, tarfile.TarInfo]] = []
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(
            fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tar:
            for member in tar:
                if len(seen) >= max_members:
                    raise SnapshotError(f"the snapshot has more than {max_members} entries")
                name = _member_name(member.name)
                if name in seen:
                    raise SnapshotError(f"the snapshot holds {name[:80]!r} twice")
                seen.add(name)
                parent = name.rsplit("/", 1)[0] if "/" in name else "."
                if name != "." and parent not in dirs:
                    raise SnapshotError(f"{name[:80]!r} comes before its directory")
                path = target / name
                if member.isdir():
                    if name != ".":
                        os.mkdir(path, 0o700)
                    dirs[name] = member
                elif member.isreg():
                    total += member.size
                    if total > max_bytes:
                        raise SnapshotError(f"the snapshot unpacks to more than {max_bytes} bytes")
                    source = tar.extractfile(member)
                    assert source is not None
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    files.append((name, member))
                elif member.issym():
                    link = member.linkname
                    if not link or "\0" in link or link.startswith("/"):
                        raise SnapshotError(f"link {name[:80]!r} points out of the disk")
                    links.append((name, member))
                else:
                    raise SnapshotError(
                        f"{name[:80]!r} is a hard link, device or fifo: not in a snapshot"
                    )
        if "." not in dirs:
            raise SnapshotError("the snapshot has no root entry")
    except tarfile.TarError as exc:
        raise SnapshotError(f"the snapshot's tar is malformed: {exc}") from None
    root = os.path.realpath(target)
    for name, member in links:
        path = target / name
        os.symlink(member.linkname, path)
    for name, _ in links:
        resolved = os.path.realpath(target / name)
        if resolved != root and not resolved.startswith(root + "/"):
            raise SnapshotError(f"link {name[:80]!r} points out of the disk")
    for name, member in [*files, *sorted(dirs.items(), key=lambda d: -d[0].count("/"))]:
        _apply(target / name, member, is_root)
    for name, member in links:
        if is_root:
            os.chown(target / name, member.uid, member.gid, follow_symlinks=False)
    return len(seen)


def _apply(path: Path, member: tarfile.TarInfo, is_root: bool) -> None:
    if is_root:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
    os.chmod(path, member.mode & 0o1777)  # never setuid/setgid; never a link (made after)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


class _Concat:
    """The spooled plaintext chunks as one read-only stream, in manifest order."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.index = 0
        self.current: IO[bytes] | None = None

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self.current is None:
                if self.index >= len(self.paths):
                    break
                self.current = open(self.paths[self.index], "rb")
                self.index += 1
            piece = self.current.read(-1 if size < 0 else size - len(out))
            if not piece:
                self.current.close()
                self.current = None
                continue
            out += piece
        return bytes(out)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


# --- the guest's snapshots ---------------------------------------------------------------
@dataclass
class Snapshot:
    epoch: int
    manifest: bytes  # sealed
    manifest_id: str
    chunks: tuple[str, ...]  # unique ids, in tar order


@dataclass
class _Restore:
    manifest: Manifest
    need: set[str]
    keys: SnapshotKeys  # the key version the manifest was sealed under


class SnapshotManager:
    """The guest's snapshots and restores of its declared disk, and the gate the workload's
    services wait on. States:
    - "open": no snapshot keys (no threshold key, or no disk): services go by the mount alone;
    - "held": keys are being installed (the volume is opening): services wait;
    - "ready": the volume's epoch >= required: services run, snapshots may be taken;
    - "restore_needed": the volume is empty or older than required: services wait for a
      restore (restore_manifest, restore_chunk..., restore_finish).
    """

    def __init__(
        self,
        mount: Path | None,
        *,
        freezer: Freezer | None = None,
        spool: Path = SPOOL_DIR,
        console: Callable[[str], None] | None = None,
        is_mounted: Callable[[Path], bool] = os.path.ismount,
        on_ready: Callable[[], None] | None = None,
        max_bytes: int = MAX_SNAPSHOT_BYTES,
    ) -> None:
        self.mount = mount
        self.freezer = freezer if freezer is not None else ioctl_freezer()
        self.spool = spool
        self.console = console or (lambda text: print(text, flush=True))
        self.is_mounted = is_mounted
        self.on_ready = on_ready
        self.max_bytes = max_bytes
        self.keys: SnapshotKeys | None = None
        self.state = "open"
        self.last: Snapshot | None = None
        self.restore: _Restore | None = None
        self.lock = threading.Lock()

    # -- the gate ------------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether the services may use the disk (the runner's condition beside the mount)."""
        return self.state in ("open", "ready")

    def hold(self) -> None:
        """Services wait until `install` has compared the volume's epoch with the required one."""
        with self.lock:
            if self.state == "open":
                self.state = "held"

    def install(self, keys: SnapshotKeys) -> dict[str, Any]:
        """Keys derived from the root key, once the volume is mounted: the volume is used as
        it is if its epoch >= keys.required_epoch, else a restore is needed."""
        with self.lock:
            if self.mount is None:
                self.keys = keys
                self.state = "open"
                return self._status()
            if not self.is_mounted(self.mount):
                # Never judged (nor written) on the directory under it: the volume is not there.
                raise SnapshotError(f"{self.mount} is not mounted: the volume comes first")
            if self.keys is not None and self.state in ("ready", "restore_needed"):
                # Installed again (a new release): the required epoch only goes up.
                keys = _with_required(keys, max(keys.required_epoch, self.keys.required_epoch))
                keys = dataclasses.replace(
                    keys, number_above=max(keys.number_above, self.keys.number_above)
                )
            self.keys = keys
            local = read_local_epoch(self.mount, keys.lease_id)
            if (local or 0) >= keys.required_epoch:
                if local is None:
                    write_local_epoch(self.mount, keys.lease_id, 0)  # a new volume: epoch 0
                self.state = "ready"
            else:
                if local is not None or not self._empty():
                    self.console(
                        f"cvm-guest: REFUSING stale state (epoch {local or 0} <"
                        f" required {keys.required_epoch})"
                    )
                else:
                    self.console(
                        f"cvm-guest: empty volume, waiting for a snapshot of epoch >="
                        f" {keys.required_epoch}"
                    )
                self.state = "restore_needed"
            answer = self._status()
        if self.state == "ready" and self.on_ready is not None:
            self.on_ready()
        return answer

    def _empty(self) -> bool:
        assert self.mount is not None
        return not any(e.name != RESERVED and e.name not in SKIPPED for e in os.scandir(self.mount))

    def status(self) -> dict[str, Any]:
        """Without the lock: a snapshot in progress must not hold up the agent's `status`."""
        return self._status()

    def _status(self) -> dict[str, Any]:
        keys = self.keys
        local = None
        if keys is not None and self.mount is not None:
            local = read_local_epoch(self.mount, keys.lease_id)
        return {
            "restore_needed": self.state == "restore_needed",
            "required_epoch": keys.required_epoch if keys is not None else None,
            "epoch": local,
        }

    def _keys_for(self, what: str) -> SnapshotKeys:
        if self.mount is None:
            raise SnapshotError(f"{what}: this workload declares no disk")
        if self.keys is None:
            raise SnapshotError(f"{what}: no snapshot keys yet (the key shares come first)")
        return self.keys

    # -- snapshot ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Freeze, tar, chunk, seal; bump the epoch. {"epoch", "manifest_id", "chunks",
        "record", "size"}: the host fetches the chunks and the manifest next."""
        with self.lock:
            keys = self._keys_for("snapshot")
            assert self.mount is not None
            if self.state != "ready":
                raise SnapshotError(f"snapshot: the disk is not in use ({self.state})")
            if not self.is_mounted(self.mount):
                raise SnapshotError(f"snapshot: {self.mount} is not mounted")
            local = read_local_epoch(self.mount, keys.lease_id) or 0
            epoch = max(local, keys.required_epoch, keys.number_above) + 1
            if epoch > UINT64_MAX:
                raise SnapshotError("snapshot: the epoch counter is exhausted")
            out = self.spool / "out"
            self.last = None
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(mode=0o700, parents=True)
            # The sealed chunks wait in memory (tmpfs) for the host: at most half of what is free.
            free = available_memory()
            limit = self.max_bytes if free is None else min(self.max_bytes, free // 2)
            sink = _ChunkSink(keys, out, limit)
            try:
                with self.freezer(self.mount):
                    write_tar(self.mount, sink)
            except OSError as exc:
                shutil.rmtree(out, ignore_errors=True)
                raise SnapshotError(f"snapshot: reading the disk failed: {exc}") from exc
            except SnapshotError:
                shutil.rmtree(out, ignore_errors=True)
                raise
            manifest = Manifest(epoch, tuple(sink.chunks), sink.size, sink.digest.hexdigest())
            sealed = manifest.seal(keys)
            manifest_id = hashlib.sha256(sealed).digest()
            write_local_epoch(self.mount, keys.lease_id, epoch)
            unique = manifest.distinct_chunks()
            self.last = Snapshot(epoch, sealed, manifest_id.hex(), unique)
            record = {
                "epoch": epoch,
                "snapshot": manifest_id.hex(),
                "key_version": keys.key_version,
                "signature": base64.b64encode(keys.sign_epoch(epoch, manifest_id)).decode(),
            }
            return {
                "epoch": epoch,
                "manifest_id": manifest_id.hex(),
                "chunks": list(unique),
                "record": record,
                "size": manifest.tar_size,
            }

    def chunk(self, chunk_id: str) -> bytes:
        """A chunk object of the last snapshot."""
        with self.lock:
            last = self.last
            if last is None or chunk_id not in last.chunks:
                raise SnapshotError("snapshot_chunk: no such chunk in the last snapshot")
            return (self.spool / "out" / chunk_id).read_bytes()

    def manifest(self, epoch: int | None = None) -> tuple[int, bytes]:
        """The last snapshot's sealed manifest (and its epoch)."""
        with self.lock:
            last = self.last
            if last is None or (epoch is not None and epoch != last.epoch):
                raise SnapshotError("snapshot_manifest: no such snapshot")
            return last.epoch, last.manifest

    # -- restore -------------------------------------------------------------------------
    def restore_manifest(self, epoch: int, sealed: bytes) -> list[str]:
        """Start a restore from a sealed manifest; the chunk ids still needed."""
        with self.lock:
            keys = self._keys_for("restore")
            if self.state != "restore_needed":
                raise SnapshotError(f"restore: the disk needs no restore ({self.state})")
            if epoch < keys.required_epoch:
                self.console(
                    f"cvm-guest: REFUSING stale state (epoch {epoch} < required"
                    f" {keys.required_epoch})"
                )
                raise StaleState(
                    f"snapshot epoch {epoch} is older than the required {keys.required_epoch}"
                )
            manifest, sealed_by = _open_any(keys, epoch, sealed)
            assert self.mount is not None
            # Plaintext chunks wait on the volume being restored (encrypted, not yet in use),
            # not in the guest's memory.
            incoming = self.mount / RESERVED / "incoming"
            shutil.rmtree(incoming, ignore_errors=True)
            (self.mount / RESERVED).mkdir(mode=0o700, exist_ok=True)
            incoming.mkdir(mode=0o700)
            need = list(dict.fromkeys(chunk_id for chunk_id, _ in manifest.chunks))  # tar order
            self.restore = _Restore(manifest, set(need), sealed_by)
            return need

    def restore_chunk(self, chunk_id: str, data: bytes) -> int:
        """One chunk object of the restore under way, checked; the number still needed."""
        with self.lock:
            self._keys_for("restore_chunk")
            assert self.mount is not None
            restore = self.restore
            if restore is None:
                raise SnapshotError("restore_chunk: send restore_manifest first")
            if chunk_id not in restore.need:
                if any(chunk_id == c for c, _ in restore.manifest.chunks):
                    return len(restore.need)  # already have it
                raise SnapshotError("restore_chunk: the manifest names no such chunk")
            plain = open_chunk(restore.keys, chunk_id, data)
            size = next(s for c, s in restore.manifest.chunks if c == chunk_id)
            if len(plain) != size:
                raise SnapshotError(f"chunk {chunk_id[:16]}: not the size the manifest says")
            (self.mount / RESERVED / "incoming" / chunk_id).write_bytes(plain)
            restore.need.discard(chunk_id)
            return len(restore.need)

    def restore_finish(self) -> dict[str, Any]:
        """Check the whole tar, unpack it into a staging directory on the volume, swap it in
        for the volume's content, set the epoch, open the gate."""
        with self.lock:
            keys = self._keys_for("restore_finish")
            assert self.mount is not None
            restore = self.restore
            if restore is None:
                raise SnapshotError("restore_finish: send restore_manifest first")
            if restore.need:
                raise SnapshotError(f"restore_finish: {len(restore.need)} chunk(s) missing")
            manifest = restore.manifest
            incoming = self.mount / RESERVED / "incoming"
            paths = [incoming / chunk_id for chunk_id, _ in manifest.chunks]
            digest = hashlib.sha256()
            stream = _Concat(paths)
            try:
                while piece := stream.read(1 << 20):
                    digest.update(piece)
            finally:
                stream.close()
            if digest.hexdigest() != manifest.tar_sha256:
                raise SnapshotError("restore: the chunks do not make the manifest's tar")
            staging = self.mount / RESERVED / "restore"
            shutil.rmtree(staging, ignore_errors=True)
            (self.mount / RESERVED).mkdir(mode=0o700, exist_ok=True)
            staging.mkdir(mode=0o700)
            stream = _Concat(paths)
            try:
                count = extract_tar(stream, staging, max_bytes=self.max_bytes)  # type: ignore[arg-type]
            except (SnapshotError, OSError) as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise SnapshotError(f"restore: {exc}") from exc
            finally:
                stream.close()
            shutil.rmtree(incoming, ignore_errors=True)
            _swap_in(self.mount, staging)
            os.sync()
            write_local_epoch(self.mount, keys.lease_id, manifest.epoch)
            self.restore = None
            self.state = "ready"
            self.console(f"cvm-guest: restored snapshot epoch {manifest.epoch} ({count} entries)")
            answer = {"epoch": manifest.epoch, "entries": count}
        if self.on_ready is not None:
            self.on_ready()
        return answer


def _with_required(keys: SnapshotKeys, required: int) -> SnapshotKeys:
    return dataclasses.replace(keys, required_epoch=required)


def _open_any(keys: SnapshotKeys, epoch: int, sealed: bytes) -> tuple[Manifest, SnapshotKeys]:
    """The manifest opened under the current key version or, failing that, an earlier one
    of the same lease (sealed before a rekey); the keys that opened it."""
    try:
        return open_manifest(keys, epoch, sealed), keys
    except SnapshotError as first:
        for older in keys.previous[:16]:
            if older.lease_id != keys.lease_id or older.chain_id != keys.chain_id:
                continue
            try:
                return open_manifest(older, epoch, sealed), older
            except SnapshotError:
                continue
        raise first


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes (None if the kernel does not say)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _swap_in(mount: Path, staging: Path) -> None:
    """Replace the volume's content (all but .cvm and lost+found) by the staging's."""
    for entry in os.scandir(mount):
        if entry.name == RESERVED or entry.name in SKIPPED:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    for entry in os.scandir(staging):
        os.rename(entry.path, mount / entry.name)
    root = os.lstat(staging)
    if os.geteuid() == 0:
        os.chown(mount, root.st_uid, root.st_gid)
    os.chmod(mount, stat.S_IMODE(root.st_mode))
    os.rmdir(staging)
