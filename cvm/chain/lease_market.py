"""Client of `LeaseMarket`: leases, their escrow, payment streaming and closing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import Web3Exception

from cvm.chain.contract import OwnedContractClient, TxResult
from cvm.chain.errors import ChainError, ContractRevert
from cvm.chain.events import ChainEvent
from cvm.chain.token import Permit
from cvm.chain.types import CloseReason, Lease, LeaseSpec, LeaseStatus, NodeUsage


@dataclass(frozen=True)
class LeaseTerms:
    """What `LeaseCreated` recorded: the public spec and the expected measurement."""

    lease_id: int
    renter: str
    spec: LeaseSpec
    max_rate_per_second: int
    deposit: int
    expected_measurement: bytes
    block_number: int


@dataclass(frozen=True)
class FailedSegment:
    """`LeaseMarket.segmentOf`: what a node earned on a lease before the lease failed over away from
    it (kept so that a later dispute of one of its verdicts settles against it alone)."""

    rate_per_second: int
    earned: int
    bond: int
    # The lease moved away on a Rejected verdict that burned `bond` (a reversal gives it back once).
    rejected: bool = False


@dataclass(frozen=True)
class HeldEscrow:
    """Escrow a lease closed by its renter keeps while its attestation awaits the verdict.

    `amount` goes to the node only if the verifiers verify the attestation, back to the renter
    otherwise. `releasable_at` is the end of the verification window: after it anyone may
    `finalize_close` (0 when that is possible now, the verdict being in or the window over).
    """

    lease_id: int
    amount: int
    releasable_at: int

    @property
    def releasable(self) -> bool:
        """Whether `finalize_close` would release it now."""
        return self.releasable_at == 0


@dataclass(frozen=True)
class HeldRelease:
    """A `LeaseHeldReleased` event: the lease's final earnings and the renter's credit."""

    lease_id: int
    close_reason: CloseReason
    earned: int
    refund: int
    tx_hash: str


@dataclass(frozen=True)
class CreatedLease:
    """The id of a new lease and the transaction that created it."""

    lease_id: int
    tx: TxResult


class LeaseMarketClient(OwnedContractClient):
    """Typed calls of `ILeaseMarket` (see its NatSpec for the rules)."""

    contract_name = "LeaseMarket"

    # --- views -------------------------------------------------------------------
    def get_lease(self, lease_id: int) -> Lease:
        """The stored lease (status NONE if it does not exist)."""
        return Lease.from_tuple(lease_id, tuple(self._call("getLease", lease_id)))

    def lease_node(self, lease_id: int, block: int | None = None) -> tuple[str, LeaseStatus]:
        """The lease's node key and status in one read (at the head, or as of `block`)."""
        if block is None:
            node_key, status = self._call("leaseNode", lease_id)
        else:
            node_key, status = self._call_at(block, "leaseNode", lease_id)
        return str(node_key), LeaseStatus(status)

    def lease_parties(self, lease_id: int) -> tuple[str, LeaseStatus, str, str]:
        """Node key, status, renter and node operator of a lease in one read (the parties who
        may not vote on its attestations). The fifth value, the first-attestation deadline, is
        `get_lease(...).attest_by`."""
        node_key, status, renter, operator, _attest_by = self._call("leaseParties", lease_id)
        return str(node_key), LeaseStatus(status), str(renter), str(operator)

    def free_decline_deadline(self, lease_id: int) -> int:
        """The last timestamp at which the node of an active lease may decline it for free (half
        its attestation window after accept; 0 unless active). Later a decline burns a part of the
        bond that grows to all of it at `attest_by`."""
        return int(self._call("freeDeclineDeadline", lease_id))

    def declined_by(self, lease_id: int, node_key: str) -> bool:
        """Whether `node_key` declined `lease_id` before (it may not accept it again)."""
        return bool(self._call("declinedBy", lease_id, node_key))

    def key_service(self) -> str:
        """The key service whose lease policies allow failover (zero address until set)."""
        return str(self._call("keyService"))

    def failovers(self, lease_id: int) -> int:
        """How many times the lease failed over."""
        return int(self._call("failovers", lease_id))

    def segment_of(self, lease_id: int, node_key: str) -> FailedSegment:
        """What `node_key` earned on `lease_id` before the lease failed over away from it (all zero
        unless it did): its rate, earnings up to its fault, its bond (0 once slashed), and whether a
        Rejected verdict moved the lease."""
        rate, earned, bond, rejected = self._call(
            "segmentOf", lease_id, to_checksum_address(node_key)
        )
        return FailedSegment(int(rate), int(earned), int(bond), bool(rejected))

    def held_escrow(self, lease_id: int) -> HeldEscrow | None:
        """What a closed lease still holds for its attestation's verdict; None if nothing.

        The market has no view of it: a dry run of `finalizeClose` tells (NothingHeld: none;
        AttestationPending: held until its `decideBy`; success: releasable now). The amount is
        the closed lease's deposit (earnings with the held time) minus what is verified."""
        try:
            self._call("finalizeClose", lease_id)
            releasable_at = 0
        except ContractRevert as exc:
            if exc.name == "LeaseMarket_NothingHeld":
                return None
            if exc.name != "LeaseMarket_AttestationPending":
                raise
            releasable_at = int(exc.args_by_name["decideBy"])
        held = self.get_lease(lease_id).deposit - self.earned(lease_id)
        return HeldEscrow(lease_id, max(held, 0), releasable_at)

    def earned(self, lease_id: int) -> int:
        """What the lease has earned so far, capped at the deposit."""
        return int(self._call("earned", lease_id))

    def claimable(self, lease_id: int) -> int:
        """What the operator can claim now."""
        return int(self._call("claimable", lease_id))

    def refundable(self, lease_id: int) -> int:
        """What the renter would get back by closing now."""
        return int(self._call("refundable", lease_id))

    def credits(self, account: str) -> int:
        """Tokens credited to `account`, waiting for `withdraw`."""
        return int(self._call("credits", account))

    def next_lease_id(self) -> int:
        """The id the next lease will get."""
        return int(self._call("nextLeaseId"))

    def attestation_window(self) -> int:
        """Seconds after accept within which the first attestation is due."""
        return int(self._call("attestationWindow"))

    def token(self) -> str:
        """Address of the ERC-20 leases are paid in."""
        return str(self._call("token"))

    def node_registry(self) -> str:
        """Address of the node registry."""
        return str(self._call("nodeRegistry"))

    def attestation_registry(self) -> str:
        """Address of the attestation registry."""
        return str(self._call("attestationRegistry"))

    def min_reattest_interval(self) -> int:
        """Shortest re-attestation interval a lease may ask for, in seconds."""
        return int(self._call("MIN_REATTEST_INTERVAL"))

    def max_reattest_interval(self) -> int:
        """Longest re-attestation interval a lease may ask for, in seconds."""
        return int(self._call("MAX_REATTEST_INTERVAL"))

    def min_unbonding_delay(self) -> int:
        """Shortest unbonding delay the registry may have (windows + longest interval)."""
        return int(self._call("minUnbondingDelay"))

    def bonded_stake(self, node_key: str) -> int:
        """Stake of `node_key` bonded by its active leases (it cannot be unstaked)."""
        return int(self._call("bondedStake", node_key))

    def node_usage(self, node_key: str) -> NodeUsage:
        """Bond and capacity held by the active leases of `node_key`."""
        return NodeUsage.from_tuple(tuple(self._call("nodeUsage", node_key)))

    def is_serving(self, lease_id: int) -> bool:
        """Whether the lease is active and its deposit not yet fully earned."""
        return bool(self._call("isServing", lease_id))

    def measurement_length(self) -> int:
        """Length of an expected measurement, in bytes (48)."""
        return int(self._call("MEASUREMENT_LENGTH"))

    # --- events (filtered by their indexed topics on the node, never fetched whole) --------
    def _logs(
        self, event: str, from_block: int, to_block: int | None = None, **indexed: Any
    ) -> list[ChainEvent]:
        """`event`s from `from_block` (to `to_block`, default the head) whose indexed
        arguments equal `indexed`."""
        abi = next(
            item for item in self.contract.abi if item["type"] == "event" and item["name"] == event
        )
        topics: list[Any] = [HexBytes(event_abi_to_log_topic(abi)).to_0x_hex()]
        for item in (item for item in abi["inputs"] if item["indexed"]):
            value = indexed.get(item["name"])
            topics.append(
                None if value is None else "0x" + abi_encode([item["type"]], [value]).hex()
            )
        try:
            logs = self.w3.eth.get_logs(
                {
                    "fromBlock": from_block,
                    "toBlock": "latest" if to_block is None else to_block,
                    "address": self.address,
                    "topics": topics,
                }
            )
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"cannot read {event} events ({indexed}): {exc}") from exc
        return self._events.decode_all(logs)

    def lease_terms(self, lease_id: int, from_block: int = 0) -> LeaseTerms:
        """The `LeaseCreated` record of `lease_id` (ChainError if there is none)."""
        events = self._logs("LeaseCreated", from_block, leaseId=lease_id)
        if not events:
            raise ChainError(f"no LeaseCreated event for lease {lease_id}")
        event = events[0]
        args = event.args
        return LeaseTerms(
            lease_id=int(args["leaseId"]),
            renter=str(args["renter"]),
            spec=LeaseSpec.from_abi(args["spec"]),
            max_rate_per_second=int(args["maxPricePerSecond"]),
            deposit=int(args["deposit"]),
            expected_measurement=bytes(args["expectedMeasurement"]),
            block_number=event.block_number,
        )

    def created_event(self, lease_id: int, from_block: int = 0) -> ChainEvent | None:
        """The `LeaseCreated` of `lease_id` in the blocks from `from_block` to the head (None
        if there is none there): what the chain says of it before any indexer does."""
        events = self._logs("LeaseCreated", from_block, leaseId=lease_id)
        return events[0] if events else None

    def leases_created_by(self, renter: str, from_block: int = 0) -> list[int]:
        """Ids of the leases `renter` created, oldest first (by the indexed renter topic)."""
        events = self._logs("LeaseCreated", from_block, renter=renter)
        return sorted({int(event.args["leaseId"]) for event in events})

    def held_released(self, lease_id: int, from_block: int = 0) -> HeldRelease | None:
        """The `LeaseHeldReleased` of `lease_id`, if its held escrow was released."""
        events = self._logs("LeaseHeldReleased", from_block, leaseId=lease_id)
        if not events:
            return None
        event = events[-1]
        args = event.args
        return HeldRelease(
            lease_id=int(args["leaseId"]),
            close_reason=CloseReason(int(args["reason"])),
            earned=int(args["earned"]),
            refund=int(args["refund"]),
            tx_hash=str(event.transaction_hash),
        )

    def leases_accepted_by(self, node_key: str, from_block: int = 0) -> list[int]:
        """Ids of the leases `node_key` accepted, oldest first (by the indexed node topic)."""
        events = self._logs("LeaseAccepted", from_block, nodeKey=node_key)
        return sorted({int(event.args["leaseId"]) for event in events})

    def accepts(self, from_block: int, to_block: int) -> list[tuple[int, str, int]]:
        """Every node's accepts in the block range (inclusive), in chain order: (block,
        node key lowercased, lease id). One read for many nodes (a fleet's shared scan)."""
        return [
            (event.block_number, str(event.args["nodeKey"]).lower(), int(event.args["leaseId"]))
            for event in self._logs("LeaseAccepted", from_block, to_block)
        ]

    # --- renter ------------------------------------------------------------------
    def create_lease(
        self, spec: LeaseSpec, max_rate_per_second: int, deposit: int, measurement: bytes
    ) -> CreatedLease:
        """Create a lease; pulls `deposit` (needs a token allowance to the market)."""
        tx = self._send("createLease", spec.as_tuple(), max_rate_per_second, deposit, measurement)
        return CreatedLease(int(tx.event("LeaseCreated").args["leaseId"]), tx)

    def create_lease_with_permit(
        self,
        spec: LeaseSpec,
        max_rate_per_second: int,
        deposit: int,
        measurement: bytes,
        permit: Permit,
    ) -> CreatedLease:
        """Create a lease in one transaction, the deposit authorised by an EIP-2612 permit."""
        tx = self._send(
            "createLeaseWithPermit",
            spec.as_tuple(),
            max_rate_per_second,
            deposit,
            measurement,
            permit.deadline,
            permit.v,
            permit.r,
            permit.s,
        )
        return CreatedLease(int(tx.event("LeaseCreated").args["leaseId"]), tx)

    def top_up(self, lease_id: int, amount: int) -> TxResult:
        """Add `amount` to the deposit (needs a token allowance)."""
        return self._send("topUp", lease_id, amount)

    def close_lease(self, lease_id: int) -> TxResult:
        """Close the lease and take back the unearned rest (always possible: the time of an
        attestation awaiting its verdict is held in escrow until then, see `finalize_close`)."""
        return self._send("closeLease", lease_id)

    # --- node and operator ---------------------------------------------------------
    def accept_lease(self, lease_id: int) -> TxResult:
        """Accept an open lease; this client's account must be a registered node key."""
        return self._send("acceptLease", lease_id)

    def check_accept(self, lease_id: int) -> None:
        """Dry-run `accept_lease` (an `eth_call` from this client's account, nothing sent):
        ContractRevert names why the chain would refuse the accept now."""
        self._call("acceptLease", lease_id)

    def exit_lease(self, lease_id: int) -> TxResult:
        """Give up an active lease (node key).

        Before the first submission and deadline this declines (the lease reopens); after the
        deadline without an attestation it is the missed-attestation path (bond slashed). A lease
        whose key policy allows failover and whose deposit is not used up moves instead of closing
        (`LeaseFailedOver`, reason 3 without fault).
        """
        return self._send("exitLease", lease_id)

    def decline_lease(self, lease_id: int) -> TxResult:
        """Give back an accepted lease this node key cannot serve.

        Only before any attestation was submitted and before the first-attestation deadline;
        the lease is OPEN again for the next node, never for this node key (event
        `LeaseDeclined`). Free until `free_decline_deadline`; later a growing part of the bond
        is burned.
        """
        return self._send("declineLease", lease_id)

    def claim(self, lease_id: int) -> TxResult:
        """Send the lease's claimable earnings to its operator (this client's account)."""
        return self._send("claim", lease_id)

    # --- anyone --------------------------------------------------------------------
    def finalize_close(self, lease_id: int) -> TxResult:
        """Release the escrow a lease held when its renter closed it while an attestation awaited
        the verifiers (anyone; after the verdict or the end of the verification window)."""
        return self._send("finalizeClose", lease_id)

    def settle(self, lease_id: int) -> TxResult:
        """Close a lease whose deposit is fully earned."""
        return self._send("settle", lease_id)

    def report_missed_attestation(self, lease_id: int) -> TxResult:
        """Close an accepted lease whose first attestation is overdue or undecided past the
        verification window (full refund, the lease's bond slashed and burned)."""
        return self._send("reportMissedAttestation", lease_id)

    def failover(self, lease_id: int) -> TxResult:
        """Move an active lease whose node is at fault (first attestation missed, or its latest
        attestation expired / a challenge unanswered) back to the market under the same id, if
        its key policy allows failover (anyone). Event `LeaseFailedOver(leaseId, oldNode,
        reason)`: reason 1 first attestation missed (bond slashed), 2 attestation expired (a
        miss), 3 the node left by `exitLease` without fault (bond freed, no miss; only via exit);
        4 (a Rejected attestation) and 5 (a dispute found a Verified verdict false) come from the
        attestation registry, not from this call. The old node keeps what it earned up to its
        fault (credited to its operator)."""
        return self._send("failover", lease_id)

    def challenge(self, lease_id: int) -> TxResult:
        """Ask the lease's node to attest afresh (the renter or a verifier).

        Payment for the current attestation stops now; without a fresh submission within the
        registry's challenge window the attestation counts as expired (event `LeaseChallenged`
        carries the `respondBy` deadline). At most once per lease per minimum interval.
        """
        return self._send("challenge", lease_id)

    def withdraw(self) -> TxResult:
        """Withdraw this account's whole credit."""
        return self._send("withdraw")

    # --- attestation registry only (anyone else gets a revert) -------------------------
    def accept_for(self, lease_id: int, node_key: str) -> TxResult:
        """Accept an open lease for `node_key`; only the registry may (from its
        `acceptAndSubmit`: nodes call `AttestationRegistryClient.accept_and_submit`)."""
        return self._send("acceptFor", lease_id, to_checksum_address(node_key))

    def on_attestation_rejected(self, lease_id: int) -> TxResult:
        """Close a lease after the verifier quorum rejected it; only the registry may."""
        return self._send("onAttestationRejected", lease_id)

    def on_verified_overturned(
        self, lease_id: int, keep_seconds: int, bond_taken: bool
    ) -> TxResult:
        """Reverse a false Verified verdict's money (a dispute); only the registry may."""
        return self._send("onVerifiedOverturned", lease_id, keep_seconds, bond_taken)

    def on_rejected_overturned(
        self, lease_id: int, start: int, end: int, segment_node: str = "0x" + "00" * 20
    ) -> TxResult:
        """Reverse a false Rejected verdict's money (a dispute); only the registry may."""
        return self._send(
            "onRejectedOverturned", lease_id, to_checksum_address(segment_node), start, end
        )

    def on_segment_overturned(self, lease_id: int, node_key: str, keep_seconds: int) -> TxResult:
        """Reverse a false Verified verdict of a node the lease failed over from (registry only)."""
        return self._send(
            "onSegmentOverturned", lease_id, to_checksum_address(node_key), keep_seconds
        )

    # --- owner ---------------------------------------------------------------------
    def set_key_service(self, key_service: str) -> TxResult:
        """Set the key service (owner only, once)."""
        return self._send("setKeyService", to_checksum_address(key_service))

    def set_attestation_window(self, seconds: int) -> TxResult:
        """Set the first-attestation window (owner only)."""
        return self._send("setAttestationWindow", seconds)
