// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "./interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {IAttestationCourt} from "./interfaces/IAttestationCourt.sol";
import {Errors} from "./libraries/Errors.sol";
import {AttestationProgress, DisputeTerms, LeaseStatus, SubmissionInfo} from "./types/DataTypes.sol";

/// @title AttestationRegistry
/// @notice Attestations of cvm leases, confirmed by a quorum of verifiers. See {IAttestationRegistryCore}.
/// @dev The record of a lease is written when the lease is created, so that `submit` and
/// `confirm` only rewrite slots that already hold data (5,000 gas each instead of 22,100).
/// The measurement is stored once, here; the node key and lease status are read from the market.
contract AttestationRegistry is IAttestationRegistryCore, AccessControl {
    /// @inheritdoc IAttestationRegistryCore
    bytes32 public constant override VERIFIER_ROLE = keccak256("cvm.VERIFIER_ROLE");

    /// @inheritdoc IAttestationRegistryCore
    uint256 public constant override VERIFICATION_WINDOW = 1 hours;

    /// @inheritdoc IAttestationRegistryCore
    /// @dev An immutable of the deployment (between 30 seconds and 1 day; 15 minutes by default), so a
    /// test or bench chain can shorten the time a failed liveness challenge takes.
    // solhint-disable-next-line immutable-vars-naming
    uint256 public immutable override CHALLENGE_WINDOW;

    uint256 private constant _MIN_CHALLENGE_WINDOW = 30 seconds;
    uint256 private constant _MAX_CHALLENGE_WINDOW = 1 days;

    /// @inheritdoc IAttestationRegistryCore
    uint256 public constant override MIN_CHALLENGE_INTERVAL = 1 hours;

    /// @inheritdoc IAttestationRegistryCore
    uint256 public constant override MAX_DISPUTE_WINDOW = 7 days;

    uint256 private constant _MEASUREMENT_LENGTH = 48;
    uint256 private constant _BPS = 10_000;
    // Round / Past flags.
    uint8 private constant _CLOSED_PENDING = 1;
    uint8 private constant _DISPUTED = 2;
    uint8 private constant _CONFIRMED = 4;
    uint8 private constant _CHALLENGED = 8;

    /// @dev One record per lease, four slots. Slots 0 and 3 are first written by the first submit
    /// (a fresh slot there costs what a placeholder written at open plus its rewrite would cost less
    /// 5,000), slots 1 and 2 at open.
    struct Record {
        // slot 0
        bytes32 reportHash;
        // slot 1: measurement bytes 0..31
        bytes32 measurementHead;
        // slot 2: measurement bytes 32..47 (16) + status (1) + submittedAt (5) + verifiedAt (5) +
        // interval (4) + round (1) = 32 bytes; `confirm` reads only this slot of the record besides the
        // report hash. uint40 seconds last until the year 36812; a non-zero interval marks the record open.
        bytes16 measurementTail;
        Status status;
        uint40 submittedAt;
        uint40 verifiedAt;
        uint32 reattestInterval;
        // The lease's dispute window in hours, fixed when the lease is opened. (The latest submission's
        // round is (nonce + 1) & 1.)
        uint8 disputeHours;
        // slot 3: tcb (8) + nonce (4) + banked (4) + prevExpiresAt (5) + challengedAt (5) = 26 bytes.
        // 32 bits of seconds is 136 years, of nonces 4e9 re-attestations.
        uint64 reportedTcb;
        uint32 nonce;
        // Verified seconds of earlier attestations of this lease.
        uint32 bankedSeconds;
        // Expiry of the verified attestation the pending one replaces (keeps `isAttested` seamless).
        uint40 prevExpiresAt;
        // Last challenge: payment for an attestation submitted before it stops at this time.
        uint40 challengedAt;
        // The first submission number whose Verified verdict a dispute overturned (0: none): it and
        // every later one are settled (the lease was ended as rejected from it on).
        uint32 reversedFrom;
        // Challenges of a Verified verdict pending in the court (`openChallenge`): not final meanwhile.
        uint8 challenges;
        // The lease failed over at least once: `_segmentStart` holds where its current segment starts.
        bool segmented;
    }

    /// @dev What one submission fixes for its vote, one slot (31 bytes). A lease keeps two, indexed by
    /// submission index & 1, so the previous verified attestation's signer is still there while a
    /// re-attestation is pending (`attestedSignerOf`).
    struct Round {
        // The guest's attested signer the node submitted (from the guest key in the evidence).
        address signer;
        // The verifier-set epoch at submission: only holders of VERIFIER_ROLE then may vote.
        uint32 epoch;
        // min(quorum at submission, verifiers allowed to vote): later quorum changes do not apply.
        uint8 quorum;
        // Verifier indexes of the renter, the node operator and the node key, if they held the role at
        // submission (zero otherwise): they may not vote on it.
        uint8 excluded0;
        uint8 excluded1;
        uint8 excluded2;
        // Votes of allowed verifiers (counted only when quorum > 1: one vote decides otherwise).
        uint8 approvals;
        uint8 rejections;
        // _CLOSED_PENDING: the renter closed the lease while this attestation awaited its verdict (the
        // market holds its pay in escrow, and a Verified verdict asks the market to release it);
        // _DISPUTED: its verdict was disputed; _CONFIRMED: the on-chain check confirmed it Verified.
        uint8 flags;
        // With a quorum of 1, the index of the verifier whose vote decided (its voters are in
        // `_voters` otherwise).
        uint8 decider;
    }

    /// @dev A verified submission replaced by a later one while its verdict can still be disputed, or
    /// the decided submission a failover left behind (Verified, or Rejected: _PAST_REJECTED), keyed by
    /// keccak256(leaseId, reportHash) (the first submission of a report hash keeps the key).
    struct Past {
        // slot 0: signer (20) + submittedAt (5) + bankedBefore (4) + flags (1) + decider (1) = 31 bytes.
        address signer;
        uint40 submittedAt;
        uint32 bankedBefore;
        uint8 flags;
        uint8 decider;
        // slot 1: the 1-based submission number, the node key that submitted it, and for a Rejected one
        // when the rejection moved the lease away (the end of the node's time a reversal pays) = 29 bytes.
        uint32 number;
        address node;
        uint40 endedAt;
    }

    /// @dev A holder (past or present) of VERIFIER_ROLE, one slot.
    struct Verifier {
        // 1..255, fixed at the first grant (0: never a verifier).
        uint8 index;
        // Epoch of the latest grant, and of the revocation after it (0 while it holds the role).
        uint32 since;
        uint32 until;
        // When it was last revoked (a re-grant waits for the verification window after it).
        uint40 revokedAt;
    }

    /// @dev The verifier set and quorum, one slot read once per submit.
    struct Config {
        uint8 quorum;
        // Incremented by every grant or revocation of VERIFIER_ROLE.
        uint32 epoch;
        // Accounts holding VERIFIER_ROLE now.
        uint8 count;
        // Last verifier index handed out.
        uint8 lastIndex;
    }

    /// @inheritdoc IAttestationRegistryCore
    address public override leaseMarket;

    Config private _config;

    mapping(uint256 leaseId => Record) private _records;

    mapping(uint256 leaseId => Round[2]) private _rounds;

    mapping(address account => Verifier) private _verifiers;

    /// @dev keccak256(leaseId, submission number) => [approvers, rejecters] as bitmaps of verifier
    /// indexes; only written when a round's quorum > 1.
    mapping(bytes32 ballotKey => uint256[2]) private _voters;

    /// @dev Verifier index => account (written at its first grant).
    mapping(uint256 index => address) private _verifierAt;

    /// @dev keccak256(leaseId, reportHash) => a replaced verified submission still disputable.
    mapping(bytes32 pastKey => Past) private _past;

    DisputeTerms private _terms;

    /// @inheritdoc IAttestationRegistryCore
    IAttestationCourt public override court;

    /// @dev Submissions of a failed-over lease before its current segment (the nonce at its last
    /// failover): numbers up to it belong to earlier nodes. Read only when `Record.segmented`.
    mapping(uint256 leaseId => uint32) private _segmentStart;

    /// @dev keccak256(leaseId, node) => `Record.reversedFrom` of the segment of the lease that node served,
    /// kept when a dispute moved the lease away from it (a node serves a lease in one segment at most).
    mapping(bytes32 nodeKey => uint32) private _segmentReversedFrom;

    // Round flag: the submission is the first of its segment (of the lease, or since a failover).
    uint8 private constant _FIRST = 16;
    // Past flag: the kept submission's verdict is Rejected (left behind by a failover on rejection).
    uint8 private constant _PAST_REJECTED = 32;

    constructor(address admin, uint256 quorum_, uint256 challengeWindow_) {
        if (admin == address(0)) revert Errors.AttestationRegistry_ZeroAddress();
        if (challengeWindow_ < _MIN_CHALLENGE_WINDOW || challengeWindow_ > _MAX_CHALLENGE_WINDOW) {
            revert Errors.AttestationRegistry_InvalidChallengeWindow(challengeWindow_);
        }
        CHALLENGE_WINDOW = challengeWindow_;
        _setQuorum(quorum_);
        _setDisputeTerms(DisputeTerms({window: 1 days, bond: 1e18, slashBps: 5000, minVerifierStake: 1e18}));
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       VIEWS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistry
    function attestationOf(uint256 leaseId) external view override returns (Attestation memory attestation) {
        Record storage record = _records[leaseId];
        Status stored = record.status;
        if (stored == Status.None) {
            // Failed over, nothing submitted in the new segment yet: status None, but the lease's
            // expected measurement stays readable (a dispute of an old node's verdict checks against it).
            if (record.segmented) attestation.measurement = abi.encodePacked(record.measurementHead, record.measurementTail);
            return attestation;
        }
        (address nodeKey, LeaseStatus leaseStatus) = ILeaseMarket(leaseMarket).leaseNode(leaseId);
        uint256 expiresAt = uint256(record.submittedAt) + record.reattestInterval;
        attestation = Attestation({
            status: leaseStatus == LeaseStatus.CLOSED && stored != Status.Rejected ? Status.Expired : _status(record),
            node: nodeKey,
            reportHash: record.reportHash,
            measurement: abi.encodePacked(record.measurementHead, record.measurementTail),
            reportedTcb: record.reportedTcb,
            submittedAt: record.submittedAt,
            verifiedAt: record.verifiedAt,
            // Safe: a uint40 time plus a uint32 interval fits 64 bits.
            // forge-lint: disable-next-line(unsafe-typecast)
            expiresAt: uint64(expiresAt)
        });
    }

    /// @inheritdoc IAttestationRegistry
    function isAttested(uint256 leaseId, bytes calldata expectedMeasurement) external view override returns (bool) {
        return _isAttested(leaseId, expectedMeasurement);
    }

    function _isAttested(uint256 leaseId, bytes calldata expectedMeasurement) private view returns (bool) {
        Record storage record = _records[leaseId];
        Status status = _status(record);
        if (status == Status.Pending) {
            // Seamless re-attestation: the previous verified attestation still vouches until it expires.
            if (block.timestamp >= record.prevExpiresAt) return false;
        } else if (status != Status.Verified) {
            return false;
        }
        if (expectedMeasurement.length != _MEASUREMENT_LENGTH) return false;
        if (bytes32(expectedMeasurement[0:32]) != record.measurementHead) return false;
        if (bytes16(expectedMeasurement[32:48]) != record.measurementTail) return false;
        // Active and not yet used up (a used-up lease is no longer served).
        return ILeaseMarket(leaseMarket).isServing(leaseId);
    }

    /// @inheritdoc IAttestationRegistry
    function attestedSignerOf(uint256 leaseId) external view override returns (address) {
        Record storage record = _records[leaseId];
        Status status = _status(record);
        uint256 round = _latestRound(record);
        if (status == Status.Pending) {
            // The same rule as `isAttested`: the previous verified attestation (the other round) vouches.
            if (block.timestamp >= record.prevExpiresAt) return address(0);
            round ^= 1;
        } else if (status != Status.Verified) {
            return address(0);
        }
        if (!ILeaseMarket(leaseMarket).isServing(leaseId)) return address(0);
        return _rounds[leaseId][round].signer;
    }

    /// @inheritdoc IAttestationRegistryCore
    function signerOf(uint256 leaseId) external view override returns (address) {
        Record storage record = _records[leaseId];
        // None: nothing submitted in the current segment (a failed-over node's guest is no signer).
        if (record.status == Status.None) return address(0);
        return _rounds[leaseId][_latestRound(record)].signer;
    }

    /// @inheritdoc IAttestationRegistryCore
    function canVote(uint256 leaseId, address account) external view override returns (bool) {
        Record storage record = _records[leaseId];
        if (record.status != Status.Pending) return false;
        if (block.timestamp > uint256(record.submittedAt) + VERIFICATION_WINDOW) return false;
        return _mayVote(account, _rounds[leaseId][_latestRound(record)]);
    }

    /// @inheritdoc IAttestationRegistryCore
    function quorum() external view override returns (uint256) {
        return _config.quorum;
    }

    /// @inheritdoc IAttestationRegistryCore
    function verifierCount() external view override returns (uint256) {
        return _config.count;
    }

    /// @inheritdoc IAttestationRegistryCore
    function statusOf(uint256 leaseId) external view override returns (Status) {
        Record storage record = _records[leaseId];
        Status stored = record.status;
        if (stored == Status.None || stored == Status.Rejected) return stored;
        (, LeaseStatus leaseStatus) = ILeaseMarket(leaseMarket).leaseNode(leaseId);
        if (leaseStatus == LeaseStatus.CLOSED) return Status.Expired;
        return _status(record);
    }

    /// @inheritdoc IAttestationRegistryCore
    function attestationNonce(uint256 leaseId) external view override returns (uint256) {
        return _records[leaseId].nonce;
    }

    /// @inheritdoc IAttestationRegistryCore
    function challengedAt(uint256 leaseId) external view override returns (uint256) {
        return _records[leaseId].challengedAt;
    }

    /// @inheritdoc IAttestationRegistryCore
    function attestedSeconds(uint256 leaseId, uint256 until) external view override returns (uint256) {
        return _verifiedSeconds(_records[leaseId], until);
    }

    /// @inheritdoc IAttestationRegistryCore
    function progressOf(uint256 leaseId) external view override returns (AttestationProgress memory progress) {
        Record storage record = _records[leaseId];
        Status stored = record.status;
        progress.status = _status(record);
        progress.nonce = _segmentCount(leaseId, record);
        progress.verifiedSeconds = uint64(_verifiedSeconds(record, block.timestamp));
        if (stored == Status.Pending) {
            uint256 decideBy = uint256(record.submittedAt) + VERIFICATION_WINDOW;
            // Safe: a uint40 time plus one hour.
            // forge-lint: disable-next-line(unsafe-typecast)
            progress.decideBy = uint40(decideBy);
            if (progress.status == Status.Pending) {
                progress.pendingSeconds = uint64(_covered(record, block.timestamp));
            } else {
                progress.excused = _excused(_rounds[leaseId][_latestRound(record)]);
            }
        }
    }

    /*//////////////////////////////////////////////////////////////////////////
                                    LEASE MARKET
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistryCore
    function openLease(uint256 leaseId, bytes calldata expectedMeasurement, uint32 reattestInterval) external override {
        if (msg.sender != leaseMarket) revert Errors.AttestationRegistry_CallerNotLeaseMarket(msg.sender);
        if (expectedMeasurement.length != _MEASUREMENT_LENGTH) {
            revert Errors.AttestationRegistry_InvalidMeasurementLength(expectedMeasurement.length);
        }
        if (reattestInterval == 0) revert Errors.AttestationRegistry_ZeroReattestInterval(leaseId);
        Record storage record = _records[leaseId];
        if (record.reattestInterval != 0) revert Errors.AttestationRegistry_LeaseAlreadyOpened(leaseId);
        record.measurementHead = bytes32(expectedMeasurement[0:32]);
        record.measurementTail = bytes16(expectedMeasurement[32:48]);
        record.reattestInterval = reattestInterval;
        // Safe: the window is a whole number of hours, at most MAX_DISPUTE_WINDOW (168 hours).
        // forge-lint: disable-next-line(unsafe-typecast)
        record.disputeHours = uint8(_terms.window / 1 hours);
    }

    /// @inheritdoc IAttestationRegistryCore
    function onCloseWhilePending(uint256 leaseId) external override {
        if (msg.sender != leaseMarket) revert Errors.AttestationRegistry_CallerNotLeaseMarket(msg.sender);
        Record storage record = _records[leaseId];
        Round storage round = _rounds[leaseId][_latestRound(record)];
        round.flags |= _CLOSED_PENDING;
    }

    /// @inheritdoc IAttestationRegistryCore
    function onFailover(uint256 leaseId, address oldNode) external override {
        if (msg.sender != leaseMarket) revert Errors.AttestationRegistry_CallerNotLeaseMarket(msg.sender);
        Record storage record = _records[leaseId];
        uint32 nonce = record.nonce;
        // The old node's last decided submission stays disputable (its verdict is settled against the
        // old node's segment, see `_reverse`); earlier ones were kept when they were replaced.
        Status status = record.status;
        if (status == Status.Verified || status == Status.Rejected) {
            Past storage past = _past[_pastKey(leaseId, record.reportHash)];
            // A report hash submitted before keeps its first entry (see `_keepPast`), never this verdict.
            bool fresh = past.number == 0;
            _keepPast(leaseId, record, nonce, oldNode);
            if (fresh && status == Status.Rejected) {
                past.flags |= _PAST_REJECTED;
                past.endedAt = uint40(block.timestamp);
            }
        }
        // A reversal in the segment that ends (the dispute that moved the lease) settles its submissions from
        // there on, and only its own: the next node's count on from the same nonce.
        uint32 reversedFrom = record.reversedFrom;
        if (reversedFrom != 0) {
            _segmentReversedFrom[_nodeKey(leaseId, oldNode)] = reversedFrom;
            record.reversedFrom = 0;
        }
        _segmentStart[leaseId] = nonce;
        record.segmented = true;
        // A new segment: nothing submitted, nothing banked, no challenge; the nonce keeps counting, so
        // no report made for the old node can be replayed.
        record.status = Status.None;
        record.reportHash = bytes32(0);
        record.bankedSeconds = 0;
        record.prevExpiresAt = 0;
        record.challengedAt = 0;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       NODES
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistryCore
    function submit(
        uint256 leaseId,
        uint256 nonce,
        bytes32 reportHash,
        bytes calldata measurement,
        uint64 reportedTcb,
        bytes32 chipIdHash,
        address signer
    ) external override {
        _submit(leaseId, nonce, reportHash, measurement, reportedTcb, chipIdHash, signer);
    }

    /// @inheritdoc IAttestationRegistryCore
    function acceptAndSubmit(
        uint256 leaseId,
        uint256 nonce,
        bytes32 reportHash,
        bytes calldata measurement,
        uint64 reportedTcb,
        bytes32 chipIdHash,
        address signer
    ) external override {
        // The market checks the lease is open and the caller (the node key) may take it; the submit
        // then sees the lease active with the caller as its node. Any revert undoes both.
        ILeaseMarket(leaseMarket).acceptFor(leaseId, msg.sender);
        _submit(leaseId, nonce, reportHash, measurement, reportedTcb, chipIdHash, signer);
    }

    function _submit(
        uint256 leaseId,
        uint256 nonce,
        bytes32 reportHash,
        bytes calldata measurement,
        uint64 reportedTcb,
        bytes32 chipIdHash,
        address signer
    ) private {
        // The vote of this submission is fixed now (see `_newRound`); later changes apply to later ones.
        Record storage record = _records[leaseId];
        uint32 current = record.nonce;
        // Checks the lease and the caller first; the other round (the previous submission's) is kept.
        _rounds[leaseId][current & 1] = _newRound(leaseId, signer, record.status == Status.None);
        if (nonce != current) revert Errors.AttestationRegistry_StaleNonce(leaseId, nonce, current);
        if (reportHash == bytes32(0)) revert Errors.AttestationRegistry_ZeroReportHash(leaseId);
        if (
            measurement.length != _MEASUREMENT_LENGTH || bytes32(measurement[0:32]) != record.measurementHead
                || bytes16(measurement[32:48]) != record.measurementTail
        ) revert Errors.AttestationRegistry_MeasurementMismatch(leaseId);
        {
            // A verified submission replaced while its verdict can still be disputed stays disputable.
            if (record.status == Status.Verified && block.timestamp <= _disputableUntil(record, record.submittedAt)) {
                _keepPast(leaseId, record, current, msg.sender);
            }
            (uint32 banked, uint40 prevExpiresAt) = _carryOver(leaseId, record);
            record.bankedSeconds = banked;
            record.prevExpiresAt = prevExpiresAt;
        }
        record.reportHash = reportHash;
        record.status = Status.Pending;
        record.submittedAt = uint40(block.timestamp);
        record.verifiedAt = 0;
        record.nonce = current + 1;
        record.reportedTcb = reportedTcb;

        emit AttestationSubmitted(leaseId, msg.sender, reportHash, measurement);
        emit AttestationEvidence(leaseId, current, reportedTcb, chipIdHash, signer);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                    CHALLENGES
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistryCore
    function onChallenge(uint256 leaseId) external override returns (uint256 respondBy) {
        if (msg.sender != leaseMarket) revert Errors.AttestationRegistry_CallerNotLeaseMarket(msg.sender);
        Record storage record = _records[leaseId];
        // Only a verified attestation is challenged (a pending one is already the fresh proof).
        Status status = _status(record);
        if (status != Status.Verified) revert Errors.AttestationRegistry_NothingToChallenge(leaseId, status);
        uint256 last = record.challengedAt;
        if (last != 0 && block.timestamp < last + MIN_CHALLENGE_INTERVAL) {
            revert Errors.AttestationRegistry_ChallengeTooSoon(leaseId, last + MIN_CHALLENGE_INTERVAL);
        }
        record.challengedAt = uint40(block.timestamp);
        respondBy = block.timestamp + CHALLENGE_WINDOW;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                     VERIFIERS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistryCore
    function confirm(uint256 leaseId, bytes32 reportHash, bool ok) external override {
        Record storage record = _records[leaseId];
        Status status = record.status;
        if (status != Status.Pending) revert Errors.AttestationRegistry_NotPending(leaseId, status);
        bytes32 pending = record.reportHash;
        if (reportHash != pending) revert Errors.AttestationRegistry_ReportHashMismatch(leaseId, reportHash, pending);

        {
            uint256 decideBy = uint256(record.submittedAt) + VERIFICATION_WINDOW;
            if (block.timestamp > decideBy) {
                revert Errors.AttestationRegistry_VerificationWindowPassed(leaseId, decideBy);
            }
        }

        Round storage round = _rounds[leaseId][_latestRound(record)];
        Round memory vote = round;
        uint8 index = _admitVoter(leaseId, record, vote);
        bool decided = vote.quorum == 1;
        if (decided) {
            // With a single vote deciding, the status change itself prevents double votes.
            round.decider = index;
        } else {
            decided = _tally(leaseId, record.nonce, round, vote, index, ok);
        }
        emit AttestationVote(leaseId, msg.sender, reportHash, ok);
        if (!decided) return;

        if (ok) {
            record.status = Status.Verified;
            record.verifiedAt = uint40(block.timestamp);
            emit AttestationVerified(leaseId, reportHash);
            // The renter closed while this awaited its verdict: the market pays the held time now.
            if (vote.flags & _CLOSED_PENDING != 0) ILeaseMarket(leaseMarket).finalizeClose(leaseId);
        } else {
            record.status = Status.Rejected;
            emit AttestationRejected(leaseId, reportHash);
            // The market is a fixed, trusted contract (set once); it refunds the renter and slashes the node.
            ILeaseMarket(leaseMarket).onAttestationRejected(leaseId);
        }
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       ADMIN
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistryCore
    function setQuorum(uint256 newQuorum) external override onlyRole(DEFAULT_ADMIN_ROLE) {
        _setQuorum(newQuorum);
    }

    /// @inheritdoc IAttestationRegistryCore
    function setLeaseMarket(address market) external override onlyRole(DEFAULT_ADMIN_ROLE) {
        if (market == address(0)) revert Errors.AttestationRegistry_ZeroAddress();
        if (leaseMarket != address(0)) revert Errors.AttestationRegistry_LeaseMarketAlreadySet(leaseMarket);
        leaseMarket = market;
        emit LeaseMarketSet(market);
    }

    /// @inheritdoc IAttestationRegistryCore
    function setDisputeTerms(DisputeTerms calldata terms) external override onlyRole(DEFAULT_ADMIN_ROLE) {
        _setDisputeTerms(terms);
    }

    /// @inheritdoc IAttestationRegistryCore
    function setCourt(IAttestationCourt court_) external override onlyRole(DEFAULT_ADMIN_ROLE) {
        // Set once: whoever decides disputes must not be swappable by the admin.
        if (address(court_) == address(0) || address(court) != address(0)) {
            revert Errors.AttestationRegistry_CourtAlreadySet();
        }
        court = court_;
        emit CourtSet(address(court_));
    }

    /*//////////////////////////////////////////////////////////////////////////
                                     DISPUTES
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistryCore
    function resolveDispute(uint256 leaseId, bytes32 reportHash, address disputer, bool truth)
        external
        override
        returns (bool overturned, address[] memory voters, uint256 unpaid, address operator)
    {
        if (msg.sender != address(court)) revert Errors.AttestationRegistry_CallerNotCourt(msg.sender);
        (SubmissionInfo memory sub, bool latest) = _submission(leaseId, reportHash);
        _requireOpen(leaseId, reportHash, sub);
        bool verified = sub.verdict == Status.Verified;
        overturned = truth != verified;
        if (sub.challenged) --_records[leaseId].challenges;
        // One dispute per submission; an upheld Verified verdict is confirmed by the check.
        _setFlags(leaseId, reportHash, sub.number, latest, overturned || !verified ? _DISPUTED : _DISPUTED | _CONFIRMED);
        emit AttestationDisputed(leaseId, reportHash, disputer, overturned);
        // The voters of the verdict: rewarded with the bond if it stands, slashed if it is overturned.
        voters = _votersOf(leaseId, reportHash, sub, verified);
        if (overturned) (unpaid, operator) = _reverse(leaseId, reportHash, sub);
    }

    /// @dev Reverses an overturned verdict with its money in the market; for a false Rejected, returns
    /// what the renter's credit no longer covered of the node's time, and the operator to pay it to.
    function _reverse(uint256 leaseId, bytes32 reportHash, SubmissionInfo memory sub)
        private
        returns (uint256 unpaid, address operator)
    {
        ILeaseMarket market = ILeaseMarket(leaseMarket);
        Record storage record = _records[leaseId];
        if (record.segmented && sub.number <= _segmentStart[leaseId]) {
            Past storage past = _past[_pastKey(leaseId, reportHash)];
            // A false Rejected that moved the lease: that node's bond back, its time until the move paid.
            if (sub.verdict == Status.Rejected) {
                return market.onRejectedOverturned(leaseId, past.node, sub.submittedAt, past.endedAt);
            }
            // A false Verified of a node the lease failed over from: only that node pays, the lease and
            // its current node go on.
            market.onSegmentOverturned(leaseId, past.node, sub.bankedBefore);
            return (0, address(0));
        }
        if (sub.verdict == Status.Verified) {
            // A false Verified: the lease ends as rejected; nothing from this submission on is paid. A
            // later rejection (the latest is Rejected) already took the node's bond.
            bool bondTaken = record.status == Status.Rejected;
            record.status = Status.Rejected;
            record.bankedSeconds = sub.bankedBefore;
            // It and every later submission are settled (an earlier one may still be disputed).
            uint32 reversedFrom = record.reversedFrom;
            if (reversedFrom == 0 || sub.number < reversedFrom) record.reversedFrom = sub.number;
            market.onVerifiedOverturned(leaseId, sub.bankedBefore, bondTaken);
            return (0, address(0));
        }
        // A false Rejected of the current segment (always the latest: that rejection closed the lease):
        // the node's slash is undone and its time up to the close is paid.
        record.status = Status.Verified;
        record.verifiedAt = uint40(block.timestamp);
        return market.onRejectedOverturned(leaseId, address(0), sub.submittedAt, _coverEnd(record));
    }

    /// @inheritdoc IAttestationRegistryCore
    function openChallenge(uint256 leaseId, bytes32 reportHash) external override returns (address[] memory) {
        if (msg.sender != address(court)) revert Errors.AttestationRegistry_CallerNotCourt(msg.sender);
        (SubmissionInfo memory sub, bool latest) = _submission(leaseId, reportHash);
        _requireOpen(leaseId, reportHash, sub);
        _setFlags(leaseId, reportHash, sub.number, latest, _CHALLENGED);
        ++_records[leaseId].challenges;
        return _votersOf(leaseId, reportHash, sub, true);
    }

    /// @inheritdoc IAttestationRegistryCore
    function confirmByCourt(uint256 leaseId, bytes32 reportHash) external override {
        if (msg.sender != address(court)) revert Errors.AttestationRegistry_CallerNotCourt(msg.sender);
        (SubmissionInfo memory sub, bool latest) = _submission(leaseId, reportHash);
        _requireOpen(leaseId, reportHash, sub);
        if (sub.verdict != Status.Verified) revert Errors.AttestationRegistry_NotConfirmed(leaseId, reportHash);
        _setFlags(leaseId, reportHash, sub.number, latest, _CONFIRMED);
        emit AttestationConfirmedOnChain(leaseId, reportHash);
    }

    /// @inheritdoc IAttestationRegistry
    function isAttestedFinal(uint256 leaseId, bytes calldata expectedMeasurement)
        external
        view
        override
        returns (bool)
    {
        Record storage record = _records[leaseId];
        if (record.challenges != 0 || !_isAttested(leaseId, expectedMeasurement)) return false;
        uint256 round = _latestRound(record);
        uint256 submittedAt = record.submittedAt;
        if (_status(record) == Status.Pending) {
            // Seamless re-attestation: the previous verified one vouches (the other round).
            round ^= 1;
            submittedAt = uint256(record.prevExpiresAt) - record.reattestInterval;
        }
        if (_rounds[leaseId][round].flags & _CONFIRMED != 0) return true;
        // A dispute that did not confirm it overturned it (then isAttested is false).
        return block.timestamp > _disputableUntil(record, submittedAt);
    }

    /// @inheritdoc IAttestationRegistryCore
    function submissionOf(uint256 leaseId, bytes32 reportHash)
        external
        view
        override
        returns (SubmissionInfo memory sub)
    {
        (sub,) = _submission(leaseId, reportHash);
    }

    /// @inheritdoc IAttestationRegistryCore
    function disputeTerms() external view override returns (DisputeTerms memory) {
        return _terms;
    }

    /// @inheritdoc IAttestationRegistryCore
    function disputeWindowOf(uint256 leaseId) external view override returns (uint256) {
        return uint256(_records[leaseId].disputeHours) * 1 hours;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      PRIVATE
    //////////////////////////////////////////////////////////////////////////*/

    /// @dev Refuses a vote from an account not allowed on `vote` or without the minimum stake; locks
    /// its stake until the vote's dispute window closes. Returns its verifier index.
    function _admitVoter(uint256 leaseId, Record storage record, Round memory vote) private returns (uint8 index) {
        Verifier storage voter = _verifiers[msg.sender];
        index = _indexOf(voter, vote.epoch);
        if (index == 0 || index == vote.excluded0 || index == vote.excluded1 || index == vote.excluded2) {
            revert Errors.AttestationRegistry_NotEligibleVoter(leaseId, msg.sender);
        }
        // Its stake (kept by the court) backs this vote until the vote's dispute window closes.
        IAttestationCourt court_ = court;
        if (address(court_) == address(0)) revert Errors.AttestationRegistry_CourtUnset();
        court_.lockVote(msg.sender, _disputableUntil(record, record.submittedAt), _terms.minVerifierStake);
    }

    /// @dev Counts a vote under a quorum above 1 (voters kept as bitmaps); returns whether it decides.
    function _tally(uint256 leaseId, uint256 number, Round storage round, Round memory vote, uint8 index, bool ok)
        private
        returns (bool)
    {
        uint256[2] storage voters = _voters[_ballotKey(leaseId, number)];
        uint256 bit = uint256(1) << index;
        if ((voters[0] | voters[1]) & bit != 0) revert Errors.AttestationRegistry_AlreadyVoted(leaseId, msg.sender);
        // Safe: at most `count` (<= 255) allowed verifiers vote once each.
        if (ok) {
            voters[0] |= bit;
            round.approvals = vote.approvals + 1;
            return vote.approvals + 1 >= vote.quorum;
        }
        voters[1] |= bit;
        round.rejections = vote.rejections + 1;
        return vote.rejections + 1 >= vote.quorum;
    }

    /// @dev The round of the latest submission (number `nonce`, round (nonce - 1) & 1).
    function _latestRound(Record storage record) private view returns (uint256) {
        return (uint256(record.nonce) + 1) & 1;
    }

    /// @dev Until when the verdict on a submission made at `submittedAt` can be disputed: its
    /// verification window plus the lease's dispute window (so at least the dispute window after the verdict).
    function _disputableUntil(Record storage record, uint256 submittedAt) private view returns (uint40) {
        // Safe: a uint40 time plus at most 169 hours.
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint40(submittedAt + VERIFICATION_WINDOW + uint256(record.disputeHours) * 1 hours);
    }

    /// @dev Keeps the verified submission `current` (the latest, about to be replaced) disputable.
    function _keepPast(uint256 leaseId, Record storage record, uint32 current, address node) private {
        Past storage past = _past[_pastKey(leaseId, record.reportHash)];
        // The first submission of a report hash keeps the key (an earlier one is the larger reversal).
        if (past.number != 0) return;
        Round storage round = _rounds[leaseId][(uint256(current) + 1) & 1];
        past.signer = round.signer;
        past.submittedAt = record.submittedAt;
        past.bankedBefore = record.bankedSeconds;
        past.flags = round.flags;
        past.decider = round.decider;
        past.number = current;
        past.node = node;
    }

    /// @dev Submissions of the lease's current segment (all of them for a lease never failed over).
    function _segmentCount(uint256 leaseId, Record storage record) private view returns (uint32) {
        uint32 nonce = record.nonce;
        return record.segmented ? nonce - _segmentStart[leaseId] : nonce;
    }

    function _pastKey(uint256 leaseId, bytes32 reportHash) private pure returns (bytes32) {
        return keccak256(abi.encode(leaseId, reportHash));
    }

    function _nodeKey(uint256 leaseId, address node) private pure returns (bytes32) {
        return keccak256(abi.encode(leaseId, node));
    }

    function _ballotKey(uint256 leaseId, uint256 number) private pure returns (bytes32) {
        return keccak256(abi.encode(leaseId, number));
    }

    /// @dev The submission of `leaseId` with `reportHash`: a kept past one first, else the latest.
    function _submission(uint256 leaseId, bytes32 reportHash)
        private
        view
        returns (SubmissionInfo memory sub, bool latest)
    {
        Record storage record = _records[leaseId];
        Past storage past = _past[_pastKey(leaseId, reportHash)];
        uint8 flags;
        if (past.number != 0) {
            sub.number = past.number;
            sub.verdict = past.flags & _PAST_REJECTED != 0 ? Status.Rejected : Status.Verified;
            sub.signer = past.signer;
            sub.submittedAt = past.submittedAt;
            sub.bankedBefore = past.bankedBefore;
            flags = past.flags;
        } else if (record.nonce != 0 && record.reportHash == reportHash) {
            latest = true;
            Round storage round = _rounds[leaseId][_latestRound(record)];
            sub.number = record.nonce;
            sub.verdict = record.status;
            sub.signer = round.signer;
            sub.submittedAt = record.submittedAt;
            sub.bankedBefore = record.bankedSeconds;
            flags = round.flags;
        } else {
            return (sub, false);
        }
        sub.disputableUntil = _disputableUntil(record, sub.submittedAt);
        sub.disputed = flags & _DISPUTED != 0;
        sub.confirmedOnChain = flags & _CONFIRMED != 0;
        sub.challenged = flags & _CHALLENGED != 0;
        uint32 reversedFrom = record.reversedFrom;
        // A past segment's submission: settled by a reversal in its own segment only.
        if (past.number != 0 && past.number <= _segmentStart[leaseId]) {
            reversedFrom = _segmentReversedFrom[_nodeKey(leaseId, past.node)];
        }
        // Settled by the reversal of an earlier (or this) submission.
        if (reversedFrom != 0 && sub.number >= reversedFrom) sub.disputed = true;
    }

    /// @dev Refuses a dispute or on-chain confirmation of an unknown, undecided, settled or too old verdict.
    function _requireOpen(uint256 leaseId, bytes32 reportHash, SubmissionInfo memory sub) private view {
        if (sub.number == 0) revert Errors.AttestationRegistry_UnknownSubmission(leaseId, reportHash);
        if (sub.verdict != Status.Verified && sub.verdict != Status.Rejected) {
            revert Errors.AttestationRegistry_NotDecided(leaseId, reportHash);
        }
        if (sub.disputed || sub.confirmedOnChain) {
            revert Errors.AttestationRegistry_AlreadySettled(leaseId, reportHash);
        }
        // A challenge opened within the window is settled after it.
        if (block.timestamp > sub.disputableUntil && !sub.challenged) {
            revert Errors.AttestationRegistry_DisputeWindowPassed(leaseId, reportHash, sub.disputableUntil);
        }
    }

    function _setFlags(uint256 leaseId, bytes32 reportHash, uint32 number, bool latest, uint8 flags) private {
        Record storage record = _records[leaseId];
        // The round of submission `number` is still kept while it is the latest or the one before.
        if (uint256(number) + 1 >= record.nonce) _rounds[leaseId][(uint256(number) + 1) & 1].flags |= flags;
        if (!latest) _past[_pastKey(leaseId, reportHash)].flags |= flags;
    }

    /// @dev The accounts that voted `approve` (or, for a quorum of 1, decided) on a submission.
    function _votersOf(uint256 leaseId, bytes32 reportHash, SubmissionInfo memory sub, bool approve)
        private
        view
        returns (address[] memory voters)
    {
        Record storage record = _records[leaseId];
        uint8 decider = sub.number == record.nonce
            ? _rounds[leaseId][_latestRound(record)].decider
            : _past[_pastKey(leaseId, reportHash)].decider;
        if (decider != 0) {
            voters = new address[](1);
            voters[0] = _verifierAt[decider];
            return voters;
        }
        uint256 bits = _voters[_ballotKey(leaseId, sub.number)][approve ? 0 : 1];
        voters = new address[](256);
        uint256 n;
        for (uint256 i = 1; i < 256; ++i) {
            if ((bits >> i) & 1 != 0) voters[n++] = _verifierAt[i];
        }
        // Shrink the array to the voters found.
        assembly ("memory-safe") {
            mstore(voters, n)
        }
    }

    /// @dev Where the latest submission's pay ends at the latest: its expiry, or a challenge after it.
    function _coverEnd(Record storage record) private view returns (uint256 end) {
        uint256 submittedAt = record.submittedAt;
        end = submittedAt + record.reattestInterval;
        uint256 challenge = record.challengedAt;
        if (challenge > submittedAt && challenge < end) end = challenge;
    }

    function _setDisputeTerms(DisputeTerms memory terms) private {
        uint256 window = terms.window;
        if (
            window < 1 hours || window > MAX_DISPUTE_WINDOW || window % 1 hours != 0 || terms.slashBps > _BPS
                || terms.minVerifierStake == 0
        ) revert Errors.AttestationRegistry_InvalidDisputeTerms();
        _terms = terms;
        emit DisputeTermsSet(terms);
    }

    /// @dev Keeps the verifier set's epoch, count and indexes with every grant of VERIFIER_ROLE.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (!granted || role != VERIFIER_ROLE) return granted;
        Config memory config = _config;
        Verifier storage verifier = _verifiers[account];
        uint8 index = verifier.index;
        if (index == 0) {
            if (config.lastIndex == type(uint8).max) revert Errors.AttestationRegistry_TooManyVerifiers();
            index = ++config.lastIndex;
            _verifierAt[index] = account;
        } else {
            // Its old grant's epochs are overwritten: wait until nothing it could vote on is undecided.
            uint256 allowedAt = uint256(verifier.revokedAt) + VERIFICATION_WINDOW + 1;
            if (block.timestamp < allowedAt) revert Errors.AttestationRegistry_RegrantTooSoon(account, allowedAt);
        }
        config.epoch += 1;
        config.count += 1;
        _config = config;
        verifier.index = index;
        verifier.since = config.epoch;
        verifier.until = 0;
    }

    /// @dev Keeps the verifier set's epoch and count with every revocation (or renouncement) of VERIFIER_ROLE.
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        revoked = super._revokeRole(role, account);
        if (!revoked || role != VERIFIER_ROLE) return revoked;
        Config memory config = _config;
        config.epoch += 1;
        config.count -= 1;
        _config = config;
        Verifier storage verifier = _verifiers[account];
        verifier.until = config.epoch;
        verifier.revokedAt = uint40(block.timestamp);
    }

    function _setQuorum(uint256 newQuorum) private {
        // Vote counters are 8 bits wide.
        if (newQuorum == 0 || newQuorum > type(uint8).max) revert Errors.AttestationRegistry_InvalidQuorum(newQuorum);
        // Safe: checked against type(uint8).max just above.
        // forge-lint: disable-next-line(unsafe-typecast)
        _config.quorum = uint8(newQuorum);
        emit QuorumSet(newQuorum);
    }

    /// @dev Checks the lease and its node (the caller) and returns the round a submission fixes now:
    /// verifiers holding VERIFIER_ROLE now, less the renter, operator and node key if they hold it, with
    /// the quorum in force now capped at how many verifiers are left.
    function _newRound(uint256 leaseId, address signer, bool first) private view returns (Round memory round) {
        (address nodeKey, LeaseStatus leaseStatus, address renter, address operator, uint256 attestBy) =
            ILeaseMarket(leaseMarket).leaseParties(leaseId);
        if (leaseStatus != LeaseStatus.ACTIVE) revert Errors.AttestationRegistry_LeaseNotActive(leaseId);
        if (msg.sender != nodeKey) revert Errors.AttestationRegistry_NotLeaseNode(leaseId, msg.sender, nodeKey);
        // Past attestBy with nothing submitted the lease is a missed first attestation: a late report
        // must not turn the renter's close (or anyone's report) into a no-fault close by front-running it.
        if (first && block.timestamp > attestBy) {
            revert Errors.AttestationRegistry_AttestationDeadlinePassed(leaseId, attestBy);
        }
        // The guest's own key, never the node key: a dApp must not accept what the host signs.
        if (signer == address(0) || signer == nodeKey) {
            revert Errors.AttestationRegistry_InvalidSigner(leaseId, signer);
        }
        Config memory config = _config;
        uint32 epoch = config.epoch;
        uint8 x0 = _indexAt(renter, epoch);
        uint8 x1 = _indexAt(operator, epoch);
        if (x1 == x0) x1 = 0;
        uint8 x2 = _indexAt(nodeKey, epoch);
        if (x2 == x0 || x2 == x1) x2 = 0;
        uint256 allowed = config.count;
        if (x0 != 0) --allowed;
        if (x1 != 0) --allowed;
        if (x2 != 0) --allowed;
        uint256 required = config.quorum < allowed ? config.quorum : allowed;
        round.signer = signer;
        round.epoch = epoch;
        // Safe: at most the uint8 quorum.
        // forge-lint: disable-next-line(unsafe-typecast)
        round.quorum = uint8(required);
        round.excluded0 = x0;
        round.excluded1 = x1;
        round.excluded2 = x2;
        if (first) round.flags = _FIRST;
    }

    /// @dev What a new submission carries over from the latest attestation: the banked verified
    /// seconds and, for a seamless re-attestation, the previous verified one's expiry. Refuses a
    /// submission while the latest awaits the verifiers, after an unexcused undecided first
    /// attestation (a missed first attestation), and before half the interval of a verified one.
    function _carryOver(uint256 leaseId, Record storage record)
        private
        view
        returns (uint32 banked, uint40 prevExpiresAt)
    {
        Status previous = record.status;
        banked = record.bankedSeconds;
        if (previous == Status.Pending) {
            // An attestation the verifiers left undecided past their window (Expired) must not block
            // the lease for good: the node may submit again, and the undecided one's time is never paid
            // (nothing banked). A first one left undecided without any approval stays a missed first
            // attestation (slashable); with an approval (or no verifier allowed to vote) it is excused.
            if (_status(record) == Status.Pending) revert Errors.AttestationRegistry_AttestationPending(leaseId);
            Round storage latest = _rounds[leaseId][_latestRound(record)];
            if (latest.flags & _FIRST != 0 && !_excused(latest)) {
                revert Errors.AttestationRegistry_AttestationPending(leaseId);
            }
        } else if (previous == Status.Verified) {
            // Bank what the previous attestation covered: up to now if on time, its full interval if
            // late, up to the challenge if one came after it.
            banked = SafeCast.toUint32(banked + _covered(record, block.timestamp));
            if (_status(record) == Status.Verified) {
                uint256 submittedAt = record.submittedAt;
                // Not before half the interval unless a challenge asks for a fresh one: a node
                // re-submitting the moment each verdict lands would keep the lease Pending.
                if (record.challengedAt <= submittedAt) {
                    uint256 earliest = submittedAt + record.reattestInterval / 2;
                    if (block.timestamp < earliest) {
                        revert Errors.AttestationRegistry_ReattestTooEarly(leaseId, earliest);
                    }
                }
                prevExpiresAt = uint40(submittedAt + record.reattestInterval);
            }
        }
    }

    /// @dev `account`'s verifier index if it held VERIFIER_ROLE at `epoch`, else 0.
    function _indexAt(address account, uint32 epoch) private view returns (uint8) {
        return _indexOf(_verifiers[account], epoch);
    }

    function _indexOf(Verifier storage verifier, uint32 epoch) private view returns (uint8) {
        uint8 index = verifier.index;
        if (index == 0 || verifier.since > epoch) return 0;
        uint32 until = verifier.until;
        if (until != 0 && until <= epoch) return 0;
        return index;
    }

    /// @dev Whether `account` may vote in `round`: a verifier at its epoch and none of the lease's parties.
    function _mayVote(address account, Round memory round) private view returns (bool) {
        uint8 index = _indexAt(account, round.epoch);
        IAttestationCourt court_ = court;
        if (address(court_) == address(0) || court_.stakeOf(account).stake < _terms.minVerifierStake) return false;
        return index != 0 && index != round.excluded0 && index != round.excluded1 && index != round.excluded2;
    }

    /// @dev An attestation left undecided is not the node's fault when an allowed verifier approved
    /// it, or when no verifier was allowed to vote.
    function _excused(Round storage round) private view returns (bool) {
        return round.approvals != 0 || round.quorum == 0;
    }

    /// @dev Verified seconds up to `until`: banked plus the current attestation's coverage if Verified.
    function _verifiedSeconds(Record storage record, uint256 until) private view returns (uint256 seconds_) {
        seconds_ = record.bankedSeconds;
        if (record.status == Status.Verified) seconds_ += _covered(record, until);
    }

    /// @dev Seconds of [submittedAt, end) before `until`, where `end` is the expiry, or the last
    /// challenge if it came after the submission (payment stops from the challenge).
    function _covered(Record storage record, uint256 until) private view returns (uint256) {
        uint256 submittedAt = record.submittedAt;
        uint256 end = submittedAt + record.reattestInterval;
        uint256 challenge = record.challengedAt;
        if (challenge > submittedAt && challenge < end) end = challenge;
        if (until > end) until = end;
        return until > submittedAt ? until - submittedAt : 0;
    }

    /// @dev The status of the latest attestation now, regardless of the lease: a Verified one past its
    /// interval, a Pending one past the verification window, and either one left without a fresh
    /// submission CHALLENGE_WINDOW after a challenge, are Expired (missed).
    function _status(Record storage record) private view returns (Status) {
        Status stored = record.status;
        if (stored == Status.None || stored == Status.Rejected) return stored;
        uint256 submittedAt = record.submittedAt;
        uint256 challenge = record.challengedAt;
        if (challenge > submittedAt && block.timestamp > challenge + CHALLENGE_WINDOW) return Status.Expired;
        if (stored == Status.Pending) {
            return block.timestamp > submittedAt + VERIFICATION_WINDOW ? Status.Expired : Status.Pending;
        }
        return block.timestamp >= submittedAt + record.reattestInterval ? Status.Expired : Status.Verified;
    }
}
