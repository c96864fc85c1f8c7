"""EIP-712 typed messages that node agents sign with their node key and the backend checks.

Every message is signed under the domain `{name: "cvm", version: "1", chainId,
verifyingContract: NodeRegistry}`, so a signature made for one chain or one deployment is
worthless on another (domain separation). Each message carries a `timestamp`; the backend
accepts it only inside a window around its own clock and only if it is newer than the last
one it accepted from the same node (replay protection).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_hex_address, to_checksum_address

DOMAIN_NAME = "cvm"
DOMAIN_VERSION = "1"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]

HEARTBEAT_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "freeVcpus", "type": "uint32"},
    {"name": "freeMemoryMib", "type": "uint32"},
    {"name": "freeDiskGib", "type": "uint32"},
    {"name": "runningLeases", "type": "uint32"},
    {"name": "timestamp", "type": "uint64"},
]

# A node agent reads the private spec (image, SSH key, cloud-init) of a lease it was matched
# to; the renter alone may read it otherwise (with a SIWE session). `nonce` is random and
# accepted once: a captured request cannot be replayed inside the timestamp window.
LEASE_SPEC_REQUEST_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "nonce", "type": "uint64"},
]

# A node uploads the evidence of its attestation for lease `leaseId` under the lease's
# attestation `nonce`; `evidenceHash` (keccak256 of the bytes) binds the signature to exactly
# the uploaded bundle, so it cannot be reused for other bytes, another lease or nonce.
EVIDENCE_UPLOAD_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "nonce", "type": "uint64"},
    {"name": "evidenceHash", "type": "bytes32"},
    {"name": "timestamp", "type": "uint64"},
]

# A node ships the tail of a lease's guest console: `chunkHash` (keccak256 of the bytes)
# binds the signature to exactly these bytes at stream `offset`; `nonce` is random and
# accepted once, so a captured upload cannot be replayed inside the timestamp window.
CONSOLE_UPLOAD_TYPE = [
    {"name": "node", "type": "address"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "offset", "type": "uint64"},
    {"name": "chunkHash", "type": "bytes32"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "nonce", "type": "uint64"},
]


class SignatureError(ValueError):
    """A typed message or its signature is malformed, or was signed by someone else."""


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one cvm deployment."""

    chain_id: int
    node_registry: str

    def as_eip712(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": _address(self.node_registry, "verifyingContract"),
        }


class NodeMessage:
    """A typed message a node signs with its node key. Its fields are `EIP712_FIELDS`, each the
    snake_case attribute of its camelCase name: the checks of every value and the signed
    message follow from those types, so a new message declares its fields and nothing else."""

    EIP712_TYPE: ClassVar[str]
    EIP712_FIELDS: ClassVar[list[dict[str, str]]]
    EIP712_WHAT: ClassVar[str]  # how errors name it ("heartbeat", "evidence upload", ...)
    # Struct types its fields use as `Name[]`: the attribute holds a tuple of tuples, each
    # one struct's values in its fields' order (at most MAX_ARRAY of them).
    EIP712_STRUCTS: ClassVar[dict[str, list[dict[str, str]]]] = {}

    node: str

    def __post_init__(self) -> None:
        for field in self.EIP712_FIELDS:
            name = _attribute(field["name"])
            struct = self._struct_of(field["type"])
            if struct is None:
                _check(getattr(self, name), field["type"], name)
                continue
            items = getattr(self, name)
            if not isinstance(items, tuple) or len(items) > MAX_ARRAY:
                raise SignatureError(f"{name} must be a tuple of at most {MAX_ARRAY} entries")
            for item in items:
                if not isinstance(item, tuple) or len(item) != len(struct):
                    raise SignatureError(f"each of {name} is a tuple of {len(struct)} values")
                for value, member in zip(item, struct, strict=True):
                    _check(value, member["type"], f"{name}.{_attribute(member['name'])}")

    def _struct_of(self, eip712_type: str) -> list[dict[str, str]] | None:
        if eip712_type.endswith("[]") and eip712_type[:-2] in self.EIP712_STRUCTS:
            return self.EIP712_STRUCTS[eip712_type[:-2]]
        return None

    def as_eip712(self) -> dict[str, Any]:
        message = {}
        for field in self.EIP712_FIELDS:
            value = getattr(self, _attribute(field["name"]))
            struct = self._struct_of(field["type"])
            if struct is not None:
                names = [member["name"] for member in struct]
                value = [dict(zip(names, item, strict=True)) for item in value]
            message[field["name"]] = value
        message["node"] = to_checksum_address(self.node)
        return message


@dataclass(frozen=True)
class Heartbeat(NodeMessage):
    """A node's free capacity at `timestamp` (unix seconds), signed by its node key."""

    EIP712_TYPE: ClassVar[str] = "Heartbeat"
    EIP712_FIELDS: ClassVar[list[dict[str, str]]] = HEARTBEAT_TYPE
    EIP712_WHAT: ClassVar[str] = "heartbeat"

    node: str
    free_vcpus: int
    free_memory_mib: int
    free_disk_gib: int
    running_leases: int
    timestamp: int


@dataclass(frozen=True)
class SignedHeartbeat:
    """A heartbeat and its 65-byte signature, in the JSON shape of the heartbeat endpoint."""

    heartbeat: Heartbeat
    signature: str  # 0x-prefixed hex, r || s || v

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = asdict(self.heartbeat)
        body["node"] = to_checksum_address(self.heartbeat.node)
        body["signature"] = self.signature
        return body


@dataclass(frozen=True)
class LeaseSpecRequest(NodeMessage):
    """A node's request, at `timestamp`, for the private spec of lease `lease_id`.

    `nonce` is chosen at random by the node; the backend accepts each (node, nonce) once.
    """

    EIP712_TYPE: ClassVar[str] = "LeaseSpecRequest"
    EIP712_FIELDS: ClassVar[list[dict[str, str]]] = LEASE_SPEC_REQUEST_TYPE
    EIP712_WHAT: ClassVar[str] = "spec request"

    node: str
    lease_id: int
    timestamp: int
    nonce: int  # required: a default would let every caller sign the same, single-use nonce


@dataclass(frozen=True)
class EvidenceUpload(NodeMessage):
    """A node's upload, at `timestamp`, of the evidence bundle hashed `evidence_hash` for
    lease `lease_id` under its attestation `nonce` (both as inside the bundle)."""

    EIP712_TYPE: ClassVar[str] = "EvidenceUpload"
    EIP712_FIELDS: ClassVar[list[dict[str, str]]] = EVIDENCE_UPLOAD_TYPE
    EIP712_WHAT: ClassVar[str] = "evidence upload"

    node: str
    lease_id: int
    nonce: int
    evidence_hash: bytes
    timestamp: int


@dataclass(frozen=True)
class ConsoleUpload(NodeMessage):
    """A node's upload, at `timestamp`, of guest-console bytes hashed `chunk_hash` that
    start at stream position `offset` of lease `lease_id`'s console."""

    EIP712_TYPE: ClassVar[str] = "ConsoleUpload"
    EIP712_FIELDS: ClassVar[list[dict[str, str]]] = CONSOLE_UPLOAD_TYPE
    EIP712_WHAT: ClassVar[str] = "console upload"

    node: str
    lease_id: int
    offset: int
    chunk_hash: bytes
    timestamp: int
    nonce: int


def node_message(message: NodeMessage, domain: Domain) -> SignableMessage:
    """The EIP-712 signable form of `message` under `domain`."""
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": _DOMAIN_TYPE,
                message.EIP712_TYPE: message.EIP712_FIELDS,
                **message.EIP712_STRUCTS,
            },
            "primaryType": message.EIP712_TYPE,
            "domain": domain.as_eip712(),
            "message": message.as_eip712(),
        }
    )


def sign_node_message(message: NodeMessage, domain: Domain, private_key: bytes | str) -> str:
    """Sign `message` with the node key, which must be its `node`; the 0x-hex signature."""
    signer = Account.from_key(private_key)
    if signer.address.lower() != message.node.lower():
        raise SignatureError(f"node key {signer.address} does not belong to node {message.node}")
    signed = signer.sign_message(node_message(message, domain))
    return "0x" + bytes(signed.signature).hex()


def recover_node_signer(message: NodeMessage, signature: str, domain: Domain) -> str:
    """The checksum address that signed `message` under `domain`."""
    return _recover(node_message(message, domain), signature)


def verify_node_message(message: NodeMessage, signature: str, domain: Domain) -> None:
    """Raise `SignatureError` unless `message` was signed by its own `node` key."""
    signer = recover_node_signer(message, signature, domain)
    if signer.lower() != message.node.lower():
        raise SignatureError(f"{message.EIP712_WHAT} for {message.node} was signed by {signer}")


def sign_heartbeat(
    heartbeat: Heartbeat, domain: Domain, private_key: bytes | str
) -> SignedHeartbeat:
    """Sign a heartbeat with the node key; the key must belong to `heartbeat.node`."""
    return SignedHeartbeat(heartbeat, sign_node_message(heartbeat, domain, private_key))


def check_timestamp(timestamp: int, now: int, window_s: int) -> None:
    """Raise `SignatureError` unless `timestamp` is within `window_s` seconds of `now`."""
    if abs(timestamp - now) > window_s:
        raise SignatureError(
            f"timestamp {timestamp} is outside the {window_s}s window around {now}"
        )


def _recover(message: SignableMessage, signature: str) -> str:
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError as exc:
        raise SignatureError("signature is not hex") from exc
    if len(raw) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(raw)}")
    try:
        return str(Account.recover_message(message, signature=raw))
    except Exception as exc:  # eth-keys raises several types for an invalid (r, s, v)
        raise SignatureError(f"invalid signature: {exc}") from exc


def _address(value: str, field: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise SignatureError(f"{field} is not a 20-byte hex address: {value!r}")
    return to_checksum_address(value)


def _attribute(eip712_name: str) -> str:
    """`leaseId` -> `lease_id`: the dataclass attribute of an EIP-712 field."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", eip712_name).lower()


# A host name is at most 253 characters (RFC 1035); no field of ours needs a longer string.
_MAX_STRING = 253
# No array of ours needs more entries (a guest forwards at most 32 ports).
MAX_ARRAY = 32


def _check(value: Any, eip712_type: str, field: str) -> None:
    """Refuse a value its EIP-712 type cannot carry (encode_typed_data would fail or wrap)."""
    if eip712_type == "address":
        _address(value, field)
    elif eip712_type.startswith("uint"):
        _bounded(value, 2 ** int(eip712_type[4:]) - 1, field)
    elif eip712_type == "bytes32":
        if not isinstance(value, bytes) or len(value) != 32:
            raise SignatureError(f"{field} must be 32 bytes")
    elif eip712_type == "string":
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_STRING:
            raise SignatureError(f"{field} must be a string of 1 to {_MAX_STRING} characters")
    else:  # a new type needs its check here before a message may use it
        raise TypeError(f"no check for EIP-712 type {eip712_type} ({field})")


def _bounded(value: int, maximum: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise SignatureError(f"{field} must be an integer in [0, {maximum}], got {value!r}")
