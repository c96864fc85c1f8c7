"""The deployment record: which chain, which contract addresses, from which block.

Written by `cvm.chain.deploy.deploy` (or by hand for an existing system) and read by
every part that talks to the contracts; saved as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cvm.chain.errors import ChainError


@dataclass(frozen=True)
class Deployment:
    """Where one cvm system lives: chain, contract addresses and the block it starts at."""

    chain_id: int
    deployer: str
    start_block: int
    token: str
    node_registry: str
    attestation_registry: str
    lease_market: str
    attested_service: str
    test_token: bool = True
    rpc_url: str | None = None
    api_url: str | None = None
    # The on-chain SEV-SNP report check (SnpVerifier); None in records from before it existed.
    snp_verifier: str | None = None
    # The attestation court (verifier stake, disputes; issue 21); None in records made before it.
    attestation_court: str | None = None
    # The threshold key service (key holders, per-lease key policies; issue 20); None before it.
    key_service: str | None = None
    # Free-form additions (e.g. by `cvm up`); not part of the identity of a deployment.
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> str:
        """The record as JSON (snake_case keys, as the field names)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        """Read a record written by `to_json`; ChainError if it is not one."""
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            return cls(**{key: value for key, value in data.items() if key in known})
        except (ValueError, TypeError, AttributeError) as exc:
            raise ChainError(f"not a deployment record: {exc}") from exc

    def save(self, path: Path) -> None:
        """Write the record to `path` (parents created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> Deployment:
        """Read the record at `path`; ChainError naming the cause if it cannot."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ChainError(f"no deployment record at {path}") from None
        except IsADirectoryError:
            raise ChainError(f"{path} is a directory, not a deployment record") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ChainError(f"cannot read the deployment record {path}: {exc}") from None
        try:
            return cls.from_json(text)
        except ChainError as exc:
            raise ChainError(f"{path} is {exc}") from None

    def contracts(self) -> dict[str, str]:
        """Contract name → address, for the contracts cvm decodes events of."""
        return {
            "TestToken": self.token,
            "NodeRegistry": self.node_registry,
            "AttestationRegistry": self.attestation_registry,
            "LeaseMarket": self.lease_market,
            "AttestedService": self.attested_service,
        } | {
            name: address
            for name, address in (
                ("SnpVerifier", self.snp_verifier),
                ("AttestationCourt", self.attestation_court),
                ("KeyService", self.key_service),
            )
            if address
        }
