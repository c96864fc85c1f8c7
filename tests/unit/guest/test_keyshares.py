"""The threshold key end to end off the VM: the renter's client (cvm.key_release) makes and
splits a root key, signs the manifest and seals a share to each holder; stand-in holders
open theirs and release them to the guest agent (HPKE auth mode), whose `keys` op
(guest/keyshares.py) rebuilds the key only under the renter's manifest, from t good shares.

Tests named `..._refused` are attacks: a host or a single holder trying to get a key used
that is not the renter's, or to feed the guest another version's or lease's share."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from cvm import guest_eip712
from cvm import key_release as kr
from guest import agent as guest_agent
from guest import keyshares
from guest import volume as data_volume

CHAIN_ID = 31337
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
LEASE = 7
RENTER = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)
SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)


def raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class StandInHolder:
    """A key holder as far as the guest sees one: its X25519 key, its deposit opened."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.private = X25519PrivateKey.generate()
        self.public = raw_public(self.private)

    def share_of(self, deposit: kr.KeyDeposit) -> dict[str, Any]:
        for holder, enc, ciphertext in deposit.shares:
            if holder.lower() == self.address.lower():
                return kr.open_share(self.private, enc, ciphertext, deposit.manifest_hash)
        raise AssertionError("no share for this holder")

    def release(
        self, guest_key: bytes, report_data: bytes, share: dict[str, Any], *,
        sender: X25519PrivateKey | None = None, claimed: bytes | None = None, **overrides: Any,
    ) -> dict[str, str]:  # fmt: skip
        """The share sealed to the guest (auth mode, as the holder's own key or `sender`)."""
        plain = json.dumps({**share, "epoch": 0, "snapshot": None, **overrides}).encode()
        recipient = KEMKey.from_pyca_cryptography_key(X25519PublicKey.from_public_bytes(guest_key))
        sks = KEMKey.from_pyca_cryptography_key(sender or self.private)
        enc, context = SUITE.create_sender_context(recipient, info=keyshares.KEYSHARE_INFO, sks=sks)
        return {
            "enc": base64.b64encode(enc).decode(),
            "ciphertext": base64.b64encode(context.seal(plain, aad=report_data)).decode(),
            "sender": (claimed or self.public).hex(),
        }


HOLDERS = [StandInHolder("0x" + f"{i:02x}" * 20) for i in (0xA1, 0xA2, 0xA3)]


def deposit_for(
    *, threshold: int = 2, key_version: int = 1, secrets: dict | None = None,
    renter: Any = RENTER, lease_id: int = LEASE, holders: list | None = None, **kwargs: Any,
) -> tuple[kr.KeyDeposit, bytes]:  # fmt: skip
    deposit, root = kr.make_deposit(
        chain_id=CHAIN_ID, registry=REGISTRY, lease_id=lease_id, key_version=key_version,
        threshold=threshold, renter=renter, secrets=secrets or {},
        holders=[kr.Holder(h.address, h.public) for h in holders or HOLDERS], **kwargs,
    )  # fmt: skip
    value = root.value
    root.forget()
    return deposit, value


class FakeVolume:
    def __init__(self, opens_with: bytes | None = None) -> None:
        self.opens_with = opens_with
        self.opened: list[bytes] = []
        self.calls: list[tuple[list[str], bytes | None]] = []

    def open(self, key: bytes, device: Path, mountpoint: Path) -> str:
        if self.opens_with is not None and key != self.opens_with:
            raise data_volume.VolumeError("the disk key does not open this volume")
        self.opened.append(key)
        return "opened"

    def runner(self, args, stdin, timeout):  # type: ignore[no-untyped-def]
        self.calls.append((list(args), stdin))
        return data_volume.Completed(0, "", "")

    def status(self) -> dict:
        return {"state": "open", "formatted_at_boot": False, "integrity_errors": 0}


@pytest.fixture
def agent(tmp_path: Path) -> guest_agent.GuestAgent:
    agent = guest_agent.GuestAgent(
        guest_agent.GuestKeys(),
        secrets_dir=tmp_path / "secrets",
        ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no-tsm",
        device=tmp_path / "no-device",
        volume=FakeVolume(),  # type: ignore[arg-type]
        find_volume=lambda: tmp_path / "vdb",
        workload_file=tmp_path / "no-workload.json",
    )
    bind = {"op": "bind", "chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE,
            "renter": RENTER.address}  # fmt: skip
    assert agent.handle(bind)["ok"]
    return agent


def attest(agent: guest_agent.GuestAgent, nonce: int = 0) -> bytes:
    answer = agent.handle({"op": "attest", "nonce": nonce})
    assert answer["ok"], answer
    return bytes.fromhex(answer["report_data"])


def hpke_key(agent: guest_agent.GuestAgent) -> bytes:
    return agent.keys.public[:32]


def releases(agent, deposit, report_data, which=(0, 1), **overrides) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        HOLDERS[i].release(hpke_key(agent), report_data, HOLDERS[i].share_of(deposit), **overrides)
        for i in which
    ]


def signed_epoch(root: bytes, epoch: int, snapshot: bytes, *, lease_id: int = LEASE,
                 key_version: int = 1) -> dict[str, Any]:  # fmt: skip
    """A holder's epoch fields for a record the lease's epoch key signed (what it keeps)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = kr.hkdf(root, b"cvm.epoch.v1")
    message = keyshares.epoch_message(
        CHAIN_ID, bytes.fromhex(REGISTRY[2:]), lease_id, key_version, epoch, snapshot
    )
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    return {"epoch": epoch, "snapshot": snapshot.hex(),
            "epoch_signature": base64.b64encode(signature).decode()}  # fmt: skip


def keys_op(agent, deposit, rel, **overrides) -> dict:  # type: ignore[no-untyped-def]
    answer = agent.handle({**deposit.guest_request(rel), **overrides})
    return answer


def wait_volume(agent: guest_agent.GuestAgent) -> None:
    for thread in __import__("threading").enumerate():
        if thread.name == "cvm-volume":
            thread.join(10)


# --- Shamir and the derivations ----------------------------------------------------------
@pytest.mark.parametrize(("t", "n"), [(1, 1), (1, 3), (2, 3), (3, 3), (3, 5), (5, 7)])
def test_any_t_of_n_shares_rebuild_the_root_and_fewer_do_not(t, n):
    root = kr.new_root()
    shares = kr.split_root(root, t, n)
    assert len(shares) == n and all(len(s) == 32 for s in shares)
    indexed = list(enumerate(shares, start=1))
    commitment = kr.root_commitment(root)
    for subset in itertools.combinations(indexed, t):
        assert keyshares.combine(list(subset)) == root == kr.combine_shares(list(subset))
    if t > 1:
        for subset in itertools.combinations(indexed, t - 1):
            wrong = keyshares.combine(list(subset))
            assert wrong != root
            assert keyshares.derive(wrong).commitment != commitment


def test_the_guest_derives_what_the_client_derives():
    root = kr.new_root()
    keys = keyshares.derive(root)
    assert keys.commitment == kr.root_commitment(root)
    assert keys.epoch_key == kr.epoch_public_key(root)
    assert keys.disk == kr.hkdf(root, b"cvm.disk.v1")
    assert keys.snapshot == kr.hkdf(root, b"cvm.snapshot.v1")
    assert keys.snapshot_nonce == kr.hkdf(root, b"cvm.snapshot-nonce.v1")
    assert keys.bundle == kr.hkdf(root, b"cvm.bundle.v1")
    assert len({keys.disk, keys.snapshot, keys.snapshot_nonce, keys.bundle, keys.epoch_seed}) == 5


def test_the_guests_manifest_digest_is_the_sdks_eip712_digest():
    deposit, _ = deposit_for(threshold=2)
    manifest = keyshares.Manifest.parse(deposit.manifest.to_json())
    domain = guest_agent.domain_separator(CHAIN_ID, bytes.fromhex(REGISTRY[2:]))
    guest_digest = guest_agent.typed_digest(domain, manifest.struct_hash())
    assert guest_digest == deposit.manifest_hash == deposit.manifest.digest(CHAIN_ID, REGISTRY)
    message = deposit.manifest.message(CHAIN_ID, REGISTRY)
    assert guest_eip712.recover(message, deposit.signature) == RENTER.address
    # Every field counts: another threshold is another digest.
    other = keyshares.Manifest.parse({**deposit.manifest.to_json(), "threshold": 3})
    assert guest_agent.typed_digest(domain, other.struct_hash()) != guest_digest


def test_each_holder_opens_only_its_own_share_and_only_for_this_manifest():
    deposit, root = deposit_for()
    shares = [h.share_of(deposit) for h in HOLDERS]
    assert [s["index"] for s in shares] == [1, 2, 3]
    assert {s["key_version"] for s in shares} == {1} and {s["lease_id"] for s in shares} == {7}
    _holder, enc, ciphertext = deposit.shares[0]
    with pytest.raises(Exception):  # noqa: B017 - pyhpke's own error type
        kr.open_share(HOLDERS[1].private, enc, ciphertext, deposit.manifest_hash)
    with pytest.raises(Exception):  # noqa: B017
        kr.open_share(HOLDERS[0].private, enc, ciphertext, bytes(32))
    pair = [(s["index"], base64.b64decode(s["share"])) for s in shares[:2]]
    assert kr.combine_shares(pair) == root


def test_the_client_refuses_bad_thresholds_and_reserved_names():
    with pytest.raises(kr.KeyServiceError, match="threshold must be 1 to 3"):
        deposit_for(threshold=4)
    with pytest.raises(kr.KeyServiceError, match="threshold must be 1 to 3"):
        deposit_for(threshold=0)
    with pytest.raises(kr.KeyServiceError, match=r"cvm\.\* names"):
        deposit_for(secrets={"cvm.disk_key": b"x"})
    with pytest.raises(kr.KeyServiceError, match="named twice"):
        deposit_for(holders=[HOLDERS[0], HOLDERS[0]], threshold=1)


def test_an_exported_root_key_file_is_private_and_not_overwritten(tmp_path):
    path = tmp_path / "root.json"
    kr.export_root(path, LEASE, 2, b"\x05" * 32)
    assert path.stat().st_mode & 0o777 == 0o600
    assert kr.read_root(path, LEASE) == (2, b"\x05" * 32)
    with pytest.raises(kr.KeyServiceError, match="exists"):
        kr.export_root(path, LEASE, 3, b"\x06" * 32)
    with pytest.raises(kr.KeyServiceError, match="root key of lease 7"):
        kr.read_root(path, 8)


# --- the guest's keys op -----------------------------------------------------------------
def test_two_of_three_holders_release_the_key_the_guest_installs_it(agent, tmp_path):
    deposit, root = deposit_for(secrets={"db.password": b"hunter2\n", "api-token": b"t"})
    report_data = attest(agent)
    first = releases(agent, deposit, report_data, which=(0,))
    answer = keys_op(agent, deposit, first)
    assert answer == {"ok": True, "shares": 1, "threshold": 2, "key_version": 1,
                      "installed": False, "required_epoch": None}  # fmt: skip
    assert not (tmp_path / "secrets" / "db.password").exists()
    second = HOLDERS[2].release(
        hpke_key(agent), report_data, HOLDERS[2].share_of(deposit),
        **signed_epoch(root, 4, b"\xab" * 32),
    )  # fmt: skip
    answer = keys_op(agent, deposit, [*first, second])
    assert answer["ok"] and answer["installed"] is True
    assert answer["shares"] == 2 and answer["required_epoch"] == 4
    secret = tmp_path / "secrets" / "db.password"
    assert secret.read_bytes() == b"hunter2\n" and secret.stat().st_mode & 0o777 == 0o600
    wait_volume(agent)
    assert agent.volume.opened == [kr.hkdf(root, b"cvm.disk.v1")]  # type: ignore[attr-defined]
    installed = agent.key_shares.installed
    assert installed is not None and installed.snapshot == b"\xab" * 32
    assert installed.keys.snapshot == kr.hkdf(root, b"cvm.snapshot.v1")
    # Idempotent: the same request again installs nothing twice.
    again = keys_op(agent, deposit, [*first, second])
    assert again["installed"] is True and again["required_epoch"] == 4
    wait_volume(agent)
    assert len(agent.volume.opened) == 1  # type: ignore[attr-defined]


def test_one_holder_alone_gets_the_guest_nothing(agent, tmp_path):
    deposit, _ = deposit_for(threshold=2)
    report_data = attest(agent)
    one = releases(agent, deposit, report_data, which=(1,))
    answer = keys_op(agent, deposit, one + one)  # the same share twice is one share
    assert answer["ok"] and answer["installed"] is False and answer["shares"] == 1


def test_a_share_sealed_by_another_key_than_the_holders_is_refused(agent):
    """The host (or anyone) seals a share of its choosing, naming a holder's key as sender."""
    deposit, _ = deposit_for(threshold=2)
    report_data = attest(agent)
    forger = X25519PrivateKey.generate()
    good = HOLDERS[0].release(hpke_key(agent), report_data, HOLDERS[0].share_of(deposit))
    fake = HOLDERS[1].release(
        hpke_key(agent), report_data, {**HOLDERS[1].share_of(deposit),
                                       "share": base64.b64encode(b"\x01" * 32).decode()},
        sender=forger,
    )  # fmt: skip
    answer = keys_op(agent, deposit, [good, fake])
    assert answer["ok"] and answer["installed"] is False and answer["shares"] == 1
    # Naming a key that is no holder's at all is refused too.
    stranger = HOLDERS[1].release(
        hpke_key(agent), report_data, HOLDERS[1].share_of(deposit), sender=forger,
        claimed=raw_public(forger),
    )  # fmt: skip
    assert keys_op(agent, deposit, [good, stranger])["shares"] == 1


def test_a_holder_releasing_another_holders_index_is_refused(agent):
    deposit, _ = deposit_for(threshold=2)
    report_data = attest(agent)
    stolen = {**HOLDERS[0].share_of(deposit)}  # holder 2 got hold of holder 1's share
    bad = HOLDERS[1].release(hpke_key(agent), report_data, stolen)
    good = HOLDERS[0].release(hpke_key(agent), report_data, HOLDERS[0].share_of(deposit))
    assert keys_op(agent, deposit, [good, bad])["shares"] == 1


def test_a_share_of_another_key_version_or_lease_is_refused(agent):
    deposit, _ = deposit_for(threshold=2)
    report_data = attest(agent)
    good = HOLDERS[0].release(hpke_key(agent), report_data, HOLDERS[0].share_of(deposit))
    share = HOLDERS[1].share_of(deposit)
    for wrong in ({"key_version": 2}, {"lease_id": LEASE + 1}):
        bad = HOLDERS[1].release(hpke_key(agent), report_data, {**share, **wrong})
        assert keys_op(agent, deposit, [good, bad])["shares"] == 1
    # An older version's real share under the new manifest: the version is in the share.
    old_deposit, _ = deposit_for(threshold=2, key_version=1)
    new_deposit, _ = deposit_for(threshold=2, key_version=2)
    old = releases(agent, old_deposit, report_data)
    answer = keys_op(agent, new_deposit, old)
    assert answer["ok"] and answer["shares"] == 0 and answer["installed"] is False


def test_a_share_for_a_report_this_guest_never_made_is_refused(agent):
    deposit, _ = deposit_for(threshold=1)
    attest(agent)
    other_report = b"\x42" * 64
    release = HOLDERS[0].release(hpke_key(agent), other_report, HOLDERS[0].share_of(deposit))
    assert keys_op(agent, deposit, [release])["installed"] is False
    named = {**release, "report_data": other_report.hex()}
    assert keys_op(agent, deposit, [named])["shares"] == 0


def test_a_manifest_signed_by_anyone_but_the_renter_is_refused(agent, tmp_path):
    deposit, _ = deposit_for(threshold=1, renter=OTHER, secrets={"x": b"1"})
    report_data = attest(agent)
    answer = keys_op(agent, deposit, releases(agent, deposit, report_data, which=(0,)))
    assert answer["ok"] is False and "not by the lease's renter" in answer["error"]
    assert agent.key_shares.installed is None and not (tmp_path / "secrets" / "x").exists()
    # The renter's signature does not carry over to another manifest (here: threshold 1 -> 2).
    good, _ = deposit_for(threshold=1)
    changed = {**good.guest_request([]), "manifest": {**good.manifest.to_json(), "threshold": 2}}
    refused = agent.handle(changed)
    assert refused["ok"] is False and "renter" in refused["error"]
    other_lease, _ = deposit_for(threshold=1, lease_id=LEASE + 1)
    refused = keys_op(agent, other_lease, [])
    assert refused["ok"] is False and "this guest serves lease 7" in refused["error"]


def test_a_tampered_bundle_is_refused_and_nothing_is_installed(agent, tmp_path):
    deposit, _ = deposit_for(threshold=2, secrets={"db.password": b"pw"})
    report_data = attest(agent)
    sealed = bytearray(deposit.bundle or b"")
    sealed[-1] ^= 1
    answer = keys_op(agent, deposit, releases(agent, deposit, report_data),
                     bundle=base64.b64encode(bytes(sealed)).decode())  # fmt: skip
    assert answer["ok"] is False and "bundle does not open" in answer["error"]
    assert not (tmp_path / "secrets" / "db.password").exists()
    wait_volume(agent)
    assert agent.volume.opened == []  # type: ignore[attr-defined]
    # Another lease's (or version's) bundle under this key does not open either.
    assert agent.key_shares.installed is None


def _raw_bundle(root: bytes, doc: dict, lease_id: int = LEASE, version: int = 1) -> str:
    nonce = b"\x00" * 12
    sealed = nonce + ChaCha20Poly1305(kr.hkdf(root, b"cvm.bundle.v1")).encrypt(
        nonce, json.dumps(doc).encode(), kr.bundle_aad(lease_id, version)
    )
    return base64.b64encode(sealed).decode()


def test_reserved_and_bad_secret_names_in_the_bundle_are_refused(agent, tmp_path):
    deposit, root = deposit_for(threshold=2)
    report_data = attest(agent)
    rel = releases(agent, deposit, report_data)
    for name in ("cvm.disk_key", "../etc/passwd", ".hidden"):
        bundle = _raw_bundle(root, {"secrets": {name: base64.b64encode(b"x").decode()}})
        answer = keys_op(agent, deposit, rel, bundle=bundle)
        assert answer["ok"] is False and "name" in answer["error"], name
    assert not (tmp_path / "secrets").exists() or not any((tmp_path / "secrets").iterdir())
    wrong_lease = _raw_bundle(root, {"secrets": {}}, lease_id=LEASE + 1)
    assert keys_op(agent, deposit, rel, bundle=wrong_lease)["ok"] is False


def test_a_wrong_share_from_one_holder_does_not_block_the_other_two(agent):
    deposit, root = deposit_for(threshold=2)
    report_data = attest(agent)
    share = HOLDERS[0].share_of(deposit)
    wrong = {**share, "share": base64.b64encode(b"\x07" * 32).decode()}
    bad = HOLDERS[0].release(hpke_key(agent), report_data, wrong)
    good = releases(agent, deposit, report_data, which=(1, 2))
    first = keys_op(agent, deposit, [bad, good[0]])
    assert first["ok"] is False and "rootCommitment" in first["error"]
    answer = keys_op(agent, deposit, [bad, *good])
    assert answer["ok"] and answer["installed"] is True
    assert agent.key_shares.installed.keys.disk == kr.hkdf(root, b"cvm.disk.v1")  # type: ignore[union-attr]


def test_keys_before_bind_and_malformed_requests_are_refused(tmp_path):
    unbound = guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=tmp_path / "s", ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "t", device=tmp_path / "d",
    )  # fmt: skip
    deposit, _ = deposit_for()
    assert "bind first" in unbound.handle(deposit.guest_request([]))["error"]


@pytest.mark.parametrize(
    "bad",
    [{"manifest": None}, {"signature": "zz"}, {"releases": {}}, {"bundle": "%%%"},
     {"releases": [{"enc": "", "ciphertext": "", "sender": "00"}] * 65}],
)  # fmt: skip
def test_malformed_keys_requests_get_an_error_answer(agent, bad):
    deposit, _ = deposit_for()
    answer = agent.handle({**deposit.guest_request([]), **bad})
    assert answer["ok"] is False and answer["error"]


def test_an_older_key_version_after_a_newer_one_is_refused(agent):
    report_data = attest(agent)
    v2, _ = deposit_for(threshold=2, key_version=2)
    assert keys_op(agent, v2, releases(agent, v2, report_data))["installed"] is True
    v1, _ = deposit_for(threshold=2, key_version=1)
    answer = keys_op(agent, v1, releases(agent, v1, report_data))
    assert answer["ok"] is False and "rollback" in answer["error"]


def test_a_rekey_while_running_moves_the_volume_to_the_new_disk_key(agent):
    """The guest holds the old root itself: the new version's disk key gets a keyslot
    (authorised by the old key) and the old keyslot goes."""
    report_data = attest(agent)
    v1, root1 = deposit_for(threshold=2, key_version=1)
    old_disk = kr.hkdf(root1, b"cvm.disk.v1")
    agent.volume = FakeVolume(opens_with=old_disk)  # type: ignore[assignment]
    assert keys_op(agent, v1, releases(agent, v1, report_data))["installed"] is True
    wait_volume(agent)
    v2, root2 = deposit_for(threshold=2, key_version=2)
    answer = keys_op(agent, v2, releases(agent, v2, report_data))
    assert answer["installed"] is True and answer["key_version"] == 2
    wait_volume(agent)
    volume = agent.volume
    new_disk = kr.hkdf(root2, b"cvm.disk.v1")
    assert [args[1] for args, _ in volume.calls] == ["luksAddKey", "luksRemoveKey"]  # type: ignore[attr-defined]
    assert all(stdin == old_disk for _, stdin in volume.calls)  # type: ignore[attr-defined]
    assert all(new_disk.hex() not in " ".join(args) for args, _ in volume.calls)  # type: ignore[attr-defined]


def test_a_rekeyed_bundle_carries_the_roots_the_renter_kept(agent):
    """A new guest of version 2 (the old one gone) opens state sealed under version 1 with
    the root the renter carried over in the bundle."""
    report_data = attest(agent)
    root1 = kr.new_root()
    v2, _ = deposit_for(threshold=2, key_version=2, previous_roots={1: root1})
    assert keys_op(agent, v2, releases(agent, v2, report_data))["installed"] is True
    installed = agent.key_shares.installed
    assert installed is not None
    assert installed.previous[1].disk == kr.hkdf(root1, b"cvm.disk.v1")
    with pytest.raises(kr.KeyServiceError, match="earlier key versions"):
        deposit_for(key_version=1, previous_roots={1: root1})


def test_the_snapshot_code_gets_its_keys_and_the_required_epoch_once_mounted(agent, monkeypatch):
    """When the agent has the snapshot code (guest/snapshot.py): services are held before
    the volume opens, and the root-derived snapshot keys go to it once it is mounted."""
    import dataclasses

    @dataclasses.dataclass
    class SnapshotKeys:  # the shape of guest.snapshot.SnapshotKeys
        chain_id: int
        registry: bytes
        lease_id: int
        key_version: int
        snapshot_key: bytes
        nonce_key: bytes
        epoch_seed: bytes
        required_epoch: int = 0
        number_above: int = 0

    module = type("M", (), {"SnapshotKeys": SnapshotKeys})
    monkeypatch.setattr(guest_agent, "guest_snapshot", module, raising=False)
    events: list[Any] = []
    agent.hold_state = lambda: events.append("hold")  # type: ignore[attr-defined]
    agent.install_snapshot_keys = lambda keys: events.append(keys) or {"restore_needed": True}  # type: ignore[attr-defined]
    deposit, root = deposit_for(threshold=2)
    report_data = attest(agent)
    rel = [HOLDERS[i].release(hpke_key(agent), report_data, HOLDERS[i].share_of(deposit),
                              **signed_epoch(root, e, bytes([e]) * 32))
           for i, e in ((0, 3), (1, 5))]  # fmt: skip
    assert keys_op(agent, deposit, rel)["required_epoch"] == 5
    wait_volume(agent)
    assert events[0] == "hold"
    keys = events[1]
    assert (keys.chain_id, keys.lease_id, keys.key_version, keys.required_epoch) == (
        CHAIN_ID, LEASE, 1, 5)  # fmt: skip
    assert keys.registry == bytes.fromhex(REGISTRY[2:])
    assert keys.snapshot_key == kr.hkdf(root, b"cvm.snapshot.v1")
    assert keys.nonce_key == kr.hkdf(root, b"cvm.snapshot-nonce.v1")
    assert keys.epoch_seed == kr.hkdf(root, b"cvm.epoch.v1")


# --- epochs in releases: signed records only, never down -----------------------------------
def test_one_holder_claiming_an_unsigned_or_forged_epoch_is_refused(agent):
    """A single hostile holder with a good share sets epoch 2**64-1: were it counted, every
    volume and snapshot would be "stale" forever. Unsigned, signed by another key, or signed
    for another lease, the claim is refused (its share with it); the key still installs from
    the honest holders with their signed epoch."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    deposit, root = deposit_for(threshold=2)
    report_data = attest(agent)
    guest = hpke_key(agent)
    top = 2**64 - 1
    unsigned = HOLDERS[0].release(guest, report_data, HOLDERS[0].share_of(deposit), epoch=top,
                                  snapshot="cd" * 32)  # fmt: skip
    message = keyshares.epoch_message(CHAIN_ID, bytes.fromhex(REGISTRY[2:]), LEASE, 1, top,
                                      b"\xcd" * 32)  # fmt: skip
    forged_sig = Ed25519PrivateKey.generate().sign(message)
    forged = HOLDERS[0].release(guest, report_data, HOLDERS[0].share_of(deposit), epoch=top,
                                snapshot="cd" * 32,
                                epoch_signature=base64.b64encode(forged_sig).decode())  # fmt: skip
    other_lease = HOLDERS[0].release(
        guest,
        report_data,
        HOLDERS[0].share_of(deposit),
        **signed_epoch(root, top, b"\xcd" * 32, lease_id=LEASE + 1),
    )
    for bad in (unsigned, forged, other_lease):
        answer = keys_op(agent, deposit, [bad])
        assert answer["ok"] and answer["shares"] == 0 and answer["installed"] is False
    honest = [
        HOLDERS[i].release(
            guest, report_data, HOLDERS[i].share_of(deposit), **signed_epoch(root, 6, b"\x06" * 32)
        )
        for i in (1, 2)
    ]
    answer = keys_op(agent, deposit, [unsigned, *honest])
    assert answer["installed"] is True and answer["required_epoch"] == 6


def test_a_replayed_older_release_does_not_lower_the_required_epoch(agent):
    """The host keeps holder 1's release of an earlier report (epoch 2) and offers it after
    the newer one (epoch 5), and withholds nothing else: the guest keeps the newer; and an
    epoch a holder beyond the combined subset signed counts too."""
    deposit, root = deposit_for(threshold=2)
    old_report = attest(agent, 0)
    new_report = attest(agent, 1)
    guest = hpke_key(agent)
    share0 = HOLDERS[0].share_of(deposit)
    newer = HOLDERS[0].release(guest, new_report, share0, **signed_epoch(root, 5, b"\x05" * 32))
    older = HOLDERS[0].release(guest, old_report, share0, **signed_epoch(root, 2, b"\x02" * 32))
    assert keys_op(agent, deposit, [newer])["installed"] is False
    assert keys_op(agent, deposit, [older])["installed"] is False
    rest = [
        HOLDERS[i].release(guest, new_report, HOLDERS[i].share_of(deposit),
                           **signed_epoch(root, e, bytes([e]) * 32))
        for i, e in ((1, 1), (2, 7))
    ]  # fmt: skip
    answer = keys_op(agent, deposit, rest)
    assert answer["installed"] is True and answer["required_epoch"] == 7


@pytest.mark.parametrize("bad", [1, 7, 12])
def test_one_wrong_share_among_many_holders_never_blocks_the_key(bad):
    """12 holders, 5 needed, all 12 shares in, one of them wrong: in plain lexicographic
    order every one of the 256 subsets tried held share 1 (C(11, 4) = 330), so a single
    holder at index 1 sending junk kept the guest from its key for good."""
    root = kr.new_root()
    split = kr.split_root(root, 5, 12)
    derived = keyshares.derive(root)
    manifest = keyshares.Manifest(
        lease_id=LEASE, key_version=1, threshold=5,
        holders=tuple(bytes([i]) * 20 for i in range(1, 13)),
        holder_keys=tuple(bytes([i]) * 32 for i in range(1, 13)),
        root_commitment=derived.commitment, epoch_key=derived.epoch_key,
    )  # fmt: skip
    state = keyshares.KeyShares()
    state.manifest = manifest
    for index, share in enumerate(split, start=1):
        value = bytes(32) if index == bad else share
        state.shares[index] = keyshares.Share(index=index, share=value, epoch=0, snapshot=None)
    installed = state._combine(manifest, None)
    assert installed.keys.disk == derived.disk


def test_an_epoch_of_the_earlier_key_version_floors_a_rekeyed_guest(agent):
    """A new guest of version 2 right after a rekey: the holders still have version 1's
    record (epoch 9). It counts once the bundle's carried-over root gives version 1's epoch
    key and the signature holds under it; forged, or with no root to check it, it does not."""
    report_data = attest(agent)
    guest = hpke_key(agent)
    root1 = kr.new_root()
    v2, _root2 = deposit_for(threshold=2, key_version=2, previous_roots={1: root1})
    old = signed_epoch(root1, 9, b"\x09" * 32, key_version=1) | {"epoch_key_version": 1}
    forged = signed_epoch(kr.new_root(), 20, b"\x14" * 32, key_version=1)
    rel = [
        HOLDERS[0].release(guest, report_data, HOLDERS[0].share_of(v2), **old),
        HOLDERS[1].release(guest, report_data, HOLDERS[1].share_of(v2),
                           **forged, epoch_key_version=1),
    ]  # fmt: skip
    answer = keys_op(agent, v2, rel)
    assert answer["installed"] is True and answer["required_epoch"] == 9


def test_an_earlier_versions_epoch_without_its_root_does_not_count(agent):
    report_data = attest(agent)
    guest = hpke_key(agent)
    v2, _ = deposit_for(threshold=2, key_version=2)
    claim = signed_epoch(kr.new_root(), 50, b"\x32" * 32, key_version=1)
    rel = [
        HOLDERS[0].release(guest, report_data, HOLDERS[0].share_of(v2), **claim,
                           epoch_key_version=1),
        HOLDERS[1].release(guest, report_data, HOLDERS[1].share_of(v2)),
    ]  # fmt: skip
    answer = keys_op(agent, v2, rel)
    assert answer["installed"] is True and answer["required_epoch"] == 0


@pytest.mark.parametrize(("claimed", "numbered_above"), [(50, 50), (2**40 + 1, 0)])
def test_a_rekeyed_guest_numbers_its_epochs_above_the_old_versions_floor(
    agent, monkeypatch, claimed, numbered_above
):
    """After a rekey without a carried-over root, the old version's record cannot be checked
    (no floor), but the holders and the backend keep its epoch: the new guest's first
    snapshot must be numbered above it or every record it signs is refused. A claim beyond
    the bound (a lying holder exhausting the counter) is not taken."""
    import dataclasses

    @dataclasses.dataclass
    class SnapshotKeys:  # the shape of guest.snapshot.SnapshotKeys
        chain_id: int
        registry: bytes
        lease_id: int
        key_version: int
        snapshot_key: bytes
        nonce_key: bytes
        epoch_seed: bytes
        required_epoch: int = 0
        number_above: int = 0

    module = type("M", (), {"SnapshotKeys": SnapshotKeys})
    monkeypatch.setattr(guest_agent, "guest_snapshot", module, raising=False)
    events: list[Any] = []
    agent.hold_state = lambda: events.append("hold")  # type: ignore[attr-defined]
    agent.install_snapshot_keys = lambda keys: events.append(keys) or {"restore_needed": False}  # type: ignore[attr-defined]
    report_data = attest(agent)
    guest = hpke_key(agent)
    v2, _ = deposit_for(threshold=2, key_version=2)
    claim = signed_epoch(kr.new_root(), claimed, b"\x32" * 32, key_version=1)
    rel = [
        HOLDERS[0].release(guest, report_data, HOLDERS[0].share_of(v2), **claim,
                           epoch_key_version=1),
        HOLDERS[1].release(guest, report_data, HOLDERS[1].share_of(v2)),
    ]  # fmt: skip
    assert keys_op(agent, v2, rel)["required_epoch"] == 0
    wait_volume(agent)
    keys = events[1]
    assert (keys.required_epoch, keys.number_above) == (0, numbered_above)


def test_a_bundle_held_back_at_install_is_taken_when_it_comes(agent, tmp_path):
    """The host sends the releases without the bundle: the key installs (no secrets). The
    bundle sent afterwards used to be ignored for good (installed already); it is taken once,
    and a tampered one is still refused."""
    deposit, _ = deposit_for(secrets={"db.password": b"pw\n"})
    report_data = attest(agent)
    rel = releases(agent, deposit, report_data)
    answer = keys_op(agent, deposit, rel, bundle=None)
    assert answer["installed"] is True
    wait_volume(agent)
    secret = tmp_path / "secrets" / "db.password"
    assert not secret.exists()
    bad = bytearray(base64.b64decode(deposit.guest_request(rel)["bundle"]))
    bad[-1] ^= 1
    refused = keys_op(agent, deposit, rel, bundle=base64.b64encode(bytes(bad)).decode())
    assert refused["ok"] is False and not secret.exists()
    again = keys_op(agent, deposit, rel)
    assert again["installed"] is True and secret.read_bytes() == b"pw\n"
    wait_volume(agent)
    assert len(agent.volume.opened) == 1  # type: ignore[attr-defined]
