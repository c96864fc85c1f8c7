"""Requests a key holder signs with its Ethereum key, and their check: one implementation for
the holder (keyservice) and the backend (its holder-signed routes).

A node's reads are signed as EIP-712 `LeaseSpecRequest`s (cvm.eip712); a holder's carry their
own domain tag, `cvm.holder-read.v1`, so no signature made for one role passes as the other's.
What is signed is the keccak256 of

    b"cvm.holder-read.v1" || chainId (32 BE) || verifyingContract (20) || holder (20)
    || keccak256(METHOD " " path-with-query) || timestamp (8 BE) || nonce (8 BE) || keccak256(body)

as an EIP-191 personal message (`encode_defunct(primitive=digest)`), where the domain is the
deployment's `cvm.eip712.Domain` (chain id, NodeRegistry) the backend already checks node
requests under. Method, path (as the server sees it, with `/v1` and the query) and body are
bound, so a captured signature is good for exactly one request; `nonce` is random and the
backend accepts each (holder, nonce) once inside the timestamp window (replay protection, as
`consume_request_nonce` does for nodes). Whether the address is a registered holder is the
backend's check on chain (KeyService.holderOf).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_hex_address, keccak, to_checksum_address

from cvm.api_models import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cvm.eip712 import Domain, SignatureError, check_timestamp

HOLDER_READ_TAG = b"cvm.holder-read.v1"
# The holder's address; the other three headers are the node requests' own.
HOLDER_HEADER = "X-CVM-Holder"
MAX_PATH_CHARS = 2048
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class HolderRequest:
    """One holder-signed request, as its headers and the request line carry it."""

    holder: str
    method: str
    path: str  # as the server sees it: `/v1/...`, with `?query` if any
    timestamp: int
    nonce: int
    body: bytes = b""

    def digest(self, domain: Domain) -> bytes:
        if not is_hex_address(self.holder):
            raise SignatureError(f"holder is not an address: {self.holder!r}")
        if not self.path.startswith("/") or len(self.path) > MAX_PATH_CHARS:
            raise SignatureError("the signed path must start with / and be at most 2048 chars")
        for name, value in (("timestamp", self.timestamp), ("nonce", self.nonce)):
            if isinstance(value, bool) or not 0 <= value <= UINT64_MAX:
                raise SignatureError(f"{name} must be a uint64, got {value!r}")
        contract = domain.as_eip712()["verifyingContract"]
        line = f"{self.method.upper()} {self.path}".encode()
        return bytes(
            keccak(
                HOLDER_READ_TAG
                + domain.chain_id.to_bytes(32, "big")
                + bytes.fromhex(contract[2:])
                + bytes.fromhex(to_checksum_address(self.holder)[2:])
                + keccak(line)
                + self.timestamp.to_bytes(8, "big")
                + self.nonce.to_bytes(8, "big")
                + keccak(self.body)
            )
        )


def sign_holder_request(
    private_key: bytes | str,
    domain: Domain,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    now: int | None = None,
    nonce: int | None = None,
) -> dict[str, str]:
    """The headers of `method path` (path with `/v1` and query) signed by the holder's key."""
    account = Account.from_key(private_key)
    request = HolderRequest(
        holder=account.address,
        method=method,
        path=path,
        timestamp=int(time.time()) if now is None else now,
        nonce=secrets.randbits(63) if nonce is None else nonce,
        body=body,
    )
    signed = account.sign_message(encode_defunct(primitive=request.digest(domain)))
    return {
        HOLDER_HEADER: account.address,
        TIMESTAMP_HEADER: str(request.timestamp),
        NONCE_HEADER: str(request.nonce),
        SIGNATURE_HEADER: "0x" + bytes(signed.signature).hex(),
    }


def verify_holder_request(
    headers: Mapping[str, str],
    domain: Domain,
    method: str,
    path: str,
    body: bytes,
    *,
    now: int,
    window_s: int,
) -> HolderRequest:
    """The verified request, or `SignatureError` saying what does not hold. The caller then
    spends its nonce (once per holder) and checks the holder is registered on chain."""
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        holder = lowered[HOLDER_HEADER.lower()]
        timestamp = int(lowered[TIMESTAMP_HEADER.lower()])
        nonce = int(lowered[NONCE_HEADER.lower()])
        signature = bytes.fromhex(lowered[SIGNATURE_HEADER.lower()].removeprefix("0x"))
    except KeyError as exc:
        raise SignatureError(f"a holder request needs the {exc.args[0]} header") from None
    except ValueError as exc:
        raise SignatureError(f"malformed holder request header: {exc}") from None
    if not is_hex_address(holder):
        raise SignatureError(f"{HOLDER_HEADER} is not an address")
    if len(signature) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(signature)}")
    request = HolderRequest(to_checksum_address(holder), method, path, timestamp, nonce, body)
    try:
        signer = Account.recover_message(
            encode_defunct(primitive=request.digest(domain)), signature=signature
        )
    except SignatureError:
        raise
    except Exception as exc:  # eth-keys raises several types for an invalid (r, s, v)
        raise SignatureError(f"invalid signature: {exc}") from None
    if signer.lower() != request.holder.lower():
        raise SignatureError(f"holder request for {request.holder} was signed by {signer}")
    check_timestamp(timestamp, now, window_s)
    return request


__all__ = [
    "HOLDER_HEADER",
    "HOLDER_READ_TAG",
    "HolderRequest",
    "sign_holder_request",
    "verify_holder_request",
]
