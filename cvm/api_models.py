"""The wire format of the backend's `/v1` API, defined once for the server and the client.

Everything both sides must agree on lives here: request and response bodies, the
statuses they carry, the headers of node-signed requests and `private_spec_hash`.
Names follow the chain's vocabulary: a node's `price_per_vcpu_second` is what one vCPU
costs per second (`NodeSpec.pricePerSecondPerUnit` on chain); a lease's `rate_per_second`
is what the whole lease pays per second, `max_rate_per_second` the most its renter pays.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from eth_utils import keccak
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from cvm import guest_eip712
from cvm.attestation.amd_root import AmdRoot

# Headers a node sends with a request signed by its node key (EIP-712 LeaseSpecRequest,
# EvidenceUpload); NONCE_HEADER carries a spec request's single-use random nonce.
NODE_HEADER = "X-CVM-Node"
TIMESTAMP_HEADER = "X-CVM-Timestamp"
SIGNATURE_HEADER = "X-CVM-Signature"
NONCE_HEADER = "X-CVM-Nonce"
# On an evidence download: the root its report chained to, once a verifier checked it.
AMD_ROOT_HEADER = "X-CVM-AMD-Root"
# Answered with 429: seconds until the caller may try again.
RETRY_AFTER_HEADER = "Retry-After"


class LeaseState(StrEnum):
    """A lease's status as the API and the store spell it (`cvm.chain.LeaseStatus` by name)."""

    OPEN = "open"
    ACTIVE = "active"
    CLOSED = "closed"


class AttestationState(StrEnum):
    """A lease's latest attestation (`cvm.chain.AttestationStatus` by name).

    The store keeps pending, verified and rejected; `expired` is a verified one past its
    `expires_at`, and `none` a lease without any.
    """

    NONE = "none"
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    EXPIRED = "expired"


def private_spec_hash(
    renter: str, image: str, ssh_public_key: str | None, cloud_init: str | None
) -> str:
    """The `specHash` a lease carries on chain: keccak256 of the canonical private spec.

    Canonical = JSON with sorted keys, no spaces, UTF-8; the renter is part of it so that
    two renters with the same image never share (or can claim) one spec record.
    """
    canonical = json.dumps(
        {
            "cloud_init": cloud_init,
            "image": image,
            "renter": renter.lower(),
            "ssh_public_key": ssh_public_key,
            "version": 1,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return "0x" + keccak(canonical).hex()


# --- value types of request bodies ----------------------------------------------------------

Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Hex32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]
Uint32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Uint64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
LeaseId = Annotated[int, Field(ge=0, le=2**63 - 1)]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the store.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class _Body(BaseModel):
    # A request with a field the server does not know is a mistake worth a 422.
    model_config = ConfigDict(extra="forbid")


class _View(BaseModel):
    # Newer servers may add fields; old clients must keep working.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorBody(_View):
    """The body of every error response."""

    detail: str


# --- health and chain ---------------------------------------------------------------------


class Health(_View):
    status: Literal["ok"]


class Readiness(_View):
    status: Literal["ready", "not ready"]
    database: bool
    indexed_block: int | None


class ChainInfo(_View):
    chain_id: int
    node_registry: str
    lease_market: str
    attestation_registry: str
    token: str | None = None


# --- nodes --------------------------------------------------------------------------------


class NodeView(_View):
    address: str
    operator: str
    tee_type: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    region: int
    price_per_vcpu_second: int
    stake: int
    active: bool
    endpoint: str
    free_vcpus: int | None = None
    free_memory_mib: int | None = None
    free_disk_gib: int | None = None
    running_leases: int | None = None
    last_heartbeat_at: datetime | None = None
    reputation: float


class HeartbeatIn(_Body):
    """Free capacity as the node sees it, signed by its node key (EIP-712 `Heartbeat`)."""

    node: Address
    free_vcpus: Uint32
    free_memory_mib: Uint32
    free_disk_gib: Uint32
    running_leases: Uint32
    timestamp: Uint64
    signature: Signature


class HeartbeatReceipt(_View):
    node: str
    timestamp: int
    accepted: bool = True


# --- leases -------------------------------------------------------------------------------


class LeaseNodeView(_View):
    """One node's time on a lease: accepted at, until (None: serving it now) and why it
    ended (`first_attestation_missed`, `attestation_expired`, `node_exit`,
    `attestation_rejected` or `verdict_overturned`: the lease failed over to another node;
    `declined`; `closed`).
    Times are block timestamps (unix seconds)."""

    node: str
    accepted_at: int
    ended_at: int | None = None
    reason: str | None = None


class LeaseView(_View):
    id: int
    renter: str
    node: str | None
    status: LeaseState
    tee_type: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    min_node_stake: int
    max_rate_per_second: int
    rate_per_second: int | None
    deposit: int
    spec_hash: str
    expected_measurement: str
    reattest_interval: int
    created_block: int
    has_private_spec: bool
    # The root the verifier found for the lease's latest report (None before one verified):
    # `simulated` means the local stack's simulated AMD-SP signed it, not an AMD chip.
    amd_root: AmdRoot | None = None
    # The nodes that served the lease, oldest first (a lease that failed over has several).
    nodes: list[LeaseNodeView] = Field(default_factory=list)


class LeaseIntent(_Body):
    """The private spec of a lease about to be created (the server computes its hash)."""

    image: Annotated[Text, StringConstraints(min_length=1, max_length=2048)]
    ssh_public_key: Annotated[Text, StringConstraints(max_length=16384)] | None = None
    cloud_init: Annotated[Text, StringConstraints(max_length=65536)] | None = None


class PrivateSpec(_View):
    """The private part of a lease: only its renter (and its node) may read it."""

    spec_hash: str
    image: str
    ssh_public_key: str | None = None
    cloud_init: str | None = None


class VerificationView(_View):
    ok: bool
    reason_codes: list[str]
    detail: dict[str, Any]
    report_hash: str
    checked_at: datetime
    confirm_tx: str | None
    # `amd` (a pinned AMD ARK) or `simulated` (the simulated AMD-SP, trusted only by a local
    # stack's verifier); None when the report did not verify.
    amd_root: AmdRoot | None = None


class DisputeView(_View):
    """A dispute of the verdict on chain: the EVM re-checked the report."""

    disputer: str
    # The verdict disputed (verified or rejected), and whether the EVM reversed it.
    verdict: AttestationState | None
    overturned: bool
    disputed_at: int
    tx_hash: str


class AttestationView(_View):
    lease_id: int
    status: AttestationState
    node: str | None
    report_hash: str | None
    measurement: str | None
    submitted_at: int | None
    verified_at: int | None
    expires_at: int | None
    verification: VerificationView | None
    # When the verifiers' verdict landed, and until when anyone may dispute it on chain
    # (None while pending, or on a deployment without disputes).
    decided_at: int | None = None
    dispute_window_ends_at: int | None = None
    dispute: DisputeView | None = None


# --- evidence -----------------------------------------------------------------------------


class GuestKeyClaimView(_View):
    """Another lease's claim on a guest key (by the SHA-256 that REPORT_DATA binds): the
    lease whose evidence proved the key first (a genuine report of that lease binding it;
    evidence that only names a key claims nothing). `live`: that lease's current attestation
    (pending or verified) carries the key, so the verifiers reject the asker's report with
    it now; otherwise they will once that lease attests with it."""

    lease_id: int
    claimed_at: datetime
    live: bool


class EvidenceReceipt(_View):
    """What the backend stored. `key_claim_checked`: it looked, right after storing, for
    another lease's claim on the bundle's guest key, as `GET /v1/guest-keys/{hash}/claim`
    with this bundle's lease answers, and `key_claim` is that claim (None: the key is free
    for this lease), so the node needs no second request before it submits."""

    hash: str
    report_hash: str
    size: int
    key_claim_checked: bool = False
    key_claim: GuestKeyClaimView | None = None


# --- Sign-In with Ethereum ------------------------------------------------------------------


class NonceRequest(_Body):
    address: Address


class Challenge(_View):
    nonce: str
    message: str = Field(description="the EIP-4361 message to sign with personal_sign")
    expires_at: datetime


class Login(_Body):
    message: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    signature: Signature


class Session(_View):
    token: str
    address: str
    expires_at: datetime


# --- lease timeline (GET /leases/{id}/timeline and its Server-Sent Events stream) ---------

TIMELINE_STEPS = ("created", "matched", "accepted", "launched", "report_submitted", "verified")


class TimelineStep(_View):
    """One step of a lease's life: when it happened (Unix seconds, None while it has not)."""

    name: str
    at: int | None  # Unix seconds; None while the step has not happened
    detail: dict[str, Any] = {}


class LeaseTimeline(_View):
    """created -> matched -> accepted -> launched -> report_submitted -> verified, with times."""

    lease_id: int
    status: LeaseState
    steps: list[TimelineStep]
    rejected_at: int | None = None
    closed_at: int | None = None
    close_reason: int | None = None


# --- the web console (GET /console/config) -----------------------------------------------


class ConsoleConfig(_View):
    """Where the page reads the chain from (directly, not through this backend)."""

    chain_id: int
    rpc_url: str
    node_registry: str
    lease_market: str
    attestation_registry: str
    token: str | None
    demo_measurement: str | None
    local: bool  # a `cvm up` stack: the simulated AMD-SP signs its reports


# --- guest relay: sealed secrets and SSH access (issue 11) --------------------------------
# The backend carries these between the renter and the lease's node; it never holds a key
# that opens the secrets (they are HPKE-sealed to the attested guest's key).

# 30 KiB of ciphertext, hex-encoded: the whole JSON body then fits the backend's default
# body limit (CVM_API_MAX_BODY_BYTES, 64 KiB), so this documented limit is the real one.
MAX_SEALED_HEX = 60 * 1024
SealedHex = Annotated[
    str, StringConstraints(pattern=r"^(?:[0-9a-f]{2})+$", max_length=MAX_SEALED_HEX)
]


# Sequence numbers of sealed messages: the guest takes any uint64 above the last one it
# installed; the backend stores them as signed 64-bit integers, so 2**63 - 1 is the cap here.
MAX_SEALED_SEQ = guest_eip712.MAX_SEALED_SEQ


class SealedSecretsIn(_Body):
    """Secrets sealed by the renter's client to the guest that made the report whose
    REPORT_DATA this is, signed by the renter with their sequence number (EIP-712
    `SealedSecrets`, see cvm.guest_eip712 and cvm.attestation.release)."""

    report_data: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
    enc: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    ciphertext: SealedHex
    seq: Annotated[int, Field(ge=1, le=MAX_SEALED_SEQ)]
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{130}$")]


class SealedSecretsView(_View):
    id: int
    lease_id: int
    report_data: str
    enc: str
    ciphertext: str
    seq: int
    signature: str
    created_at: datetime


class SealedSeqView(_View):
    """The highest sequence number the backend holds for a lease's sealed messages (0: none).
    A hint for the renter's client, never trusted for security: the guest refuses any seq
    not above the last one it installed."""

    lease_id: int
    seq: int


class GuestStatusIn(_Body):
    """The guest's signed `status` (challenge zero), as the lease's node relays it: the seq
    the guest installed and its attested signer's EIP-712 GuestStatus signature."""

    seq: Annotated[int, Field(ge=0, le=MAX_SEALED_SEQ)]
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{130}$")]


class GuestStatusView(_View):
    """Untrusted as relayed: the renter's client checks the signature against the guest's
    attested signer (cvm.attestation.release.verify_status, challenge zero)."""

    lease_id: int
    seq: int
    signature: str
    updated_at: datetime


class GuestPort(_Body):
    """One service port of the guest: the node's `host_port` (on the access `host`) reaches
    the guest's TLS front on `guest_port`."""

    guest_port: Annotated[int, Field(ge=1, le=65535)]
    host_port: Annotated[int, Field(ge=1, le=65535)]


MAX_GUEST_PORTS = 32  # cvm.eip712.MAX_ARRAY: what one signed announcement can carry


def _sorted_guest_ports(ports: list[GuestPort]) -> list[GuestPort]:
    guest_ports = [port.guest_port for port in ports]
    if guest_ports != sorted(set(guest_ports)):
        raise ValueError("ports must be sorted by guest_port, each guest port once")
    return ports


class GuestAccessIn(_Body):
    """Where the lease's guest serves SSH and its service ports, signed by the node key
    (`cvm.guest_access`). `ports` sorted by guest port, each guest port once."""

    host: Annotated[Text, StringConstraints(min_length=1, max_length=253)]
    ssh_port: Annotated[int, Field(ge=1, le=65535)]
    ports: Annotated[
        list[GuestPort],
        Field(max_length=MAX_GUEST_PORTS),
        AfterValidator(_sorted_guest_ports),
    ] = []
    timestamp: Annotated[int, Field(ge=0, le=2**63 - 1)]
    signature: Signature


class GuestAccessView(_View):
    """Where the guest is reached. Untrusted as announced: a client trusts a port only after
    checking the server's key against the attested guest key (cvm.attested_tls)."""

    lease_id: int
    node: str
    host: str
    ssh_port: int
    ports: list[GuestPort] = []
    updated_at: datetime


# --- guest images by content address (issue 11) --------------------------------------------
# Images are public (their measurement is on chain anyway): anyone reads them, signed-in
# renters publish them, and every reader checks the files against the id it asked for.


class ImageComponent(_View):
    """One file of an image: `vmlinuz`, `initrd.cpio`, `manifest.json` (and `rootfs.img`
    in format v2)."""

    name: str
    sha256: str
    size: int


class ImageManifest(_View):
    """An image the backend serves: its id (the SHA-256 of the canonical JSON of the kernel's
    and initrd's hashes and the command line, see `cvm.images.image_id`) and its files."""

    image: str
    format: str
    cmdline: str
    components: list[ImageComponent]
    # Format v2: the workload's summary from manifest.json (name, ports, secrets, disk,
    # services); None for an image without a workload.
    workload: dict[str, Any] | None = None

    def component(self, name: str) -> ImageComponent:
        for item in self.components:
            if item.name == name:
                return item
        raise KeyError(name)


# --- guest console (issue 11): the host's copy of the guest's serial console --------------
# The node reads the console from QEMU's serial port on its own host: it sees (and could
# change) every byte, so the console is untrusted output, never evidence.

# What one signed console upload carries at most, and what the backend keeps per lease.
CONSOLE_CHUNK_MAX_BYTES = 32 * 1024
CONSOLE_TAIL_BYTES = 256 * 1024
# The stream offset of an upload's first byte (the signature covers it).
OFFSET_HEADER = "X-CVM-Offset"


class ConsoleReceipt(_View):
    """What the backend holds of a lease's console after an upload: bytes [start, end)."""

    lease_id: int
    start: int
    end: int


class LeaseConsoleView(_View):
    """The tail of a lease's guest console as its node shipped it (untrusted: the host
    sees and could alter it). `text` covers stream bytes [start, end), decoded as UTF-8."""

    lease_id: int
    node: str | None
    start: int
    end: int
    text: str
    updated_at: datetime | None
    source: Literal["host"] = "host"


# --- key service and snapshots (issue 20) ---------------------------------------------------
# Ciphertext only: shares are HPKE-sealed to their holders' X25519 keys, releases to the
# attested guest, the bundle and snapshots under keys derived from the lease's root key, which
# the backend never holds. What the backend checks is who may put and read what, and sizes.

MAX_KEY_HOLDERS = guest_eip712.MAX_KEY_HOLDERS
MAX_SHARE_SEALED_BYTES = 512  # a holder's sealed share (a 32-byte share and its metadata)
MAX_RELEASE_SEALED_BYTES = 1024  # a holder's share sealed to the guest (INTERFACES 5)
HPKE_ENC_BYTES = 32  # DHKEM(X25519)'s encapsulated key
# The renter's sealed secret bundle: with 16 shares and the manifest, the JSON body still fits
# the backend's default body limit (CVM_API_MAX_BODY_BYTES, 64 KiB).
MAX_BUNDLE_BYTES = 32 * 1024
EPOCH_SIGNATURE_BYTES = 64  # Ed25519
MAX_EPOCH = 2**63 - 1  # the guest's uint64 epoch, as the store keeps it
# Snapshot objects: what one upload may carry (the guest chunks at 512 KiB).
SNAPSHOT_CHUNK_MAX_BYTES = 1024 * 1024
SNAPSHOT_MANIFEST_MAX_BYTES = 256 * 1024
# Who signs a holder request (cvm.holder_requests); with TIMESTAMP_HEADER, NONCE_HEADER and
# SIGNATURE_HEADER.
HOLDER_HEADER = "X-CVM-Holder"


def _base64_check(min_bytes: int, max_bytes: int) -> AfterValidator:
    """Standard, padded base64 of `min_bytes`..`max_bytes` bytes."""
    import base64
    import binascii

    def check(value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not standard base64") from None
        if not min_bytes <= len(raw) <= max_bytes:
            raise ValueError(f"must decode to {min_bytes}..{max_bytes} bytes, not {len(raw)}")
        return value

    return AfterValidator(check)


def _b64_chars(max_bytes: int) -> StringConstraints:
    return StringConstraints(
        pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=4 * ((max_bytes + 2) // 3)
    )


Hex32Plain = Annotated[str, StringConstraints(pattern=r"^(0x)?[0-9a-fA-F]{64}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
HexSignature = Annotated[str, StringConstraints(pattern=r"^(0x)?[0-9a-fA-F]{130}$")]
SealedShare = Annotated[
    str, _b64_chars(MAX_SHARE_SEALED_BYTES), _base64_check(1, MAX_SHARE_SEALED_BYTES)
]
SealedRelease = Annotated[
    str, _b64_chars(MAX_RELEASE_SEALED_BYTES), _base64_check(1, MAX_RELEASE_SEALED_BYTES)
]
HpkeEnc = Annotated[str, _b64_chars(HPKE_ENC_BYTES), _base64_check(HPKE_ENC_BYTES, HPKE_ENC_BYTES)]
SealedBundle = Annotated[str, _b64_chars(MAX_BUNDLE_BYTES), _base64_check(1, MAX_BUNDLE_BYTES)]
EpochSignature = Annotated[
    str,
    _b64_chars(EPOCH_SIGNATURE_BYTES),
    _base64_check(EPOCH_SIGNATURE_BYTES, EPOCH_SIGNATURE_BYTES),
]


def _distinct_holders(holders: list[str]) -> list[str]:
    if len({holder.lower() for holder in holders}) != len(holders):
        raise ValueError("each holder once")
    return holders


class KeyManifestJson(_Body):
    """The renter-signed EIP-712 `KeyManifest` as JSON: exactly the message's fields
    (cvm.guest_eip712.KEY_MANIFEST_TYPE), bytes32 as 0x-hex."""

    leaseId: LeaseId  # the EIP-712 field names, as signed
    keyVersion: Uint32
    threshold: Annotated[int, Field(ge=1, le=MAX_KEY_HOLDERS)]
    holders: Annotated[
        list[Address],
        Field(min_length=1, max_length=MAX_KEY_HOLDERS),
        AfterValidator(_distinct_holders),
    ]
    holderKeys: Annotated[list[Hex32], Field(min_length=1, max_length=MAX_KEY_HOLDERS)]
    rootCommitment: Hex32
    epochKey: Hex32

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (cvm.guest_eip712.key_manifest_message takes it)."""
        return self.model_dump()


class KeyShareIn(_Body):
    """One holder's share, HPKE-sealed to its X25519 key (holderKeys of the manifest)."""

    holder: Address
    enc: HpkeEnc
    ciphertext: SealedShare
    # The renter's EIP-712 KeyShare(manifestHash, index, sha256(enc || ciphertext)) signature
    # (cvm.guest_eip712.key_share_message): holders take only shares their renter signed.
    signature: HexSignature


class KeyDepositIn(_Body):
    """A lease's key deposit by its renter: the signed manifest, one sealed share per holder
    of the manifest (no more, no fewer) and the sealed secret bundle (or none)."""

    manifest: KeyManifestJson
    signature: HexSignature
    shares: Annotated[list[KeyShareIn], Field(min_length=1, max_length=MAX_KEY_HOLDERS)]
    bundle: SealedBundle | None = None


class KeyDepositView(_View):
    lease_id: int
    key_version: int
    manifest_hash: str  # 0x EIP-712 digest: the key policy's manifestHash
    holders: list[str]
    created_at: datetime


class KeyShareView(_View):
    """A share addressed to one holder; `cursor` orders them (ask `after` the last one)."""

    cursor: int
    lease_id: int
    key_version: int
    manifest: KeyManifestJson
    signature: str
    enc: str
    ciphertext: str
    share_signature: str  # the renter's KeyShare signature of (manifestHash, index, enc, ct)


class KeyReleaseIn(_Body):
    """A holder's share sealed to the attested guest that made `report_hash` (HPKE auth mode
    from the holder's X25519 key, aad = that report's REPORT_DATA)."""

    holder: Address
    key_version: Uint32
    report_hash: Hex32
    enc: HpkeEnc
    ciphertext: SealedRelease


class KeyReleaseView(_View):
    holder: str
    index: int  # the holder's share index (its place in manifest.holders, plus one)
    sender: str  # 0x-hex X25519 key of the holder (manifest.holderKeys[index - 1])
    key_version: int
    report_hash: str
    enc: str
    ciphertext: str
    created_at: datetime


class GuestKeysView(_View):
    """What the lease's node relays to its guest (`{"op": "keys", ...}`)."""

    lease_id: int
    key_version: int
    manifest: KeyManifestJson
    signature: str
    bundle: str | None
    releases: list[KeyReleaseView]


class EpochRecordIn(_Body):
    """The guest's epoch record: Ed25519 by the manifest's epochKey over `cvm.epoch.v1` ||
    chainId (32) || AttestationRegistry (20) || leaseId (32) || keyVersion (4) || epoch (8) ||
    snapshot (32), big-endian (cvm.api_models.epoch_record_message)."""

    epoch: Annotated[int, Field(ge=0, le=MAX_EPOCH)]
    snapshot: Hex32Plain
    key_version: Uint32
    signature: EpochSignature


class ChallengeRequestView(_View):
    """A lease's node asked the backend's failover watch to challenge the lease (its guest was
    relaunched): pending until the watch challenged it or found nothing to do."""

    lease_id: int
    node: str
    requested_at: datetime


class ReservationKeepaliveView(_View):
    """A matched node's reservation of a lease, kept alive while its guest boots before the
    accept: the next keepalive is due well before `deadline` (`expires_in_s` from the
    backend's clock), which never moves past `max_deadline`."""

    lease_id: int
    node: str
    status: str  # "reserved", or "accepted" (nothing to keep alive any more)
    deadline: datetime
    max_deadline: datetime
    expires_in_s: float


class EpochRecordView(_View):
    cursor: int
    lease_id: int
    epoch: int
    snapshot: str  # the manifest's object id (SHA-256, lower-case hex)
    key_version: int
    signature: str
    created_at: datetime


def epoch_record_message(
    chain_id: int,
    registry: str,
    lease_id: int,
    key_version: int,
    epoch: int,
    snapshot: bytes,
) -> bytes:
    """The bytes an epoch record's Ed25519 signature covers (INTERFACES section 6)."""
    if len(snapshot) != 32:
        raise ValueError("snapshot must be 32 bytes")
    return (
        b"cvm.epoch.v1"
        + chain_id.to_bytes(32, "big")
        + bytes.fromhex(registry.removeprefix("0x"))
        + lease_id.to_bytes(32, "big")
        + key_version.to_bytes(4, "big")
        + epoch.to_bytes(8, "big")
        + snapshot
    )


# A snapshot's manifest object starts with the clear list of its distinct chunk ids
# (guest/snapshot.py: MAGIC (8) || count (4 BE) || count x 32-byte ids || the sealed manifest,
# whose AEAD binds that header). The object's SHA-256 is the epoch record's `snapshot`, so the
# guest's signature commits to the list; the backend stores a record only once every chunk it
# lists is stored.
SNAPSHOT_MANIFEST_MAGIC = b"CVMSNAP2"
SNAPSHOT_MANIFEST_MAX_CHUNKS = 1024


def snapshot_manifest_chunks(data: bytes) -> list[str]:
    """The chunk ids (lower-case hex) a manifest object lists; ValueError if it lists none
    the guest's way (not a manifest object of this format, or malformed)."""
    if len(data) < 12 or data[:8] != SNAPSHOT_MANIFEST_MAGIC:
        raise ValueError("the snapshot manifest does not list its chunks")
    count = int.from_bytes(data[8:12], "big")
    end = 12 + 32 * count
    if count > SNAPSHOT_MANIFEST_MAX_CHUNKS or len(data) < end + 28:
        raise ValueError("the snapshot manifest's chunk list is malformed")
    ids = [data[i : i + 32].hex() for i in range(12, end, 32)]
    if len(set(ids)) != len(ids):
        raise ValueError("the snapshot manifest lists a chunk twice")
    return ids


class SnapshotObjectReceipt(_View):
    lease_id: int
    id: str  # SHA-256 of the bytes, lower-case hex
    size: int
    used_bytes: int  # what the lease's snapshot objects take now (the quota counts this)


class SnapshotLatestView(_View):
    """The newest snapshot an accepted epoch record names."""

    lease_id: int
    epoch: int
    manifest_id: str
    key_version: int
