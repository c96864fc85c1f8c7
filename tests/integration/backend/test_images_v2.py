"""Format v2 images (with rootfs.img) through the real backend: published as a tar of four
files, served with the rootfs in the manifest and the workload summary, fetched by a node and
checked against the id (which covers the rootfs); a rootfs served with other bytes is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.api_client import ApiClient
from cvm.images import IMAGE_FILES_V2, ImageStore
from node_agent.errors import ImageRefused
from node_agent.image_fetch import ImageFetcher
from tests.fixtures.chain import ChainSystem
from tests.fixtures.images import synthetic_image_v2
from tests.integration.backend.conftest import IMAGE_LIMIT_BYTES, LiveBackend
from tests.integration.backend.test_images import _archive, _leftovers, _signed_in

pytestmark = pytest.mark.integration


def test_a_v2_image_is_published_served_and_fetched_with_its_rootfs(
    live_backend: LiveBackend, chain: ChainSystem, tmp_path: Path
) -> None:
    workload = {"name": "kv", "ports": [{"name": "http", "port": 8080}], "secrets": ["TOKEN"]}
    image = synthetic_image_v2(ImageStore(tmp_path / "renter"), tmp_path, "kv", workload=workload)
    with _signed_in(live_backend, chain) as api:
        published = api.upload_image(image.image_id, _archive(image, tmp_path))
    assert published.format == "cvm.image.v2" and published.workload == workload
    assert sorted(c.name for c in published.components) == sorted(IMAGE_FILES_V2)
    assert published.component("rootfs.img").sha256 == image.rootfs_sha256

    node_store = ImageStore(tmp_path / "node-images")
    with ApiClient(live_backend.url) as anonymous:
        fetched = ImageFetcher(anonymous, node_store, max_bytes=IMAGE_LIMIT_BYTES).ensure(
            image.image_id
        )
        assert fetched.rootfs is not None and image.rootfs is not None
        assert fetched.rootfs.read_bytes() == image.rootfs.read_bytes()
        assert fetched.workload == workload and _leftovers(node_store) == []

        # The same image over the node's cap: refused from the manifest, nothing fetched.
        small = ImageStore(tmp_path / "small-node")
        with pytest.raises(ImageRefused, match="over the limit"):
            ImageFetcher(anonymous, small, max_bytes=image.size_bytes() - 1).ensure(image.image_id)
        assert small.list() == []

    # The backend (or anything between it and the node) now serves other rootfs bytes.
    served = live_backend.settings.image_dir / image.image_id / "rootfs.img"
    data = bytearray(served.read_bytes())
    data[100] ^= 0xFF
    served.write_bytes(bytes(data))
    tampered = ImageStore(tmp_path / "tampered-node")
    with ApiClient(live_backend.url) as anonymous:
        fetcher = ImageFetcher(anonymous, tampered, max_bytes=IMAGE_LIMIT_BYTES)
        with pytest.raises(ImageRefused, match=r"rootfs\.img from the backend has sha256"):
            fetcher.ensure(image.image_id)
    assert tampered.list() == [] and _leftovers(tampered) == []
