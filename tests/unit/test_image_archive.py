"""The image upload format and the store's atomic import (`cvm.images`), on small files: a
tar of exactly the three files round-trips, anything else in it is refused, and files that
are another image never land in the store. Plus the console text a renter's terminal gets."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from backend.domain.console import _whole_characters
from cvm.cli.guest import printable
from cvm.images import (
    IMAGE_FILES,
    ImageError,
    ImageMismatch,
    ImageStore,
    extract_archive,
    write_archive,
)
from tests.fixtures.images import synthetic_image


def _tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x" * 16) -> Path:
    with tarfile.open(path, "w") as archive:
        for info in members:
            if info.isreg():
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
            else:
                archive.addfile(info)
    return path


def test_an_archive_round_trips_into_the_same_image(tmp_path: Path) -> None:
    image = synthetic_image(ImageStore(tmp_path / "a"), tmp_path, "rt")
    archive = tmp_path / "image.tar"
    with archive.open("wb") as handle:
        write_archive(image, handle)
    other = ImageStore(tmp_path / "b")
    with other.staging() as staging:
        extract_archive(archive, staging)
        stored = other.import_verified(staging, image.image_id)
    assert stored.image_id == image.image_id
    assert stored.initrd.read_bytes() == image.initrd.read_bytes()
    assert [p.name for p in other.root.iterdir()] == [image.image_id]  # no staging left


def _link(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([tarfile.TarInfo(n) for n in (*IMAGE_FILES, "extra")], "unexpected 'extra'"),
        ([tarfile.TarInfo("../vmlinuz")], "unexpected '../vmlinuz'"),
        ([_link("vmlinuz")], "unexpected 'vmlinuz'"),
        ([tarfile.TarInfo("vmlinuz"), tarfile.TarInfo("vmlinuz")], "appears twice"),
        ([tarfile.TarInfo("vmlinuz")], "lacks initrd.cpio, manifest.json"),
    ],
)
def test_anything_but_the_three_regular_files_is_refused(
    tmp_path: Path, members: list[tarfile.TarInfo], why: str
) -> None:
    archive = _tar(tmp_path / "bad.tar", members)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ImageError, match=why):
        extract_archive(archive, staging)
    assert not (tmp_path / "etc").exists()


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x1f\x8b not a tar at all" * 100)
    with pytest.raises(ImageError, match="not an image archive"):
        extract_archive(junk, tmp_path)


def test_files_of_another_image_are_never_stored(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = synthetic_image(ImageStore(tmp_path / "src"), tmp_path, "one")
    with store.staging() as staging:
        for name in IMAGE_FILES:
            (staging / name).write_bytes((image.directory / name).read_bytes())
        with pytest.raises(ImageMismatch, match=f"image {image.image_id}, not {'cd' * 32}"):
            store.import_verified(staging, "cd" * 32)
        (staging / "initrd.cpio").write_bytes(b"changed")
        with pytest.raises(ImageMismatch, match="corrupt"):
            store.import_verified(staging, image.image_id)
    assert list(store.root.iterdir()) == []


def test_a_damaged_stored_copy_is_replaced_by_a_verified_one(tmp_path: Path) -> None:
    image = synthetic_image(ImageStore(tmp_path / "src"), tmp_path, "fix")
    store = ImageStore(tmp_path / "store")
    stored = store.add(image.directory)
    stored.kernel.write_bytes(b"bit rot")
    assert not store.has(image.image_id)
    store.add(image.directory)
    assert store.get(image.image_id).kernel.read_bytes() == image.kernel.read_bytes()


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"plain", b"plain"),
        ("ok ✓".encode(), "ok ✓".encode()),
        ("ok ✓".encode()[:-1], b"ok "),  # a 3-byte character cut after 2
        ("ok ✓".encode()[:-2], b"ok "),
        ("é".encode()[:1], b""),
        (b"\xff\xfe", b"\xff\xfe"),  # not UTF-8 at all: left for the decoder to replace
    ],
)
def test_a_console_read_never_ends_inside_a_character(data: bytes, kept: bytes) -> None:
    assert _whole_characters(data) == kept


def test_console_text_cannot_drive_the_terminal() -> None:
    assert printable("a\r\nb\x1b[2J\x07\tc\x9b") == "a\nb?[2J?\tc?"
    # Bidirectional overrides and isolates cannot reorder what the renter reads.
    assert printable("rm \u202e-rf\u202c \u2066x\u2069 ok") == "rm ?-rf? ?x? ok"
