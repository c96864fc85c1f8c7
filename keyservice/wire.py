"""What a holder reads and writes, parsed strictly: the renter's KeyManifest (EIP-712), the
share a renter sealed to the holder, epoch records (Ed25519 by the manifest's epochKey), and
the share it seals to an attested guest (HPKE auth mode).

Everything here comes from the backend, which the holder does not trust: each parser bounds
sizes and types and raises `Refused` naming what does not hold (never the share itself).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from eth_account.messages import SignableMessage
from eth_utils import is_hex_address, to_checksum_address

from cvm import guest_eip712

# The renter's client (cvm.key_release, branch i-guestkeys: HOLDER_INFO) seals each holder's
# share with HPKE base mode to the holder's X25519 key, info DEPOSIT_INFO, aad = manifestHash;
# the plaintext is JSON {"lease_id", "key_version", "index", "share": b64(32 bytes)}.
DEPOSIT_INFO = b"cvm.keyholder.v1"
# The holder seals its share to the guest with HPKE auth mode (INTERFACES 5).
RELEASE_INFO = b"cvm.keyshare.v1"
EPOCH_TAG = b"cvm.epoch.v1"
SHARE_BYTES = 32
MAX_HOLDERS = 16
MAX_CIPHERTEXT_BYTES = 4096  # a share's JSON is ~150 bytes sealed
MAX_MANIFEST_BYTES = 8192
MAX_EPOCH = 2**63 - 1
UINT32_MAX = 2**32 - 1


class Refused(Exception):
    """A deposit, release or epoch record that does not pass a holder's check."""


def _suite() -> Any:
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    return CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
    )


def _int(value: Any, name: str, maximum: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise Refused(f"{name} must be an integer in [{minimum}, {maximum}]")
    return value


def unhex(value: Any, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * MAX_MANIFEST_BYTES:
        raise Refused(f"{name} must be a hex string")
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise Refused(f"{name} is not hex") from None
    if size is not None and len(raw) != size:
        raise Refused(f"{name} must be {size} bytes, got {len(raw)}")
    return raw


def unb64(value: Any, name: str, maximum: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * maximum:
        raise Refused(f"{name} must be base64 of at most {maximum} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"{name} is not base64") from None
    if len(raw) > maximum:
        raise Refused(f"{name} is over {maximum} bytes")
    return raw


@dataclass(frozen=True)
class KeyManifest:
    """The renter-signed KeyManifest (INTERFACES 2); JSON form = the EIP-712 message
    (camelCase keys, bytes32 and addresses as 0x-hex)."""

    lease_id: int
    key_version: int
    threshold: int
    holders: tuple[str, ...]
    holder_keys: tuple[bytes, ...]
    root_commitment: bytes
    epoch_key: bytes

    @classmethod
    def from_json(cls, data: Any) -> KeyManifest:
        if not isinstance(data, dict):
            raise Refused("the manifest is not a JSON object")
        try:
            holders, keys = data["holders"], data["holderKeys"]
            lease_id, version = data["leaseId"], data["keyVersion"]
            threshold, commitment, epoch_key = (
                data["threshold"], data["rootCommitment"], data["epochKey"],
            )  # fmt: skip
        except KeyError as exc:
            raise Refused(f"the manifest has no {exc.args[0]}") from None
        if not isinstance(holders, list) or not isinstance(keys, list):
            raise Refused("holders and holderKeys must be lists")
        if not 1 <= len(holders) <= MAX_HOLDERS or len(keys) != len(holders):
            raise Refused(f"1 to {MAX_HOLDERS} holders, each with one holder key")
        for holder in holders:
            if not isinstance(holder, str) or not is_hex_address(holder):
                raise Refused("a holder is not an address")
        checksummed = tuple(to_checksum_address(h) for h in holders)
        if len({h.lower() for h in checksummed}) != len(checksummed):
            raise Refused("a holder appears twice in the manifest")
        return cls(
            lease_id=_int(lease_id, "leaseId", 2**256 - 1),
            key_version=_int(version, "keyVersion", UINT32_MAX, 1),
            threshold=_int(threshold, "threshold", len(checksummed), 1),
            holders=checksummed,
            holder_keys=tuple(unhex(k, "holderKeys[]", 32) for k in keys),
            root_commitment=unhex(commitment, "rootCommitment", 32),
            epoch_key=unhex(epoch_key, "epochKey", 32),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "leaseId": self.lease_id,
            "keyVersion": self.key_version,
            "threshold": self.threshold,
            "holders": list(self.holders),
            "holderKeys": ["0x" + k.hex() for k in self.holder_keys],
            "rootCommitment": "0x" + self.root_commitment.hex(),
            "epochKey": "0x" + self.epoch_key.hex(),
        }

    def message(self, chain_id: int, registry: str) -> SignableMessage:
        """The renter-signed EIP-712 KeyManifest (one definition: cvm.guest_eip712)."""
        return guest_eip712.key_manifest_message(chain_id, registry, {
            "leaseId": self.lease_id, "keyVersion": self.key_version,
            "threshold": self.threshold, "holders": list(self.holders),
            "holderKeys": list(self.holder_keys), "rootCommitment": self.root_commitment,
            "epochKey": self.epoch_key,
        })  # fmt: skip

    def manifest_hash(self, chain_id: int, registry: str) -> bytes:
        return guest_eip712.digest(self.message(chain_id, registry))

    def signer(self, chain_id: int, registry: str, signature: bytes) -> str:
        try:
            return guest_eip712.recover(self.message(chain_id, registry), signature)
        except ValueError as exc:
            raise Refused(f"the manifest signature does not recover: {exc}") from None

    def index_of(self, holder: str) -> int:
        """The 1-based share index of `holder`, or Refused if it is not listed."""
        for position, listed in enumerate(self.holders):
            if listed.lower() == holder.lower():
                return position + 1
        raise Refused(f"{holder} is not among the manifest's holders")


def seal_deposit(
    holder_public: bytes, manifest_hash: bytes, lease_id: int, key_version: int, index: int,
    share: bytes,
) -> tuple[bytes, bytes]:  # fmt: skip
    """(enc, ciphertext) of one share for one holder, as the renter's client seals it."""
    suite = _suite()
    payload = json.dumps({"lease_id": lease_id, "key_version": key_version, "index": index,
                          "share": base64.b64encode(share).decode()}).encode()  # fmt: skip
    enc, context = suite.create_sender_context(
        suite.kem.deserialize_public_key(holder_public), info=DEPOSIT_INFO
    )
    return bytes(enc), bytes(context.seal(payload, aad=manifest_hash))


@dataclass(frozen=True)
class OpenedShare:
    lease_id: int
    key_version: int
    index: int
    share: bytes

    def __repr__(self) -> str:  # never show the share
        return f"OpenedShare(lease {self.lease_id}, v{self.key_version}, index {self.index})"


def open_deposit(
    private: x25519.X25519PrivateKey, manifest_hash: bytes, enc: bytes, ciphertext: bytes
) -> OpenedShare:
    from pyhpke import KEMKey

    suite = _suite()
    try:
        context = suite.create_recipient_context(
            enc, KEMKey.from_pyca_cryptography_key(private), info=DEPOSIT_INFO
        )
        payload = json.loads(context.open(ciphertext, aad=manifest_hash))
    except Exception:  # pyhpke raises its own errors for a bad seal; JSON its ValueError
        raise Refused("the share does not open with this holder's key for this manifest") from None
    if not isinstance(payload, dict):
        raise Refused("the opened share is not a JSON object")
    share = unb64(payload.get("share"), "share", SHARE_BYTES)
    if len(share) != SHARE_BYTES:
        raise Refused(f"a share is {SHARE_BYTES} bytes")
    return OpenedShare(
        lease_id=_int(payload.get("lease_id"), "lease_id", 2**256 - 1),
        key_version=_int(payload.get("key_version"), "key_version", UINT32_MAX, 1),
        index=_int(payload.get("index"), "index", MAX_HOLDERS, 1),
        share=share,
    )


@dataclass(frozen=True)
class EpochRecord:
    lease_id: int
    key_version: int
    epoch: int
    snapshot: bytes  # 32 bytes: the snapshot manifest's object id
    signature: bytes  # 64 bytes, Ed25519

    @classmethod
    def from_json(cls, data: Any) -> EpochRecord:
        if not isinstance(data, dict):
            raise Refused("an epoch record is not a JSON object")
        return cls(
            lease_id=_int(data.get("lease_id"), "lease_id", 2**256 - 1),
            key_version=_int(data.get("key_version"), "key_version", UINT32_MAX, 1),
            epoch=_int(data.get("epoch"), "epoch", MAX_EPOCH, 1),
            snapshot=unhex(data.get("snapshot"), "snapshot", 32),
            signature=unb64(data.get("signature"), "signature", 64),
        )

    def signed_bytes(self, chain_id: int, registry: str) -> bytes:
        return (
            EPOCH_TAG
            + chain_id.to_bytes(32, "big")
            + bytes.fromhex(to_checksum_address(registry)[2:])
            + self.lease_id.to_bytes(32, "big")
            + self.key_version.to_bytes(4, "big")
            + self.epoch.to_bytes(8, "big")
            + self.snapshot
        )

    def verify(self, epoch_key: bytes, chain_id: int, registry: str) -> None:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(epoch_key).verify(
                self.signature, self.signed_bytes(chain_id, registry)
            )
        except (InvalidSignature, ValueError):
            raise Refused(
                f"epoch {self.epoch} of lease {self.lease_id} is not signed by its epochKey"
            ) from None


def seal_release(
    holder_private: x25519.X25519PrivateKey,
    guest_hpke_public: bytes,
    report_data: bytes,
    *,
    lease_id: int,
    key_version: int,
    index: int,
    share: bytes,
    epoch: int,
    snapshot: bytes | None,
    epoch_signature: bytes | None = None,
    epoch_key_version: int | None = None,
) -> tuple[bytes, bytes]:
    """(enc, ciphertext): the share sealed to the guest key, HPKE auth mode (sender = the
    holder's X25519 key), aad = the report's REPORT_DATA (INTERFACES 5). An epoch above 0
    carries its record's signature: the guest counts no epoch its epoch key did not sign."""
    from pyhpke import KEMKey

    suite = _suite()
    payload = json.dumps(
        {
            "lease_id": lease_id,
            "key_version": key_version,
            "index": index,
            "share": base64.b64encode(share).decode(),
            "epoch": epoch,
            "snapshot": None if snapshot is None else snapshot.hex(),
            "epoch_signature": (
                None if epoch_signature is None else base64.b64encode(epoch_signature).decode()
            ),
            # The key version the record was signed under (an earlier one after a rekey).
            "epoch_key_version": key_version if epoch_key_version is None else epoch_key_version,
        }
    ).encode()
    enc, context = suite.create_sender_context(
        suite.kem.deserialize_public_key(guest_hpke_public),
        info=RELEASE_INFO,
        sks=KEMKey.from_pyca_cryptography_key(holder_private),
    )
    return bytes(enc), bytes(context.seal(payload, aad=report_data))
