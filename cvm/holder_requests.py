"""Requests a key holder signs to the backend (issue 20): the client side, which the key holder
(`keyservice`) uses, and the check, which the backend uses. One implementation for both.

The scheme of the node's signed reads (`cvm.eip712.LeaseSpecRequest`: a timestamp inside a
window and a single-use random nonce) with its own EIP-712 domain name, `cvm.holder-read.v1`
(version "1", the deployment's chainId and NodeRegistry), so that no node message, renter
message or guest message passes as a holder request, nor a holder request of one deployment
on another. Unlike a node read it also binds what is asked: the method, the path with its
query, and the SHA-256 of the body (of nothing, for a read), so a captured signature opens
nothing but the one request it was made for.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_hex_address, to_checksum_address

from cvm.api_models import HOLDER_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cvm.eip712 import Domain, SignatureError, check_timestamp

HOLDER_DOMAIN_NAME = "cvm.holder-read.v1"
HOLDER_DOMAIN_VERSION = "1"


MAX_PATH_CHARS = 512
_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
HOLDER_REQUEST_TYPE = [
    {"name": "holder", "type": "address"},
    {"name": "method", "type": "string"},
    {"name": "path", "type": "string"},
    {"name": "bodyHash", "type": "bytes32"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "nonce", "type": "uint64"},
]


@dataclass(frozen=True)
class HolderRequest:
    """Holder `holder` asks `method path` (path with its query string, as sent, e.g.
    `/v1/keyholders/0x…/shares?after=3`) with a body hashing to `body_hash` (SHA-256)."""

    holder: str
    method: str
    path: str
    body_hash: bytes
    timestamp: int
    nonce: int

    def __post_init__(self) -> None:
        if not isinstance(self.holder, str) or not is_hex_address(self.holder):
            raise SignatureError(f"holder is not an address: {self.holder!r}")
        if self.method not in ("GET", "POST", "PUT", "DELETE"):
            raise SignatureError(f"method {self.method!r} is not signed by holders")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise SignatureError("path must start with /")
        if len(self.path) > MAX_PATH_CHARS:
            raise SignatureError(f"path longer than {MAX_PATH_CHARS} characters")
        if not isinstance(self.body_hash, bytes) or len(self.body_hash) != 32:
            raise SignatureError("body hash must be 32 bytes")
        for name in ("timestamp", "nonce"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise SignatureError(f"{name} must be a uint64")

    def signable(self, domain: Domain) -> SignableMessage:
        message: dict[str, Any] = {
            "holder": to_checksum_address(self.holder),
            "method": self.method,
            "path": self.path,
            "bodyHash": self.body_hash,
            "timestamp": self.timestamp,
            "nonce": self.nonce,
        }
        return encode_typed_data(
            full_message={
                "types": {"EIP712Domain": _DOMAIN_TYPE, "HolderRequest": HOLDER_REQUEST_TYPE},
                "primaryType": "HolderRequest",
                "domain": {
                    "name": HOLDER_DOMAIN_NAME,
                    "version": HOLDER_DOMAIN_VERSION,
                    "chainId": domain.chain_id,
                    "verifyingContract": to_checksum_address(domain.node_registry),
                },
                "message": message,
            }
        )


def body_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def sign_holder_request(
    private_key: bytes | str,
    domain: Domain,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    now: int | None = None,
) -> dict[str, str]:
    """The headers of `method path` with `body` signed by the holder's Ethereum key."""
    account = Account.from_key(private_key)
    request = HolderRequest(
        holder=account.address,
        method=method,
        path=path,
        body_hash=body_hash(body),
        timestamp=int(time.time()) if now is None else now,
        nonce=secrets.randbits(63),  # single use: the backend refuses a replayed request
    )
    signature = account.sign_message(request.signable(domain)).signature
    return {
        HOLDER_HEADER: account.address,
        TIMESTAMP_HEADER: str(request.timestamp),
        NONCE_HEADER: str(request.nonce),
        SIGNATURE_HEADER: "0x" + bytes(signature).hex(),
    }


def verify_holder_request(
    holder: str | None,
    timestamp: str | None,
    nonce: str | None,
    signature: str | None,
    *,
    method: str,
    path: str,
    body: bytes,
    domain: Domain,
    now: int,
    window_s: int,
) -> HolderRequest:
    """The request the headers sign, once its signature is the holder's own and its timestamp
    fresh; `SignatureError` otherwise. The caller spends its nonce (once) and checks the
    holder is one on chain."""
    if holder is None or timestamp is None or nonce is None or signature is None:
        raise SignatureError(f"a holder request needs the {HOLDER_HEADER}, timestamp, nonce and"
                             " signature headers")  # fmt: skip
    try:
        request = HolderRequest(
            holder=holder,
            method=method,
            path=path,
            body_hash=body_hash(body),
            timestamp=int(timestamp),
            nonce=int(nonce),
        )
    except ValueError as exc:
        raise SignatureError(f"malformed holder request: {exc}") from None
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raise SignatureError("signature is not hex") from None
    if len(raw) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(raw)}")
    try:
        signer = str(Account.recover_message(request.signable(domain), signature=raw))
    except Exception as exc:  # eth-keys raises several types for an invalid (r, s, v)
        raise SignatureError(f"invalid signature: {exc}") from None
    if signer.lower() != holder.lower():
        raise SignatureError(f"holder request for {holder} was signed by {signer}")
    check_timestamp(request.timestamp, now, window_s)
    return request


__all__ = [
    "HOLDER_DOMAIN_NAME",
    "HOLDER_HEADER",
    "HolderRequest",
    "body_hash",
    "sign_holder_request",
    "verify_holder_request",
]
