"""Shared data for the attestation tests: real AMD material in tests/data/snp, and simulators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from cvm.attestation import Product, SigningKey, SimulatedSecureProcessor

DATA = Path(__file__).resolve().parents[2] / "data" / "snp"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
REAL = {entry["name"]: entry for entry in EXPECTED["reports"]}

# Fixed, derandomized hypothesis profile: the suite must be fast and repeatable.
settings.register_profile(
    "attestation",
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def report_bytes(name: str) -> bytes:
    return (DATA / REAL[name]["report"]).read_bytes()


def vcek_bytes(name: str) -> bytes:
    return (DATA / REAL[name]["vcek"]).read_bytes()


@pytest.fixture(scope="session")
def sim_milan() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor(Product.MILAN)


@pytest.fixture(scope="session")
def sim_turin() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor(Product.TURIN)


@pytest.fixture(scope="session")
def sim_genoa_vlek() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor(Product.GENOA, signer=SigningKey.VLEK)
