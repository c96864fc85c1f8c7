// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IAttestationCourt} from "./interfaces/IAttestationCourt.sol";
import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "./interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {ISnpVerifier, SnpReason, SnpReportFields} from "./interfaces/ISnpVerifier.sol";
import {Errors} from "./libraries/Errors.sol";
import {Challenge, DisputeTerms, SubmissionInfo, VerifierStake} from "./types/DataTypes.sol";

/// @title AttestationCourt
/// @notice Disputes and on-chain confirmations of attestation verdicts. See {IAttestationCourt}.
/// @dev Holds the verifiers' stake, burned tokens and the bonds of pending challenges.
contract AttestationCourt is IAttestationCourt {
    using SafeERC20 for IERC20;

    /// @inheritdoc IAttestationCourt
    uint256 public constant override GUEST_KEY_LENGTH = 116;

    uint256 private constant _REPORT_LENGTH = 1184;
    uint256 private constant _BPS = 10_000;
    uint256 private constant _MEASUREMENT_LENGTH = 48;

    /// @inheritdoc IAttestationCourt
    ISnpVerifier public immutable override snpVerifier;

    /// @inheritdoc IAttestationCourt
    IAttestationRegistryCore public immutable override registry;

    /// @inheritdoc IAttestationCourt
    IERC20 public immutable override stakeToken;

    /// @inheritdoc IAttestationCourt
    uint256 public override burned;

    /// @inheritdoc IAttestationCourt
    uint256 public constant override RESPONSE_WINDOW = 1 days;

    /// @inheritdoc IAttestationCourt
    uint256 public override bonded;

    mapping(address verifier => VerifierStake) private _stakes;

    /// @dev keccak256(leaseId, reportHash) => the pending challenge of that submission's Verified verdict.
    mapping(bytes32 key => Challenge) private _challenges;

    /// @dev The voters of each pending challenge (their stake cannot leave while it is pending).
    mapping(bytes32 key => address[]) private _challengeVoters;

    /// @dev Pending challenges of verdicts a verifier voted for.
    mapping(address verifier => uint256) private _challengedVotes;

    /// @param snpVerifier_ The on-chain report check (zero: disputes and confirmations are unavailable
    /// until a court with one is deployed; staking and voting work).
    constructor(ISnpVerifier snpVerifier_, IAttestationRegistryCore registry_, IERC20 stakeToken_) {
        if (address(registry_) == address(0) || address(stakeToken_) == address(0)) {
            revert Errors.AttestationCourt_ZeroAddress();
        }
        snpVerifier = snpVerifier_;
        registry = registry_;
        stakeToken = stakeToken_;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                  VERIFIER STAKE
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationCourt
    function stakeOf(address verifier) external view override returns (VerifierStake memory) {
        return _stakes[verifier];
    }

    /// @inheritdoc IAttestationCourt
    function stake(uint256 amount) external override {
        _stake(msg.sender, amount);
    }

    /// @inheritdoc IAttestationCourt
    function stakeFor(address verifier, uint256 amount) external override {
        if (verifier == address(0)) revert Errors.AttestationCourt_ZeroAddress();
        _stake(verifier, amount);
    }

    function _stake(address verifier, uint256 amount) private {
        if (amount == 0) revert Errors.AttestationCourt_ZeroAmount();
        VerifierStake storage s = _stakes[verifier];
        uint96 staked = SafeCast.toUint96(s.stake + amount);
        s.stake = staked;
        emit VerifierStaked(verifier, amount, staked);
        _pull(amount);
    }

    /// @inheritdoc IAttestationCourt
    function requestUnstake(uint256 amount) external override {
        VerifierStake storage s = _stakes[msg.sender];
        uint256 active = s.stake;
        if (amount == 0) revert Errors.AttestationCourt_ZeroAmount();
        if (amount > active) revert Errors.AttestationCourt_UnstakeExceedsStake(msg.sender, amount, active);
        // Safe: amount <= stake, and stake + unbonding <= tokens held here < 2^96.
        // forge-lint: disable-next-line(unsafe-typecast)
        s.stake = uint96(active - amount);
        // forge-lint: disable-next-line(unsafe-typecast)
        s.unbonding += uint96(amount);
        // One timer for all of it: a request restarts it.
        uint256 unlocksAt = block.timestamp + registry.VERIFICATION_WINDOW();
        s.unlocksAt = uint40(unlocksAt);
        emit VerifierUnstakeRequested(msg.sender, amount, unlocksAt);
    }

    /// @inheritdoc IAttestationCourt
    function withdrawStake() external override returns (uint256 amount) {
        VerifierStake storage s = _stakes[msg.sender];
        amount = s.unbonding;
        if (amount == 0) revert Errors.AttestationCourt_NothingUnbonding(msg.sender);
        uint256 unlocksAt = s.unlocksAt;
        if (s.lockedUntil > unlocksAt) unlocksAt = s.lockedUntil;
        // Not before the delay, nor while a vote of its can still be disputed: the stake backs it.
        if (block.timestamp <= unlocksAt) revert Errors.AttestationCourt_StakeLocked(msg.sender, unlocksAt);
        uint256 challenged = _challengedVotes[msg.sender];
        if (challenged != 0) revert Errors.AttestationCourt_StakeChallenged(msg.sender, challenged);
        s.unbonding = 0;
        emit VerifierUnstaked(msg.sender, amount);
        stakeToken.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IAttestationCourt
    function lockVote(address verifier, uint256 until, uint256 minStake) external override {
        if (msg.sender != address(registry)) revert Errors.AttestationCourt_CallerNotRegistry(msg.sender);
        VerifierStake storage s = _stakes[verifier];
        uint256 active = s.stake;
        if (active < minStake) revert Errors.AttestationCourt_StakeTooLow(verifier, active, minStake);
        // Safe: a uint40 time plus at most 169 hours, from the registry.
        // forge-lint: disable-next-line(unsafe-typecast)
        if (until > s.lockedUntil) s.lockedUntil = uint40(until);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                     DISPUTES
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IAttestationCourt
    function challengeOf(uint256 leaseId, bytes32 reportHash) external view override returns (Challenge memory) {
        return _challenges[_key(leaseId, reportHash)];
    }

    /// @inheritdoc IAttestationCourt
    function dispute(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override returns (bool overturned) {
        _requireNoChallenge(leaseId, reportHash);
        SubmissionInfo memory sub = _submission(leaseId, reportHash);
        // Early, for a clear error (the registry checks it again when it settles).
        if (sub.disputed || sub.confirmedOnChain) {
            revert Errors.AttestationRegistry_AlreadySettled(leaseId, reportHash);
        }
        DisputeTerms memory terms = registry.disputeTerms();
        _pull(terms.bond);
        try this.truth(leaseId, sub.number - 1, sub.signer, reportHash, report, certs, guestKey) returns (
            bool genuine
        ) {
            overturned = _settle(leaseId, reportHash, genuine, msg.sender, terms.bond);
        } catch (bytes memory reason) {
            bytes4 selector = bytes4(reason);
            // A Verified verdict the check can neither prove nor refute: the defender must prove it.
            if (
                sub.verdict != IAttestationRegistry.Status.Verified
                    || (selector != Errors.AttestationCourt_Inconclusive.selector
                        && selector != Errors.AttestationCourt_GuestKeyMismatch.selector)
            ) {
                assembly ("memory-safe") {
                    revert(add(reason, 32), mload(reason))
                }
            }
            _openChallenge(leaseId, reportHash, terms.bond);
        }
    }

    /// @inheritdoc IAttestationCourt
    function defend(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override {
        bytes32 key = _key(leaseId, reportHash);
        Challenge memory c = _challenges[key];
        if (c.deadline == 0) revert Errors.AttestationCourt_NoChallenge(leaseId, reportHash);
        if (block.timestamp > c.deadline) {
            revert Errors.AttestationCourt_ChallengeExpired(leaseId, reportHash, c.deadline);
        }
        SubmissionInfo memory sub = _submission(leaseId, reportHash);
        // Reverts for certificates that prove nothing; a report they prove false is reversed at once.
        bool genuine = this.truth(leaseId, sub.number - 1, sub.signer, reportHash, report, certs, guestKey);
        _closeChallenge(key);
        emit ChallengeDefended(leaseId, reportHash, msg.sender, genuine);
        _settle(leaseId, reportHash, genuine, c.disputer, c.bond);
    }

    /// @inheritdoc IAttestationCourt
    function resolve(uint256 leaseId, bytes32 reportHash) external override {
        bytes32 key = _key(leaseId, reportHash);
        Challenge memory c = _challenges[key];
        if (c.deadline == 0) revert Errors.AttestationCourt_NoChallenge(leaseId, reportHash);
        if (block.timestamp <= c.deadline) {
            revert Errors.AttestationCourt_ChallengeNotExpired(leaseId, reportHash, c.deadline);
        }
        _closeChallenge(key);
        emit ChallengeResolved(leaseId, reportHash, msg.sender);
        if (registry.submissionOf(leaseId, reportHash).disputed) {
            // Settled meanwhile by the reversal of an earlier submission: the bond goes back.
            stakeToken.safeTransfer(c.disputer, c.bond);
            return;
        }
        // Nobody proved it genuine in time: reversed as a proven false Verified.
        _settle(leaseId, reportHash, false, c.disputer, c.bond);
    }

    function _key(uint256 leaseId, bytes32 reportHash) private pure returns (bytes32) {
        return keccak256(abi.encode(leaseId, reportHash));
    }

    function _requireNoChallenge(uint256 leaseId, bytes32 reportHash) private view {
        uint256 deadline = _challenges[_key(leaseId, reportHash)].deadline;
        if (deadline != 0) revert Errors.AttestationCourt_ChallengePending(leaseId, reportHash, deadline);
    }

    /// @dev Holds the bond, has the registry mark the submission challenged, and keeps its voters' stake.
    function _openChallenge(uint256 leaseId, bytes32 reportHash, uint256 bond) private {
        bytes32 key = _key(leaseId, reportHash);
        address[] memory voters = registry.openChallenge(leaseId, reportHash);
        uint256 deadline = block.timestamp + RESPONSE_WINDOW;
        _challenges[key] = Challenge({disputer: msg.sender, deadline: uint40(deadline), bond: SafeCast.toUint96(bond)});
        bonded += bond;
        for (uint256 i; i < voters.length; ++i) {
            _challengeVoters[key].push(voters[i]);
            ++_challengedVotes[voters[i]];
        }
        emit ChallengeOpened(leaseId, reportHash, msg.sender, deadline, bond);
    }

    function _closeChallenge(bytes32 key) private {
        bonded -= _challenges[key].bond;
        address[] storage voters = _challengeVoters[key];
        for (uint256 i; i < voters.length; ++i) {
            --_challengedVotes[voters[i]];
        }
        delete _challengeVoters[key];
        delete _challenges[key];
    }

    /// @dev Has the registry settle the lease (the bond is already held), then settles the verifiers' money.
    function _settle(uint256 leaseId, bytes32 reportHash, bool genuine, address disputer, uint256 bond)
        private
        returns (bool)
    {
        (bool reversed, address[] memory voters, uint256 unpaid, address operator) =
            registry.resolveDispute(leaseId, reportHash, disputer, genuine);
        if (reversed) {
            _overturned(leaseId, voters, disputer, bond, unpaid, operator);
        } else {
            _stood(leaseId, voters, disputer, bond);
        }
        return reversed;
    }

    /// @dev The verdict stood: the disputer's bond is shared by its voters (a remainder is burned).
    function _stood(uint256 leaseId, address[] memory voters, address disputer, uint256 bond) private {
        uint256 n = voters.length;
        uint256 share = n == 0 ? 0 : bond / n;
        for (uint256 i; i < n; ++i) {
            VerifierStake storage s = _stakes[voters[i]];
            s.stake = SafeCast.toUint96(s.stake + share);
            emit VerifierRewarded(voters[i], leaseId, share);
        }
        uint256 rest = bond - share * n;
        burned += rest;
        emit DisputeSettled(leaseId, disputer, 0, 0, rest);
    }

    /// @dev The verdict was overturned: its voters are slashed; the operator, the disputer and the burn share it.
    function _overturned(
        uint256 leaseId,
        address[] memory voters,
        address disputer,
        uint256 bond,
        uint256 unpaid,
        address operator
    ) private {
        uint256 slashed;
        uint256 slashBps = registry.disputeTerms().slashBps;
        for (uint256 i; i < voters.length; ++i) {
            VerifierStake storage s = _stakes[voters[i]];
            uint256 active = s.stake;
            uint256 unbonding = s.unbonding;
            uint256 amount = ((active + unbonding) * slashBps) / _BPS;
            uint256 fromActive = amount < active ? amount : active;
            // Safe: each part is at most the uint96 it is taken from.
            // forge-lint: disable-next-line(unsafe-typecast)
            s.stake = uint96(active - fromActive);
            // forge-lint: disable-next-line(unsafe-typecast)
            s.unbonding = uint96(unbonding - (amount - fromActive));
            slashed += amount;
            emit VerifierSlashed(voters[i], leaseId, amount);
        }
        if (unpaid > slashed) unpaid = slashed;
        slashed -= unpaid;
        uint256 reward = slashed / 2;
        burned += slashed - reward;
        emit DisputeSettled(leaseId, disputer, bond + reward, unpaid, slashed - reward);
        IERC20 token = stakeToken;
        if (unpaid != 0) token.safeTransfer(operator, unpaid);
        token.safeTransfer(disputer, bond + reward);
    }

    function _pull(uint256 amount) private {
        if (amount == 0) return;
        IERC20 token = stakeToken;
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        // Booked at face value: a token that delivers less is refused.
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert Errors.AttestationCourt_TransferAmountMismatch(amount, received);
    }

    /// @inheritdoc IAttestationCourt
    function confirmOnChain(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override {
        _requireNoChallenge(leaseId, reportHash);
        SubmissionInfo memory sub = _submission(leaseId, reportHash);
        if (!this.truth(leaseId, sub.number - 1, sub.signer, reportHash, report, certs, guestKey)) {
            revert Errors.AttestationRegistry_NotConfirmed(leaseId, reportHash);
        }
        registry.confirmByCourt(leaseId, reportHash);
    }

    /// @inheritdoc IAttestationCourt
    function truth(
        uint256 leaseId,
        uint256 nonce,
        address signer,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override returns (bool) {
        if (keccak256(report) != reportHash) {
            revert Errors.AttestationCourt_ReportMismatch(leaseId, reportHash);
        }
        if (address(snpVerifier) == address(0)) revert Errors.AttestationCourt_NoSnpVerifier();
        // The node committed to bytes that are no report: not genuine, whatever the certificates.
        if (report.length != _REPORT_LENGTH) return false;
        SnpReportFields memory fields;
        {
            (bool ok, uint8 reason, SnpReportFields memory checked) = snpVerifier.checkReport(report, certs);
            if (!ok) {
                // Conclusive only when the report itself is at fault (see the interface).
                if (reason == uint8(SnpReason.UnsignedReport)) return false;
                if (reason == uint8(SnpReason.BadSignature) && _signerBound(report, certs)) return false;
                revert Errors.AttestationCourt_Inconclusive(leaseId, reason);
            }
            fields = checked;
        }
        if (guestKey.length != GUEST_KEY_LENGTH || sha256(guestKey) != fields.reportData1) {
            revert Errors.AttestationCourt_GuestKeyMismatch(leaseId);
        }
        return address(bytes20(guestKey[64:84])) == signer && _policy(leaseId, nonce, fields);
    }

    /// @dev The submission, refused early if unknown (the registry checks the rest when it settles).
    function _submission(uint256 leaseId, bytes32 reportHash) private view returns (SubmissionInfo memory sub) {
        sub = registry.submissionOf(leaseId, reportHash);
        if (sub.number == 0) revert Errors.AttestationRegistry_UnknownSubmission(leaseId, reportHash);
    }

    function _policy(uint256 leaseId, uint256 nonce, SnpReportFields memory fields) private view returns (bool) {
        if (fields.vmpl != 0 || (fields.policy >> 19) & 1 != 0) return false;
        IAttestationRegistry.Attestation memory attestation = registry.attestationOf(leaseId);
        if (fields.measurement.length != _MEASUREMENT_LENGTH) return false;
        if (keccak256(fields.measurement) != keccak256(attestation.measurement)) return false;
        (,, address renter,,) = ILeaseMarket(registry.leaseMarket()).leaseParties(leaseId);
        return fields.reportData0
                == keccak256(abi.encode("cvm.attest.v1", block.chainid, address(registry), leaseId, nonce))
            && fields.hostData
                == keccak256(abi.encode("cvm.host.v1", block.chainid, address(registry), leaseId, renter));
    }

    /// @dev Whether the certificate given first is the cached VCEK AMD issues for the chip and TCB the
    /// report names (`ISnpVerifier.isSignerBound`): only then does a bad signature prove a forgery.
    function _signerBound(bytes calldata report, bytes[] calldata certs) private view returns (bool) {
        if (certs.length == 0) return false;
        bytes calldata first = certs[0];
        bytes32 certHash = first.length == 32 ? bytes32(first) : keccak256(first);
        return snpVerifier.isSignerBound(report, certHash);
    }
}
