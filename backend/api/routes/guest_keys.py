"""`/v1/guest-keys`: which lease a guest key belongs to, for nodes to ask before submitting.

Unsigned: it tells only which lease's evidence proved a key first (a genuine report of that
lease binding the key: naming a key proves nothing), which the evidence itself already shows
to anyone; like every `/v1` read it is rate-limited per client IP.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from backend.api.deps import DbSession
from backend.domain import evidence
from cvm.api_models import GuestKeyClaimView

router = APIRouter(prefix="/guest-keys", tags=["evidence"])


@router.get(
    "/{key_hash}/claim",
    response_model=GuestKeyClaimView,
    summary="The claim of another lease on a guest key, which a report of `lease_id` with"
    " that key would lose to (the verifiers' rule: first claim wins, ties to the lower lease"
    " id); 404 when the key is free for that lease",
    responses={
        404: {
            "description": "no other lease that is not closed claimed the key first (proved it"
            " with a genuine report of its own binding the key)"
        },
        422: {"description": "not a 0x-prefixed SHA-256, or a lease id out of range"},
        429: {"description": "too many requests from this client"},
    },
)
def get_claim(
    key_hash: Annotated[
        str,
        Path(
            max_length=66,
            description="`0x` SHA-256 of the 116-byte guest key (REPORT_DATA[32:64])",
        ),
    ],
    session: DbSession,
    lease_id: Annotated[
        int | None,
        Query(ge=0, le=2**63 - 1, description="the asking lease (none: any lease's claim)"),
    ] = None,
) -> GuestKeyClaimView:
    return evidence.guest_key_claim(session, key_hash, lease_id)
