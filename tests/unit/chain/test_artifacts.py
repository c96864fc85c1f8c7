"""The shipped artifacts: fresh against the sources, one copy, every custom error decodable."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cvm.chain import artifact_names, load_artifact, revert_decoder
from cvm.chain.artifacts import ARTIFACTS_DIR
from cvm.chain.build import CONTRACTS_DIR, OUT_DIR, source_hash, stale_artifacts

DEPLOYABLE = {
    "AttestationCourt",
    "AttestationRegistry",
    "AttestedRandomness",
    "AttestedService",
    "KeyService",
    "LeaseMarket",
    "NodeRegistry",
    "P384Verifier",
    "SnpVerifier",
    "TestToken",
}


def test_shipped_artifacts_are_built_from_the_current_sources() -> None:
    assert set(artifact_names()) == DEPLOYABLE
    assert stale_artifacts() == [], "contracts/out is stale: run `python -m cvm.chain.build`"


def test_the_package_reads_the_single_copy_in_contracts_out() -> None:
    assert ARTIFACTS_DIR.resolve() == OUT_DIR.resolve()


@pytest.mark.parametrize("name", sorted(DEPLOYABLE))
def test_each_artifact_has_abi_and_code(name: str) -> None:
    artifact = load_artifact(name)
    assert artifact.name == name and artifact.source.startswith("src/")
    assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 100
    assert len(artifact.deployed_bytecode) < len(artifact.bytecode)
    assert any(entry["type"] == "function" for entry in artifact.abi)


def test_every_custom_error_of_the_contracts_decodes_by_name() -> None:
    declared = re.findall(
        r"error (\w+)\(", (CONTRACTS_DIR / "src/libraries/Errors.sol").read_text()
    )
    assert len(declared) > 20
    decoder = revert_decoder()
    assert [name for name in declared if name not in decoder] == []


@pytest.fixture
def contracts_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR / "src", copy / "src")
    shutil.copytree(OUT_DIR, copy / "out")
    for name in ("foundry.toml", "package-lock.json"):
        shutil.copy(CONTRACTS_DIR / name, copy / name)
    return copy


def test_an_edited_source_makes_every_artifact_stale(contracts_copy: Path) -> None:
    assert stale_artifacts(contracts_copy / "out", contracts_copy) == []
    source = contracts_copy / "src" / "LeaseMarket.sol"
    source.write_text(source.read_text() + "\n// edited\n")
    assert set(stale_artifacts(contracts_copy / "out", contracts_copy)) == DEPLOYABLE


def test_a_new_source_or_other_compiler_settings_change_the_hash(contracts_copy: Path) -> None:
    before = source_hash(contracts_copy)
    (contracts_copy / "src" / "Extra.sol").write_text("// SPDX-License-Identifier: MIT\n")
    with_file = source_hash(contracts_copy)
    toml = contracts_copy / "foundry.toml"
    toml.write_text(re.sub(r"optimizer_runs = \d+", "optimizer_runs = 1", toml.read_text()))
    assert len({before, with_file, source_hash(contracts_copy)}) == 3
