"""Rows and signed messages for backend tests (what the indexer and agents would produce)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from backend.store import Lease, Match, Node, ReservationState, Store
from cvm.api_models import NODE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, LeaseState
from cvm.attestation.evidence import EvidenceBundle
from cvm.eip712 import Domain, EvidenceUpload, sign_node_message


class Clock:
    """A settable clock (unix seconds) the app and the matcher read instead of time.time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def new_account() -> LocalAccount:
    return Account.create()


def add_node(store: Store, address: str, **overrides: Any) -> Node:
    values: dict[str, Any] = {
        "address": address.lower(),
        "operator": "0x" + "aa" * 20,
        "tee_type": 1,
        "vcpus": 16,
        "memory_mib": 65536,
        "disk_gib": 500,
        "region": 276,
        "price_per_vcpu_second": 10,
        "endpoint": "https://node.example",
        "stake": 1000,
        "active": True,
        "attestations_verified": 0,
        "attestations_rejected": 0,
        "faults": 0,
        "registered_block": 1,
    }
    values.update(overrides)
    node = Node(**values)
    with store.session() as session:
        session.add(node)
    return node


def add_lease(store: Store, lease_id: int, renter: str, **overrides: Any) -> Lease:
    values: dict[str, Any] = {
        "id": lease_id,
        "renter": renter.lower(),
        "node": None,
        "status": LeaseState.OPEN,
        "tee_type": 1,
        "vcpus": 2,
        "memory_mib": 4096,
        "disk_gib": 20,
        "min_node_stake": 100,
        "max_rate_per_second": 100,
        "rate_per_second": None,
        "deposit": 10**18,
        "spec_hash": "0x" + "00" * 32,
        "expected_measurement": "0x" + "ab" * 48,
        "reattest_interval": 3600,
        "attestation_nonce": 0,
        "created_block": 5,
    }
    values.update(overrides)
    lease = Lease(**values)
    with store.session() as session:
        session.add(lease)
    return lease


def add_match(store: Store, lease_id: int, node: str, clock: Clock, **overrides: Any) -> None:
    values: dict[str, Any] = {
        "lease_id": lease_id,
        "node": node.lower(),
        "status": ReservationState.RESERVED,
        "vcpus": 1,
        "memory_mib": 1,
        "disk_gib": 1,
        "score": 0.5,
        "created_at": clock.datetime(),
        "deadline": clock.datetime(),
    }
    values.update(overrides)
    with store.session() as session:
        session.add(Match(**values))


def upload_headers(
    node: LocalAccount, raw: bytes, domain: Domain, now: int, **fields: Any
) -> dict[str, str]:
    """Headers of an evidence upload signed by `node` (`fields` override the signed values)."""
    parsed = EvidenceBundle.decode(raw)
    values: dict[str, Any] = {
        "node": node.address,
        "lease_id": parsed.lease_id,
        "nonce": parsed.nonce,
        "evidence_hash": bytes(keccak(raw)),
        "timestamp": now,
    }
    values.update(fields)
    upload = EvidenceUpload(**values)
    return {
        "Content-Type": "application/octet-stream",
        NODE_HEADER: node.address,
        TIMESTAMP_HEADER: str(upload.timestamp),
        SIGNATURE_HEADER: sign_node_message(upload, domain, node.key),
    }
