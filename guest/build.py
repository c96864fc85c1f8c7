"""Build the cvm guest image from Debian packages: a direct-boot kernel, an initramfs, a
command line. Runs on the host (stdlib only, plus `apt-get` and `dpkg-deb`).

The initramfs holds busybox-static, python3 (with Debian's python3-cryptography,
python3-ecdsa and the keccak and Shamir parts of python3-pycryptodome), pyhpke, dropbear
and the guest agent; the kernel is Debian's cloud kernel with the few modules the
guest's virtio devices need. The archive is written deterministically (sorted, owned by
root, time zero), so the same packages give the same bytes and the same content address.

With a workload (`build(..., workload=...)`, format cvm.image.v2) the guest's root is a
read-only file system image instead: `rootfs.img` holds a reproducible squashfs of today's
guest root plus the workload's packages and files, with its dm-verity hash tree appended.
The verity root hash and the squashfs size go on the (measured) kernel command line
(`cvm.verity=<hex> cvm.verity_size=<bytes>`); the initramfs shrinks to busybox, veritysetup
and the few modules it needs to open, check and mount the root (`init-verity`), then
switch_root to the rootfs's own /init (`init`, the same script as v1's).

    python -m guest.build OUT_DIR [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

KERNEL_META = "linux-image-cloud-amd64"
PACKAGES = (
    "busybox-static",
    "libc6",
    "libgcc-s1",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3-cffi-backend",
    "python3-cryptography",
    # The attested signer (secp256k1, pure Python) and keccak-256 for Ethereum digests; only
    # the few pycryptodome files keccak needs are kept (_keep_only_keccak).
    "python3-ecdsa",
    "python3-six",
    "python3-pycryptodome",
    "dropbear-bin",
    "libcrypt1",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    # The encrypted volume (guest/volume.py): cryptsetup (LUKS2 with dm-integrity), dmsetup
    # (the integrity target's status), mkfs.ext4, and their shared libraries.
    "cryptsetup-bin",
    "libcryptsetup12",
    "libargon2-1",
    "libblkid1",
    "libuuid1",
    "libdevmapper1.02.1",
    "libselinux1",
    "libpcre2-8-0",
    "libudev1",
    "libjson-c5",
    "libpopt0",
    "dmsetup",
    "e2fsprogs",
    "libext2fs2",
    "libcom-err2",
    "libss2",
)
# Drivers for the devices the launchers give a guest; `modprobe` pulls in what they need.
MODULES: tuple[str, ...] = ("virtio_pci", "virtio_console", "virtio_net", "sev-guest")
# The encrypted volume: its disk, device-mapper, and the crypto of aes-xts-plain64 with
# hmac-sha256 that Debian's cloud kernel has as modules (xts over ecb(aes); aes, hmac,
# sha256 and crc32c are built in). aesni_intel and sha256_ssse3 load only on CPUs with
# AES-NI and AVX2/SHA-NI, as EPYC hosts have: there they make the volume fast. algif_* let
# cryptsetup use the kernel's ciphers for its keyslots.
MODULES += ("virtio_blk", "dm_mod", "dm_crypt", "dm_integrity", "ecb", "xts", "authenc",
            "algif_skcipher", "algif_hash", "aesni_intel", "sha256_ssse3")  # fmt: skip
# What a v2 initramfs needs to open the verity root: the disk, device-mapper, the file system.
ROOT_MODULES = ("virtio_blk", "dm_mod", "dm_verity", "squashfs")
# The initramfs of a v2 image: busybox and veritysetup (cryptsetup-bin) with the libraries it
# links (found by their ELF DT_NEEDED entries, see _copy_with_libraries).
INITRD_PACKAGES = (
    "busybox-static",
    "libc6",
    "cryptsetup-bin",
    "libcryptsetup12",
    "libpopt0",
    "libblkid1",
    "libuuid1",
    "libargon2-1",
    "libdevmapper1.02.1",
    "libjson-c5",
    "libssl3",
    "libselinux1",
    "libpcre2-8-0",
    "libudev1",
)
CMDLINE = "console=ttyS0 panic=-1 rdinit=/init"
FORMAT = "cvm.image.v1"
FORMAT_V2 = "cvm.image.v2"
VERITY_BLOCK = 4096
# The rootfs's file system: squashfs is reproducible by construction (sorted, -reproducible,
# fixed times), compressed, and the Debian cloud kernel has it as a module with zstd.
SQUASHFS_ARGS = ("-reproducible", "-mkfs-time", "0", "-all-time", "0", "-noappend",
                 "-comp", "zstd", "-no-progress", "-quiet")  # fmt: skip
_HERE = Path(__file__).resolve().parent
# What python3 needs none of in a guest: dropped to keep the initramfs small.
_PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/info",
    "usr/lib/python3.11/test",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/distutils",
    "usr/lib/python3.11/unittest",
    "usr/lib/python3.11/config-3.11-x86_64-linux-gnu",
)
# Of Debian's pycryptodome (4 MB) the guest uses keccak-256 and Shamir's secret sharing (the
# threshold key, guest/keyshares.py): these files, no others.
_CRYPTODOME_KEPT = (
    "__init__.py",
    "Hash/__init__.py",
    "Hash/keccak.py",
    "Hash/_keccak",  # the .so, whatever its ABI suffix
    "Util/__init__.py",
    "Util/py3compat.py",
    "Util/_raw_api.py",
    "Util/_file_system.py",
    # Shamir over GF(2^128) (pure Python) and what it imports.
    "Protocol/__init__.py",
    "Protocol/SecretSharing.py",
    "Util/number.py",
    "Random/__init__.py",
)


class BuildError(Exception):
    """The image could not be built; the message says which step failed."""


def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BuildError(f"{args[0]} is not installed (a Debian host is needed)") from exc
    if result.returncode != 0:
        raise BuildError(f"{' '.join(args[:3])} failed: {result.stderr.strip()[-800:]}")
    return result.stdout


def kernel_package() -> str:
    """The versioned kernel package the cloud metapackage points at."""
    for attempt in range(2):
        try:
            out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", KERNEL_META])
        except BuildError:
            out = ""
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends:") and "linux-image-" in line:
                return line.split()[-1]
        if attempt == 0 and os.geteuid() == 0:
            # A fresh machine (CI) may have no package lists yet.
            _run(["apt-get", "update", "-qq"])
    raise BuildError(f"cannot resolve {KERNEL_META}: run `apt-get update` first")


def download(packages: list[str], debs: Path) -> list[Path]:
    """The packages' .deb files, downloaded once into `debs` and reused afterwards."""
    debs.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for name in packages:
        version = _run(["apt-cache", "policy", name])
        candidate = [ln.split()[-1] for ln in version.splitlines() if "Candidate:" in ln]
        if not candidate or candidate[0] == "(none)":
            raise BuildError(f"Debian package {name} is not available: run `apt-get update`")
        wanted[name] = candidate[0]
    missing = [f"{name}={ver}" for name, ver in wanted.items() if not _find_deb(debs, name, ver)]
    if missing:
        _run(["apt-get", "download", *missing], cwd=debs)
    found = []
    for name, ver in wanted.items():
        path = _find_deb(debs, name, ver)
        if path is None:
            raise BuildError(f"apt-get download left no .deb for {name}")
        found.append(path)
    return found


def _find_deb(debs: Path, name: str, version: str) -> Path | None:
    quoted = version.replace(":", "%3a")
    for path in debs.glob(f"{name}_*.deb"):
        if path.name.startswith(f"{name}_{quoted}_") or path.name.startswith(f"{name}_{version}_"):
            return path
    return None


def assemble_root(
    debs: list[Path], root: Path, modules: tuple[str, ...] = MODULES
) -> tuple[Path, str]:
    """Unpack the packages into `root`, keep the modules needed, add cvm's files.

    Returns the kernel image (outside the root) and the kernel version."""
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("the kernel package holds no /boot/vmlinuz")
    version = kernels[0].name.removeprefix("vmlinuz-")
    kernel = root.parent / "vmlinuz"
    shutil.move(kernels[0], kernel)
    _keep_modules(root, version, modules)
    shutil.rmtree(root / "boot")
    for relative in _PRUNE:
        shutil.rmtree(root / relative, ignore_errors=True)
    _keep_only_keccak(root / "usr" / "lib" / "python3" / "dist-packages")
    _add_cvm_files(root)
    return kernel, version


def _keep_only_keccak(site: Path) -> None:
    """Drop every pycryptodome file keccak-256 and Shamir do not need, and ecdsa's tests."""
    package = site / "Cryptodome"
    if not (package / "Hash" / "keccak.py").exists():
        raise BuildError("python3-pycryptodome holds no Cryptodome/Hash/keccak.py")
    if not (package / "Protocol" / "SecretSharing.py").exists():
        raise BuildError("python3-pycryptodome holds no Cryptodome/Protocol/SecretSharing.py")
    for path in sorted(package.rglob("*"), reverse=True):
        relative = path.relative_to(package).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif not relative.startswith(_CRYPTODOME_KEPT) or relative.endswith(".pyi"):
            path.unlink()
    for test in (site / "ecdsa").glob("test_*.py"):
        test.unlink()


def _keep_modules(root: Path, version: str, modules: tuple[str, ...] = MODULES) -> None:
    base = root / "lib" / "modules" / version
    index = {p.name.split(".ko")[0].replace("-", "_"): p for p in base.rglob("*.ko*")}
    keep: set[Path] = set()
    pending = [m.replace("-", "_") for m in modules]
    while pending:
        name = pending.pop()
        path = index.get(name)
        if path is None or path in keep:
            continue  # built into this kernel, or already kept
        keep.add(path)
        pending += _module_depends(path)
    kept = tempfile.mkdtemp(dir=root)
    for path in keep:
        target = Path(kept) / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for extra in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (base / extra).exists():
            shutil.copy2(base / extra, Path(kept) / extra)
    shutil.rmtree(base)
    shutil.move(kept, base)
    busybox = root / "bin" / "busybox"
    _run([str(busybox), "depmod", "-b", str(root), version])
    (root / "etc" / "cvm").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "cvm" / "modules").write_text("\n".join(modules) + "\n")


def _module_depends(path: Path) -> list[str]:
    data = path.read_bytes()
    marker = data.find(b"\0depends=")
    if marker < 0:
        return []
    value = data[marker + 9 : data.index(b"\0", marker + 1)].decode()
    return [name.replace("-", "_") for name in value.split(",") if name]


def _add_cvm_files(root: Path) -> None:
    shutil.copy2(_HERE / "init", root / "init")
    os.chmod(root / "init", 0o755)  # noqa: S103 (the /init of the guest must be executable)
    agent_dir = root / "usr" / "lib" / "cvm"
    agent_dir.mkdir(parents=True, exist_ok=True)
    for module in _guest_modules():  # the agent imports its siblings (workload_runner, ...)
        shutil.copy2(module, agent_dir / module.name)
    pyhpke = importlib.util.find_spec("pyhpke")
    if pyhpke is None or pyhpke.origin is None:
        raise BuildError("pyhpke is not installed in the building Python")
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    shutil.copytree(Path(pyhpke.origin).parent, site / "pyhpke", dirs_exist_ok=True)
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    python = root / "usr" / "bin" / "python3"
    if not python.exists():
        python.symlink_to("python3.11")
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shells").write_text("/bin/sh\n")
    (root / "root").mkdir(mode=0o700, exist_ok=True)
    for name in ("proc", "sys", "dev", "run", "tmp"):
        (root / name).mkdir(exist_ok=True)


def write_cpio(root: Path, out: Path) -> None:
    """A newc archive of `root`: sorted, owned by root, time zero, so builds reproduce."""
    entries = sorted(root.rglob("*"), key=lambda p: str(p.relative_to(root)))
    with out.open("wb") as handle:
        inode = 1
        for path in entries:
            info = path.lstat()
            name = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                body = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                body = path.read_bytes()
            else:
                body = b""
            _cpio_entry(handle, name, stat.S_IMODE(info.st_mode) | stat.S_IFMT(info.st_mode),
                        inode, body)  # fmt: skip
            inode += 1
        _cpio_entry(handle, "TRAILER!!!", 0, 0, b"")


def _cpio_entry(handle: object, name: str, mode: int, inode: int, body: bytes) -> None:
    encoded = name.encode() + b"\0"
    fields = [inode, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
    write = handle.write  # type: ignore[attr-defined]
    write(header + encoded)
    write(b"\0" * (-(len(header) + len(encoded)) % 4))
    write(body)
    write(b"\0" * (-len(body) % 4))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(kernel: Path, initrd: Path, cmdline: str, packages: list[str]) -> dict[str, object]:
    return {
        "format": FORMAT,
        "kernel_sha256": sha256_file(kernel),
        "initrd_sha256": sha256_file(initrd),
        "cmdline": cmdline,
        "packages": sorted(packages),
    }


class WorkloadSource(Protocol):
    """What a v2 build needs of a workload (`cvm.images.workload.Workload` is one)."""

    packages: Sequence[str]

    def materialize(self, root: Path, package_versions: Mapping[str, str] | None = None) -> object:
        """Copy the workload's files (and /etc/cvm/workload.json) into the rootfs `root`;
        `package_versions`: name -> version of the workload's packages installed."""

    def summary(self) -> dict[str, Any]:
        """What node, CLI and backend need to know without reading the rootfs."""


# The guest/*.py files that run on the host only: never copied into a guest.
_HOST_ONLY = ("__init__.py", "build.py", "packages.py")
# The scripts of the guest: /init of v1 and of the v2 rootfs, /init of the v2 initramfs.
_SCRIPTS = ("init", "init-verity")


def _guest_modules() -> list[Path]:
    """Every guest/*.py the guest runs (the agent imports its siblings from /usr/lib/cvm)."""
    return sorted(p for p in _HERE.glob("*.py") if p.name not in _HOST_ONLY)


def recipe_key(workload: WorkloadSource | None = None) -> str:
    """What an image build depends on: this builder, the guest's files, pyhpke, the
    candidate version of every package and (v2) the workload's content. Same key, same
    image: the build can be skipped."""
    digest = hashlib.sha256()
    for path in sorted([_HERE / "build.py", *_guest_modules(), *(_HERE / n for n in _SCRIPTS)]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    pyhpke = importlib.util.find_spec("pyhpke")
    if pyhpke is not None and pyhpke.origin is not None:
        for path in sorted(Path(pyhpke.origin).parent.rglob("*.py")):
            digest.update(path.read_bytes())
    names = [kernel_package(), *PACKAGES]
    if workload is not None:
        extra = _workload_packages(workload, names)
        names += [*INITRD_PACKAGES, *extra]
        digest.update(b"workload\0" + workload_digest(workload).encode())
    policy = _run(["apt-cache", "policy", *names])
    digest.update(
        "\n".join(ln.strip() for ln in policy.splitlines() if "Candidate:" in ln).encode()
    )
    digest.update("\n".join(names).encode())
    return digest.hexdigest()


def workload_digest(workload: WorkloadSource) -> str:
    """SHA-256 of everything the workload puts into a rootfs (materialized into a scratch
    directory: names, modes, link targets, contents) and of its summary: by content, so a
    workload that differs in one byte has another recipe."""
    digest = hashlib.sha256()
    digest.update(json.dumps(workload.summary(), sort_keys=True).encode())
    digest.update("\n".join(sorted(workload.packages)).encode())
    own = getattr(workload, "digest", None)
    if callable(own):
        # cvm.images.workload.Workload: the hash of its resolved JSON, which names every
        # file's sha256 and the OCI rootfs digest (no need to unpack an OCI image here).
        digest.update(str(own()).encode())
        return digest.hexdigest()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        workload.materialize(root)
        for path in sorted(root.rglob("*"), key=lambda p: str(p.relative_to(root))):
            info = path.lstat()
            digest.update(f"{path.relative_to(root)}\0{info.st_mode:o}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def _workload_packages(workload: WorkloadSource, base: list[str]) -> list[str]:
    """The workload's Debian packages with what they depend on, less what the guest has."""
    if not workload.packages:
        return []
    from guest.packages import package_closure

    return sorted(package_closure(list(workload.packages), set(base)))


def build(
    out_dir: Path, cache_dir: Path, workload: WorkloadSource | None = None
) -> dict[str, object]:
    """Build into `out_dir` (vmlinuz, initrd.cpio, manifest.json, and with a workload
    rootfs.img); .debs cached in `cache_dir`."""
    if workload is not None:
        return _build_v2(out_dir, cache_dir, workload)
    names = [kernel_package(), *PACKAGES]
    debs = download(names, cache_dir / "debs")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        root = Path(work) / "root"
        root.mkdir()
        kernel, _ = assemble_root(debs, root)
        write_cpio(root, Path(work) / "initrd.cpio")
        shutil.move(kernel, out_dir / "vmlinuz")
        shutil.move(Path(work) / "initrd.cpio", out_dir / "initrd.cpio")
    result = manifest(
        out_dir / "vmlinuz", out_dir / "initrd.cpio", CMDLINE, [deb.name for deb in debs]
    )
    (out_dir / "manifest.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


# --- format v2: a verity-checked rootfs, a small initramfs -------------------------------
def _build_v2(out_dir: Path, cache_dir: Path, workload: WorkloadSource) -> dict[str, object]:
    kernel_name = kernel_package()
    base = [kernel_name, *PACKAGES]
    extra = _workload_packages(workload, base)  # the initramfs's packages are not in the root
    rootfs_debs = download([*base, *extra], cache_dir / "debs")
    initrd_debs = download(list(INITRD_PACKAGES), cache_dir / "debs")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as work_dir:
        work = Path(work_dir)
        root = work / "root"
        root.mkdir()
        kernel, version = assemble_root(rootfs_debs, root, (*MODULES, *ROOT_MODULES))
        versions = {k: v for k, v in deb_versions(rootfs_debs).items() if k in set(extra)}
        _prepare_rootfs(root, workload, versions)
        squashfs = work / "rootfs.img"
        make_squashfs(root, squashfs)
        root_hash, data_size = verity_format(squashfs)
        initrd_root = work / "initrd"
        initrd_root.mkdir()
        assemble_initrd(initrd_debs, root, initrd_root, version, work / "initrd-debs")
        write_cpio(initrd_root, work / "initrd.cpio")
        for name, source in (("vmlinuz", kernel), ("initrd.cpio", work / "initrd.cpio"),
                             ("rootfs.img", squashfs)):  # fmt: skip
            shutil.move(source, out_dir / name)
    cmdline = verity_cmdline(CMDLINE, root_hash, data_size)
    result = manifest(
        out_dir / "vmlinuz",
        out_dir / "initrd.cpio",
        cmdline,
        [deb.name for deb in sorted({*rootfs_debs, *initrd_debs})],
    )
    result |= {
        "format": FORMAT_V2,
        "rootfs_sha256": sha256_file(out_dir / "rootfs.img"),
        "workload": workload.summary(),
    }
    (out_dir / "manifest.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def deb_versions(debs: list[Path]) -> dict[str, str]:
    """{package: version} of .deb files named as apt-get download names them."""
    found = {}
    for deb in debs:
        parts = deb.name.split("_")
        if len(parts) == 3:
            found[parts[0]] = parts[1].replace("%3a", ":")
    return found


def _prepare_rootfs(root: Path, workload: WorkloadSource, versions: dict[str, str]) -> None:
    """Make `root` bootable read-only: busybox's applets as links (nothing can install them
    at boot), the mount points the initramfs puts tmpfs on, then the workload's files."""
    busybox = root / "bin" / "busybox"
    for line in _run([str(busybox), "--list-full"]).splitlines():
        link = root / line.strip()
        if line.strip() and not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    for name in ("proc", "sys", "dev", "run", "tmp", "var", "home", "etc/dropbear"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "cvm" / "rootfs").write_text("cvm.image.v2 read-only root\n")
    workload.materialize(root, versions)
    _compile_python(root)
    described = root / "etc" / "cvm" / "workload.json"
    if described.is_file():
        disk = (json.loads(described.read_text()).get("disk") or {}).get("mount")
        if isinstance(disk, str) and disk.startswith("/") and ".." not in disk:
            (root / disk.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _compile_python(root: Path) -> None:
    """Byte-compile the guest's Python once, here: a read-only root cannot cache it, and
    compiling the stdlib at every start costs tens of seconds under emulation. Hash-based
    .pyc files (PEP 552, unchecked: the sources cannot change under dm-verity) hold no
    times. Only with the guest's Python version (3.11): another would write unusable files."""
    if sys.version_info[:2] != (3, 11):
        return
    lib = root / "usr" / "lib"
    trees = [t for t in (lib / "python3.11", lib / "python3" / "dist-packages", lib / "cvm")
             if t.is_dir() and not t.is_symlink()]  # fmt: skip
    # Regular files only: a link an OCI image put there (`x.py -> /home/me/settings.py`)
    # would have compileall read a file of the build host into the image.
    files = [str(Path(d) / n) for tree in trees for d, _, names in os.walk(tree)
             for n in names if n.endswith(".py") and not (Path(d) / n).is_symlink()]  # fmt: skip
    if not files:
        return
    listing = Path(tempfile.mkdtemp()) / "files"
    try:
        listing.write_text("\n".join(sorted(files)) + "\n")
        _run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
              "unchecked-hash", "-s", str(root), "-p", "/", "-i", str(listing)])  # fmt: skip
    finally:
        shutil.rmtree(listing.parent, ignore_errors=True)


def make_squashfs(root: Path, out: Path) -> None:
    """A reproducible squashfs of `root` (same tree, same bytes), padded to 4 KiB."""
    _run(["mksquashfs", str(root), str(out), *SQUASHFS_ARGS])
    if out.stat().st_size % VERITY_BLOCK:
        raise BuildError("mksquashfs did not pad the image to 4 KiB")


def verity_format(image: Path) -> tuple[str, int]:
    """Append the dm-verity hash tree of `image` to it; (root hash hex, data size in bytes).

    Salt and UUID derive from the data, so the same data gives the same tree and hash."""
    data_size = image.stat().st_size
    content = sha256_file(image)
    uuid = f"{content[:8]}-{content[8:12]}-4{content[13:16]}-8{content[17:20]}-{content[20:32]}"
    out = _run(["veritysetup", "format", str(image), str(image), f"--hash-offset={data_size}",
                f"--data-blocks={data_size // VERITY_BLOCK}", f"--data-block-size={VERITY_BLOCK}",
                f"--hash-block-size={VERITY_BLOCK}", "--hash=sha256", f"--salt={content}",
                f"--uuid={uuid}"])  # fmt: skip
    found = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Root hash:")]
    if len(found) != 1 or not re.fullmatch(r"[0-9a-f]{64}", found[0]):
        raise BuildError("veritysetup format printed no root hash")
    return found[0], data_size


def verity_cmdline(base: str, root_hash: str, data_size: int) -> str:
    """The kernel command line of a v2 image: `base` plus the verity root hash and size."""
    if not re.fullmatch(r"[0-9a-f]{64}", root_hash):
        raise BuildError("a verity root hash is 64 hex digits")
    if data_size <= 0 or data_size % VERITY_BLOCK:
        raise BuildError("the verity data size is a positive multiple of 4096")
    return f"{base} cvm.verity={root_hash} cvm.verity_size={data_size}"


def parse_verity_cmdline(cmdline: str) -> tuple[str, int] | None:
    """(root hash, data size) from a kernel command line, None if it names no verity root;
    BuildError if it names one malformed (init-verity refuses the same lines)."""
    words = dict(w.split("=", 1) for w in cmdline.split() if w.startswith("cvm.verity"))
    if not words:
        return None
    root_hash, size = words.get("cvm.verity", ""), words.get("cvm.verity_size", "")
    if not re.fullmatch(r"[0-9a-f]{64}", root_hash) or not re.fullmatch(r"[1-9][0-9]{0,15}", size):
        raise BuildError("cvm.verity must be 64 hex digits and cvm.verity_size a byte count")
    if int(size) % VERITY_BLOCK:
        raise BuildError("cvm.verity_size must be a multiple of 4096")
    return root_hash, int(size)


def assemble_initrd(
    debs: list[Path], root: Path, initrd: Path, version: str, unpacked: Path
) -> None:
    """The v2 initramfs in `initrd`: busybox, veritysetup with its libraries, the modules of
    `root` (already reduced to what the guest loads), /init = init-verity."""
    unpacked.mkdir()
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
    for name in ("bin", "sbin", "etc/cvm", "proc", "sys", "dev", "run", "newroot", "lib"):
        (initrd / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(unpacked / "bin" / "busybox", initrd / "bin" / "busybox")
    _copy_with_libraries(unpacked, unpacked / "sbin" / "veritysetup", initrd)
    shutil.copytree(root / "lib" / "modules", initrd / "lib" / "modules", symlinks=True)
    shutil.copy2(root / "etc" / "cvm" / "modules", initrd / "etc" / "cvm" / "modules")
    shutil.copy2(_HERE / "init-verity", initrd / "init")
    os.chmod(initrd / "init", 0o755)  # noqa: S103 (the /init of the guest must be executable)
    del version  # the modules directory is copied whole


_LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib")


def _copy_with_libraries(unpacked: Path, binary: Path, initrd: Path) -> None:
    """`binary` into initrd's /sbin, and every library it needs (transitively, by DT_NEEDED)
    plus the dynamic loader into /lib/x86_64-linux-gnu (with /lib64 for the loader)."""
    shutil.copy2(binary, initrd / "sbin" / binary.name)
    target = initrd / "lib" / "x86_64-linux-gnu"
    target.mkdir(parents=True, exist_ok=True)
    pending = [*elf_needed(binary.read_bytes()), "ld-linux-x86-64.so.2"]
    done: set[str] = set()
    while pending:
        name = pending.pop()
        if name in done:
            continue
        done.add(name)
        found = next((unpacked / d / name for d in _LIBRARY_DIRS if (unpacked / d / name).exists()),
                     None)  # fmt: skip
        if found is None:
            raise BuildError(f"{binary.name} needs {name}, which no initramfs package holds")
        real = found.resolve()
        if not real.is_relative_to(unpacked.resolve()):
            real = (unpacked / os.readlink(found).lstrip("/")).resolve()
        shutil.copyfile(real, target / name)
        os.chmod(target / name, 0o755)  # noqa: S103 (shared libraries are mapped executable)
        pending += elf_needed((target / name).read_bytes())
    lib64 = initrd / "lib64"
    lib64.mkdir(exist_ok=True)
    (lib64 / "ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")


def elf_needed(data: bytes) -> list[str]:
    """The DT_NEEDED names of a 64-bit little-endian ELF file (the libraries it links)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError("not a 64-bit little-endian ELF file")
    phoff, phentsize, phnum = (struct.unpack_from("<Q", data, 0x20)[0],
                               *struct.unpack_from("<HH", data, 0x36))  # fmt: skip
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic = None
    for i in range(phnum):
        kind, _, offset, vaddr, _, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if kind == 1:
            loads.append((vaddr, offset, filesz))
        elif kind == 2:
            dynamic = (offset, filesz)
    if dynamic is None:
        return []  # static
    entries = []
    strtab = 0
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == 0:
            break
        if tag == 5:  # DT_STRTAB (a virtual address)
            strtab = value
        elif tag == 1:  # DT_NEEDED (an offset into the string table)
            entries.append(value)
    table = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), None)
    if table is None:
        raise BuildError("an ELF file's string table is outside its segments")
    return [data[table + e : data.index(b"\0", table + e)].decode() for e in entries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cvm-debs")
    args = parser.parse_args(argv)
    try:
        result = build(args.out_dir, args.cache)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
