"""The renter's side of the encrypted volume: the disk key made once per lease and kept
(0600) beside the seq ledger, released with every message to the lease's guest, and what
the guest says of its volume (formatted or opened, integrity errors) read back and judged."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from cvm.attestation.release import GuestIdentity, ReleaseRefused, StatusRefused, seal
from cvm.cli.guest import read_secrets
from cvm.cli.plumbing import UsageError
from cvm.secret_release import (
    DISK_KEY,
    DiskKeys,
    guest_status_with_volume,
    release,
    volume_view,
)
from guest import agent as guest_agent
from guest import volume

CHAIN_ID, REGISTRY, LEASE = 31337, "0x" + "5c" * 20, 9
RENTER = Account.create()


class OpenedVolume(volume.Volume):
    """A volume this boot formatted (or opened), as the agent's status reports it."""

    def __init__(self, formatted: bool, errors: int = 0) -> None:
        super().__init__(
            lambda args, stdin, timeout: volume.Completed(0, "", ""), find=lambda: None
        )
        self.answer = {"state": "open", "formatted_at_boot": formatted, "integrity_errors": errors}
        self.keys: list[bytes] = []

    def status(self) -> dict:
        return dict(self.answer)

    def open(self, key: bytes, device: Path, mountpoint: Path) -> str:
        self.keys.append(key)
        return "formatted"


def make_agent(tmp_path: Path, disk: volume.Volume) -> guest_agent.GuestAgent:
    agent = guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=tmp_path / "s", ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no", device=tmp_path / "no", volume=disk,
        find_volume=lambda: Path("/dev/vdb"), workload_file=tmp_path / "no-workload",
    )  # fmt: skip
    assert agent.handle({"op": "bind", "chain_id": CHAIN_ID, "registry": REGISTRY,
                         "lease_id": LEASE, "renter": RENTER.address})["ok"]  # fmt: skip
    return agent


def identity(agent: guest_agent.GuestAgent, lease_id: int = LEASE) -> GuestIdentity:
    answer = agent.handle({"op": "attest", "nonce": 0})
    return GuestIdentity.from_guest_key(
        agent.keys.public, bytes.fromhex(answer["report_data"]), bytes(48), chain_id=CHAIN_ID,
        registry=REGISTRY, lease_id=lease_id, renter=RENTER.address,
    )  # fmt: skip


def test_one_key_per_lease_made_once_and_kept_private(tmp_path):
    agent = make_agent(tmp_path, OpenedVolume(True))
    guest = identity(agent)
    keys = DiskKeys(tmp_path / "state" / "disk-keys.json")
    first = keys.key_for(guest)
    assert len(first) == 32
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    # Released again (a new seq, a relaunched guest with a new guest key): the same key.
    relaunched = identity(make_agent(tmp_path / "again", OpenedVolume(False)))
    assert DiskKeys(keys.path).key_for(relaunched) == first
    # Another lease has its own.
    other = GuestIdentity.from_guest_key(
        agent.keys.public, guest.report_data, bytes(48), chain_id=CHAIN_ID, registry=REGISTRY,
        lease_id=LEASE + 1, renter=RENTER.address,
    )  # fmt: skip
    assert keys.key_for(other) != first
    assert json.loads(keys.path.read_text())[f"{CHAIN_ID}:{REGISTRY}:{LEASE}"]["key"] == first.hex()
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600


def test_a_damaged_key_file_is_never_replaced_by_a_fresh_key(tmp_path):
    guest = identity(make_agent(tmp_path, OpenedVolume(True)))
    keys = DiskKeys(tmp_path / "disk-keys.json")
    keys.path.write_text("{not json")
    with pytest.raises(ReleaseRefused, match="damaged"):
        keys.key_for(guest)
    keys.path.write_text(json.dumps({f"{CHAIN_ID}:{REGISTRY}:{LEASE}": {"key": "abcd"}}))
    with pytest.raises(ReleaseRefused, match="damaged"):
        keys.key_for(guest)
    assert "abcd" in keys.path.read_text()


def test_the_released_key_opens_the_volume_in_the_guest(tmp_path):
    disk = OpenedVolume(True)
    agent = make_agent(tmp_path, disk)
    guest = identity(agent)
    key = DiskKeys(tmp_path / "disk-keys.json").key_for(guest)
    sealed = seal(guest, RENTER, seq=1, secrets={DISK_KEY: key})
    assert agent.handle({"op": "secrets", **sealed.to_json_dict()})["installed"] == [DISK_KEY]
    for _ in range(200):
        if disk.keys:
            break
        import time

        time.sleep(0.01)
    assert disk.keys == [key]
    assert not (tmp_path / "s" / DISK_KEY).exists()


def test_the_disk_key_is_the_clients_own_never_a_users_file(tmp_path):
    given = tmp_path / "k"
    given.write_bytes(b"x" * 32)
    with pytest.raises(UsageError, match="disk key"):
        read_secrets([f"{DISK_KEY}={given}"])
    with pytest.raises(ReleaseRefused, match="made and kept by this client"):
        release(None, None, LEASE, renter=RENTER, secrets={DISK_KEY: b"x" * 32})  # type: ignore[arg-type]


def test_the_status_over_ssh_says_formatted_or_opened(tmp_path):
    agent = make_agent(tmp_path, OpenedVolume(formatted=False, errors=2))
    guest = identity(agent)

    def run(argv: list[str]) -> str:
        return json.dumps(agent.handle_local({"op": "status", "challenge": argv[-1]})) + "\n"

    seq, seen = guest_status_with_volume(guest, run)
    assert seq == 0
    assert seen == {"state": "open", "formatted_at_boot": False, "integrity_errors": 2}


@pytest.mark.parametrize(
    "bad",
    [{"state": "mounted", "formatted_at_boot": False, "integrity_errors": 0},
     {"state": "open", "formatted_at_boot": "yes", "integrity_errors": 0},
     {"state": "open", "formatted_at_boot": False, "integrity_errors": -1},
     {"state": "open", "formatted_at_boot": False, "integrity_errors": True}, "open"],
)  # fmt: skip
def test_a_malformed_volume_status_is_refused(bad):
    with pytest.raises(StatusRefused, match="volume"):
        volume_view({"volume": bad})
    assert volume_view({}) is None


def test_a_volume_formatted_again_by_a_later_guest_is_a_warning(tmp_path):
    keys = DiskKeys(tmp_path / "disk-keys.json")
    first = identity(make_agent(tmp_path / "1", OpenedVolume(True)))
    keys.key_for(first)
    formatted = {"state": "open", "formatted_at_boot": True, "integrity_errors": 0}
    assert keys.note_volume(first, formatted) is None  # the first boot formats: expected
    assert keys.note_volume(first, formatted) is None  # asked again: the same guest
    later = identity(make_agent(tmp_path / "2", OpenedVolume(False)))
    opened = {"state": "open", "formatted_at_boot": False, "integrity_errors": 0}
    assert keys.note_volume(later, opened) is None
    # The host wiped the header so that a relaunched guest would start afresh: told.
    wiped = identity(make_agent(tmp_path / "3", OpenedVolume(True)))
    warning = keys.note_volume(wiped, formatted)
    assert warning is not None and "formatted again" in warning
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600


def test_an_image_whose_workload_has_a_disk_is_known_from_its_manifest(tmp_path, monkeypatch):
    from cvm.cli.guest import image_workload_disk
    from cvm.images import ImageStore
    from tests.fixtures.images import synthetic_image

    store = ImageStore(tmp_path / "images")
    monkeypatch.setenv("CVM_IMAGE_DIR", str(store.root))
    plain = synthetic_image(store, tmp_path, "plain")
    assert image_workload_disk(None, plain.image_id) is False
    manifest = plain.directory / "manifest.json"
    data = json.loads(manifest.read_text())
    data["workload"] = {"name": "kv", "disk": {"mount": "/var/lib/kv"}}
    manifest.write_text(json.dumps(data))  # the id covers kernel, initrd, cmdline only
    assert image_workload_disk(None, plain.image_id) is True
    assert image_workload_disk(None, "ab" * 32) is False  # unknown here, no backend


def test_secrets_status_says_formatted_or_opened_and_integrity_errors():
    from cvm.cli.guest import _volume_human

    opened = {"state": "open", "formatted_at_boot": False, "integrity_errors": 0}
    assert _volume_human(opened, None) == "\ndata volume: opened"
    fresh = {**opened, "formatted_at_boot": True}
    assert "formatted (new and empty)" in _volume_human(fresh, None)
    tampered = {**opened, "integrity_errors": 3}
    assert "3 block(s) failed their integrity check" in _volume_human(tampered, None)
    failed = {"state": "error", "formatted_at_boot": False, "integrity_errors": 0,
              "error": "the disk key does not open this volume\x1b[2J"}  # fmt: skip
    shown = _volume_human(failed, None)
    assert "not opened: the disk key does not open" in shown and "\x1b" not in shown
    assert "formatted again" in _volume_human(fresh, "the volume was formatted again")
    assert _volume_human(None, None) == ""
    refused_later = {**opened, "error": "a different disk key than the one that opened it"}
    assert "then refused: a different disk key" in _volume_human(refused_later, None)


def test_attack_two_clients_releasing_at_once_keep_both_keys(tmp_path, monkeypatch):
    """Two `cvm` processes release at the same time (two leases): the second must not write
    back a file read before the first saved its new key (the first lease's guest would get a
    key nobody keeps: its volume is lost at the next relaunch)."""
    import threading

    from cvm import secret_release

    agent = make_agent(tmp_path, OpenedVolume(True))
    one, two = identity(agent), identity(agent, lease_id=LEASE + 1)
    path = tmp_path / "disk-keys.json"
    inside, let_go = threading.Event(), threading.Event()
    real = secret_release.token.token_bytes

    def slow_token(size: int) -> bytes:
        if threading.current_thread().name == "first":
            inside.set()  # the first client has read the file and is making its key
            let_go.wait(timeout=30)
        return real(size)

    monkeypatch.setattr(secret_release.token, "token_bytes", slow_token)
    keys: dict[str, bytes] = {}
    first = threading.Thread(
        target=lambda: keys.__setitem__("one", DiskKeys(path).key_for(one)), name="first"
    )
    first.start()
    assert inside.wait(timeout=30)
    second = threading.Thread(target=lambda: keys.__setitem__("two", DiskKeys(path).key_for(two)))
    second.start()
    second.join(timeout=1)  # with a lock it waits for the first; without one it is done
    let_go.set()
    first.join(timeout=30)
    second.join(timeout=30)
    saved = json.loads(path.read_text())
    assert saved[f"{CHAIN_ID}:{REGISTRY}:{LEASE}"]["key"] == keys["one"].hex()
    assert saved[f"{CHAIN_ID}:{REGISTRY}:{LEASE + 1}"]["key"] == keys["two"].hex()
