"""The guest's side of the threshold key: a lease's workload root key rebuilt from the
shares its key holders release to this guest, under the manifest its renter signed.

The renter's client (cvm.key_release) makes a 32-byte root key R per lease and key version,
splits it t-of-n with pycryptodome's Shamir (two 16-byte halves, the same indices; share i
is half0 || half1) and signs a `KeyManifest` (EIP-712, the agent checks the signature of the
renter HOST_DATA binds). Each holder, once the chain says this guest is Verified under the
lease's policy, seals its share to this guest's HPKE key in **auth mode** (the sender is the
holder's own X25519 key: nobody else can make a share pass as the holder's), with the
report's REPORT_DATA as associated data. Here:

- a share opens only with a REPORT_DATA this guest had signed, only when its sender key is
  `holderKeys[index-1]` of the manifest, and only for the manifest's lease and key version;
- once t distinct holders' shares are in, they are combined; the result must hash
  (HKDF "cvm.commit.v1") to the manifest's `rootCommitment`, so t-1 shares, a holder's
  wrong share or a share of another version never yield a key that is used;
- the keys the guest works with are derived from R (HKDF-SHA256, one `info` each, as in
  cvm.key_release): the disk key, the snapshot keys, the epoch signing key, the bundle key;
- the renter's sealed bundle (secrets for the workload) opens with the bundle key, bound to
  the lease and key version; `cvm.*` names are refused (those are the guest's own).

`required_epoch` is the highest snapshot epoch the holders whose releases opened have seen:
the guest must not start from state older than that. A holder's epoch counts only with the
epoch record's Ed25519 signature by the manifest's epochKey (what the holder verified before
keeping it): one hostile holder cannot claim an epoch no guest signed (which would make every
volume and snapshot "stale" forever), and an older release of a holder replayed by the host
does not replace a newer one of the same holder.

Runs in the guest: standard library, python3-cryptography, Debian's python3-pycryptodome
(`Cryptodome`, the Shamir and keccak parts the image keeps) and pyhpke. Imports nothing of
cvm (an import-linter contract).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KEYSHARE_INFO = b"cvm.keyshare.v1"  # holder -> guest (HPKE auth mode)
MANIFEST_TYPE = (
    b"KeyManifest(uint256 leaseId,uint32 keyVersion,uint8 threshold,address[] holders,"
    b"bytes32[] holderKeys,bytes32 rootCommitment,bytes32 epochKey)"
)
INFO_DISK = b"cvm.disk.v1"
INFO_SNAPSHOT = b"cvm.snapshot.v1"
INFO_SNAPSHOT_NONCE = b"cvm.snapshot-nonce.v1"
INFO_EPOCH = b"cvm.epoch.v1"
INFO_BUNDLE = b"cvm.bundle.v1"
INFO_COMMIT = b"cvm.commit.v1"
EPOCH_TAG = b"cvm.epoch.v1"  # the epoch record's signed bytes (INTERFACES 6)
# An epoch a share names without a record this guest can check (an earlier key version's,
# no carried-over root) only moves where new epochs are numbered from, and only up to this:
# a lying holder cannot exhaust the 64-bit counter (2**40 snapshots is far beyond any lease).
EPOCH_HINT_MAX = 2**40
ROOT_SIZE = 32
SHARE_SIZE = 32
MAX_HOLDERS = 16
MAX_RELEASES = 64  # per request: more than 16 holders x a few reports is a flood
MAX_RELEASE_CIPHERTEXT = 1024  # the share's JSON is ~200 bytes
MAX_BUNDLE = 256 * 1024
MAX_PREVIOUS_ROOTS = 8
MAX_COMBINATIONS = 256  # subsets of valid shares tried when a holder's share is wrong
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BYTES32 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class KeyShareError(Exception):
    """A manifest, share or bundle this guest refuses; the message says why (no secret)."""


def keccak256(data: bytes) -> bytes:
    try:  # Debian's python3-pycryptodome installs the Cryptodome namespace
        from Cryptodome.Hash import keccak
    except ImportError:  # the PyPI wheel (the host's tests) installs Crypto
        from Crypto.Hash import keccak  # type: ignore[no-redef,unused-ignore]
    return bytes(keccak.new(digest_bits=256, data=data).digest())


def _shamir() -> Any:
    try:
        from Cryptodome.Protocol.SecretSharing import Shamir
    except ImportError:
        from Crypto.Protocol.SecretSharing import Shamir  # type: ignore[assignment,unused-ignore]
    return Shamir


# --- derivations (the same in cvm.key_release) ---------------------------------------------
def hkdf(root: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


@dataclass(frozen=True)
class DerivedKeys:
    """What a root key gives: never logged, never written but where the guest needs it."""

    disk: bytes = field(repr=False)  # the data volume's LUKS key
    snapshot: bytes = field(repr=False)  # ChaCha20Poly1305 key of snapshot chunks/manifests
    snapshot_nonce: bytes = field(repr=False)  # HMAC key of the convergent chunk nonces
    epoch_seed: bytes = field(repr=False)  # Ed25519 private seed signing epoch records
    bundle: bytes = field(repr=False)  # ChaCha20Poly1305 key of the renter's secret bundle
    commitment: bytes  # public: the manifest's rootCommitment

    @property
    def epoch_key(self) -> bytes:
        """The Ed25519 public key of `epoch_seed` (the manifest's epochKey)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        private = Ed25519PrivateKey.from_private_bytes(self.epoch_seed)
        return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def derive(root: bytes) -> DerivedKeys:
    if len(root) != ROOT_SIZE:
        raise KeyShareError(f"a root key is {ROOT_SIZE} bytes")
    return DerivedKeys(
        disk=hkdf(root, INFO_DISK),
        snapshot=hkdf(root, INFO_SNAPSHOT),
        snapshot_nonce=hkdf(root, INFO_SNAPSHOT_NONCE),
        epoch_seed=hkdf(root, INFO_EPOCH),
        bundle=hkdf(root, INFO_BUNDLE),
        commitment=hkdf(root, INFO_COMMIT),
    )


def combine(shares: Sequence[tuple[int, bytes]]) -> bytes:
    """The 32-byte secret of `shares` ((index, 32 bytes), distinct indices). With fewer than
    the threshold it returns a wrong key, which the commitment check then refuses."""
    shamir = _shamir()
    if not shares or len({index for index, _ in shares}) != len(shares):
        raise KeyShareError("shares must have distinct indices")
    low = shamir.combine([(index, share[:16]) for index, share in shares])
    high = shamir.combine([(index, share[16:]) for index, share in shares])
    return bytes(low) + bytes(high)


def bundle_aad(lease_id: int, key_version: int) -> bytes:
    return INFO_BUNDLE + lease_id.to_bytes(32, "big") + key_version.to_bytes(4, "big")


# --- the manifest -------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    lease_id: int
    key_version: int
    threshold: int
    holders: tuple[bytes, ...]  # 20 bytes each
    holder_keys: tuple[bytes, ...]  # X25519 public keys, 32 bytes each
    root_commitment: bytes
    epoch_key: bytes

    @classmethod
    def parse(cls, doc: Any) -> Manifest:
        """The JSON form (the EIP-712 message's field names, bytes32 as hex), checked."""
        if not isinstance(doc, Mapping):
            raise KeyShareError("the manifest must be an object")
        holders, keys = doc.get("holders"), doc.get("holderKeys")
        if not isinstance(holders, list) or not isinstance(keys, list):
            raise KeyShareError("manifest holders and holderKeys must be lists")
        if not 1 <= len(holders) <= MAX_HOLDERS or len(keys) != len(holders):
            raise KeyShareError(f"a manifest names 1..{MAX_HOLDERS} holders, one key each")
        parsed_holders = tuple(_address(h, "manifest holder") for h in holders)
        if len(set(parsed_holders)) != len(parsed_holders):
            raise KeyShareError("a holder appears twice in the manifest")
        threshold = _integer(doc.get("threshold"), "threshold", len(holders))
        if threshold < 1:
            raise KeyShareError("the threshold must be at least 1")
        version = _integer(doc.get("keyVersion"), "keyVersion", UINT32_MAX)
        if version < 1:
            raise KeyShareError("keyVersion starts at 1")
        return cls(
            lease_id=_integer(doc.get("leaseId"), "leaseId", UINT256_MAX),
            key_version=version,
            threshold=threshold,
            holders=parsed_holders,
            holder_keys=tuple(_bytes32(k, "holder key") for k in keys),
            root_commitment=_bytes32(doc.get("rootCommitment"), "rootCommitment"),
            epoch_key=_bytes32(doc.get("epochKey"), "epochKey"),
        )

    def struct_hash(self) -> bytes:
        """EIP-712 hashStruct(KeyManifest): arrays are keccak of their 32-byte words."""
        return keccak256(
            keccak256(MANIFEST_TYPE)
            + self.lease_id.to_bytes(32, "big")
            + self.key_version.to_bytes(32, "big")
            + self.threshold.to_bytes(32, "big")
            + keccak256(b"".join(bytes(12) + h for h in self.holders))
            + keccak256(b"".join(self.holder_keys))
            + self.root_commitment
            + self.epoch_key
        )


def _integer(value: Any, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise KeyShareError(f"{name} must be an integer from 0 to {maximum}")
    return value


def _address(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise KeyShareError(f"{name} must be a 0x-prefixed 20-byte address")
    return bytes.fromhex(value[2:])


def _bytes32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not _BYTES32.match(value):
        raise KeyShareError(f"{name} must be 32 bytes of hex")
    return bytes.fromhex(value.removeprefix("0x"))


def _b64(value: Any, name: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > (limit * 4) // 3 + 4:
        raise KeyShareError(f"{name} must be base64 of at most {limit} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyShareError(f"{name} is not base64") from None
    if not data or len(data) > limit:
        raise KeyShareError(f"{name} must be base64 of 1..{limit} bytes")
    return data


# --- shares -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Share:
    index: int  # 1..n: holders[index-1] sent it
    share: bytes = field(repr=False)
    epoch: int
    snapshot: bytes | None  # the epoch record's snapshot id (32 bytes), None for epoch 0
    # A record of an earlier key version (kept by the holder over a rekey): checked once the
    # bundle gave that version's root (`previous_roots`); it counts only then.
    epoch_key_version: int = 0
    epoch_signature: bytes | None = field(default=None, repr=False)


def epoch_message(
    chain_id: int, registry: bytes, lease_id: int, key_version: int, epoch: int, snapshot: bytes
) -> bytes:
    """What the epoch key signs: INTERFACES 6 (the same bytes as guest.snapshot's)."""
    return (
        EPOCH_TAG + chain_id.to_bytes(32, "big") + registry + lease_id.to_bytes(32, "big")
        + key_version.to_bytes(4, "big") + epoch.to_bytes(8, "big") + snapshot
    )  # fmt: skip


def _check_epoch(
    manifest: Manifest,
    domain: tuple[int, bytes],
    epoch: int,
    snapshot: bytes,
    signature: bytes,
    *,
    key_version: int | None = None,
    epoch_key: bytes | None = None,
) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    chain_id, registry = domain
    version = manifest.key_version if key_version is None else key_version
    message = epoch_message(chain_id, registry, manifest.lease_id, version, epoch, snapshot)
    try:
        Ed25519PublicKey.from_public_bytes(epoch_key or manifest.epoch_key).verify(
            signature, message
        )
    except (InvalidSignature, ValueError):
        raise KeyShareError(
            f"the share's epoch {epoch} is not signed by the manifest's epochKey for this"
            " lease and key version"
        ) from None


# Opens one HPKE auth-mode seal: (enc, ciphertext, aad, sender public key) -> plaintext.
Opener = Callable[[bytes, bytes, bytes, bytes], bytes]


def hpke_auth_opener(private_key: Any) -> Opener:
    """An Opener for this guest's X25519 key (a cryptography X25519PrivateKey)."""
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

    suite = CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
    )
    recipient = KEMKey.from_pyca_cryptography_key(private_key)

    def open_(enc: bytes, ciphertext: bytes, aad: bytes, sender: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        sender_key = KEMKey.from_pyca_cryptography_key(X25519PublicKey.from_public_bytes(sender))
        context = suite.create_recipient_context(enc, recipient, info=KEYSHARE_INFO, pks=sender_key)
        return bytes(context.open(ciphertext, aad=aad))

    return open_


def open_release(
    manifest: Manifest,
    release: Any,
    report_data: Iterable[bytes],
    opener: Opener,
    domain: tuple[int, bytes],
) -> Share:
    """One holder's release, checked: its sender key is in the manifest, it opens (auth mode)
    for one of the REPORT_DATA values this guest had signed, and it is the share of that
    holder's index for this lease and key version; an epoch above 0 comes with its record's
    signature by the manifest's epochKey under `domain` (chain id, registry: the binding's)."""
    if not isinstance(release, Mapping):
        raise KeyShareError("a release must be an object")
    enc = _b64(release.get("enc"), "release enc", 32)
    if len(enc) != 32:
        raise KeyShareError("release enc must be 32 bytes")
    ciphertext = _b64(release.get("ciphertext"), "release ciphertext", MAX_RELEASE_CIPHERTEXT)
    sender = _bytes32(release.get("sender"), "release sender")
    if sender not in manifest.holder_keys:
        raise KeyShareError("the release's sender is not a key holder of this manifest")
    candidates = list(report_data)
    if release.get("report_data") is not None:
        wanted = release.get("report_data")
        if not isinstance(wanted, str) or not re.fullmatch(r"[0-9a-fA-F]{128}", wanted):
            raise KeyShareError("release report_data must be 64 bytes of hex")
        if bytes.fromhex(wanted) not in candidates:
            raise KeyShareError("the release is sealed to a report this guest never made")
        candidates = [bytes.fromhex(wanted)]
    plain = None
    for aad in candidates:
        try:
            plain = opener(enc, ciphertext, aad, sender)
            break
        except Exception:  # noqa: S112 - pyhpke raises its own errors for a seal that does not open
            continue
    if plain is None:
        raise KeyShareError(
            "the release does not open: not sealed to this guest's key for a report it made,"
            " or not by the key holder it names"
        )
    try:
        doc = json.loads(plain)
    except ValueError:
        raise KeyShareError("the share's payload is not JSON") from None
    if not isinstance(doc, dict):
        raise KeyShareError("the share's payload is not an object")
    index = _integer(doc.get("index"), "share index", len(manifest.holders))
    if index < 1 or manifest.holder_keys[index - 1] != sender:
        raise KeyShareError(
            f"share index {index} is not the sender's: holderKeys[index-1] must have sealed it"
        )
    if _integer(doc.get("lease_id"), "share lease_id", UINT256_MAX) != manifest.lease_id:
        raise KeyShareError("the share is for another lease")
    version = _integer(doc.get("key_version"), "share key_version", UINT32_MAX)
    if version != manifest.key_version:
        raise KeyShareError(
            f"the share is of key version {version}, the manifest's is {manifest.key_version}"
        )
    share = _b64(doc.get("share"), "share", SHARE_SIZE)
    if len(share) != SHARE_SIZE:
        raise KeyShareError(f"a share is {SHARE_SIZE} bytes")
    epoch = _integer(doc.get("epoch", 0), "share epoch", UINT64_MAX)
    snapshot_hex = doc.get("snapshot")
    snapshot = None if snapshot_hex is None else _bytes32(snapshot_hex, "share snapshot")
    if epoch > 0:
        if snapshot is None or doc.get("epoch_signature") is None:
            raise KeyShareError(f"the share claims epoch {epoch} without its signed epoch record")
        signature = _b64(doc.get("epoch_signature"), "share epoch_signature", 64)
        if len(signature) != 64:
            raise KeyShareError("an epoch record's signature is 64 bytes")
        record_version = _integer(
            doc.get("epoch_key_version", version), "share epoch_key_version", version
        )
        if record_version < 1:
            raise KeyShareError("an epoch record's key version starts at 1")
        if record_version == version:
            _check_epoch(manifest, domain, epoch, snapshot, signature)
            record_version = 0  # checked
        return Share(index=index, share=share, epoch=epoch, snapshot=snapshot,
                     epoch_key_version=record_version, epoch_signature=signature)  # fmt: skip
    return Share(index=index, share=share, epoch=0, snapshot=None)


# --- the bundle ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    secrets: dict[str, bytes] = field(repr=False)
    # Roots of earlier key versions the renter carried over at a rekey (docs/key-release.md):
    # what was sealed under them (the volume's keyslot, snapshots) still opens.
    previous_roots: dict[int, bytes] = field(repr=False)


def open_bundle(key: bytes, sealed: bytes, lease_id: int, key_version: int) -> Bundle:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(sealed) < 12 + 16:
        raise KeyShareError("the secret bundle is too short")
    try:
        plain = ChaCha20Poly1305(key).decrypt(
            sealed[:12], sealed[12:], bundle_aad(lease_id, key_version)
        )
    except InvalidTag:
        raise KeyShareError(
            "the secret bundle does not open with this key (tampered, or of another lease or"
            " key version)"
        ) from None
    try:
        doc = json.loads(plain)
    except ValueError:
        raise KeyShareError("the secret bundle is not JSON") from None
    raw = doc.get("secrets") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        raise KeyShareError("the secret bundle has no secrets object")
    secrets = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not SECRET_NAME.match(name):
            raise KeyShareError(f"bad secret name {str(name)[:70]!r} in the bundle")
        if name.startswith("cvm."):
            raise KeyShareError(f"secret name {name!r} is reserved for the guest itself")
        secrets[name] = _b64(value, f"secret {name}", MAX_BUNDLE) if value else b""
    previous: dict[int, bytes] = {}
    carried = doc.get("previous_roots", [])
    if not isinstance(carried, list) or len(carried) > MAX_PREVIOUS_ROOTS:
        raise KeyShareError(f"previous_roots must be a list of at most {MAX_PREVIOUS_ROOTS}")
    for entry in carried:
        if not isinstance(entry, dict):
            raise KeyShareError("a previous root must be an object")
        version = _integer(entry.get("key_version"), "previous key_version", UINT32_MAX)
        if not 1 <= version < key_version:
            raise KeyShareError("a previous root must be of an earlier key version")
        root = _b64(entry.get("root"), "previous root", ROOT_SIZE)
        if len(root) != ROOT_SIZE:
            raise KeyShareError(f"a previous root is {ROOT_SIZE} bytes")
        previous[version] = root
    return Bundle(secrets=secrets, previous_roots=previous)


# --- the state of one guest ---------------------------------------------------------------
@dataclass
class Installed:
    """The key of one version, once rebuilt and checked."""

    manifest: Manifest
    keys: DerivedKeys
    required_epoch: int
    snapshot: bytes | None  # the snapshot id holders named with that epoch
    bundle: Bundle | None
    previous: dict[int, DerivedKeys] = field(default_factory=dict, repr=False)
    # The highest epoch any opened share named, checked or not (bounded by EPOCH_HINT_MAX):
    # not a floor (an unchecked record proves nothing), only where new epochs are numbered
    # from, so that after a rekey without a carried-over root the guest's records are above
    # the old version's floor the holders and the backend keep, not refused until it passes it.
    epoch_seen: int = 0


def _epoch_holds(
    share: Share, manifest: Manifest, domain: tuple[int, bytes], previous: Mapping[int, Any]
) -> bool:
    if share.epoch_key_version == 0:  # epoch 0, or checked under this version already
        return True
    keys = previous.get(share.epoch_key_version)
    if keys is None or share.snapshot is None or share.epoch_signature is None:
        return False
    try:
        _check_epoch(manifest, domain, share.epoch, share.snapshot, share.epoch_signature,
                     key_version=share.epoch_key_version, epoch_key=keys.epoch_key)  # fmt: skip
    except KeyShareError:
        return False
    return True


def _subsets(count: int, threshold: int) -> Iterable[tuple[int, ...]]:
    """At most MAX_COMBINATIONS distinct `threshold`-subsets of range(count) to try. All of
    them when there are few; else the first, then each one leaving one share out (a single
    holder's wrong share never blocks the key, wherever its index), then random ones. In
    lexicographic order alone the first share is in the first C(count-1, t-1) subsets: with
    12 holders, 5 of them needed, a wrong share 1 would have been in all 256 tried."""
    if math.comb(count, threshold) <= MAX_COMBINATIONS:
        yield from itertools.combinations(range(count), threshold)
        return
    seen: set[tuple[int, ...]] = set()
    ordered = [tuple(range(threshold))]
    ordered += [tuple([i for i in range(count) if i != skip][:threshold]) for skip in range(count)]
    rng = random.SystemRandom()
    while len(seen) < MAX_COMBINATIONS:
        picked = ordered.pop(0) if ordered else tuple(sorted(rng.sample(range(count), threshold)))
        if picked not in seen:
            seen.add(picked)
            yield picked


class KeyShares:
    """The shares this guest holds for its lease's current manifest, and the key they made.

    `offer` is idempotent: the same releases again change nothing; more of them, past the
    threshold, change nothing either once the key is installed. A manifest of a higher key
    version (a rekey) starts over; a lower one is refused."""

    def __init__(self) -> None:
        self.manifest: Manifest | None = None
        self.shares: dict[int, Share] = {}
        self.installed: Installed | None = None

    def offer(
        self,
        manifest: Manifest,
        releases: Sequence[Any],
        bundle: bytes | None,
        report_data: Iterable[bytes],
        opener: Opener,
        domain: tuple[int, bytes],
        log: Callable[[str], None] = lambda _m: None,
    ) -> Installed | None:
        """Take `releases` for `manifest` (already authenticated as the renter's by the
        caller; `domain` = (chain id, registry) the guest is bound to, for epoch records);
        the Installed key once t good shares are in (None until then)."""
        if len(releases) > MAX_RELEASES:
            raise KeyShareError(f"at most {MAX_RELEASES} releases per request")
        if bundle is not None and len(bundle) > MAX_BUNDLE:
            raise KeyShareError(f"the secret bundle is above {MAX_BUNDLE} bytes")
        current = self.manifest
        if current is not None and manifest != current:
            if manifest.key_version < current.key_version:
                raise KeyShareError(
                    f"key version {manifest.key_version} is older than this guest's"
                    f" {current.key_version}: a rollback"
                )
            if manifest.key_version == current.key_version:
                raise KeyShareError(
                    f"another manifest for key version {manifest.key_version} than the one"
                    " this guest holds"
                )
        if current is None or manifest.key_version > current.key_version:
            self.manifest, self.shares = manifest, {}
        reports = list(report_data)
        refused = []
        for release in releases:
            try:
                share = open_release(manifest, release, reports, opener, domain)
            except KeyShareError as exc:
                refused.append(str(exc))
                continue
            kept = self.shares.get(share.index)
            if kept is None or share.epoch >= kept.epoch:  # a replayed older release: ignored
                self.shares[share.index] = share
        for reason in dict.fromkeys(refused):
            log(f"key share refused: {reason}")
        if self.installed is not None and self.installed.manifest == manifest:
            if self.installed.bundle is None and bundle is not None:
                # The key came without its bundle (a host holding it back): it is still
                # taken, once, when it comes; until then the secrets are missing, not stale.
                installed = self.installed
                installed.bundle = open_bundle(
                    installed.keys.bundle, bundle, manifest.lease_id, manifest.key_version
                )
                for version, root in installed.bundle.previous_roots.items():
                    installed.previous.setdefault(version, derive(root))
            return self.installed
        if len(self.shares) < manifest.threshold:
            return None
        installed = self._combine(manifest, bundle, domain)
        self.installed = installed
        return installed

    def _combine(
        self, manifest: Manifest, bundle: bytes | None, domain: tuple[int, bytes] = (0, b"")
    ) -> Installed:
        shares = sorted(self.shares.values(), key=lambda s: s.index)
        for picked in _subsets(len(shares), manifest.threshold):
            subset = [shares[i] for i in picked]
            root = combine([(s.index, s.share) for s in subset])
            keys = derive(root)
            if keys.commitment != manifest.root_commitment:
                continue
            if keys.epoch_key != manifest.epoch_key:
                raise KeyShareError("the manifest's epochKey is not the root key's")
            opened = None
            if bundle is not None:
                opened = open_bundle(keys.bundle, bundle, manifest.lease_id, manifest.key_version)
            previous = {v: derive(r) for v, r in (opened.previous_roots.items() if opened else ())}
            # Every opened share's epoch is a record the epoch key signed: the highest of all
            # (not only of the subset combined) is what the guest must not go below. One of
            # an earlier key version counts once that version's epoch key checks it.
            newest = max(
                (s for s in shares if _epoch_holds(s, manifest, domain, previous)),
                key=lambda s: s.epoch,
                default=Share(index=0, share=bytes(SHARE_SIZE), epoch=0, snapshot=None),
            )
            return Installed(
                manifest=manifest,
                keys=keys,
                required_epoch=newest.epoch,
                snapshot=newest.snapshot,
                bundle=opened,
                previous=previous,
                epoch_seen=max(
                    [newest.epoch] + [s.epoch for s in shares if s.epoch <= EPOCH_HINT_MAX]
                ),
            )
        raise KeyShareError(
            f"{len(shares)} share(s) of key version {manifest.key_version} do not combine to"
            " the manifest's rootCommitment (a holder sent a wrong share)"
        )
