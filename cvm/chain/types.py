"""Python mirrors of the contracts' enums and structs (`types/DataTypes.sol`, IAttestationRegistry).

Field order follows the Solidity structs, so `from_tuple` reads what web3 returns and
`as_tuple` gives what a call takes. Python names are snake_case of the Solidity ones, except
where the Solidity name hides its unit: a node's `pricePerSecondPerUnit` is
`price_per_vcpu_second` (what one vCPU costs per second) and a lease's `maxPricePerSecond`
is `max_rate_per_second` (the most the whole lease pays per second, like `ratePerSecond`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass
from enum import IntEnum
from typing import Any

from hexbytes import HexBytes


class TeeType(IntEnum):
    """Trusted execution technology a node offers and a lease requires."""

    NONE = 0
    SEV_SNP = 1
    TDX = 2


class LeaseStatus(IntEnum):
    """Life cycle of a lease."""

    NONE = 0
    OPEN = 1
    ACTIVE = 2
    CLOSED = 3


class CloseReason(IntEnum):
    """Why a lease was closed."""

    NONE = 0
    RENTER = 1
    EXHAUSTED = 2
    ATTESTATION_MISSED = 3
    ATTESTATION_REJECTED = 4
    NODE_EXIT = 5


class AttestationStatus(IntEnum):
    """`IAttestationRegistry.Status` of a lease's latest attestation."""

    NONE = 0
    PENDING = 1
    VERIFIED = 2
    REJECTED = 3
    EXPIRED = 4


@dataclass(frozen=True)
class NodeSpec:
    """Capabilities and price an operator declares for a node key."""

    tee_type: TeeType
    vcpu: int
    memory_mib: int
    disk_gib: int
    region: int
    price_per_vcpu_second: int

    @classmethod
    def from_abi(cls, value: Mapping[str, Any]) -> NodeSpec:
        """Read a decoded `NodeSpec` struct by its Solidity field names."""
        return cls(
            tee_type=TeeType(int(value["teeType"])),
            vcpu=int(value["vcpu"]),
            memory_mib=int(value["memoryMiB"]),
            disk_gib=int(value["diskGiB"]),
            region=int(value["region"]),
            price_per_vcpu_second=int(value["pricePerSecondPerUnit"]),
        )

    def as_tuple(self) -> tuple[int, ...]:
        """The ABI tuple `NodeSpec`."""
        return tuple(int(value) for value in astuple(self))


@dataclass(frozen=True)
class Node:
    """A registered node as `NodeRegistry` stores it."""

    node_key: str
    operator: str
    tee_type: TeeType
    vcpu: int
    memory_mib: int
    disk_gib: int
    stake: int
    price_per_vcpu_second: int
    region: int
    missed_attestations: int
    unbonding: int
    unbonding_ends_at: int

    @classmethod
    def from_tuple(cls, node_key: str, values: tuple[Any, ...]) -> Node:
        """Read the `Node` struct returned for `node_key`."""
        operator, tee, vcpu, memory, disk, stake, price, region, missed, unbonding, ends = values
        return cls(
            node_key, operator, TeeType(tee), vcpu, memory, disk, stake, price, region, missed,
            unbonding, ends,
        )  # fmt: skip

    @property
    def registered(self) -> bool:
        """Whether the key is registered (a registered node always has an operator)."""
        return int(self.operator, 16) != 0


@dataclass(frozen=True)
class LeaseSpec:
    """Public part of a lease request; the private part is bound by `spec_hash`."""

    tee_type: TeeType
    vcpu: int
    memory_mib: int
    disk_gib: int
    min_node_stake: int
    reattest_interval: int
    spec_hash: bytes

    @classmethod
    def from_abi(cls, value: Mapping[str, Any]) -> LeaseSpec:
        """Read a decoded `LeaseSpec` struct by its Solidity field names."""
        return cls(
            tee_type=TeeType(int(value["teeType"])),
            vcpu=int(value["vcpu"]),
            memory_mib=int(value["memoryMiB"]),
            disk_gib=int(value["diskGiB"]),
            min_node_stake=int(value["minNodeStake"]),
            reattest_interval=int(value["reattestInterval"]),
            # bytes from a decoder, 0x-hex from a stored JSON copy
            spec_hash=bytes(HexBytes(value["specHash"])),
        )

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple `LeaseSpec`."""
        return (
            int(self.tee_type), self.vcpu, self.memory_mib, self.disk_gib, self.min_node_stake,
            self.reattest_interval, self.spec_hash,
        )  # fmt: skip


@dataclass(frozen=True)
class Lease:
    """A lease as `LeaseMarket` stores it."""

    lease_id: int
    renter: str
    accepted_at: int
    closed_at: int
    close_reason: CloseReason
    node_key: str
    rate_per_second: int
    status: LeaseStatus
    deposit: int
    claimed: int
    tee_type: TeeType
    vcpu: int
    memory_mib: int
    disk_gib: int
    min_node_stake: int
    max_rate_per_second: int
    # Fixed at accept: the stake this lease bonds (what a slash of it takes) and the
    # first-attestation deadline. Zero while the lease is open.
    bond: int = 0
    attest_by: int = 0

    @classmethod
    def from_tuple(cls, lease_id: int, values: tuple[Any, ...]) -> Lease:
        """Read the `Lease` struct returned for `lease_id`."""
        (renter, accepted, closed, reason, node_key, rate, status, deposit, claimed, tee,
         vcpu, memory, disk, min_stake, max_rate, bond, attest_by) = values  # fmt: skip
        return cls(
            lease_id, renter, accepted, closed, CloseReason(reason), node_key, rate,
            LeaseStatus(status), deposit, claimed, TeeType(tee), vcpu, memory, disk, min_stake,
            max_rate, bond, attest_by,
        )  # fmt: skip

    @property
    def escrow(self) -> int:
        """Tokens still held for this lease: deposit minus what was claimed."""
        return self.deposit - self.claimed


@dataclass(frozen=True)
class NodeUsage:
    """What a node's active leases hold of it (`LeaseMarket.nodeUsage`)."""

    bonded: int
    vcpu: int
    memory_mib: int
    disk_gib: int

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> NodeUsage:
        """Read the `NodeUsage` struct."""
        bonded, vcpu, memory, disk = values
        return cls(int(bonded), int(vcpu), int(memory), int(disk))


@dataclass(frozen=True)
class AttestationProgress:
    """`AttestationRegistry.progressOf`: a lease's attestation progress now."""

    status: AttestationStatus
    nonce: int
    # Until when the verifiers may decide the latest attestation (0 unless it is pending).
    decide_by: int
    verified_seconds: int
    pending_seconds: int
    # Left undecided past the window although an allowed verifier approved it (or none could
    # vote): not the node's fault, no slash, no miss.
    excused: bool = False

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> AttestationProgress:
        """Read the `AttestationProgress` struct."""
        status, nonce, decide_by, verified, pending, excused = values
        return cls(
            AttestationStatus(status),
            int(nonce),
            int(decide_by),
            int(verified),
            int(pending),
            bool(excused),
        )


@dataclass(frozen=True)
class DisputeTerms:
    """`AttestationRegistry.disputeTerms`: the admin's dispute parameters (issue 21)."""

    # Seconds after a submission's verification window in which its verdict can be disputed
    # (whole hours; fixed per lease when the lease is opened).
    window: int
    # What a disputer bonds (stake token base units).
    bond: int
    # Fraction (basis points) of stake + unbonding a voter of an overturned verdict loses.
    slash_bps: int
    # Active stake a verifier needs to vote.
    min_verifier_stake: int


@dataclass(frozen=True)
class SubmissionInfo:
    """`AttestationRegistry.submissionOf`: one submission's verdict as a dispute sees it."""

    # 1-based submission number (the nonce the report binds is number - 1); 0 if unknown.
    number: int
    verdict: AttestationStatus
    signer: str
    submitted_at: int
    disputable_until: int
    # Verified seconds of the lease before this submission.
    banked_before: int
    disputed: bool
    confirmed_on_chain: bool
    # A challenge of its Verified verdict is pending in the court (the defender must prove it
    # genuine by the challenge's deadline, `AttestationCourt.challengeOf`).
    challenged: bool = False

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> SubmissionInfo:
        """Read the `SubmissionInfo` struct."""
        number, verdict, signer, submitted, until, banked, disputed, confirmed, challenged = values
        return cls(
            int(number),
            AttestationStatus(verdict),
            str(signer),
            int(submitted),
            int(until),
            int(banked),
            bool(disputed),
            bool(confirmed),
            bool(challenged),
        )


@dataclass(frozen=True)
class Attestation:
    """`IAttestationRegistry.Attestation`: a lease's latest attestation."""

    lease_id: int
    status: AttestationStatus
    node: str
    report_hash: bytes
    measurement: bytes
    reported_tcb: int
    submitted_at: int
    verified_at: int
    expires_at: int

    @classmethod
    def from_tuple(cls, lease_id: int, values: tuple[Any, ...]) -> Attestation:
        """Read the `Attestation` struct returned for `lease_id`."""
        status, node, report_hash, measurement, tcb, submitted, verified, expires = values
        return cls(
            lease_id, AttestationStatus(status), node, bytes(report_hash), bytes(measurement),
            tcb, submitted, verified, expires,
        )  # fmt: skip
