"""Snapshots in a real guest under QEMU (TCG) with a 1 GiB encrypted volume: the guest's own
guest/snapshot.py (its Python, Debian's cryptography) freezes the real ext4 on dm-crypt with
FIFREEZE, tars, chunks and seals it; the host takes the chunks and manifest (ciphertext only);
the volume is wiped (the file deleted, the guest relaunched on a fresh one); the new guest
refuses nothing it should accept and restores the snapshot; the data reads back, and an older
epoch than the holders' is refused on the console.

The keys come from a root key the test makes (the `keys` op of the threshold key service is
not what this test is about): it goes to the guest over the attested SSH channel."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.images import Image, measure
from node_agent.launcher.base import GuestSpec
from node_agent.launcher.qemu import QemuLauncher
from tests.e2e.test_volume_guest import (
    BINDING,
    CHAIN_ID,
    REGISTRY,
    Guest,
    _console,
    boot_and_release,
    launcher,  # noqa: F401
    shell_quote,
    volume_state,
)
from tests.fixtures.images import guest_image, image_store  # noqa: F401

pytestmark = pytest.mark.e2e

LEASE = 61  # the volume test's lease (its launcher fixture is for that lease)
DISK_KEY = os.urandom(32)
ROOT = os.urandom(32)

# Runs in the guest: the guest's own snapshot module, keys from the root key on stdin.
IN_GUEST = """
import base64, json, sys, time
from pathlib import Path
sys.path.insert(0, "/usr/lib/cvm")
import snapshot as snap
request = json.load(sys.stdin)
keys = snap.SnapshotKeys.from_root(
    bytes.fromhex(request["root"]), chain_id=request["chain_id"],
    registry=bytes.fromhex(request["registry"]), lease_id=request["lease_id"], key_version=1,
    required_epoch=request["required"])
manager = snap.SnapshotManager(Path("/data"), spool=Path("/run/cvm/snapshot-test"))
answer = {"install": manager.install(keys)}
started = time.monotonic()
if request["do"] == "snapshot":
    taken = manager.snapshot()
    answer["seconds"] = time.monotonic() - started
    answer["taken"] = taken
    answer["chunks"] = {c: base64.b64encode(manager.chunk(c)).decode() for c in taken["chunks"]}
    answer["manifest"] = base64.b64encode(manager.manifest()[1]).decode()
elif request["do"] == "restore":
    try:
        need = manager.restore_manifest(request["epoch"], base64.b64decode(request["manifest"]))
        for chunk_id in need:
            manager.restore_chunk(chunk_id, base64.b64decode(request["chunks"][chunk_id]))
        answer["finished"] = manager.restore_finish()
        answer["seconds"] = time.monotonic() - started
    except snap.SnapshotError as exc:
        answer["refused"] = str(exc)
answer["status"] = manager.status()
print(json.dumps(answer))
"""

WRITE = (
    "import os\n"
    "os.makedirs('/data/app/db', exist_ok=True)\n"
    "with open('/data/app/db/blob', 'wb') as f:\n"
    "    f.write(os.urandom(3 * 2**20)); os.fsync(f.fileno())\n"
    "with open('/data/app/hello', 'w') as f: f.write('still here\\n'); os.fsync(f.fileno())\n"
    "os.symlink('db/blob', '/data/app/current')\n"
)
READ = (
    "cd /data && find app -print0 | sort -z | xargs -0 -n1 sh -c"
    ' \'if [ -L "$0" ]; then echo "$0 -> $(readlink "$0")";'
    ' elif [ -f "$0" ]; then sha256sum "$0"; else echo "$0/"; fi\''
)


@pytest.fixture(scope="module")
def spec(guest_image: Image) -> GuestSpec:  # noqa: F811
    return GuestSpec(LEASE, 1, 512, 1, measure(guest_image), guest_image.image_id, BINDING)


def in_guest(guest: Guest, request: dict) -> dict:
    command = f"python3 -c {shell_quote(IN_GUEST)}"
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(guest.key), "-p", str(guest.port),
         "-o", f"UserKnownHostsFile={guest.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
         "root@127.0.0.1", command],
        input=json.dumps(request), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    *console, last = done.stdout.strip().splitlines()
    return {**json.loads(last), "console": console}


def keys_request(required: int, do: str, **more: object) -> dict:
    return {"root": ROOT.hex(), "chain_id": CHAIN_ID, "registry": REGISTRY[2:],
            "lease_id": LEASE, "required": required, "do": do, **more}  # fmt: skip


@pytest.fixture(scope="module")
def snapshot(
    launcher: QemuLauncher,  # noqa: F811
    spec: GuestSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict, str]]:
    guest = boot_and_release(launcher, spec, tmp_path_factory.mktemp("renter"), 0, DISK_KEY)
    assert volume_state(launcher)["state"] == "open", _console(launcher)
    written = guest.ssh(f"python3 -c {shell_quote(WRITE)} && sync && {READ}")
    assert written.returncode == 0, written.stderr
    taken = in_guest(guest, keys_request(0, "snapshot"))
    yield taken, written.stdout
    launcher.stop(LEASE)


def test_the_guest_freezes_tars_and_seals_its_disk(snapshot):
    taken, _ = snapshot
    assert taken["install"] == {"restore_needed": False, "required_epoch": 0, "epoch": 0}
    assert taken["taken"]["epoch"] == 1 and taken["status"]["epoch"] == 1
    objects = {c: base64.b64decode(d) for c, d in taken["chunks"].items()}
    assert len(objects) >= 6  # 3 MiB of random data in 512 KiB chunks
    assert all(hashlib.sha256(data).hexdigest() == c for c, data in objects.items())
    manifest = base64.b64decode(taken["manifest"])
    assert hashlib.sha256(manifest).hexdigest() == taken["taken"]["manifest_id"]
    assert not any(b"still here" in data for data in [*objects.values(), manifest])
    print(f"snapshot of {taken['taken']['size']} bytes in the TCG guest: {taken['seconds']:.2f} s")


def test_a_wiped_volume_is_restored_and_an_older_epoch_refused(
    snapshot,
    launcher: QemuLauncher,  # noqa: F811
    spec: GuestSpec,
    tmp_path: Path,
):
    taken, listing = snapshot
    launcher.stop(LEASE)
    launcher.volumes.path(LEASE).unlink()  # the node lost the disk (or the lease moved)
    guest = boot_and_release(launcher, spec, tmp_path, 0, DISK_KEY)
    volume = volume_state(launcher)
    assert volume["formatted_at_boot"] is True, _console(launcher)
    assert "app" not in guest.ssh("ls /data").stdout
    # The holders saw epoch 2: the snapshot of epoch 1 is refused, nothing is written.
    stale = in_guest(guest, keys_request(2, "restore", epoch=1, manifest=taken["manifest"],
                                         chunks=taken["chunks"]))  # fmt: skip
    assert "older than the required 2" in stale["refused"]
    assert stale["status"]["restore_needed"] is True
    assert "cvm-guest: REFUSING stale state (epoch 1 < required 2)" in stale["console"]
    assert "app" not in guest.ssh("ls /data").stdout
    # The holders saw epoch 1: restored.
    restored = in_guest(guest, keys_request(1, "restore", epoch=1, manifest=taken["manifest"],
                                            chunks=taken["chunks"]))  # fmt: skip
    assert restored["install"]["restore_needed"] is True
    assert restored["finished"]["epoch"] == 1, restored
    print(f"restore in the TCG guest: {restored['seconds']:.2f} s")
    assert restored["status"] == {"restore_needed": False, "required_epoch": 1, "epoch": 1}
    again = guest.ssh(READ)
    assert again.returncode == 0 and again.stdout == listing
    assert guest.ssh("cat /data/app/hello").stdout == "still here\n"
