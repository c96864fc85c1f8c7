// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "./IAttestationRegistry.sol";
import {IAttestationCourt} from "./IAttestationCourt.sol";
import {AttestationProgress, DisputeTerms, SubmissionInfo} from "../types/DataTypes.sol";

/// @title IAttestationRegistryCore
/// @notice The full attestation registry: the stable dApp view plus what nodes, verifiers,
/// the lease market and the admin call.
/// @dev Flow: `LeaseMarket.createLease` opens a record (expected measurement, re-attestation
/// interval). The lease's node key `submit`s attestations bound to the lease's current nonce;
/// verifiers `confirm` them; at `quorum()` approvals the attestation is Verified, at
/// `quorum()` rejections it is Rejected and the market refunds the renter and slashes the node.
/// Verified time is what the market pays for (`attestedSeconds`).
interface IAttestationRegistryCore is IAttestationRegistry {
    /// @notice Emitted with every AttestationSubmitted: the nonce the report binds, its TCB, the
    /// chip-id hash (kept in the log only) and the guest's attested signer, for verifiers and indexers.
    event AttestationEvidence(
        uint256 indexed leaseId, uint256 nonce, uint64 reportedTcb, bytes32 chipIdHash, address signer
    );

    /// @notice Emitted when a verifier votes on a pending attestation.
    event AttestationVote(uint256 indexed leaseId, address indexed verifier, bytes32 reportHash, bool ok);

    /// @notice Emitted when the admin changes the quorum.
    event QuorumSet(uint256 quorum);

    /// @notice Emitted once, when the lease market is wired in.
    event LeaseMarketSet(address leaseMarket);

    /// @notice Emitted when a submission's verdict is disputed: `overturned` if the on-chain check
    /// found the verdict wrong (it is reversed with its money consequences).
    event AttestationDisputed(uint256 indexed leaseId, bytes32 reportHash, address indexed disputer, bool overturned);

    /// @notice Emitted when `confirmOnChain` confirms a Verified verdict by the on-chain check.
    event AttestationConfirmedOnChain(uint256 indexed leaseId, bytes32 reportHash);

    /// @notice Emitted when the admin changes the dispute terms.
    event DisputeTermsSet(DisputeTerms terms);

    /// @notice Emitted once, when the attestation court (disputes, over the SEV-SNP report check) is wired in.
    event CourtSet(address court);

    /// @notice Longest dispute window the admin may set.
    function MAX_DISPUTE_WINDOW() external view returns (uint256);

    /// @notice The attestation court: where anyone disputes or confirms a verdict on chain (zero until
    /// set, once, by the admin); it holds the deployment's `ISnpVerifier`.
    function court() external view returns (IAttestationCourt);

    /// @notice Current dispute terms (window for leases opened from now on, bond, voter slash, minimum stake).
    function disputeTerms() external view returns (DisputeTerms memory);

    /// @notice The dispute window fixed for `leaseId` when it was opened (seconds).
    function disputeWindowOf(uint256 leaseId) external view returns (uint256);

    /// @notice The submission of `leaseId` with `reportHash` as a dispute sees it (number 0 if it is
    /// neither the latest nor a replaced verified one still kept).
    function submissionOf(uint256 leaseId, bytes32 reportHash) external view returns (SubmissionInfo memory);

    /// @notice Settles a dispute of the verdict on the submission of `leaseId` with `reportHash` whose
    /// truth the court found (`IAttestationCourt.dispute`). Court only; once per submission, within its
    /// dispute window. The court moves the verifier money (stake, bond) from what this returns.
    /// @dev If the truth differs from the verdict, it is reversed. A false Verified: the lease ends as
    /// rejected, every verified second from this submission on is unpaid (the renter is credited what
    /// escrow still holds of it and, for what the operator already claimed, compensation from the
    /// node's bond), the bond is slashed (the rest burned), and this and later submissions are settled.
    /// A false Rejected: the node's burned bond is restored and its time from submission to the close
    /// is paid from the renter's credit, and `unpaid` (what that credit no longer covers) is for the
    /// court to pay `operator` from the wrong voters' slashed stake. A Verified verdict that stands
    /// counts as confirmed on chain. Emits AttestationDisputed.
    /// Reverts: AttestationRegistry_CallerNotCourt, _UnknownSubmission, _NotDecided, _AlreadySettled,
    /// _DisputeWindowPassed.
    /// @return overturned Whether the verdict was reversed.
    /// @return voters The accounts that voted for the verdict (the deciding one under a quorum of 1).
    /// @return unpaid For a false Rejected: the node's time the renter's credit did not cover.
    /// @return operator For a false Rejected: the node's operator, to be paid `unpaid`.
    function resolveDispute(uint256 leaseId, bytes32 reportHash, address disputer, bool truth)
        external
        returns (bool overturned, address[] memory voters, uint256 unpaid, address operator);

    /// @notice Court only: records that a dispute of the Verified verdict on the submission of `leaseId`
    /// with `reportHash` could not prove it false and opened a challenge (`IAttestationCourt.dispute`),
    /// within its dispute window. Until the court settles it with `resolveDispute` (allowed then even
    /// after the window), `isAttestedFinal` of the lease is false and `submissionOf` says `challenged`.
    /// @dev Reverts: AttestationRegistry_CallerNotCourt, _UnknownSubmission, _NotDecided, _AlreadySettled,
    /// _DisputeWindowPassed.
    /// @return voters The accounts that voted for the verdict (their stake stays locked in the court).
    function openChallenge(uint256 leaseId, bytes32 reportHash) external returns (address[] memory voters);

    /// @notice Marks a Verified verdict confirmed by the court's on-chain check (`IAttestationCourt.confirmOnChain`):
    /// `isAttestedFinal` then holds at once. Court only; no money moves.
    /// @dev Reverts: AttestationRegistry_CallerNotCourt, _UnknownSubmission, _NotDecided, _AlreadySettled,
    /// _DisputeWindowPassed, _NotConfirmed (not Verified).
    function confirmByCourt(uint256 leaseId, bytes32 reportHash) external;

    /// @notice Sets the dispute terms (admin only). The window applies to leases opened afterwards.
    /// @dev Reverts: AccessControlUnauthorizedAccount, AttestationRegistry_InvalidDisputeTerms (window not
    /// a whole number of hours in [1 hour, MAX_DISPUTE_WINDOW], slashBps above 10,000, zero minimum stake).
    function setDisputeTerms(DisputeTerms calldata terms) external;

    /// @notice Wires in the attestation court, once (admin only).
    /// @dev Reverts: AccessControlUnauthorizedAccount, AttestationRegistry_CourtAlreadySet (zero or already set).
    function setCourt(IAttestationCourt court_) external;

    /// @notice Seconds the verifier quorum has to decide a submitted attestation; undecided after
    /// that, it counts as missed (Expired) and votes are refused.
    function VERIFICATION_WINDOW() external view returns (uint256);

    /// @notice Seconds a challenged node has to submit a fresh attestation (fixed at deployment,
    /// 30 seconds to 1 day; 15 minutes by default).
    function CHALLENGE_WINDOW() external view returns (uint256);

    /// @notice Minimum seconds between two challenges of the same lease.
    function MIN_CHALLENGE_INTERVAL() external view returns (uint256);

    /// @notice Role identifier of verifiers (OpenZeppelin AccessControl).
    function VERIFIER_ROLE() external view returns (bytes32);

    /// @notice The lease market allowed to open records and asked for lease status (zero until set).
    function leaseMarket() external view returns (address);

    /// @notice Number of matching verifier votes that verifies or rejects an attestation submitted
    /// from now on; each attestation keeps the quorum in force at its submission, capped at the
    /// verifiers allowed to vote on it.
    function quorum() external view returns (uint256);

    /// @notice Accounts holding VERIFIER_ROLE now.
    function verifierCount() external view returns (uint256);

    /// @notice The attested signer the node submitted with the latest attestation of `leaseId`
    /// (address(0) if none), for verifiers to check against the guest key in the evidence.
    function signerOf(uint256 leaseId) external view returns (address);

    /// @notice Whether `account` may vote on the pending attestation of `leaseId` now (within its
    /// verification window): it has at least the minimum verifier stake, it held
    /// VERIFIER_ROLE when the attestation was submitted and is not the lease's renter, node key or
    /// node operator.
    function canVote(uint256 leaseId, address account) external view returns (bool);

    /// @notice The nonce the next report for `leaseId` must bind in REPORT_DATA and pass to `submit`.
    /// @dev Starts at 0 and increases by one with every accepted submit.
    function attestationNonce(uint256 leaseId) external view returns (uint256);

    /// @notice The status `attestationOf` would report, without copying the record.
    function statusOf(uint256 leaseId) external view returns (Status);

    /// @notice When the lease was last challenged (zero if never).
    function challengedAt(uint256 leaseId) external view returns (uint256);

    /// @notice Status, nonce, verification deadline, verified and pending seconds of `leaseId` now, in one call
    /// (of the lease's current segment: since its last failover, if any).
    function progressOf(uint256 leaseId) external view returns (AttestationProgress memory);

    /// @notice Seconds of verified attestation coverage of `leaseId` up to time `until`.
    /// @dev Sum over the lease's verified attestations of [submittedAt, min(until, expiresAt,
    /// next submission, a later challenge)]. A Pending or Rejected latest attestation adds nothing. The market
    /// pays `attestedSeconds * ratePerSecond`, capped at the deposit.
    function attestedSeconds(uint256 leaseId, uint256 until) external view returns (uint256);

    /// @notice Records a new lease's expected measurement and re-attestation interval.
    /// @dev Only the lease market, from `createLease`.
    /// Reverts: AttestationRegistry_CallerNotLeaseMarket, _InvalidMeasurementLength,
    /// _ZeroReattestInterval, _LeaseAlreadyOpened.
    function openLease(uint256 leaseId, bytes calldata expectedMeasurement, uint32 reattestInterval) external;

    /// @notice Called by the lease market when the renter closes a lease whose latest attestation
    /// awaits the verifiers: a Verified verdict then calls `LeaseMarket.finalizeClose`.
    /// @dev Reverts: AttestationRegistry_CallerNotLeaseMarket.
    function onCloseWhilePending(uint256 leaseId) external;

    /// @notice Called by the lease market when a lease fails over away from `oldNode`: a new segment of
    /// the lease starts. Until the next node's first submission is Verified, `isAttested`,
    /// `isAttestedFinal` and `attestedSignerOf` are false / zero, `attestationOf` and `statusOf` show no
    /// attestation (None; `attestationOf` keeps only the lease's expected measurement) until the next
    /// node submits, and `signerOf` is zero; nothing is banked (the market settled the old node's
    /// earnings); the attestation nonce keeps counting, so no report bound to an earlier nonce can be
    /// replayed. The old node's verified submissions stay disputable: a dispute overturning one of them
    /// calls `ILeaseMarket.onSegmentOverturned` (the old node pays), never the current lease's close.
    /// @dev Reverts: AttestationRegistry_CallerNotLeaseMarket.
    function onFailover(uint256 leaseId, address oldNode) external;

    /// @notice Submits an attestation for an active lease; the caller must be the lease's node key.
    /// @dev The measurement must equal the lease's expected one and `nonce` its current
    /// `attestationNonce` (so an old report cannot be replayed). Allowed when there is no
    /// attestation yet and the lease's `attestBy` has not passed, the latest is Verified (re-attestation: late, after a challenge since its
    /// submission, or else not before `submittedAt + reattestInterval / 2`), or the latest was left
    /// undecided past VERIFICATION_WINDOW (nothing is paid for it; for a first attestation only when
    /// excused: approved by an allowed verifier, or no verifier allowed to vote). The time the previous
    /// verified attestation covered is banked. The vote on it is fixed now: verifiers holding
    /// VERIFIER_ROLE now, less the lease's renter, node key and operator, with the current quorum
    /// capped at how many those are. Emits AttestationSubmitted and AttestationEvidence.
    /// Reverts: AttestationRegistry_LeaseNotActive, _NotLeaseNode, _StaleNonce,
    /// _AttestationDeadlinePassed, _MeasurementMismatch, _ZeroReportHash, _InvalidSigner,
    /// _AttestationPending, _ReattestTooEarly.
    /// @param leaseId The lease.
    /// @param nonce The lease's current attestation nonce, bound into REPORT_DATA.
    /// @param reportHash keccak256 of the raw 1184-byte report.
    /// @param measurement The report's 48-byte MEASUREMENT.
    /// @param reportedTcb The report's REPORTED_TCB.
    /// @param chipIdHash keccak256 of the report's CHIP_ID (emitted in AttestationEvidence, not stored).
    /// @param signer The guest's attested signer: the Ethereum address in the guest key whose SHA-256
    /// the report binds (never zero, never the node key); see `attestedSignerOf`.
    function submit(
        uint256 leaseId,
        uint256 nonce,
        bytes32 reportHash,
        bytes calldata measurement,
        uint64 reportedTcb,
        bytes32 chipIdHash,
        address signer
    ) external;

    /// @notice Accepts an open lease and submits its first attestation in one transaction (the
    /// caller is the node key): `LeaseMarket.acceptFor(leaseId, caller)`, then `submit` with the same
    /// arguments. Either both take effect or neither, so a node can boot its guest and obtain the
    /// report while the lease is still open, and nothing is attested before the accept.
    /// `nonce` is the lease's `attestationNonce` read before the accept (it keeps counting across
    /// failovers). Reverts: those of `LeaseMarket.acceptLease` and of `submit`.
    function acceptAndSubmit(
        uint256 leaseId,
        uint256 nonce,
        bytes32 reportHash,
        bytes calldata measurement,
        uint64 reportedTcb,
        bytes32 chipIdHash,
        address signer
    ) external;

    /// @notice Records a challenge of `leaseId` (lease market only, from `LeaseMarket.challenge`):
    /// payment for the current attestation stops at this moment, and unless the node submits a
    /// fresh attestation within CHALLENGE_WINDOW the attestation counts as Expired.
    /// @dev Reverts: AttestationRegistry_CallerNotLeaseMarket, _ChallengeTooSoon.
    /// @return respondBy The deadline for the fresh submission.
    function onChallenge(uint256 leaseId) external returns (uint256 respondBy);

    /// @notice A verifier's vote on the pending attestation of `leaseId`.
    /// @dev Only accounts that may vote on it (`canVote`): holders of VERIFIER_ROLE at its submission
    /// (a later revocation does not void their vote, a later grant does not let a new verifier in),
    /// other than the lease's renter, node key and node operator. `reportHash` must be the pending one.
    /// At the attestation's quorum of approvals it becomes Verified (payment counts from its
    /// submission); at its quorum of rejections it becomes Rejected and the market closes the lease
    /// (refund + slash). Emits AttestationVote and AttestationVerified or AttestationRejected at quorum.
    /// Votes after VERIFICATION_WINDOW are refused.
    /// Reverts: AttestationRegistry_NotPending, _ReportHashMismatch, _VerificationWindowPassed,
    /// _NotEligibleVoter, _AlreadyVoted.
    function confirm(uint256 leaseId, bytes32 reportHash, bool ok) external;

    /// @notice Sets the quorum (admin only). Applies to attestations submitted after the change.
    /// @dev Reverts: AccessControlUnauthorizedAccount, AttestationRegistry_InvalidQuorum.
    function setQuorum(uint256 newQuorum) external;

    /// @notice Wires in the lease market, once (admin only).
    /// @dev Reverts: AccessControlUnauthorizedAccount, AttestationRegistry_ZeroAddress,
    /// _LeaseMarketAlreadySet.
    function setLeaseMarket(address market) external;
}
