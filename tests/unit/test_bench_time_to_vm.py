"""bench.time_to_vm's arithmetic on synthetic timestamps: phases, floor, over_floor."""

from __future__ import annotations

from itertools import pairwise

import pytest

from bench.time_to_vm import (
    COMBINED_INCLUSIONS,
    MARKS,
    SEQUENTIAL_INCLUSIONS,
    chain_phases,
    floor_s,
    inclusions_of,
    phases,
    summarize,
)


def _lease(start: float, steps: list[float]) -> dict[str, float]:
    """Marks of one lease: `start`, then each next mark `steps[i]` seconds after the last."""
    marks = {MARKS[0]: start}
    at = start
    for name, step in zip(MARKS[1:], steps, strict=True):
        at += step
        marks[name] = at
    return marks


def test_today_path_counts_four_sequential_inclusions() -> None:
    assert SEQUENTIAL_INCLUSIONS == ("create", "accept", "submit", "confirm")


def test_phases_are_consecutive_differences_in_mark_order() -> None:
    marks = _lease(1000.0, [1, 2, 0.5, 30, 0.25, 1.75, 2, 0.5, 1, 3])
    got = phases(marks)
    assert list(got) == [f"{a}_to_{b}" for a, b in pairwise(MARKS)]
    assert got["create_sent_to_created"] == 1
    assert got["guest_launched_to_report_in_hand"] == 30
    assert got["secret_released_to_ssh_answers"] == 3
    assert sum(got.values()) == marks["ssh_answers"] - marks["create_sent"]


def test_a_missing_mark_folds_its_phase_into_the_next() -> None:
    marks = _lease(0.0, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    del marks["guest_launched"]
    got = phases(marks)
    assert "accepted_to_guest_launched" not in got
    assert got["accepted_to_report_in_hand"] == 4 + 8
    # Marks given out of order are still read in the path's order.
    assert phases(dict(reversed(list(marks.items())))) == got


def test_chain_phases_from_block_timestamps() -> None:
    stamps = {"verified": 110, "created": 100, "submitted": 108, "accepted": 102}
    assert chain_phases(stamps) == {
        "created_to_accepted": 2,
        "accepted_to_submitted": 6,
        "submitted_to_verified": 2,
    }
    assert chain_phases({"created": 5}) == {}


def test_floor_is_boot_plus_one_block_per_inclusion() -> None:
    assert floor_s(30.0, 2.0) == 38.0
    assert floor_s(30.0, 12.0) == 78.0
    assert floor_s(30.0, 2.0, inclusions=2) == 34.0


def test_summary_p50_floor_and_over_floor() -> None:
    # Three leases of 50, 40 and 60 seconds; the p50 is 50. Floor: 32 + 4 x 2 = 40.
    leases = [
        _lease(0.0, [1, 2, 1, 30, 1, 1, 2, 1, 1, 10]),
        _lease(100.0, [1, 2, 1, 20, 1, 1, 2, 1, 1, 10]),
        _lease(200.0, [1, 2, 1, 40, 1, 1, 2, 1, 1, 10]),
    ]
    stamps = [{"created": 1, "accepted": 3, "submitted": 37, "verified": 39}] * 3
    result = summarize(leases, stamps, boot_s=32.0, block_time_s=2.0)
    assert result["leases_reachable"] == 3
    assert result["time_to_vm_s"] == [50.0, 40.0, 60.0]
    assert result["p50_s"] == 50.0
    assert result["floor_s"] == 40.0
    assert result["over_floor"] == 1.25
    # Against each lease's own boot: 50/(30+8), 40/(20+8), 60/(40+8); p50 of those.
    assert result["over_own_boot_floor_p50"] == round(50 / 38, 2)
    assert result["phases_p50_s"]["guest_launched_to_report_in_hand"] == 30
    assert result["phases_p50_s"]["secret_released_to_ssh_answers"] == 10
    assert result["chain_phases_p50_s"] == {
        "created_to_accepted": 2,
        "accepted_to_submitted": 34,
        "submitted_to_verified": 2,
    }


def test_summary_leaves_out_leases_that_never_answered() -> None:
    reached = _lease(0.0, [1] * 10)
    unreached = {k: v for k, v in _lease(0.0, [5] * 10).items() if k != "ssh_answers"}
    result = summarize([reached, unreached], [], boot_s=4.0, block_time_s=1.0)
    assert result["leases_reachable"] == 1
    assert result["p50_s"] == 10.0
    assert result["over_floor"] == pytest.approx(10.0 / 8.0, abs=0.01)
    assert result["chain_phases_p50_s"] == {}


def test_summary_without_any_reachable_lease_has_no_ratio() -> None:
    result = summarize([{"create_sent": 0.0}], [], boot_s=4.0, block_time_s=1.0)
    assert result["leases_reachable"] == 0
    assert result["p50_s"] is None and result["over_floor"] is None
    assert result["over_own_boot_floor_p50"] is None
    assert result["floor_s"] == 8.0


def test_with_the_speculative_boot_the_boot_overlaps_the_accepts_block() -> None:
    # create + max(boot, accept) + submit + confirm.
    assert floor_s(30.0, 2.0, speculative=True) == 36.0
    assert floor_s(30.0, 12.0, speculative=True) == 66.0
    # A boot shorter than a block waits for the accept's block all the same.
    assert floor_s(0.5, 2.0, speculative=True) == 8.0
    assert floor_s(0.0, 1.0, speculative=True) == floor_s(0.0, 1.0) == 4.0


def test_a_guest_launched_before_its_accept_is_seen_is_phased_in_time_order() -> None:
    marks = _lease(0.0, [1, 2, 1, 30, 1, 1, 2, 1, 1, 10])
    marks["guest_launched"] = 1.5  # booted speculatively, before the accept (at 3) was seen
    got = phases(marks)
    assert got["created_to_guest_launched"] == 0.5
    assert got["guest_launched_to_accepted"] == 1.5
    assert got["accepted_to_report_in_hand"] == 31
    assert sum(got.values()) == marks["ssh_answers"] - marks["create_sent"]


def test_the_speculative_summary_counts_the_accept_inside_the_guests_own_boot() -> None:
    leases = [_lease(0.0, [1, 2, 1, 30, 1, 1, 2, 1, 1, 10])]
    result = summarize(leases, [], boot_s=32.0, block_time_s=2.0, speculative=True)
    assert result["floor_s"] == 38.0  # max(32, 2) + 3 x 2
    # Its own boot span (launched -> report in hand: 30) plus the three other blocks.
    assert result["over_own_boot_floor_p50"] == round(50 / 36, 2)


def test_the_combined_accept_counts_three_inclusions_and_no_overlap() -> None:
    assert inclusions_of(speculative=True, combined=True) == COMBINED_INCLUSIONS
    assert COMBINED_INCLUSIONS == ("create", "acceptAndSubmit", "confirm")
    # Without the speculative boot the agents accept separately: four.
    assert inclusions_of(speculative=False, combined=True) == SEQUENTIAL_INCLUSIONS
    # create + boot + acceptAndSubmit + confirm: the boot overlaps no block.
    assert floor_s(30.0, 2.0, speculative=True, combined=True) == 36.0
    assert floor_s(0.5, 2.0, speculative=True, combined=True) == 6.5
    # No boot (simulated): three blocks instead of four, a whole block saved.
    assert floor_s(0.0, 2.0, speculative=True, combined=True) == 6.0
    assert floor_s(0.0, 2.0, speculative=True) == 8.0
    # Never above the separate path's floor; the same once the boot outlasts a block.
    for boot in (0.0, 1.0, 2.0, 30.0):
        combined = floor_s(boot, 2.0, speculative=True, combined=True)
        assert combined <= floor_s(boot, 2.0, speculative=True)
    assert floor_s(0.0, 1.0, combined=True) == 4.0  # combined needs the speculative boot


def test_the_combined_summary_floor() -> None:
    leases = [_lease(0.0, [1, 2, 1, 30, 1, 1, 2, 1, 1, 10])]
    result = summarize(leases, [], boot_s=32.0, block_time_s=2.0, speculative=True, combined=True)
    assert result["floor_s"] == 38.0  # 32 + 3 x 2
    assert result["over_own_boot_floor_p50"] == round(50 / 36, 2)
