"""Request and response bodies of the API (pydantic), and the parsers of path values."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Literal

from eth_utils import to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from backend.api.errors import ApiError

# Response bodies are the shared wire models of cvm, so the client parses exactly what we
# send; the server-side names are kept for the routes.
from cvm.api_models import AttestationState as AttestationState
from cvm.api_models import AttestationView as AttestationOut
from cvm.api_models import ChainInfo as ChainInfo
from cvm.api_models import EvidenceReceipt as EvidenceReceipt
from cvm.api_models import LeaseSpec as LeaseSpecOut
from cvm.api_models import LeaseView as LeaseOut
from cvm.api_models import NodeView as NodeOut
from cvm.api_models import Session as SessionOut
from cvm.api_models import VerificationView as VerificationOut

__all__ = [
    "Address",
    "AttestationOut",
    "AttestationState",
    "ChainInfo",
    "EvidenceReceipt",
    "Health",
    "HeartbeatIn",
    "HeartbeatOut",
    "Hex32",
    "LeaseId",
    "LeaseIntentIn",
    "LeaseOut",
    "LeaseSpecOut",
    "LoginIn",
    "NodeOut",
    "NonceIn",
    "NonceOut",
    "Readiness",
    "SessionOut",
    "Text",
    "Uint32",
    "Uint64",
    "VerificationOut",
    "checksum",
    "parse_address",
    "parse_hash",
]

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")

Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Hex32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Uint32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Uint64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
LeaseId = Annotated[int, Field(ge=0, le=2**63 - 1)]


def parse_address(value: str, what: str = "address") -> str:
    """The lower-case form of a 0x address, or a 422 naming the bad value."""
    if not _ADDRESS.match(value):
        raise ApiError(422, f"{what} is not a 0x-prefixed 20-byte hex address: {value[:80]!r}")
    return value.lower()


def parse_hash(value: str, what: str = "hash") -> str:
    if not _HASH.match(value):
        raise ApiError(422, f"{what} is not a 0x-prefixed 32-byte hex value: {value[:80]!r}")
    return value.lower()


def checksum(address: str | None) -> str | None:
    return None if address is None else _checksum(address)


@lru_cache(maxsize=65536)
def _checksum(address: str) -> str:
    # EIP-55 costs a keccak per call; the same few node and renter addresses recur.
    return str(to_checksum_address(address))


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeartbeatIn(_Body):
    node: Address
    free_vcpus: Uint32
    free_memory_mib: Uint32
    free_disk_gib: Uint32
    running_leases: Uint32
    timestamp: Uint64
    signature: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]


class HeartbeatOut(BaseModel):
    node: str
    timestamp: int
    accepted: bool = True


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the store.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class LeaseIntentIn(_Body):
    image: Annotated[Text, StringConstraints(min_length=1, max_length=2048)]
    ssh_public_key: Annotated[Text, StringConstraints(max_length=16384)] | None = None
    cloud_init: Annotated[Text, StringConstraints(max_length=65536)] | None = None


class NonceIn(_Body):
    address: Address


class NonceOut(BaseModel):
    nonce: str
    message: str = Field(description="the EIP-4361 message to sign with personal_sign")
    expires_at: datetime


class LoginIn(_Body):
    message: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    signature: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    database: bool
    indexed_block: int | None
