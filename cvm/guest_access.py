"""Where a lease's guest serves SSH, as its node announces it: an EIP-712 message signed by
the node key, so the backend stores only what the lease's own node said.

The announcement is not what makes SSH safe (the renter pins the guest's attested host key;
a wrong address only fails the connection), but it keeps anyone else from redirecting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data

from cvm.eip712 import Domain, SignatureError

GUEST_ACCESS_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "host", "type": "string"},
    {"name": "sshPort", "type": "uint16"},
    {"name": "timestamp", "type": "uint64"},
]
_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


@dataclass(frozen=True)
class GuestAccess:
    node: str
    lease_id: int
    host: str
    ssh_port: int
    timestamp: int

    def as_eip712(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "leaseId": self.lease_id,
            "host": self.host,
            "sshPort": self.ssh_port,
            "timestamp": self.timestamp,
        }


def guest_access_message(access: GuestAccess, domain: Domain) -> SignableMessage:
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_TYPE, "GuestAccess": GUEST_ACCESS_TYPE},
            "primaryType": "GuestAccess",
            "domain": domain.as_eip712(),
            "message": access.as_eip712(),
        }
    )


def sign_guest_access(access: GuestAccess, domain: Domain, private_key: bytes | str) -> str:
    signer = Account.from_key(private_key)
    if signer.address.lower() != access.node.lower():
        raise SignatureError(f"node key {signer.address} does not belong to node {access.node}")
    signed = signer.sign_message(guest_access_message(access, domain))
    return "0x" + bytes(signed.signature).hex()


def verify_guest_access(access: GuestAccess, signature: str, domain: Domain) -> None:
    """Raise `SignatureError` unless `access` was signed by its own `node` key."""
    try:
        signer = Account.recover_message(
            guest_access_message(access, domain), signature=bytes.fromhex(signature[2:])
        )
    except Exception as exc:  # eth-keys raises several types for an invalid signature
        raise SignatureError(f"invalid signature: {exc}") from exc
    if str(signer).lower() != access.node.lower():
        raise SignatureError(f"guest access for {access.node} was signed by {signer}")
