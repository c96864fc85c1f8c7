"""The one rule of which lease a guest key belongs to (`earlier_claims`), on rows of the
store: the verifier's GUEST_KEY_REUSED and the claim route both read it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.domain.errors import InvalidInput, NotFound
from backend.domain.evidence import earlier_claims, guest_key_claim
from backend.store import Attestation, Evidence, Store
from cvm.api_models import AttestationState, LeaseState
from tests.unit.backend.factories import add_lease

KEY = "0x" + "4b" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)
RENTER = "0x" + "02" * 20
NODE = "0x" + "01" * 20


def _claimed(store: Store, lease_id: int, at: datetime, *, key: str = KEY, tag: int = 0) -> str:
    """Evidence of `lease_id` proving `key` (a genuine report binding it), uploaded at `at`;
    returns its report hash."""
    report = "0x" + f"{lease_id:030x}{tag:034x}"
    with store.session() as session:
        session.add(
            Evidence(
                hash="0x" + f"{lease_id:030x}{tag:032x}ee", report_hash=report, content=b"x",
                size=1, created_at=at, lease_id=lease_id, guest_key_hash=key,
            )
        )  # fmt: skip
    return report


def _lease(store: Store, lease_id: int, status: LeaseState = LeaseState.ACTIVE) -> None:
    add_lease(store, lease_id, RENTER, status=status, node=NODE)


def _attested(store: Store, lease_id: int, report: str, status: AttestationState) -> None:
    with store.session() as session:
        session.add(
            Attestation(
                lease_id=lease_id, node=NODE, status=status, report_hash=report,
                measurement="0x" + "ab" * 48, nonce=0, submitted_block=1, submitted_at=1,
                verified_at=None, expires_at=None,
            )
        )  # fmt: skip


def _ids(store: Store, lease_id: int | None) -> list[tuple[int, bool]]:
    with store.session() as session:
        return [(c.lease_id, c.live) for c in earlier_claims(session, KEY, lease_id)]


def test_first_claim_wins_and_ties_go_to_the_lower_lease_id(store: Store) -> None:
    for lease_id in (5, 7, 9):
        _lease(store, lease_id)
    _attested(store, 7, _claimed(store, 7, T0), AttestationState.PENDING)
    _attested(store, 5, _claimed(store, 5, T0), AttestationState.VERIFIED)  # same instant
    _claimed(store, 9, T0 + timedelta(seconds=1))  # uploaded, not submitted
    assert _ids(store, 5) == []
    assert _ids(store, 7) == [(5, True)]
    assert _ids(store, 9) == [(5, True), (7, True)]
    assert _ids(store, 11) == [(5, True), (7, True), (9, False)]  # never proved the key
    assert _ids(store, None) == [(5, True), (7, True), (9, False)]


def test_only_live_claims_reject_and_closed_leases_claim_nothing(store: Store) -> None:
    _lease(store, 1, LeaseState.CLOSED)
    _lease(store, 2)
    _lease(store, 3)
    _lease(store, 4)
    _attested(store, 1, _claimed(store, 1, T0), AttestationState.VERIFIED)
    # Lease 2 proved the key first, but its guest was relaunched: its current report has
    # another key. Not live now; it would be if its guest answered with the key again.
    _claimed(store, 2, T0 + timedelta(seconds=1))
    other = _claimed(store, 2, T0 + timedelta(seconds=2), key="0x" + "99" * 32, tag=1)
    _attested(store, 2, other, AttestationState.VERIFIED)
    # Lease 3's attestation with the key was rejected: not live.
    _attested(store, 3, _claimed(store, 3, T0 + timedelta(seconds=3)), AttestationState.REJECTED)
    assert _ids(store, 4) == [(2, False), (3, False)]
    with store.session() as session:
        claim = guest_key_claim(session, KEY, 4)  # none live: the first pending one
        assert (claim.lease_id, claim.live) == (2, False)
        assert guest_key_claim(session, KEY.upper().replace("0X", "0x"), 4).lease_id == 2
        with pytest.raises(NotFound):
            guest_key_claim(session, KEY, 2)
        with pytest.raises(InvalidInput):
            guest_key_claim(session, KEY[:-2], 4)


def test_a_lease_attesting_another_leases_report_holds_no_live_claim(store: Store) -> None:
    """Lease 2 proved the key once; its node then submits lease 1's report hash for lease 2
    (the chain records any hash). The evidence of that report proves the key for lease 1,
    not lease 2: lease 2's claim is not live, nor is lease 1's (it has not attested)."""
    for lease_id in (1, 2, 3):
        _lease(store, lease_id)
    report = _claimed(store, 1, T0)
    _claimed(store, 2, T0 + timedelta(seconds=1))
    _attested(store, 2, report, AttestationState.PENDING)
    assert _ids(store, 3) == [(1, False), (2, False)]
