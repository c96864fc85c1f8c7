"""An OCI image (a `docker save` tar, an OCI layout folder or an OCI archive tar) turned into a
root file system folder, with the digest of what was unpacked and the image's run config.

The work is Debian's maintained tools': `skopeo copy` reads the archive (docker-archive:,
oci:, oci-archive: transports) into a fresh local OCI layout, and `umoci raw unpack --rootless`
applies the layers in order (whiteouts `.wh.NAME` and opaque `.wh..wh..opq` included).
skopeo runs with a policy file of our own that accepts the three local transports and
rejects every other one, so no registry is ever contacted (`--insecure-policy` would accept
anything; the host's /etc/containers/policy.json may not exist or may want signatures that
a local archive cannot carry).

What is refused or changed, before anything is unpacked (each layer is read once as a
stream): archives over MAX_ARCHIVE_BYTES, more than MAX_LAYERS layers, more than
MAX_UNPACKED_BYTES or MAX_ENTRIES in all layers together, device nodes and fifos (a guest
gets its own /dev), and zstd layers (no stdlib reader). After unpacking, setuid and setgid
bits are cleared (services run as their declared user; nothing of the image should become
root by running a program) and the tree is checked again (no device nodes, no sockets).
Owners are not kept: `--rootless` unpacks everything as the builder's user and the guest's
files are owned by root. The digest covers paths, types, permission bits, file contents
(sha256) and link targets, walked in byte order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cvm.images import ImageError

MAX_ARCHIVE_BYTES = 4 * 1024**3
MAX_LAYERS = 64
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_ENTRIES = 500_000
MAX_JSON_BYTES = 4 * 1024**2  # index, manifest and config blobs
MAX_CONFIG_STRING = 4096
_TAG = "cvm"
_POLICY = {
    "default": [{"type": "reject"}],
    "transports": {
        name: {"": [{"type": "insecureAcceptAnything"}]}
        for name in ("docker-archive", "oci", "oci-archive")
    },
}
_USER_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class OciError(ImageError):
    """An OCI image that cannot be used as a root file system; the message says why."""


@dataclass(frozen=True)
class ImageConfig:
    """What the image config says about running it (OCI `config` object)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    user: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "env": dict(self.env),
            "workdir": self.workdir,
            "user": self.user,
        }

    def default_service(self) -> dict[str, Any]:
        """The service `entrypoint + cmd` as a workload [[services]] entry named `app`."""
        command = [*self.entrypoint, *self.cmd]
        if not command:
            raise OciError("the OCI image has no entrypoint or cmd: add [[services]]")
        user = self.user.split(":")[0] if self.user else "root"
        if user == "0":
            user = "root"
        if not user or not set(user) <= _USER_NAME_CHARS or user[0].isdigit() or len(user) > 32:
            raise OciError(
                f"the OCI image runs as user {self.user!r}: name a user in [[services]] instead"
            )
        return {
            "name": "app",
            "command": command,
            "restart": "on-failure",
            "user": user,
            "workdir": self.workdir or "/",
        }


@dataclass(frozen=True)
class OciRootfs:
    """An unpacked image: its folder, the digest of the tree and its run config."""

    path: Path
    digest: str  # "sha256:<hex>" of the tree (`tree_digest`)
    config: ImageConfig
    layers: int = 0
    setuid_cleared: tuple[str, ...] = field(default=())


def _transport(source: Path) -> str:
    if source.is_dir():
        if not (source / "oci-layout").is_file() or not (source / "index.json").is_file():
            raise OciError(f"{source.name} is a folder but not an OCI layout (no oci-layout)")
        size = sum(p.lstat().st_size for p in source.rglob("*") if p.is_file())
        if size > MAX_ARCHIVE_BYTES:
            raise OciError(f"{source.name} holds more than {MAX_ARCHIVE_BYTES} bytes")
        return f"oci:{source}"
    size = source.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise OciError(f"{source.name} holds more than {MAX_ARCHIVE_BYTES} bytes")
    try:
        with tarfile.open(source, mode="r:") as archive:
            names = set()
            for member in archive:
                names.add(member.name.removeprefix("./"))
                if len(names) > 100_000:
                    break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OciError(f"{source.name} is not an uncompressed tar ({exc})") from None
    if "oci-layout" in names and "index.json" in names:
        return f"oci-archive:{source}"
    if "manifest.json" in names:
        return f"docker-archive:{source}"
    raise OciError(f"{source.name} is neither `docker save` output nor an OCI archive")


def _run(args: list[str], what: str) -> None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=1800)
    except FileNotFoundError:
        raise OciError(f"{args[0]} is not installed: apt-get install {args[0]}") from None
    except subprocess.TimeoutExpired:
        raise OciError(f"{what} took longer than 30 minutes") from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        raise OciError(f"{what} failed: {detail[-1][-400:] if detail else result.returncode}")


def _read_json(path: Path, what: str) -> Any:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise OciError(f"the image's {what} is larger than {MAX_JSON_BYTES} bytes")
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise OciError(f"the image's {what} is unreadable: {exc}") from None


def _blob(layout: Path, descriptor: Any, what: str) -> Path:
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise OciError(f"the image's {what} has no sha256 digest")
    hex_digest = digest.removeprefix("sha256:")
    if len(hex_digest) != 64 or any(c not in "0123456789abcdef" for c in hex_digest):
        raise OciError(f"the image's {what} digest is malformed")
    return layout / "blobs" / "sha256" / hex_digest


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OciError(f"the image config's {what} is not a list of strings")
    if len(value) > 256 or any(len(v) > MAX_CONFIG_STRING or "\0" in v for v in value):
        raise OciError(f"the image config's {what} is too long")
    return tuple(value)


def read_config(layout: Path) -> tuple[ImageConfig, list[dict[str, Any]]]:
    """The run config and the layer descriptors of the one image in an OCI layout."""
    index = _read_json(layout / "index.json", "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or len(manifests) != 1:
        raise OciError("the OCI layout must hold exactly one image")
    manifest = _read_json(_blob(layout, manifests[0], "manifest"), "manifest")
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise OciError("the image manifest has no layer list")
    blob = _read_json(_blob(layout, manifest.get("config"), "config"), "config")
    config = blob.get("config") if isinstance(blob, dict) else None
    config = config if isinstance(config, dict) else {}
    env = []
    for item in _strings(config.get("Env"), "Env"):
        key, sep, value = item.partition("=")
        if sep and key:
            env.append((key, value))
    workdir = config.get("WorkingDir") or "/"
    user = config.get("User") or ""
    if not isinstance(workdir, str) or not workdir.startswith("/") or len(workdir) > 255:
        raise OciError("the image config's WorkingDir is not an absolute path")
    if not isinstance(user, str) or len(user) > 64:
        raise OciError("the image config's User is malformed")
    return (
        ImageConfig(
            entrypoint=_strings(config.get("Entrypoint"), "Entrypoint"),
            cmd=_strings(config.get("Cmd"), "Cmd"),
            env=tuple(env),
            workdir=workdir,
            user=user,
        ),
        layers,
    )


def _layer_stream(raw: IO[bytes], media_type: str) -> IO[bytes]:
    """The tar stream of a layer blob: gzip is undone, uncompressed passes through."""
    if media_type.endswith("+zstd"):
        raise OciError("zstd-compressed layers are not supported: save the image uncompressed")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def check_layers(layout: Path, layers: list[dict[str, Any]]) -> None:
    """Every bound of the module docstring, from the layer streams, before any unpacking."""
    if len(layers) > MAX_LAYERS:
        raise OciError(f"the image has {len(layers)} layers, more than {MAX_LAYERS}")
    total = entries = 0
    for number, descriptor in enumerate(layers, 1):
        path = _blob(layout, descriptor, f"layer {number}")
        media_type = str(descriptor.get("mediaType", ""))
        try:
            with (
                path.open("rb") as raw,
                _layer_stream(raw, media_type) as stream,
                tarfile.open(fileobj=stream, mode="r|") as archive,
            ):
                for member in archive:
                    entries += 1
                    total += max(member.size, 0)
                    if member.ischr() or member.isblk() or member.isfifo():
                        raise OciError(
                            f"layer {number} holds the device or fifo {member.name!r}:"
                            " a guest gets its own /dev"
                        )
                    if total > MAX_UNPACKED_BYTES:
                        raise OciError(f"the layers unpack to more than {MAX_UNPACKED_BYTES} bytes")
                    if entries > MAX_ENTRIES:
                        raise OciError(f"the layers hold more than {MAX_ENTRIES} entries")
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise OciError(f"layer {number} is not a readable tar: {exc}") from None


def _normalize(tree: Path) -> tuple[str, ...]:
    """Clear setuid/setgid bits and refuse special files; the paths whose bits were cleared."""
    cleared = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise OciError(f"the image holds a special file /{path.relative_to(tree)}")
            if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                cleared.append("/" + path.relative_to(tree).as_posix())
    return tuple(sorted(cleared))


def tree_digest(tree: Path) -> str:
    """sha256 over every entry under `tree` in byte order of its path: type, permission bits,
    then the file's sha256 or the link's target. Owners and times are not part of it."""
    digest = hashlib.sha256()
    entries = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            entries.append(("/" + path.relative_to(tree).as_posix(), path))
    for relative, path in sorted(
        entries, key=lambda item: item[0].encode("utf-8", "surrogateescape")
    ):
        info = path.lstat()
        mode = f"{stat.S_IMODE(info.st_mode):04o}"
        if stat.S_ISLNK(info.st_mode):
            line = ("l", mode, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            line = ("d", mode, "")
        else:
            file_hash = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    file_hash.update(chunk)
            line = ("f", mode, file_hash.hexdigest())
        digest.update("\0".join((relative, *line)).encode("utf-8", "surrogateescape") + b"\n")
    return "sha256:" + digest.hexdigest()


def unpack(source: Path, work: Path) -> OciRootfs:
    """Unpack the OCI image `source` into `work/rootfs` (work must be an empty folder on a
    file system with room for it). `OciError` with a reason if it cannot be used."""
    if not source.exists():
        raise OciError(f"{source} does not exist")
    transport = _transport(source)
    policy = work / "policy.json"
    policy.write_text(json.dumps(_POLICY))
    layout = work / "layout"
    tmp = work / "tmp"
    tmp.mkdir()
    _run(
        ["skopeo", "--policy", str(policy), "--tmpdir", str(tmp), "copy", "--quiet",
         transport, f"oci:{layout}:{_TAG}"],
        f"skopeo copy of {source.name}",
    )  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    config, layers = read_config(layout)
    check_layers(layout, layers)
    rootfs = work / "rootfs"
    _run(
        ["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:{_TAG}", str(rootfs)],
        f"umoci unpack of {source.name}",
    )
    shutil.rmtree(layout, ignore_errors=True)  # the layers are not needed once applied
    cleared = _normalize(rootfs)
    return OciRootfs(
        path=rootfs,
        digest=tree_digest(rootfs),
        config=config,
        layers=len(layers),
        setuid_cleared=cleared,
    )


def unpack_to_temporary(source: Path) -> tuple[tempfile.TemporaryDirectory[str], OciRootfs]:
    """`unpack` into a fresh temporary folder; the caller cleans it up."""
    work = tempfile.TemporaryDirectory(prefix="cvm-oci-")
    try:
        return work, unpack(source, Path(work.name))
    except BaseException:
        work.cleanup()
        raise
