"""The EIP-712 `GuestResult` a guest's attested signer signs, and `AttestedService` checks.

Domain {name "cvm.guest", version "1", chainId, verifyingContract = the AttestationRegistry};
type `GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)` with resultHash =
keccak256(result). The key is made inside the guest at boot and vouched for on chain by
`attestedSignerOf(leaseId)`; the node key never signs results (a dApp refuses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

if TYPE_CHECKING:  # the client imports this module's package: no import cycle at run time
    from cvm.chain.client import ChainClient

DOMAIN_NAME = "cvm.guest"
DOMAIN_VERSION = "1"
SIGNATURE_BYTES = 65
# secp256k1's group order: OpenZeppelin's ECDSA.recover refuses s above half of it (the
# malleable twin of every signature), so the off-chain check refuses it too.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

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


def recover_guest_result(
    lease_id: int, request: bytes, result: bytes, signature: bytes, chain_id: int, registry: str
) -> str | None:
    """The checksummed address whose `GuestResult` signature `signature` is, or None when it
    is not one `AttestedService` would recover: not 65 bytes, v not 27/28, high s, no point."""
    if len(signature) != SIGNATURE_BYTES or signature[64] not in (27, 28):
        return None
    if int.from_bytes(signature[32:64], "big") > _SECP256K1_N // 2:
        return None
    message = guest_result_message(lease_id, request, result, chain_id, registry)
    try:
        return str(Account.recover_message(message, signature=signature))
    except Exception:  # eth_keys raises several types for a signature with no point
        return None


def verify_guest_result(
    chain: ChainClient,
    lease_id: int,
    request: bytes,
    result: bytes,
    signature: bytes,
    *,
    expected_measurement: bytes | None = None,
) -> bool:
    """Off chain, what `AttestedService.postResult` checks on chain: True only if `signature`
    is the `GuestResult` of `result` to `request` of `lease_id`, signed by the key the guest
    made at boot that the lease's current attestation vouches for (`attestedSignerOf`).
    False for the node key's signature, another lease's, a lease not attested now (or, given
    `expected_measurement`, not attested with that measurement), or a malformed signature.
    ValueError if `request` is not 32 bytes; chain errors propagate."""
    if len(request) != 32:
        raise ValueError("request must be 32 bytes")
    registry = chain.attestations
    if expected_measurement is not None and not registry.is_attested(
        lease_id, expected_measurement
    ):
        return False
    signer = registry.attested_signer_of(lease_id)
    if int(signer, 16) == 0:
        return False
    deployment = chain.deployment
    recovered = recover_guest_result(
        lease_id, request, result, signature, deployment.chain_id, deployment.attestation_registry
    )
    return recovered is not None and recovered.lower() == signer.lower()
