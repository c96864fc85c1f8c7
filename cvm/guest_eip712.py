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
- `KeyManifest(uint256 leaseId,uint32 keyVersion,uint8 threshold,address[] holders,
  bytes32[] holderKeys,bytes32 rootCommitment,bytes32 epochKey)`: signed by the lease's renter;
  the threshold key of one key version (cvm.key_release). Its full digest is the
  `manifestHash` of the lease's on-chain key policy; the guest (guest/keyshares.py) combines
  shares only under a manifest the renter bound by HOST_DATA signed.

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
KEY_MANIFEST_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "keyVersion", "type": "uint32"},
    {"name": "threshold", "type": "uint8"},
    {"name": "holders", "type": "address[]"},
    {"name": "holderKeys", "type": "bytes32[]"},
    {"name": "rootCommitment", "type": "bytes32"},
    {"name": "epochKey", "type": "bytes32"},
]
MAX_KEY_HOLDERS = 16
UINT32_MAX = 2**32 - 1
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


def key_manifest_message(
    chain_id: int,
    registry: str,
    lease_id: int,
    key_version: int,
    threshold: int,
    holders: list[str],
    holder_keys: list[bytes],
    root_commitment: bytes,
    epoch_key: bytes,
) -> SignableMessage:
    """The renter's KeyManifest; ValueError for fields the guest would refuse anyway."""
    if isinstance(key_version, bool) or not isinstance(key_version, int):
        raise ValueError("keyVersion must be an integer")
    if not 1 <= key_version <= UINT32_MAX:
        raise ValueError(f"keyVersion must be a uint32 above 0, got {key_version}")
    n = len(holders)
    if not 1 <= n <= MAX_KEY_HOLDERS or len(holder_keys) != n:
        raise ValueError(f"1..{MAX_KEY_HOLDERS} holders, one X25519 key each")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= n:
        raise ValueError(f"threshold must be 1..{n}, got {threshold!r}")
    if any(len(k) != 32 for k in holder_keys) or len(root_commitment) != 32:
        raise ValueError("holder keys and rootCommitment are 32 bytes each")
    if len(epoch_key) != 32:
        raise ValueError("epochKey is 32 bytes")
    checksummed = [to_checksum_address(h) for h in holders]
    if len({h.lower() for h in checksummed}) != n:
        raise ValueError("a holder appears twice")
    return _typed(chain_id, registry, "KeyManifest", KEY_MANIFEST_TYPE, {
        "leaseId": lease_id, "keyVersion": key_version, "threshold": threshold,
        "holders": checksummed, "holderKeys": [bytes(k) for k in holder_keys],
        "rootCommitment": bytes(root_commitment), "epochKey": bytes(epoch_key),
    })  # fmt: skip


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
