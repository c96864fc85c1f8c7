"""`cvm lease challenge`, `cvm lease close` and `cvm lease finalize` around the verifiers and
challenges (real anvil): a close during a pending attestation refunds at once and holds the
pending time's pay for the verdict; the refund after an unanswered challenge."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.chain import LEASE_SPEC, ChainSystem
from tests.integration.cli.test_no_surprises import (  # noqa: F401
    cvm,
    no_traceback,
    record,
    renter_wallet,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "renter.pw"
    path.write_text("pw\n")
    os.chmod(path, 0o600)
    return path


def _as_renter(record: Path, wallet: Path, password: Path) -> list[str]:  # noqa: F811
    return ["--deployment", str(record), "--wallet", str(wallet), "--password-file", str(password)]


def _json(result) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    no_traceback(result)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _pending_reattestation(chain: ChainSystem) -> tuple[int, bytes]:
    """A verified lease that ran a while, with a fresh attestation awaiting the verifiers and
    serving past the expiry of the verified one (so that some time is paid only if verified)."""
    lease_id = chain.attested_lease()
    interval = LEASE_SPEC.reattest_interval
    chain.advance(interval // 2 + 60)  # re-attestation is allowed from half the interval
    report_hash = b"\x66" * 32
    chain.submit(lease_id, report_hash)
    chain.advance(interval // 2 + 60)  # within the verifiers' window, past the old expiry
    return lease_id, report_hash


def test_close_while_the_verifiers_decide_refunds_at_once_and_the_verdict_pays_the_held_part(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    """The renter can always close: the unheld rest comes back at once, the pending time's pay
    is held, reported, and goes to the node once the verifiers verify. Fails on the old code,
    whose close waited for the verdict (up to --timeout) and then refused."""
    lease_id, report_hash = _pending_reattestation(chain)
    wallet = chain.accounts.renter.address
    before = chain.client().token.balance_of(wallet)
    deposit = chain.client().leases.get_lease(lease_id).deposit

    closed = _json(cvm("lease", "close", str(lease_id), "--json",
                       *_as_renter(record, renter_wallet, password)))  # fmt: skip
    assert closed["status"] == "closed"
    held, refund, earned = closed["held"], closed["refund"], closed["earned"]
    rate = closed["rate_per_second"]
    assert held > 0 and held % rate == 0  # the pending time's pay
    assert refund > 0 and earned > 0 and earned + held + refund == deposit
    assert closed["held_until"] > chain.now()  # the verifiers may still decide
    assert chain.client().token.balance_of(wallet) == before + refund

    early = cvm("lease", "finalize", str(lease_id), "--json",
                *_as_renter(record, renter_wallet, password))  # fmt: skip
    no_traceback(early)
    assert early.exit_code == 1
    error = json.loads(early.stdout)["error"]
    assert "verdict, due by" in error and "paid to the node only if" in error

    chain.verifier.attestations.confirm(lease_id, report_hash, True)  # releases it on chain
    final = _json(cvm("lease", "finalize", str(lease_id), "--json",
                      *_as_renter(record, renter_wallet, password)))  # fmt: skip
    assert final["held"] == 0 and final["released"]["refunded"] == 0
    assert final["released"]["held"] is None  # the verdict released it, not this call
    assert final["released"]["earned"] == earned + held == final["earned"]
    assert final["released"]["close_reason"] == "renter"
    assert chain.client().token.balance_of(wallet) == before + refund


def test_a_held_close_left_undecided_is_refunded_by_finalize(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    """No verdict within the verifiers' window: `cvm lease finalize` releases the held part back
    to the renter and withdraws it to the wallet. Fails on the old code (no close while
    pending, no finalize command)."""
    lease_id, _ = _pending_reattestation(chain)
    wallet = chain.accounts.renter.address
    before = chain.client().token.balance_of(wallet)
    closed = cvm("lease", "close", str(lease_id),
                 *_as_renter(record, renter_wallet, password))  # fmt: skip
    no_traceback(closed)
    assert closed.exit_code == 0, closed.output
    text = " ".join(closed.output.split())
    assert "held for the pending attestation's verdict" in text
    assert "paid to the node only if the verifiers verify it" in text
    assert f"cvm lease finalize {lease_id}" in text
    held_escrow = chain.client().leases.held_escrow(lease_id)
    assert held_escrow is not None and held_escrow.amount > 0 and not held_escrow.releasable
    after_close = chain.client().token.balance_of(wallet)
    assert after_close > before

    chain.advance(chain.client().attestations.verification_window() + 1)
    final = _json(cvm("lease", "finalize", str(lease_id), "--json",
                      *_as_renter(record, renter_wallet, password)))  # fmt: skip
    assert final["released"]["held"] == held_escrow.amount
    assert final["released"]["refunded"] == held_escrow.amount
    assert final["released"]["paid_to_node"] == 0
    assert final["released"]["close_reason"] == "attestation_missed"  # undecided, unexcused
    assert final["withdrawn"] == held_escrow.amount and final["held"] == 0
    assert chain.client().token.balance_of(wallet) == after_close + held_escrow.amount
    assert chain.client().leases.held_escrow(lease_id) is None

    again = cvm("lease", "finalize", str(lease_id), "--json",
                *_as_renter(record, renter_wallet, password))  # fmt: skip
    assert _json(again)["released"]["held"] is None  # nothing left: reported, not refused


def test_a_rejected_verdict_refunds_the_held_part(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    """Rejected after a held close: the held part is the renter's again (credited by the
    chain, withdrawn by `cvm lease finalize`). Fails on the old code (no finalize)."""
    lease_id, report_hash = _pending_reattestation(chain)
    wallet = chain.accounts.renter.address
    closed = _json(cvm("lease", "close", str(lease_id), "--json",
                       *_as_renter(record, renter_wallet, password)))  # fmt: skip
    held = closed["held"]
    assert held > 0
    after_close = chain.client().token.balance_of(wallet)
    chain.verifier.attestations.confirm(lease_id, report_hash, False)
    final = _json(cvm("lease", "finalize", str(lease_id), "--json",
                      *_as_renter(record, renter_wallet, password)))  # fmt: skip
    assert final["released"]["close_reason"] == "attestation_rejected"
    assert final["released"]["refunded"] == held == final["withdrawn"]
    assert final["released"]["earned"] == closed["earned"]
    assert chain.client().token.balance_of(wallet) == after_close + held


def test_the_renter_challenges_once_per_interval_and_closes_with_the_refund_when_unanswered(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    lease_id = chain.attested_lease()
    chain.advance(60)
    challenged = cvm("lease", "challenge", str(lease_id), "--json",
                     *_as_renter(record, renter_wallet, password))  # fmt: skip
    assert challenged.exit_code == 0, challenged.output
    shown = json.loads(challenged.stdout)
    challenged_at = chain.client().attestations.challenged_at(lease_id)
    window = chain.client().attestations.challenge_window()
    assert shown["lease_id"] == lease_id and shown["respond_by"] == challenged_at + window

    # Challenged already and not answered yet: the same fresh attestation is owed, no error,
    # and no second challenge on chain.
    again = _json(cvm("lease", "challenge", str(lease_id), "--json",
                      *_as_renter(record, renter_wallet, password)))  # fmt: skip
    assert again["already_challenged"] is True and shown["already_challenged"] is False
    assert again["respond_by"] == shown["respond_by"]
    assert chain.client().attestations.challenged_at(lease_id) == challenged_at

    earned = chain.client().leases.earned(lease_id)
    deposit = chain.client().leases.get_lease(lease_id).deposit
    chain.advance(window + 1)  # the node never answers
    closed = cvm("lease", "close", str(lease_id), "--json",
                 *_as_renter(record, renter_wallet, password))  # fmt: skip
    assert closed.exit_code == 0, closed.output
    data = json.loads(closed.stdout)
    assert data["close_reason"] == "attestation_missed"
    assert data["earned"] == earned  # nothing paid after the challenge
    assert data["refund"] == deposit - earned > 0


def test_a_challenge_the_node_answered_is_not_repeated_within_the_interval(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    lease_id = chain.attested_lease()
    chain.advance(60)
    first = cvm("lease", "challenge", str(lease_id), *_as_renter(record, renter_wallet, password))
    assert first.exit_code == 0, first.output
    chain.advance(10)
    chain.submit(lease_id, b"\x77" * 32)  # the node answers with a fresh attestation
    chain.verifier.attestations.confirm(lease_id, b"\x77" * 32, True)
    again = cvm("lease", "challenge", str(lease_id), *_as_renter(record, renter_wallet, password))
    no_traceback(again)
    assert again.exit_code == 1
    assert "next challenge is possible from" in " ".join(again.output.split())


def test_a_lease_without_a_verified_attestation_is_not_challenged(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    lease_id = chain.active_lease()  # accepted, nothing submitted yet
    result = cvm("lease", "challenge", str(lease_id), "--json",
                 *_as_renter(record, renter_wallet, password))  # fmt: skip
    no_traceback(result)
    assert result.exit_code == 1
    assert "no verified attestation to challenge" in json.loads(result.stdout)["error"]
