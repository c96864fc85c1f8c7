"""`cvm lease challenge` and `cvm lease close` around the verifiers and challenges (real
anvil): one clear line when the chain must wait, the refund after an unanswered challenge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.chain import ChainSystem
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


def test_close_while_the_verifiers_decide_says_until_when_instead_of_a_revert(
    chain: ChainSystem,
    record: Path,  # noqa: F811
    renter_wallet: Path,  # noqa: F811
    password: Path,
) -> None:
    lease_id = chain.active_lease()
    chain.submit(lease_id, b"\x55" * 32)  # pending: no verifier decides in this test
    result = cvm("lease", "close", str(lease_id), "--timeout", "0", "--json",
                 *_as_renter(record, renter_wallet, password))  # fmt: skip
    no_traceback(result)
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    error = json.loads(line)["error"]
    assert "awaits the verifiers' verdict, due by" in error
    assert f"cvm lease close {lease_id}" in error
    assert "LeaseMarket_AttestationPending" not in error


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

    again = cvm("lease", "challenge", str(lease_id),
                *_as_renter(record, renter_wallet, password))  # fmt: skip
    no_traceback(again)
    assert again.exit_code == 1
    assert "next challenge is possible from" in " ".join(again.output.split())

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
