"""The Python mirrors of the Solidity structs and enums match the ABIs field by field."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import pytest

from cvm.chain import (
    Attestation,
    AttestationStatus,
    CloseReason,
    Lease,
    LeaseSpec,
    LeaseStatus,
    Node,
    NodeSpec,
    TeeType,
    load_artifact,
)
from cvm.chain.build import CONTRACTS_DIR

# Solidity names whose Python mirror says its unit (see cvm.chain.types).
RENAMED = {
    "price_per_second_per_unit": "price_per_vcpu_second",
    "max_price_per_second": "max_rate_per_second",
}


def snake(name: str) -> str:
    # Units are one word in Python (memory_mib), two capitals in Solidity (memoryMiB).
    name = name.replace("MiB", "Mib").replace("GiB", "Gib")
    python = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    return RENAMED.get(python, python)


def components(contract: str, function: str, *, output: bool, index: int = 0) -> list[str]:
    entry = next(
        e for e in load_artifact(contract).abi if e["type"] == "function" and e["name"] == function
    )
    struct: dict[str, Any] = (entry["outputs"] if output else entry["inputs"])[index]
    return [snake(item["name"]) for item in struct["components"]]


@pytest.mark.parametrize(
    ("cls", "contract", "function", "output", "index", "extra"),
    [
        (NodeSpec, "NodeRegistry", "register", False, 1, []),
        (Node, "NodeRegistry", "getNode", True, 0, ["node_key"]),
        (LeaseSpec, "LeaseMarket", "createLease", False, 0, []),
        (Lease, "LeaseMarket", "getLease", True, 0, ["lease_id"]),
        (Attestation, "AttestationRegistry", "attestationOf", True, 0, ["lease_id"]),
    ],
)
def test_dataclass_fields_follow_the_struct(
    cls: type, contract: str, function: str, output: bool, index: int, extra: list[str]
) -> None:
    expected = extra + components(contract, function, output=output, index=index)
    assert [f.name for f in fields(cls)] == expected


def solidity_enum(source: str, name: str) -> list[str]:
    body = re.search(rf"enum {name}\s*{{([^}}]*)}}", source)
    assert body is not None, name
    text = re.sub(r"//[^\n]*", "", body.group(1))
    return [item.strip() for item in text.split(",") if item.strip()]


def test_enums_follow_the_solidity_ones() -> None:
    types = (CONTRACTS_DIR / "src/types/DataTypes.sol").read_text()
    registry = (CONTRACTS_DIR / "src/interfaces/IAttestationRegistry.sol").read_text()
    assert [m.name for m in TeeType] == solidity_enum(types, "TeeType")
    assert [m.name for m in LeaseStatus] == solidity_enum(types, "LeaseStatus")
    assert [m.name for m in CloseReason] == solidity_enum(types, "CloseReason")
    assert [m.name.lower() for m in AttestationStatus] == [
        item.lower() for item in solidity_enum(registry, "Status")
    ]


def test_tuples_round_trip_in_struct_order() -> None:
    spec = NodeSpec(TeeType.SEV_SNP, 8, 1024, 10, 276, 99)
    assert spec.as_tuple() == (1, 8, 1024, 10, 276, 99)
    lease_spec = LeaseSpec(TeeType.TDX, 2, 512, 5, 7, 60, b"\x01" * 32)
    assert lease_spec.as_tuple() == (2, 2, 512, 5, 7, 60, b"\x01" * 32)
    zero = "0x" + "00" * 20
    assert not Node.from_tuple(zero, (zero, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)).registered
    lease = Lease.from_tuple(3, ("0xr", 1, 2, 1, "0xn", 5, 3, 100, 40, 1, 2, 3, 4, 5, 6, 7, 8))
    assert lease.status is LeaseStatus.CLOSED and lease.close_reason is CloseReason.RENTER
    assert lease.escrow == 60
    assert (lease.bond, lease.attest_by) == (7, 8)
