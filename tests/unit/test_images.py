"""Guest images by content address (cvm.images) and `cvm image list|measure`, on small
stand-in files: the id, the integrity check, and a measurement that follows what is booted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cvm.cli import app
from cvm.images import ImageError, ImageStore, image_id, measure, sha256_file

runner = CliRunner()


def make_source(
    directory: Path, cmdline: str = "console=ttyS0", kernel: bytes = b"K" * 4096
) -> Path:
    directory.mkdir(parents=True)
    (directory / "vmlinuz").write_bytes(kernel)
    (directory / "initrd.cpio").write_bytes(b"I" * 8192)
    manifest = {
        "format": "cvm.image.v1",
        "kernel_sha256": sha256_file(directory / "vmlinuz"),
        "initrd_sha256": sha256_file(directory / "initrd.cpio"),
        "cmdline": cmdline,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_an_image_is_stored_under_the_hash_of_what_boots(tmp_path):
    store = ImageStore(tmp_path / "images")
    image = store.add(make_source(tmp_path / "src"))
    assert image.image_id == image_id(image.kernel_sha256, image.initrd_sha256, "console=ttyS0")
    assert (
        store.get("0x" + image.image_id.upper()).directory == tmp_path / "images" / image.image_id
    )
    assert [i.image_id for i in store.list()] == [image.image_id]


def test_a_corrupt_file_is_caught_on_use(tmp_path):
    store = ImageStore(tmp_path / "images")
    image = store.add(make_source(tmp_path / "src"))
    image.initrd.write_bytes(b"tampered")
    with pytest.raises(ImageError, match="corrupt"):
        store.get(image.image_id)


def test_a_manifest_that_does_not_hash_to_its_directory_is_refused(tmp_path):
    store = ImageStore(tmp_path / "images")
    image = store.add(make_source(tmp_path / "src"))
    manifest = json.loads((image.directory / "manifest.json").read_text())
    manifest["cmdline"] = "console=ttyS0 init=/bin/sh"
    (image.directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ImageError, match="does not hash to its id"):
        store.get(image.image_id)


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "00" * 33])
def test_bad_ids_are_refused(tmp_path, bad):
    with pytest.raises(ImageError, match="64 hex digits"):
        ImageStore(tmp_path).get(bad)


def test_measurement_follows_kernel_command_line_and_vcpus(tmp_path):
    store = ImageStore(tmp_path / "images")
    one = store.add(make_source(tmp_path / "a"))
    other_cmdline = store.add(make_source(tmp_path / "b", cmdline="console=ttyS0 quiet"))
    other_kernel = store.add(make_source(tmp_path / "c", kernel=b"L" * 4096))
    base = measure(one)
    assert len(base) == 48
    assert measure(one) == base
    assert len({base, measure(other_cmdline), measure(other_kernel), measure(one, vcpus=2)}) == 4


def test_cli_lists_and_measures(tmp_path, monkeypatch):
    monkeypatch.setenv("CVM_IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.setattr("cvm.images.AMDSEV_OVMF_PATHS", ())  # a host without AmdSev OVMF
    image = ImageStore(tmp_path / "images").add(make_source(tmp_path / "src"))
    listed = runner.invoke(app, ["image", "list", "--json"])
    assert listed.exit_code == 0
    assert [v["image"] for v in json.loads(listed.stdout)] == [image.image_id]
    measured = runner.invoke(app, ["image", "measure", image.image_id, "--vcpus", "2", "--json"])
    assert measured.exit_code == 0
    view = json.loads(measured.stdout)
    assert view["measurement"] == "0x" + measure(image, vcpus=2).hex()
    assert view["simulated_only"] is True
    missing = runner.invoke(app, ["image", "measure", "ab" * 32])
    assert missing.exit_code == 1 and "no image" in missing.output
    bad = runner.invoke(app, ["image", "measure", image.image_id, "--vcpus", "0"])
    assert bad.exit_code == 2
