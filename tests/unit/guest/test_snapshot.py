"""Snapshots of the guest's declared disk (guest/snapshot.py and the agent's snapshot ops):
a roundtrip through the agent's channel into a fresh volume, and every refusal: a tampered
or misplaced chunk, another lease's manifest, an older epoch (snapshot or local volume), a
tar that escapes its directory; dedupe of unchanged chunks; FIFREEZE/FITHAW around the read."""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guest import agent as guest_agent
from guest import snapshot as snap
from guest import workload_runner

ROOT = bytes(range(32))
REGISTRY = bytes.fromhex("5a" * 20)
LEASE = 7


def keys(required: int = 0, lease: int = LEASE, root: bytes = ROOT) -> snap.SnapshotKeys:
    return snap.SnapshotKeys.from_root(
        root, chain_id=31337, registry=REGISTRY, lease_id=lease, key_version=1,
        required_epoch=required,
    )  # fmt: skip


def fill(mount: Path) -> None:
    """A tree with what a service leaves on its disk: nested files, an empty one, one larger
    than two chunks, a link inside, names in UTF-8, a directory of its own mode."""
    (mount / "db").mkdir()
    (mount / "db" / "kv.sqlite3").write_bytes(os.urandom(snap.CHUNK_SIZE * 2 + 1234))
    (mount / "db" / "empty").write_bytes(b"")
    (mount / "notes-é.txt").write_text("hello\n")
    (mount / "private").mkdir(mode=0o700)
    (mount / "private" / "key").write_bytes(b"k" * 100)
    os.chmod(mount / "private" / "key", 0o600)
    (mount / "current").symlink_to("db/kv.sqlite3")
    os.utime(mount / "notes-é.txt", (1_700_000_000, 1_700_000_000))


def tree(mount: Path) -> dict[str, tuple]:
    """Everything a restore must bring back (the reserved .cvm directory aside)."""
    found = {}
    for directory, dirs, files in os.walk(mount):
        dirs[:] = [d for d in dirs if d != snap.RESERVED]
        for name in [*dirs, *files]:
            path = Path(directory) / name
            info = os.lstat(path)
            relative = str(path.relative_to(mount))
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                found[relative] = ("dir", oct(info.st_mode & 0o7777))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[relative] = ("file", oct(info.st_mode & 0o7777), digest, int(info.st_mtime))
    return found


class Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)


def manager(mount: Path, spool: Path, console: Console | None = None) -> snap.SnapshotManager:
    mount.mkdir(parents=True, exist_ok=True)
    return snap.SnapshotManager(
        mount, freezer=snap.no_freeze, spool=spool, console=console or Console(),
        is_mounted=lambda path: True,
    )  # fmt: skip


class Host:
    """What the node does over the channel: take a snapshot and fetch it, feed a restore."""

    def __init__(self, agent: guest_agent.GuestAgent) -> None:
        self.agent = agent
        self.objects: dict[str, bytes] = {}
        self.manifests: dict[int, bytes] = {}

    def ask(self, request: dict) -> dict:
        # Through the line codec, as the channel carries it.
        answer = guest_agent.answer_line(self.agent, guest_agent.json.dumps(request).encode())
        assert len(guest_agent.json.dumps(answer)) < guest_agent.MAX_LINE
        return answer

    def snapshot(self) -> dict:
        taken = self.ask({"op": "snapshot"})
        assert taken["ok"], taken
        for chunk_id in taken["chunks"]:
            if chunk_id not in self.objects:
                got = self.ask({"op": "snapshot_chunk", "chunk": chunk_id})
                self.objects[chunk_id] = base64.b64decode(got["data"])
        got = self.ask({"op": "snapshot_manifest"})
        self.manifests[got["epoch"]] = base64.b64decode(got["data"])
        return taken

    def restore(self, epoch: int) -> dict:
        data = base64.b64encode(self.manifests[epoch]).decode()
        started = self.ask({"op": "restore_manifest", "epoch": epoch, "data": data})
        assert started["ok"], started
        for chunk_id in started["need"]:
            data = base64.b64encode(self.objects[chunk_id]).decode()
            fed = self.ask({"op": "restore_chunk", "chunk": chunk_id, "data": data})
            assert fed["ok"], fed
        return self.ask({"op": "restore_finish"})


def make_agent(tmp_path: Path, snapshots: snap.SnapshotManager, runner=None):
    return guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=tmp_path / "secrets", ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no", device=tmp_path / "no", snapshots=snapshots, runner=runner,
    )  # fmt: skip


class Spawned:
    pid = 4242

    def poll(self):
        return None


def runner_for(mount: Path, started: list[str]) -> workload_runner.WorkloadRunner:
    spec = workload_runner.WorkloadSpec(
        "kv", (workload_runner.ServiceSpec("kv", ("true",)),), disk_mount=str(mount)
    )

    def spawn(service, env):
        started.append(service.name)
        return Spawned()

    return workload_runner.WorkloadRunner(
        spec, secrets_dir=mount.parent / "secrets", spawn=spawn, disk_mounted=lambda path: True,
        console=io.StringIO(),
    )  # fmt: skip


def test_roundtrip_into_a_fresh_volume_and_services_wait_for_it(tmp_path):
    # A new guest on a fresh volume: formatted, empty, nothing required: epoch 0, ready.
    source_mount = tmp_path / "b" / "data"
    source = make_agent(tmp_path / "b", manager(source_mount, tmp_path / "b" / "spool"))
    assert source.install_snapshot_keys(keys(0))["restore_needed"] is False
    fill(source_mount)
    host = Host(source)
    taken = host.snapshot()
    assert taken["epoch"] == 1 and taken["size"] > 2 * snap.CHUNK_SIZE
    assert snap.read_local_epoch(source_mount, LEASE) == 1
    assert host.ask({"op": "snapshot_status"}) == {
        "ok": True, "restore_needed": False, "required_epoch": 0, "epoch": 1, "id": None,
    }  # fmt: skip

    # The epoch record: Ed25519 by the epoch key over the exact bytes of INTERFACES 6.
    record = taken["record"]
    assert record["snapshot"] == taken["manifest_id"]
    assert taken["manifest_id"] == hashlib.sha256(host.manifests[1]).hexdigest()
    message = (
        b"cvm.epoch.v1" + (31337).to_bytes(32, "big") + REGISTRY + LEASE.to_bytes(32, "big")
        + (1).to_bytes(4, "big") + (1).to_bytes(8, "big") + bytes.fromhex(record["snapshot"])
    )  # fmt: skip
    Ed25519PublicKey.from_public_bytes(keys().epoch_public()).verify(
        base64.b64decode(record["signature"]), message
    )
    # The host holds ciphertext only.
    secret = (source_mount / "private" / "key").read_bytes()
    assert not any(secret in blob for blob in [*host.objects.values(), host.manifests[1]])

    # The node dies; another guest gets the key with required_epoch 1 and an empty volume.
    target_mount = tmp_path / "c" / "data"
    started: list[str] = []
    runner = runner_for(target_mount, started)
    console = Console()
    target = make_agent(
        tmp_path / "c", manager(target_mount, tmp_path / "c" / "spool", console), runner
    )
    target.hold_state()
    runner.poll()
    assert started == []  # held while the keys are installed
    assert target.install_snapshot_keys(keys(1)) == {
        "restore_needed": True, "required_epoch": 1, "epoch": None,
    }  # fmt: skip
    runner.poll()
    assert started == []  # nothing to serve yet
    host.agent = target
    assert host.ask({"op": "snapshot"})["ok"] is False  # an empty volume is never snapshotted
    finished = host.restore(1)
    assert finished == {"ok": True, "epoch": 1, "entries": len(tree(source_mount)) + 1, "id": None}
    assert tree(target_mount) == tree(source_mount)
    assert snap.read_local_epoch(target_mount, LEASE) == 1
    runner.poll()
    assert started == ["kv"]
    assert any("restored snapshot epoch 1" in line for line in console.lines)
    # Restored once: a second restore is refused (it could only roll back).
    again = host.ask({"op": "restore_manifest", "epoch": 1,
                      "data": base64.b64encode(host.manifests[1]).decode()})  # fmt: skip
    assert again["ok"] is False and "needs no restore" in again["error"]


def snapshotted(tmp_path: Path) -> tuple[Host, Path]:
    mount = tmp_path / "src" / "data"
    agent = make_agent(tmp_path / "src", manager(mount, tmp_path / "src" / "spool"))
    agent.install_snapshot_keys(keys(0))
    fill(mount)
    host = Host(agent)
    host.snapshot()
    return host, mount


def restoring(tmp_path: Path, host: Host, required: int = 1, lease: int = LEASE) -> Console:
    mount = tmp_path / "dst" / "data"
    console = Console()
    host.agent = make_agent(tmp_path / "dst", manager(mount, tmp_path / "dst" / "spool", console))
    host.agent.install_snapshot_keys(keys(required, lease=lease))
    return console


def test_a_tampered_chunk_is_refused(tmp_path):
    host, _ = snapshotted(tmp_path)
    restoring(tmp_path, host)
    need = host.ask({"op": "restore_manifest", "epoch": 1,
                     "data": base64.b64encode(host.manifests[1]).decode()})["need"]  # fmt: skip
    chunk_id = need[0]
    tampered = bytearray(host.objects[chunk_id])
    tampered[40] ^= 1
    answer = host.ask({"op": "restore_chunk", "chunk": chunk_id,
                       "data": base64.b64encode(bytes(tampered)).decode()})  # fmt: skip
    assert answer["ok"] is False and "does not hash to its id" in answer["error"]
    # Under its own id it is no chunk of this manifest; and the AEAD refuses it anyway.
    tampered_id = hashlib.sha256(tampered).hexdigest()
    answer = host.ask({"op": "restore_chunk", "chunk": tampered_id,
                       "data": base64.b64encode(bytes(tampered)).decode()})  # fmt: skip
    assert answer["ok"] is False and "names no such chunk" in answer["error"]
    with pytest.raises(snap.SnapshotError, match="does not authenticate"):
        snap.open_chunk(keys(), tampered_id, bytes(tampered))
    unfinished = host.ask({"op": "restore_finish"})
    assert unfinished["ok"] is False and "missing" in unfinished["error"]


def test_a_chunk_in_another_place_is_refused(tmp_path):
    host, _ = snapshotted(tmp_path)
    restoring(tmp_path, host)
    need = host.ask({"op": "restore_manifest", "epoch": 1,
                     "data": base64.b64encode(host.manifests[1]).decode()})["need"]  # fmt: skip
    first, second = need[0], need[1]
    swapped = host.ask({"op": "restore_chunk", "chunk": first,
                        "data": base64.b64encode(host.objects[second]).decode()})  # fmt: skip
    assert swapped["ok"] is False and "does not hash to its id" in swapped["error"]
    # A manifest whose chunk order was changed does not authenticate: the order is sealed.
    sealed = host.manifests[1]
    with pytest.raises(snap.SnapshotError, match="does not authenticate"):
        snap.open_manifest(keys(), 1, sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:])


def test_a_manifest_of_another_lease_or_epoch_or_key_is_refused(tmp_path):
    host, _ = snapshotted(tmp_path)
    data = base64.b64encode(host.manifests[1]).decode()
    restoring(tmp_path / "other", host, lease=LEASE + 1)
    answer = host.ask({"op": "restore_manifest", "epoch": 1, "data": data})
    assert answer["ok"] is False and f"lease {LEASE + 1}" in answer["error"]
    # The host claims a later epoch than the manifest's: it does not authenticate.
    restoring(tmp_path / "later", host, required=1)
    answer = host.ask({"op": "restore_manifest", "epoch": 5, "data": data})
    assert answer["ok"] is False and "epoch 5" in answer["error"]
    # Another root key (a rekey, or a forger): nothing opens.
    with pytest.raises(snap.SnapshotError):
        snap.open_manifest(keys(root=bytes(32)), 1, host.manifests[1])


def test_an_older_epoch_is_refused_on_the_console(tmp_path):
    host, _ = snapshotted(tmp_path)
    console = restoring(tmp_path, host, required=2)
    answer = host.ask({"op": "restore_manifest", "epoch": 1,
                       "data": base64.b64encode(host.manifests[1]).decode()})  # fmt: skip
    assert answer["ok"] is False and "older than the required 2" in answer["error"]
    assert "cvm-guest: REFUSING stale state (epoch 1 < required 2)" in console.lines
    assert host.agent.snapshots.ready() is False


def test_a_local_volume_is_used_unless_older_than_required(tmp_path):
    _, mount = snapshotted(tmp_path)  # the volume's epoch is 1
    (mount / "after-snapshot").write_text("written after the last snapshot")
    # Relaunched on the same node, required 1: the volume is used as it is.
    console = Console()
    same = manager(mount, tmp_path / "spool2", console)
    assert same.install(keys(1)) == {"restore_needed": False, "required_epoch": 1, "epoch": 1}
    assert same.ready() and (mount / "after-snapshot").exists()
    # An operator puts back this copy after the holders saw epoch 3: refused, not used.
    stale = manager(mount, tmp_path / "spool3", console)
    assert stale.install(keys(3))["restore_needed"] is True
    assert "cvm-guest: REFUSING stale state (epoch 1 < required 3)" in console.lines
    assert not stale.ready()
    with pytest.raises(snap.SnapshotError, match="not in use"):
        stale.snapshot()


def test_unchanged_chunks_keep_their_ids(tmp_path):
    host, mount = snapshotted(tmp_path)
    first = set(host.objects)
    taken = host.ask({"op": "snapshot"})
    assert taken["epoch"] == 2 and set(taken["chunks"]) == first  # nothing new to upload
    # Append to the last file in tar order: the chunks before it stay the same objects.
    with open(mount / "private" / "key", "ab") as handle:
        handle.write(b"more")
    changed = host.ask({"op": "snapshot"})
    assert changed["epoch"] == 3
    assert len(set(changed["chunks"]) - first) == 1 and len(set(changed["chunks"]) & first) >= 2


def evil_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    out.seek(0)
    return out


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    info = entry(name, tarfile.DIRTYPE)
    info.mode = 0o755
    return info, None


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([(entry("../evil"), b"x")], "leaves its directory"),
        ([(entry("/etc/evil"), b"x")], "absolute path"),
        ([directory("a"), (entry("a/../../x"), b"x")], "leaves its directory"),
        ([(entry("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "points out"),
        ([(entry("link", tarfile.SYMTYPE, "../../etc"), None)], "points out"),
        # Each link stays inside on its own; followed one through the other, out.
        ([directory("d1"), directory("d1/d2"), (entry("d1/d2/s", tarfile.SYMTYPE, "../.."), None),
          (entry("u", tarfile.SYMTYPE, "d1/d2/s/.."), None)], "points out"),
        # A link, then a file under it: never written through (its directory is no directory).
        ([(entry("l", tarfile.SYMTYPE, "."), None), (entry("l/x"), b"x")], "before its directory"),
        ([(entry("x"), b"one"), (entry("h", tarfile.LNKTYPE, "x"), None)], "hard link"),
        ([(entry("dev", tarfile.CHRTYPE), None)], "device"),
        ([(entry("fifo", tarfile.FIFOTYPE), None)], "fifo"),
        ([(entry("x"), b"one"), (entry("x"), b"two")], "twice"),
        ([(entry(".cvm/epoch"), b"{}")], "reserved"),
        ([(entry("big"), b"y" * 5000)], "more than 4096 bytes"),
    ],
)  # fmt: skip
def test_a_tar_that_escapes_or_smuggles_is_refused(tmp_path, members, reason):
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(snap.SnapshotError, match=reason):
        snap.extract_tar(evil_tar(*members), target, max_bytes=4096)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x").exists()


def test_a_sealed_tar_that_escapes_leaves_the_volume_as_it_was(tmp_path):
    """Even a manifest that authenticates (only a guest of the lease could seal one) is
    unpacked into a staging directory first: a bad entry leaves the volume untouched."""
    mount = tmp_path / "data"
    console = Console()
    target = manager(mount, tmp_path / "spool", console)
    (mount / "old").write_text("stale")
    lease_keys = keys(1)
    target.install(lease_keys)
    raw = evil_tar(directory("ok"), (entry("ok/a"), b"fine"), (entry("../escape"), b"x")).read()
    chunks = []
    for offset in range(0, len(raw), snap.CHUNK_SIZE):
        sealed = snap.seal_chunk(lease_keys, raw[offset : offset + snap.CHUNK_SIZE])
        chunks.append((hashlib.sha256(sealed).hexdigest(), sealed))
    manifest = snap.Manifest(
        1, tuple((i, len(snap.open_chunk(lease_keys, i, s))) for i, s in chunks), len(raw),
        hashlib.sha256(raw).hexdigest(),
    )  # fmt: skip
    target.restore_manifest(1, manifest.seal(lease_keys))
    for chunk_id, sealed in chunks:
        target.restore_chunk(chunk_id, sealed)
    with pytest.raises(snap.SnapshotError, match="leaves its directory"):
        target.restore_finish()
    assert (mount / "old").read_text() == "stale" and not (tmp_path / "escape").exists()
    assert not (mount / snap.RESERVED / "restore").exists() and not target.ready()


def test_the_file_system_is_frozen_while_read_and_always_thawed(tmp_path):
    calls: list[int] = []

    def ioctl(fd: int, request: int, arg: int) -> int:
        calls.append(request)
        return 0

    frozen = snap.ioctl_freezer(ioctl)
    with frozen(tmp_path):
        assert calls == [snap.FIFREEZE]
    assert calls == [snap.FIFREEZE, snap.FITHAW]
    calls.clear()
    with pytest.raises(RuntimeError), frozen(tmp_path):
        raise RuntimeError("reading failed")
    assert calls == [snap.FIFREEZE, snap.FITHAW]

    def unsupported(fd: int, request: int, arg: int) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    with (
        pytest.raises(snap.SnapshotError, match="cannot freeze"),
        snap.ioctl_freezer(unsupported)(tmp_path),
    ):
        pass


def test_a_snapshot_whose_read_fails_is_thawed_and_leaves_the_epoch(tmp_path):
    calls: list[int] = []
    mount = tmp_path / "data"
    target = snap.SnapshotManager(
        mount, freezer=snap.ioctl_freezer(lambda fd, r, a: calls.append(r)),
        spool=tmp_path / "spool", console=Console(), is_mounted=lambda p: True, max_bytes=1000,
    )  # fmt: skip
    mount.mkdir()
    target.install(keys(0))
    (mount / "big").write_bytes(b"z" * 5000)
    with pytest.raises(snap.SnapshotError, match="more than a snapshot may"):
        target.snapshot()
    assert calls == [snap.FIFREEZE, snap.FITHAW]
    assert snap.read_local_epoch(mount, LEASE) == 0


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "snapshot_chunk", "chunk": "zz"}, "chunk must be a chunk id"),
        ({"op": "snapshot_chunk", "chunk": "0" * 64}, "no such chunk"),
        ({"op": "snapshot_manifest"}, "no such snapshot"),
        ({"op": "restore_manifest", "epoch": -1, "data": "AA=="}, "epoch"),
        ({"op": "restore_manifest", "epoch": 1, "data": "***"}, "not base64"),
        ({"op": "restore_manifest", "epoch": 1, "data": "A" * 400_000}, "at most"),
        ({"op": "restore_chunk", "chunk": "0" * 64, "data": "AA=="}, "restore_manifest first"),
        ({"op": "restore_finish"}, "restore_manifest first"),
    ],
)
def test_bad_snapshot_requests_get_clear_errors(tmp_path, request_, error):
    mount = tmp_path / "data"
    agent = make_agent(tmp_path, manager(mount, tmp_path / "spool"))
    agent.install_snapshot_keys(keys(1))
    answer = agent.handle(request_)
    assert answer["ok"] is False and error in answer["error"]


def test_without_a_disk_or_keys_snapshots_are_refused_and_services_not_held(tmp_path):
    agent = make_agent(tmp_path, snap.SnapshotManager(None, spool=tmp_path / "spool"))
    answer = agent.handle({"op": "snapshot"})
    assert answer["ok"] is False and "declares no disk" in answer["error"]
    assert agent.snapshots.ready()
    keyless = make_agent(tmp_path, manager(tmp_path / "data", tmp_path / "spool"))
    answer = keyless.handle({"op": "snapshot"})
    assert answer["ok"] is False and "no snapshot keys" in answer["error"]
    assert keyless.snapshots.status() == {
        "restore_needed": False, "required_epoch": None, "epoch": None,
    }  # fmt: skip


def test_keys_are_not_judged_on_a_volume_that_is_not_mounted(tmp_path):
    mount = tmp_path / "data"
    mount.mkdir()
    unmounted = snap.SnapshotManager(
        mount, freezer=snap.no_freeze, spool=tmp_path / "spool", console=Console(),
        is_mounted=lambda path: False,
    )  # fmt: skip
    unmounted.hold()
    with pytest.raises(snap.SnapshotError, match="not mounted"):
        unmounted.install(keys(0))
    assert not unmounted.ready() and not (mount / snap.RESERVED).exists()


def test_a_snapshot_sealed_before_a_rekey_restores_with_the_previous_key(tmp_path):
    host, mount = snapshotted(tmp_path)  # sealed under key version 1
    rekeyed = snap.SnapshotKeys.from_root(
        bytes(32), chain_id=31337, registry=REGISTRY, lease_id=LEASE, key_version=2,
        required_epoch=1,
    )  # fmt: skip
    data = base64.b64encode(host.manifests[1]).decode()
    restoring(tmp_path / "new-key-only", host)
    host.agent.snapshots.keys = None
    host.agent.install_snapshot_keys(rekeyed)
    refused = host.ask({"op": "restore_manifest", "epoch": 1, "data": data})
    assert refused["ok"] is False and "key version 2" in refused["error"]
    restoring(tmp_path / "with-previous", host)
    host.agent.snapshots.keys = None
    host.agent.install_snapshot_keys(dataclasses.replace(rekeyed, previous=(keys(1),)))
    assert host.restore(1)["ok"] is True
    target = tmp_path / "with-previous" / "dst" / "data"
    assert tree(target) == tree(mount)


def test_epochs_are_numbered_above_what_the_holders_named_but_not_floored_by_it(tmp_path):
    """A rekeyed guest whose holders keep the old version's epoch 40 (a record it cannot
    check): it still uses its fresh volume (no floor), and its first snapshot is epoch 41,
    which the holders and the backend accept, not epoch 1, which they refuse."""
    import dataclasses

    mount = tmp_path / "n" / "data"
    agent = make_agent(tmp_path / "n", manager(mount, tmp_path / "n" / "spool"))
    assert (
        agent.install_snapshot_keys(dataclasses.replace(keys(0), number_above=40))["restore_needed"]
        is False
    )
    fill(mount)
    assert Host(agent).snapshot()["epoch"] == 41
    with pytest.raises(snap.SnapshotError, match="number_above"):
        dataclasses.replace(keys(0), number_above=2**40 + 1)


def test_the_manifest_object_lists_its_chunks_in_clear_and_the_guest_holds_it_to_that(tmp_path):
    """The epoch record signs the manifest object's SHA-256, and the object lists its chunk ids
    in clear: the backend (cvm.api_models.snapshot_manifest_chunks, the same bytes) keeps a
    record only once those chunks are stored. The list is bound into the manifest's AEAD:
    a host that edits it gets a manifest the guest refuses."""
    from cvm.api_models import snapshot_manifest_chunks

    host, _ = snapshotted(tmp_path)
    (epoch,) = host.manifests
    sealed = host.manifests[epoch]
    listed = snapshot_manifest_chunks(sealed)
    assert listed == list(dict.fromkeys(listed)) and set(listed) == set(host.objects)
    keys_ = keys(1)
    assert snap.open_manifest(keys_, epoch, sealed).distinct_chunks() == tuple(listed)
    count = len(listed)
    shorter = (snap.MANIFEST_MAGIC + (count - 1).to_bytes(4, "big")
               + sealed[12 + 32:])  # the first id left out  # fmt: skip
    swapped = sealed[:12] + bytes(32) + sealed[12 + 32 :]
    for bad in (shorter, swapped, sealed[12 + 32 * count :], b"CVMSNAP1" + sealed[8:]):
        with pytest.raises(snap.SnapshotError):
            snap.open_manifest(keys_, epoch, bad)
