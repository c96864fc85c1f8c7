"""Guest images the backend serves by content address, and the uploads that publish them.

Images are not secret (the measurement a lease expects of one is public on chain), so reads
need no sign-in; whoever fetches an image checks its files against the id it asked for.
Publishing is for signed-in renters. An upload is one tar of the image's files
(`cvm.images.write_archive`), unpacked as it streams in (`backend.domain.image_archive`:
raw headers checked first, plain files only, declared sizes counted against the image, store
and renter limits before a byte is written) into a staging directory inside the image store,
checked against the id it was sent as (recomputed from the files, never believed) and
renamed into place in one step: nothing half-written or mislabelled is ever served.

Each upload is recorded per renter (`ImageUpload`): the sizes count against the renter's
quota, and `collect` removes uploaded images that no open lease names once their last upload
is older than a grace period.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from backend.domain.errors import InvalidInput, NotFound, OutOfSpace, TooLarge
from backend.domain.image_archive import ImageArchiveReader
from backend.store import ImageUpload, Lease, PrivateSpec, Store
from cvm.api_models import ImageComponent, ImageManifest, LeaseState
from cvm.images import (
    KERNEL,
    MANIFEST,
    ROOTFS,
    Image,
    ImageError,
    ImageMismatch,
    ImageStore,
    normalize_id,
    sha256_file,
)


def _id(image_id: str) -> str:
    try:
        return normalize_id(image_id)
    except ImageError as exc:
        raise InvalidInput(str(exc)) from None


def _stored(store: ImageStore, image_id: str) -> Image:
    wanted = _id(image_id)
    try:
        # Files were verified when they were placed (and are checked by every reader):
        # hashing hundreds of MiB on each request would buy nothing.
        return store.get(wanted, deep=False)
    except ImageError:
        raise NotFound(f"image {wanted} (publish it with `cvm image push`)") from None


def _manifest(image: Image) -> ImageManifest:
    hashes = {
        KERNEL: image.kernel_sha256,
        "initrd.cpio": image.initrd_sha256,
        MANIFEST: sha256_file(image.directory / MANIFEST),
    }
    if image.rootfs_sha256 is not None:
        hashes[ROOTFS] = image.rootfs_sha256
    return ImageManifest(
        image=image.image_id,
        format=image.format,
        cmdline=image.cmdline,
        components=[
            ImageComponent(
                name=name, sha256=hashes[name], size=(image.directory / name).stat().st_size
            )
            for name in image.files
        ],
        workload=image.workload,
    )


def manifest(store: ImageStore, image_id: str) -> ImageManifest:
    """The files of a stored image with their hashes and sizes; `NotFound` if none."""
    return _manifest(_stored(store, image_id))


def component_file(store: ImageStore, image_id: str, name: str) -> Path:
    """Where one file of a stored image is; `NotFound` for an unknown image or file."""
    image = _stored(store, image_id)
    if name not in image.files:
        raise NotFound(f"component {name!r} of image {image.image_id} ({', '.join(image.files)})")
    return image.directory / name


def store_bytes(store: ImageStore, *, skip: Collection[Path] = ()) -> int:
    """What the image store holds on disk now (images, staging and uploads in flight), but
    for the directories in `skip`."""
    if not store.root.is_dir():
        return 0
    total = 0
    for path in store.root.rglob("*"):
        if skip and any(path.is_relative_to(directory) for directory in skip):
            continue
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except FileNotFoundError:
            continue  # removed meanwhile (another upload finished, a collection ran)
    return total


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may take (`Settings`: image_max_bytes, image_store_max_bytes,
    image_renter_quota_bytes)."""

    image_bytes: int
    store_bytes: int | None
    renter_bytes: int | None


class _InFlight:
    """Uploads in progress in this process, by staging directory: what each has declared so
    far, so that concurrent uploads cannot each pass a limit the others already fill."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.declared: dict[Path, tuple[str, int]] = {}  # staging -> (renter, bytes)


_IN_FLIGHT = _InFlight()


class Upload:
    """One `PUT /v1/images/{id}` in progress: its tar is unpacked as it arrives (fed in
    chunks) into a staging directory of the store, with every declared size counted against
    the limits before it is written; `finish()` stores the image if it hashes to its id."""

    def __init__(
        self,
        images: ImageStore,
        db: Store,
        image_id: str,
        renter: str,
        limits: UploadLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.wanted = _id(image_id)
        self.images = images
        self.db = db
        self.renter = renter.lower()
        self.limits = limits
        self.clock = clock
        images.root.mkdir(parents=True, exist_ok=True)
        # Leftovers of a replica killed mid-upload would count against the cap for ever.
        images.sweep()
        with db.new_session(read_only=True) as session:
            # The renter's other images (sending one again does not count it twice).
            self.renter_used = int(
                session.scalar(
                    select(func.coalesce(func.sum(ImageUpload.size_bytes), 0)).where(
                        ImageUpload.renter == self.renter, ImageUpload.image != self.wanted
                    )
                )
                or 0
            )
        self.staging = Path(tempfile.mkdtemp(dir=images.root, prefix=".incoming-"))
        self.declared = 0
        with _IN_FLIGHT.lock:
            _IN_FLIGHT.declared[self.staging] = (self.renter, 0)
        self.reader = ImageArchiveReader(self.staging, self._reserve)
        self._touched = time.monotonic()

    def _reserve(self, size: int) -> None:
        """Count a file's declared size against every limit, before a byte of it is written."""
        declared = self.declared + size
        if declared > self.limits.image_bytes:
            raise TooLarge(
                f"the image's files declare {declared} bytes; the limit is"
                f" {self.limits.image_bytes} (CVM_IMAGE_MAX_BYTES)"
            )
        with _IN_FLIGHT.lock:
            others = {k: v for k, v in _IN_FLIGHT.declared.items() if k != self.staging}
            if self.limits.renter_bytes is not None:
                mine = self.renter_used + declared
                mine += sum(n for who, n in others.values() if who == self.renter)
                if mine > self.limits.renter_bytes:
                    raise TooLarge(
                        f"this image would take your uploaded images to {mine} bytes; your"
                        f" quota is {self.limits.renter_bytes} (CVM_IMAGE_RENTER_QUOTA_BYTES)."
                        " Images no open lease uses are removed after CVM_IMAGE_GC_GRACE_S"
                    )
            if self.limits.store_bytes is not None:
                # On disk, but for uploads in flight here, which count at what they declared.
                pending = [*others, self.staging]
                needed = store_bytes(self.images, skip=pending) + declared
                needed += sum(n for _, n in others.values())
                if needed > self.limits.store_bytes:
                    raise OutOfSpace(
                        f"the image store is full ({needed} of {self.limits.store_bytes} bytes"
                        " with this image); ask the operators to raise"
                        " CVM_IMAGE_STORE_MAX_BYTES or remove images"
                    )
            _IN_FLIGHT.declared[self.staging] = (self.renter, declared)
        self.declared = declared

    def feed(self, data: bytes) -> None:
        """The next bytes of the body."""
        self.reader.feed(data)
        now = time.monotonic()
        if now - self._touched > 60:
            # A slow upload's staging directory must not look like a killed replica's
            # leftover to another upload's sweep (which goes by its time).
            self._touched = now
            os.utime(self.staging)

    def finish(self) -> ImageManifest:
        """Store the image once its files hash to the id it was sent as; `InvalidInput` if
        not (nothing is stored then). Records the upload for the renter's quota."""
        self.reader.finish()
        try:
            image = self.images.import_verified(self.staging, self.wanted)
        except ImageMismatch as exc:
            raise InvalidInput(f"refused: {exc}") from None
        except ImageError as exc:
            raise InvalidInput(str(exc)) from None
        _record(self.db, image.image_id, self.renter, image.size_bytes(), self.clock())
        return _manifest(image)

    def close(self) -> None:
        """Done (stored or refused): nothing of the upload stays behind."""
        self.reader.close()
        with _IN_FLIGHT.lock:
            _IN_FLIGHT.declared.pop(self.staging, None)
        shutil.rmtree(self.staging, ignore_errors=True)


def _record(db: Store, image_id: str, renter: str, size: int, now: float) -> None:
    at = datetime.fromtimestamp(now, UTC)
    for _ in range(2):  # a concurrent first upload of the same pair may insert first
        try:
            with db.session() as session:
                row = session.get(ImageUpload, (image_id, renter))
                if row is None:
                    session.add(
                        ImageUpload(image=image_id, renter=renter, size_bytes=size, uploaded_at=at)
                    )
                else:
                    row.size_bytes, row.uploaded_at = size, at
            return
        except IntegrityError:
            continue


def collect(images: ImageStore, db: Store, *, grace_s: float, now: float) -> list[str]:
    """Remove uploaded images that no open lease names, once their newest upload is older
    than `grace_s` (a renter uploads before creating the lease; an intent for a lease about
    to be created names it too). Images placed in the store otherwise (no upload record) are
    never touched. The ids removed."""
    cutoff = datetime.fromtimestamp(now - grace_s, UTC)
    with db.new_session(read_only=True) as session:
        newest: dict[str, datetime] = {
            image: at
            for image, at in session.execute(
                select(ImageUpload.image, func.max(ImageUpload.uploaded_at)).group_by(
                    ImageUpload.image
                )
            ).tuples()
        }
        stale = {image for image, at in newest.items() if at < cutoff}
        if not stale:
            return []
        in_use = set(
            session.scalars(
                select(PrivateSpec.image)
                .join(Lease, Lease.spec_hash == PrivateSpec.spec_hash)
                .where(Lease.status != LeaseState.CLOSED)
            )
        )
        in_use |= set(
            session.scalars(select(PrivateSpec.image).where(PrivateSpec.created_at >= cutoff))
        )
    named = set()
    for value in in_use:  # free text in a spec: an id in any of the spellings ids accept
        try:
            named.add(normalize_id(value.strip()))
        except ImageError:
            continue
    removed = []
    for image in sorted(stale - named):
        with db.session() as session:
            sent_again = session.scalar(
                select(ImageUpload.image).where(
                    ImageUpload.image == image, ImageUpload.uploaded_at >= cutoff
                )
            )
            if sent_again is not None:  # since the read above: it stays
                continue
            session.execute(delete(ImageUpload).where(ImageUpload.image == image))
        try:
            images.remove(image)
        except (FileNotFoundError, ImageError):
            pass  # gone already (another replica collected it, or it was never stored)
        removed.append(image)
    return removed
