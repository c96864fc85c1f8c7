"""measure: sev-snp-measure reproduces the stored launch-digest vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cvm.attestation import MeasurementError, expected_measurement
from cvm.attestation.measure import ovmf_hash

from .conftest import DATA

VECTORS: dict[str, Any] = json.loads((DATA / "measurement" / "vectors.json").read_text())
MODES = {"SEV_SNP": "snp", "SEV_ES": "sev-es", "SEV": "sev"}


@pytest.fixture(scope="module")
def empty_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("measure") / "empty"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vector_is_reproduced(vector: dict[str, Any], empty_file: Path) -> None:
    def file(key: str) -> Path | None:
        return None if vector[key] is None else empty_file

    kwargs: dict[str, Any] = {
        "kernel": file("kernel"),
        "initrd": file("initrd"),
        "append": vector["append"],
        "vcpus": vector["vcpus"],
        "vcpu_type": vector["vcpu_type"],
        "guest_features": int(vector["guest_features"], 16),
        "vmm_type": vector["vmm_type"],
        "mode": MODES[vector["mode"]],
        "ovmf_hash": bytes.fromhex(vector["snp_ovmf_hash"]) if vector["snp_ovmf_hash"] else None,
    }
    ovmf = DATA / vector["ovmf"]
    if vector["expect_error"]:
        with pytest.raises(MeasurementError, match=vector["expect_error"]):
            expected_measurement(ovmf, **kwargs)
        return
    assert expected_measurement(ovmf, **kwargs).hex() == vector["expected_launch_digest"]


def test_ovmf_hash_is_reproduced() -> None:
    digest = ovmf_hash(DATA / "measurement" / "ovmf_AmdSev_suffix.bin")
    assert digest.hex() == VECTORS["snp_ovmf_hash_of_AmdSev_suffix"]


@pytest.mark.parametrize(
    "kwargs", [{"vcpus": 0}, {"vcpu_type": "EPYC-v99"}, {"mode": "tdx"}, {"vmm_type": "xen"}]
)
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MeasurementError):
        expected_measurement(DATA / "measurement" / "ovmf_AmdSev_suffix.bin", **kwargs)


def test_missing_ovmf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError):
        expected_measurement(tmp_path / "none.fd")
