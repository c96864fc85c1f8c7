// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../interfaces/IAttestationRegistry.sol";
import {LeaseStatus, TeeType} from "../types/DataTypes.sol";

/// @title Errors
/// @notice Every custom error of the cvm contracts, grouped by the contract that throws it.
library Errors {
    /*//////////////////////////////////////////////////////////////////////////
                                    NODE-REGISTRY
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice Thrown when a zero address is given where an account or contract is required.
    error NodeRegistry_ZeroAddress();

    /// @notice Thrown when registering a node key that is already registered.
    error NodeRegistry_NodeAlreadyRegistered(address nodeKey, address operator);

    /// @notice Thrown when the node key's signature does not consent to the caller as its operator
    /// (signed by another key, for another operator or domain, or malformed).
    error NodeRegistry_InvalidNodeKeySignature(address nodeKey, address operator);

    /// @notice Thrown when a call names a node key that is not registered.
    error NodeRegistry_NodeNotRegistered(address nodeKey);

    /// @notice Thrown when someone other than the node's operator manages it.
    error NodeRegistry_NotOperator(address nodeKey, address caller, address operator);

    /// @notice Thrown when a node spec has no TEE type or zero vCPU, memory or disk.
    error NodeRegistry_InvalidNodeSpec(address nodeKey);

    /// @notice Thrown when an amount of zero is staked or unstaked.
    error NodeRegistry_ZeroAmount(address nodeKey);

    /// @notice Thrown when more is unstaked than is actively staked.
    error NodeRegistry_UnstakeExceedsStake(address nodeKey, uint256 amount, uint256 stake);

    /// @notice Thrown when withdrawing while nothing is unbonding.
    error NodeRegistry_NothingUnbonding(address nodeKey);

    /// @notice Thrown when withdrawing before the unbonding delay has passed.
    error NodeRegistry_UnbondingNotFinished(address nodeKey, uint256 unlocksAt, uint256 currentTime);

    /// @notice Thrown when a function reserved for the lease market is called by another account.
    error NodeRegistry_CallerNotLeaseMarket(address caller);

    /// @notice Thrown when the lease market is set a second time.
    error NodeRegistry_LeaseMarketAlreadySet(address leaseMarket);

    /// @notice Thrown when the slash fraction is set above the hard cap.
    error NodeRegistry_SlashBpsTooHigh(uint256 slashBps, uint256 maxSlashBps);

    /// @notice Thrown when the unbonding delay is set above the hard cap.
    error NodeRegistry_UnbondingDelayTooLong(uint256 delay, uint256 maxDelay);

    /// @notice Thrown when the unbonding delay would be shorter than the lease market's bound
    /// (attestation window + longest re-attestation interval + verification window).
    error NodeRegistry_UnbondingDelayTooShort(uint256 delay, uint256 minDelay);

    /// @notice Thrown when unstaking would leave less active stake than the node's leases bond.
    error NodeRegistry_StakeBonded(address nodeKey, uint256 amount, uint256 unbondable);

    /// @notice Thrown when a token transfer in books another amount than requested (fee-on-transfer token).
    error NodeRegistry_TransferAmountMismatch(uint256 expected, uint256 received);

    /*//////////////////////////////////////////////////////////////////////////
                                    LEASE-MARKET
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice Thrown when a zero address is given where a contract is required.
    error LeaseMarket_ZeroAddress();

    /// @notice Thrown when the expected measurement is not exactly 48 bytes.
    error LeaseMarket_InvalidMeasurementLength(uint256 length);

    /// @notice Thrown when a lease spec has no TEE type, zero vCPU/memory/disk or a zero re-attestation interval.
    error LeaseMarket_InvalidLeaseSpec();

    /// @notice Thrown when a deposit or top-up of zero is made.
    error LeaseMarket_ZeroAmount();

    /// @notice Thrown when the maximum price per second is zero.
    error LeaseMarket_ZeroMaxPrice();

    /// @notice Thrown when a lease's escrow would exceed 96 bits (7.9e28 base units).
    error LeaseMarket_DepositOverflow(uint256 leaseId, uint256 deposit);

    /// @notice Thrown when a lease id does not exist.
    error LeaseMarket_LeaseNotFound(uint256 leaseId);

    /// @notice Thrown when a lease is not in the status a call needs.
    error LeaseMarket_UnexpectedStatus(uint256 leaseId, LeaseStatus status, LeaseStatus expected);

    /// @notice Thrown when a lease is already closed.
    error LeaseMarket_LeaseClosed(uint256 leaseId);

    /// @notice Thrown when someone other than the renter acts as the renter.
    error LeaseMarket_NotRenter(uint256 leaseId, address caller, address renter);

    /// @notice Thrown when someone other than the lease's node operator claims.
    error LeaseMarket_NotOperator(uint256 leaseId, address caller, address operator);

    /// @notice Thrown when someone other than the lease's node key acts as the node.
    error LeaseMarket_NotLeaseNode(uint256 leaseId, address caller, address nodeKey);

    /// @notice Thrown when an unregistered node key tries to accept.
    error LeaseMarket_NodeNotRegistered(address nodeKey);

    /// @notice Thrown when the accepting node's active stake is below what the lease (or registry) demands.
    error LeaseMarket_StakeTooLow(uint256 leaseId, uint256 stake, uint256 required);

    /// @notice Thrown when the accepting node offers another TEE type than the lease requires.
    error LeaseMarket_TeeTypeMismatch(uint256 leaseId, TeeType required, TeeType offered);

    /// @notice Thrown when the accepting node declares less vCPU, memory or disk than the lease needs.
    error LeaseMarket_CapacityTooLow(uint256 leaseId, address nodeKey);

    /// @notice Thrown when the node's rate (price per vCPU times vCPUs) exceeds the renter's maximum.
    error LeaseMarket_PriceTooHigh(uint256 leaseId, uint256 rate, uint256 maxPricePerSecond);

    /// @notice Thrown when a claim finds nothing claimable.
    error LeaseMarket_NothingToClaim(uint256 leaseId);

    /// @notice Thrown when settling a lease whose deposit is not yet fully earned.
    error LeaseMarket_NotExhausted(uint256 leaseId, uint256 earned, uint256 deposit);

    /// @notice Thrown when topping up a lease whose deposit is already fully earned (settle it instead).
    error LeaseMarket_LeaseExhausted(uint256 leaseId);

    /// @notice Thrown when a lease fails over without a key service set, or its key policy forbids it.
    error LeaseMarket_FailoverNotAllowed(uint256 leaseId);

    /// @notice Thrown when a lease fails over while its node is not at fault (no missed first attestation,
    /// no unexcused Expired attestation; or the deposit is used up, which is no fault).
    error LeaseMarket_NotAtFault(uint256 leaseId);

    /// @notice Thrown when the key service is set a second time, or to the zero address.
    error LeaseMarket_KeyServiceAlreadySet();

    /// @notice Thrown when reporting a missed first attestation before its deadline.
    error LeaseMarket_AttestationDeadlineNotPassed(uint256 leaseId, uint256 deadline, uint256 currentTime);

    /// @notice Thrown when reporting a missed first attestation although one was submitted.
    error LeaseMarket_AttestationSubmitted(uint256 leaseId);

    /// @notice Thrown when a function reserved for the attestation registry is called by another account.
    error LeaseMarket_CallerNotAttestationRegistry(address caller);

    /// @notice Thrown when withdrawing with no credited balance.
    error LeaseMarket_NothingToWithdraw(address account);

    /// @notice Thrown when the attestation window is set outside its bounds (or leaves the
    /// node registry's unbonding delay too short).
    error LeaseMarket_InvalidAttestationWindow(uint256 window);

    /// @notice Thrown when a lease's re-attestation interval is outside [MIN_REATTEST_INTERVAL, MAX_REATTEST_INTERVAL].
    error LeaseMarket_InvalidReattestInterval(uint256 interval);

    /// @notice Thrown when the node's stake not yet bonded by its other leases cannot cover this lease's bond.
    error LeaseMarket_FreeStakeTooLow(uint256 leaseId, uint256 freeStake, uint256 bond);

    /// @notice Thrown when declining a lease after its first-attestation deadline (the missed path applies).
    error LeaseMarket_AttestationDeadlinePassed(uint256 leaseId, uint256 deadline, uint256 currentTime);

    /// @notice Thrown when a lease would end while an attestation awaits the verifiers within its window.
    error LeaseMarket_AttestationPending(uint256 leaseId, uint256 decideBy);

    /// @notice Thrown when someone other than the renter or a verifier challenges a lease.
    error LeaseMarket_NotChallenger(uint256 leaseId, address caller);

    /// @notice Thrown when a token transfer in books another amount than requested (fee-on-transfer token).
    error LeaseMarket_TransferAmountMismatch(uint256 expected, uint256 received);

    /// @notice Thrown when a node key accepts a lease it declined before (no decline squatting).
    error LeaseMarket_DeclinedBefore(uint256 leaseId, address nodeKey);

    /// @notice Thrown when a verifier challenges a lease whose node key or node operator it is.
    error LeaseMarket_ChallengerIsParty(uint256 leaseId, address caller);

    /// @notice Thrown when `finalizeClose` names a lease that holds no escrow awaiting a verdict.
    error LeaseMarket_NothingHeld(uint256 leaseId);

    /*//////////////////////////////////////////////////////////////////////////
                                ATTESTATION-REGISTRY
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice Thrown when a zero address is given where a contract is required.
    error AttestationRegistry_ZeroAddress();

    /// @notice Thrown when a function reserved for the lease market is called by another account.
    error AttestationRegistry_CallerNotLeaseMarket(address caller);

    /// @notice Thrown when the lease market is set a second time.
    error AttestationRegistry_LeaseMarketAlreadySet(address leaseMarket);

    /// @notice Thrown when the quorum is set to zero.
    error AttestationRegistry_InvalidQuorum(uint256 quorum);

    /// @notice Thrown when the challenge window given at deployment is outside 30 seconds .. 1 day.
    error AttestationRegistry_InvalidChallengeWindow(uint256 challengeWindow);

    /// @notice Thrown when a lease is opened twice.
    error AttestationRegistry_LeaseAlreadyOpened(uint256 leaseId);

    /// @notice Thrown when a measurement is not exactly 48 bytes.
    error AttestationRegistry_InvalidMeasurementLength(uint256 length);

    /// @notice Thrown when a re-attestation interval of zero is given.
    error AttestationRegistry_ZeroReattestInterval(uint256 leaseId);

    /// @notice Thrown when a submit names a lease that is not active.
    error AttestationRegistry_LeaseNotActive(uint256 leaseId);

    /// @notice Thrown when someone other than the lease's node key submits.
    error AttestationRegistry_NotLeaseNode(uint256 leaseId, address caller, address nodeKey);

    /// @notice Thrown when a submit carries another nonce than the lease's current one.
    error AttestationRegistry_StaleNonce(uint256 leaseId, uint256 nonce, uint256 expected);

    /// @notice Thrown when a submitted measurement differs from the lease's expected one.
    error AttestationRegistry_MeasurementMismatch(uint256 leaseId);

    /// @notice Thrown when a zero report hash is submitted.
    error AttestationRegistry_ZeroReportHash(uint256 leaseId);

    /// @notice Thrown when a submit arrives while the previous attestation still awaits the verifiers.
    error AttestationRegistry_AttestationPending(uint256 leaseId);

    /// @notice Thrown when a re-attestation comes before half the re-attestation interval of the
    /// verified one it replaces, without a challenge since; `earliest` is when it is accepted.
    error AttestationRegistry_ReattestTooEarly(uint256 leaseId, uint256 earliest);

    /// @notice Thrown when a confirm finds no attestation awaiting verification.
    error AttestationRegistry_NotPending(uint256 leaseId, IAttestationRegistry.Status status);

    /// @notice Thrown when a confirm names another report than the pending one.
    error AttestationRegistry_ReportHashMismatch(uint256 leaseId, bytes32 reportHash, bytes32 pending);

    /// @notice Thrown when a verifier votes twice on the same attestation.
    error AttestationRegistry_AlreadyVoted(uint256 leaseId, address verifier);

    /// @notice Thrown when a vote arrives after the pending attestation's verification window (it counts as missed).
    error AttestationRegistry_VerificationWindowPassed(uint256 leaseId, uint256 decideBy);

    /// @notice Thrown when challenging a lease whose latest attestation is not Verified (nothing to refresh).
    error AttestationRegistry_NothingToChallenge(uint256 leaseId, IAttestationRegistry.Status status);

    /// @notice Thrown when a lease is challenged again before MIN_CHALLENGE_INTERVAL has passed.
    error AttestationRegistry_ChallengeTooSoon(uint256 leaseId, uint256 nextChallengeAt);

    /// @notice Thrown when a submit names no attested signer, or the node key itself as the signer.
    error AttestationRegistry_InvalidSigner(uint256 leaseId, address signer);

    /// @notice Thrown when a vote comes from an account that may not vote on this attestation: it did
    /// not hold VERIFIER_ROLE when the attestation was submitted, or it is the lease's renter, node
    /// key or node operator.
    error AttestationRegistry_NotEligibleVoter(uint256 leaseId, address account);

    /// @notice Thrown when VERIFIER_ROLE would go to a 256th account (votes are counted in 8 bits).
    error AttestationRegistry_TooManyVerifiers();

    /// @notice Thrown when VERIFIER_ROLE is granted again before the attestations its holder could
    /// vote on before its revocation are all past their verification window.
    error AttestationRegistry_RegrantTooSoon(address account, uint256 allowedAt);

    /// @notice Thrown when a lease's first attestation is submitted after its deadline `attestBy`
    /// (that is a missed first attestation: a late report must not erase it).
    error AttestationRegistry_AttestationDeadlinePassed(uint256 leaseId, uint256 attestBy);

    /// @notice Thrown when no submission of `leaseId` has this report hash (or its record is gone).
    error AttestationRegistry_UnknownSubmission(uint256 leaseId, bytes32 reportHash);

    /// @notice Thrown when a dispute or on-chain confirmation names a submission without a verdict.
    error AttestationRegistry_NotDecided(uint256 leaseId, bytes32 reportHash);

    /// @notice Thrown when a submission's verdict was already disputed or confirmed on chain.
    error AttestationRegistry_AlreadySettled(uint256 leaseId, bytes32 reportHash);

    /// @notice Thrown when a dispute or on-chain confirmation comes after the submission's dispute window.
    error AttestationRegistry_DisputeWindowPassed(uint256 leaseId, bytes32 reportHash, uint256 disputableUntil);

    /// @notice Thrown when `confirmOnChain` finds the report false, or names a submission not Verified.
    error AttestationRegistry_NotConfirmed(uint256 leaseId, bytes32 reportHash);

    /// @notice Thrown when the dispute terms are out of range.
    error AttestationRegistry_InvalidDisputeTerms();

    /// @notice Thrown when the attestation court is set a second time (or to zero).
    error AttestationRegistry_CourtAlreadySet();

    /// @notice Thrown when a verifier votes before the attestation court (which keeps verifier stake) is set.
    error AttestationRegistry_CourtUnset();

    /// @notice Thrown when a function reserved for the attestation court is called by another account.
    error AttestationRegistry_CallerNotCourt(address caller);

    /*//////////////////////////////////////////////////////////////////////////
                                ATTESTATION-COURT
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice Thrown when a zero address is given where a contract is required.
    error AttestationCourt_ZeroAddress();

    /// @notice Thrown when a verifier votes with less active stake than the dispute terms' minimum.
    error AttestationCourt_StakeTooLow(address verifier, uint256 stake, uint256 minStake);

    /// @notice Thrown when a verifier stakes or unstakes zero.
    error AttestationCourt_ZeroAmount();

    /// @notice Thrown when a verifier unstakes more than its active stake.
    error AttestationCourt_UnstakeExceedsStake(address verifier, uint256 amount, uint256 stake);

    /// @notice Thrown when a verifier withdraws while nothing is unbonding.
    error AttestationCourt_NothingUnbonding(address verifier);

    /// @notice Thrown when a verifier withdraws before its unbonding delay passed or while a vote of
    /// its can still be disputed; `unlocksAt` is when it can.
    error AttestationCourt_StakeLocked(address verifier, uint256 unlocksAt);

    /// @notice Thrown when a function reserved for the attestation registry is called by another account.
    error AttestationCourt_CallerNotRegistry(address caller);

    /// @notice Thrown when a bond or stake transfer delivers another amount than asked (fee-on-transfer token).
    error AttestationCourt_TransferAmountMismatch(uint256 expected, uint256 received);

    /// @notice Thrown when the court was deployed without an SEV-SNP verifier (disputes unavailable).
    error AttestationCourt_NoSnpVerifier();

    /// @notice Thrown when the report given is not the one whose keccak256 the node submitted.
    error AttestationCourt_ReportMismatch(uint256 leaseId, bytes32 reportHash);

    /// @notice Thrown when the guest key given is not 116 bytes or not what the report's REPORT_DATA[32:64] hashes.
    error AttestationCourt_GuestKeyMismatch(uint256 leaseId);

    /// @notice Thrown when the on-chain check cannot tell the truth from what was given (a certificate
    /// that does not chain, or one that may belong to another chip): `reason` is the SnpReason.
    error AttestationCourt_Inconclusive(uint256 leaseId, uint8 reason);

    /// @notice A challenge of this submission's Verified verdict is pending (a second dispute, or an
    /// on-chain confirmation, waits for `defend` or `resolve`).
    error AttestationCourt_ChallengePending(uint256 leaseId, bytes32 reportHash, uint256 deadline);

    /// @notice No challenge of this submission is pending.
    error AttestationCourt_NoChallenge(uint256 leaseId, bytes32 reportHash);

    /// @notice `defend` after the challenge's deadline (`resolve` it instead).
    error AttestationCourt_ChallengeExpired(uint256 leaseId, bytes32 reportHash, uint256 deadline);

    /// @notice `resolve` before the challenge's deadline has passed (the defender may still answer).
    error AttestationCourt_ChallengeNotExpired(uint256 leaseId, bytes32 reportHash, uint256 deadline);

    /// @notice The caller's stake backs a vote whose challenge is still pending: it cannot leave.
    error AttestationCourt_StakeChallenged(address verifier, uint256 challenges);

    /*//////////////////////////////////////////////////////////////////////////
                                    KEY-SERVICE
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice Thrown when a zero address is given where a contract is required.
    error KeyService_ZeroAddress();

    /// @notice Thrown when the minimum holder stake is zero or the unbonding delay is out of bounds.
    error KeyService_InvalidTerms();

    /// @notice Thrown when an amount of zero is staked or unstaked.
    error KeyService_ZeroAmount();

    /// @notice Thrown when a holder registers a zero X25519 key.
    error KeyService_ZeroKey();

    /// @notice Thrown when an account registers twice.
    error KeyService_AlreadyRegistered(address holder);

    /// @notice Thrown when a call needs a registered holder.
    error KeyService_NotRegistered(address holder);

    /// @notice Thrown when registering without at least the minimum holder stake.
    error KeyService_StakeTooLow(address holder, uint256 stake, uint256 minStake);

    /// @notice Thrown when MAX_HOLDERS holders are registered already.
    error KeyService_TooManyHolders();

    /// @notice Thrown when more is unstaked than is actively staked.
    error KeyService_UnstakeExceedsStake(address holder, uint256 amount, uint256 stake);

    /// @notice Thrown when withdrawing while nothing is unbonding.
    error KeyService_NothingUnbonding(address holder);

    /// @notice Thrown when withdrawing unbonding stake before it unlocks.
    error KeyService_StakeLocked(address holder, uint256 unlocksAt);

    /// @notice Thrown when deregistering with stake still active or unbonding.
    error KeyService_StakeRemaining(address holder);

    /// @notice Thrown when the market receives less than the amount transferred (fee-on-transfer tokens).
    error KeyService_TransferAmountMismatch(uint256 expected, uint256 received);

    /// @notice Thrown when someone other than the lease's renter changes its key policy.
    error KeyService_NotRenter(uint256 leaseId, address caller, address renter);

    /// @notice Thrown when the lease does not exist or is closed.
    error KeyService_LeaseNotOpenOrActive(uint256 leaseId);

    /// @notice Thrown when a policy change needs an existing policy and there is none.
    error KeyService_NoPolicy(uint256 leaseId);

    /// @notice Thrown when the measurements are not 1..MAX_MEASUREMENTS of MEASUREMENT_LENGTH bytes each.
    error KeyService_InvalidMeasurements(uint256 leaseId);

    /// @notice Thrown when the holders are not 1..MAX_POLICY_HOLDERS, or the threshold not 1..holders.
    error KeyService_InvalidThreshold(uint256 leaseId, uint256 threshold, uint256 holders);

    /// @notice Thrown when a policy names a holder twice.
    error KeyService_DuplicateHolder(uint256 leaseId, address holder);

    /// @notice Thrown when a policy names a holder that is not registered with the minimum stake.
    error KeyService_HolderNotActive(uint256 leaseId, address holder);

    /// @notice Thrown when the manifest hash is zero.
    error KeyService_ZeroManifestHash(uint256 leaseId);

    /// @notice Thrown when a new root key (holders or manifest changed) does not raise the key version,
    /// or any change lowers it.
    error KeyService_KeyVersionNotIncreased(uint256 leaseId, uint32 keyVersion, uint32 current);

    /*//////////////////////////////////////////////////////////////////////////
                                  ATTESTED-SERVICE
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice Thrown when the example consumer is used for a lease that is not attested with its measurement.
    error AttestedService_NotAttested(uint256 leaseId);

    /// @notice Thrown when a result's signature does not recover to the lease's attested signer.
    error AttestedService_NotAttestedSigner(uint256 leaseId, address recovered, address attestedSigner);

    /// @notice Thrown when a request was already answered (each request is answered once).
    error AttestedService_RequestAnswered(bytes32 request);
}
