"""Image uploads unpacked as they stream in (`backend.domain.images.Upload` and
`backend.domain.image_archive`): raw tar headers checked before what they announce is read,
plain files only, declared sizes counted against the image, store and renter limits before a
byte is written, nothing left behind on a refusal; and the collection of unused uploads."""

from __future__ import annotations

import io
import os
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.domain.errors import InvalidInput, OutOfSpace, TooLarge
from backend.domain.image_archive import PAX_MAX_BYTES, ArchiveRefused, ImageArchiveReader
from backend.domain.images import Upload, UploadLimits, collect, store_bytes
from backend.store import ImageUpload, Lease, PrivateSpec, Store
from cvm.api_models import LeaseState
from cvm.images import Image, ImageStore, write_archive
from tests.fixtures.images import pax_header as pax
from tests.fixtures.images import synthetic_image
from tests.fixtures.images import tar_header as header
from tests.unit.backend.factories import add_lease

RENTER = "0x" + "02" * 20
OTHER = "0x" + "03" * 20
ROOMY = UploadLimits(image_bytes=10**9, store_bytes=None, renter_bytes=None)


def _tar(image: Image) -> bytes:
    buffer = io.BytesIO()
    write_archive(image, buffer)
    return buffer.getvalue()


def _upload(
    images: ImageStore, store: Store, image_id: str, limits: UploadLimits = ROOMY, *,
    renter: str = RENTER, chunks: Iterator[bytes] | list[bytes],
) -> str:  # fmt: skip
    upload = Upload(images, store, image_id, renter, limits)
    try:
        for chunk in chunks:
            upload.feed(chunk)
        return upload.finish().image
    finally:
        upload.close()


def _nothing_left(images: ImageStore) -> bool:
    return not images.root.exists() or not any(
        p.name.startswith(".") for p in images.root.iterdir()
    )


def test_an_image_streamed_in_any_chunking_is_stored(tmp_path: Path, store: Store) -> None:
    image = synthetic_image(ImageStore(tmp_path / "renter"), tmp_path, "one")
    data = _tar(image)
    images = ImageStore(tmp_path / "backend")
    odd = [data[i : i + 333] for i in range(0, len(data), 333)]
    assert _upload(images, store, image.image_id, chunks=odd) == image.image_id
    assert images.get(image.image_id).image_id == image.image_id  # deep check
    assert _nothing_left(images)
    # A PAX header a tar tool may write (times, the path) is fine, and trailing zeros too.
    members = tarfile.open(fileobj=io.BytesIO(data))
    again = b""
    for member in members:
        payload = members.extractfile(member).read()  # type: ignore[union-attr]
        again += pax({"path": member.name, "mtime": "1.5"})
        again += header("ignored", len(payload)) + payload + b"\0" * (-len(payload) % 512)
    again += b"\0" * 10240
    assert _upload(images, store, image.image_id, chunks=[again]) == image.image_id


@pytest.mark.parametrize(
    ("kind", "what"),
    [(b"1", "hard link"), (b"2", "symbolic link"), (b"3", "character device"),
     (b"4", "block device"), (b"5", "directory"), (b"6", "FIFO"), (b"S", "GNU sparse file"),
     (b"g", "global PAX header"), (b"L", "GNU long name")],
)  # fmt: skip
def test_only_plain_regular_files_are_accepted(
    tmp_path: Path, store: Store, kind: bytes, what: str
) -> None:
    images = ImageStore(tmp_path / "backend")
    with pytest.raises(ArchiveRefused, match=what):
        _upload(images, store, "ab" * 32, chunks=[header("vmlinuz", 0, kind)])
    assert _nothing_left(images) and images.list() == []


def test_a_sparse_bomb_is_refused_and_nothing_is_written(tmp_path: Path, store: Store) -> None:
    """Attack (issue 18): a sparse member declaring hundreds of MiB in a 10 KiB upload. The old
    `tarfile` extraction wrote every declared byte; here the member is refused from its
    header, both as a GNU `S` member and as PAX `GNU.sparse` records."""
    images = ImageStore(tmp_path / "backend")
    realsize = f"{300 * 2**20:011o}".encode()
    gnu = header("vmlinuz", 512, b"S", patch={483: realsize, 386: b"0", 398: b"1000"})
    with pytest.raises(ArchiveRefused, match="sparse"):
        _upload(images, store, "ab" * 32, chunks=[gnu + b"\0" * 10240])
    pax_sparse = pax({"GNU.sparse.major": "1", "GNU.sparse.realsize": str(300 * 2**20)})
    with pytest.raises(ArchiveRefused, match="sparse"):
        _upload(images, store, "ab" * 32, chunks=[pax_sparse + header("vmlinuz", 512)])
    assert _nothing_left(images) and store_bytes(images) == 0


def test_a_huge_pax_header_is_refused_from_its_block_with_bounded_memory(
    tmp_path: Path, store: Store
) -> None:
    """Attack (issue 18): a 25 MiB PAX header, which `tarfile` read whole into memory (about
    270 MiB for one upload). Refused from its 512-byte header: the first chunk ends it, and
    the upload's peak allocation stays far below the header's size."""
    images = ImageStore(tmp_path / "backend")
    size = 25 * 2**20
    block = header("PaxHeader", size, b"x")
    seen = 0

    def body() -> Iterator[bytes]:
        nonlocal seen
        yield block
        for _ in range(size // 65536):
            seen += 1
            yield b"9" * 65536

    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match=f"{size}-byte PAX header .at most {PAX_MAX_BYTES}"):
            _upload(images, store, "ab" * 32, chunks=body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 0  # not one byte of the header's body was asked for
    assert peak < 2**20
    # Just over the bound is refused too; at the bound it is read (and parsed).
    with pytest.raises(TooLarge):
        ImageArchiveReader(tmp_path, lambda _n: None).feed(header("P", PAX_MAX_BYTES + 1, b"x"))
    ImageArchiveReader(tmp_path, lambda _n: None).feed(pax({}, pad_to=PAX_MAX_BYTES))


def test_declared_sizes_count_against_every_limit_before_a_byte_is_written(
    tmp_path: Path, store: Store
) -> None:
    images = ImageStore(tmp_path / "backend")
    # 100 MiB declared in a 1 KiB body: refused at the header, no file created.
    small = UploadLimits(image_bytes=2**20, store_bytes=None, renter_bytes=None)
    with pytest.raises(TooLarge, match="declare 104857600 bytes; the limit is 1048576"):
        _upload(
            images, store, "ab" * 32, small, chunks=[header("vmlinuz", 100 * 2**20) + b"x" * 512]
        )
    full = UploadLimits(image_bytes=10**9, store_bytes=4096, renter_bytes=None)
    with pytest.raises(OutOfSpace, match="CVM_IMAGE_STORE_MAX_BYTES"):
        _upload(images, store, "ab" * 32, full, chunks=[header("vmlinuz", 8192)])
    quota = UploadLimits(image_bytes=10**9, store_bytes=None, renter_bytes=4096)
    with pytest.raises(TooLarge, match="quota is 4096"):
        _upload(images, store, "ab" * 32, quota, chunks=[header("initrd.cpio", 8192)])
    assert _nothing_left(images) and store_bytes(images) == 0


def test_a_member_never_gets_more_than_it_declared(tmp_path: Path, store: Store) -> None:
    images = ImageStore(tmp_path / "backend")
    # 512 bytes declared, then more data where the next header belongs: not a header.
    with pytest.raises(ArchiveRefused, match="checksum"):
        _upload(images, store, "ab" * 32, chunks=[header("vmlinuz", 512) + b"y" * 2048])
    with pytest.raises(ArchiveRefused, match="truncated"):
        _upload(images, store, "ab" * 32, chunks=[header("vmlinuz", 4096) + b"y" * 512])
    with pytest.raises(ArchiveRefused, match="after the end"):
        _upload(images, store, "ab" * 32, chunks=[b"\0" * 1024 + b"junk"])
    with pytest.raises(ArchiveRefused, match="appears twice"):
        _upload(images, store, "ab" * 32, chunks=[header("vmlinuz", 0) * 2])
    with pytest.raises(ArchiveRefused, match=r"unexpected '\.\./vmlinuz'"):
        _upload(images, store, "ab" * 32, chunks=[header("../vmlinuz", 0)])
    assert _nothing_left(images)


def test_concurrent_uploads_count_each_other_s_declared_sizes(tmp_path: Path, store: Store) -> None:
    images = ImageStore(tmp_path / "backend")
    limits = UploadLimits(image_bytes=10**9, store_bytes=3 * 2**20, renter_bytes=None)
    first = Upload(images, store, "ab" * 32, RENTER, limits)
    second = Upload(images, store, "cd" * 32, OTHER, limits)
    try:
        first.feed(header("vmlinuz", 2 * 2**20))  # declared, nothing written yet
        with pytest.raises(OutOfSpace):
            second.feed(header("vmlinuz", 2 * 2**20))
    finally:
        first.close()
        second.close()
    assert _nothing_left(images)


def test_an_upload_on_another_replica_counts_at_its_declared_size(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas share one image store (docker-compose.yml), but each knows only its own
    uploads in flight. Fails on the code as merged (red team of issue 18): a file declared on
    one replica counted on disk only as far as it had arrived, so an upload on another replica
    passed the store limit it was about to fill. Now each file is sized to its declaration
    when it is created (sparse, no blocks yet), so every replica counts it in full."""
    from backend.domain import images as domain_images

    images = ImageStore(tmp_path / "backend")
    limits = UploadLimits(image_bytes=10**9, store_bytes=3 * 2**20, renter_bytes=None)
    here = domain_images._IN_FLIGHT
    first = Upload(images, store, "ab" * 32, RENTER, limits)
    try:
        first.feed(header("vmlinuz", 2 * 2**20) + b"k" * 512)  # declared, 512 bytes arrived
        monkeypatch.setattr(domain_images, "_IN_FLIGHT", domain_images._InFlight())
        second = Upload(images, store, "cd" * 32, OTHER, limits)  # as on another replica
        try:
            with pytest.raises(OutOfSpace):
                second.feed(header("vmlinuz", 2 * 2**20))
        finally:
            second.close()
    finally:
        first.close()
        with here.lock:
            here.declared.pop(first.staging, None)
    assert _nothing_left(images)


def test_a_wrong_id_is_refused_and_the_quota_counts_each_image_once(
    tmp_path: Path, store: Store
) -> None:
    source = ImageStore(tmp_path / "renter")
    one = synthetic_image(source, tmp_path, "one")
    two = synthetic_image(source, tmp_path, "two")
    images = ImageStore(tmp_path / "backend")
    with pytest.raises(InvalidInput, match=f"the files are image {one.image_id}"):
        _upload(images, store, two.image_id, chunks=[_tar(one)])
    assert images.list() == [] and _nothing_left(images)
    quota = UploadLimits(image_bytes=10**9, store_bytes=None, renter_bytes=one.size_bytes() + 100)
    _upload(images, store, one.image_id, quota, chunks=[_tar(one)])
    _upload(images, store, one.image_id, quota, chunks=[_tar(one)])  # again: not counted twice
    with pytest.raises(TooLarge, match="quota"):
        _upload(images, store, two.image_id, quota, chunks=[_tar(two)])
    _upload(images, store, two.image_id, quota, renter=OTHER, chunks=[_tar(two)])  # theirs
    assert {i.image_id for i in images.list()} == {one.image_id, two.image_id}


def test_leftovers_of_a_killed_upload_are_swept_not_counted_for_ever(
    tmp_path: Path, store: Store
) -> None:
    image = synthetic_image(ImageStore(tmp_path / "renter"), tmp_path, "one")
    images = ImageStore(tmp_path / "backend")
    images.root.mkdir()
    stale = images.root / ".incoming-stale"
    stale.mkdir()
    (stale / "vmlinuz").write_bytes(b"\0" * 2**20)
    hours_ago = time.time() - 7200
    os.utime(stale, (hours_ago, hours_ago))
    limits = UploadLimits(image_bytes=10**9, store_bytes=2**20, renter_bytes=None)
    assert _upload(images, store, image.image_id, limits, chunks=[_tar(image)]) == image.image_id
    assert not stale.exists()


def test_unused_uploads_are_collected_after_the_grace_period(tmp_path: Path, store: Store) -> None:
    source = ImageStore(tmp_path / "renter")
    used, unused, intended, placed = (
        synthetic_image(source, tmp_path, name) for name in ("used", "unused", "intended", "placed")
    )
    images = ImageStore(tmp_path / "backend")
    for image in (used, unused, intended):
        _upload(images, store, image.image_id, chunks=[_tar(image)])
    images.add(placed.directory)  # put there by the operator, not uploaded: never collected
    now = time.time()
    day = 86400.0
    add_lease(store, 1, RENTER, spec_hash="0x" + "66" * 32)
    with store.session() as session:
        # Named as a spec may spell it (the intent's image is free text).
        session.add(PrivateSpec(spec_hash="0x" + "66" * 32, renter=RENTER,
                                image=f"sha256:{used.image_id.upper()}",
                                ssh_public_key=None, cloud_init=None,
                                created_at=datetime.fromtimestamp(now - 3 * day, UTC)))  # fmt: skip
        # An intent made an hour before the collection, for a lease about to be created.
        session.add(PrivateSpec(spec_hash="0x" + "77" * 32, renter=RENTER, image=intended.image_id,
                                ssh_public_key=None, cloud_init=None,
                                created_at=datetime.fromtimestamp(now + day, UTC)))  # fmt: skip
    assert collect(images, store, grace_s=day, now=now) == []  # everything is young
    later = now + day + 3600
    assert collect(images, store, grace_s=day, now=later) == [unused.image_id]
    stored = {i.image_id for i in images.list()}
    assert stored == {used.image_id, intended.image_id, placed.image_id}
    with store.session() as session:
        rows = {row.image for row in session.scalars(select(ImageUpload))}
    assert unused.image_id not in rows  # its room is the renter's again
    # Once the lease is closed, its image goes too.
    with store.session() as session:
        lease = session.get(Lease, 1)
        assert lease is not None
        lease.status = LeaseState.CLOSED
    assert used.image_id in collect(images, store, grace_s=day, now=later + 2 * day)
    assert placed.image_id in {i.image_id for i in images.list()}
