"""The workload file (cvm.workload.v1): every bad field is one clear error naming it; the
resolved workload is canonical (same app, same bytes) and changes with any byte of the app;
materializing it into a root file system is deterministic and stays inside the root."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cvm.cli import app
from cvm.images.workload import (
    MAX_WORKLOAD_FILE_BYTES,
    RESOLVED_PATH,
    SECRET_NAME,
    WorkloadError,
    load_workload,
    parse_workload,
)
from guest import agent

runner = CliRunner()

GOOD = """\
format = "cvm.workload.v1"
name = "kv-store"
packages = ["libsqlite3-0"]
secrets = ["API_TOKEN"]

[[files]]
src = "app/"
dest = "/opt/app"

[[services]]
name = "app"
command = ["python3", "/opt/app/server.py"]
restart = "always"
user = "kv"
workdir = "/opt/app"

[env]
MODE = "production"

[[ports]]
name = "http"
port = 8080

[disk]
mount = "/data"
"""


def _app(folder: Path, server: bytes = b"print('hello')\n", order: int = 1) -> Path:
    (folder / "app" / "static").mkdir(parents=True)
    names = [("server.py", server), ("static/index.html", b"<p>hi</p>\n"), ("README", b"r\n")]
    for name, body in names[::order]:
        (folder / "app" / name).write_bytes(body)
    os.chmod(folder / "app" / "server.py", 0o700)
    os.chmod(folder / "app" / "README", 0o600)
    (folder / "app" / "current").symlink_to("static/index.html")
    (folder / "workload.toml").write_text(GOOD)
    return folder / "workload.toml"


@pytest.fixture
def workload_file(tmp_path: Path) -> Path:
    return _app(tmp_path / "w")


def _error(text: str, base: Path) -> str:
    with pytest.raises(WorkloadError) as caught:
        parse_workload(text, base)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _replace(key: str, line: str) -> str:
    """GOOD with the first line setting `key` replaced by `line` (or `line` added first)."""
    pattern = re.compile(rf"^{re.escape(key)} = .*$", re.M)
    if pattern.search(GOOD) is None:
        return line + "\n" + GOOD
    return pattern.sub(lambda _: line, GOOD, count=1)


BAD_FIELDS = [
    ("format", 'format = "cvm.workload.v2"', "format"),
    ("name", 'name = "Kv Store"', "name"),
    ("name", 'name = "' + "a" * 41 + '"', "name"),
    ("name", "name = 7", "name"),
    ("packages", 'packages = ["Bad_Name"]', "packages[0]"),
    ("packages", 'packages = ["curl", "curl"]', "packages"),
    ("packages", "packages = [" + ", ".join(f'"p{i:03d}"' for i in range(129)) + "]", "packages"),
    ("src", 'src = "../outside"', "files[0].src"),
    ("src", 'src = "/etc/passwd"', "files[0].src"),
    ("src", 'src = "app/../../x"', "files[0].src"),
    ("dest", 'dest = "opt/app"', "files[0].dest"),
    ("dest", 'dest = "/opt/../etc"', "files[0].dest"),
    ("dest", 'dest = "/proc/x"', "files[0].dest"),
    ("dest", 'dest = "/sys"', "files[0].dest"),
    ("dest", 'dest = "/dev/x"', "files[0].dest"),
    ("dest", 'dest = "/run/x"', "files[0].dest"),
    ("dest", 'dest = "/etc/cvm/workload.json"', "files[0].dest"),
    ("dest", 'dest = "/"', "files[0].dest"),
    ("command", "command = []", "services[0].command"),
    ("command", 'command = ["a\\u0000b"]', "services[0].command"),
    ("restart", 'restart = "sometimes"', "services[0].restart"),
    ("user", 'user = "Root User"', "services[0].user"),
    ("workdir", 'workdir = "relative"', "services[0].workdir"),
    ("port", "port = 22", "ports[0].port"),
    ("port", "port = 0", "ports[0].port"),
    ("port", "port = 65536", "ports[0].port"),
    ("port", 'port = "8080"', "ports[0].port"),
    ("secrets", 'secrets = ["cvm.disk_key"]', "secrets"),
    ("secrets", 'secrets = ["has space"]', "secrets[0]"),
    ("secrets", 'secrets = ["A", "A"]', "secrets"),
    ("secrets", 'secrets = ["MODE"]', "env"),
    ("mount", 'mount = "data"', "disk.mount"),
    ("mount", 'mount = "/"', "disk.mount"),
    ("mount", 'mount = "/etc/data"', "disk.mount"),
    ("oci", 'oci = "../image.tar"', "oci"),
    ("unknown", 'colour = "blue"', "colour"),
]


@pytest.mark.parametrize(("key", "line", "field"), BAD_FIELDS)
def test_every_bad_field_is_one_error_naming_it(
    workload_file: Path, key: str, line: str, field: str
) -> None:
    message = _error(_replace(key, line), workload_file.parent)
    assert f": {field}:" in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD + '\n[[ports]]\nname = "other"\nport = 8080\n', "ports: each port number"),
        (GOOD + '\n[[ports]]\nname = "http"\nport = 9090\n', "ports: each port name"),
        (GOOD + '\n[[services]]\nname = "app"\ncommand = ["true"]\n', "services: each service"),
        (GOOD + '\n[[files]]\nsrc = "app/static"\ndest = "/opt/app/static"\n', "overlap"),
        (GOOD.split("[[services]]")[0], "services: name at least one"),
        ("format = ", "not valid TOML"),
        (GOOD.replace("[env]\n", '[env]\n"1BAD" = "x"\n'), "env"),
        (GOOD.replace("[disk]\n", "[disk]\nsize = 3\n"), "disk.size: is not a field"),
        (GOOD.replace('format = "cvm.workload.v1"\n', ""), "format: is required"),
    ],
)
def test_model_level_mistakes_are_one_error(workload_file: Path, text: str, words: str) -> None:
    assert words in _error(text, workload_file.parent)


def test_sources_must_exist_and_stay_beside_the_file(tmp_path: Path) -> None:
    workload_file = _app(tmp_path / "w")
    (tmp_path / "secret.txt").write_text("host secret")
    base = workload_file.parent
    assert "does not exist" in _error(GOOD.replace('"app/"', '"missing/"'), base)
    (base / "escape").symlink_to(tmp_path)
    assert "outside" in _error(GOOD.replace('"app/"', '"escape"'), base)


def test_a_link_inside_the_app_pointing_out_is_refused(workload_file: Path) -> None:
    (workload_file.parent / "app" / "leak").symlink_to("../../secret.txt")
    with pytest.raises(WorkloadError, match="points outside"):
        load_workload(workload_file).resolved_json()
    (workload_file.parent / "app" / "leak").unlink()
    (workload_file.parent / "app" / "leak").symlink_to("/etc/passwd")
    with pytest.raises(WorkloadError, match="points outside"):
        load_workload(workload_file).resolved_json()


def test_a_name_that_is_not_utf8_is_refused(workload_file: Path) -> None:
    (workload_file.parent / "app" / os.fsdecode(b"caf\xe9")).write_text("x")
    with pytest.raises(WorkloadError, match="not UTF-8"):
        load_workload(workload_file).resolved_json()


def test_a_special_file_in_the_app_is_refused(workload_file: Path) -> None:
    os.mkfifo(workload_file.parent / "app" / "pipe")
    with pytest.raises(WorkloadError, match="not a file, folder or link"):
        load_workload(workload_file).resolved_json()


def test_file_size_and_encoding_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text(GOOD + "#" * MAX_WORKLOAD_FILE_BYTES)
    with pytest.raises(WorkloadError, match="larger than"):
        load_workload(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(WorkloadError, match="UTF-8"):
        load_workload(binary)
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(tmp_path / "none.toml")


def test_secret_names_follow_the_guest_agents_rule() -> None:
    assert SECRET_NAME == agent.SECRET_NAME.pattern


def test_resolved_json_is_canonical_and_complete(workload_file: Path) -> None:
    workload = load_workload(workload_file)
    raw = workload.resolved_json({"libsqlite3-0": "3.40.1-2"})
    assert raw == workload.resolved_json({"libsqlite3-0": "3.40.1-2"})
    resolved = json.loads(raw)
    assert raw == json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    files = {entry["path"]: entry for entry in resolved["files"]}
    assert files["/opt/app/server.py"]["mode"] == "0755"
    assert files["/opt/app/README"]["mode"] == "0644"
    assert files["/opt/app/static"] == {"path": "/opt/app/static", "type": "dir", "mode": "0755"}
    assert files["/opt/app/current"] == {
        "path": "/opt/app/current",
        "type": "symlink",
        "target": "static/index.html",
    }
    assert len(files["/opt/app/server.py"]["sha256"]) == 64
    assert [e["path"] for e in resolved["files"]] == sorted(files, key=str.encode)
    assert resolved["packages"] == {
        "requested": ["libsqlite3-0"],
        "installed": {"libsqlite3-0": "3.40.1-2"},
    }
    assert resolved["users"] == [{"name": "kv", "uid": 1000, "gid": 1000}]
    assert resolved["secrets"] == ["API_TOKEN"] and resolved["disk"] == {"mount": "/data"}
    assert resolved["oci"] is None
    assert workload.summary() == {
        "name": "kv-store",
        "ports": [{"name": "http", "port": 8080}],
        "secrets": ["API_TOKEN"],
        "disk": "/data",
        "services": ["app"],
    }


def test_same_app_written_in_another_order_resolves_to_the_same_bytes(tmp_path: Path) -> None:
    one = load_workload(_app(tmp_path / "one", order=1))
    two = load_workload(_app(tmp_path / "two", order=-1))
    assert one.resolved_json() == two.resolved_json()


def test_one_byte_of_the_app_changes_the_digest(tmp_path: Path) -> None:
    one = load_workload(_app(tmp_path / "one", server=b"print('hello')\n"))
    two = load_workload(_app(tmp_path / "two", server=b"print('hellp')\n"))
    assert one.digest() != two.digest()
    assert one.summary() == two.summary()


def _listing(root: Path) -> list[tuple[str, str, bytes]]:
    found = []
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        body = os.readlink(path).encode() if path.is_symlink() else b""
        if path.is_file() and not path.is_symlink():
            body = path.read_bytes()
        found.append((path.relative_to(root).as_posix(), oct(info.st_mode), body))
    return found


def _guest_root(path: Path) -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\n")
    return path


def test_materialize_is_deterministic_and_writes_the_resolved_workload(
    tmp_path: Path, workload_file: Path
) -> None:
    workload = load_workload(workload_file)
    one, two = _guest_root(tmp_path / "r1"), _guest_root(tmp_path / "r2")
    written = workload.materialize(one, {"libsqlite3-0": "3.40.1-2"})
    os.umask(0o077)  # the builder's umask must not leak into the image
    try:
        workload.materialize(two, {"libsqlite3-0": "3.40.1-2"})
    finally:
        os.umask(0o022)
    assert _listing(one) == _listing(two)
    assert (one / RESOLVED_PATH).read_bytes() == written
    assert written == workload.resolved_json({"libsqlite3-0": "3.40.1-2"})
    assert oct((one / RESOLVED_PATH).stat().st_mode & 0o777) == "0o644"
    assert (one / "opt/app/server.py").read_bytes() == b"print('hello')\n"
    assert oct((one / "opt/app/server.py").stat().st_mode & 0o777) == "0o755"
    assert os.readlink(one / "opt/app/current") == "static/index.html"
    assert (one / "data").is_dir()  # the disk's mount point exists on a read-only root
    assert "kv:x:1000:1000::/nonexistent:/bin/false" in (one / "etc/passwd").read_text()
    assert "kv:x:1000:" in (one / "etc/group").read_text()


def test_materialize_never_writes_through_a_link_in_the_image(
    tmp_path: Path, workload_file: Path
) -> None:
    root = _guest_root(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "opt").symlink_to(outside)
    with pytest.raises(WorkloadError, match="/opt is a link"):
        load_workload(workload_file).materialize(root)
    assert list(outside.iterdir()) == []


def test_materialize_refuses_a_user_the_image_has_with_another_uid(
    tmp_path: Path, workload_file: Path
) -> None:
    root = _guest_root(tmp_path / "root")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nkv:x:5:5::/:/bin/false\n")
    with pytest.raises(WorkloadError, match="another uid"):
        load_workload(workload_file).materialize(root)


def test_a_source_linked_inside_the_folder_is_copied_as_what_it_points_to(
    tmp_path: Path, workload_file: Path
) -> None:
    (workload_file.parent / "current").symlink_to("app")
    text = GOOD.replace('src = "app/"', 'src = "current"')
    workload = parse_workload(text, workload_file.parent)
    root = _guest_root(tmp_path / "root")
    workload.materialize(root)
    assert (root / "opt/app/server.py").read_bytes() == b"print('hello')\n"
    assert not (root / "opt/app").is_symlink()


def test_a_source_changed_while_building_fails_the_build(
    tmp_path: Path, workload_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from cvm.images import workload as module

    original = shutil.copyfile

    def copy_then_change(src: Path, dst: Path, **kwargs: Any) -> None:
        original(src, dst)
        with open(dst, "ab") as handle:
            handle.write(b"#")

    monkeypatch.setattr(module.shutil, "copyfile", copy_then_change)
    with pytest.raises(WorkloadError, match="changed while the image was built"):
        load_workload(workload_file).materialize(_guest_root(tmp_path / "root"))


def test_build_image_hands_the_workload_to_the_builder_and_reuses_an_unchanged_build(
    tmp_path: Path, workload_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The glue of `cvm image build --workload`, with the v2 builder (guest.build's, owned by
    the image-format work) replaced by one writing a small image of the same layout."""
    import guest.build
    import guest.packages
    from cvm.images import ImageStore
    from cvm.images.workload import build_image

    calls: list[Any] = []

    def builder(out_dir: Path, cache_dir: Path, *, workload: Any) -> None:
        calls.append(workload)
        (out_dir / "vmlinuz").write_bytes(b"kernel")
        (out_dir / "initrd.cpio").write_bytes(workload.resolved_json())
        manifest = guest.build.manifest(
            out_dir / "vmlinuz", out_dir / "initrd.cpio", "console=ttyS0", []
        )
        (out_dir / "manifest.json").write_text(
            json.dumps({**manifest, "workload": workload.summary()})
        )

    monkeypatch.setattr(guest.build, "build", builder)
    monkeypatch.setattr(guest.build, "recipe_key", lambda: "recipe")
    monkeypatch.setattr(guest.packages, "package_closure", lambda names, present: list(names))
    monkeypatch.setattr(guest.packages, "package_versions", lambda names: {n: "1.0" for n in names})
    store = ImageStore(tmp_path / "images")
    image = build_image(load_workload(workload_file), store)
    assert len(calls) == 1 and calls[0].name == "kv-store"
    manifest = json.loads((image.directory / "manifest.json").read_text())
    assert manifest["workload"]["disk"] == "/data"
    assert build_image(load_workload(workload_file), store).image_id == image.image_id
    assert len(calls) == 1  # unchanged inputs: the stored image
    build_image(load_workload(workload_file), store, force=True)
    assert len(calls) == 2
    (workload_file.parent / "app" / "server.py").write_bytes(b"print('changed')\n")
    changed = build_image(load_workload(workload_file), store)
    assert len(calls) == 3 and changed.image_id != image.image_id

    # `cvm image measure` shows the workload and measures what the builder made of it.
    monkeypatch.setenv("CVM_IMAGE_DIR", str(store.root))
    monkeypatch.setattr("cvm.images.AMDSEV_OVMF_PATHS", ())
    views = []
    for built in (image, changed):
        result = runner.invoke(app, ["image", "measure", built.image_id, "--json"])
        assert result.exit_code == 0, result.output
        views.append(json.loads(result.stdout))
    assert views[0]["workload"] == load_workload(workload_file).summary()
    assert views[0]["measurement"] != views[1]["measurement"]
    # Printed for people (and for `$(cvm image measure ...)`): the 98 characters on one line,
    # never wrapped at the console's width.
    monkeypatch.setenv("COLUMNS", "80")
    result = runner.invoke(app, ["image", "measure", image.image_id])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == views[0]["measurement"]


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_reports_a_bad_workload_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    monkeypatch.setenv("CVM_IMAGE_DIR", str(tmp_path / "images"))
    bad = _app(tmp_path / "w")
    bad.write_text(GOOD.replace("port = 8080", "port = 22"))
    result = runner.invoke(
        app, ["image", "build", "--workload", str(bad), *(["--json"] if as_json else [])]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "ports[0].port: port 22 is the guest's SSH server" in result.output
    if as_json:
        assert json.loads(result.stdout)["error"].endswith("port 22 is the guest's SSH server")
    assert not (tmp_path / "images").exists()  # nothing built for a bad file


def test_cli_reports_a_missing_workload_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["image", "build", "--workload", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "cannot read the workload file" in result.output


# --- the shipped examples ------------------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["randomness", "kv-store"])
def test_the_examples_are_valid_workloads(name: str) -> None:
    workload = load_workload(EXAMPLES / name / "workload.toml")
    resolved = json.loads(workload.resolved_json())
    assert resolved["name"] == name
    assert any(entry["path"].endswith("/server.py") for entry in resolved["files"])
    assert workload.summary()["ports"] == [{"name": "http", "port": 8080}]


def test_the_stateful_example_declares_its_disk_secret_and_sqlite() -> None:
    summary = load_workload(EXAMPLES / "kv-store" / "workload.toml").summary()
    assert summary["disk"] == "/data" and summary["secrets"] == ["KV_TOKEN"]
    workload = load_workload(EXAMPLES / "kv-store" / "workload.toml")
    assert "libsqlite3-0" in workload.packages


FAKE_AGENT = """\
import json, sys
from eth_account import Account
from cvm.chain.guest_result import sign_guest_result
from eth_utils import keccak
assert sys.argv[1] == "sign-result"
request, value = bytes.fromhex(sys.argv[2]), sys.stdin.buffer.read()
key = Account.from_key(b"\\x11" * 32)
signature = sign_guest_result(key, 7, request, value, 31337, "0x" + "ab" * 20)
print(json.dumps({"ok": True, "lease_id": 7, "request": request.hex(),
                  "result_hash": keccak(value).hex(), "signer": key.address,
                  "signature": signature.hex()}))
"""


def _serve(script: Path, env: dict[str, str], port: int) -> Any:
    import subprocess
    import sys

    import httpx

    from tests.fixtures.processes import wait_for

    process = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, **env}, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, timeout=30, what=script.name)
    return process, base


def test_the_randomness_example_signs_one_value_per_request(tmp_path: Path) -> None:
    import httpx
    from eth_account import Account

    from cvm.chain.guest_result import recover_guest_result
    from tests.fixtures.processes import free_port, stop_process

    agent_script = tmp_path / "agent.py"
    agent_script.write_text(FAKE_AGENT)
    port = free_port()
    process, base = _serve(
        EXAMPLES / "randomness" / "app" / "server.py",
        {"RANDOMNESS_PORT": str(port), "RANDOMNESS_AGENT": str(agent_script)},
        port,
    )
    try:
        request = "0x" + "5a" * 32
        first = httpx.get(f"{base}/random", params={"request": request}, timeout=60).json()
        again = httpx.get(f"{base}/random", params={"request": request}, timeout=60).json()
        other = httpx.get(f"{base}/random", params={"request": "0x" + "5b" * 32}, timeout=60)
        bad = httpx.get(f"{base}/random", params={"request": "0x1234"}, timeout=60)
    finally:
        stop_process(process)
    assert first["value"] == again["value"] and first["request"] == request
    assert other.json()["value"] != first["value"]
    assert bad.status_code == 400
    value = bytes.fromhex(first["value"][2:])
    signer = recover_guest_result(
        7, bytes.fromhex(request[2:]), value, bytes.fromhex(first["signature"][2:]), 31337,
        "0x" + "ab" * 20,
    )  # fmt: skip
    assert signer == first["signer"] == Account.from_key(b"\x11" * 32).address


def test_the_kv_store_example_keeps_data_in_its_database(tmp_path: Path) -> None:
    import httpx

    from tests.fixtures.processes import free_port, stop_process

    database = tmp_path / "data" / "kv.sqlite3"
    script = EXAMPLES / "kv-store" / "app" / "server.py"
    env = {"KV_DATABASE": str(database), "KV_TOKEN": "t0ken"}
    auth = {"Authorization": "Bearer t0ken"}
    port = free_port()
    process, base = _serve(script, {**env, "KV_PORT": str(port)}, port)
    try:
        assert httpx.put(f"{base}/kv/greeting", content=b"hello", headers=auth).status_code == 200
        assert httpx.get(f"{base}/kv/greeting").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{base}/kv/greeting", headers=wrong).status_code == 401
        assert httpx.get(f"{base}/kv/../etc", headers=auth).status_code in (400, 404)
    finally:
        stop_process(process)
    port = free_port()
    process, base = _serve(script, {**env, "KV_PORT": str(port)}, port)  # a restart
    try:
        assert httpx.get(f"{base}/kv/greeting", headers=auth).content == b"hello"
        assert httpx.get(f"{base}/kv", headers=auth).json() == {"keys": ["greeting"]}
        assert httpx.delete(f"{base}/kv/greeting", headers=auth).json()["deleted"] is True
        assert httpx.get(f"{base}/kv/greeting", headers=auth).status_code == 404
    finally:
        stop_process(process)


def test_attack_image_link_at_workload_json_cannot_write_on_the_build_host(
    tmp_path: Path, workload_file: Path
) -> None:
    """A hostile OCI image ships /etc/cvm/workload.json as a link to a file of the build host
    (merged in by `_merge_under`, the guest has no such file): the build must not write (or
    chmod) through it."""
    root = _guest_root(tmp_path / "root")
    victim = tmp_path / "victim"
    victim.write_text("the builder's own file\n")
    os.chmod(victim, 0o600)
    (root / "etc" / "cvm").mkdir()
    (root / RESOLVED_PATH).symlink_to(victim)
    written = load_workload(workload_file).materialize(root)
    assert victim.read_text() == "the builder's own file\n"
    assert oct(victim.stat().st_mode & 0o777) == "0o600"
    assert not (root / RESOLVED_PATH).is_symlink()
    assert (root / RESOLVED_PATH).read_bytes() == written


def test_attack_image_link_at_passwd_cannot_write_on_the_build_host(
    tmp_path: Path, workload_file: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("x\n")
    (root / "etc" / "passwd").symlink_to(victim)
    (root / "etc" / "group").symlink_to(victim)
    with pytest.raises(WorkloadError, match="link"):
        load_workload(workload_file).materialize(root)
    assert victim.read_text() == "x\n"
