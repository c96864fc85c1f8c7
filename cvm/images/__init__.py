"""Guest images by content address: build (from Debian packages, by `guest.build`), list,
check, and compute the SNP launch measurement a renter should expect of one.

An image is a direct-boot triple (kernel, initrd, command line). Its id is the SHA-256 of
the canonical JSON of the three's hashes and the command line, so anyone holding the files
can recompute it, and a downloaded image is checked against the id it was asked for.

Format v2 (`cvm.image.v2`, an image with a workload) adds `rootfs.img`: a read-only root file
system with its dm-verity hash tree, attached to the guest as a disk. Its root hash is on
the command line (so in the launch measurement) and its SHA-256 in the id; the manifest also
carries the workload's summary (`Image.workload`), so nobody has to read the rootfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

IMAGE_FORMAT = "cvm.image.v1"
IMAGE_FORMAT_V2 = "cvm.image.v2"
KERNEL = "vmlinuz"
INITRD = "initrd.cpio"
ROOTFS = "rootfs.img"
MANIFEST = "manifest.json"
IMAGE_FILES = (KERNEL, INITRD, MANIFEST)  # a v1 image's files
IMAGE_FILES_V2 = (KERNEL, INITRD, ROOTFS, MANIFEST)
ALL_IMAGE_FILES = IMAGE_FILES_V2  # every name an image file may have
# A manifest is a few KiB (the package list, the workload summary): larger is not one.
MANIFEST_MAX_BYTES = 1 << 20
# Where distributions put OVMF built from OvmfPkg/AmdSev (the one with kernel hashes).
AMDSEV_OVMF_PATHS = (
    Path("/usr/share/ovmf/OVMF.amdsev.fd"),
    Path("/usr/share/edk2/ovmf/OVMF.amdsev.fd"),
    Path("/usr/share/OVMF/OVMF.amdsev.fd"),
)
# Debian ships no AmdSev OVMF; without one, measurements use the metadata of the AmdSev
# build of edk2-stable202405 (its last 4 KiB). Good for the simulated AMD-SP only: real
# hardware measures the firmware it actually loads, so real leases need a real file.
REFERENCE_OVMF = Path(__file__).with_name("ovmf_amdsev_reference.bin")


if TYPE_CHECKING:
    from guest.build import WorkloadSource


class ImageError(Exception):
    """An image is missing, corrupt, or cannot be built or measured."""


class ImageMismatch(ImageError):
    """Files that do not hash to the image id they were offered (or fetched) as."""


@dataclass(frozen=True, slots=True)
class Image:
    """A stored image: its id and where its files are."""

    image_id: str  # 64 hex digits
    directory: Path
    cmdline: str
    kernel_sha256: str
    initrd_sha256: str
    rootfs_sha256: str | None = None  # v2 only
    workload: dict[str, Any] | None = None  # v2: the manifest's workload summary

    @property
    def format(self) -> str:
        return IMAGE_FORMAT if self.rootfs_sha256 is None else IMAGE_FORMAT_V2

    @property
    def files(self) -> tuple[str, ...]:
        """The names of this image's files (`IMAGE_FILES` or `IMAGE_FILES_V2`)."""
        return IMAGE_FILES if self.rootfs_sha256 is None else IMAGE_FILES_V2

    @property
    def kernel(self) -> Path:
        return self.directory / KERNEL

    @property
    def initrd(self) -> Path:
        return self.directory / INITRD

    @property
    def rootfs(self) -> Path | None:
        """The verity-checked root file system of a v2 image (None for v1)."""
        return None if self.rootfs_sha256 is None else self.directory / ROOTFS

    def size_bytes(self) -> int:
        return sum((self.directory / name).stat().st_size for name in self.files)

    def component(self, name: str) -> Path:
        """One of the image's files by its name (`files`); ImageError for another."""
        if name not in self.files:
            raise ImageError(f"an image has no component {name!r} (only {', '.join(self.files)})")
        return self.directory / name


def image_id(
    kernel_sha256: str, initrd_sha256: str, cmdline: str, rootfs_sha256: str | None = None
) -> str:
    """The content address: SHA-256 of the canonical JSON of what is booted (with the
    rootfs's hash and format v2 for an image that has one; v1 ids are unchanged)."""
    fields: dict[str, str] = {
        "cmdline": cmdline,
        "format": IMAGE_FORMAT,
        "initrd_sha256": initrd_sha256,
        "kernel_sha256": kernel_sha256,
    }
    if rootfs_sha256 is not None:
        fields |= {"format": IMAGE_FORMAT_V2, "rootfs_sha256": rootfs_sha256}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_HEX64 = frozenset("0123456789abcdef")


def _sha256_field(manifest: dict[str, Any], name: str) -> str:
    value = manifest[name]
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX64:
        raise ValueError(f"{name} is not a SHA-256 in hex")
    return value


def parse_manifest(text: str) -> dict[str, Any]:
    """The fields of a manifest that make an image, checked: kernel_sha256, initrd_sha256,
    cmdline, and for format v2 rootfs_sha256 and workload (a dict or None). ValueError,
    KeyError or TypeError for anything else."""
    if len(text) > MANIFEST_MAX_BYTES:
        raise ValueError(f"a manifest is at most {MANIFEST_MAX_BYTES} bytes")
    manifest = json.loads(text)
    if not isinstance(manifest, dict):
        raise TypeError("a manifest is a JSON object")
    fmt = manifest.get("format", IMAGE_FORMAT)
    if fmt not in (IMAGE_FORMAT, IMAGE_FORMAT_V2):
        raise ValueError(f"unknown image format {fmt!r}")
    cmdline = manifest["cmdline"]
    if not isinstance(cmdline, str):
        raise TypeError("cmdline is not a string")
    _check_verity_words(cmdline)
    fields: dict[str, Any] = {
        "kernel_sha256": _sha256_field(manifest, "kernel_sha256"),
        "initrd_sha256": _sha256_field(manifest, "initrd_sha256"),
        "cmdline": cmdline,
        "rootfs_sha256": None,
        "workload": None,
    }
    if fmt == IMAGE_FORMAT_V2:
        workload = manifest.get("workload")
        if workload is not None and not isinstance(workload, dict):
            raise TypeError("workload is not an object")
        fields |= {"rootfs_sha256": _sha256_field(manifest, "rootfs_sha256"), "workload": workload}
    elif "rootfs_sha256" in manifest:
        raise ValueError("a v1 manifest names a rootfs")
    return fields


_VERITY_WORD = re.compile(r"cvm\.verity=[0-9a-f]{64}|cvm\.verity_size=[1-9][0-9]{0,15}")


def _check_verity_words(cmdline: str) -> None:
    """At most one `cvm.verity=` and one `cvm.verity_size=`, well formed: the guest's init
    takes the last of each, and a line naming two root hashes would show a reader one file
    system and boot another."""
    words = [w for w in cmdline.split() if w.startswith("cvm.verity")]
    names = [w.split("=", 1)[0] for w in words]
    if len(set(names)) != len(names) or not all(_VERITY_WORD.fullmatch(w) for w in words):
        raise ValueError("the cmdline names cvm.verity / cvm.verity_size twice or malformed")


def manifest_fields_id(fields: dict[str, Any]) -> str:
    return image_id(fields["kernel_sha256"], fields["initrd_sha256"], fields["cmdline"],
                    fields["rootfs_sha256"])  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_id(path: Path) -> str:
    """The image id a manifest file describes; ImageError if it is not a manifest."""
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            raise ValueError(f"larger than {MANIFEST_MAX_BYTES} bytes")
        return manifest_fields_id(parse_manifest(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{path.name} is not an image manifest: {exc}") from None


def write_archive(image: Image, destination: BinaryIO) -> None:
    """The image as one uncompressed tar of its files (the upload format of
    `PUT /v1/images/{id}`); the receiver recomputes the id from what it unpacks."""
    with tarfile.open(fileobj=destination, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for name in image.files:
            path = image.directory / name
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)


def extract_archive(source: Path, staging: Path, *, max_bytes: int | None = None) -> None:
    """Unpack an image tar (`write_archive`) into `staging`: exactly the files of a v1 image
    (kernel, initrd, manifest) or of a v2 one (and rootfs.img), as regular files under
    their own names, nothing else (no paths, links or devices). `max_bytes` caps the sum of
    the files' declared sizes (checked before a byte of a file is written)."""
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(source, mode="r:") as archive:
            for member in archive:
                # A sparse member counts as regular to tarfile, yet writes its declared
                # size whatever the archive holds: refused like links and devices.
                if member.name not in ALL_IMAGE_FILES or not member.isreg() or member.issparse():
                    raise ImageError(
                        f"unexpected {member.name!r} in the image archive (only regular files"
                        f" {', '.join(ALL_IMAGE_FILES)})"
                    )
                if member.name in seen:
                    raise ImageError(f"{member.name} appears twice in the image archive")
                seen.add(member.name)
                total += member.size
                if max_bytes is not None and total > max_bytes:
                    raise ImageError(f"the image archive holds more than {max_bytes} bytes")
                if member.name == MANIFEST and member.size > MANIFEST_MAX_BYTES:
                    raise ImageError(f"the manifest is larger than {MANIFEST_MAX_BYTES} bytes")
                reader = archive.extractfile(member)
                assert reader is not None  # a regular file always has a reader
                with (staging / member.name).open("wb") as handle:
                    shutil.copyfileobj(reader, handle, 1 << 20)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"not an image archive (an uncompressed tar): {exc}") from None
    wanted = IMAGE_FILES_V2 if ROOTFS in seen else IMAGE_FILES
    missing = [name for name in wanted if name not in seen]
    if missing:
        raise ImageError(f"the image archive lacks {', '.join(missing)}")


def normalize_id(text: str) -> str:
    value = text.lower().removeprefix("0x").removeprefix("sha256:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ImageError(f"an image id is 64 hex digits, got {text!r}")
    return value


class ImageStore:
    """Images under `root/<id>/`; the Debian packages they are built from under `root/.debs`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, image: str, *, deep: bool = True) -> Image:
        """The stored image `image` (an id), checked against its id; ImageError otherwise.

        `deep=False` skips hashing the kernel and initrd (only the manifest is checked): for
        serving files that were verified when they were placed, never for booting them."""
        wanted = normalize_id(image)
        directory = self.root / wanted
        if not (directory / MANIFEST).is_file():
            raise ImageError(f"no image {wanted} here: `cvm image build` or `cvm image list`")
        return self._load(directory, expected=wanted, deep=deep)

    def has(self, image: str) -> bool:
        """Whether the image is stored and intact (its files hash to its id)."""
        try:
            self.get(image)
        except ImageError:
            return False
        return True

    def list(self) -> list[Image]:
        found = []
        for directory in sorted(self.root.glob("*")):
            if directory.is_dir() and (directory / MANIFEST).is_file():
                try:
                    found.append(self._load(directory, expected=directory.name, deep=False))
                except ImageError:
                    continue
        return found

    def _load(self, directory: Path, *, expected: str, deep: bool = True) -> Image:
        try:
            fields = parse_manifest((directory / MANIFEST).read_text())
            image = Image(image_id=manifest_fields_id(fields), directory=directory, **fields)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImageError(f"image {directory.name} has a bad manifest: {exc}") from exc
        if image.image_id != expected:
            raise ImageError(f"image {directory.name} does not hash to its id")
        if deep:
            self.check_files(image)
        return image

    @staticmethod
    def check_files(image: Image) -> None:
        """The kernel, initrd (and rootfs) hash to what the manifest (and so the id) says."""
        checks = [(image.kernel, image.kernel_sha256), (image.initrd, image.initrd_sha256)]
        if image.rootfs is not None and image.rootfs_sha256 is not None:
            checks.append((image.rootfs, image.rootfs_sha256))
        for path, want in checks:
            if not path.is_file() or sha256_file(path) != want:
                raise ImageError(f"image {image.image_id}: {path.name} is missing or corrupt")

    def add(self, source: Path) -> Image:
        """Store the image in `source` (its files) under its id, checked; returns it."""
        new_id = manifest_id(source / MANIFEST)
        if self.has(new_id):
            return self.get(new_id, deep=False)
        names = IMAGE_FILES_V2 if (source / ROOTFS).exists() else IMAGE_FILES
        with self.staging() as staging:
            for name in names:
                shutil.copyfile(source / name, staging / name)
            return self.import_verified(staging, new_id)

    # What a process killed mid-step leaves behind: uploads and downloads in flight, images
    # being removed or moved aside. None is ever read as an image (the names start with a dot).
    LEFTOVER_PREFIXES = (".upload-", ".incoming-", ".removed-", ".damaged-")

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Delete leftovers older than `older_than_s` seconds (younger ones may be in use by
        another process); how many were removed."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.root.iterdir():
            if not path.name.startswith(self.LEFTOVER_PREFIXES):
                continue
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue  # another process swept it first
            removed += 1
        return removed

    def remove(self, image: str) -> None:
        """Delete a stored image; it is moved aside first, so no reader sees half of it."""
        target = self.root / normalize_id(image)
        if not target.exists():
            return
        aside = Path(tempfile.mkdtemp(dir=self.root, prefix=".removed-"))
        target.rename(aside / "image")
        shutil.rmtree(aside, ignore_errors=True)

    def mark_used(self, image: str) -> None:
        """Note that `image` was just used: its directory's time orders the eviction of a cache
        (`prune`), least recently used first."""
        os.utime(self.root / normalize_id(image))

    def prune(
        self, max_bytes: int, *, keep: Collection[str], grace_s: float = 600.0
    ) -> tuple[str, ...]:
        """Remove least recently used images until the store holds at most `max_bytes`,
        never one in `keep` nor one used within `grace_s` seconds (it may be about to boot);
        the ids removed."""
        images = sorted(self.list(), key=lambda image: image.directory.stat().st_mtime)
        total = sum(image.size_bytes() for image in images)
        recent = time.time() - grace_s
        removed = []
        for image in images:
            if total <= max_bytes:
                break
            if image.image_id in keep or image.directory.stat().st_mtime > recent:
                continue
            total -= image.size_bytes()
            self.remove(image.image_id)
            removed.append(image.image_id)
        return tuple(removed)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory inside the store (same file system, so it can be renamed into
        place); removed afterwards unless `import_verified` moved it in."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".incoming-"))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def import_verified(self, staging: Path, expected: str) -> Image:
        """Move the files in `staging` (a `staging()` directory) into the store as image
        `expected`, once they hash to it: the manifest to the id, the kernel, initrd (and v2
        rootfs) to the manifest. `ImageMismatch` if they do not; nothing is stored then.

        The directory is renamed into place in one step, so a reader never sees half an
        image; an intact image already stored under the id is kept as it is."""
        wanted = normalize_id(expected)
        try:
            found = manifest_id(staging / MANIFEST)
        except ImageError as exc:
            raise ImageMismatch(f"not image {wanted}: {exc}") from None
        if found != wanted:
            raise ImageMismatch(f"the files are image {found}, not {wanted}")
        try:
            self._load(staging, expected=wanted)
        except ImageError as exc:
            raise ImageMismatch(f"not image {wanted}: {exc}") from None
        target = self.root / wanted
        if self.has(wanted):
            return self.get(wanted, deep=False)
        if target.exists():  # a damaged copy: moved aside first, so the rename cannot fail on it
            aside = Path(tempfile.mkdtemp(dir=self.root, prefix=".damaged-"))
            target.rename(aside / "image")
            shutil.rmtree(aside, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not self.has(wanted):  # lost a race to anything but the same image
                raise
        return self.get(wanted, deep=False)

    def build(self, *, force: bool = False, workload: WorkloadSource | None = None) -> Image:
        """Build the cvm guest image from Debian packages (cached .debs), store it, return it.
        With `workload` (a `cvm.images.workload.Workload`) it is a v2 image: the guest root
        with the workload's packages and files as a verity-checked rootfs.

        A build whose inputs (builder, guest files, package versions, the workload's
        content) have not changed since the last one returns the stored image without
        rebuilding, unless `force`."""
        from guest.build import BuildError, recipe_key

        self.root.mkdir(parents=True, exist_ok=True)
        try:
            key = recipe_key(workload)
        except BuildError as exc:
            raise ImageError(str(exc)) from exc
        recipe = self.root / ".recipes" / key
        if not force and recipe.is_file():
            try:
                return self.get(recipe.read_text().strip())
            except ImageError:
                pass  # removed or damaged since: build again
        image = self._build() if workload is None else self._build_workload(workload)
        recipe.parent.mkdir(exist_ok=True)
        recipe.write_text(image.image_id + "\n")
        return image

    def _build(self) -> Image:
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".build-") as work:
            result = subprocess.run(
                [sys.executable, "-m", "guest.build", work, "--cache", str(self.root / ".debs")],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ImageError(f"image build failed: {result.stderr.strip()[-800:]}")
            return self.add(Path(work))

    def _build_workload(self, workload: WorkloadSource) -> Image:
        from guest.build import BuildError
        from guest.build import build as build_image

        with tempfile.TemporaryDirectory(dir=self.root, prefix=".build-") as work:
            try:
                build_image(Path(work) / "image", self.root / ".debs", workload)
            except BuildError as exc:
                raise ImageError(f"image build failed: {exc}") from exc
            return self.add(Path(work) / "image")


def find_ovmf(explicit: Path | None = None) -> tuple[Path, bool]:
    """The AmdSev OVMF to measure with, and whether it is a real firmware build."""
    if explicit is not None:
        if not explicit.is_file():
            raise ImageError(f"OVMF file {explicit} does not exist")
        return explicit, True
    for path in AMDSEV_OVMF_PATHS:
        if path.is_file():
            return path, True
    return REFERENCE_OVMF, False


def measure(
    image: Image, *, vcpus: int = 1, vcpu_type: str = "EPYC-v4", ovmf: Path | None = None
) -> bytes:
    """The 48-byte SNP launch measurement of `image` (kernel-hashes on)."""
    from cvm.attestation.errors import MeasurementError
    from cvm.attestation.measure import expected_measurement

    firmware, _ = find_ovmf(ovmf)
    try:
        return expected_measurement(
            firmware,
            kernel=image.kernel,
            initrd=image.initrd,
            append=image.cmdline,
            vcpus=vcpus,
            vcpu_type=vcpu_type,
        )
    except MeasurementError as exc:
        raise ImageError(str(exc)) from exc
