"""EIP-712 typed messages that node agents sign with their node key and the backend checks.

Every message is signed under the domain `{name: "cvm", version: "1", chainId,
verifyingContract: NodeRegistry}`, so a signature made for one chain or one deployment is
worthless on another (domain separation). Each message carries a `timestamp`; the backend
accepts it only inside a window around its own clock and only if it is newer than the last
one it accepted from the same node (replay protection).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


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


@dataclass(frozen=True)
class Heartbeat:
    """A node's free capacity at `timestamp` (unix seconds), signed by its node key."""

    node: str
    free_vcpus: int
    free_memory_mib: int
    free_disk_gib: int
    running_leases: int
    timestamp: int

    def __post_init__(self) -> None:
        _address(self.node, "node")
        for name in ("free_vcpus", "free_memory_mib", "free_disk_gib", "running_leases"):
            _bounded(getattr(self, name), _UINT32_MAX, name)
        _bounded(self.timestamp, _UINT64_MAX, "timestamp")

    def as_eip712(self) -> dict[str, Any]:
        return {
            "node": to_checksum_address(self.node),
            "freeVcpus": self.free_vcpus,
            "freeMemoryMib": self.free_memory_mib,
            "freeDiskGib": self.free_disk_gib,
            "runningLeases": self.running_leases,
            "timestamp": self.timestamp,
        }


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
class LeaseSpecRequest:
    """A node's request, at `timestamp`, for the private spec of lease `lease_id`.

    `nonce` is chosen at random by the node; the backend accepts each (node, nonce) once.
    """

    node: str
    lease_id: int
    timestamp: int
    nonce: int = 0

    def __post_init__(self) -> None:
        _address(self.node, "node")
        _bounded(self.lease_id, 2**256 - 1, "lease_id")
        _bounded(self.timestamp, _UINT64_MAX, "timestamp")
        _bounded(self.nonce, _UINT64_MAX, "nonce")

    def as_eip712(self) -> dict[str, Any]:
        return {
            "node": to_checksum_address(self.node),
            "leaseId": self.lease_id,
            "timestamp": self.timestamp,
            "nonce": self.nonce,
        }


@dataclass(frozen=True)
class EvidenceUpload:
    """A node's upload, at `timestamp`, of the evidence bundle hashed `evidence_hash` for
    lease `lease_id` under its attestation `nonce` (both as inside the bundle)."""

    node: str
    lease_id: int
    nonce: int
    evidence_hash: bytes
    timestamp: int

    def __post_init__(self) -> None:
        _address(self.node, "node")
        _bounded(self.lease_id, 2**256 - 1, "lease_id")
        _bounded(self.nonce, _UINT64_MAX, "nonce")
        if not isinstance(self.evidence_hash, bytes) or len(self.evidence_hash) != 32:
            raise SignatureError("evidence_hash must be 32 bytes")
        _bounded(self.timestamp, _UINT64_MAX, "timestamp")

    def as_eip712(self) -> dict[str, Any]:
        return {
            "node": to_checksum_address(self.node),
            "leaseId": self.lease_id,
            "nonce": self.nonce,
            "evidenceHash": self.evidence_hash,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class ConsoleUpload:
    """A node's upload, at `timestamp`, of guest-console bytes hashed `chunk_hash` that
    start at stream position `offset` of lease `lease_id`'s console."""

    node: str
    lease_id: int
    offset: int
    chunk_hash: bytes
    timestamp: int
    nonce: int

    def __post_init__(self) -> None:
        _address(self.node, "node")
        _bounded(self.lease_id, 2**256 - 1, "lease_id")
        _bounded(self.offset, _UINT64_MAX, "offset")
        if not isinstance(self.chunk_hash, bytes) or len(self.chunk_hash) != 32:
            raise SignatureError("chunk_hash must be 32 bytes")
        _bounded(self.timestamp, _UINT64_MAX, "timestamp")
        _bounded(self.nonce, _UINT64_MAX, "nonce")

    def as_eip712(self) -> dict[str, Any]:
        return {
            "node": to_checksum_address(self.node),
            "leaseId": self.lease_id,
            "offset": self.offset,
            "chunkHash": self.chunk_hash,
            "timestamp": self.timestamp,
            "nonce": self.nonce,
        }


def _typed_message(
    primary_type: str, fields: list[dict[str, str]], message: dict[str, Any], domain: Domain
) -> SignableMessage:
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_TYPE, primary_type: fields},
            "primaryType": primary_type,
            "domain": domain.as_eip712(),
            "message": message,
        }
    )


def heartbeat_message(heartbeat: Heartbeat, domain: Domain) -> SignableMessage:
    """The EIP-712 signable form of a heartbeat."""
    return _typed_message("Heartbeat", HEARTBEAT_TYPE, heartbeat.as_eip712(), domain)


def lease_spec_request_message(request: LeaseSpecRequest, domain: Domain) -> SignableMessage:
    """The EIP-712 signable form of a node's request for a lease's private spec."""
    return _typed_message("LeaseSpecRequest", LEASE_SPEC_REQUEST_TYPE, request.as_eip712(), domain)


def sign_lease_spec_request(
    request: LeaseSpecRequest, domain: Domain, private_key: bytes | str
) -> str:
    """Sign a spec request with the node key; returns the 0x-hex signature."""
    signer = Account.from_key(private_key)
    if signer.address.lower() != request.node.lower():
        raise SignatureError(f"node key {signer.address} does not belong to node {request.node}")
    signed = signer.sign_message(lease_spec_request_message(request, domain))
    return "0x" + bytes(signed.signature).hex()


def verify_lease_spec_request(request: LeaseSpecRequest, signature: str, domain: Domain) -> None:
    """Raise `SignatureError` unless the request was signed by its own `node` key."""
    signer = _recover(lease_spec_request_message(request, domain), signature)
    if signer.lower() != request.node.lower():
        raise SignatureError(f"spec request for {request.node} was signed by {signer}")


def evidence_upload_message(upload: EvidenceUpload, domain: Domain) -> SignableMessage:
    """The EIP-712 signable form of a node's evidence upload."""
    return _typed_message("EvidenceUpload", EVIDENCE_UPLOAD_TYPE, upload.as_eip712(), domain)


def sign_evidence_upload(upload: EvidenceUpload, domain: Domain, private_key: bytes | str) -> str:
    """Sign an evidence upload with the node key; returns the 0x-hex signature."""
    signer = Account.from_key(private_key)
    if signer.address.lower() != upload.node.lower():
        raise SignatureError(f"node key {signer.address} does not belong to node {upload.node}")
    signed = signer.sign_message(evidence_upload_message(upload, domain))
    return "0x" + bytes(signed.signature).hex()


def verify_evidence_upload(upload: EvidenceUpload, signature: str, domain: Domain) -> None:
    """Raise `SignatureError` unless the upload was signed by its own `node` key."""
    signer = _recover(evidence_upload_message(upload, domain), signature)
    if signer.lower() != upload.node.lower():
        raise SignatureError(f"evidence upload for {upload.node} was signed by {signer}")


def console_upload_message(upload: ConsoleUpload, domain: Domain) -> SignableMessage:
    """The EIP-712 signable form of a node's console upload."""
    return _typed_message("ConsoleUpload", CONSOLE_UPLOAD_TYPE, upload.as_eip712(), domain)


def sign_console_upload(upload: ConsoleUpload, domain: Domain, private_key: bytes | str) -> str:
    """Sign a console upload with the node key; returns the 0x-hex signature."""
    signer = Account.from_key(private_key)
    if signer.address.lower() != upload.node.lower():
        raise SignatureError(f"node key {signer.address} does not belong to node {upload.node}")
    signed = signer.sign_message(console_upload_message(upload, domain))
    return "0x" + bytes(signed.signature).hex()


def verify_console_upload(upload: ConsoleUpload, signature: str, domain: Domain) -> None:
    """Raise `SignatureError` unless the upload was signed by its own `node` key."""
    signer = _recover(console_upload_message(upload, domain), signature)
    if signer.lower() != upload.node.lower():
        raise SignatureError(f"console upload for {upload.node} was signed by {signer}")


def sign_heartbeat(
    heartbeat: Heartbeat, domain: Domain, private_key: bytes | str
) -> SignedHeartbeat:
    """Sign a heartbeat with the node key; the key must belong to `heartbeat.node`."""
    signer = Account.from_key(private_key)
    if signer.address.lower() != heartbeat.node.lower():
        raise SignatureError(f"node key {signer.address} does not belong to node {heartbeat.node}")
    signed = signer.sign_message(heartbeat_message(heartbeat, domain))
    return SignedHeartbeat(heartbeat=heartbeat, signature="0x" + bytes(signed.signature).hex())


def recover_heartbeat_signer(heartbeat: Heartbeat, signature: str, domain: Domain) -> str:
    """The checksum address that signed this heartbeat under this domain."""
    return _recover(heartbeat_message(heartbeat, domain), signature)


def verify_heartbeat(signed: SignedHeartbeat, domain: Domain) -> None:
    """Raise `SignatureError` unless the heartbeat was signed by its own `node` key."""
    signer = recover_heartbeat_signer(signed.heartbeat, signed.signature, domain)
    if signer.lower() != signed.heartbeat.node.lower():
        raise SignatureError(f"heartbeat for {signed.heartbeat.node} was signed by {signer}")


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


def _bounded(value: int, maximum: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise SignatureError(f"{field} must be an integer in [0, {maximum}], got {value!r}")
