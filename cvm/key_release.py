"""The renter's side of the threshold key service: make a lease's root key, split it among
key holders, and set the chain's key-release policy, so the lease's guest gets its keys
with the renter offline (docs/key-release.md).

For one lease and key version the client:
1. makes the root key R (32 random bytes) and splits it t-of-n with pycryptodome's Shamir
   (GF(2^128), two 16-byte halves with the same indices: share i = half0_i || half1_i);
2. derives (HKDF-SHA256, no salt) the public `rootCommitment` ("cvm.commit.v1"), the
   `epochKey` (Ed25519 of "cvm.epoch.v1") and the bundle key ("cvm.bundle.v1");
3. signs the `KeyManifest` (EIP-712, cvm.guest_eip712) as the renter; its digest is the
   `manifestHash` the chain's policy carries;
4. seals share i to holder i's X25519 key (HPKE base mode, info "cvm.keyholder.v1", aad =
   manifestHash): only that holder opens it, and only for this manifest;
5. seals the renter's secrets (and, at a rekey, the roots of earlier versions the renter
   kept) in the bundle: ChaCha20-Poly1305 under the bundle key, bound to lease and version;
6. uploads the deposit (ciphertext only) to the backend, then sets the on-chain policy.

R lives in this process only; it is written nowhere unless the renter asks for it
(`export_root`, mode 0600) and is dropped once the deposit is made.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as token
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_utils import to_checksum_address

from cvm import guest_eip712

HOLDER_INFO = b"cvm.keyholder.v1"  # renter -> holder (HPKE base mode)
INFO_DISK = b"cvm.disk.v1"
INFO_SNAPSHOT = b"cvm.snapshot.v1"
INFO_SNAPSHOT_NONCE = b"cvm.snapshot-nonce.v1"
INFO_EPOCH = b"cvm.epoch.v1"
INFO_BUNDLE = b"cvm.bundle.v1"
INFO_COMMIT = b"cvm.commit.v1"
ROOT_SIZE = 32
SHARE_SIZE = 32
MAX_HOLDERS = guest_eip712.MAX_KEY_HOLDERS  # 16
DEFAULT_HOLDERS = 3
DEFAULT_THRESHOLD = 2
MAX_MEASUREMENTS = 8
MEASUREMENT_SIZE = 48
MAX_BUNDLE = 32 * 1024  # sealed; the API body limit is 64 KiB (CVM_API_MAX_BODY_BYTES)
MAX_PREVIOUS_ROOTS = 8
RESERVED_PREFIX = "cvm."


class KeyServiceError(Exception):
    """A key-service request this client refuses or could not complete (one clear line)."""


# --- the key and what it derives ------------------------------------------------------------
def hkdf(root: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


def epoch_public_key(root: bytes) -> bytes:
    seed = hkdf(root, INFO_EPOCH)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def root_commitment(root: bytes) -> bytes:
    return hkdf(root, INFO_COMMIT)


def new_root() -> bytes:
    return token.token_bytes(ROOT_SIZE)


def _shamir() -> Any:
    from Cryptodome.Protocol.SecretSharing import Shamir

    return Shamir


def check_threshold(threshold: int, holders: int) -> None:
    if not 1 <= holders <= MAX_HOLDERS:
        raise KeyServiceError(f"a key needs 1 to {MAX_HOLDERS} holders, not {holders}")
    if not 1 <= threshold <= holders:
        raise KeyServiceError(
            f"the threshold must be 1 to {holders} (the holders), not {threshold}"
        )


def split_root(root: bytes, threshold: int, holders: int) -> list[bytes]:
    """Share i+1 of `root` at index [i]: 32 bytes, the two halves' shares at one index."""
    if len(root) != ROOT_SIZE:
        raise KeyServiceError(f"a root key is {ROOT_SIZE} bytes")
    check_threshold(threshold, holders)
    shamir = _shamir()
    low = shamir.split(threshold, holders, root[:16])
    high = shamir.split(threshold, holders, root[16:])
    shares = []
    for (i, a), (j, b) in zip(low, high, strict=True):
        assert i == j
        shares.append(bytes(a) + bytes(b))
    return shares


def combine_shares(shares: Sequence[tuple[int, bytes]]) -> bytes:
    """The secret of (index, share) pairs (a wrong one below the threshold)."""
    shamir = _shamir()
    low = shamir.combine([(i, s[:16]) for i, s in shares])
    high = shamir.combine([(i, s[16:]) for i, s in shares])
    return bytes(low) + bytes(high)


def bundle_aad(lease_id: int, key_version: int) -> bytes:
    return INFO_BUNDLE + lease_id.to_bytes(32, "big") + key_version.to_bytes(4, "big")


def check_secret_names(secrets: Mapping[str, bytes]) -> None:
    import re

    for name in secrets:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", name):
            raise KeyServiceError(
                f"secret name {name!r}: letters, digits, '.', '_', '-' (at most 64)"
            )
        if name.startswith(RESERVED_PREFIX):
            raise KeyServiceError(f"secret name {name!r}: cvm.* names are the guest's own")


def seal_bundle(
    root: bytes,
    lease_id: int,
    key_version: int,
    secrets: Mapping[str, bytes],
    previous_roots: Mapping[int, bytes] | None = None,
) -> bytes:
    """nonce(12) || ChaCha20-Poly1305(k_bundle, JSON {"secrets", "previous_roots"})."""
    check_secret_names(secrets)
    doc: dict[str, Any] = {
        "secrets": {name: base64.b64encode(value).decode() for name, value in secrets.items()}
    }
    if previous_roots:
        if len(previous_roots) > MAX_PREVIOUS_ROOTS:
            raise KeyServiceError(f"at most {MAX_PREVIOUS_ROOTS} earlier roots are carried")
        doc["previous_roots"] = [
            {"key_version": v, "root": base64.b64encode(r).decode()}
            for v, r in sorted(previous_roots.items())
        ]
    plain = json.dumps(doc, sort_keys=True).encode()
    nonce = token.token_bytes(12)
    sealed = nonce + ChaCha20Poly1305(hkdf(root, INFO_BUNDLE)).encrypt(
        nonce, plain, bundle_aad(lease_id, key_version)
    )
    if len(sealed) > MAX_BUNDLE:
        raise KeyServiceError(f"the secrets take {len(sealed)} bytes sealed, above {MAX_BUNDLE}")
    return sealed


# --- the manifest ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyManifest:
    lease_id: int
    key_version: int
    threshold: int
    holders: tuple[str, ...]  # checksummed addresses; share index of holders[i] is i+1
    holder_keys: tuple[bytes, ...]  # their X25519 public keys
    root_commitment: bytes
    epoch_key: bytes

    def message(self, chain_id: int, registry: str) -> Any:
        return guest_eip712.key_manifest_message(chain_id, registry, self.to_json())

    def digest(self, chain_id: int, registry: str) -> bytes:
        """The manifestHash (the full EIP-712 digest) the chain's policy carries."""
        return guest_eip712.digest(self.message(chain_id, registry))

    def to_json(self) -> dict[str, Any]:
        """The wire form (the API's KeyManifestJson, the guest's `keys` op): the EIP-712
        message's own field names, bytes32 as 0x-hex."""
        return {
            "leaseId": self.lease_id,
            "keyVersion": self.key_version,
            "threshold": self.threshold,
            "holders": list(self.holders),
            "holderKeys": ["0x" + k.hex() for k in self.holder_keys],
            "rootCommitment": "0x" + self.root_commitment.hex(),
            "epochKey": "0x" + self.epoch_key.hex(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeyManifest:
        try:
            return cls(
                lease_id=int(doc["leaseId"]),
                key_version=int(doc["keyVersion"]),
                threshold=int(doc["threshold"]),
                holders=tuple(to_checksum_address(h) for h in doc["holders"]),
                holder_keys=tuple(bytes.fromhex(k.removeprefix("0x")) for k in doc["holderKeys"]),
                root_commitment=bytes.fromhex(doc["rootCommitment"].removeprefix("0x")),
                epoch_key=bytes.fromhex(doc["epochKey"].removeprefix("0x")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KeyServiceError(f"malformed key manifest: {exc}") from None


def _hpke_suite() -> Any:
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    return CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
    )


def seal_share(
    holder_key: bytes, manifest_hash: bytes, lease_id: int, key_version: int, index: int,
    share: bytes,
) -> tuple[bytes, bytes]:  # fmt: skip
    """(enc, ciphertext): share `index` sealed to one holder's X25519 key (base mode)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from pyhpke import KEMKey

    recipient = KEMKey.from_pyca_cryptography_key(X25519PublicKey.from_public_bytes(holder_key))
    plain = json.dumps(
        {
            "lease_id": lease_id,
            "key_version": key_version,
            "index": index,
            "share": base64.b64encode(share).decode(),
        },
        sort_keys=True,
    ).encode()
    enc, context = _hpke_suite().create_sender_context(recipient, info=HOLDER_INFO)
    return bytes(enc), bytes(context.seal(plain, aad=manifest_hash))


def open_share(
    holder_private: Any, enc: bytes, ciphertext: bytes, manifest_hash: bytes
) -> dict[str, Any]:
    """What a holder does with its deposit (keyservice does the same): the share's JSON."""
    from pyhpke import KEMKey

    key = KEMKey.from_pyca_cryptography_key(holder_private)
    context = _hpke_suite().create_recipient_context(enc, key, info=HOLDER_INFO)
    doc: dict[str, Any] = json.loads(bytes(context.open(ciphertext, aad=manifest_hash)))
    return doc


# --- the deposit ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    address: str
    key: bytes  # X25519 public key, as registered on chain


@dataclass(frozen=True)
class KeyDeposit:
    """What goes to the backend: the signed manifest and ciphertext only."""

    manifest: KeyManifest
    manifest_hash: bytes
    signature: bytes
    shares: tuple[tuple[str, bytes, bytes], ...]  # (holder, enc, ciphertext)
    bundle: bytes | None
    # The renter's EIP-712 KeyShare signature of each share, in the same order: a holder
    # takes only a share its renter signed (the backend cannot slip in one of its own).
    share_signatures: tuple[bytes, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The body of PUT /v1/leases/{id}/keys (KeyDepositIn)."""
        b64 = base64.b64encode
        return {
            "manifest": self.manifest.to_json(),
            "signature": "0x" + self.signature.hex(),
            "shares": [
                {
                    "holder": holder,
                    "enc": b64(enc).decode(),
                    "ciphertext": b64(ct).decode(),
                    "signature": "0x" + signature.hex(),
                }
                for (holder, enc, ct), signature in zip(
                    self.shares, self.share_signatures, strict=True
                )
            ],
            "bundle": b64(self.bundle).decode() if self.bundle is not None else None,
        }

    def guest_request(self, releases: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The guest agent's `keys` op for this deposit (what the node relays)."""
        body = self.to_json()
        return {
            "op": "keys",
            "manifest": body["manifest"],
            "signature": body["signature"],
            "bundle": body["bundle"],
            "releases": list(releases),
        }


@dataclass
class RootKey:
    """The root key while this process needs it; `forget` drops it (best effort in Python:
    the bytes object is released, the bytearray copy is zeroed)."""

    _value: bytearray = field(repr=False)

    @property
    def value(self) -> bytes:
        if not self._value:
            raise KeyServiceError("the root key was forgotten")
        return bytes(self._value)

    def forget(self) -> None:
        for i in range(len(self._value)):
            self._value[i] = 0
        self._value = bytearray()


def make_deposit(
    *,
    chain_id: int,
    registry: str,
    lease_id: int,
    key_version: int,
    threshold: int,
    holders: Sequence[Holder],
    renter: Any,
    secrets: Mapping[str, bytes] = {},
    previous_roots: Mapping[int, bytes] | None = None,
    root: bytes | None = None,
) -> tuple[KeyDeposit, RootKey]:
    """A signed deposit for a new root key (or `root`): the deposit and the key itself."""
    check_threshold(threshold, len(holders))
    if len({h.address.lower() for h in holders}) != len(holders):
        raise KeyServiceError("a holder is named twice")
    if any(len(h.key) != 32 for h in holders):
        raise KeyServiceError("a holder's X25519 key is not 32 bytes")
    check_secret_names(secrets)
    if previous_roots and any(not 1 <= v < key_version for v in previous_roots):
        raise KeyServiceError("carried roots must be of earlier key versions")
    value = root if root is not None else new_root()
    if len(value) != ROOT_SIZE:
        raise KeyServiceError(f"a root key is {ROOT_SIZE} bytes")
    manifest = KeyManifest(
        lease_id=lease_id,
        key_version=key_version,
        threshold=threshold,
        holders=tuple(to_checksum_address(h.address) for h in holders),
        holder_keys=tuple(h.key for h in holders),
        root_commitment=root_commitment(value),
        epoch_key=epoch_public_key(value),
    )
    try:
        message = manifest.message(chain_id, registry)
    except ValueError as exc:
        raise KeyServiceError(str(exc)) from None
    manifest_hash = guest_eip712.digest(message)
    signature = guest_eip712.sign(message, renter)
    shares = split_root(value, threshold, len(holders))
    sealed = tuple(
        (
            manifest.holders[i],
            *seal_share(h.key, manifest_hash, lease_id, key_version, i + 1, shares[i]),
        )
        for i, h in enumerate(holders)
    )
    share_signatures = tuple(
        guest_eip712.sign(
            guest_eip712.key_share_message(chain_id, registry, manifest_hash, i + 1, enc, ct),
            renter,
        )
        for i, (_holder, enc, ct) in enumerate(sealed)
    )
    bundle = None
    if secrets or previous_roots:
        bundle = seal_bundle(value, lease_id, key_version, secrets, previous_roots)
    deposit = KeyDeposit(manifest, manifest_hash, signature, sealed, bundle, share_signatures)
    return deposit, RootKey(bytearray(value))


def export_root(path: Path, lease_id: int, key_version: int, root: bytes) -> None:
    """The root key to a new file, mode 0600 from its first byte (the renter asked)."""
    path = path.expanduser()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyServiceError(f"{path} exists: not overwriting a root key file") from None
    except OSError as exc:
        raise KeyServiceError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {
                "format": "cvm.root-key.v1",
                "lease_id": lease_id,
                "key_version": key_version,
                "root": root.hex(),
            },
            handle,
        )
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_root(path: Path, lease_id: int) -> tuple[int, bytes]:
    """(key_version, root) from a file `export_root` wrote, for this lease."""
    try:
        doc = json.loads(path.expanduser().read_text())
        if doc.get("format") != "cvm.root-key.v1":
            raise ValueError("not a cvm root-key file")
        version, root = int(doc["key_version"]), bytes.fromhex(doc["root"])
        if int(doc["lease_id"]) != lease_id:
            raise ValueError(f"it is the root key of lease {doc['lease_id']}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyServiceError(f"{path}: {exc}") from None
    if len(root) != ROOT_SIZE or version < 1:
        raise KeyServiceError(f"{path}: not a root key")
    return version, root


# --- the chain's policy and the backend -----------------------------------------------------
def check_measurements(measurements: Sequence[bytes]) -> None:
    if not 1 <= len(measurements) <= MAX_MEASUREMENTS:
        raise KeyServiceError(f"a policy allows 1 to {MAX_MEASUREMENTS} measurements")
    if any(len(m) != MEASUREMENT_SIZE for m in measurements):
        raise KeyServiceError(f"a measurement is {MEASUREMENT_SIZE} bytes (96 hex digits)")
    if len(set(measurements)) != len(measurements):
        raise KeyServiceError("a measurement is named twice")


def active_holders(chain: Any) -> list[str]:
    return [to_checksum_address(a) for a in chain.keys.active_holders()]


def resolve_holders(chain: Any, wanted: Sequence[str] | None, count: int) -> list[Holder]:
    """The holders to use: `wanted` (each must be active: registered and staked on chain),
    or the first `count` active ones."""
    active = active_holders(chain)
    if wanted is None:
        if len(active) < count:
            raise KeyServiceError(
                f"the chain has {len(active)} active key holder(s), {count} wanted"
            )
        chosen = active[:count]
    else:
        chosen = [to_checksum_address(a) for a in wanted]
        lowered = {a.lower() for a in active}
        for address in chosen:
            if address.lower() not in lowered:
                raise KeyServiceError(
                    f"{address} is not an active key holder (registered and staked) on chain"
                )
    holders = []
    for address in chosen:
        info = chain.keys.holder_of(address)
        key = bytes(info.key)
        if len(key) != 32 or not any(key):
            raise KeyServiceError(f"{address} has no X25519 key on chain")
        holders.append(Holder(address, key))
    return holders


@dataclass(frozen=True)
class HolderStanding:
    """A policy's holder as the chain sees it now: `staked` (registered, at least the minimum
    stake active: what a policy may name), `leaving` (its stake is unbonding, below the
    minimum; withdrawable at `unlocks_at`), `unstaked` (below the minimum, nothing unbonding)
    or `deregistered`. Holders are off-chain services: one that is no longer staked may still
    serve, but nothing of its own is at stake any more, and it may stop at any time."""

    address: str
    standing: str
    unlocks_at: int | None = None

    @property
    def staked(self) -> bool:
        return self.standing == "staked"


def holder_standings(chain: Any, holders: Sequence[str]) -> list[HolderStanding]:
    """Each of `holders` (a lease's policy, in share order) as the chain sees it now."""
    standings = []
    for address in holders:
        checksummed = to_checksum_address(address)
        info = chain.keys.holder_of(checksummed)
        if not info.registered:
            standings.append(HolderStanding(checksummed, "deregistered"))
        elif chain.keys.is_active_holder(checksummed):
            standings.append(HolderStanding(checksummed, "staked"))
        elif info.unbonding > 0:
            standings.append(HolderStanding(checksummed, "leaving", int(info.unlocks_at)))
        else:
            standings.append(HolderStanding(checksummed, "unstaked"))
    return standings


def policy_for(measurements: Sequence[bytes], failover: bool, deposit: KeyDeposit) -> Any:
    """The chain's KeyPolicy for `deposit` (cvm.chain.key_service)."""
    from cvm.chain.key_service import KeyPolicy  # type: ignore[import-not-found,unused-ignore]

    return KeyPolicy(
        measurements=tuple(bytes(m) for m in measurements),
        failover=failover,
        threshold=deposit.manifest.threshold,
        holders=tuple(deposit.manifest.holders),
        key_version=deposit.manifest.key_version,
        manifest_hash=deposit.manifest_hash,
    )


@dataclass(frozen=True)
class Deposited:
    lease_id: int
    key_version: int
    threshold: int
    holders: tuple[str, ...]
    manifest_hash: str
    secrets: int
    carried_roots: int
    exported_to: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lease_id": self.lease_id,
            "key_version": self.key_version,
            "threshold": self.threshold,
            "holders": list(self.holders),
            "manifest_hash": self.manifest_hash,
            "secrets": self.secrets,
            "carried_roots": self.carried_roots,
            "root_key_exported_to": self.exported_to,
        }


def deposit_body(deposit: KeyDeposit) -> Any:
    """The API's KeyDepositIn for `deposit`."""
    from cvm.api_models import KeyDepositIn

    return KeyDepositIn.model_validate(deposit.to_json())


def current_policy(chain: Any, lease_id: int) -> Any | None:
    """The lease's key policy on chain (None: it has none)."""
    if chain.keys is None:
        raise KeyServiceError("this deployment has no key service (no KeyService contract)")
    return chain.keys.key_policy_of(lease_id)


# How long a lease just created may take to reach the backend's index (its confirmation
# depth times the block time, plus a poll), and how often to look.
INDEX_WAIT_S = 120.0
INDEX_POLL_S = 0.25


def _wait_indexed(api: Any, lease_id: int, timeout_s: float = INDEX_WAIT_S) -> None:
    """Until the backend knows the lease (it takes a deposit only for an indexed lease): a
    deposit sent right after the create would be refused (404) while the indexer waits for
    the create's confirmations. Asked before anything is signed or sent on chain."""
    from cvm.api_client import ApiError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api.get_lease(lease_id)
            return
        except ApiError as exc:
            if exc.status_code != 404 or time.monotonic() > deadline:
                raise KeyServiceError(
                    f"the backend does not know lease {lease_id} yet ({exc}): nothing was"
                    f" deposited; run `cvm lease rekey {lease_id}` once it does"
                ) from exc
        time.sleep(INDEX_POLL_S)


def deposit_keys(
    chain: Any,
    api: Any,
    lease_id: int,
    *,
    renter: Any,
    holders: Sequence[Holder],
    threshold: int,
    measurements: Sequence[bytes],
    failover: bool,
    secrets: Mapping[str, bytes] = {},
    previous_root: tuple[int, bytes] | None = None,
    export_to: Path | None = None,
) -> Deposited:
    """A new key version for the lease: deposit at the backend, then the chain's policy.
    `api` must be signed in as the lease's renter; `renter` is its account."""
    check_measurements(measurements)
    _wait_indexed(api, lease_id)
    policy = current_policy(chain, lease_id)
    key_version = int(policy.key_version) + 1 if policy is not None else 1
    carried: dict[int, bytes] = {}
    if previous_root is not None:
        carried[previous_root[0]] = previous_root[1]
    if export_to is not None and export_to.expanduser().exists():
        raise KeyServiceError(f"{export_to} exists: not overwriting a root key file")
    deposit, root = make_deposit(
        chain_id=chain.deployment.chain_id,
        registry=chain.deployment.attestation_registry,
        lease_id=lease_id,
        key_version=key_version,
        threshold=threshold,
        holders=holders,
        renter=renter,
        secrets=secrets,
        previous_roots=carried or None,
    )
    try:
        if export_to is not None:
            export_root(export_to, lease_id, key_version, root.value)
    finally:
        root.forget()  # the deposit holds only ciphertext from here on
    # The chain first: a deposit whose upload then fails is repaired by a rekey (the next
    # version, from the chain's number), while a deposit uploaded first and a policy that
    # then failed would leave the backend holding a version the chain never named.
    chain.keys.set_key_policy(lease_id, policy_for(measurements, failover, deposit))
    try:
        api.put_keys(lease_id, deposit_body(deposit))
    except Exception as exc:
        raise KeyServiceError(
            f"the chain's key policy of lease {lease_id} names key version {key_version}, but"
            f" the backend did not take its shares ({exc}): run `cvm lease rekey {lease_id}`"
        ) from exc
    return Deposited(
        lease_id=lease_id,
        key_version=key_version,
        threshold=threshold,
        holders=deposit.manifest.holders,
        manifest_hash="0x" + deposit.manifest_hash.hex(),
        secrets=len(secrets),
        carried_roots=len(carried),
        exported_to=str(export_to) if export_to is not None else None,
    )
