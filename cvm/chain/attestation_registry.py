"""Client of `AttestationRegistry`: submissions by nodes, votes by verifiers, dApp views."""

from __future__ import annotations

from eth_utils import to_checksum_address

from cvm.chain.contract import ContractClient, TxResult
from cvm.chain.types import (
    Attestation,
    AttestationProgress,
    AttestationStatus,
    DisputeTerms,
    SubmissionInfo,
)


class AttestationRegistryClient(ContractClient):
    """Typed calls of `IAttestationRegistryCore` (see its NatSpec for the rules)."""

    contract_name = "AttestationRegistry"
    _verifier_role: bytes | None = None

    # --- dApp views (stable interface) ---------------------------------------------
    def attestation_of(self, lease_id: int) -> Attestation:
        """The latest attestation of a lease (status NONE if none was submitted)."""
        return Attestation.from_tuple(lease_id, tuple(self._call("attestationOf", lease_id)))

    def is_attested(self, lease_id: int, expected_measurement: bytes) -> bool:
        """True while the latest attestation is verified, unexpired and of this measurement."""
        return bool(self._call("isAttested", lease_id, expected_measurement))

    def attested_signer_of(self, lease_id: int) -> str:
        """The guest's attested signer vouched for by the attestation that makes `is_attested`
        true now (during a seamless re-attestation: the previous verified one's), else the zero
        address. dApps accept results signed by this address, never by the node key."""
        return str(self._call("attestedSignerOf", lease_id))

    def is_attested_final(self, lease_id: int, expected_measurement: bytes) -> bool:
        """`is_attested`, and the attestation can no longer be taken back: its dispute window
        passed undisputed, or the on-chain check confirmed it (dispute upheld, confirmOnChain)."""
        return bool(self._call("isAttestedFinal", lease_id, expected_measurement))

    def status_of(self, lease_id: int) -> AttestationStatus:
        """Just the status of the latest attestation (cheaper than `attestation_of`)."""
        return AttestationStatus(self._call("statusOf", lease_id))

    # --- other views -----------------------------------------------------------------
    def attestation_nonce(self, lease_id: int) -> int:
        """The nonce the next report of `lease_id` must bind and pass to `submit`."""
        return int(self._call("attestationNonce", lease_id))

    def attested_seconds(self, lease_id: int, until: int) -> int:
        """Seconds of verified coverage of `lease_id` up to time `until`."""
        return int(self._call("attestedSeconds", lease_id, until))

    def progress_of(self, lease_id: int) -> AttestationProgress:
        """Status (a pending one past the verification window is EXPIRED), nonce, decision
        deadline, verified and pending seconds of a lease, now."""
        return AttestationProgress.from_tuple(tuple(self._call("progressOf", lease_id)))

    def signer_of(self, lease_id: int) -> str:
        """The attested signer the node submitted with the latest attestation (zero address if
        none): verifiers check it against the guest key in the evidence."""
        return str(self._call("signerOf", lease_id))

    def can_vote(self, lease_id: int, account: str) -> bool:
        """Whether `account` may vote on the pending attestation of `lease_id` now: it held the
        verifier role at the submission and is not the lease's renter, node key or operator."""
        return bool(self._call("canVote", lease_id, account))

    def verifier_count(self) -> int:
        """Accounts holding the verifier role now."""
        return int(self._call("verifierCount"))

    def challenged_at(self, lease_id: int) -> int:
        """When the lease was last challenged (0 if never)."""
        return int(self._call("challengedAt", lease_id))

    def verification_window(self) -> int:
        """Seconds the verifiers have to decide a submission before it counts as missed."""
        return int(self._call("VERIFICATION_WINDOW"))

    def challenge_window(self) -> int:
        """Seconds a challenged node has to submit a fresh attestation."""
        return int(self._call("CHALLENGE_WINDOW"))

    def min_challenge_interval(self) -> int:
        """Minimum seconds between two challenges of the same lease."""
        return int(self._call("MIN_CHALLENGE_INTERVAL"))

    def quorum(self) -> int:
        """Matching verifier votes that decide an attestation."""
        return int(self._call("quorum"))

    def lease_market(self) -> str:
        """The lease market wired in."""
        return str(self._call("leaseMarket"))

    def verifier_role(self) -> bytes:
        """The AccessControl role id of verifiers (asked once: it is a constant)."""
        if self._verifier_role is None:
            self._verifier_role = bytes(self._call("VERIFIER_ROLE"))
        return self._verifier_role

    def is_verifier(self, account: str) -> bool:
        """Whether `account` holds the verifier role."""
        return bool(self._call("hasRole", self.verifier_role(), account))

    def submission_of(self, lease_id: int, report_hash: bytes) -> SubmissionInfo:
        """A submission as a dispute sees it (number 0 if unknown or no longer kept)."""
        return SubmissionInfo.from_tuple(tuple(self._call("submissionOf", lease_id, report_hash)))

    def dispute_terms(self) -> DisputeTerms:
        """Dispute window (for leases opened from now on), bond, voter slash, minimum stake."""
        window, bond, slash_bps, min_stake = self._call("disputeTerms")
        return DisputeTerms(int(window), int(bond), int(slash_bps), int(min_stake))

    def dispute_window_of(self, lease_id: int) -> int:
        """The dispute window fixed for `lease_id` when it was opened (seconds)."""
        return int(self._call("disputeWindowOf", lease_id))

    def max_dispute_window(self) -> int:
        """The longest dispute window the admin may set (seconds)."""
        return int(self._call("MAX_DISPUTE_WINDOW"))

    def court(self) -> str:
        """The attestation court (zero address until wired)."""
        return str(self._call("court"))

    # --- node ------------------------------------------------------------------------
    def submit(
        self,
        lease_id: int,
        nonce: int,
        report_hash: bytes,
        measurement: bytes,
        reported_tcb: int,
        chip_id_hash: bytes,
        *,
        signer: str,
    ) -> TxResult:
        """Submit an attestation of `lease_id` (this client's account is the lease's node key).

        `signer` is the guest's attested signer: the Ethereum address in the 116-byte guest key
        whose SHA-256 the report binds (`GuestKey.parse(key).signer`); never zero, never the
        node key (the registry refuses both)."""
        return self._send(
            "submit",
            lease_id,
            nonce,
            report_hash,
            measurement,
            reported_tcb,
            chip_id_hash,
            to_checksum_address(signer),
        )

    def accept_and_submit(
        self,
        lease_id: int,
        nonce: int,
        report_hash: bytes,
        measurement: bytes,
        reported_tcb: int,
        chip_id_hash: bytes,
        *,
        signer: str,
    ) -> TxResult:
        """Accept the OPEN lease `lease_id` (this client's account is the node key) and submit
        its first attestation in one transaction: both take effect or neither (the accept's
        reverts, `LeaseMarket_*`, and the submit's, `AttestationRegistry_*`). `nonce` is the
        lease's `attestation_nonce`, read while it is open (it keeps counting across failovers)."""
        return self._send(
            "acceptAndSubmit",
            lease_id,
            nonce,
            report_hash,
            measurement,
            reported_tcb,
            chip_id_hash,
            to_checksum_address(signer),
        )

    # --- verifier --------------------------------------------------------------------
    def confirm(self, lease_id: int, report_hash: bytes, ok: bool) -> TxResult:
        """Vote on the pending attestation of `lease_id` (a verifier allowed to: `can_vote`)."""
        return self._send("confirm", lease_id, report_hash, ok)

    # --- lease market only (anyone else gets AttestationRegistry_CallerNotLeaseMarket) --
    def open_lease(self, lease_id: int, measurement: bytes, reattest_interval: int) -> TxResult:
        """Record a new lease's expected measurement; only the lease market may."""
        return self._send("openLease", lease_id, measurement, reattest_interval)

    # --- court only (anyone else gets AttestationRegistry_CallerNotCourt) --------------
    def resolve_dispute(
        self, lease_id: int, report_hash: bytes, disputer: str, truth: bool
    ) -> TxResult:
        """Settle a dispute whose truth the court found; only the court may."""
        return self._send("resolveDispute", lease_id, report_hash, disputer, truth)

    def confirm_by_court(self, lease_id: int, report_hash: bytes) -> TxResult:
        """Mark a Verified verdict confirmed on chain; only the court may."""
        return self._send("confirmByCourt", lease_id, report_hash)

    # --- admin -----------------------------------------------------------------------
    def add_verifier(self, account: str) -> TxResult:
        """Grant the verifier role (admin only)."""
        return self._send("grantRole", self.verifier_role(), account)

    def remove_verifier(self, account: str) -> TxResult:
        """Revoke the verifier role (admin only)."""
        return self._send("revokeRole", self.verifier_role(), account)

    def set_quorum(self, quorum: int) -> TxResult:
        """Set the verifier quorum (admin only)."""
        return self._send("setQuorum", quorum)

    def set_court(self, court: str) -> TxResult:
        """Wire in the attestation court, once (admin only)."""
        return self._send("setCourt", to_checksum_address(court))

    def set_dispute_terms(self, terms: DisputeTerms) -> TxResult:
        """Set the dispute terms (admin only); the window applies to leases opened afterwards."""
        return self._send(
            "setDisputeTerms",
            (terms.window, terms.bond, terms.slash_bps, terms.min_verifier_stake),
        )

    def set_lease_market(self, market: str) -> TxResult:
        """Wire in the lease market, once (admin only)."""
        return self._send("setLeaseMarket", market)
