"""Where a lease's guest serves SSH, as its node announces it: an EIP-712 message signed by
the node key, so the backend stores only what the lease's own node said.

The announcement is not what makes SSH safe (the renter pins the guest's attested host key;
a wrong address only fails the connection), but it keeps anyone else from redirecting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cvm.eip712 import NodeMessage

GUEST_ACCESS_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "host", "type": "string"},
    {"name": "sshPort", "type": "uint16"},
    {"name": "timestamp", "type": "uint64"},
]


@dataclass(frozen=True)
class GuestAccess(NodeMessage):
    """Where lease `lease_id`'s guest serves SSH, as its node announced at `timestamp`."""

    EIP712_TYPE: ClassVar[str] = "GuestAccess"
    EIP712_FIELDS: ClassVar[list[dict[str, str]]] = GUEST_ACCESS_TYPE
    EIP712_WHAT: ClassVar[str] = "guest access"

    node: str
    lease_id: int
    host: str
    ssh_port: int
    timestamp: int
