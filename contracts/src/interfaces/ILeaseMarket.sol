// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IAttestationRegistryCore} from "./IAttestationRegistryCore.sol";
import {IKeyService} from "./IKeyService.sol";
import {INodeRegistry} from "./INodeRegistry.sol";
import {CloseReason, Lease, LeaseSpec, LeaseStatus, NodeUsage, Segment} from "../types/DataTypes.sol";

/// @title ILeaseMarket
/// @notice Leases of confidential VMs with an ERC-20 escrow streamed per second.
/// @dev Payment: a lease earns `ratePerSecond` for every second covered by a verified
/// attestation (`IAttestationRegistryCore.attestedSeconds`), counted from the attestation's
/// submission (the verifiers' delay does not cost the node), capped at the deposit. Nothing
/// is claimable before the attestation is Verified. Whatever is not earned goes back to the
/// renter on close. Tokens leaving the contract go either straight to the caller who is
/// owed them (renter closing, operator claiming: checks-effects-interactions + nonReentrant)
/// or, when someone else triggered the payout, to a credit the owner pulls with `withdraw`.
interface ILeaseMarket {
    /// @notice Emitted when a renter creates a lease. The spec (with `specHash`) lives in the event.
    event LeaseCreated(
        uint256 indexed leaseId,
        address indexed renter,
        LeaseSpec spec,
        uint256 maxPricePerSecond,
        uint256 deposit,
        bytes expectedMeasurement
    );

    /// @notice Emitted when a node key accepts a lease.
    event LeaseAccepted(uint256 indexed leaseId, address indexed nodeKey, uint256 ratePerSecond);

    /// @notice Emitted when the accepting node gives a lease back before attesting; it is open again.
    event LeaseDeclined(uint256 indexed leaseId, address indexed nodeKey);

    /// @notice Emitted when the renter or a verifier challenges a lease to attest afresh by `respondBy`.
    event LeaseChallenged(uint256 indexed leaseId, address indexed challenger, uint256 respondBy);

    /// @notice Emitted when the renter adds to the deposit.
    event LeaseToppedUp(uint256 indexed leaseId, uint256 amount, uint256 deposit);

    /// @notice Emitted when an operator claims earnings of a lease.
    event EarningsClaimed(uint256 indexed leaseId, address indexed operator, uint256 amount);

    /// @notice Emitted when a lease closes. `refund` went (or was credited) to the renter,
    /// `compensation` is slashed stake credited to the renter (0 in every current close path).
    event LeaseClosed(
        uint256 indexed leaseId, CloseReason reason, uint256 earned, uint256 refund, uint256 compensation
    );

    /// @notice Emitted when the escrow a lease held for an attestation awaiting its verdict at close is
    /// released: `earned` is the lease's final earnings (the held time is included only if Verified),
    /// `refund` the rest credited to the renter, `reason` the final close reason.
    event LeaseHeldReleased(uint256 indexed leaseId, CloseReason reason, uint256 earned, uint256 refund);

    /// @notice Emitted when a dispute reverses a lease's verdict (`wasVerified`: a false Verified);
    /// the money moved is in the Credited / Slashed / SlashRestored events and `getLease`.
    event VerdictReversed(uint256 indexed leaseId, bool wasVerified);

    /// @notice Emitted when an account is credited tokens to `withdraw`.
    event Credited(address indexed account, uint256 amount);

    /// @notice Emitted when an account withdraws its credit.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice Emitted when a lease fails over away from `oldNode`: it is OPEN again (same id, the
    /// remaining escrow) for another node; `reason` 1 = first attestation missed, 2 = attestation Expired
    /// (re-attestation missed, undecided without approval, or a challenge unanswered), 3 = the node left
    /// without fault (`exitLease`), 4 = its latest attestation was Rejected (`onAttestationRejected`), 5 = a
    /// dispute found one of its Verified verdicts false (`onVerifiedOverturned`). The next `LeaseAccepted`
    /// of the lease names the new node.
    event LeaseFailedOver(uint256 indexed leaseId, address indexed oldNode, uint8 reason);

    /// @notice Emitted once, when the owner sets the key service that decides whether a lease may fail over.
    event KeyServiceSet(address keyService);

    /// @notice Emitted when the owner changes the first-attestation window.
    event AttestationWindowSet(uint256 attestationWindow);

    /// @notice Length of an expected measurement (SEV-SNP MEASUREMENT), in bytes.
    function MEASUREMENT_LENGTH() external view returns (uint256);

    /// @notice Shortest re-attestation interval a lease may ask for (5 minutes).
    function MIN_REATTEST_INTERVAL() external view returns (uint256);

    /// @notice Longest re-attestation interval a lease may ask for (12 hours).
    function MAX_REATTEST_INTERVAL() external view returns (uint256);

    /// @notice The shortest unbonding delay the node registry may have: the registry's MAX_DISPUTE_WINDOW
    /// plus its VERIFICATION_WINDOW (how long a verdict stays disputable after its submission), so a
    /// dispute can still slash a node that unbonds right after its lease ends. Longer than every window
    /// in which a fault is decided (attestation window plus MAX_REATTEST_INTERVAL).
    function minUnbondingDelay() external view returns (uint256);

    /// @notice Stake of `nodeKey` bonded by its active leases (the registry will not unstake it).
    function bondedStake(address nodeKey) external view returns (uint256);

    /// @notice Bond and capacity (vCPU, memory, disk) held by the active leases of `nodeKey`.
    function nodeUsage(address nodeKey) external view returns (NodeUsage memory);

    /// @notice True while the lease is active and its deposit is not yet fully earned.
    function isServing(uint256 leaseId) external view returns (bool);

    /// @notice The ERC-20 token leases are paid in.
    function token() external view returns (IERC20);

    /// @notice The node registry consulted on accept and used to slash.
    function nodeRegistry() external view returns (INodeRegistry);

    /// @notice The attestation registry that records attestations of leases.
    function attestationRegistry() external view returns (IAttestationRegistryCore);

    /// @notice The key service whose per-lease policy allows failover (zero until set).
    function keyService() external view returns (IKeyService);

    /// @notice How many times the lease failed over.
    function failovers(uint256 leaseId) external view returns (uint32);

    /// @notice What the node `nodeKey` earned on `leaseId` before the lease failed over away from it
    /// (rate, earnings up to its fault, bond, whether a Rejected verdict moved it): all zero unless it did.
    function segmentOf(uint256 leaseId, address nodeKey) external view returns (Segment memory);

    /// @notice Seconds after accept within which the first attestation must be submitted.
    function attestationWindow() external view returns (uint256);

    /// @notice The id the next lease will get (ids start at 1).
    function nextLeaseId() external view returns (uint256);

    /// @notice The stored lease (all zero if it does not exist).
    function getLease(uint256 leaseId) external view returns (Lease memory);

    /// @notice The node key and status of a lease in one read (used by the attestation registry).
    function leaseNode(uint256 leaseId) external view returns (address nodeKey, LeaseStatus status);

    /// @notice The node key, status, renter and node operator of a lease (the attestation registry
    /// excludes the renter, node key and operator from voting on the lease's attestations), and its
    /// first-attestation deadline while active (0 otherwise; the registry refuses a first submission
    /// after it).
    function leaseParties(uint256 leaseId)
        external
        view
        returns (address nodeKey, LeaseStatus status, address renter, address operator, uint256 attestBy);

    /// @notice The last timestamp at which the node of an active lease may still decline it for free
    /// (half its attestation window after accept); 0 unless the lease is active. Between this and
    /// `attestBy` a decline burns a part of the bond growing linearly to all of it.
    function freeDeclineDeadline(uint256 leaseId) external view returns (uint64);

    /// @notice Whether `nodeKey` declined `leaseId` before (it may not accept it again).
    function declinedBy(uint256 leaseId, address nodeKey) external view returns (bool);

    /// @notice What the lease has earned so far (for a closed lease: in total), capped at the deposit.
    function earned(uint256 leaseId) external view returns (uint256);

    /// @notice What the operator can claim now (earned minus claimed).
    function claimable(uint256 leaseId) external view returns (uint256);

    /// @notice What the renter would get back by closing now (deposit minus earned; 0 if closed).
    function refundable(uint256 leaseId) external view returns (uint256);

    /// @notice Tokens credited to `account`, waiting for `withdraw`.
    function credits(address account) external view returns (uint256);

    /// @notice Creates a lease and pulls `deposit` from the caller into escrow (needs an allowance).
    /// @dev The re-attestation interval must lie in [MIN_REATTEST_INTERVAL, MAX_REATTEST_INTERVAL]; the
    /// market must receive exactly `deposit` (fee-on-transfer tokens are refused).
    /// Reverts: LeaseMarket_InvalidLeaseSpec, _InvalidReattestInterval, _ZeroMaxPrice, _ZeroAmount,
    /// _DepositOverflow, _InvalidMeasurementLength, _TransferAmountMismatch.
    /// @param spec Public terms (TEE type, vCPU, memory, disk, minimum node stake, re-attestation interval, specHash).
    /// @param maxPricePerSecond Highest total rate per second the renter pays (node price per vCPU times vCPUs).
    /// @param deposit Tokens to escrow.
    /// @param expectedMeasurement The 48-byte launch measurement the guest must attest.
    /// @return leaseId The new lease id.
    function createLease(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement
    ) external returns (uint256 leaseId);

    /// @notice `createLease` with an EIP-2612 permit for the deposit, so the renter needs one transaction.
    /// @dev A failing permit is ignored (it may have been front-run); the transfer then needs an allowance.
    function createLeaseWithPermit(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256 leaseId);

    /// @notice Accepts an open lease; the caller is the node key. The first valid accept wins.
    /// @dev Checks the node is registered, its active stake >= required = max(lease minimum, registry
    /// minimum), its TEE type matches, its declared capacity minus what its active leases use
    /// suffices, its stake not bonded by other leases covers this lease's bond
    /// (required x slashBps), and its rate <= the renter's maximum. Fixes the rate, the bond and the
    /// first-attestation deadline (now + attestationWindow) for the life of the lease.
    /// Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus, _NodeNotRegistered, _TeeTypeMismatch,
    /// _CapacityTooLow, _StakeTooLow, _FreeStakeTooLow, _PriceTooHigh.
    function acceptLease(uint256 leaseId) external;

    /// @notice Accepts an open lease for `nodeKey` (attestation registry only, from
    /// `AttestationRegistry.acceptAndSubmit`, whose caller is the node key): the checks and effects of
    /// `acceptLease` with `nodeKey` as the caller, so the accept and the first attestation are one step.
    /// Reverts: LeaseMarket_CallerNotAttestationRegistry and those of `acceptLease`.
    function acceptFor(uint256 leaseId, address nodeKey) external;

    /// @notice Adds `amount` to an open or active lease's deposit (renter only).
    /// @dev Refused once verified plus pending time would use up the deposit (new money must not pay
    /// for time past the old deposit). Reverts: LeaseMarket_LeaseNotFound, _LeaseClosed, _NotRenter,
    /// _ZeroAmount, _LeaseExhausted, _DepositOverflow, _TransferAmountMismatch.
    function topUp(uint256 leaseId, uint256 amount) external;

    /// @notice Sends the claimable earnings of a lease to its node's operator (the caller).
    /// @dev Works on active and closed leases. Reverts: LeaseMarket_LeaseNotFound, _NotOperator, _NothingToClaim.
    /// @return amount The tokens sent.
    function claim(uint256 leaseId) external returns (uint256 amount);

    /// @notice Closes the lease and sends the renter (the caller) the unearned rest.
    /// @dev Reason RENTER; EXHAUSTED when the deposit is fully earned (no fault); ATTESTATION_MISSED
    /// (counted against the node) when the latest attestation is Expired: not re-attested in time,
    /// left undecided past the verification window without an allowed verifier's approval, or not
    /// refreshed after a challenge. If the first attestation was missed this is
    /// `reportMissedAttestation` (bond slashed). Always possible: while an attestation awaits the
    /// verifiers, the pay for its time is held in escrow (and the bond stays locked) until the verdict
    /// or the end of its verification window; see `finalizeClose`.
    /// Reverts: LeaseMarket_LeaseNotFound, _LeaseClosed, _NotRenter.
    /// @return refund The tokens sent to the renter.
    function closeLease(uint256 leaseId) external returns (uint256 refund);

    /// @notice Releases the escrow held by a lease the renter closed while its attestation awaited the
    /// verifiers (anyone; called by the attestation registry at a Verified verdict, and at a rejection
    /// through `onAttestationRejected`). Verified: the held time is earned. Rejected: refund, bond
    /// slashed. Undecided past the window: refund; a first attestation without an allowed approval is
    /// a missed first attestation (bond slashed), a later one a miss. Then the bond is freed.
    /// @dev Emits LeaseHeldReleased. Reverts: LeaseMarket_NothingHeld, _AttestationPending.
    function finalizeClose(uint256 leaseId) external;

    /// @notice Closes a lease whose deposit is fully earned (anyone). Reason EXHAUSTED.
    /// @dev Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus, _AttestationPending, _NotExhausted.
    function settle(uint256 leaseId) external;

    /// @notice Closes an accepted lease whose node missed its first attestation (anyone): none was
    /// submitted by the deadline fixed at accept, or the first one was left undecided past the
    /// verification window. Full refund credited to the renter; the lease's bond is slashed and
    /// burned (the renter paid nothing, so it is owed no compensation). If the lease's key policy allows
    /// failover, the lease fails over instead (`failover`, reason 1): nobody can end a lease the renter
    /// wants to survive its node by reporting the fault first.
    /// @dev Reason ATTESTATION_MISSED. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus,
    /// _AttestationSubmitted, _AttestationDeadlineNotPassed.
    function reportMissedAttestation(uint256 leaseId) external;

    /// @notice The node key gives up an active lease. Before its first submission and deadline this
    /// is `declineLease`; after the deadline without an attestation it is `reportMissedAttestation`;
    /// otherwise the lease closes and the unearned rest is credited to the renter. Leaving over a
    /// lapsed attestation or an unanswered challenge records the miss (reason ATTESTATION_MISSED). A lease
    /// whose key policy allows failover fails over instead unless its deposit is used up (EXHAUSTED): at
    /// such a fault (or after a missed first attestation) as `failover` does (reasons 1 and 2), and after a
    /// no-fault exit too (reason 3: paid up to now, bond freed, no miss recorded). No node can end a lease
    /// the renter wants to survive it (a close tells the key holders to delete the lease's shares).
    /// @dev Reason NODE_EXIT. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus, _NotLeaseNode,
    /// _AttestationPending.
    function exitLease(uint256 leaseId) external;

    /// @notice The node key gives back a lease it cannot serve, before submitting any attestation and
    /// before the first-attestation deadline: bond and capacity are freed and the lease is OPEN again
    /// for the next node, never for this node key again. Free until `freeDeclineDeadline`; later, a
    /// part of the bond, growing linearly to all of it at `attestBy`, is slashed (burned).
    /// @dev Emits LeaseDeclined. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus, _NotLeaseNode,
    /// _AttestationSubmitted, _AttestationDeadlinePassed.
    function declineLease(uint256 leaseId) external;

    /// @notice The renter or a verifier asks the node of an attested lease to attest afresh. Payment
    /// for the current attestation stops now; unless the node submits a fresh attestation within the
    /// registry's CHALLENGE_WINDOW (and it is verified), the attestation counts as Expired: the
    /// renter can close with the refund and the close counts against the node (no slash). At most
    /// one challenge per lease per MIN_CHALLENGE_INTERVAL. A verifier may not challenge a lease whose
    /// node key or node operator it is (a renter challenges as the renter).
    /// @dev Emits LeaseChallenged. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus,
    /// _NotChallenger, _ChallengerIsParty, AttestationRegistry_NothingToChallenge, _ChallengeTooSoon.
    function challenge(uint256 leaseId) external;

    /// @notice Moves an active lease whose node is at fault to another node (anyone; the liveness watcher
    /// does it): needs the key service set and the lease's key policy to allow failover. At fault means
    /// exactly what would otherwise close the lease with ATTESTATION_MISSED: the first attestation
    /// missed (`reportMissedAttestation` would accept it; reason 1), or the latest attestation Expired
    /// without excuse (not re-attested in time, left undecided without an allowed approval, or not
    /// refreshed after a challenge; reason 2) while the deposit is not used up.
    /// Effects: the node's bond is handled as the close path would (reason 1: slashed and burned;
    /// reason 2: a miss recorded, the bond freed) and its capacity freed; what it earned up to its fault
    /// (verified seconds x its rate; payment already stopped at the expiry or the challenge) stays its own:
    /// the unclaimed part is credited to its operator at once, and the lease's deposit keeps only the
    /// rest (claimed restarts at 0). The lease is OPEN again under the same id with that remaining
    /// escrow, no node, no bond; the old node key can never accept it again (`declinedBy`); the
    /// attestation registry starts a new segment (`IAttestationRegistryCore.onFailover`), so the lease
    /// is not attested until the next node's first submission is Verified, and the old node can neither
    /// submit for the lease nor claim from it again. The renter can still close (full refund of the rest)
    /// or top up while it is open.
    /// Disputes after a failover: a dispute overturning a Verified verdict of an earlier node's segment
    /// is settled against that node alone (`onSegmentOverturned`): its kept earnings are cut to what it
    /// earned before the false submission, its operator's bond for the lease is slashed (once), and the
    /// renter is compensated from it for what it paid for the false time (not if the renter is the node's
    /// operator). The lease, its escrow and its current node are untouched, so nobody profits from a
    /// failover and no later node pays for an earlier one. A pending court challenge of an old verdict
    /// keeps `isAttestedFinal` false until it is settled (it counts the lease's pending challenges).
    /// @dev Emits LeaseFailedOver (and Credited). Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus,
    /// _FailoverNotAllowed, _NotAtFault (also while the latest attestation awaits the verifiers).
    function failover(uint256 leaseId) external;

    /// @notice Called by the attestation registry when a dispute overturns a Verified verdict of a node the
    /// lease failed over from: that node's segment keeps earned = min(earned, keepSeconds x its rate); the
    /// node's stake is slashed by the segment's bond (at most what it holds beyond its active leases'
    /// bonds; once: a second overturn of the same segment slashes nothing), and the renter is credited,
    /// out of it, what the node was paid beyond the kept earnings (nothing if the renter is the node's
    /// operator). Emits VerdictReversed(leaseId, true).
    /// @dev Reverts: LeaseMarket_CallerNotAttestationRegistry.
    function onSegmentOverturned(uint256 leaseId, address nodeKey, uint256 keepSeconds) external;

    /// @notice Sets the key service (owner only, once: whoever decides failover must not be swappable).
    /// @dev Emits KeyServiceSet. Reverts: LeaseMarket_KeyServiceAlreadySet (also for the zero address).
    function setKeyService(IKeyService keyService_) external;

    /// @notice Called by the attestation registry when the verifier quorum rejects an attestation:
    /// closes the lease (or, if the renter closed it while the attestation awaited the verdict,
    /// releases the held escrow to the renter) (reason ATTESTATION_REJECTED, unearned rest credited to the renter) and
    /// slashes its bond, all of it burned: the rejected attestation's time is never paid, so there
    /// is no compensation (paying it would let a verifier-renter or a self-dealing operator profit).
    /// A lease whose key policy allows failover, with deposit left, is not closed but fails over
    /// (LeaseFailedOver reason 4; the bond burned the same way, the node's earnings before the rejected
    /// submission credited to its operator, the rest stays the lease's escrow): a close would make the
    /// key holders delete the renter's shares, so one bad report would destroy the renter's key and data.
    /// @dev Reverts: LeaseMarket_CallerNotAttestationRegistry.
    function onAttestationRejected(uint256 leaseId) external;

    /// @notice Called by the attestation registry when a dispute overturns a Verified verdict: every
    /// verified second from the false submission on (`keepSeconds` = verified seconds before it) is
    /// unpaid. The lease is closed (reason ATTESTATION_REJECTED; an already closed one gets that reason);
    /// earned becomes max(keepSeconds x rate capped at the deposit, claimed); the renter is credited the
    /// rest of the escrow, plus, out of the node's bond, what the operator already claimed beyond the
    /// kept earnings. An active lease whose key policy allows failover, with escrow left, fails over
    /// instead (LeaseFailedOver reason 5): the rest of the escrow stays in the lease for the next node. The bond is slashed (the rest burned): all of it while locked (active, or closed
    /// while pending), else at most what the node holds beyond its active leases' bonds; nothing if
    /// `bondTaken` (a later rejection of the lease already slashed it: a bond is slashed once). An
    /// operator renting its own node gets no compensation. Emits VerdictReversed.
    /// @dev Reverts: LeaseMarket_CallerNotAttestationRegistry.
    function onVerifiedOverturned(uint256 leaseId, uint256 keepSeconds, bool bondTaken) external;

    /// @notice Called by the attestation registry when a dispute overturns a Rejected verdict: the node's
    /// burned bond goes back to its stake, and its time [from, to) x rate is paid from the renter's credit.
    /// `segmentNode` zero: the rejection closed the lease; `to` is capped at the close, the pay is added to
    /// the lease's earnings (claimable by the operator) and the close reason becomes RENTER. Otherwise the
    /// rejection moved the lease away from `segmentNode` at `to`: the pay is credited to that node's
    /// operator and added to its segment's earnings; nothing at all (zeros returned) if a dispute already
    /// overturned an earlier Verified verdict of that node (its bond stays burned: it was at fault).
    /// Emits VerdictReversed.
    /// @dev Reverts: LeaseMarket_CallerNotAttestationRegistry.
    /// @return unpaid What the renter's credit no longer covered (the registry pays it from the wrong voters' stake).
    /// @return operator The operator of the node, to be paid `unpaid`.
    function onRejectedOverturned(uint256 leaseId, address segmentNode, uint256 from, uint256 to)
        external
        returns (uint256 unpaid, address operator);

    /// @notice Sends the caller its whole credit.
    /// @dev Reverts: LeaseMarket_NothingToWithdraw.
    /// @return amount The tokens sent.
    function withdraw() external returns (uint256 amount);

    /// @notice Sets the first-attestation window for leases accepted from now on (owner only),
    /// between 1 minute and 1 day (always within the node registry's unbonding delay, which is at least
    /// `minUnbondingDelay`).
    /// @dev Reverts: LeaseMarket_InvalidAttestationWindow.
    function setAttestationWindow(uint256 newWindow) external;
}
