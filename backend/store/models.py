"""SQLAlchemy 2 models of everything the backend keeps.

Two kinds of tables. Chain projections (`nodes`, `leases`, `attestations`) are a pure
function of the indexed `chain_events`: a reorg deletes the events past the fork and
rebuilds the projections they touched. Off-chain records (heartbeats, evidence, lease
specs, matches, verifications, sessions) are written by the API and the services; they
refer to chain entities by id only (no foreign keys), so rebuilding a projection never
cascades into them.

Addresses are stored lower-case hex; hashes and measurements as 0x-prefixed lower-case hex.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backend.store.types import StrEnumType, Uint256, UtcDateTime
from cvm.api_models import AttestationState, LeaseState
from cvm.attestation.amd_root import AmdRoot

ADDRESS = String(42)
HASH = String(66)


class Base(DeclarativeBase):
    """Declarative base of every backend table."""


# --- chain projections -----------------------------------------------------------------


class Node(Base):
    """A node as registered on chain (NodeRegistry), plus its on-chain track record."""

    __tablename__ = "nodes"

    address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    operator: Mapped[str] = mapped_column(ADDRESS)
    tee_type: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    disk_gib: Mapped[int] = mapped_column(BigInteger)
    region: Mapped[int] = mapped_column(Integer, default=0)
    # What one vCPU costs per second (NodeSpec.pricePerSecondPerUnit on chain).
    price_per_vcpu_second: Mapped[int] = mapped_column(Uint256)
    endpoint: Mapped[str] = mapped_column(Text, default="")
    stake: Mapped[int] = mapped_column(Uint256, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    attestations_verified: Mapped[int] = mapped_column(Integer, default=0)
    attestations_rejected: Mapped[int] = mapped_column(Integer, default=0)
    faults: Mapped[int] = mapped_column(Integer, default=0)
    registered_block: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # The matcher's SQL twin (bench/matching.py) filters on these.
        Index("ix_nodes_match", "tee_type", "active", "vcpus", "memory_mib"),
    )


class Lease(Base):
    """A lease as created on chain (LeaseMarket), with its matched node once accepted."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    renter: Mapped[str] = mapped_column(ADDRESS, index=True)
    node: Mapped[str | None] = mapped_column(ADDRESS, index=True)
    status: Mapped[LeaseState] = mapped_column(StrEnumType(LeaseState), index=True)
    tee_type: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    disk_gib: Mapped[int] = mapped_column(BigInteger)
    min_node_stake: Mapped[int] = mapped_column(Uint256)
    # The whole lease's rate per second: the most its renter pays, and what the node charges.
    max_rate_per_second: Mapped[int] = mapped_column(Uint256)
    rate_per_second: Mapped[int | None] = mapped_column(Uint256)
    deposit: Mapped[int] = mapped_column(Uint256)
    spec_hash: Mapped[str] = mapped_column(HASH, index=True)
    expected_measurement: Mapped[str] = mapped_column(String(98))
    reattest_interval: Mapped[int] = mapped_column(BigInteger)
    attestation_nonce: Mapped[int] = mapped_column(BigInteger, default=0)
    created_block: Mapped[int] = mapped_column(BigInteger)
    accepted_block: Mapped[int | None] = mapped_column(BigInteger)
    closed_block: Mapped[int | None] = mapped_column(BigInteger)
    close_reason: Mapped[int | None] = mapped_column(Integer)


class Attestation(Base):
    """The latest attestation of a lease (AttestationRegistry)."""

    __tablename__ = "attestations"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(ADDRESS)
    # pending, verified or rejected; `expired` is derived when read.
    status: Mapped[AttestationState] = mapped_column(StrEnumType(AttestationState))
    report_hash: Mapped[str] = mapped_column(HASH, index=True)
    measurement: Mapped[str] = mapped_column(String(98))
    # The lease's attestation nonce this report was submitted under (bound in REPORT_DATA).
    nonce: Mapped[int] = mapped_column(BigInteger)
    submitted_block: Mapped[int] = mapped_column(BigInteger)
    submitted_at: Mapped[int] = mapped_column(BigInteger)
    verified_at: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    # When the verifiers' verdict (Verified or Rejected) landed.
    decided_at: Mapped[int | None] = mapped_column(BigInteger)
    # Until when its verdict may be disputed, as the registry says (`submissionOf`: the
    # submission time, the verification window and the lease's dispute window); read from
    # the chain once per submission, None before that or on a deployment without disputes.
    disputable_until: Mapped[int | None] = mapped_column(BigInteger)


class Dispute(Base):
    """A dispute of a verdict as the chain recorded it (`AttestationDisputed`): one per
    submission, the EVM's outcome included."""

    __tablename__ = "disputes"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    report_hash: Mapped[str] = mapped_column(HASH, primary_key=True)
    disputer: Mapped[str] = mapped_column(ADDRESS)
    # The verdict disputed (verified or rejected) and whether the EVM's check reversed it.
    verdict: Mapped[AttestationState | None] = mapped_column(StrEnumType(AttestationState))
    overturned: Mapped[bool] = mapped_column(Boolean)
    disputed_at: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(HASH)


class LeaseNode(Base):
    """One node's time on a lease, from its `LeaseAccepted` to the event that ended it:
    `LeaseFailedOver` (reason `first_attestation_missed`, `attestation_expired`, `node_exit`,
    `attestation_rejected` or `verdict_overturned`: the lease moved on), `LeaseDeclined`
    (`declined`) or `LeaseClosed` (`closed`); open-ended (ended_at None) for the node serving it
    now. A chain projection like the lease it belongs to."""

    __tablename__ = "lease_nodes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    node: Mapped[str] = mapped_column(ADDRESS, index=True)
    accepted_block: Mapped[int] = mapped_column(BigInteger)
    accepted_at: Mapped[int] = mapped_column(BigInteger)  # block timestamps (unix seconds)
    ended_block: Mapped[int | None] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(32))


# --- the indexer's own state -------------------------------------------------------------


class ChainEvent(Base):
    """One decoded log, exactly as applied; the source of every chain projection."""

    __tablename__ = "chain_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    block_hash: Mapped[str] = mapped_column(HASH)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(HASH)
    contract: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    # The projections the event feeds: a reorg rebuilds exactly these leases and nodes.
    lease_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    node: Mapped[str | None] = mapped_column(ADDRESS, index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("block_number", "log_index", name="uq_event_position"),)


class IndexedBlock(Base):
    """Hash of every block the indexer has applied: how a reorg is noticed."""

    __tablename__ = "indexed_blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(HASH)


class IndexerCursor(Base):
    """The last block the indexer applied completely (one row per chain)."""

    __tablename__ = "indexer_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_block: Mapped[int] = mapped_column(BigInteger)


# --- off-chain records ---------------------------------------------------------------------


class Heartbeat(Base):
    """The last signed heartbeat of a node: its free capacity as the node sees it."""

    __tablename__ = "heartbeats"

    node: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    free_vcpus: Mapped[int] = mapped_column(Integer)
    free_memory_mib: Mapped[int] = mapped_column(BigInteger)
    free_disk_gib: Mapped[int] = mapped_column(BigInteger)
    running_leases: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(132))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Evidence(Base):
    """Canonical evidence bytes (report, VCEK, chain), addressed by their keccak256."""

    __tablename__ = "evidence"

    hash: Mapped[str] = mapped_column(HASH, primary_key=True)
    report_hash: Mapped[str] = mapped_column(HASH, index=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # `0x` sha256 of the guest key the report proves bound to lease `lease_id` (REPORT_DATA
    # binds both, the report verifies: backend.domain.evidence.proves_key), None until
    # proven; `lease_id` is the lease the bundle names until then. The verifier finds
    # another lease's claim on a guest key through this index: only proven keys are claims.
    lease_id: Mapped[int | None] = mapped_column(BigInteger)
    guest_key_hash: Mapped[str | None] = mapped_column(HASH, index=True)


class PrivateSpec(Base):
    """The private part of a lease spec, bound on chain by `spec_hash`."""

    __tablename__ = "lease_specs"

    spec_hash: Mapped[str] = mapped_column(HASH, primary_key=True)
    renter: Mapped[str] = mapped_column(ADDRESS, index=True)
    image: Mapped[str] = mapped_column(Text)
    ssh_public_key: Mapped[str | None] = mapped_column(Text)
    cloud_init: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReservationState(StrEnum):
    """Where a reservation of a node's capacity for a lease stands.

    reserved -> accepted (the node accepted on chain) | expired (it did not, in time)
    | released (another node accepted, or the lease closed, or a heartbeat absorbed it).
    """

    RESERVED = "reserved"
    ACCEPTED = "accepted"
    EXPIRED = "expired"
    RELEASED = "released"

    @classmethod
    def live(cls) -> tuple[ReservationState, ...]:
        """The states that still hold capacity on the node."""
        return (cls.RESERVED, cls.ACCEPTED)


class Match(Base):
    """A reservation of a node's capacity for a lease, until it is accepted or expires."""

    __tablename__ = "matches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    node: Mapped[str] = mapped_column(ADDRESS, index=True)
    status: Mapped[ReservationState] = mapped_column(StrEnumType(ReservationState), index=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    disk_gib: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        # At most one live reservation per lease, whichever replica reserves: the database,
        # not a process-local lock, settles a race between two matchers.
        Index(
            "uq_matches_live_lease",
            "lease_id",
            unique=True,
            sqlite_where=text("status IN ('reserved', 'accepted')"),
            postgresql_where=text("status IN ('reserved', 'accepted')"),
        ),
    )


class Verification(Base):
    """The backend verifier's full result for one submitted attestation."""

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    report_hash: Mapped[str] = mapped_column(HASH)
    evidence_hash: Mapped[str | None] = mapped_column(HASH)
    ok: Mapped[bool] = mapped_column(Boolean)
    reason_codes: Mapped[list[str]] = mapped_column(JSON)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    confirm_tx: Mapped[str | None] = mapped_column(HASH)
    # The root the report chained to (None when it did not verify): `simulated` for the
    # simulated AMD-SP of a local stack, shown wherever the result is.
    amd_root: Mapped[AmdRoot | None] = mapped_column(StrEnumType(AmdRoot))

    __table_args__ = (UniqueConstraint("lease_id", "report_hash", name="uq_verification"),)


class DisputeCheck(Base):
    """The watcher's re-check of one decided submission (`backend.verifier.watcher`): its own
    verdict against the chain's, what it did about a disagreement, and the dispute it sent."""

    __tablename__ = "dispute_checks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    report_hash: Mapped[str] = mapped_column(HASH)
    # The watching verifier's account: one check, and at most one dispute, per submission each.
    watcher: Mapped[str] = mapped_column(ADDRESS)
    verdict: Mapped[AttestationState] = mapped_column(StrEnumType(AttestationState))
    ok: Mapped[bool] = mapped_column(Boolean)
    reason_codes: Mapped[list[str]] = mapped_column(JSON)
    # agree | dispute | not_disputable (the disagreement is one the EVM cannot decide) |
    # no_evidence | missed (the window closed or someone else disputed first)
    action: Mapped[str] = mapped_column(String(16))
    dispute_tx: Mapped[str | None] = mapped_column(HASH)
    error: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("lease_id", "report_hash", "watcher", name="uq_dispute_check"),
    )


class SiweNonce(Base):
    """A Sign-In with Ethereum challenge, usable once before it expires."""

    __tablename__ = "siwe_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(ADDRESS, index=True)
    message: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UserSession(Base):
    """A renter's session; only the SHA-256 of the bearer token is kept."""

    __tablename__ = "sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(ADDRESS)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SealedSecret(Base):
    """Secrets a renter sealed to its attested guest, waiting for the node to carry them.

    Ciphertext only: the key that opens them never leaves the guest (issue 11)."""

    __tablename__ = "sealed_secrets"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    report_data: Mapped[str] = mapped_column(String(128))
    enc: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)
    # The renter's sequence number and EIP-712 signature (the guest checks both; issue 17).
    seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    signature: Mapped[str] = mapped_column(String(130), server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class GuestStatusRow(Base):
    """The sequence number a lease's guest says it installed, signed by its attested signer
    (EIP-712 GuestStatus, challenge zero), as the node relayed it. The renter's client checks
    the signature; a node can withhold or replay an older one (showing less), never more."""

    __tablename__ = "guest_status"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(130))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class GuestAccess(Base):
    """Where a lease's guest serves SSH and its service ports, as its node announced it
    (signed)."""

    __tablename__ = "guest_access"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(ADDRESS)
    host: Mapped[str] = mapped_column(String(253))
    ssh_port: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The announcement's signed timestamp: only a newer one replaces it (no replayed rollback).
    timestamp: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # [[guest port, host port], ...] sorted by guest port (cvm.guest_access.GuestAccess.ports).
    ports: Mapped[list[list[int]]] = mapped_column(JSON, default=list, server_default="[]")


class RequestNonce(Base):
    """A single-use nonce of a node-signed request, kept until its signature's window ends."""

    __tablename__ = "request_nonces"

    signer: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(80), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class LeaderLease(Base):
    """Who runs a singleton job (the indexer, one verifier key) until `expires_at`.

    The holder renews it well before it expires; when a holder dies, another replica takes
    the row over once it has expired (see `backend.leadership`).
    """

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str] = mapped_column(String(80))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LeaseConsole(Base):
    """The tail of a lease's guest console, as its node shipped it (untrusted: the host
    reads the guest's serial port). `content` holds stream bytes [start_offset, end_offset),
    at most `cvm.api_models.CONSOLE_TAIL_BYTES` of them."""

    __tablename__ = "lease_consoles"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(ADDRESS)
    start_offset: Mapped[int] = mapped_column(BigInteger)
    end_offset: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ImageUpload(Base):
    """Who published an image through the API, how big it is, and when they last sent it.

    The sizes count against each renter's image quota; an image that has rows here and that
    no open lease names is removed once its newest upload is older than the grace period
    (`backend.domain.images.collect`). Images placed in the store otherwise have no row and
    are never collected."""

    __tablename__ = "image_uploads"

    image: Mapped[str] = mapped_column(String(64), primary_key=True)
    renter: Mapped[str] = mapped_column(ADDRESS, primary_key=True, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


# --- key service and snapshots (issue 20): ciphertext and signed records only -------------------


class KeyDeposit(Base):
    """A lease's current key deposit by its renter: the signed manifest and the sealed secret
    bundle. One per lease: a higher keyVersion replaces it (and its shares)."""

    __tablename__ = "key_deposits"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    key_version: Mapped[int] = mapped_column(BigInteger)
    renter: Mapped[str] = mapped_column(ADDRESS)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_hash: Mapped[str] = mapped_column(HASH)
    signature: Mapped[str] = mapped_column(String(132))
    bundle: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class KeyShare(Base):
    """One holder's sealed share of a lease's current key version; `id` is the holder's
    cursor (a replacement gets new ids, so a holder sees it as new)."""

    __tablename__ = "key_shares"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    holder: Mapped[str] = mapped_column(ADDRESS)
    key_version: Mapped[int] = mapped_column(BigInteger)
    enc: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(132))  # the renter's KeyShare signature

    __table_args__ = (
        UniqueConstraint("lease_id", "holder", "key_version", name="uq_key_share"),
        Index("ix_key_shares_holder_id", "holder", "id"),
        # Cursors only grow: SQLite must not hand a deleted row's id to a new one.
        {"sqlite_autoincrement": True},
    )


class KeyRelease(Base):
    """A holder's share sealed to the attested guest of `report_hash`: one per (lease,
    holder, report_hash)."""

    __tablename__ = "key_releases"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    holder: Mapped[str] = mapped_column(ADDRESS)
    key_version: Mapped[int] = mapped_column(BigInteger)
    report_hash: Mapped[str] = mapped_column(HASH)
    enc: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("lease_id", "holder", "report_hash", name="uq_key_release"),
        {"sqlite_autoincrement": True},
    )


class EpochRecord(Base):
    """The highest epoch record of a lease (Ed25519 by its manifest's epochKey, checked); a
    new one replaces it under a new `id`, the holders' cursor."""

    __tablename__ = "epoch_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lease_id: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int] = mapped_column(BigInteger)
    snapshot: Mapped[str] = mapped_column(String(64))
    key_version: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(88))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("lease_id", name="uq_epoch_record_lease"),
        {"sqlite_autoincrement": True},  # cursors only grow
    )


class SnapshotObject(Base):
    """One object of a lease's snapshots in the object store (backend.objects): a chunk
    (`name` = its SHA-256) or a sealed manifest (`name` = its epoch). `sha256` addresses it."""

    __tablename__ = "snapshot_objects"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # chunk | manifest
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LeaseCleanup(Base):
    """When the backend first saw a lease closed that still had key or snapshot data: the
    data goes once `snapshot_retention_s` passed (backend.domain.keys_relay.collect)."""

    __tablename__ = "lease_cleanups"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    closed_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChallengeRequest(Base):
    """A lease's node asking to be challenged (its guest was relaunched and the registry takes
    no fresh report in the first half of the interval unless the lease was challenged): at
    most one per lease, cleared by the failover watch once it challenged or found nothing to
    do (backend.liveness)."""

    __tablename__ = "challenge_requests"

    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(ADDRESS)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
