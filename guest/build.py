"""Build the cvm guest image from Debian packages: a direct-boot kernel, an initramfs, a
command line. Runs on the host (stdlib only, plus `apt-get` and `dpkg-deb`).

The initramfs holds busybox-static, python3 (with Debian's python3-cryptography,
python3-ecdsa and the keccak part of python3-pycryptodome), pyhpke, dropbear and the guest
agent; the kernel is Debian's cloud kernel with the few modules the
guest's virtio devices need. The archive is written deterministically (sorted, owned by
root, time zero), so the same packages give the same bytes and the same content address.

    python -m guest.build OUT_DIR [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

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
)
# Drivers for the devices the launchers give a guest; `modprobe` pulls in what they need.
MODULES = ("virtio_pci", "virtio_console", "virtio_net", "sev-guest")
CMDLINE = "console=ttyS0 panic=-1 rdinit=/init"
FORMAT = "cvm.image.v1"
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
# Of Debian's pycryptodome (4 MB) the guest uses keccak-256 only: these files, no others.
_CRYPTODOME_KEPT = (
    "__init__.py",
    "Hash/__init__.py",
    "Hash/keccak.py",
    "Hash/_keccak",  # the .so, whatever its ABI suffix
    "Util/__init__.py",
    "Util/py3compat.py",
    "Util/_raw_api.py",
    "Util/_file_system.py",
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


def assemble_root(debs: list[Path], root: Path) -> tuple[Path, str]:
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
    _keep_modules(root, version)
    shutil.rmtree(root / "boot")
    for relative in _PRUNE:
        shutil.rmtree(root / relative, ignore_errors=True)
    _keep_only_keccak(root / "usr" / "lib" / "python3" / "dist-packages")
    _add_cvm_files(root)
    return kernel, version


def _keep_only_keccak(site: Path) -> None:
    """Drop every pycryptodome file keccak-256 does not need, and ecdsa's own tests."""
    package = site / "Cryptodome"
    if not (package / "Hash" / "keccak.py").exists():
        raise BuildError("python3-pycryptodome holds no Cryptodome/Hash/keccak.py")
    for path in sorted(package.rglob("*"), reverse=True):
        relative = path.relative_to(package).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif not relative.startswith(_CRYPTODOME_KEPT) or relative.endswith(".pyi"):
            path.unlink()
    for test in (site / "ecdsa").glob("test_*.py"):
        test.unlink()


def _keep_modules(root: Path, version: str) -> None:
    base = root / "lib" / "modules" / version
    index = {p.name.split(".ko")[0].replace("-", "_"): p for p in base.rglob("*.ko*")}
    keep: set[Path] = set()
    pending = [m.replace("-", "_") for m in MODULES]
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
    (root / "etc" / "cvm" / "modules").write_text("\n".join(MODULES) + "\n")


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
    for name in ("agent.py", "tls_front.py"):
        shutil.copy2(_HERE / name, agent_dir / name)
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


def recipe_key() -> str:
    """What an image build depends on: this builder, the guest's files, pyhpke and the
    candidate version of every package. Same key, same image: the build can be skipped."""
    digest = hashlib.sha256()
    for name in ("build.py", "agent.py", "tls_front.py", "init"):
        digest.update(name.encode() + b"\0" + (_HERE / name).read_bytes())
    pyhpke = importlib.util.find_spec("pyhpke")
    if pyhpke is not None and pyhpke.origin is not None:
        for path in sorted(Path(pyhpke.origin).parent.rglob("*.py")):
            digest.update(path.read_bytes())
    names = [kernel_package(), *PACKAGES]
    policy = _run(["apt-cache", "policy", *names])
    digest.update(
        "\n".join(ln.strip() for ln in policy.splitlines() if "Candidate:" in ln).encode()
    )
    digest.update("\n".join(names).encode())
    return digest.hexdigest()


def build(out_dir: Path, cache_dir: Path) -> dict[str, object]:
    """Build into `out_dir` (vmlinuz, initrd.cpio, manifest.json); .debs cached in `cache_dir`."""
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
