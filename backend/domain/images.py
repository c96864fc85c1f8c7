"""Guest images the backend serves by content address, and the uploads that publish them.

Images are not secret (the measurement a lease expects of one is public on chain), so reads
need no sign-in; whoever fetches an image checks its files against the id it asked for.
Publishing is for signed-in renters. An upload is one tar of the three files
(`cvm.images.write_archive`), unpacked into a staging directory inside the image store,
checked against the id it was sent as (recomputed from the files, never believed) and
renamed into place in one step: nothing half-written or mislabelled is ever served.
"""

from __future__ import annotations

from pathlib import Path

from backend.domain.errors import InvalidInput, NotFound, OutOfSpace
from cvm.api_models import ImageComponent, ImageManifest
from cvm.images import (
    IMAGE_FILES,
    IMAGE_FORMAT,
    MANIFEST,
    Image,
    ImageError,
    ImageMismatch,
    ImageStore,
    extract_archive,
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
        "vmlinuz": image.kernel_sha256,
        "initrd.cpio": image.initrd_sha256,
        MANIFEST: sha256_file(image.directory / MANIFEST),
    }
    return ImageManifest(
        image=image.image_id,
        format=IMAGE_FORMAT,
        cmdline=image.cmdline,
        components=[
            ImageComponent(
                name=name, sha256=hashes[name], size=(image.directory / name).stat().st_size
            )
            for name in IMAGE_FILES
        ],
    )


def manifest(store: ImageStore, image_id: str) -> ImageManifest:
    """The files of a stored image with their hashes and sizes; `NotFound` if none."""
    return _manifest(_stored(store, image_id))


def component_file(store: ImageStore, image_id: str, name: str) -> Path:
    """Where one file of a stored image is; `NotFound` for an unknown image or file."""
    image = _stored(store, image_id)
    if name not in IMAGE_FILES:
        raise NotFound(f"component {name!r} of image {image.image_id} ({', '.join(IMAGE_FILES)})")
    return image.directory / name


def store_bytes(store: ImageStore) -> int:
    """What the image store holds on disk now (images, staging and uploads in flight)."""
    if not store.root.is_dir():
        return 0
    return sum(path.stat().st_size for path in store.root.rglob("*") if path.is_file())


def publish(
    store: ImageStore, image_id: str, archive: Path, max_store_bytes: int | None = None
) -> ImageManifest:
    """Store the image in `archive` (an uploaded tar) as `image_id` once its files hash to
    that id; `InvalidInput` for anything else, `OutOfSpace` when unpacking it would take the
    store past `max_store_bytes` (nothing is stored then)."""
    wanted = _id(image_id)
    # Leftovers of a replica killed mid-upload would count against the cap for ever.
    store.sweep()
    if max_store_bytes is not None:
        # The archive is already counted (it sits in the store); unpacking takes as much again.
        needed = store_bytes(store) + archive.stat().st_size
        if needed > max_store_bytes:
            raise OutOfSpace(
                f"the image store is full ({needed} of {max_store_bytes} bytes with this image);"
                " ask the operators to raise CVM_IMAGE_STORE_MAX_BYTES or remove images"
            )
    with store.staging() as staging:
        try:
            extract_archive(archive, staging)
            image = store.import_verified(staging, wanted)
        except ImageMismatch as exc:
            raise InvalidInput(f"refused: {exc}") from None
        except ImageError as exc:
            raise InvalidInput(str(exc)) from None
    return _manifest(image)
