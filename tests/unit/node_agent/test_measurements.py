"""CVM_NODE_MEASUREMENTS is read strictly, and the one check says why a lease is unservable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cvm.config import Settings
from node_agent.lease_terms import LeaseTerms
from node_agent.measurements import producible_measurements, unservable_reason

DEMO = bytes.fromhex("5a" * 48)
OTHER = bytes.fromhex("66" * 48)


def _terms(measurement: bytes) -> LeaseTerms:
    return LeaseTerms(1, 2, 4096, 20, measurement, 3600)


def test_the_setting_takes_comma_separated_hex_with_or_without_0x() -> None:
    settings = Settings(_env_file=None, node_measurements=f"0x{DEMO.hex()}, {OTHER.hex()},")  # type: ignore[call-arg]
    assert settings.node_measurement_list == (DEMO, OTHER)
    assert Settings(_env_file=None).node_measurement_list == ()  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["zz" * 48, "ab" * 47, "0x" + "ab" * 49])
def test_a_malformed_measurement_stops_the_agent_at_start(bad: str) -> None:
    with pytest.raises(ValidationError, match="node_measurements"):
        Settings(_env_file=None, node_measurements=bad)  # type: ignore[call-arg]


def test_only_configured_measurements_are_producible_and_the_reason_names_the_lease_s() -> None:
    assert producible_measurements([DEMO], _terms(OTHER)) == frozenset({DEMO})
    assert unservable_reason([DEMO], _terms(DEMO)) is None
    assert OTHER.hex() in (unservable_reason([DEMO], _terms(OTHER)) or "")
    assert "CVM_NODE_MEASUREMENTS" in (unservable_reason([], _terms(DEMO)) or "")
