"""The EIP-712 `GuestResult` a guest's attested signer signs, and `AttestedService` checks.

Domain {name "cvm.guest", version "1", chainId, verifyingContract = the AttestationRegistry};
type `GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)` with resultHash =
keccak256(result). The key is made inside the guest at boot and vouched for on chain by
`attestedSignerOf(leaseId)`; the node key never signs results (a dApp refuses it).
"""

from __future__ import annotations

from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "cvm.guest"
DOMAIN_VERSION = "1"

GUEST_RESULT_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "request", "type": "bytes32"},
    {"name": "resultHash", "type": "bytes32"},
]


def guest_result_message(
    lease_id: int, request: bytes, result: bytes, chain_id: int, registry: str
) -> SignableMessage:
    """The signable `GuestResult` for `result` to `request` of `lease_id` on one deployment."""
    if len(request) != 32:
        raise ValueError("request must be 32 bytes")
    return encode_typed_data(
        domain_data={
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(registry),
        },
        message_types={"GuestResult": GUEST_RESULT_TYPE},
        message_data={"leaseId": lease_id, "request": request, "resultHash": keccak(result)},
    )


def sign_guest_result(
    signer: LocalAccount, lease_id: int, request: bytes, result: bytes, chain_id: int, registry: str
) -> bytes:
    """The 65-byte signature (r || s || v) of `signer` over the `GuestResult`."""
    message = guest_result_message(lease_id, request, result, chain_id, registry)
    return bytes(signer.sign_message(message).signature)
