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
