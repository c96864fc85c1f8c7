"""What a renter does: rent a confidential VM, follow it to Verified, top it up, challenge
it to attest afresh, close it.

One `Renter` per wallet and deployment, used by the `cvm rent`/`lease`/`leases` commands,
`cvm demo` and the end-to-end benchmark. The chain is the source of truth; the backend
holds the private spec and the verifier's details. Every failure is a `RenterError` whose
message says what to do about it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import ImageManifest, LeaseNodeView, NodeView, VerificationView
from cvm.chain import (
    Attestation,
    AttestationStatus,
    ChainClient,
    ChainError,
    ContractRevert,
    HeldEscrow,
    HeldRelease,
    Lease,
    LeaseSpec,
    LeaseStatus,
    TeeType,
)
from cvm.config import MEASUREMENT_BYTES

if TYPE_CHECKING:
    from cvm.images import Image

# Gas a renter needs for a createLeaseWithPermit and a close, at local base fees.
_MIN_GAS_WEI = 10**15

log = logging.getLogger(__name__)


class RenterError(Exception):
    """A renter action failed; the message names the cause and the remedy."""


@dataclass(frozen=True)
class RentRequest:
    """A lease as the renter asks for it."""

    vcpu: int
    memory_mib: int
    disk_gib: int
    image: str
    measurement: bytes
    max_rate_per_second: int
    deposit: int
    reattest_interval: int = 3600
    min_node_stake: int = 0
    ssh_public_key: str | None = None


@dataclass(frozen=True)
class CloseResult:
    """What `Renter.close_lease` did: the lease after, the refund paid at once and anything
    withdrawn from this wallet's market credit. `report.held` is what awaits a verdict."""

    report: LeaseReport
    refund: int
    withdrawn: int = 0

    @property
    def held(self) -> int:
        """Base units held for the pending attestation's verdict (0 if none)."""
        return self.report.held.amount if self.report.held else 0


@dataclass(frozen=True)
class FinalizeResult:
    """What `Renter.finalize` found: the release (`LeaseHeldReleased`: the lease's final
    earnings, and the refund credited to the renter, then withdrawn if this wallet is the
    renter). `held` is what this call released, None if a verdict had released it before."""

    report: LeaseReport
    release: HeldRelease
    held: int | None
    withdrawn: int = 0

    @property
    def refunded(self) -> int:
        return self.release.refund

    @property
    def paid_to_node(self) -> int | None:
        """Of `held`, what went to the node (None if `held` is not known)."""
        return None if self.held is None else self.held - self.release.refund


@dataclass(frozen=True)
class LeaseReport:
    """A lease as the chain sees it now, with the money around it."""

    lease: Lease
    attestation: Attestation
    earned: int
    refundable: int
    # The root the backend's verifier found for the attestation's report (`amd`, or
    # `simulated` for a local stack's simulated AMD-SP); None when not known (see
    # `Renter.with_amd_root`).
    amd_root: str | None = None
    # A closed lease's escrow still held for its attestation's verdict (None: nothing held).
    held: HeldEscrow | None = None
    # The nodes that served the lease, oldest first, as the backend indexed them (a lease
    # that failed over has several); None when not known (see `Renter.with_history`).
    nodes: tuple[LeaseNodeView, ...] | None = None
    # The highest snapshot epoch the lease's guest recorded (signed by its epoch key), as the
    # backend holds it: 0 for none yet, None when not known.
    snapshot_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        lease, attestation = self.lease, self.attestation
        return {
            "lease_id": lease.lease_id,
            "renter": lease.renter,
            "status": lease.status.name.lower(),
            "close_reason": lease.close_reason.name.lower(),
            "node": None if int(lease.node_key, 16) == 0 else lease.node_key,
            "vcpu": lease.vcpu,
            "memory_mib": lease.memory_mib,
            "disk_gib": lease.disk_gib,
            "rate_per_second": lease.rate_per_second,
            "max_rate_per_second": lease.max_rate_per_second,
            "deposit": lease.deposit,
            "claimed": lease.claimed,
            "earned": self.earned,
            "refundable": self.refundable,
            "accepted_at": lease.accepted_at,
            "closed_at": lease.closed_at,
            # Held for the verdict: paid to the node only if verified, else refunded.
            "held": self.held.amount if self.held else 0,
            "held_until": self.held.releasable_at if self.held else None,
            "attestation": attestation_dict(attestation) | {"amd_root": self.amd_root},
            "nodes": None
            if self.nodes is None
            else [node.model_dump(mode="json") for node in self.nodes],
            "snapshot_epoch": self.snapshot_epoch,
        }


def attestation_dict(attestation: Attestation) -> dict[str, Any]:
    """An on-chain attestation as plain JSON values."""
    return {
        "status": attestation.status.name.lower(),
        "node": None if int(attestation.node, 16) == 0 else attestation.node,
        "report_hash": "0x" + attestation.report_hash.hex(),
        "measurement": "0x" + attestation.measurement.hex(),
        "reported_tcb": attestation.reported_tcb,
        "submitted_at": attestation.submitted_at,
        "verified_at": attestation.verified_at,
        "expires_at": attestation.expires_at,
    }


def verified_amd_root(verification: VerificationView | None, report_hash: bytes) -> str | None:
    """The root the verifier found (`amd`/`simulated`), only if its verdict is on `report_hash`.

    The one place that decides whom a backend verdict credits: a verdict on another report
    (an older one, a replaced one) says nothing about the report the chain records."""
    if verification is None or verification.amd_root is None:
        return None
    if verification.report_hash.lower() != "0x" + report_hash.hex():
        return None
    return verification.amd_root.value


class Renter:
    """One renter on one deployment: an unlocked wallet to act, or just an address to read."""

    def __init__(
        self, chain: ChainClient, api: ApiClient | None, *, address: str | None = None
    ) -> None:
        if chain.account is None and address is None:
            raise RenterError("a renter needs an unlocked wallet or an address")
        self.chain = chain
        self._account: LocalAccount | None = chain.account
        self.address: str = str(chain.account.address if chain.account else address)
        self.api = api
        self._signed_in = False

    @property
    def account(self) -> LocalAccount:
        """The unlocked wallet; RenterError for a read-only renter."""
        if self._account is None:
            raise RenterError(f"this needs the wallet of {self.address} unlocked")
        return self._account

    def _require_wallet(self) -> None:
        self.account  # noqa: B018 - raises RenterError for a read-only renter

    # --- looking ----------------------------------------------------------------------

    def matching_nodes(self, request: RentRequest) -> list[NodeView]:
        """Active nodes whose free capacity, price and stake fit `request` (cheapest first)."""
        if self.api is None:
            return []
        try:
            nodes = self.api.list_nodes(tee_type=int(TeeType.SEV_SNP), active=True, limit=1000)
        except ApiError as exc:
            raise RenterError(f"the backend cannot list nodes: {exc.message}") from None

        def fits(node: NodeView) -> bool:
            vcpus = node.free_vcpus if node.free_vcpus is not None else node.vcpus
            memory = node.free_memory_mib if node.free_memory_mib is not None else node.memory_mib
            disk = node.free_disk_gib if node.free_disk_gib is not None else node.disk_gib
            return (
                vcpus >= request.vcpu
                and memory >= request.memory_mib
                and disk >= request.disk_gib
                and node.price_per_vcpu_second * request.vcpu <= request.max_rate_per_second
                and node.stake >= request.min_node_stake
            )

        return sorted(filter(fits, nodes), key=lambda node: node.price_per_vcpu_second)

    def report(self, lease_id: int) -> LeaseReport:
        """The lease, its attestation and its money, read from the chain."""
        lease = self.chain.leases.get_lease(lease_id)
        if lease.status == LeaseStatus.NONE:
            raise RenterError(f"lease {lease_id} does not exist on this deployment")
        closed = lease.status == LeaseStatus.CLOSED
        return LeaseReport(
            lease,
            self.chain.attestations.attestation_of(lease_id),
            self.chain.leases.earned(lease_id),
            self.chain.leases.refundable(lease_id) if not closed else 0,
            held=self.chain.leases.held_escrow(lease_id) if closed else None,
        )

    def with_amd_root(self, report: LeaseReport) -> LeaseReport:
        """`report` with the root the backend's verifier found for its attestation's report.

        Best effort: the chain's answer stands without it (no backend, not verified yet).
        Only a verdict on the very report the chain records counts."""
        if self.api is None or report.attestation.status == AttestationStatus.NONE:
            return report
        try:
            view = self.api.attestation_status(report.lease.lease_id)
        except ApiError:
            return report
        root = verified_amd_root(view.verification, report.attestation.report_hash)
        return report if root is None else dataclasses.replace(report, amd_root=root)

    def with_history(self, report: LeaseReport) -> LeaseReport:
        """`report` with the lease's history of nodes, as the backend indexed it, and its
        latest snapshot epoch.

        Best effort: without a backend the chain's answer stands (the current node only)."""
        if self.api is None:
            return report
        try:
            view = self.api.get_lease(report.lease.lease_id)
            epoch = self.api.latest_epoch(report.lease.lease_id)
        except ApiError:
            return report
        return dataclasses.replace(
            report, nodes=tuple(view.nodes), snapshot_epoch=epoch.epoch if epoch else 0
        )

    def own_report(self, lease_id: int) -> LeaseReport:
        """As `report`, refusing a lease that belongs to another renter."""
        report = self.report(lease_id)
        if report.lease.renter.lower() != self.address.lower():
            raise RenterError(
                f"lease {lease_id} is not yours: it belongs to {report.lease.renter}, "
                f"this wallet is {self.address}"
            )
        return report

    def my_leases(self) -> list[LeaseReport]:
        """Every lease this wallet created, from the chain's LeaseCreated events."""
        ids = self.chain.leases.leases_created_by(self.address, self.chain.deployment.start_block)
        return [self.report(lease_id) for lease_id in ids]

    # --- acting -------------------------------------------------------------------------

    def published_image(self, image_id: str) -> ImageManifest | None:
        """The backend's manifest of an image, or None if it does not serve it."""
        if self.api is None:
            raise RenterError("this needs the backend API: no api_url in the deployment record")
        try:
            return self.api.image_manifest(image_id)
        except ApiError as exc:
            if exc.status_code == 404:
                return None
            raise RenterError(f"the backend did not say whether it has the image: {exc}") from None

    def publish_image(
        self, image: Image, *, progress: Callable[[int, int], None] | None = None
    ) -> tuple[ImageManifest, bool]:
        """Have the backend serve `image` to nodes (it checks the files against the id, as
        every node does again); (its manifest, whether it had to be uploaded)."""
        import tempfile

        from cvm.images import write_archive

        served = self.published_image(image.image_id)
        if served is not None:
            return served, False
        api = self._sign_in()
        with tempfile.TemporaryDirectory(prefix="cvm-image-push-") as work:
            archive = Path(work) / f"{image.image_id}.tar"
            with archive.open("wb") as handle:
                write_archive(image, handle)
            try:
                manifest = api.upload_image(image.image_id, archive, progress=progress)
            except ApiError as exc:
                raise RenterError(f"the backend refused image {image.image_id}: {exc}") from None
        return manifest, True

    def signed_in_api(self) -> ApiClient:
        """The backend client, signed in as this renter (SIWE)."""
        return self._sign_in()

    def _sign_in(self) -> ApiClient:
        if self.api is None:
            raise RenterError("this needs the backend API: no api_url in the deployment record")
        if not self._signed_in:
            try:
                self.api.login(self.account.key)
            except ApiError as exc:
                raise RenterError(f"signing in to the backend failed: {exc.message}") from None
            self._signed_in = True
        return self.api

    def _require_funds(self, amount: int) -> None:
        balance = self.chain.token.balance_of(self.address)
        if balance < amount:
            raise RenterError(
                f"insufficient funds: {self.address} holds {balance} token base units, "
                f"{amount} needed (on a local stack: `cvm wallet fund`)"
            )
        ether = int(self.chain.w3.eth.get_balance(Web3.to_checksum_address(self.address)))
        if ether < _MIN_GAS_WEI:
            raise RenterError(
                f"insufficient funds: {self.address} has {ether} wei for gas "
                "(on a local stack: `cvm wallet fund`)"
            )

    def rent(self, request: RentRequest) -> int:
        """Create the lease (private spec to the backend, deposit by permit); its id."""
        self._require_wallet()
        if len(request.measurement) != MEASUREMENT_BYTES:
            raise RenterError(
                f"the expected measurement must be {MEASUREMENT_BYTES} bytes "
                f"({2 * MEASUREMENT_BYTES} hex digits)"
            )
        if request.deposit <= 0:
            raise RenterError("the deposit must be positive")
        if not self.matching_nodes(request):
            raise RenterError(
                f"no matching node: none offers {request.vcpu} vCPU, {request.memory_mib} MiB, "
                f"{request.disk_gib} GiB at {request.max_rate_per_second} per second or less "
                "(see `cvm nodes` in the API, or lower the spec / raise --max-price)"
            )
        self._require_funds(request.deposit)
        api = self._sign_in()
        try:
            intent = api.create_lease_intent(
                image=request.image, ssh_public_key=request.ssh_public_key
            )
        except ApiError as exc:
            raise RenterError(f"the backend refused the private spec: {exc.message}") from None
        spec = LeaseSpec(
            TeeType.SEV_SNP,
            request.vcpu,
            request.memory_mib,
            request.disk_gib,
            request.min_node_stake,
            request.reattest_interval,
            bytes.fromhex(intent.spec_hash.removeprefix("0x")),
        )
        deadline = self.chain.block_timestamp() + 3600
        permit = self.chain.token.sign_permit(
            self.account, self.chain.deployment.lease_market, request.deposit, deadline
        )
        try:
            created = self.chain.leases.create_lease_with_permit(
                spec, request.max_rate_per_second, request.deposit, request.measurement, permit
            )
        except ContractRevert as exc:
            raise RenterError(f"the chain refused the lease: {exc}") from None
        return created.lease_id

    def top_up(self, lease_id: int, amount: int) -> LeaseReport:
        """Add `amount` to the deposit of one of this wallet's leases."""
        self._require_wallet()
        report = self.own_report(lease_id)
        if report.lease.status == LeaseStatus.CLOSED:
            raise RenterError(f"lease {lease_id} is closed: it cannot be topped up")
        self._require_funds(amount)
        try:
            self.chain.token.approve(self.chain.deployment.lease_market, amount)
            self.chain.leases.top_up(lease_id, amount)
        except ContractRevert as exc:
            raise RenterError(f"the chain refused the top-up: {exc}") from None
        return self.report(lease_id)

    def close(self, lease_id: int) -> tuple[LeaseReport, int]:
        """Close one of this wallet's leases at once; the report after and the refund paid now
        (see `close_lease` for what a pending attestation holds back)."""
        result = self.close_lease(lease_id)
        return result.report, result.refund

    def close_lease(self, lease_id: int) -> CloseResult:
        """Close one of this wallet's leases now, whatever its attestation's state.

        The chain always lets the renter close: the unearned rest is refunded at once, except
        the pay for time an attestation still awaiting its verdict covers, which stays held in
        escrow (`CloseResult.held`). The verdict releases it by itself (Verified: to the node;
        Rejected: back to the renter); undecided by the end of the verification window, it is
        refunded by `finalize`. Anything the market credited this wallet is withdrawn too.
        """
        self._require_wallet()
        report = self.own_report(lease_id)
        if report.lease.status == LeaseStatus.CLOSED:
            raise RenterError(f"lease {lease_id} is already closed")
        try:
            tx = self.chain.leases.close_lease(lease_id)
        except ContractRevert as exc:
            raise RenterError(f"the chain refused to close: {exc}") from None
        refund = int(tx.event("LeaseClosed").args["refund"])
        withdrawn = self._withdraw_credits()
        after = self.report(lease_id)
        return CloseResult(after, refund, withdrawn)

    def finalize(self, lease_id: int) -> FinalizeResult:
        """Release what a lease closed while its attestation awaited the verdict still holds.

        Anyone may on chain; this wallet withdraws its credit afterwards (the renter's refund
        is credited, not sent). A lease whose verdict already released it is reported as is.
        RenterError while the verifiers may still decide, saying until when."""
        self._require_wallet()
        report = self.report(lease_id)
        if report.lease.status != LeaseStatus.CLOSED:
            raise RenterError(
                f"lease {lease_id} is {report.lease.status.name.lower()}: only a closed lease "
                f"can be finalized (`cvm lease close {lease_id}` first)"
            )
        held = report.held
        if held is not None and not held.releasable:
            raise RenterError(self._awaiting_verdict(lease_id, held))
        held_amount = held.amount if held is not None else None
        if held is not None:
            try:
                self.chain.leases.finalize_close(lease_id)
            except ContractRevert as exc:
                if exc.name != "LeaseMarket_NothingHeld":  # released by a verdict just now
                    raise RenterError(f"the chain refused to finalize: {exc}") from None
        release = self.chain.leases.held_released(lease_id, self.chain.deployment.start_block)
        if release is None:
            raise RenterError(
                f"lease {lease_id} held nothing for a verdict: its close settled everything"
            )
        withdrawn = 0
        if report.lease.renter.lower() == self.address.lower():
            withdrawn = self._withdraw_credits()
        return FinalizeResult(self.report(lease_id), release, held_amount, withdrawn)

    def _withdraw_credits(self) -> int:
        """Withdraw what the market credited this wallet (a refund it could not send at once)."""
        credit = self.chain.leases.credits(self.address)
        if credit == 0:
            return 0
        try:
            self.chain.leases.withdraw()
        except ContractRevert as exc:
            raise RenterError(f"the chain refused the withdrawal of {credit}: {exc}") from None
        return credit

    @staticmethod
    def _awaiting_verdict(lease_id: int, held: HeldEscrow) -> str:
        when = datetime.fromtimestamp(held.releasable_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"lease {lease_id} still holds {held.amount} token base units for its attestation's "
            f"verdict, due by {when}: paid to the node only if the verifiers verify it, refunded "
            f"to you otherwise. Their verdict releases it by itself; if none comes, run "
            f"`cvm lease finalize {lease_id}` after that time."
        )

    def challenge(self, lease_id: int) -> tuple[LeaseReport, int, bool]:
        """Ask the node of one of this wallet's leases to attest afresh now; the report, the
        time (Unix seconds) by which it must answer, and whether a challenge made by someone
        else (the failover watch, at the node's own request after relaunching its guest) was
        already pending: the node owes the same fresh attestation, so that is no error."""
        self._require_wallet()
        report = self.own_report(lease_id)
        if report.lease.status != LeaseStatus.ACTIVE:
            raise RenterError(
                f"lease {lease_id} is {report.lease.status.name.lower()}: only an active "
                "lease can be challenged"
            )
        try:
            tx = self.chain.leases.challenge(lease_id)
        except ContractRevert as exc:
            if exc.name == "AttestationRegistry_ChallengeTooSoon":
                registry = self.chain.attestations
                challenged_at = registry.challenged_at(lease_id)
                latest = registry.attestation_of(lease_id)
                if challenged_at and challenged_at >= latest.submitted_at:
                    respond_by = challenged_at + registry.challenge_window()
                    return self.report(lease_id), respond_by, True
            raise RenterError(_challenge_refused(lease_id, exc)) from None
        respond_by = int(tx.event("LeaseChallenged").args["respondBy"])
        return self.report(lease_id), respond_by, False

    # --- waiting ------------------------------------------------------------------------

    def wait(
        self,
        lease_id: int,
        until: Callable[[LeaseReport], bool],
        *,
        timeout_s: float,
        on_change: Callable[[str, LeaseReport], None] | None = None,
        poll_s: float = 0.25,
    ) -> LeaseReport:
        """Follow the lease until `until(report)`; calls `on_change(phase, report)` on each
        new phase; RenterError with the last phase after `timeout_s`.

        With a backend, the lease is re-read from the chain each time the backend pushes a
        change of its timeline (Server-Sent Events); without one, or if the stream cannot be
        opened, the chain is polled every `poll_s`.
        """
        deadline = time.monotonic() + timeout_s
        follower = _Follower(self, lease_id, until, on_change)
        if follower.check():
            return follower.report
        if self.api is not None:
            try:
                for _timeline in self.api.follow_timeline(lease_id, deadline=deadline):
                    if follower.check():
                        return follower.report
            except ApiError as exc:
                log.info(
                    "lease %s: no push from the backend (%s); polling the chain", lease_id, exc
                )
        while time.monotonic() <= deadline:
            time.sleep(poll_s)
            if follower.check():
                return follower.report
        raise RenterError(
            f"lease {lease_id} is still '{follower.phase}' after {timeout_s:.0f}s "
            "(see the node and backend logs)"
        )


class _Follower:
    """The state of one `Renter.wait`: the last report and phase read from the chain."""

    def __init__(
        self,
        renter: Renter,
        lease_id: int,
        until: Callable[[LeaseReport], bool],
        on_change: Callable[[str, LeaseReport], None] | None,
    ) -> None:
        self.renter = renter
        self.lease_id = lease_id
        self.until = until
        self.on_change = on_change
        self.phase = ""
        self.report: LeaseReport

    def check(self) -> bool:
        """Read the lease from the chain; True once `until` holds."""
        try:
            self.report = self.renter.report(self.lease_id)
        except ChainError as exc:
            raise RenterError(f"reading lease {self.lease_id} failed: {exc}") from None
        phase = lease_phase(self.report)
        if phase != self.phase:
            self.phase = phase
            if self.on_change is not None:
                self.on_change(phase, self.report)
        return self.until(self.report)


def _challenge_refused(lease_id: int, exc: ContractRevert) -> str:
    args = exc.args_by_name
    if exc.name == "AttestationRegistry_ChallengeTooSoon":
        when = datetime.fromtimestamp(int(args["nextChallengeAt"]), UTC)
        return (
            f"lease {lease_id} was challenged less than the minimum interval ago: the next "
            f"challenge is possible from {when.strftime('%Y-%m-%d %H:%M:%S UTC')}"
        )
    if exc.name == "AttestationRegistry_NothingToChallenge":
        status = AttestationStatus(int(args["status"])).name.lower()
        return (
            f"lease {lease_id} has no verified attestation to challenge (it is {status}): a "
            "pending one is already fresh; an expired one lets you close with the refund"
        )
    return f"the chain refused the challenge: {exc}"


def lease_phase(report: LeaseReport) -> str:
    """One word for where a lease is: open, accepted, pending, verified, rejected, ..."""
    lease, attestation = report.lease, report.attestation
    if lease.status == LeaseStatus.CLOSED:
        return f"closed ({lease.close_reason.name.lower()})"
    if lease.status == LeaseStatus.OPEN:
        return "open"
    if attestation.status == AttestationStatus.NONE:
        return "accepted"
    return attestation.status.name.lower()


def lease_status(report: LeaseReport) -> str:
    """The lease's status as every command shows it: open, active, or closed (reason)."""
    lease = report.lease
    if lease.status == LeaseStatus.CLOSED:
        return f"closed ({lease.close_reason.name.lower()})"
    return lease.status.name.lower()


def is_verified(report: LeaseReport) -> bool:
    return report.attestation.status == AttestationStatus.VERIFIED


__all__ = [
    "LeaseReport",
    "RentRequest",
    "Renter",
    "RenterError",
    "attestation_dict",
    "is_verified",
    "lease_phase",
    "lease_status",
    "verified_amd_root",
]
