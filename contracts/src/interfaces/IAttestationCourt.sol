// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IAttestationRegistryCore} from "./IAttestationRegistryCore.sol";
import {ISnpVerifier} from "./ISnpVerifier.sol";
import {Challenge, VerifierStake} from "../types/DataTypes.sol";

/// @title IAttestationCourt
/// @notice The court of appeal of cvm attestations: anyone disputes a verifier verdict (or confirms a
/// Verified one) with the raw report in hand, and the EVM finds the truth: the SEV-SNP report check
/// of `ISnpVerifier` plus the policy the off-chain verifier applies. The attestation registry then
/// reverses the verdict in the lease market (`IAttestationRegistryCore.resolveDispute`), and the
/// court settles the verifiers' money. The court also keeps the verifiers' stake: a verifier votes
/// only with at least `disputeTerms().minVerifierStake` staked here, and its stake backs every vote
/// until the vote's dispute window closes. No admin can take a stake. (A separate contract from the
/// registry to keep both under the 24 KiB code size limit.)
interface IAttestationCourt {
    /// @notice Emitted when a verifier adds stake.
    event VerifierStaked(address indexed verifier, uint256 amount, uint256 stake);

    /// @notice Emitted when a verifier asks for stake back (still slashable until `unlocksAt` and until
    /// every dispute window of its votes has closed).
    event VerifierUnstakeRequested(address indexed verifier, uint256 amount, uint256 unlocksAt);

    /// @notice Emitted when unbonded verifier stake goes back to the verifier.
    event VerifierUnstaked(address indexed verifier, uint256 amount);

    /// @notice Emitted when a voter of an overturned verdict loses stake.
    event VerifierSlashed(address indexed verifier, uint256 indexed leaseId, uint256 amount);

    /// @notice Emitted when a voter of a verdict that stood gets its share of the disputer's bond (added to its stake).
    event VerifierRewarded(address indexed verifier, uint256 indexed leaseId, uint256 amount);

    /// @notice Emitted when a dispute is settled: what the disputer got back (bond + reward), what was
    /// paid to the node operator for time the renter no longer covered, and what was burned.
    event DisputeSettled(
        uint256 indexed leaseId,
        address indexed disputer,
        uint256 paidToDisputer,
        uint256 paidToOperator,
        uint256 burned
    );

    /// @notice Emitted when a dispute of a Verified verdict could not prove the report false and opened a
    /// challenge: the verdict's defender must prove it genuine (`defend`) by `deadline`.
    event ChallengeOpened(
        uint256 indexed leaseId, bytes32 indexed reportHash, address indexed disputer, uint256 deadline, uint256 bond
    );

    /// @notice Emitted when a challenge is answered within its deadline: `genuine` true, the verdict
    /// stands (the bond goes to its voters); false, the certificates proved the report false (reversed).
    event ChallengeDefended(
        uint256 indexed leaseId, bytes32 indexed reportHash, address indexed defender, bool genuine
    );

    /// @notice Emitted when a challenge nobody defended in time is resolved: the verdict is reversed.
    event ChallengeResolved(uint256 indexed leaseId, bytes32 indexed reportHash, address indexed caller);

    /// @notice The time a challenged Verified verdict's defender has to prove it (`defend`), counted from
    /// the dispute; each challenge's deadline is fixed when it opens.
    function RESPONSE_WINDOW() external view returns (uint256);

    /// @notice Disputers' bonds held for pending challenges (the court holds stakes + burned + this).
    function bonded() external view returns (uint256);

    /// @notice The pending challenge of the submission of `leaseId` with `reportHash` (all zero: none).
    function challengeOf(uint256 leaseId, bytes32 reportHash) external view returns (Challenge memory);

    /// @notice Answers a pending challenge of a Verified verdict by its deadline (inclusive). Anyone may
    /// (typically the node): the same check as `truth` for the submission's nonce and signer, with the
    /// certificates and guest key the caller supplies. Genuine: the verdict stands and counts as confirmed,
    /// the disputer's bond is shared by its voters (as for a frivolous dispute). Proven false (a VCEK
    /// bound to the report's chip and TCB under which the signature fails, or a policy mismatch): the
    /// verdict is reversed at once as by `dispute`, the disputer paid.
    /// @dev Emits ChallengeDefended, then as `dispute` settles. Reverts: AttestationCourt_NoChallenge,
    /// _ChallengeExpired (after the deadline), and the errors of `truth` (certificates that do not pass:
    /// `_Inconclusive`, `_GuestKeyMismatch`, `_ReportMismatch`).
    function defend(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external;

    /// @notice Settles a challenge nobody defended by its deadline: anyone may, after it. The Verified
    /// verdict is reversed exactly as a proven false one (`dispute`): the node's bond slashed, the renter
    /// refunded, the voters slashed, the disputer paid its bond and half the slashed stake. If the
    /// submission was settled meanwhile (an earlier submission's false Verified reversed the lease from
    /// there on), the challenge just closes and the bond goes back to the disputer.
    /// @dev Emits ChallengeResolved, then as `dispute` settles. Reverts: AttestationCourt_NoChallenge,
    /// _ChallengeNotExpired (not after the deadline).
    function resolve(uint256 leaseId, bytes32 reportHash) external;

    /// @notice The token verifiers stake and disputers bond (the lease market's token).
    function stakeToken() external view returns (IERC20);

    /// @notice Verifier stake and bonds burned (kept here for good: no function moves them).
    function burned() external view returns (uint256);

    /// @notice A verifier's stake, unbonding part, and until when it is locked.
    function stakeOf(address verifier) external view returns (VerifierStake memory);

    /// @notice Adds `amount` to the caller's verifier stake (pulled from the caller).
    /// @dev Reverts: AttestationCourt_ZeroAmount.
    function stake(uint256 amount) external;

    /// @notice Adds `amount` (pulled from the caller) to `verifier`'s stake: a deployer stakes its
    /// verifiers. The stake is the verifier's (only it can unstake it).
    /// @dev Reverts: AttestationCourt_ZeroAddress, _ZeroAmount.
    function stakeFor(address verifier, uint256 amount) external;

    /// @notice Moves `amount` of the caller's active stake to unbonding (still slashable, no longer counted
    /// for voting). It can be withdrawn after VERIFICATION_WINDOW and once every dispute window of the
    /// caller's votes has closed.
    /// @dev Reverts: AttestationCourt_ZeroAmount, _UnstakeExceedsStake.
    function requestUnstake(uint256 amount) external;

    /// @notice Withdraws the caller's unbonded stake.
    /// @dev Reverts: AttestationCourt_NothingUnbonding, _StakeLocked (not yet unlocked, or a vote of its
    /// can still be disputed), _StakeChallenged (a verdict it voted for has a pending challenge).
    /// @return amount The tokens sent.
    function withdrawStake() external returns (uint256 amount);

    /// @notice Registry only, with each vote: refuses a voter with less than `minStake` active stake and
    /// locks its stake until `until` (the vote's dispute window end).
    /// @dev Reverts: AttestationCourt_CallerNotRegistry, _StakeTooLow.
    function lockVote(address verifier, uint256 until, uint256 minStake) external;

    /// @notice The on-chain SEV-SNP report check this court uses.
    function snpVerifier() external view returns (ISnpVerifier);

    /// @notice The registry whose leases this court judges (bound into REPORT_DATA and HOST_DATA).
    function registry() external view returns (IAttestationRegistryCore);

    /// @notice Length of the guest key: X25519 (32) || Ed25519 (32) || signer address (20) || TLS SPKI
    /// SHA-256 (32); REPORT_DATA[32:64] is its SHA-256.
    function GUEST_KEY_LENGTH() external view returns (uint256);

    /// @notice Disputes the verdict on the submission of `leaseId` whose report hash is `reportHash`,
    /// within its dispute window, once per submission. Anyone may; the caller bonds
    /// `registry().disputeTerms().bond` of the stake token (approve this court for it).
    /// Burden of proof: a Verified verdict that `truth` can neither prove nor refute with the disputer's
    /// inputs (`_Inconclusive`: a VLEK-signed report, a masked CHIP_ID, a chip or TCB with no cached VCEK,
    /// certificates that do not chain; `_GuestKeyMismatch`) is not refused: the bond is held and a
    /// challenge opens (ChallengeOpened; `challengeOf`; returns false): the verdict's defender must
    /// `defend` it by `block.timestamp + RESPONSE_WINDOW`, else anyone `resolve`s it as false. Meanwhile
    /// `isAttestedFinal` of the lease is false, the voters' stake cannot be withdrawn, and the submission
    /// cannot be disputed again or confirmed. A Rejected verdict disputed must be proven genuine at once.
    /// @dev The truth is `truth(...)` for the submission's nonce and signer; the registry reverses a
    /// wrong verdict in the market (see `IAttestationRegistryCore.resolveDispute`). Verifier money:
    /// verdict overturned: each of its voters loses `slashBps` of its stake + unbonding; of the total,
    /// first the node operator is paid the time the renter's credit no longer covered (false Rejected),
    /// then the disputer gets half of the rest (and its bond back), the other half is burned (a voter
    /// disputing its own vote loses at least half of what it forfeits). Verdict right: the bond is
    /// shared equally by the verdict's voters (added to their stake; the remainder burned).
    /// Emits VerifierSlashed / VerifierRewarded, DisputeSettled (and the registry's AttestationDisputed).
    /// Reverts: AttestationRegistry_UnknownSubmission, _NotDecided, _AlreadySettled, _DisputeWindowPassed,
    /// AttestationCourt_ChallengePending, the errors of `truth` (for a Verified verdict, all but
    /// `_Inconclusive` and `_GuestKeyMismatch`), and the token's for the bond.
    /// @return overturned Whether the verdict was reversed.
    function dispute(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external returns (bool overturned);

    /// @notice Confirms a Verified verdict by the same check, without a bond, within its dispute window:
    /// `isAttestedFinal` then holds at once (a finalisation ahead of the window).
    /// @dev Reverts: as `dispute` (no bond; an inconclusive check reverts), and
    /// AttestationRegistry_NotConfirmed if the report is false (dispute it instead) or the verdict is not
    /// Verified; AttestationCourt_ChallengePending while challenged (`defend` instead).
    function confirmOnChain(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external;

    /// @notice Whether the report of submission `nonce` of `leaseId` is genuine and acceptable.
    /// @dev True iff `snpVerifier.checkReport(report, certs)` passes (ECDSA P-384 signature by the
    /// VCEK/VLEK, chain to the product's pinned ARK, TCB and CHIP_ID against the certificate), VMPL is
    /// 0, the POLICY debug bit (19) is off, MEASUREMENT is the lease's expected one, REPORT_DATA[0:32] is
    /// keccak256(abi.encode("cvm.attest.v1", chainid, registry, leaseId, nonce)), REPORT_DATA[32:64] is
    /// sha256(guestKey), guestKey[64:84] is `signer`, and HOST_DATA is
    /// keccak256(abi.encode("cvm.host.v1", chainid, registry, leaseId, renter)).
    /// False also for a report that is not 1184 bytes, that says it is unsigned (UnsignedReport), or
    /// whose signature fails (BadSignature) under the VCEK AMD issues for the chip and TCB the report
    /// names: `certs[0]` (DER or its keccak256) must be that VCEK, already cached by
    /// `snpVerifier.verifyCertificate` (`isSignerBound`; a refused check caches nothing, so cache it
    /// first). Every other check failure may come from certificates the caller chose (another chip's
    /// or TCB's VCEK, a VLEK, a masked CHIP_ID, a chain that does not verify), and a guest key that is
    /// not REPORT_DATA[32:64]'s preimage from the caller too: those revert, so that no caller's input
    /// can make a genuine report look false.
    /// Anyone may call it (it caches the certificates it verifies).
    /// Reverts: AttestationCourt_ReportMismatch (keccak256(report) != reportHash),
    /// _Inconclusive(leaseId, reason), _GuestKeyMismatch.
    function truth(
        uint256 leaseId,
        uint256 nonce,
        address signer,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external returns (bool);
}
