"""The backend's store: SQLAlchemy 2 models, engine and session factory, Alembic migrations."""

from backend.store.db import Store, StoreError, migrate
from backend.store.models import (
    Attestation,
    Base,
    ChainEvent,
    Evidence,
    Heartbeat,
    IndexedBlock,
    IndexerCursor,
    Lease,
    Match,
    Node,
    PrivateSpec,
    ReservationState,
    SiweNonce,
    UserSession,
    Verification,
)

__all__ = [
    "Attestation",
    "Base",
    "ChainEvent",
    "Evidence",
    "Heartbeat",
    "IndexedBlock",
    "IndexerCursor",
    "Lease",
    "Match",
    "Node",
    "PrivateSpec",
    "ReservationState",
    "SiweNonce",
    "Store",
    "StoreError",
    "UserSession",
    "Verification",
    "migrate",
]
