"""Image format v2 (`cvm.image.v2`) off the VM: the verity command line, the reproducible
squashfs + dm-verity rootfs (real mksquashfs and veritysetup), the content address covering
the rootfs, the manifest's workload, archives of four files with their size caps (the
client's `extract_archive`, the backend's streaming reader) and the QEMU arguments."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from backend.domain.errors import TooLarge
from backend.domain.image_archive import ArchiveRefused, ImageArchiveReader
from cvm.images import (
    IMAGE_FILES_V2,
    MANIFEST_MAX_BYTES,
    ImageError,
    ImageStore,
    extract_archive,
    image_id,
    parse_manifest,
    write_archive,
)
from guest.build import (
    BuildError,
    elf_needed,
    make_squashfs,
    parse_verity_cmdline,
    verity_cmdline,
    verity_format,
    workload_digest,
)
from node_agent.launcher.qemu_args import SNP_VIRTIO, image_args
from tests.fixtures.images import synthetic_image, synthetic_image_v2, tar_header
from tests.fixtures.workloads import hello_workload

ROOT_HASH = "0123456789abcdef" * 4


# --- the verity command line --------------------------------------------------------------
def test_the_verity_command_line_round_trips():
    line = verity_cmdline("console=ttyS0 rdinit=/init", ROOT_HASH, 8192)
    assert line == f"console=ttyS0 rdinit=/init cvm.verity={ROOT_HASH} cvm.verity_size=8192"
    assert parse_verity_cmdline(line) == (ROOT_HASH, 8192)
    assert parse_verity_cmdline("console=ttyS0 rdinit=/init") is None


@pytest.mark.parametrize(
    "words",
    [
        f"cvm.verity={ROOT_HASH[:-1]} cvm.verity_size=4096",  # 63 digits
        f"cvm.verity={ROOT_HASH.upper()} cvm.verity_size=4096",
        "cvm.verity_size=4096",  # no hash
        f"cvm.verity={ROOT_HASH}",  # no size
        f"cvm.verity={ROOT_HASH} cvm.verity_size=4095",  # not whole blocks
        f"cvm.verity={ROOT_HASH} cvm.verity_size=0",
        f"cvm.verity={ROOT_HASH} cvm.verity_size=-4096",
    ],
)
def test_a_malformed_verity_command_line_is_refused(words):
    with pytest.raises(BuildError):
        parse_verity_cmdline(f"console=ttyS0 {words}")


def test_the_builder_refuses_to_write_a_malformed_verity_line():
    with pytest.raises(BuildError):
        verity_cmdline("console=ttyS0", "xyz", 4096)
    with pytest.raises(BuildError):
        verity_cmdline("console=ttyS0", ROOT_HASH, 1000)


# --- the rootfs: reproducible squashfs, verity tree appended ---------------------------------
def _rootfs(tmp_path: Path, name: str, app: bytes) -> tuple[Path, str, int]:
    if shutil.which("mksquashfs") is None or shutil.which("veritysetup") is None:
        pytest.fail("squashfs-tools and cryptsetup-bin are needed: `make system-packages`")
    root = tmp_path / f"root-{name}"
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "server.py").write_bytes(app)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("cvm\n")
    image = tmp_path / f"{name}.img"
    make_squashfs(root, image)
    root_hash, size = verity_format(image)
    return image, root_hash, size


def test_the_rootfs_is_reproducible_and_one_byte_changes_its_root_hash(tmp_path):
    first, hash_a, size_a = _rootfs(tmp_path, "a", b"print('hello')\n")
    again, hash_b, size_b = _rootfs(tmp_path, "b", b"print('hello')\n")
    _, hash_c, _ = _rootfs(tmp_path, "c", b"print('hellO')\n")
    assert first.read_bytes() == again.read_bytes() and hash_a == hash_b and size_a == size_b
    assert hash_c != hash_a
    assert size_a % 4096 == 0 and first.stat().st_size > size_a  # the hash tree follows
    assert parse_verity_cmdline(verity_cmdline("x", hash_a, size_a)) == (hash_a, size_a)


def test_veritysetup_checks_the_rootfs_against_the_root_hash(tmp_path):
    import subprocess

    image, root_hash, size = _rootfs(tmp_path, "v", b"data\n")

    def verify(path: Path) -> int:
        return subprocess.run(
            ["veritysetup", "verify", str(path), str(path), root_hash, f"--hash-offset={size}"],
            capture_output=True,
            check=False,
        ).returncode

    assert verify(image) == 0
    tampered = tmp_path / "tampered.img"
    data = bytearray(image.read_bytes())
    data[100] ^= 0x01  # the squashfs superblock
    tampered.write_bytes(bytes(data))
    assert verify(tampered) != 0


def test_the_dynamic_libraries_of_a_binary_are_read_from_its_elf_header():
    needed = elf_needed(Path("/bin/ls").read_bytes())
    assert "libc.so.6" in needed
    with pytest.raises(BuildError):
        elf_needed(b"#!/bin/sh\n" + bytes(64))


def test_a_workload_that_differs_in_one_byte_has_another_digest():
    assert workload_digest(hello_workload()) == workload_digest(hello_workload())
    assert workload_digest(hello_workload()) != workload_digest(hello_workload("#"))


# --- the content address and the manifest ------------------------------------------------------
def test_the_id_of_a_v2_image_covers_its_rootfs_and_v1_ids_are_unchanged():
    kernel, initrd = "11" * 32, "22" * 32
    v1 = image_id(kernel, initrd, "console=ttyS0")
    canonical = json.dumps(
        {"cmdline": "console=ttyS0", "format": "cvm.image.v1", "initrd_sha256": initrd,
         "kernel_sha256": kernel}, sort_keys=True, separators=(",", ":"))  # fmt: skip
    assert v1 == hashlib.sha256(canonical.encode()).hexdigest()
    v2 = image_id(kernel, initrd, "console=ttyS0", "33" * 32)
    assert v2 != v1 and v2 != image_id(kernel, initrd, "console=ttyS0", "34" * 32)


def test_a_v2_image_exposes_its_workload_and_its_rootfs_is_checked(tmp_path):
    store = ImageStore(tmp_path / "store")
    image = synthetic_image_v2(store, tmp_path, "kv", workload={"name": "kv", "ports": [8080]})
    assert image.format == "cvm.image.v2" and image.files == IMAGE_FILES_V2
    assert image.workload == {"name": "kv", "ports": [8080]}
    assert image.rootfs is not None and image.rootfs.name == "rootfs.img"
    assert store.get(image.image_id).image_id == image.image_id
    # A rootfs changed on disk is caught like a changed kernel: the image is not served.
    with image.rootfs.open("r+b") as handle:
        handle.seek(10)
        byte = handle.read(1)
        handle.seek(10)
        handle.write(bytes([byte[0] ^ 0x01]))  # a changed byte (the rootfs is random)
    assert not store.has(image.image_id)
    v1 = synthetic_image(store, tmp_path, "plain")
    assert v1.workload is None and v1.rootfs is None and v1.format == "cvm.image.v1"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"format": "cvm.image.v1"}, "v1 manifest names a rootfs"),
        ({"rootfs_sha256": "zz" * 32}, "rootfs_sha256"),
        ({"workload": ["not", "a", "dict"]}, "workload"),
        ({"format": "cvm.image.v9"}, "unknown image format"),
        # attack: two root hashes, a reader sees the first, the guest's init boots the last
        (
            {"cmdline": f"x cvm.verity={'a' * 64} cvm.verity_size=4096 cvm.verity={'b' * 64}"},
            "twice or malformed",
        ),
        ({"cmdline": "x cvm.verity_size=4096 cvm.verity_size=8192"}, "twice or malformed"),
        ({"cmdline": "x cvm.verity=ABC cvm.verity_size=4096"}, "twice or malformed"),
        ({"cmdline": "x cvm.verity"}, "twice or malformed"),
    ],
)
def test_a_bad_v2_manifest_is_refused(change, why):
    manifest = {"format": "cvm.image.v2", "kernel_sha256": "11" * 32, "initrd_sha256": "22" * 32,
                "rootfs_sha256": "33" * 32, "cmdline": "x", "workload": None}  # fmt: skip
    assert parse_manifest(json.dumps(manifest))["rootfs_sha256"] == "33" * 32
    with pytest.raises((ValueError, TypeError), match=why):
        parse_manifest(json.dumps(manifest | change))


# --- archives ------------------------------------------------------------------------------
def test_a_v2_archive_round_trips_and_its_size_is_capped(tmp_path):
    image = synthetic_image_v2(ImageStore(tmp_path / "a"), tmp_path, "rt")
    archive = tmp_path / "image.tar"
    with archive.open("wb") as handle:
        write_archive(image, handle)
    other = ImageStore(tmp_path / "b")
    with other.staging() as staging:
        extract_archive(archive, staging, max_bytes=image.size_bytes())
        stored = other.import_verified(staging, image.image_id)
    assert stored.image_id == image.image_id and stored.workload == image.workload
    assert stored.rootfs is not None and stored.rootfs.read_bytes() == image.rootfs.read_bytes()
    with other.staging() as staging, pytest.raises(ImageError, match="more than"):
        extract_archive(archive, staging, max_bytes=image.size_bytes() - 1)


def test_an_archive_of_a_v2_manifest_without_its_rootfs_is_not_that_image(tmp_path):
    image = synthetic_image_v2(ImageStore(tmp_path / "a"), tmp_path, "half")
    other = ImageStore(tmp_path / "b")
    with other.staging() as staging:
        for name in ("vmlinuz", "initrd.cpio", "manifest.json"):
            shutil.copyfile(image.directory / name, staging / name)
        with pytest.raises(ImageError, match="missing or corrupt"):
            other.import_verified(staging, image.image_id)


def _stream(archive: bytes, staging: Path, limit: int) -> ImageArchiveReader:
    declared: list[int] = []

    def reserve(size: int) -> None:
        if sum(declared) + size > limit:
            raise TooLarge("over the limit")
        declared.append(size)

    reader = ImageArchiveReader(staging, reserve)
    for offset in range(0, len(archive), 7000):
        reader.feed(archive[offset : offset + 7000])
    reader.finish()
    return reader


def test_the_backend_reader_takes_a_v2_upload_within_its_caps(tmp_path):
    image = synthetic_image_v2(ImageStore(tmp_path / "a"), tmp_path, "up")
    buffer = io.BytesIO()
    write_archive(image, buffer)
    staging = tmp_path / "staging"
    staging.mkdir()
    reader = _stream(buffer.getvalue(), staging, image.size_bytes())
    assert sorted(reader.seen) == sorted(IMAGE_FILES_V2)
    assert (staging / "rootfs.img").read_bytes() == image.rootfs.read_bytes()  # type: ignore[union-attr]
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(TooLarge):
        _stream(buffer.getvalue(), again, image.size_bytes() - 1)


def test_the_backend_reader_refuses_an_oversized_manifest_from_its_header(tmp_path):
    size = MANIFEST_MAX_BYTES + 1
    archive = tar_header("manifest.json", size)  # the body is never sent: refused first
    with pytest.raises(TooLarge, match="manifest"):
        ImageArchiveReader(tmp_path, lambda n: None).feed(archive)


def test_the_backend_reader_refuses_other_names_and_a_v2_without_its_manifest(tmp_path):
    with pytest.raises(ArchiveRefused, match="unexpected"):
        ImageArchiveReader(tmp_path, lambda n: None).feed(tar_header("rootfs.squashfs", 1))
    body = b"x" * 10
    archive = b""
    for name in ("vmlinuz", "initrd.cpio", "rootfs.img"):
        archive += tar_header(name, len(body)) + body + b"\0" * (512 - len(body))
    archive += b"\0" * 1024
    staging = tmp_path / "s"
    staging.mkdir()
    reader = ImageArchiveReader(staging, lambda n: None)
    reader.feed(archive)
    with pytest.raises(ArchiveRefused, match=r"lacks manifest\.json"):
        reader.finish()


# --- the launcher ---------------------------------------------------------------------------
def test_qemu_attaches_the_rootfs_read_only_with_its_serial(tmp_path):
    store = ImageStore(tmp_path / "store")
    v2 = synthetic_image_v2(store, tmp_path, "q")
    args = image_args(v2, 2222, tmp_path / "agent.sock")
    drive = args[args.index("-drive") + 1]
    assert drive == f"file={v2.rootfs},if=none,id=root,format=raw,readonly=on"
    assert "virtio-blk-pci,drive=root,serial=cvm-root" in args
    snp = image_args(v2, 2222, tmp_path / "agent.sock", SNP_VIRTIO)
    assert f"virtio-blk-pci,drive=root,serial=cvm-root{SNP_VIRTIO}" in snp
    v1 = synthetic_image(store, tmp_path, "q1")
    assert "-drive" not in image_args(v1, 2222, tmp_path / "agent.sock")


def test_every_guest_module_but_the_host_side_ones_goes_into_the_guest():
    from guest.build import _guest_modules, deb_versions

    names = {path.name for path in _guest_modules()}
    assert {"agent.py", "workload_runner.py", "tls_front.py"} <= names
    assert not names & {"build.py", "packages.py", "__init__.py"}
    debs = [Path("zlib1g_1%3a1.2.13.dfsg-1_amd64.deb"), Path("libc6_2.36-9_amd64.deb")]
    assert deb_versions(debs) == {"zlib1g": "1:1.2.13.dfsg-1", "libc6": "2.36-9"}


def test_attack_a_python_link_in_the_image_cannot_pull_a_build_host_file_in(tmp_path):
    """An OCI image puts `usr/lib/python3.11/evil.py -> /home/me/settings.py` into the root;
    byte-compiling the root must not read that file of the build host into the image."""
    from guest import build

    host_file = tmp_path / "settings.py"
    host_file.write_text("API_KEY = 'hunter2-of-the-build-host'\n")
    lib = tmp_path / "root" / "usr" / "lib" / "python3.11"
    lib.mkdir(parents=True)
    (lib / "ok.py").write_text("VALUE = 1\n")
    (lib / "evil.py").symlink_to(host_file)
    (lib / "linked").symlink_to(tmp_path)  # a linked folder is not walked either
    build._compile_python(tmp_path / "root")
    cached = sorted(p.name for p in (lib / "__pycache__").iterdir())
    assert cached == ["ok.cpython-311.pyc"]  # the guest's Python, as the builder's
    for folder, _, names in os.walk(tmp_path / "root"):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                assert b"hunter2" not in path.read_bytes()
    assert not (tmp_path / "__pycache__").exists()
