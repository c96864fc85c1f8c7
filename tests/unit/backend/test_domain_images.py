"""`backend.domain.images.publish`: an upload that would fill the image store is refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.domain.errors import InvalidInput, OutOfSpace
from backend.domain.images import publish, store_bytes
from cvm.images import ImageStore, write_archive
from tests.fixtures.images import synthetic_image


def _upload(store: ImageStore, source: ImageStore, work: Path, marker: str) -> tuple[str, Path]:
    image = synthetic_image(source, work, marker)
    # As the route does: the body lands in a temporary file inside the store first.
    store.root.mkdir(parents=True, exist_ok=True)
    archive = store.root / f".upload-{marker}"
    with archive.open("wb") as handle:
        write_archive(image, handle)
    return image.image_id, archive


def test_an_upload_past_the_store_limit_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    store, source = ImageStore(tmp_path / "backend"), ImageStore(tmp_path / "renter")
    first, archive = _upload(store, source, tmp_path, "first")
    # Room for the upload and one unpacked copy: the first image fits.
    room = 2 * archive.stat().st_size + 4096
    assert publish(store, first, archive, room).image == first
    archive.unlink()
    second, archive = _upload(store, source, tmp_path, "second")
    before = store_bytes(store)
    with pytest.raises(OutOfSpace, match="CVM_IMAGE_STORE_MAX_BYTES"):
        publish(store, second, archive, room)
    assert store_bytes(store) == before  # nothing unpacked, no staging left behind
    archive.unlink()
    assert [image.image_id for image in store.list()] == [first]
    # With room for it, the same image is stored.
    image_id, archive = _upload(store, source, tmp_path, "third")
    assert publish(store, image_id, archive, 10 * room).image == image_id


def test_a_wrong_id_is_refused_before_any_room_is_taken(tmp_path: Path) -> None:
    store, source = ImageStore(tmp_path / "backend"), ImageStore(tmp_path / "renter")
    image_id, archive = _upload(store, source, tmp_path, "one")
    with pytest.raises(InvalidInput):
        publish(store, "0" * 64, archive, 10**9)
    assert store.list() == []
    assert publish(store, image_id, archive, 10**9).image == image_id


def test_leftovers_of_a_killed_upload_are_swept_not_counted_for_ever(tmp_path: Path) -> None:
    import os
    import time

    store, source = ImageStore(tmp_path / "backend"), ImageStore(tmp_path / "renter")
    image_id, archive = _upload(store, source, tmp_path, "one")
    room = 2 * archive.stat().st_size + 4096
    # A replica SIGKILLed mid-upload two hours ago, and one mid-unpack; and an upload in
    # flight right now in another replica (young: it must be left alone).
    stale_upload = store.root / ".upload-stale"
    stale_upload.write_bytes(b"\0" * room)
    stale_staging = store.root / ".incoming-stale"
    stale_staging.mkdir()
    (stale_staging / "vmlinuz").write_bytes(b"\0" * 1024)
    hours_ago = time.time() - 7200
    for path in (stale_upload, stale_staging):
        os.utime(path, (hours_ago, hours_ago))
    in_flight = store.root / ".upload-in-flight"
    in_flight.write_bytes(b"\0" * 16)

    assert publish(store, image_id, archive, room + 16).image == image_id
    assert not stale_upload.exists() and not stale_staging.exists()
    assert in_flight.exists()
    assert [image.image_id for image in store.list()] == [image_id]
