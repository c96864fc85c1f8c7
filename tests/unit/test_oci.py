"""OCI images as a workload's root file system (Debian's skopeo + umoci, run for real): layers
applied in order with file and opaque whiteouts, the same tree from `docker save` output, an
OCI layout folder and an OCI archive, a digest that changes with one byte, and clear errors
for what cannot be used."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cvm.images import oci
from cvm.images.oci import OciError, unpack
from cvm.images.workload import load_workload

Entry = tuple[str, Any, Any]  # (name, "dir" | "link" | "fifo" | "chr" | mode int, body)


def _tar(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, body in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, body
                archive.addfile(info)
            elif kind in ("fifo", "chr"):
                info.type = tarfile.FIFOTYPE if kind == "fifo" else tarfile.CHRTYPE
                archive.addfile(info)
            else:
                info.size, info.mode = len(body), kind
                archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


LOWER: list[Entry] = [
    ("app", "dir", None),
    ("app/server.py", 0o755, b"print('v1')\n"),
    ("app/gone.txt", 0o644, b"removed by a whiteout\n"),
    ("etc", "dir", None),
    ("etc/conf.d", "dir", None),
    ("etc/conf.d/old.conf", 0o644, b"hidden by an opaque whiteout\n"),
]
UPPER: list[Entry] = [
    ("app", "dir", None),
    ("app/.wh.gone.txt", 0o644, b""),
    ("app/server.py", 0o755, b"print('v2')\n"),
    ("app/current", "link", "server.py"),
    ("etc", "dir", None),
    ("etc/conf.d", "dir", None),
    ("etc/conf.d/.wh..wh..opq", 0o644, b""),
    ("etc/conf.d/new.conf", 0o644, b"new\n"),
    ("bin", "dir", None),
    ("bin/su", 0o4755, b"#!/bin/sh\n"),
]
CONFIG = {
    "Entrypoint": ["python3"],
    "Cmd": ["/app/server.py"],
    "Env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
    "WorkingDir": "/app",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _config_blob(layers: list[bytes], config: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(layer)}" for layer in layers]},
        }
    ).encode()


def docker_save(path: Path, layers: list[bytes], config: dict[str, Any] = CONFIG) -> Path:
    """What `docker save` writes: manifest.json, the config, one layer.tar per layer."""
    blob = _config_blob(layers, config)
    with tarfile.open(path, "w") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add(f"{_sha(blob)}.json", blob)
        for number, layer in enumerate(layers):
            add(f"layer{number}/layer.tar", layer)
        manifest = [
            {
                "Config": f"{_sha(blob)}.json",
                "RepoTags": ["app:latest"],
                "Layers": [f"layer{number}/layer.tar" for number in range(len(layers))],
            }
        ]
        add("manifest.json", json.dumps(manifest).encode())
    return path


def oci_layout(
    path: Path, layers: list[bytes], config: dict[str, Any] = CONFIG, *, gzip_layers: bool = False
) -> Path:
    """An OCI image layout folder (oci-layout, index.json, blobs/sha256)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        (blobs / _sha(data)).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{_sha(data)}", "size": len(data)}

    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
    descriptors = [
        blob(gzip.compress(layer, mtime=0) if gzip_layers else layer, layer_type)
        for layer in layers
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(_config_blob(layers, config), "application/vnd.oci.image.config.v1+json"),
        "layers": descriptors,
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


def oci_archive(path: Path, layout: Path) -> Path:
    with tarfile.open(path, "w") as archive:
        for item in sorted(layout.rglob("*")):
            archive.add(item, item.relative_to(layout).as_posix(), recursive=False)
    return path


def _tree(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        name = path.relative_to(root).as_posix()
        if stat.S_ISLNK(info.st_mode):
            found[name] = "-> " + os.readlink(path)
        elif stat.S_ISDIR(info.st_mode):
            found[name] = "dir"
        else:
            found[name] = f"{stat.S_IMODE(info.st_mode):04o} {path.read_text()}"
    return found


EXPECTED = {
    "app": "dir",
    "app/server.py": "0755 print('v2')\n",
    "app/current": "-> server.py",
    "bin": "dir",
    "bin/su": "0755 #!/bin/sh\n",  # setuid cleared
    "etc": "dir",
    "etc/conf.d": "dir",
    "etc/conf.d/new.conf": "0644 new\n",
}


def _work(tmp_path: Path, name: str) -> Path:
    work = tmp_path / f"work-{name}"
    work.mkdir()
    return work


@pytest.fixture(scope="module")
def layers() -> list[bytes]:
    return [_tar(LOWER), _tar(UPPER)]


def test_docker_save_layers_and_whiteouts(tmp_path: Path, layers: list[bytes]) -> None:
    rootfs = unpack(docker_save(tmp_path / "image.tar", layers), _work(tmp_path, "d"))
    assert _tree(rootfs.path) == EXPECTED
    assert rootfs.layers == 2
    assert rootfs.setuid_cleared == ("/bin/su",)
    assert rootfs.config.default_service() == {
        "name": "app",
        "command": ["python3", "/app/server.py"],
        "restart": "on-failure",
        "user": "root",
        "workdir": "/app",
    }
    assert dict(rootfs.config.env) == {"PATH": "/usr/bin:/bin", "GREETING": "hi"}


def test_every_input_form_gives_the_same_tree_and_digest(
    tmp_path: Path, layers: list[bytes]
) -> None:
    docker = unpack(docker_save(tmp_path / "image.tar", layers), _work(tmp_path, "d"))
    layout_dir = oci_layout(tmp_path / "layout", layers)
    layout = unpack(layout_dir, _work(tmp_path, "l"))
    archive = unpack(oci_archive(tmp_path / "oci.tar", layout_dir), _work(tmp_path, "a"))
    gzipped = unpack(oci_layout(tmp_path / "gz", layers, gzip_layers=True), _work(tmp_path, "g"))
    assert _tree(layout.path) == _tree(archive.path) == _tree(gzipped.path) == EXPECTED
    assert docker.digest == layout.digest == archive.digest == gzipped.digest
    assert docker.digest.startswith("sha256:") and len(docker.digest) == 71


def test_one_byte_of_the_app_changes_the_digest(tmp_path: Path, layers: list[bytes]) -> None:
    changed = [(n, k, b"print('v3')\n" if n == "app/server.py" else b) for n, k, b in UPPER]
    one = unpack(oci_layout(tmp_path / "one", layers), _work(tmp_path, "1"))
    two = unpack(oci_layout(tmp_path / "two", [layers[0], _tar(changed)]), _work(tmp_path, "2"))
    assert one.digest != two.digest
    mode = [(n, 0o700 if n == "app/server.py" else k, b) for n, k, b in UPPER]
    three = unpack(oci_layout(tmp_path / "three", [layers[0], _tar(mode)]), _work(tmp_path, "3"))
    assert three.digest not in (one.digest, two.digest)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_bytes(b"not a tar at all" * 64), "not an uncompressed tar"),
        (lambda p: p.write_bytes(_tar([("hello.txt", 0o644, b"x")])), "neither `docker save`"),
        (lambda p: p.mkdir(), "not an OCI layout"),
    ],
)
def test_malformed_archives_are_clear_errors(tmp_path: Path, make: Any, words: str) -> None:
    source = tmp_path / "image.tar"
    make(source)
    with pytest.raises(OciError, match=words):
        unpack(source, _work(tmp_path, "x"))


def test_a_docker_archive_missing_its_layer_is_refused(tmp_path: Path, layers: list[bytes]) -> None:
    source = docker_save(tmp_path / "image.tar", layers)
    with tarfile.open(source) as archive:
        members = [(m, archive.extractfile(m)) for m in archive if m.name != "layer1/layer.tar"]
        kept = [(m, f.read() if f else b"") for m, f in members]
    with tarfile.open(source, "w") as archive:
        for member, body in kept:
            archive.addfile(member, io.BytesIO(body))
    with pytest.raises(OciError, match=r"skopeo copy of image\.tar failed"):
        unpack(source, _work(tmp_path, "x"))


def test_a_corrupt_layer_blob_is_refused(tmp_path: Path, layers: list[bytes]) -> None:
    layout = oci_layout(tmp_path / "layout", layers)
    blob = layout / "blobs" / "sha256" / _sha(layers[1])
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")  # no longer matches its digest
    with pytest.raises(OciError, match="failed"):
        unpack(layout, _work(tmp_path, "x"))


@pytest.mark.parametrize("kind", ["chr", "fifo"])
def test_device_nodes_are_refused(tmp_path: Path, layers: list[bytes], kind: str) -> None:
    bad = _tar([("dev", "dir", None), ("dev/thing", kind, None)])
    with pytest.raises(OciError, match="device or fifo 'dev/thing'"):
        unpack(oci_layout(tmp_path / "layout", [layers[0], bad]), _work(tmp_path, "x"))


def test_layer_count_and_unpacked_size_are_bounded(
    tmp_path: Path, layers: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oci, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(OciError, match="more than 100 bytes"):
        unpack(docker_save(tmp_path / "image.tar", layers), _work(tmp_path, "s"))
    with pytest.raises(OciError, match="more than 100 bytes"):
        unpack(oci_layout(tmp_path / "s", layers), _work(tmp_path, "t"))
    monkeypatch.setattr(oci, "MAX_ARCHIVE_BYTES", 1 << 30)
    monkeypatch.setattr(oci, "MAX_LAYERS", 1)
    with pytest.raises(OciError, match="2 layers, more than 1"):
        unpack(oci_layout(tmp_path / "a", layers), _work(tmp_path, "a"))
    monkeypatch.setattr(oci, "MAX_LAYERS", 64)
    monkeypatch.setattr(oci, "MAX_UNPACKED_BYTES", 40)
    with pytest.raises(OciError, match="more than 40 bytes"):
        unpack(oci_layout(tmp_path / "b", layers), _work(tmp_path, "b"))
    assert not (tmp_path / "work-b" / "rootfs").exists()  # refused before unpacking


def test_an_image_running_as_a_numeric_user_needs_a_declared_service(
    tmp_path: Path, layers: list[bytes]
) -> None:
    rootfs = unpack(
        oci_layout(tmp_path / "l", layers, {**CONFIG, "User": "1000:1000"}), _work(tmp_path, "x")
    )
    with pytest.raises(OciError, match=r"user '1000:1000': name a user in \[\[services\]\]"):
        rootfs.config.default_service()


WORKLOAD = """\
format = "cvm.workload.v1"
name = "from-docker"
oci = "image.tar"

[[ports]]
name = "http"
port = 8000
"""


def test_a_workload_from_an_oci_image(tmp_path: Path, layers: list[bytes]) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    docker_save(folder / "image.tar", layers)
    (folder / "workload.toml").write_text(WORKLOAD)
    workload = load_workload(folder / "workload.toml")
    try:
        first = workload.resolved_json()
        resolved = json.loads(first)
        assert workload.summary()["services"] == ["app"]
        assert resolved["services"][0]["command"] == ["python3", "/app/server.py"]
        assert resolved["env"]["GREETING"] == "hi"
        assert resolved["oci"]["rootfs_sha256"].startswith("sha256:")
        root = tmp_path / "root"
        (root / "app").mkdir(parents=True)
        (root / "app" / "server.py").write_text("the guest's own file\n")
        workload.materialize(root)
        assert (root / "app" / "server.py").read_text() == "the guest's own file\n"
        assert (root / "etc" / "conf.d" / "new.conf").read_text() == "new\n"
        assert not (root / "app" / "gone.txt").exists()
        assert json.loads((root / "etc/cvm/workload.json").read_bytes()) == resolved
    finally:
        workload.close()
    # one byte of the app in the archive: another resolved workload
    changed = [(n, k, b"print('v3')\n" if n == "app/server.py" else b) for n, k, b in UPPER]
    docker_save(folder / "image.tar", [layers[0], _tar(changed)])
    other = load_workload(folder / "workload.toml")
    try:
        assert other.resolved_json() != first
        assert json.loads(other.resolved_json())["oci"] != resolved["oci"]
    finally:
        other.close()


def _hostile_layer(victim_dir: Path, victim_file: Path, *, hardlink: bool) -> bytes:
    """Links out of the root (absolute and `..`), a file written through such a link, a
    hardlink to a file of the build host, `..` and absolute member names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:

        def add(name: str, kind: bytes, *, link: str = "", body: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.type, info.linkname, info.mode = 0, kind, link, 0o644
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)

        add("out", tarfile.SYMTYPE, link=str(victim_dir))
        add("out/pwned", tarfile.REGTYPE, body=b"through an absolute link\n")
        add("up", tarfile.SYMTYPE, link="../../../../../../../.." + str(victim_dir))
        add("up/pwned2", tarfile.REGTYPE, body=b"through a relative link\n")
        add("../../../../../../.." + str(victim_dir) + "/pwned3", tarfile.REGTYPE, body=b"x\n")
        add(str(victim_dir) + "/pwned4", tarfile.REGTYPE, body=b"x\n")
        if hardlink:
            add("hard", tarfile.LNKTYPE, link=str(victim_file))
        add("etc", tarfile.DIRTYPE)
        add("etc/cvm", tarfile.DIRTYPE)
        add("etc/cvm/workload.json", tarfile.SYMTYPE, link=str(victim_file))
    return buffer.getvalue()


@pytest.mark.parametrize("hardlink", [False, True])
def test_attack_an_oci_image_writes_nothing_outside_its_root_on_the_build_host(
    tmp_path: Path, hardlink: bool
) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim_file = tmp_path / "secret.txt"
    victim_file.write_text("the builder's own file\n")
    os.chmod(victim_file, 0o600)
    folder = tmp_path / "w"
    folder.mkdir()
    hostile = _hostile_layer(victim_dir, victim_file, hardlink=hardlink)
    docker_save(folder / "image.tar", [_tar(LOWER), hostile])
    (folder / "workload.toml").write_text(WORKLOAD)
    workload = load_workload(folder / "workload.toml")
    try:
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        try:
            workload.materialize(root)
        except OciError:
            assert hardlink  # umoci refuses a hardlink to a file outside the layers
        if (root / "hard").exists():  # a copy, never the build host's file
            assert (root / "hard").read_text() != "the builder's own file\n"
    finally:
        workload.close()
    assert list(victim_dir.iterdir()) == []
    assert victim_file.read_text() == "the builder's own file\n"
    assert stat.S_IMODE(victim_file.stat().st_mode) == 0o600
