"""The renter's workload file (`cvm.workload.v1`, TOML): what runs in a measured image.

`load_workload(path)` reads and checks one file (every bad field is one `WorkloadError` naming
the field); the `Workload` it returns resolves into a canonical JSON (`resolved_json()`: every
copied file's sha256 and mode, the OCI rootfs digest, the packages), copies itself into a root
file system (`materialize(root)`, which also writes that JSON as /etc/cvm/workload.json for the
in-guest supervisor) and gives the short `summary()` that goes into an image's manifest.json.
Nothing here depends on the time or on the order a directory lists in: the same file and the
same app give the same bytes, and so the same image id and launch measurement.
See docs/workloads.md for the format.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from cvm.images import ImageError

if TYPE_CHECKING:
    from cvm.images import Image, ImageStore

FORMAT = "cvm.workload.v1"
RESOLVED_PATH = "etc/cvm/workload.json"  # inside the root file system
# Bounds on what one workload file may ask for (a hostile file must not exhaust the builder).
MAX_WORKLOAD_FILE_BYTES = 64 * 1024
MAX_PACKAGES = 128
MAX_FILES = 64  # [[files]] entries
MAX_SERVICES = 16
MAX_PORTS = 16
MAX_SECRETS = 32
MAX_ENV = 64
MAX_ARGS = 64
MAX_STRING = 4096
MAX_PATH = 255
MAX_COPIED_ENTRIES = 20_000  # files, directories and links below all [[files]] sources
MAX_COPIED_BYTES = 2 * 1024**3
FIRST_SERVICE_UID = 1000
# The guest's own mounts and cvm's files: a workload may not put anything there.
FORBIDDEN_DESTS = ("/proc", "/sys", "/dev", "/run", "/etc/cvm", "/usr/lib/cvm", "/init")
SSH_PORT = 22  # the guest's own SSH server

NAME = r"^[a-z0-9-]{1,40}$"
# guest/agent.py's SECRET_NAME (the guest imports nothing of cvm, so the rule is repeated here
# and a unit test keeps both equal). Names starting with `cvm.` are cvm's own (cvm.disk_key).
SECRET_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"  # noqa: S105 (a name rule, no secret)
RESERVED_SECRET_PREFIX = "cvm."  # noqa: S105 (a name prefix, no secret)
# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters.
PACKAGE_NAME = r"^[a-z0-9][a-z0-9+.-]{1,62}$"
USER_NAME = r"^[a-z_][a-z0-9_-]{0,31}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"

Name = Annotated[str, StringConstraints(pattern=NAME)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STRING)]
PathText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH)]


class WorkloadError(ImageError):
    """A workload file that cannot be used; the message names the field and what to do."""


def _no_nul(value: str, what: str) -> str:
    if "\0" in value or "\n" in value:
        raise ValueError(f"{what} must not contain NUL or newline characters")
    return value


def _absolute_path(value: str, what: str) -> str:
    _no_nul(value, what)
    if not value.startswith("/"):
        raise ValueError(f"{what} must be an absolute path (start with /), got {value!r}")
    if ".." in value.split("/") or posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError(f"{what} must be a normalized absolute path without '..', got {value!r}")
    return value


def _relative(value: str, what: str) -> str:
    _no_nul(value, what)
    parts = value.rstrip("/").split("/")
    if value.startswith("/") or ".." in parts or value.rstrip("/") in ("", "."):
        raise ValueError(
            f"{what} must be a path relative to the workload file, inside its folder, without"
            f" '..', got {value!r}"
        )
    return value


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FileEntry(_Strict):
    """One [[files]] entry: `src` (a file or folder beside the workload file) copied to `dest`."""

    src: PathText
    dest: PathText

    @field_validator("src")
    @classmethod
    def _src(cls, value: str) -> str:
        return _relative(value, "src")

    @field_validator("dest")
    @classmethod
    def _dest(cls, value: str) -> str:
        value = _absolute_path(value, "dest")
        if value == "/":
            raise ValueError("dest must name a file or folder, not /")
        for forbidden in FORBIDDEN_DESTS:
            if _under(value, forbidden):
                raise ValueError(f"dest {value!r} is under {forbidden}, which the guest owns")
        return value


class Service(_Strict):
    """One [[services]] entry: a command the in-guest supervisor starts and restarts."""

    name: Name
    command: list[Text] = Field(min_length=1, max_length=MAX_ARGS)
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    user: Annotated[str, StringConstraints(pattern=USER_NAME)] = "root"
    workdir: PathText = "/"

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        for arg in value:
            _no_nul(arg, "command arguments")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        return _absolute_path(value, "workdir")


class Port(_Strict):
    """One [[ports]] entry: the app listens on 127.0.0.1:`port` (plain) inside the guest."""

    name: Name
    port: int = Field(ge=1, le=65535)

    @field_validator("port")
    @classmethod
    def _not_ssh(cls, value: int) -> int:
        if value == SSH_PORT:
            raise ValueError("port 22 is the guest's SSH server")
        return value


class Disk(_Strict):
    """[disk]: the service needs the lease's encrypted volume, mounted at `mount`."""

    mount: PathText

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        value = _absolute_path(value, "mount")
        if value == "/":
            raise ValueError("mount must be a folder, not /")
        for forbidden in (*FORBIDDEN_DESTS, "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"):
            if _under(value, forbidden):
                raise ValueError(f"mount {value!r} is under {forbidden}, which the guest owns")
        return value


class Workload(_Strict):
    """A checked workload file. Use `load_workload(path)`: files resolve against its folder."""

    format: Literal["cvm.workload.v1"]
    name: Name
    packages: list[Annotated[str, StringConstraints(pattern=PACKAGE_NAME)]] = Field(
        default_factory=list, max_length=MAX_PACKAGES
    )
    oci: PathText | None = None
    files: list[FileEntry] = Field(default_factory=list, max_length=MAX_FILES)
    services: list[Service] = Field(default_factory=list, max_length=MAX_SERVICES)
    env: dict[Annotated[str, StringConstraints(pattern=ENV_NAME)], Text] = Field(
        default_factory=dict, max_length=MAX_ENV
    )
    ports: list[Port] = Field(default_factory=list, max_length=MAX_PORTS)
    secrets: list[Annotated[str, StringConstraints(pattern=SECRET_NAME)]] = Field(
        default_factory=list, max_length=MAX_SECRETS
    )
    disk: Disk | None = None

    _base: Path = PrivateAttr(default=Path("."))
    _oci_cache: Any = PrivateAttr(default=None)  # (TemporaryDirectory, OciRootfs) once unpacked

    @field_validator("oci")
    @classmethod
    def _oci(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value, "oci")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            _no_nul(text, f"env.{key}")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: list[str]) -> list[str]:
        for name in value:
            if name.startswith(RESERVED_SECRET_PREFIX):
                raise ValueError(f"secret {name!r}: names starting with 'cvm.' are cvm's own")
        if len(set(value)) != len(value):
            raise ValueError("each secret is named once")
        return value

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each package is named once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        ports = [p.port for p in self.ports]
        if len(set(ports)) != len(ports):
            raise ValueError("ports: each port number is declared once")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError("ports: each port name is declared once")
        services = [s.name for s in self.services]
        if len(set(services)) != len(services):
            raise ValueError("services: each service name is used once")
        if not self.services and self.oci is None:
            raise ValueError("services: name at least one service (or give an oci image)")
        dests = [entry.dest for entry in self.files]
        for i, one in enumerate(dests):
            for other in dests[i + 1 :]:
                if _under(one, other) or _under(other, one):
                    raise ValueError(f"files: dest {one!r} and {other!r} overlap")
        clash = sorted(set(self.env) & set(self.secrets))
        if clash:
            raise ValueError(f"env: {clash[0]} is also a secret (secrets become env vars)")
        return self

    # --- resolution -----------------------------------------------------------------------
    @property
    def base(self) -> Path:
        """The folder [[files]] sources and `oci` are relative to (the workload file's)."""
        return self._base

    def _source(self, relative: str, what: str) -> Path:
        base = self._base.resolve()
        path = base / relative.rstrip("/")
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise WorkloadError(
                f"{what} {relative!r} does not exist beside the workload file"
            ) from None
        if resolved != base and base not in resolved.parents:
            raise WorkloadError(f"{what} {relative!r} leads outside the workload file's folder")
        return path

    def _tree(self, entry: FileEntry) -> list[tuple[str, Path, os.stat_result]]:
        """(guest path, host path, lstat) of everything an entry copies, sorted by guest path."""
        source = self._source(entry.src, "files.src")
        top = source.resolve()
        found: list[tuple[str, Path, os.stat_result]] = []
        pending = [(entry.dest, source)]
        while pending:
            guest, host = pending.pop()
            info = host.lstat() if host != source else host.stat()
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(host)
                resolved = host.resolve()
                if target.startswith("/") or (resolved != top and top not in resolved.parents):
                    raise WorkloadError(
                        f"files.src {entry.src!r}: the link {guest} points"
                        f" outside {entry.src!r} (only relative links inside it are copied)"
                    )
            elif stat.S_ISDIR(info.st_mode):
                for child in sorted(os.listdir(host), reverse=True):
                    try:
                        child.encode()
                    except UnicodeEncodeError:
                        raise WorkloadError(
                            f"files.src {entry.src!r}: a name in {guest} is not UTF-8"
                        ) from None
                    pending.append((f"{guest}/{child}", host / child))
            elif not stat.S_ISREG(info.st_mode):
                raise WorkloadError(
                    f"files.src {entry.src!r}: {host.name} is not a file, folder or link"
                )
            found.append((guest, host, info))
            if len(found) > MAX_COPIED_ENTRIES:
                raise WorkloadError(f"files: more than {MAX_COPIED_ENTRIES} files and folders")
        return sorted(found, key=lambda item: item[0].encode())

    def _resolved_files(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        total = 0
        for entry in self.files:
            for guest, host, info in self._tree(entry):
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
                    if total > MAX_COPIED_BYTES:
                        raise WorkloadError(f"files: more than {MAX_COPIED_BYTES} bytes to copy")
                entries.append(_describe(guest, host, info))
        if len(entries) > MAX_COPIED_ENTRIES:
            raise WorkloadError(f"files: more than {MAX_COPIED_ENTRIES} files and folders")
        return sorted(entries, key=lambda item: item["path"].encode())

    def _oci_rootfs(self) -> Any:
        """The OCI image unpacked once (cvm.images.oci.OciRootfs), or None without `oci`."""
        if self.oci is None:
            return None
        if self._oci_cache is None:
            from cvm.images import oci

            self._oci_cache = oci.unpack_to_temporary(self._source(self.oci, "oci"))
        return self._oci_cache[1]

    def close(self) -> None:
        """Remove the unpacked OCI image, if any (also done when the object is collected)."""
        if self._oci_cache is not None:
            self._oci_cache[0].cleanup()
            self._oci_cache = None

    def effective_services(self) -> list[dict[str, Any]]:
        """[[services]], or the OCI image's entrypoint + cmd as one service named `app`."""
        if self.services:
            return [service.model_dump() for service in self.services]
        rootfs = self._oci_rootfs()
        return [rootfs.config.default_service()]

    def users(self) -> list[dict[str, Any]]:
        """The service users other than root, with the uid/gid `materialize` gives them."""
        names = sorted({s["user"] for s in self.effective_services()} - {"root"})
        return [
            {"name": name, "uid": FIRST_SERVICE_UID + i, "gid": FIRST_SERVICE_UID + i}
            for i, name in enumerate(names)
        ]

    def resolved(self, package_versions: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The resolved workload as a dict (see `resolved_json`)."""
        rootfs = self._oci_rootfs()
        env = dict(rootfs.config.env) if rootfs is not None else {}
        env.update(self.env)
        return {
            "format": FORMAT,
            "name": self.name,
            "packages": {
                "requested": sorted(self.packages),
                "installed": dict(sorted((package_versions or {}).items())),
            },
            "oci": None
            if rootfs is None
            else {"rootfs_sha256": rootfs.digest, "config": rootfs.config.as_json()},
            "files": self._resolved_files(),
            "services": sorted(self.effective_services(), key=lambda s: str(s["name"])),
            "users": self.users(),
            "env": dict(sorted(env.items())),
            "ports": [p.model_dump() for p in sorted(self.ports, key=lambda p: p.port)],
            "secrets": sorted(self.secrets),
            "disk": None if self.disk is None else self.disk.model_dump(),
        }

    def resolved_json(self, package_versions: Mapping[str, str] | None = None) -> bytes:
        """Canonical JSON of the resolved workload (sorted keys, no spaces, no timestamps),
        the bytes written to /etc/cvm/workload.json. `package_versions`: name -> version of
        every Debian package installed for the workload (the builder knows them)."""
        text = json.dumps(self.resolved(package_versions), sort_keys=True, separators=(",", ":"))
        return text.encode() + b"\n"

    def digest(self, package_versions: Mapping[str, str] | None = None) -> str:
        """sha256 (hex) of `resolved_json()`."""
        return hashlib.sha256(self.resolved_json(package_versions)).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What manifest.json carries as "workload": enough for node, CLI and backend."""
        return {
            "name": self.name,
            "ports": [{"name": p.name, "port": p.port} for p in self.ports],
            "secrets": sorted(self.secrets),
            "disk": None if self.disk is None else self.disk.mount,
            "services": sorted(str(s["name"]) for s in self.effective_services()),
        }

    def materialize(self, root: Path, package_versions: Mapping[str, str] | None = None) -> bytes:
        """Put the workload into the root file system `root` (already holding the guest's
        own files and the workload's packages): the OCI image's files where the guest has
        none, the [[files]], the service users, the disk's mount point and
        /etc/cvm/workload.json. Returns the bytes written there (`resolved_json()`)."""
        resolved = self.resolved_json(package_versions)
        rootfs = self._oci_rootfs()
        if rootfs is not None:
            _merge_under(rootfs.path, root)
        expected = {item["path"]: item for item in json.loads(resolved)["files"]}
        for entry in self.files:
            self._copy(entry, root, expected)
        self._add_users(root)
        if self.disk is not None:
            _mkdirs(root, self.disk.mount)
        target = root / RESOLVED_PATH
        _mkdirs(root, "/" + str(Path(RESOLVED_PATH).parent))
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                raise WorkloadError(f"/{RESOLVED_PATH} is a folder in the image")
            target.unlink()  # the image's own (a link could point out of the root)
        _write_new(target, resolved, 0o644)
        return resolved

    def _copy(self, entry: FileEntry, root: Path, expected: dict[str, dict[str, Any]]) -> None:
        """Copy one [[files]] entry, checking each copy against the resolved workload: a
        source changed while the image was built fails the build (the image would otherwise
        hold other bytes than its /etc/cvm/workload.json says)."""
        for guest, host, info in self._tree(entry):
            want = expected.get(guest)
            if want is None:
                raise WorkloadError(f"files: {guest} appeared while the image was built")
            target = _inside(root, guest)
            _mkdirs(root, posixpath.dirname(guest))
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            elif target.is_dir() and not stat.S_ISDIR(info.st_mode):
                raise WorkloadError(f"files: {guest} is a folder in the image, not a file")
            if stat.S_ISLNK(info.st_mode):
                target.symlink_to(os.readlink(host))
            elif stat.S_ISDIR(info.st_mode):
                target.mkdir(exist_ok=True)
                os.chmod(target, 0o755)  # noqa: S103 (a folder of the image: world-readable)
            else:
                shutil.copyfile(host, target, follow_symlinks=False)
                os.chmod(target, int(_file_mode(info.st_mode), 8))
            if _describe(guest, target) != want:
                raise WorkloadError(f"files: {guest} changed while the image was built")

    def _add_users(self, root: Path) -> None:
        users = self.users()
        if not users:
            return
        passwd, group = root / "etc" / "passwd", root / "etc" / "group"
        _mkdirs(root, "/etc")
        for path in (passwd, group):  # appended to: a link could point out of the root
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise WorkloadError(f"/etc/{path.name} is a link or not a file in the image")
        known = {
            line.split(":")[0]: line
            for line in (passwd.read_text().splitlines() if passwd.exists() else [])
        }
        lines, groups = [], []
        for user in users:
            existing = known.get(user["name"])
            if existing is not None:
                if existing.split(":")[2] != str(user["uid"]):
                    raise WorkloadError(
                        f"services.user {user['name']!r} exists in the image with another uid"
                    )
                continue
            lines.append(f"{user['name']}:x:{user['uid']}:{user['gid']}::/nonexistent:/bin/false")
            groups.append(f"{user['name']}:x:{user['gid']}:")
        with passwd.open("a") as handle:
            handle.writelines(line + "\n" for line in lines)
        with group.open("a") as handle:
            handle.writelines(line + "\n" for line in groups)


def _describe(guest: str, path: Path, info: os.stat_result | None = None) -> dict[str, Any]:
    """The resolved-workload entry for `path` at `guest`: type, mode, sha256 or target.
    `info`: the source's stat (its mode is normalized); None for a copy in the image, whose
    mode must already be the normalized one."""
    source = info is not None
    info = path.lstat() if info is None else info
    if stat.S_ISLNK(info.st_mode):
        return {"path": guest, "type": "symlink", "target": os.readlink(path)}
    if stat.S_ISDIR(info.st_mode):
        return {"path": guest, "type": "dir", "mode": "0755"}
    return {
        "path": guest,
        "type": "file",
        "mode": _file_mode(info.st_mode) if source else f"{stat.S_IMODE(info.st_mode):04o}",
        "size": info.st_size,
        "sha256": _sha256(path),
    }


def _file_mode(mode: int) -> str:
    return "0755" if mode & 0o111 else "0644"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(root: Path, guest: str) -> Path:
    return root / guest.lstrip("/")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (which must not exist, not even as a link) holding `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the builder's umask must not leak into the image


def _mkdirs(root: Path, guest: str) -> None:
    """Create the folders of `guest` under `root` (mode 0755); a link on the way is refused,
    so nothing is written outside `root`."""
    current = root
    for part in [p for p in guest.split("/") if p]:
        current = current / part
        if current.is_symlink():
            raise WorkloadError(f"/{current.relative_to(root)} is a link in the image")
        if not current.exists():
            current.mkdir()
            os.chmod(current, 0o755)  # noqa: S103 (a folder of the image: world-readable)
        elif not current.is_dir():
            raise WorkloadError(f"/{current.relative_to(root)} is a file in the image")


def _merge_under(source: Path, root: Path) -> None:
    """Copy the tree `source` into `root` without replacing anything `root` has (the guest's
    own files win: the agent and its python must stay as measured and tested)."""
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        here = Path(dirpath)
        relative = here.relative_to(source)
        target_dir = root / relative
        if target_dir.is_symlink() or not target_dir.is_dir():
            dirnames[:] = []  # the guest has a file or link there: its own wins
            continue
        for name in [*dirnames, *sorted(filenames)]:
            src, dst = here / name, target_dir / name
            if dst.is_symlink() or dst.exists():
                continue
            info = src.lstat()
            if stat.S_ISLNK(info.st_mode):
                dst.symlink_to(os.readlink(src))
            elif stat.S_ISDIR(info.st_mode):
                dst.mkdir()
                os.chmod(dst, stat.S_IMODE(info.st_mode))
            else:
                shutil.copyfile(src, dst)
                os.chmod(dst, stat.S_IMODE(info.st_mode))


def _field(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        elif item.startswith(("function-", "literal[", "constrained-str")) or item in (
            "str",
            "int",
            "[key]",
        ):
            continue
        else:
            parts.append(item)
    return ".".join(parts) or "workload"


_PATTERNS = {
    NAME: "must be 1 to 40 characters of a-z, 0-9 and -",
    SECRET_NAME: "must be 1 to 64 characters of A-Z, a-z, 0-9, _, . and -"
    " (not starting with . or -)",
    PACKAGE_NAME: "must be a Debian package name (2 to 63 characters of a-z, 0-9, +, - and .)",
    USER_NAME: "must be a user name (a-z, 0-9, _ and -, starting with a letter or _, at most 32)",
    ENV_NAME: "must be an environment variable name (A-Z, a-z, 0-9 and _,"
    " not starting with a digit)",
}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "string_pattern_mismatch":
        message = _PATTERNS.get(str((error.get("ctx") or {}).get("pattern")), message)
    elif error["type"] == "extra_forbidden":
        message = "is not a field of a workload file (see docs/workloads.md)"
    elif error["type"] == "missing":
        message = "is required"
    elif error["type"] == "literal_error" and error["loc"] == ("format",):
        message = f'must be "{FORMAT}"'
    if not error["loc"]:
        return message  # a rule across fields: the message starts with the field
    return f"{_field(tuple(error['loc']))}: {message}"


def parse_workload(text: str, base: Path, *, source: str = "workload file") -> Workload:
    """A workload from TOML `text`; [[files]] and `oci` resolve against `base`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{source} is not valid TOML: {exc}") from None
    try:
        workload = Workload.model_validate(data)
    except ValidationError as exc:
        raise WorkloadError(f"{source}: {_first_error(exc)}") from None
    workload._base = base
    if workload.oci is not None:
        workload._source(workload.oci, "oci")
    for entry in workload.files:
        workload._source(entry.src, "files.src")
    return workload


def load_workload(path: Path) -> Workload:
    """Read and check the workload file `path`; `WorkloadError` (naming the field) if bad."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_WORKLOAD_FILE_BYTES + 1)
    except OSError as exc:
        raise WorkloadError(f"cannot read the workload file {path}: {exc.strerror}") from None
    if len(raw) > MAX_WORKLOAD_FILE_BYTES:
        raise WorkloadError(f"{path.name} is larger than {MAX_WORKLOAD_FILE_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise WorkloadError(f"{path.name} is not UTF-8 text") from None
    return parse_workload(text, path.resolve().parent, source=path.name)


def build_image(workload: Workload, store: ImageStore, *, force: bool = False) -> Image:
    """Build the image (format v2) of `workload` and store it under its content address.

    The builder is `guest.build.build(out_dir, cache_dir, workload=workload)` (image format
    v2: it unpacks the guest's packages and the workload's (guest.packages.download_closure)
    into a root file system, calls `workload.materialize(root, versions)`, makes the
    dm-verity rootfs.img, puts the root hash on the measured command line and the workload's
    `summary()` in manifest.json). A build whose inputs are unchanged (the guest's recipe, the
    resolved workload, the candidate versions of the workload's packages) returns the stored
    image unless `force`."""
    import inspect

    from guest.build import BuildError, build, recipe_key
    from guest.packages import PackageError, package_closure, package_versions

    builder: Any = build  # typed loosely until image format v2 gives it `workload=`
    if "workload" not in inspect.signature(builder).parameters:
        raise WorkloadError(
            "this cvm's image builder cannot build workloads yet (image format v2 is missing)"
        )
    store.root.mkdir(parents=True, exist_ok=True)
    try:
        versions = package_versions(package_closure(workload.packages, present=()))
        material = recipe_key().encode() + b"\0" + workload.resolved_json(versions)
        recipe = store.root / ".recipes" / f"workload-{hashlib.sha256(material).hexdigest()}"
        if not force and recipe.is_file():
            try:
                return store.get(recipe.read_text().strip())
            except ImageError:
                pass  # removed or damaged since: build again
        with tempfile.TemporaryDirectory(dir=store.root, prefix=".build-") as work:
            builder(Path(work), store.root / ".debs", workload=workload)
            image = store.add(Path(work))
    except (BuildError, PackageError) as exc:
        raise ImageError(f"image build failed: {exc}") from None
    finally:
        workload.close()
    recipe.parent.mkdir(exist_ok=True)
    recipe.write_text(image.image_id + "\n")
    return image
