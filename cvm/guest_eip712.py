"""EIP-712 messages between a renter, its guest and dApps (domain "cvm.guest", version "1",
chainId, verifyingContract = the deployment's AttestationRegistry).

- `SealedSecrets(uint256 leaseId,uint64 seq,bytes reportData,bytes enc,bytes ciphertext)`:
  signed by the lease's renter; the guest installs a sealed message only with this signature
  by the renter its HOST_DATA binds, and only when `seq` is above the last one it installed.
- `GuestStatus(uint256 leaseId,uint64 seq,bytes32 challenge)`: signed by the guest's attested
  signer; the sequence number the guest has installed (`challenge` is the asker's, for
  freshness). The renter's client compares it with what it sent: a withheld update shows.
- `GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)`: signed by the guest's
  attested signer, only on request of a process inside the guest (never of the host);
  `resultHash = keccak256(result)`. `AttestedService.postResult` checks it on chain.

Each struct has its own type hash, so no signature passes as another kind. The guest agent
(guest/agent.py) computes the same digests without eth_account; tests cross-check both.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "cvm.guest"
DOMAIN_VERSION = "1"
UINT64_MAX = 2**64 - 1
# The guest takes any uint64 seq, but the backend stores it as a signed 64-bit integer: one
# bound for the client, the API model and the store, so nothing is signed that cannot travel.
MAX_SEALED_SEQ = 2**63 - 1

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
SEALED_SECRETS_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "seq", "type": "uint64"},
    {"name": "reportData", "type": "bytes"},
    {"name": "enc", "type": "bytes"},
    {"name": "ciphertext", "type": "bytes"},
]
GUEST_STATUS_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "seq", "type": "uint64"},
    {"name": "challenge", "type": "bytes32"},
]
GUEST_RESULT_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "request", "type": "bytes32"},
    {"name": "resultHash", "type": "bytes32"},
]


def _typed(
    chain_id: int, registry: str, primary: str, fields: list[dict[str, str]], message: dict
) -> SignableMessage:
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
            "primaryType": primary,
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(registry),
            },
            "message": message,
        }
    )


def _seq(seq: int) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= UINT64_MAX:
        raise ValueError(f"seq must be a uint64, got {seq!r}")
    return seq


def sealed_secrets_message(
    chain_id: int,
    registry: str,
    lease_id: int,
    seq: int,
    report_data: bytes,
    enc: bytes,
    ciphertext: bytes,
) -> SignableMessage:
    return _typed(chain_id, registry, "SealedSecrets", SEALED_SECRETS_TYPE, {
        "leaseId": lease_id, "seq": _seq(seq), "reportData": report_data, "enc": enc,
        "ciphertext": ciphertext,
    })  # fmt: skip


def guest_status_message(
    chain_id: int, registry: str, lease_id: int, seq: int, challenge: bytes
) -> SignableMessage:
    if len(challenge) != 32:
        raise ValueError("challenge must be 32 bytes")
    return _typed(chain_id, registry, "GuestStatus", GUEST_STATUS_TYPE,
                  {"leaseId": lease_id, "seq": _seq(seq), "challenge": challenge})  # fmt: skip


def guest_result_message(
    chain_id: int, registry: str, lease_id: int, request: bytes, result: bytes
) -> SignableMessage:
    if len(request) != 32:
        raise ValueError("request must be 32 bytes")
    fields = {"leaseId": lease_id, "request": request, "resultHash": keccak(result)}
    return _typed(chain_id, registry, "GuestResult", GUEST_RESULT_TYPE, fields)


def digest(message: SignableMessage) -> bytes:
    """The 32 bytes that are signed: keccak256(0x19 0x01 || domainSeparator || structHash)."""
    return bytes(keccak(b"\x19" + message.version + message.header + message.body))


def recover(message: SignableMessage, signature: bytes | str) -> str:
    """The checksummed address that signed `message`; ValueError for a malformed signature."""
    try:
        return str(Account.recover_message(message, signature=signature))
    except Exception as exc:  # eth_keys raises several types for bad signatures
        raise ValueError(f"the signature does not recover: {exc}") from exc


def sign(message: SignableMessage, account: Any) -> bytes:
    """`account`'s 65-byte signature (r || s || v, v 27/28, low s) of `message`."""
    return bytes(account.sign_message(message).signature)


# --- KeyManifest (issue 20): the renter's word on a lease's key holders and key ----------------
# `KeyManifest(uint256 leaseId,uint32 keyVersion,uint8 threshold,address[] holders,
# bytes32[] holderKeys,bytes32 rootCommitment,bytes32 epochKey)`, signed by the lease's renter.
# Its JSON form (what the backend stores and relays, and the guest checks) is the EIP-712
# message itself: these keys, bytes32 as 0x-hex, addresses as 0x-hex.
# manifestHash = `digest(key_manifest_message(...))`, which the chain keeps in the lease's key
# policy. holders[i] holds share index i + 1 and is reached by its X25519 key holderKeys[i].
KEY_MANIFEST_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "keyVersion", "type": "uint32"},
    {"name": "threshold", "type": "uint8"},
    {"name": "holders", "type": "address[]"},
    {"name": "holderKeys", "type": "bytes32[]"},
    {"name": "rootCommitment", "type": "bytes32"},
    {"name": "epochKey", "type": "bytes32"},
]
MAX_KEY_HOLDERS = 16  # Shamir over pycryptodome's GF(2^128): share indices 1..16 (INTERFACES 1)


def _bytes32(value: bytes | str, name: str) -> bytes:
    raw = value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"{name} must be 32 bytes")
    return raw


def key_manifest_message(chain_id: int, registry: str, manifest: dict[str, Any]) -> SignableMessage:
    """The EIP-712 KeyManifest of `manifest` (its JSON form: the keys of KEY_MANIFEST_TYPE);
    ValueError if a field cannot be what its type says."""
    holders = list(manifest["holders"])
    keys = list(manifest["holderKeys"])
    threshold, version = manifest["threshold"], manifest["keyVersion"]
    if not 1 <= len(holders) <= MAX_KEY_HOLDERS or len(keys) != len(holders):
        raise ValueError(f"1 to {MAX_KEY_HOLDERS} holders, each with one holder key")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise ValueError("threshold must be an integer")
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold must be 1..{len(holders)} (the number of holders)")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**32:
        raise ValueError("keyVersion must be a uint32")
    lease_id = manifest["leaseId"]
    if isinstance(lease_id, bool) or not isinstance(lease_id, int) or not 0 <= lease_id < 2**256:
        raise ValueError("leaseId must be a uint256")
    return _typed(chain_id, registry, "KeyManifest", KEY_MANIFEST_TYPE, {
        "leaseId": lease_id, "keyVersion": version, "threshold": threshold,
        "holders": [to_checksum_address(holder) for holder in holders],
        "holderKeys": [_bytes32(key, "holderKeys[]") for key in keys],
        "rootCommitment": _bytes32(manifest["rootCommitment"], "rootCommitment"),
        "epochKey": _bytes32(manifest["epochKey"], "epochKey"),
    })  # fmt: skip


def key_manifest_hash(chain_id: int, registry: str, manifest: dict[str, Any]) -> bytes:
    """manifestHash: the full EIP-712 digest of the manifest (what the key policy stores)."""
    return digest(key_manifest_message(chain_id, registry, manifest))


# --- KeyShare (issue 20, red team B): the renter's word on each holder's sealed share -----------
# `KeyShare(bytes32 manifestHash,uint8 index,bytes32 shareHash)`, shareHash = sha256(enc ||
# ciphertext) of the HPKE-sealed share of holder index (manifest.holders[index - 1]). A share is
# HPKE base mode to the holder's public key, so anyone (the backend) can seal one; the holder
# takes only a share its lease's renter signed this way, so junk sealed by someone else can
# neither be kept nor block the renter's real share.
KEY_SHARE_TYPE = [
    {"name": "manifestHash", "type": "bytes32"},
    {"name": "index", "type": "uint8"},
    {"name": "shareHash", "type": "bytes32"},
]


def share_hash(enc: bytes, ciphertext: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(enc + ciphertext).digest()


def key_share_message(
    chain_id: int, registry: str, manifest_hash: bytes, index: int, enc: bytes, ciphertext: bytes
) -> SignableMessage:
    """The EIP-712 KeyShare of one sealed share; ValueError for an index out of 1..16."""
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_KEY_HOLDERS:
        raise ValueError(f"a share index is 1..{MAX_KEY_HOLDERS}")
    return _typed(chain_id, registry, "KeyShare", KEY_SHARE_TYPE, {
        "manifestHash": _bytes32(manifest_hash, "manifestHash"), "index": index,
        "shareHash": share_hash(enc, ciphertext),
    })  # fmt: skip
