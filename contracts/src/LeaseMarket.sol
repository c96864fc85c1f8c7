// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "./interfaces/IAttestationRegistryCore.sol";
import {IKeyService} from "./interfaces/IKeyService.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {Errors} from "./libraries/Errors.sol";
import {
    AttestationProgress,
    CloseReason,
    FAILOVER_ATTESTATION_EXPIRED,
    FAILOVER_ATTESTATION_REJECTED,
    FAILOVER_FIRST_ATTESTATION_MISSED,
    FAILOVER_NODE_EXIT,
    FAILOVER_VERDICT_OVERTURNED,
    Lease,
    LeaseRecord,
    LeaseSpec,
    LeaseStatus,
    Node,
    NodeUsage,
    Segment,
    TeeType
} from "./types/DataTypes.sol";

/// @title LeaseMarket
/// @notice Leases of confidential VMs with a per-second ERC-20 escrow. See {ILeaseMarket}.
contract LeaseMarket is ILeaseMarket, Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @inheritdoc ILeaseMarket
    uint256 public constant override MEASUREMENT_LENGTH = 48;

    /// @inheritdoc ILeaseMarket
    uint256 public constant override MIN_REATTEST_INTERVAL = 5 minutes;

    /// @inheritdoc ILeaseMarket
    uint256 public constant override MAX_REATTEST_INTERVAL = 12 hours;

    uint256 private constant _MIN_ATTESTATION_WINDOW = 1 minutes;
    uint256 private constant _MAX_ATTESTATION_WINDOW = 1 days;
    // The registry's MAX_DISPUTE_WINDOW (a test keeps the two equal).
    uint256 private constant _MAX_DISPUTE_WINDOW = 7 days;
    uint256 private constant _BPS = 10_000;

    /// @inheritdoc ILeaseMarket
    IERC20 public immutable override token;

    /// @inheritdoc ILeaseMarket
    INodeRegistry public immutable override nodeRegistry;

    /// @inheritdoc ILeaseMarket
    IAttestationRegistryCore public immutable override attestationRegistry;

    /// @inheritdoc ILeaseMarket
    uint256 public override attestationWindow;

    /// @inheritdoc ILeaseMarket
    uint256 public override nextLeaseId;

    /// @inheritdoc ILeaseMarket
    mapping(address account => uint256 amount) public override credits;

    mapping(uint256 leaseId => LeaseRecord) private _leases;

    mapping(address nodeKey => NodeUsage) private _usage;

    /// @dev keccak256(leaseId, nodeKey) => that node key declined the lease (it may not take it again).
    mapping(bytes32 declineKey => bool) private _declined;

    /// @inheritdoc ILeaseMarket
    IKeyService public override keyService;

    /// @inheritdoc ILeaseMarket
    mapping(uint256 leaseId => uint32) public override failovers;

    /// @dev keccak256(leaseId, nodeKey) => what that node earned on the lease before it failed over.
    mapping(bytes32 declineKey => Segment) private _segments;

    /// @dev The attestation registry's verification window, read once (a constant there).
    uint256 private immutable _verificationWindow;

    constructor(
        IERC20 token_,
        INodeRegistry nodeRegistry_,
        IAttestationRegistryCore attestationRegistry_,
        address initialOwner,
        uint256 attestationWindow_
    ) Ownable(initialOwner) {
        if (
            address(token_) == address(0) || address(nodeRegistry_) == address(0)
                || address(attestationRegistry_) == address(0)
        ) revert Errors.LeaseMarket_ZeroAddress();
        token = token_;
        nodeRegistry = nodeRegistry_;
        attestationRegistry = attestationRegistry_;
        _verificationWindow = attestationRegistry_.VERIFICATION_WINDOW();
        _setAttestationWindow(attestationWindow_);
        // Starting at 1 keeps id 0 free as "no lease" and makes the first create rewrite a non-zero slot.
        nextLeaseId = 1;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       VIEWS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function getLease(uint256 leaseId) external view override returns (Lease memory view_) {
        LeaseRecord storage lease = _leases[leaseId];
        LeaseStatus status = lease.status;
        view_ = Lease({
            renter: lease.renter,
            acceptedAt: lease.acceptedAt,
            closedAt: status == LeaseStatus.CLOSED ? lease.timeMark : 0,
            closeReason: lease.closeReason,
            nodeKey: lease.nodeKey,
            ratePerSecond: lease.ratePerSecond,
            status: status,
            deposit: lease.deposit,
            claimed: lease.claimed,
            teeType: lease.teeType,
            vcpu: lease.vcpu,
            memoryMiB: lease.memoryMiB,
            diskGiB: lease.diskGiB,
            minNodeStake: lease.minNodeStake,
            maxPricePerSecond: lease.maxPricePerSecond,
            bond: lease.bond,
            attestBy: status == LeaseStatus.ACTIVE ? lease.timeMark : 0
        });
    }

    /// @inheritdoc ILeaseMarket
    function leaseNode(uint256 leaseId) external view override returns (address nodeKey, LeaseStatus status) {
        LeaseRecord storage lease = _leases[leaseId];
        return (lease.nodeKey, lease.status);
    }

    /// @inheritdoc ILeaseMarket
    function leaseParties(uint256 leaseId)
        external
        view
        override
        returns (address nodeKey, LeaseStatus status, address renter, address operator, uint256 attestBy)
    {
        LeaseRecord storage lease = _leases[leaseId];
        nodeKey = lease.nodeKey;
        status = lease.status;
        renter = lease.renter;
        if (nodeKey != address(0)) operator = nodeRegistry.operatorOf(nodeKey);
        // timeMark is the first-attestation deadline only while active (the closing time after).
        if (status == LeaseStatus.ACTIVE) attestBy = lease.timeMark;
    }

    /// @inheritdoc ILeaseMarket
    function freeDeclineDeadline(uint256 leaseId) external view override returns (uint64) {
        LeaseRecord storage lease = _leases[leaseId];
        if (lease.status != LeaseStatus.ACTIVE) return 0;
        return uint64(_freeDeclineDeadline(lease));
    }

    /// @inheritdoc ILeaseMarket
    function declinedBy(uint256 leaseId, address nodeKey) external view override returns (bool) {
        return _declined[_declineKey(leaseId, nodeKey)];
    }

    /// @inheritdoc ILeaseMarket
    function segmentOf(uint256 leaseId, address nodeKey) external view override returns (Segment memory) {
        return _segments[_declineKey(leaseId, nodeKey)];
    }

    /// @inheritdoc ILeaseMarket
    function isServing(uint256 leaseId) external view override returns (bool) {
        LeaseRecord storage lease = _leases[leaseId];
        return lease.status == LeaseStatus.ACTIVE && _earned(leaseId, lease) < lease.deposit;
    }

    /// @inheritdoc ILeaseMarket
    function bondedStake(address nodeKey) external view override returns (uint256) {
        return _usage[nodeKey].bonded;
    }

    /// @inheritdoc ILeaseMarket
    function nodeUsage(address nodeKey) external view override returns (NodeUsage memory) {
        return _usage[nodeKey];
    }

    /// @inheritdoc ILeaseMarket
    function minUnbondingDelay() public view override returns (uint256) {
        // Past the longest dispute of a verdict: a node whose lease (and bond) ended right after its last
        // submission could otherwise withdraw the stake before a dispute finds that verdict false. This
        // also outlasts every window in which a fault is decided (attestation window, at most 1 day, plus
        // MAX_REATTEST_INTERVAL).
        return _MAX_DISPUTE_WINDOW + _verificationWindow;
    }

    /// @inheritdoc ILeaseMarket
    function earned(uint256 leaseId) external view override returns (uint256) {
        return _earned(leaseId, _leases[leaseId]);
    }

    /// @inheritdoc ILeaseMarket
    function claimable(uint256 leaseId) external view override returns (uint256) {
        LeaseRecord storage lease = _leases[leaseId];
        return _earned(leaseId, lease) - lease.claimed;
    }

    /// @inheritdoc ILeaseMarket
    function refundable(uint256 leaseId) external view override returns (uint256) {
        LeaseRecord storage lease = _leases[leaseId];
        if (lease.status == LeaseStatus.CLOSED) return 0;
        return lease.deposit - _earned(leaseId, lease);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      RENTERS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function createLease(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement
    ) external override nonReentrant returns (uint256 leaseId) {
        leaseId = _createLease(spec, maxPricePerSecond, deposit, expectedMeasurement);
    }

    /// @inheritdoc ILeaseMarket
    function createLeaseWithPermit(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external override nonReentrant returns (uint256 leaseId) {
        // A permit seen in the mempool can be submitted by anyone first; ignoring its failure
        // keeps the renter's transaction alive (the allowance is then already there).
        try IERC20Permit(address(token)).permit(msg.sender, address(this), deposit, permitDeadline, v, r, s) {} catch {}
        leaseId = _createLease(spec, maxPricePerSecond, deposit, expectedMeasurement);
    }

    /// @inheritdoc ILeaseMarket
    function topUp(uint256 leaseId, uint256 amount) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        _requireOpenOrActive(leaseId, lease.status);
        if (msg.sender != lease.renter) revert Errors.LeaseMarket_NotRenter(leaseId, msg.sender, lease.renter);
        if (amount == 0) revert Errors.LeaseMarket_ZeroAmount();
        uint256 deposit = lease.deposit;
        if (lease.status == LeaseStatus.ACTIVE) {
            // Past exhaustion the node was entitled to stop; new money must not pay for that gap,
            // nor for pending time that lies beyond the old deposit.
            AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
            uint256 owed = (uint256(progress.verifiedSeconds) + progress.pendingSeconds) * lease.ratePerSecond;
            if (owed >= deposit) revert Errors.LeaseMarket_LeaseExhausted(leaseId);
        }
        uint256 newDeposit = deposit + amount;
        if (newDeposit > type(uint96).max) revert Errors.LeaseMarket_DepositOverflow(leaseId, newDeposit);
        // Safe: checked against type(uint96).max just above.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint96(newDeposit);
        emit LeaseToppedUp(leaseId, amount, newDeposit);
        _pull(amount);
    }

    /// @inheritdoc ILeaseMarket
    function closeLease(uint256 leaseId) external override nonReentrant returns (uint256 refund) {
        LeaseRecord storage lease = _leases[leaseId];
        LeaseStatus status = lease.status;
        _requireOpenOrActive(leaseId, status);
        address renter = lease.renter;
        if (msg.sender != renter) revert Errors.LeaseMarket_NotRenter(leaseId, msg.sender, renter);

        if (status == LeaseStatus.OPEN) {
            refund = lease.deposit;
            _close(leaseId, lease, CloseReason.RENTER, 0, refund, 0, false);
        } else {
            AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
            if (_firstAttestationMissed(lease, progress)) {
                // The node never delivered: the renter's close is the missed-attestation report.
                _missedFirstAttestation(leaseId, lease, renter);
                return 0;
            }
            uint256 earnedAmount = _earnedFrom(lease, progress);
            refund = lease.deposit - earnedAmount;
            if (progress.status == IAttestationRegistry.Status.Pending) {
                // The renter can always close. The time awaiting the verdict is held in escrow and paid
                // only if verified; the bond stays locked so that a rejection still finds it.
                uint256 held = uint256(progress.pendingSeconds) * lease.ratePerSecond;
                if (held > refund) held = refund;
                refund -= held;
                _close(leaseId, lease, CloseReason.RENTER, earnedAmount + held, refund, 0, true);
                attestationRegistry.onCloseWhilePending(leaseId);
            } else {
                CloseReason reason = _endReason(refund, progress, CloseReason.RENTER);
                _close(leaseId, lease, reason, earnedAmount, refund, 0, false);
                if (reason == CloseReason.ATTESTATION_MISSED) nodeRegistry.recordMissedAttestation(lease.nodeKey);
            }
        }
        // The caller is the renter pulling its own refund after all effects: a direct transfer is safe.
        if (refund != 0) token.safeTransfer(renter, refund);
    }

    /// @inheritdoc ILeaseMarket
    function withdraw() external override nonReentrant returns (uint256 amount) {
        amount = credits[msg.sender];
        if (amount == 0) revert Errors.LeaseMarket_NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                  NODES AND OPERATORS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function acceptLease(uint256 leaseId) external override {
        _accept(leaseId, msg.sender);
    }

    /// @inheritdoc ILeaseMarket
    function acceptFor(uint256 leaseId, address nodeKey) external override {
        _onlyRegistry();
        _accept(leaseId, nodeKey);
    }

    function _accept(uint256 leaseId, address nodeKey) private {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.OPEN);
        // A node key never takes back a lease it declined (no decline squatting); the lookup is skipped
        // for the common lease that was never declined.
        if (lease.declines != 0 && _declined[_declineKey(leaseId, nodeKey)]) {
            revert Errors.LeaseMarket_DeclinedBefore(leaseId, nodeKey);
        }
        (Node memory node, uint256 minStake, uint256 slashBps) = nodeRegistry.nodeTerms(nodeKey);
        if (node.operator == address(0)) revert Errors.LeaseMarket_NodeNotRegistered(nodeKey);
        if (node.teeType != lease.teeType) {
            revert Errors.LeaseMarket_TeeTypeMismatch(leaseId, lease.teeType, node.teeType);
        }
        NodeUsage storage usage = _usage[nodeKey];
        // Capacity is what the node declared minus what its active leases already use.
        uint256 vcpu = uint256(usage.vcpu) + lease.vcpu;
        uint256 memoryMiB = uint256(usage.memoryMiB) + lease.memoryMiB;
        uint256 diskGiB = uint256(usage.diskGiB) + lease.diskGiB;
        if (node.vcpu < vcpu || node.memoryMiB < memoryMiB || node.diskGiB < diskGiB) {
            revert Errors.LeaseMarket_CapacityTooLow(leaseId, nodeKey);
        }
        uint256 required = minStake;
        if (lease.minNodeStake > required) required = lease.minNodeStake;
        if (node.stake < required) revert Errors.LeaseMarket_StakeTooLow(leaseId, node.stake, required);
        // The lease bonds what a slash of it takes, fixed now; other leases' bonds are not free.
        uint256 bond = (required * slashBps) / _BPS;
        uint256 bonded = usage.bonded;
        uint256 freeStake = node.stake > bonded ? node.stake - bonded : 0;
        if (bond > freeStake) revert Errors.LeaseMarket_FreeStakeTooLow(leaseId, freeStake, bond);
        uint256 rate = uint256(node.pricePerSecondPerUnit) * lease.vcpu;
        if (rate > lease.maxPricePerSecond) {
            revert Errors.LeaseMarket_PriceTooHigh(leaseId, rate, lease.maxPricePerSecond);
        }

        // Safe: each sum is bounded by the node's uint16/uint32 capacity, the bond by its uint128 stake.
        // forge-lint: disable-next-line(unsafe-typecast)
        usage.bonded = uint128(bonded + bond);
        // forge-lint: disable-next-line(unsafe-typecast)
        usage.vcpu = uint16(vcpu);
        // forge-lint: disable-next-line(unsafe-typecast)
        usage.memoryMiB = uint32(memoryMiB);
        // forge-lint: disable-next-line(unsafe-typecast)
        usage.diskGiB = uint32(diskGiB);
        lease.nodeKey = nodeKey;
        // Safe: rate <= maxPricePerSecond, a uint64.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.ratePerSecond = uint64(rate);
        lease.status = LeaseStatus.ACTIVE;
        lease.acceptedAt = uint40(block.timestamp);
        lease.bond = SafeCast.toUint88(bond);
        lease.timeMark = uint40(block.timestamp + attestationWindow);
        emit LeaseAccepted(leaseId, nodeKey, rate);
    }

    /// @inheritdoc ILeaseMarket
    function declineLease(uint256 leaseId) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        if (msg.sender != lease.nodeKey) revert Errors.LeaseMarket_NotLeaseNode(leaseId, msg.sender, lease.nodeKey);
        // Submissions of this lease's current segment (a failed-over node's do not count for the next).
        if (attestationRegistry.progressOf(leaseId).nonce != 0) {
            revert Errors.LeaseMarket_AttestationSubmitted(leaseId);
        }
        if (block.timestamp > lease.timeMark) {
            revert Errors.LeaseMarket_AttestationDeadlinePassed(leaseId, lease.timeMark, block.timestamp);
        }
        _decline(leaseId, lease);
    }

    /// @inheritdoc ILeaseMarket
    function claim(uint256 leaseId) external override nonReentrant returns (uint256 amount) {
        LeaseRecord storage lease = _leases[leaseId];
        if (lease.status == LeaseStatus.NONE) revert Errors.LeaseMarket_LeaseNotFound(leaseId);
        address operator = nodeRegistry.operatorOf(lease.nodeKey);
        if (msg.sender != operator || operator == address(0)) {
            revert Errors.LeaseMarket_NotOperator(leaseId, msg.sender, operator);
        }
        uint256 claimed = lease.claimed;
        amount = _earned(leaseId, lease) - claimed;
        // slither-disable-next-line incorrect-equality (nothing earned since the last claim, not a balance race)
        if (amount == 0) revert Errors.LeaseMarket_NothingToClaim(leaseId);
        // Safe: claimed + amount = earned <= deposit, a uint96.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.claimed = uint96(claimed + amount);
        emit EarningsClaimed(leaseId, msg.sender, amount);
        // The caller is the operator pulling its own earnings after all effects: a direct transfer is safe.
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc ILeaseMarket
    function exitLease(uint256 leaseId) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        if (msg.sender != lease.nodeKey) revert Errors.LeaseMarket_NotLeaseNode(leaseId, msg.sender, lease.nodeKey);
        AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
        if (progress.nonce == 0 && block.timestamp <= lease.timeMark) {
            // Nothing attested yet and still in time: a decline, the lease goes back to the market.
            _decline(leaseId, lease);
            return;
        }
        bool firstMissed = _firstAttestationMissed(lease, progress);
        if (!firstMissed) _requireDecided(leaseId, progress);
        uint256 earnedAmount = _earnedFrom(lease, progress);
        uint256 refund = lease.deposit - earnedAmount;
        // Leaving over a lapsed attestation or an unanswered challenge does not erase the miss.
        CloseReason reason = _endReason(refund, progress, CloseReason.NODE_EXIT);
        // A node cannot end a lease whose renter wants it to survive its node: at fault or not, it moves
        // (a close would tell the key holders to delete the shares, taking the renter's data with it).
        if (reason != CloseReason.EXHAUSTED && _mayFailOver(leaseId)) {
            _failover(leaseId, lease, progress, reason == CloseReason.NODE_EXIT ? FAILOVER_NODE_EXIT : 0);
            return;
        }
        if (firstMissed) {
            // Leaving after the deadline does not dodge the missed-attestation path.
            _missedFirstAttestation(leaseId, lease, lease.renter);
            return;
        }
        _close(leaseId, lease, reason, earnedAmount, refund, 0, false);
        _credit(lease.renter, refund);
        if (reason == CloseReason.ATTESTATION_MISSED) nodeRegistry.recordMissedAttestation(msg.sender);
    }

    /// @inheritdoc ILeaseMarket
    function challenge(uint256 leaseId) external override {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        if (msg.sender != lease.renter) {
            IAttestationRegistryCore registry = attestationRegistry;
            if (!IAccessControl(address(registry)).hasRole(registry.VERIFIER_ROLE(), msg.sender)) {
                revert Errors.LeaseMarket_NotChallenger(leaseId, msg.sender);
            }
            // A verifier's powers are not for its own node's leases (its renter challenges as the renter).
            address nodeKey = lease.nodeKey;
            if (msg.sender == nodeKey || msg.sender == nodeRegistry.operatorOf(nodeKey)) {
                revert Errors.LeaseMarket_ChallengerIsParty(leaseId, msg.sender);
            }
        }
        uint256 respondBy = attestationRegistry.onChallenge(leaseId);
        emit LeaseChallenged(leaseId, msg.sender, respondBy);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      ANYONE
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function settle(uint256 leaseId) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
        _requireDecided(leaseId, progress);
        uint256 earnedAmount = _earnedFrom(lease, progress);
        if (earnedAmount < lease.deposit) {
            revert Errors.LeaseMarket_NotExhausted(leaseId, earnedAmount, lease.deposit);
        }
        _close(leaseId, lease, CloseReason.EXHAUSTED, earnedAmount, 0, 0, false);
    }

    /// @inheritdoc ILeaseMarket
    function finalizeClose(uint256 leaseId) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        if (lease.status != LeaseStatus.CLOSED || !lease.held) revert Errors.LeaseMarket_NothingHeld(leaseId);
        _releaseHeld(leaseId, lease, false);
    }

    /// @inheritdoc ILeaseMarket
    function reportMissedAttestation(uint256 leaseId) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
        if (!_firstAttestationMissed(lease, progress)) {
            if (progress.nonce == 0) {
                revert Errors.LeaseMarket_AttestationDeadlineNotPassed(leaseId, lease.timeMark, block.timestamp);
            }
            revert Errors.LeaseMarket_AttestationSubmitted(leaseId);
        }
        // A lease whose renter wants it to survive its node moves instead of ending (no one may end it
        // by reporting the fault first).
        if (_mayFailOver(leaseId)) {
            _failover(leaseId, lease, progress, 0);
            return;
        }
        _missedFirstAttestation(leaseId, lease, lease.renter);
    }

    /// @inheritdoc ILeaseMarket
    function failover(uint256 leaseId) external override nonReentrant {
        LeaseRecord storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        if (!_mayFailOver(leaseId)) revert Errors.LeaseMarket_FailoverNotAllowed(leaseId);
        if (!_failover(leaseId, lease, attestationRegistry.progressOf(leaseId), 0)) {
            revert Errors.LeaseMarket_NotAtFault(leaseId);
        }
    }

    /// @dev Whether the key service is set and the lease's key policy allows failover.
    function _mayFailOver(uint256 leaseId) private view returns (bool) {
        IKeyService keys = keyService;
        // The key service is fixed once set by the owner (write-once), a trusted contract.
        return address(keys) != address(0) && keys.failoverAllowed(leaseId);
    }

    /// @dev Fails an active lease over if its node is at fault (see `failover`); with `mode`
    /// FAILOVER_NODE_EXIT also if its node leaves without fault (`exitLease`: its attestation decided, the
    /// deposit not used up); with FAILOVER_ATTESTATION_REJECTED or FAILOVER_VERDICT_OVERTURNED always (its
    /// latest attestation was just Rejected, or marked so by a dispute; the caller checked the deposit is not
    /// used up, and slashes an overturned verdict's bond itself). False (nothing changed) if none applies.
    function _failover(uint256 leaseId, LeaseRecord storage lease, AttestationProgress memory progress, uint8 mode)
        private
        returns (bool)
    {
        address nodeKey = lease.nodeKey;
        uint256 deposit = lease.deposit;
        uint256 bond = lease.bond;
        uint256 earnedAmount = 0;
        uint8 reason = mode;
        // Rejected, or Verified found false: only the verified time before the latest submission counts.
        bool rejected = mode >= FAILOVER_ATTESTATION_REJECTED;
        if (rejected || !_firstAttestationMissed(lease, progress)) {
            // Rejected: the registry already marks the attestation so, only earlier verified time counts.
            earnedAmount = _earnedFrom(lease, progress);
            if (!rejected) {
                // Exactly the faults the close paths count as ATTESTATION_MISSED (not a used-up deposit).
                CloseReason endReason = _endReason(deposit - earnedAmount, progress, CloseReason.NODE_EXIT);
                if (endReason == CloseReason.ATTESTATION_MISSED) reason = FAILOVER_ATTESTATION_EXPIRED;
                else if (mode != FAILOVER_NODE_EXIT || endReason != CloseReason.NODE_EXIT) return false;
            }
            // Kept for a dispute that may still overturn one of its verdicts (`onSegmentOverturned`,
            // `onRejectedOverturned`). Safe: earned <= deposit (uint96), the rate and bond are the lease's own.
            // forge-lint: disable-next-line(unsafe-typecast)
            _segments[_declineKey(leaseId, nodeKey)] =
                Segment(lease.ratePerSecond, uint96(earnedAmount), uint88(bond), rejected);
        } else {
            reason = FAILOVER_FIRST_ATTESTATION_MISSED;
        }
        // Its earnings up to the fault are its own (payment already stopped there); the rest stays in escrow.
        uint256 owed = earnedAmount - lease.claimed;
        _release(nodeKey, lease, true);
        _declined[_declineKey(leaseId, nodeKey)] = true;
        if (lease.declines < type(uint8).max) lease.declines += 1;
        // Safe: earned <= deposit.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint96(deposit - earnedAmount);
        lease.claimed = 0;
        lease.nodeKey = address(0);
        lease.ratePerSecond = 0;
        lease.status = LeaseStatus.OPEN;
        lease.acceptedAt = 0;
        lease.bond = 0;
        lease.timeMark = 0;
        failovers[leaseId] += 1;
        emit LeaseFailedOver(leaseId, nodeKey, reason);
        _credit(nodeRegistry.operatorOf(nodeKey), owed);
        attestationRegistry.onFailover(leaseId, nodeKey);
        // An overturned verdict's bond is slashed by the caller (with the renter's compensation).
        if (reason == FAILOVER_FIRST_ATTESTATION_MISSED || mode == FAILOVER_ATTESTATION_REJECTED) {
            _slash(nodeKey, bond);
        }
        else if (reason == FAILOVER_ATTESTATION_EXPIRED) nodeRegistry.recordMissedAttestation(nodeKey);
        return true;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                ATTESTATION REGISTRY
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function onSegmentOverturned(uint256 leaseId, address nodeKey, uint256 keepSeconds) external override {
        // No reentrancy guard: only the registry calls, and nothing here calls untrusted code.
        _onlyRegistry();
        Segment storage segment = _segments[_declineKey(leaseId, nodeKey)];
        uint256 earnedAmount = segment.earned;
        uint256 keep = keepSeconds * segment.ratePerSecond;
        if (keep > earnedAmount) keep = earnedAmount;
        // A rejection that moved the lease already burned the bond: a bond is slashed once, and that
        // rejection can no longer give it back (the node was at fault before it).
        uint256 bond = segment.rejected ? 0 : segment.bond;
        // Safe: keep <= earned, a uint96.
        // forge-lint: disable-next-line(unsafe-typecast)
        segment.earned = uint96(keep);
        segment.bond = 0;
        segment.rejected = false;
        address renter = _leases[leaseId].renter;
        emit VerdictReversed(leaseId, true);
        // The node registry is ours, fixed at construction, and calls nothing but the token; the amount
        // taken is not needed (the freed bond may be gone). No compensation to an operator renting its own node.
        // slither-disable-next-line reentrancy-no-eth,unused-return (trusted own registry; see above)
        (, uint256 paid) =
            nodeRegistry.slash(nodeKey, bond, nodeRegistry.operatorOf(nodeKey) == renter ? 0 : earnedAmount - keep);
        _credit(renter, paid);
    }

    /// @inheritdoc ILeaseMarket
    function onAttestationRejected(uint256 leaseId) external override nonReentrant {
        _onlyRegistry();
        LeaseRecord storage lease = _leases[leaseId];
        // Closed by its renter while this attestation awaited the verdict: the held escrow goes back.
        if (lease.held) {
            _releaseHeld(leaseId, lease, true);
            return;
        }
        // No lease ends otherwise while an attestation awaits the verifiers within its window, and
        // votes after it are refused, so the lease is active here; anything else has nothing to slash.
        if (lease.status != LeaseStatus.ACTIVE) return;
        // The registry already marks the attestation Rejected, so only earlier verified time counts.
        AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
        uint256 earnedAmount = _earnedFrom(lease, progress);
        uint256 refund = lease.deposit - earnedAmount;
        // A lease whose renter wants it to survive its node moves with what is left (the bond burned as
        // below): a close would tell the key holders to delete the shares, so a node could destroy the
        // renter's key and data for the price of a bond by submitting a bad report.
        if (refund != 0 && _mayFailOver(leaseId)) {
            _failover(leaseId, lease, progress, FAILOVER_ATTESTATION_REJECTED);
            return;
        }
        uint256 bond = lease.bond;
        // No compensation: the rejected attestation's time is never paid, so the renter lost nothing
        // it is refunded for. Paying any of the bond to the renter would let a verifier who rents
        // get verified service back for free, and an operator renting its own node pull its stake
        // out at once; the whole bond is burned, as for a missed first attestation.
        address nodeKey = lease.nodeKey;
        _close(leaseId, lease, CloseReason.ATTESTATION_REJECTED, earnedAmount, refund, 0, false);
        _credit(lease.renter, refund);
        _slash(nodeKey, bond);
    }

    /// @inheritdoc ILeaseMarket
    function onVerifiedOverturned(uint256 leaseId, uint256 keepSeconds, bool bondTaken) external override {
        // No reentrancy guard: only the registry calls, and nothing here calls untrusted code.
        _onlyRegistry();
        LeaseRecord storage lease = _leases[leaseId];
        address nodeKey = lease.nodeKey;
        uint256 bond = lease.bond;
        uint256 deposit = lease.deposit;
        uint256 claimed = lease.claimed;
        // A later rejection already took the bond: a lease's bond is slashed once.
        if (bondTaken) bond = 0;
        // Earned stays only what was verified before the false submission.
        uint256 keep = keepSeconds * lease.ratePerSecond;
        if (keep > deposit) keep = deposit;
        // What the operator already claimed beyond that is owed to the renter out of the bond.
        uint256 cut = keep > claimed ? keep : claimed;
        uint256 refund = deposit - cut;
        if (lease.status == LeaseStatus.ACTIVE) {
            if (refund != 0 && _mayFailOver(leaseId)) {
                // Moved, not closed: a close makes the key holders delete the shares. The rest of the
                // escrow stays in the lease; the overclaim is the renter's out of the bond below.
                // Its calls go to our own registries (fixed at construction), which call back nothing
                // untrusted; after them only credits are written (the refund, 0 here, and the slash's pay).
                // slither-disable-next-line reentrancy-no-eth (trusted own contracts; see above)
                _failoverOverturned(leaseId, lease, cut - keep);
                refund = 0;
            } else {
                _close(leaseId, lease, CloseReason.ATTESTATION_REJECTED, cut, refund, cut - keep, false);
            }
        } else {
            // Closed: the bond is locked only while held; otherwise the registry takes what the node
            // holds beyond the bonds of its active leases, up to the bond.
            if (lease.held) {
                lease.held = false;
                _usage[nodeKey].bonded -= uint128(bond);
            }
            // Safe: cut <= deposit, a uint96.
            // forge-lint: disable-next-line(unsafe-typecast)
            lease.deposit = uint96(cut);
            lease.closeReason = CloseReason.ATTESTATION_REJECTED;
        }
        address renter = lease.renter;
        emit VerdictReversed(leaseId, true);
        _credit(renter, refund);
        // No compensation to an operator renting its own node: its stake must not leave through a slash.
        // The node registry is ours, fixed at construction, and calls nothing but the token (it pays
        // `paid` to this market); the amount taken is not needed (a closed lease's bond may be gone).
        // slither-disable-next-line reentrancy-no-eth,unused-return (trusted own registry; see above)
        (, uint256 paid) =
            nodeRegistry.slash(nodeKey, bond, nodeRegistry.operatorOf(nodeKey) == renter ? 0 : cut - keep);
        _credit(renter, paid);
    }

    /// @dev `onVerifiedOverturned`'s move: as on a rejection (the registry marks the attestation Rejected
    /// with the seconds verified before the false submission banked), after the operator's claims beyond
    /// those left the escrow as a close's cut would (`over`, paid back to the renter out of the bond).
    function _failoverOverturned(uint256 leaseId, LeaseRecord storage lease, uint256 over) private {
        // Safe: over <= claimed <= deposit, uint96s.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit -= uint96(over);
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.claimed -= uint96(over);
        _failover(leaseId, lease, attestationRegistry.progressOf(leaseId), FAILOVER_VERDICT_OVERTURNED);
    }

    /// @inheritdoc ILeaseMarket
    function onRejectedOverturned(uint256 leaseId, address segmentNode, uint256 from, uint256 to)
        external
        override
        returns (uint256 unpaid, address operator)
    {
        _onlyRegistry();
        LeaseRecord storage lease = _leases[leaseId];
        address nodeKey = segmentNode;
        uint256 rate;
        uint256 bond;
        Segment storage segment = _segments[_declineKey(leaseId, segmentNode)];
        if (segmentNode == address(0)) {
            // A rejection closed the lease at timeMark: the node's time up to then is paid.
            nodeKey = lease.nodeKey;
            rate = lease.ratePerSecond;
            bond = lease.bond;
            uint256 closedAt = lease.timeMark;
            if (to > closedAt) to = closedAt;
        } else {
            // A rejection moved the lease away from segmentNode at `to`. An overturn of an earlier Verified
            // verdict of that node cleared `rejected`: its bond stays burned, its later time unpaid.
            if (!segment.rejected) return (0, address(0));
            segment.rejected = false;
            rate = segment.ratePerSecond;
            bond = segment.bond;
        }
        operator = nodeRegistry.operatorOf(nodeKey);
        uint256 pay = to > from ? (to - from) * rate : 0;
        address renter = lease.renter;
        uint256 credit = credits[renter];
        uint256 fromRenter = pay < credit ? pay : credit;
        credits[renter] = credit - fromRenter;
        unpaid = pay - fromRenter;
        if (segmentNode == address(0)) {
            lease.deposit = SafeCast.toUint96(lease.deposit + fromRenter);
            lease.closeReason = CloseReason.RENTER;
        } else {
            // Its earnings on the lease were credited at the failover; this time is paid the same way.
            segment.earned = SafeCast.toUint96(segment.earned + fromRenter);
            _credit(operator, fromRenter);
        }
        emit VerdictReversed(leaseId, false);
        nodeRegistry.restoreSlash(nodeKey, bond);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       OWNER
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function setKeyService(IKeyService keyService_) external override onlyOwner {
        if (address(keyService_) == address(0) || address(keyService) != address(0)) {
            revert Errors.LeaseMarket_KeyServiceAlreadySet();
        }
        keyService = keyService_;
        emit KeyServiceSet(address(keyService_));
    }

    /// @inheritdoc ILeaseMarket
    function setAttestationWindow(uint256 newWindow) external override onlyOwner {
        _setAttestationWindow(newWindow);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      PRIVATE
    //////////////////////////////////////////////////////////////////////////*/

    function _createLease(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement
    ) private returns (uint256 leaseId) {
        if (spec.teeType == TeeType.NONE || spec.vcpu == 0 || spec.memoryMiB == 0 || spec.diskGiB == 0) {
            revert Errors.LeaseMarket_InvalidLeaseSpec();
        }
        if (spec.reattestInterval < MIN_REATTEST_INTERVAL || spec.reattestInterval > MAX_REATTEST_INTERVAL) {
            revert Errors.LeaseMarket_InvalidReattestInterval(spec.reattestInterval);
        }
        if (maxPricePerSecond == 0) revert Errors.LeaseMarket_ZeroMaxPrice();
        if (deposit == 0) revert Errors.LeaseMarket_ZeroAmount();
        if (expectedMeasurement.length != MEASUREMENT_LENGTH) {
            revert Errors.LeaseMarket_InvalidMeasurementLength(expectedMeasurement.length);
        }

        leaseId = nextLeaseId;
        if (deposit > type(uint96).max) revert Errors.LeaseMarket_DepositOverflow(leaseId, deposit);
        nextLeaseId = leaseId + 1;
        LeaseRecord storage lease = _leases[leaseId];
        lease.renter = msg.sender;
        lease.status = LeaseStatus.OPEN;
        // Safe: checked against type(uint96).max above.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint96(deposit);
        lease.teeType = spec.teeType;
        lease.vcpu = spec.vcpu;
        lease.memoryMiB = spec.memoryMiB;
        lease.diskGiB = spec.diskGiB;
        lease.minNodeStake = spec.minNodeStake;
        lease.maxPricePerSecond = maxPricePerSecond;
        emit LeaseCreated(leaseId, msg.sender, spec, maxPricePerSecond, deposit, expectedMeasurement);

        // Both callees are fixed at construction: the registry is ours, the token is the deployment's.
        attestationRegistry.openLease(leaseId, expectedMeasurement, spec.reattestInterval);
        _pull(deposit);
    }

    /// @dev Pulls `amount` from the caller; escrow is booked at face value, so a token that delivers
    /// less (fee on transfer) is refused rather than leaving the escrow short.
    function _pull(uint256 amount) private {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert Errors.LeaseMarket_TransferAmountMismatch(amount, received);
    }

    /// @dev Earned so far: verified seconds times the rate, capped at the deposit. A closed
    /// lease's deposit was cut to its final earnings, so it is returned as is.
    function _earned(uint256 leaseId, LeaseRecord storage lease) private view returns (uint256) {
        LeaseStatus status = lease.status;
        uint256 until = block.timestamp;
        if (status == LeaseStatus.CLOSED) {
            if (!lease.held) return lease.deposit;
            // Held for a verdict: the held time counts once verified, up to the close.
            until = lease.timeMark;
        } else if (status != LeaseStatus.ACTIVE) {
            return 0;
        }
        uint256 deposit = lease.deposit;
        uint256 amount = attestationRegistry.attestedSeconds(leaseId, until) * lease.ratePerSecond;
        return amount < deposit ? amount : deposit;
    }

    /// @dev `_earned` of an active lease from progress already read.
    function _earnedFrom(LeaseRecord storage lease, AttestationProgress memory progress)
        private
        view
        returns (uint256)
    {
        uint256 deposit = lease.deposit;
        uint256 amount = uint256(progress.verifiedSeconds) * lease.ratePerSecond;
        return amount < deposit ? amount : deposit;
    }

    /// @dev No first attestation by the deadline fixed at accept, or the first one left undecided
    /// past the verification window (a junk submission): the slashable fault.
    function _firstAttestationMissed(LeaseRecord storage lease, AttestationProgress memory progress)
        private
        view
        returns (bool)
    {
        if (progress.nonce == 0) return block.timestamp > lease.timeMark;
        // Undecided is the node's fault only without an allowed verifier's approval (silence is no verdict).
        return progress.nonce == 1 && progress.decideBy != 0 && block.timestamp > progress.decideBy && !progress.excused;
    }

    /// @dev Why an active lease whose attestation is decided ends now: EXHAUSTED if fully earned (no
    /// fault), ATTESTATION_MISSED if the latest attestation lapsed, was not refreshed after a
    /// challenge, or was left undecided without an allowed approval, else `otherwise`.
    function _endReason(uint256 refund, AttestationProgress memory progress, CloseReason otherwise)
        private
        pure
        returns (CloseReason)
    {
        if (refund == 0) return CloseReason.EXHAUSTED;
        if (progress.status == IAttestationRegistry.Status.Expired && !progress.excused) {
            return CloseReason.ATTESTATION_MISSED;
        }
        return otherwise;
    }

    /// @dev Releases the escrow of a lease closed while its attestation awaited the verdict: the held
    /// time is earned if Verified, refunded otherwise; a rejection or an unexcused missed first
    /// attestation slashes the bond, an unexcused undecided re-attestation is a miss. Then the bond is freed.
    function _releaseHeld(uint256 leaseId, LeaseRecord storage lease, bool rejected) private {
        AttestationProgress memory progress = attestationRegistry.progressOf(leaseId);
        // decideBy is set only while the attestation is stored Pending (no verdict yet).
        if (progress.decideBy != 0 && block.timestamp <= progress.decideBy) {
            revert Errors.LeaseMarket_AttestationPending(leaseId, progress.decideBy);
        }
        uint256 deposit = lease.deposit;
        uint256 finalEarned = _earned(leaseId, lease);
        uint256 refund = deposit - finalEarned;
        address nodeKey = lease.nodeKey;
        uint256 bond = lease.bond;
        CloseReason reason = lease.closeReason;
        uint256 slashed = 0;
        bool missed = false;
        if (rejected) {
            reason = CloseReason.ATTESTATION_REJECTED;
            slashed = bond;
        } else if (progress.decideBy != 0 && !progress.excused) {
            reason = CloseReason.ATTESTATION_MISSED;
            if (progress.nonce == 1) slashed = bond;
            else missed = true;
        }
        // Safe: finalEarned <= deposit, a uint96.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint96(finalEarned);
        lease.held = false;
        lease.closeReason = reason;
        _usage[nodeKey].bonded -= lease.bond;
        emit LeaseHeldReleased(leaseId, reason, finalEarned, refund);
        _credit(lease.renter, refund);
        if (missed) nodeRegistry.recordMissedAttestation(nodeKey);
        _slash(nodeKey, slashed);
    }

    /// @dev A lease does not end while the verifiers may still decide its attestation: the pending
    /// time is paid if verified, and a rejection still finds the bond.
    function _requireDecided(uint256 leaseId, AttestationProgress memory progress) private pure {
        if (progress.status == IAttestationRegistry.Status.Pending) {
            revert Errors.LeaseMarket_AttestationPending(leaseId, progress.decideBy);
        }
    }

    /// @dev Missed first attestation: full refund (nothing was earned), the bond is slashed. The
    /// renter lost nothing but time, so the whole bond is burned: no one profits from the fault,
    /// including an operator renting its own node.
    function _missedFirstAttestation(uint256 leaseId, LeaseRecord storage lease, address renter) private {
        uint256 refund = lease.deposit;
        address nodeKey = lease.nodeKey;
        uint256 bond = lease.bond;
        _close(leaseId, lease, CloseReason.ATTESTATION_MISSED, 0, refund, 0, false);
        _credit(renter, refund);
        _slash(nodeKey, bond);
    }

    /// @dev Back to the market: the node's bond and capacity are freed and any other node may accept.
    /// Free until the free-decline deadline; later a part of the bond growing linearly to all of it at
    /// the attestation deadline is burned, so that holding a lease it does not serve costs the node.
    function _decline(uint256 leaseId, LeaseRecord storage lease) private {
        address nodeKey = lease.nodeKey;
        uint256 free = _freeDeclineDeadline(lease);
        uint256 burned = 0;
        if (block.timestamp > free) {
            uint256 attestBy = lease.timeMark;
            burned = (uint256(lease.bond) * (block.timestamp - free)) / (attestBy - free);
        }
        _release(nodeKey, lease, true);
        _declined[_declineKey(leaseId, nodeKey)] = true;
        if (lease.declines < type(uint8).max) lease.declines += 1;
        lease.nodeKey = address(0);
        lease.ratePerSecond = 0;
        lease.status = LeaseStatus.OPEN;
        lease.acceptedAt = 0;
        lease.bond = 0;
        lease.timeMark = 0;
        emit LeaseDeclined(leaseId, nodeKey);
        _slash(nodeKey, burned);
    }

    /// @dev Half the attestation window fixed at accept: acceptedAt + (attestBy - acceptedAt) / 2.
    function _freeDeclineDeadline(LeaseRecord storage lease) private view returns (uint256) {
        uint256 acceptedAt = lease.acceptedAt;
        return acceptedAt + (uint256(lease.timeMark) - acceptedAt) / 2;
    }

    function _declineKey(uint256 leaseId, address nodeKey) private pure returns (bytes32) {
        return keccak256(abi.encode(leaseId, nodeKey));
    }

    /// @dev Frees what an active lease held of its node: its capacity, and its bond unless `withBond`
    /// is false (a lease closed while its attestation awaits the verdict keeps the bond locked).
    function _release(address nodeKey, LeaseRecord storage lease, bool withBond) private {
        NodeUsage storage usage = _usage[nodeKey];
        if (withBond) usage.bonded -= lease.bond;
        usage.vcpu -= lease.vcpu;
        usage.memoryMiB -= lease.memoryMiB;
        usage.diskGiB -= lease.diskGiB;
    }

    /// @dev Closes the lease; `held` keeps the bond locked and marks the escrow (deposit cut to
    /// `earnedAmount`, which then includes the held time) as awaiting a verdict.
    function _close(
        uint256 leaseId,
        LeaseRecord storage lease,
        CloseReason reason,
        uint256 earnedAmount,
        uint256 refund,
        uint256 compensation,
        bool held
    ) private {
        if (lease.status == LeaseStatus.ACTIVE) _release(lease.nodeKey, lease, !held);
        if (held) lease.held = true;
        // From here on the escrow holds exactly the earnings not yet claimed.
        // Safe: earned <= deposit, a uint96.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint96(earnedAmount);
        lease.status = LeaseStatus.CLOSED;
        lease.timeMark = uint40(block.timestamp);
        lease.closeReason = reason;
        emit LeaseClosed(leaseId, reason, earnedAmount, refund, compensation);
    }

    /// @dev The last step of a slashing close: every effect is booked, the registry takes the bond
    /// (locked since accept, so all of it) and burns it.
    function _slash(address nodeKey, uint256 bond) private {
        // slither-disable-next-line incorrect-equality (nothing to slash, e.g. a free decline; not a balance race)
        if (bond == 0) return;
        // slither-disable-next-line unused-return (no compensation asked, so nothing paid)
        (uint256 taken,) = nodeRegistry.slash(nodeKey, bond, 0);
        // Same transaction, nothing in between: the bond is locked, so the registry takes it all.
        // slither-disable-next-line incorrect-equality (an exact amount from our own registry, not a balance race)
        assert(taken == bond);
    }

    function _onlyRegistry() private view {
        if (msg.sender != address(attestationRegistry)) {
            revert Errors.LeaseMarket_CallerNotAttestationRegistry(msg.sender);
        }
    }

    function _credit(address account, uint256 amount) private {
        // slither-disable-next-line incorrect-equality (skipping an empty credit, not comparing balances)
        if (amount == 0) return;
        credits[account] += amount;
        emit Credited(account, amount);
    }

    function _requireStatus(uint256 leaseId, LeaseStatus status, LeaseStatus expected) private pure {
        if (status == LeaseStatus.NONE) revert Errors.LeaseMarket_LeaseNotFound(leaseId);
        if (status != expected) revert Errors.LeaseMarket_UnexpectedStatus(leaseId, status, expected);
    }

    function _requireOpenOrActive(uint256 leaseId, LeaseStatus status) private pure {
        if (status == LeaseStatus.NONE) revert Errors.LeaseMarket_LeaseNotFound(leaseId);
        if (status == LeaseStatus.CLOSED) revert Errors.LeaseMarket_LeaseClosed(leaseId);
    }

    function _setAttestationWindow(uint256 newWindow) private {
        if (newWindow < _MIN_ATTESTATION_WINDOW || newWindow > _MAX_ATTESTATION_WINDOW) {
            revert Errors.LeaseMarket_InvalidAttestationWindow(newWindow);
        }
        // No check against the unbonding delay: it is at least minUnbondingDelay (over 7 days), longer
        // than this window (at most 1 day) plus MAX_REATTEST_INTERVAL and the verification window.
        attestationWindow = newWindow;
        emit AttestationWindowSet(newWindow);
    }
}
