"""Compile `contracts/src` with the repository's pinned solcjs into `contracts/out/`.

Run as `python -m cvm.chain.build` (the Makefile's `contracts` target). Each deployable
contract gets one compact JSON artifact carrying the hash of the sources, the pinned
compiler and OpenZeppelin versions and the compiler settings it came from, so a test can
tell when the shipped artifacts are stale. `--check` only compares hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from cvm.chain.errors import ChainError

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
OUT_DIR = CONTRACTS_DIR / "out"
SOLC = CONTRACTS_DIR / "scripts" / "solc"
# The npm packages whose versions decide the bytecode besides our own sources.
_PINNED_PACKAGES = ("solc", "@openzeppelin/contracts", "@solarity/solidity-lib")


def compiler_settings(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, Any]:
    """solc settings taken from foundry.toml, so forge and the shipped artifacts agree."""
    profile = tomllib.loads((contracts_dir / "foundry.toml").read_text())["profile"]["default"]
    settings: dict[str, Any] = {
        "optimizer": {
            "enabled": bool(profile.get("optimizer", True)),
            "runs": int(profile.get("optimizer_runs", 200)),
        },
        "evmVersion": profile.get("evm_version", "cancun"),
        "viaIR": bool(profile.get("via_ir", False)),
        "metadata": {"bytecodeHash": profile.get("bytecode_hash", "ipfs")},
        "remappings": list(profile.get("remappings", [])),
    }
    return settings


def optimizer_restrictions(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, int]:
    """Source path -> optimizer runs, for the sources foundry.toml restricts
    (`compilation_restrictions` with `max_optimizer_runs`): contracts near the 24 KiB code size
    limit trade a little gas for size. The same table makes forge compile them (and every test
    that imports them) the same way."""
    profile = tomllib.loads((contracts_dir / "foundry.toml").read_text())["profile"]["default"]
    default_runs = int(profile.get("optimizer_runs", 200))
    runs: dict[str, int] = {}
    for restriction in profile.get("compilation_restrictions", []):
        limit = restriction.get("max_optimizer_runs")
        if limit is None:
            continue
        runs[str(restriction["paths"])] = min(default_runs, int(limit))
    return runs


def source_files(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, str]:
    """Every Solidity source under src/, keyed by its path relative to contracts/."""
    return {
        path.relative_to(contracts_dir).as_posix(): path.read_text()
        for path in sorted((contracts_dir / "src").rglob("*.sol"))
    }


def pinned_versions(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, str]:
    """Versions of solc and OpenZeppelin as locked in package-lock.json."""
    lock = json.loads((contracts_dir / "package-lock.json").read_text())["packages"]
    return {name: lock[f"node_modules/{name}"]["version"] for name in _PINNED_PACKAGES}


def source_hash(contracts_dir: Path = CONTRACTS_DIR) -> str:
    """SHA-256 over the sources, the pinned package versions and the compiler settings."""
    material = {
        "sources": {
            key: hashlib.sha256(text.encode()).hexdigest()
            for key, text in source_files(contracts_dir).items()
        },
        "packages": pinned_versions(contracts_dir),
        "settings": compiler_settings(contracts_dir),
        "optimizerRestrictions": optimizer_restrictions(contracts_dir),
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def stale_artifacts(out_dir: Path = OUT_DIR, contracts_dir: Path = CONTRACTS_DIR) -> list[str]:
    """Names of artifacts built from other sources than the current ones (empty: fresh)."""
    expected = source_hash(contracts_dir)
    stale = []
    for path in sorted(out_dir.glob("*.json")):
        if json.loads(path.read_text()).get("sourceHash") != expected:
            stale.append(path.stem)
    return stale


def _standard_json_input(
    sources: dict[str, str], settings: dict[str, Any], only: list[str] | None = None
) -> dict[str, Any]:
    """The solc input; `only` limits the bytecode output to those sources (all by default)."""
    wanted = ["abi", "evm.bytecode", "evm.deployedBytecode"]
    output = (
        {"*": {"*": wanted, "": ["ast"]}}
        if only is None
        else {"*": {"": ["ast"]}} | {key: {"*": wanted, "": ["ast"]} for key in only}
    )
    return {
        "language": "Solidity",
        "sources": {key: {"content": text} for key, text in sources.items()},
        "settings": {**settings, "outputSelection": output},
    }


def _run_solc(standard_input: dict[str, Any], contracts_dir: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(contracts_dir / "scripts" / "solc"), "--standard-json"],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        cwd=contracts_dir,
        check=False,
    )
    if result.returncode != 0:
        raise ChainError(f"solc failed ({result.returncode}): {result.stderr.strip()}")
    output: dict[str, Any] = json.loads(result.stdout)
    problems = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if problems:
        text = "\n".join(e.get("formattedMessage", e.get("message", "")) for e in problems)
        raise ChainError(f"compilation failed:\n{text}")
    return output


def _deployable(output: dict[str, Any], sources: dict[str, str]) -> list[tuple[str, str]]:
    """(source, name) of every non-abstract `contract` defined in our own sources."""
    found = []
    for key in sources:
        for node in output["sources"][key]["ast"]["nodes"]:
            if (
                node.get("nodeType") == "ContractDefinition"
                and node.get("contractKind") == "contract"
                and not node.get("abstract", False)
            ):
                found.append((key, node["name"]))
    return found


def build(out_dir: Path = OUT_DIR, contracts_dir: Path = CONTRACTS_DIR) -> list[Path]:
    """Compile and write one artifact per deployable contract; returns the written paths."""
    sources = source_files(contracts_dir)
    if not sources:
        raise ChainError(f"no Solidity sources under {contracts_dir / 'src'}")
    settings = compiler_settings(contracts_dir)
    output = _run_solc(_standard_json_input(sources, settings), contracts_dir)
    # Sources with their own optimizer runs: compiled again with them (their output replaces).
    restricted = optimizer_restrictions(contracts_dir)
    for runs in sorted(set(restricted.values())):
        keys = [key for key, value in restricted.items() if value == runs and key in sources]
        if not keys:
            continue
        tuned = {**settings, "optimizer": {**settings["optimizer"], "runs": runs}}
        again = _run_solc(_standard_json_input(sources, tuned, keys), contracts_dir)
        for key in keys:
            output["contracts"][key] = again["contracts"][key]
    digest = source_hash(contracts_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, name in _deployable(output, sources):
        compiled = output["contracts"][key][name]
        if compiled["evm"]["bytecode"].get("linkReferences"):
            raise ChainError(f"{name} needs linked libraries, which cvm does not deploy")
        artifact = {
            "contractName": name,
            "sourceName": key,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "sourceHash": digest,
        }
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(artifact, separators=(",", ":")) + "\n")
        written.append(path)
    # An artifact of a contract that no longer exists would ship a dead ABI.
    for old in out_dir.glob("*.json"):
        if old not in written:
            old.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: build, or with --check report stale artifacts (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m cvm.chain.build", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only verify artifacts are fresh")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_artifacts()
        if stale or not any(OUT_DIR.glob("*.json")):
            print(f"stale or missing artifacts: {', '.join(stale) or 'none built'}")
            return 1
        print("artifacts are fresh")
        return 0
    for path in build():
        print(f"wrote {path.relative_to(CONTRACTS_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
