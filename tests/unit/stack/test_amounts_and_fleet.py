"""Amounts and durations as renters type them; the default fleet's profiles."""

from __future__ import annotations

import pytest

from cvm.cli._renting import parse_duration, parse_tokens, tokens
from cvm.renter import RenterError
from cvm.stack import default_profiles


@pytest.mark.parametrize(
    ("text", "base_units"),
    [("1", 10**18), ("2.5", 25 * 10**17), ("0.000001", 10**12), ("1000base", 1000), ("7 wei", 7)],
)
def test_token_amounts(text: str, base_units: int) -> None:
    assert parse_tokens(text, "amount") == base_units


@pytest.mark.parametrize("text", ["", "ten", "-1", "0.0000000000000000001", "1e"])
def test_bad_token_amounts_are_refused_with_the_option_name(text: str) -> None:
    with pytest.raises(RenterError, match="--deposit"):
        parse_tokens(text, "--deposit")


def test_tokens_round_trip() -> None:
    assert parse_tokens(tokens(123456789), "x") == 123456789


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(RenterError, match="15m"):
        parse_duration("soon")


def test_default_fleet_differs_in_capacity_and_price() -> None:
    fleet = default_profiles(20)
    assert len(fleet) == 20
    assert len({p.vcpu for p in fleet}) == 3
    assert len({p.price_per_vcpu_second for p in fleet}) == 20, "no two nodes tie on price"
    assert all(p.price_per_vcpu_second > 0 for p in fleet)
