"""The wire format of the backend's `/v1` API: the models the server answers with and the
client parses, defined once so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

AttestationState = Literal["none", "pending", "verified", "rejected", "expired"]


class _View(BaseModel):
    # Newer servers may add fields; old clients must keep working.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ChainInfo(_View):
    chain_id: int
    node_registry: str
    lease_market: str
    attestation_registry: str
    token: str | None = None


class NodeView(_View):
    address: str
    operator: str
    tee_type: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    region: int
    price_per_second: int
    stake: int
    active: bool
    endpoint: str
    free_vcpus: int | None = None
    free_memory_mib: int | None = None
    free_disk_gib: int | None = None
    running_leases: int | None = None
    last_heartbeat_at: datetime | None = None
    reputation: float


class LeaseView(_View):
    id: int
    renter: str
    node: str | None
    status: str
    tee_type: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    min_stake: int
    max_price_per_second: int
    price_per_second: int | None
    deposit: int
    spec_hash: str
    expected_measurement: str
    reattest_interval: int
    created_block: int
    has_private_spec: bool


class LeaseSpec(_View):
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


class EvidenceReceipt(_View):
    hash: str
    report_hash: str
    size: int


class Session(_View):
    token: str
    address: str
    expires_at: datetime
