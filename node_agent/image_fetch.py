"""Guest images fetched from the backend by content address into the node's image store.

The backend is not trusted with the image: each file is hashed as it streams in and checked
against the manifest, the manifest against the image id the lease names, and the store
checks all of it again before the image is renamed into place. A download that fails any
check is dropped, logged and refused (`ImageRefused`): it is never booted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection
from pathlib import Path

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import ImageManifest
from cvm.images import (
    IMAGE_FILES,
    IMAGE_FILES_V2,
    MANIFEST,
    MANIFEST_MAX_BYTES,
    ROOTFS,
    Image,
    ImageError,
    ImageStore,
    image_id,
    normalize_id,
)
from node_agent.errors import ImageRefused, ImageUnavailable

log = logging.getLogger(__name__)

# Backend answers worth waiting out: none at all, rate limited, or a server error.
_TRANSIENT = (0, 408, 429)


class ImageFetcher:
    """Makes an image named by a lease present in `store`, downloading it when missing."""

    def __init__(
        self,
        api: ApiClient,
        store: ImageStore,
        *,
        max_bytes: int,
        cache_bytes: int | None = None,
        in_use: Callable[[], Collection[str]] = tuple,
    ) -> None:
        self.api = api
        self.store = store
        self.max_bytes = max_bytes
        # At most this much of images kept (None: all); `in_use` names those never removed.
        self.cache_bytes = cache_bytes
        self.in_use = in_use

    def ensure(self, image: str, *, deep: bool = True) -> Image:
        """The stored image `image`, fetched from the backend and verified if it was not
        here (or, with `deep`, was damaged: its files are hashed). `deep=False` only checks
        the manifest of an image present (hashing 57 MiB on every servability check was
        most of a lease start). `ImageRefused` if the backend has no such image or serves
        other bytes; `ImageUnavailable` if it cannot be reached now."""
        try:
            wanted = normalize_id(image)
        except ImageError as exc:
            raise ImageRefused(str(exc)) from None
        if self.store.has(wanted) if deep else self._present(wanted):
            self.store.mark_used(wanted)
            return self.store.get(wanted, deep=False)
        self.store.sweep()  # what an agent killed mid-download left behind
        try:
            manifest = self.api.image_manifest(wanted)
            self._check_manifest(wanted, manifest)
            with self.store.staging() as staging:
                for name in sorted(item.name for item in manifest.components):
                    self._download(wanted, manifest, name, staging / name)
                try:
                    stored = self.store.import_verified(staging, wanted)
                except ImageError as exc:
                    raise self._refuse(wanted, str(exc)) from None
        except ApiError as exc:
            if exc.status_code in _TRANSIENT or exc.status_code >= 500:
                why = f"image {wanted}: the backend did not serve it: {exc}"
                raise ImageUnavailable(why) from None
            if exc.status_code == 404:
                raise self._refuse(wanted, "the backend has no such image") from None
            raise self._refuse(wanted, f"the backend refused it: {exc}") from None
        log.info("image %s: downloaded and verified (%d bytes)", wanted, stored.size_bytes())
        self.store.mark_used(wanted)
        self._evict(keep={wanted})
        return stored

    def _present(self, image: str) -> bool:
        try:
            self.store.get(image, deep=False)
        except ImageError:
            return False
        return True

    def _evict(self, keep: set[str]) -> None:
        """Keep the store within `cache_bytes`: renters' images are removed least recently
        used first, never one a guest of this node boots (or was just fetched for one)."""
        if self.cache_bytes is None:
            return
        removed = self.store.prune(self.cache_bytes, keep=keep | set(self.in_use()))
        for image in removed:
            log.info("image %s: removed from the cache (least recently used)", image)

    def _refuse(self, image: str, why: str) -> ImageRefused:
        log.warning("image %s: download refused: %s", image, why)
        return ImageRefused(f"image {image}: {why}")

    def _check_manifest(self, wanted: str, manifest: ImageManifest) -> None:
        names = sorted(item.name for item in manifest.components)
        if names not in (sorted(IMAGE_FILES), sorted(IMAGE_FILES_V2)):
            raise self._refuse(wanted, f"the manifest lists {names}, not {sorted(IMAGE_FILES)}"
                               f" (or, format v2, {sorted(IMAGE_FILES_V2)})")  # fmt: skip
        claimed = image_id(
            manifest.component("vmlinuz").sha256,
            manifest.component("initrd.cpio").sha256,
            manifest.cmdline,
            manifest.component(ROOTFS).sha256 if ROOTFS in names else None,
        )
        if claimed != wanted or manifest.image != wanted:
            raise self._refuse(wanted, f"the backend's manifest describes image {claimed}")
        if manifest.component(MANIFEST).size > MANIFEST_MAX_BYTES:
            raise self._refuse(wanted, f"its manifest is over {MANIFEST_MAX_BYTES} bytes")
        total = sum(item.size for item in manifest.components)
        if total > self.max_bytes:
            raise self._refuse(wanted, f"{total} bytes is over the limit of {self.max_bytes}")

    def _download(self, wanted: str, manifest: ImageManifest, name: str, target: Path) -> None:
        expected = manifest.component(name)
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as sink:
            for chunk in self.api.image_component(wanted, name):
                size += len(chunk)
                if size > expected.size:
                    raise self._refuse(wanted, f"{name} is longer than the {expected.size} bytes"
                                       " the manifest says")  # fmt: skip
                digest.update(chunk)
                sink.write(chunk)
        if size != expected.size or digest.hexdigest() != expected.sha256:
            raise self._refuse(
                wanted,
                f"{name} from the backend has sha256 {digest.hexdigest()} ({size} bytes), not"
                f" {expected.sha256} ({expected.size} bytes)",
            )
