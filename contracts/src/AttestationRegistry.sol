// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "./interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {Errors} from "./libraries/Errors.sol";
import {AttestationProgress, LeaseStatus} from "./types/DataTypes.sol";

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
    uint256 public constant override CHALLENGE_WINDOW = 15 minutes;

    /// @inheritdoc IAttestationRegistryCore
    uint256 public constant override MIN_CHALLENGE_INTERVAL = 1 hours;

    uint256 private constant _MEASUREMENT_LENGTH = 48;

    /// @dev Placeholder report hash written at open so the first submit rewrites a non-zero
    /// slot. A keccak256 output equal to 1 is infeasible, and a zero hash is rejected.
    bytes32 private constant _NO_REPORT = bytes32(uint256(1));

    /// @dev One record per lease, four slots.
    struct Record {
        // slot 0
        bytes32 reportHash;
        // slot 1: measurement bytes 0..31
        bytes32 measurementHead;
        // slot 2: measurement bytes 32..47 (16) + status (1) + submittedAt (5) + verifiedAt (5) = 27 bytes;
        // `confirm` touches only this slot. uint40 seconds last until the year 36812.
        bytes16 measurementTail;
        Status status;
        uint40 submittedAt;
        uint40 verifiedAt;
        // slot 3: tcb (8) + interval (4) + nonce (4) + banked (4) + prevExpiresAt (5) + challengedAt (5)
        // = 30 bytes. The 8-byte tcb leads so the slot starts fresh instead of filling slot 2's last
        // 5 bytes: the interval, written at open, then makes this slot non-zero before the first
        // submit rewrites it. 32 bits of seconds is 136 years, of nonces 4e9 re-attestations; a
        // non-zero interval marks the record open.
        uint64 reportedTcb;
        uint32 reattestInterval;
        uint32 nonce;
        // Verified seconds of earlier attestations of this lease.
        uint32 bankedSeconds;
        // Expiry of the verified attestation the pending one replaces (keeps `isAttested` seamless).
        uint40 prevExpiresAt;
        // Last challenge: payment for an attestation submitted before it stops at this time.
        uint40 challengedAt;
    }

    /// @inheritdoc IAttestationRegistryCore
    address public override leaseMarket;

    /// @inheritdoc IAttestationRegistryCore
    uint256 public override quorum;

    mapping(uint256 leaseId => Record) private _records;

    /// @dev keccak256(leaseId, nonce, verifier) => voted; only written when quorum > 1.
    mapping(bytes32 voteKey => bool) private _voted;

    /// @dev keccak256(leaseId, nonce, ok) => the verifiers who voted so; only written when quorum > 1.
    /// Counted at each vote against the current role holders, so a revoked verifier's vote drops out.
    mapping(bytes32 ballotKey => address[]) private _ballots;

    constructor(address admin, uint256 quorum_) {
        if (admin == address(0)) revert Errors.AttestationRegistry_ZeroAddress();
        _setQuorum(quorum_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       VIEWS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationRegistry
    function attestationOf(uint256 leaseId) external view override returns (Attestation memory attestation) {
        Record storage record = _records[leaseId];
        Status stored = record.status;
        if (stored == Status.None) return attestation;
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
        progress.nonce = record.nonce;
        progress.verifiedSeconds = uint64(_verifiedSeconds(record, block.timestamp));
        if (stored == Status.Pending) {
            uint256 decideBy = uint256(record.submittedAt) + VERIFICATION_WINDOW;
            // Safe: a uint40 time plus one hour.
            // forge-lint: disable-next-line(unsafe-typecast)
            progress.decideBy = uint40(decideBy);
            if (progress.status == Status.Pending) {
                progress.pendingSeconds = uint64(_covered(record, block.timestamp));
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
        record.reportHash = _NO_REPORT;
        record.measurementHead = bytes32(expectedMeasurement[0:32]);
        record.measurementTail = bytes16(expectedMeasurement[32:48]);
        record.reattestInterval = reattestInterval;
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
        bytes32 chipIdHash
    ) external override {
        (address nodeKey, LeaseStatus leaseStatus) = ILeaseMarket(leaseMarket).leaseNode(leaseId);
        if (leaseStatus != LeaseStatus.ACTIVE) revert Errors.AttestationRegistry_LeaseNotActive(leaseId);
        if (msg.sender != nodeKey) revert Errors.AttestationRegistry_NotLeaseNode(leaseId, msg.sender, nodeKey);
        Record storage record = _records[leaseId];
        uint32 current = record.nonce;
        if (nonce != current) revert Errors.AttestationRegistry_StaleNonce(leaseId, nonce, current);
        if (reportHash == bytes32(0)) revert Errors.AttestationRegistry_ZeroReportHash(leaseId);
        if (
            measurement.length != _MEASUREMENT_LENGTH || bytes32(measurement[0:32]) != record.measurementHead
                || bytes16(measurement[32:48]) != record.measurementTail
        ) revert Errors.AttestationRegistry_MeasurementMismatch(leaseId);

        Status previous = record.status;
        uint32 banked = record.bankedSeconds;
        uint40 prevExpiresAt = 0;
        if (previous == Status.Pending) {
            // A re-attestation the verifiers left undecided past their window (Expired) must not block
            // the lease for good: the node may submit again, and the undecided one's time is never
            // paid (nothing banked). A first one left undecided stays a missed first attestation.
            if (current == 1 || _status(record) == Status.Pending) {
                revert Errors.AttestationRegistry_AttestationPending(leaseId);
            }
        } else if (previous == Status.Verified) {
            // Bank what the previous attestation covered: up to now if on time, its full interval if
            // late, up to the challenge if one came after it.
            banked = SafeCast.toUint32(banked + _covered(record, block.timestamp));
            if (_status(record) == Status.Verified) {
                uint256 submittedAt = record.submittedAt;
                // Not before half the interval unless a challenge asks for a fresh one: a node
                // re-submitting the moment each verdict lands would keep the lease Pending, so that
                // its renter could never close (close and settle wait for the verdict).
                if (record.challengedAt <= submittedAt) {
                    uint256 earliest = submittedAt + record.reattestInterval / 2;
                    if (block.timestamp < earliest) {
                        revert Errors.AttestationRegistry_ReattestTooEarly(leaseId, earliest);
                    }
                }
                prevExpiresAt = uint40(submittedAt + record.reattestInterval);
            }
        }

        record.reportHash = reportHash;
        record.status = Status.Pending;
        record.submittedAt = uint40(block.timestamp);
        record.verifiedAt = 0;
        record.nonce = current + 1;
        record.bankedSeconds = banked;
        record.reportedTcb = reportedTcb;
        record.prevExpiresAt = prevExpiresAt;

        emit AttestationSubmitted(leaseId, msg.sender, reportHash, measurement);
        emit AttestationEvidence(leaseId, current, reportedTcb, chipIdHash);
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
    function confirm(uint256 leaseId, bytes32 reportHash, bool ok) external override onlyRole(VERIFIER_ROLE) {
        Record storage record = _records[leaseId];
        Status status = record.status;
        if (status != Status.Pending) revert Errors.AttestationRegistry_NotPending(leaseId, status);
        bytes32 pending = record.reportHash;
        if (reportHash != pending) revert Errors.AttestationRegistry_ReportHashMismatch(leaseId, reportHash, pending);

        uint256 decideBy = uint256(record.submittedAt) + VERIFICATION_WINDOW;
        if (block.timestamp > decideBy) revert Errors.AttestationRegistry_VerificationWindowPassed(leaseId, decideBy);

        uint256 required = quorum;
        bool decided = required == 1;
        if (!decided) {
            // With a single vote deciding, the status change itself prevents double votes (and the
            // voter holds the role now); only a real quorum needs the per-verifier record.
            uint32 nonce = record.nonce;
            bytes32 voteKey = keccak256(abi.encode(leaseId, nonce, msg.sender));
            if (_voted[voteKey]) revert Errors.AttestationRegistry_AlreadyVoted(leaseId, msg.sender);
            _voted[voteKey] = true;
            address[] storage ballot = _ballots[keccak256(abi.encode(leaseId, nonce, ok))];
            ballot.push(msg.sender);
            decided = _validVotes(ballot) >= required;
        }
        emit AttestationVote(leaseId, msg.sender, reportHash, ok);
        if (!decided) return;

        if (ok) {
            record.status = Status.Verified;
            record.verifiedAt = uint40(block.timestamp);
            emit AttestationVerified(leaseId, reportHash);
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

    /*//////////////////////////////////////////////////////////////////////////
                                      PRIVATE
    //////////////////////////////////////////////////////////////////////////*/

    function _setQuorum(uint256 newQuorum) private {
        // Vote counters are 8 bits wide.
        if (newQuorum == 0 || newQuorum > type(uint8).max) revert Errors.AttestationRegistry_InvalidQuorum(newQuorum);
        quorum = newQuorum;
        emit QuorumSet(newQuorum);
    }

    /// @dev Votes in `ballot` by accounts that hold VERIFIER_ROLE now.
    function _validVotes(address[] storage ballot) private view returns (uint256 count) {
        uint256 length = ballot.length;
        for (uint256 i = 0; i < length; ++i) {
            if (hasRole(VERIFIER_ROLE, ballot[i])) ++count;
        }
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
