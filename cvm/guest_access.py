"""Where a lease's guest serves SSH and its service ports, as its node announces it: an
EIP-712 message signed by the node key, so the backend stores only what the lease's own
node said.

The announcement is not what makes SSH or TLS safe (the renter pins the guest's attested SSH
host key and TLS key; a wrong address only fails the connection), but it keeps anyone else
from redirecting them. Replay: the backend accepts an announcement only inside its time
window and newer than the one it stored; the type hash (which names `PortForward`) keeps a
signature of the SSH-only shape from passing as this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cvm.eip712 import NodeMessage, SignatureError

# One forwarded service port: the node's `hostPort` on `host` reaches the guest's `guestPort`.
PORT_FORWARD_TYPE = [
    {"name": "guestPort", "type": "uint16"},
    {"name": "hostPort", "type": "uint16"},
]

GUEST_ACCESS_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "host", "type": "string"},
    {"name": "sshPort", "type": "uint16"},
    {"name": "ports", "type": "PortForward[]"},
    {"name": "timestamp", "type": "uint64"},
]


@dataclass(frozen=True)
class GuestAccess(NodeMessage):
    """Where lease `lease_id`'s guest serves SSH and its service ports (`ports`: (guest port,
    host port) pairs, sorted by guest port), as its node announced at `timestamp`."""

    EIP712_TYPE: ClassVar[str] = "GuestAccess"
    EIP712_FIELDS: ClassVar[list[dict[str, str]]] = GUEST_ACCESS_TYPE
    EIP712_STRUCTS: ClassVar[dict[str, list[dict[str, str]]]] = {"PortForward": PORT_FORWARD_TYPE}
    EIP712_WHAT: ClassVar[str] = "guest access"

    node: str
    lease_id: int
    host: str
    ssh_port: int
    ports: tuple[tuple[int, int], ...]
    timestamp: int

    def __post_init__(self) -> None:
        super().__post_init__()
        guest_ports = [guest for guest, _ in self.ports]
        if guest_ports != sorted(set(guest_ports)):
            raise SignatureError("ports must be sorted by guest port, each guest port once")
        if any(not guest or not host for guest, host in self.ports):
            raise SignatureError("a forwarded port is never 0")
