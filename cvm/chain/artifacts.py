"""Compiled contract artifacts shipped with the package (ABI and bytecode per contract).

`contracts/out/<Name>.json` is written by `python -m cvm.chain.build`; the package sees the
same files through `cvm/chain/artifacts`, a relative symlink that wheels resolve into copies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cvm.chain.errors import ChainError, RevertDecoder

ARTIFACTS_DIR = Path(__file__).with_name("artifacts")


@dataclass(frozen=True)
class Artifact:
    """One deployable contract: its ABI, creation and runtime code, and what it was built from."""

    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    source_hash: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        """Read the compact artifact format written by `cvm.chain.build`."""
        return cls(
            name=data["contractName"],
            source=data["sourceName"],
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            source_hash=data["sourceHash"],
        )


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract `name` (e.g. `LeaseMarket`); ChainError if none was built."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return Artifact.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ChainError(f"no artifact for {name}: run `python -m cvm.chain.build`") from None


def artifact_names() -> list[str]:
    """Names of every shipped artifact, sorted."""
    return sorted(path.stem for path in ARTIFACTS_DIR.glob("*.json"))


@cache
def revert_decoder() -> RevertDecoder:
    """A decoder that knows the custom errors of every shipped contract."""
    return RevertDecoder(load_artifact(name).abi for name in artifact_names())
