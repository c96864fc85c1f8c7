"""bench.time_to_vm end to end on the simulated launcher at a 1 s block time: every mark
of the path is observed and each on-chain step lands in a later block than the one before."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.time_to_vm import run

pytestmark = pytest.mark.integration


def test_one_simulated_lease_is_followed_through_every_on_chain_step(tmp_path: Path) -> None:
    result = run(1, 1, "simulated", tmp_path / "images", timeout_s=120, accept_mode="separate")
    assert result["leases_reachable"] == 1
    assert result["sequential_inclusions"]["count"] == 4
    assert "observer_error" not in result
    (lease,) = result["leases"].values()
    assert set(lease["phases_s"]) == {
        "create_sent_to_created",
        "created_to_accepted",
        "accepted_to_report_in_hand",
        "report_in_hand_to_evidence_uploaded",
        "evidence_uploaded_to_submitted",
        "submitted_to_verified",
        "verified_to_renter_sees_verified",
    }
    stamps = lease["chain_block_timestamps"]
    # A block time: create, accept, submit and confirm each wait for a block of their own.
    assert stamps["created"] < stamps["accepted"] < stamps["submitted"] < stamps["verified"]
    assert result["floor_s"] == 4.0  # no guest boot on the simulated launcher: 4 blocks
    assert result["p50_s"] is not None and result["over_floor"] is not None


def test_the_combined_accept_needs_three_inclusions(tmp_path: Path) -> None:
    result = run(1, 1, "simulated", tmp_path / "images", timeout_s=120, accept_mode="combined")
    assert result["leases_reachable"] == 1
    assert result["sequential_inclusions"] == {
        "count": 3,
        "steps": ["create", "acceptAndSubmit", "confirm"],
    }
    assert "observer_error" not in result
    (lease,) = result["leases"].values()
    stamps = lease["chain_block_timestamps"]
    # The accept and the first attestation are one transaction: one block for both.
    assert stamps["created"] < stamps["accepted"] == stamps["submitted"] < stamps["verified"]
    # The report was in hand (and its evidence uploaded) before the accept.
    assert "report_in_hand_to_evidence_uploaded" in lease["phases_s"]
    assert result["floor_s"] == 3.0  # no guest boot: 3 blocks
    assert result["p50_s"] is not None


def test_compare_speculative_runs_a_baseline_stack_then_the_speculative_one(
    tmp_path: Path,
) -> None:
    result = run(1, 1, "simulated", tmp_path / "images", timeout_s=120, compare=True)
    baseline = result["baseline_no_speculative"]
    assert baseline["speculative_boot"] is False and result["speculative_boot"] is True
    assert baseline["leases_reachable"] == result["leases_reachable"] == 1
    # No guest to boot: four blocks for the baseline (it accepts separately), three for the
    # speculative round's combined accept.
    assert baseline["floor_s"] == 4.0 and result["floor_s"] == 3.0
    assert "p50_saved_s" in result["speculative_effect"]
    (lease,) = baseline["leases"].values()
    stamps = lease["chain_block_timestamps"]
    assert stamps["created"] < stamps["accepted"] < stamps["submitted"] < stamps["verified"]
    (lease,) = result["leases"].values()
    stamps = lease["chain_block_timestamps"]
    assert stamps["created"] < stamps["accepted"] == stamps["submitted"] < stamps["verified"]
