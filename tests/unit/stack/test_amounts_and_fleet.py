"""Amounts, durations and times as every command reads and shows them; the default fleet."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cvm.cli.plumbing import (
    UsageError,
    base_units,
    format_amount,
    format_time,
    parse_amount,
    parse_duration,
)
from devstack import default_profiles


@pytest.mark.parametrize(
    ("text", "decimals", "base"),
    [("1", 18, 10**18), ("2.5", 18, 25 * 10**17), ("0.000001", 18, 10**12),
     ("1000base", 18, 1000), ("7 wei", 18, 7), ("1.5", 6, 1_500_000), ("1e3", 0, 1000)],
)  # fmt: skip
def test_amounts_use_the_token_decimals(text: str, decimals: int, base: int) -> None:
    assert base_units(parse_amount(text, "amount"), decimals, "amount") == base


@pytest.mark.parametrize("text", ["", "ten", "-1", "inf", "-inf", "NaN", "snan", "1e", "0"])
def test_bad_amounts_are_usage_errors_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--deposit") as refused:
        parse_amount(text, "--deposit")
    assert refused.value.code == 2


def test_zero_only_where_allowed() -> None:
    assert parse_amount("0", "--tokens", allow_zero=True) == Decimal(0)


def test_more_decimals_than_the_token_has_is_refused() -> None:
    with pytest.raises(UsageError, match="6 decimals"):
        base_units(parse_amount("0.0000001", "amount"), 6, "amount")


def test_amounts_round_trip_through_their_display() -> None:
    shown = format_amount(123456789, 18)
    assert shown == "0.000000000123456789 tokens"
    assert base_units(parse_amount(shown.removesuffix(" tokens"), "x"), 18, "x") == 123456789


def test_times_are_shown_in_utc_with_the_distance() -> None:
    assert format_time(0) == "-"
    assert format_time(1_700_000_000, now=1_700_000_090) == "2023-11-14 22:13:20 UTC (90 s ago)"
    assert format_time(1_700_000_000, now=1_700_000_000 - 7200).endswith("(in 2 h)")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(UsageError, match="15m"):
        parse_duration("soon")


def test_default_fleet_differs_in_capacity_and_price() -> None:
    fleet = default_profiles(20)
    assert len(fleet) == 20
    assert len({p.vcpu for p in fleet}) == 3
    assert len({p.price_per_vcpu_second for p in fleet}) == 20, "no two nodes tie on price"
    assert all(p.price_per_vcpu_second > 0 for p in fleet)
    big = default_profiles(5_000)
    assert len({p.price_per_vcpu_second for p in big}) == 5_000
    assert all(p.price_per_vcpu_second > 0 for p in big)
