// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "./interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {Errors} from "./libraries/Errors.sol";
import {CloseReason, Lease, LeaseSpec, LeaseStatus, Node, TeeType} from "./types/DataTypes.sol";

/// @title LeaseMarket
/// @notice Leases of confidential VMs with a per-second ERC-20 escrow. See {ILeaseMarket}.
contract LeaseMarket is ILeaseMarket, Ownable2Step, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @inheritdoc ILeaseMarket
    uint256 public constant override MEASUREMENT_LENGTH = 48;

    uint256 private constant _MIN_ATTESTATION_WINDOW = 1 minutes;
    uint256 private constant _MAX_ATTESTATION_WINDOW = 1 days;

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

    mapping(uint256 leaseId => Lease) private _leases;

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
        _setAttestationWindow(attestationWindow_);
        // Starting at 1 keeps id 0 free as "no lease" and makes the first create rewrite a non-zero slot.
        nextLeaseId = 1;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       VIEWS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function getLease(uint256 leaseId) external view override returns (Lease memory) {
        return _leases[leaseId];
    }

    /// @inheritdoc ILeaseMarket
    function leaseNode(uint256 leaseId) external view override returns (address nodeKey, LeaseStatus status) {
        Lease storage lease = _leases[leaseId];
        return (lease.nodeKey, lease.status);
    }

    /// @inheritdoc ILeaseMarket
    function earned(uint256 leaseId) external view override returns (uint256) {
        return _earned(leaseId, _leases[leaseId]);
    }

    /// @inheritdoc ILeaseMarket
    function claimable(uint256 leaseId) external view override returns (uint256) {
        Lease storage lease = _leases[leaseId];
        return _earned(leaseId, lease) - lease.claimed;
    }

    /// @inheritdoc ILeaseMarket
    function refundable(uint256 leaseId) external view override returns (uint256) {
        Lease storage lease = _leases[leaseId];
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
        Lease storage lease = _leases[leaseId];
        _requireOpenOrActive(leaseId, lease.status);
        if (msg.sender != lease.renter) revert Errors.LeaseMarket_NotRenter(leaseId, msg.sender, lease.renter);
        if (amount == 0) revert Errors.LeaseMarket_ZeroAmount();
        uint256 deposit = lease.deposit;
        // Past exhaustion the node was entitled to stop; new money must not pay for that gap.
        if (_earned(leaseId, lease) >= deposit && lease.status == LeaseStatus.ACTIVE) {
            revert Errors.LeaseMarket_LeaseExhausted(leaseId);
        }
        uint256 newDeposit = deposit + amount;
        if (newDeposit > type(uint128).max) revert Errors.LeaseMarket_DepositOverflow(leaseId, newDeposit);
        // Safe: checked against type(uint128).max just above.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint128(newDeposit);
        emit LeaseToppedUp(leaseId, amount, newDeposit);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @inheritdoc ILeaseMarket
    function closeLease(uint256 leaseId) external override nonReentrant returns (uint256 refund) {
        Lease storage lease = _leases[leaseId];
        LeaseStatus status = lease.status;
        _requireOpenOrActive(leaseId, status);
        address renter = lease.renter;
        if (msg.sender != renter) revert Errors.LeaseMarket_NotRenter(leaseId, msg.sender, renter);

        CloseReason reason = CloseReason.RENTER;
        if (
            status == LeaseStatus.ACTIVE && attestationRegistry.statusOf(leaseId) == IAttestationRegistry.Status.Expired
        ) reason = CloseReason.ATTESTATION_MISSED;

        uint256 earnedAmount = _earned(leaseId, lease);
        refund = lease.deposit - earnedAmount;
        _close(leaseId, lease, reason, earnedAmount, refund, 0);

        if (reason == CloseReason.ATTESTATION_MISSED) nodeRegistry.recordMissedAttestation(lease.nodeKey);
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
        Lease storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.OPEN);
        Node memory node = nodeRegistry.getNode(msg.sender);
        if (node.operator == address(0)) revert Errors.LeaseMarket_NodeNotRegistered(msg.sender);
        if (node.teeType != lease.teeType) {
            revert Errors.LeaseMarket_TeeTypeMismatch(leaseId, lease.teeType, node.teeType);
        }
        if (node.vcpu < lease.vcpu || node.memoryMiB < lease.memoryMiB || node.diskGiB < lease.diskGiB) {
            revert Errors.LeaseMarket_CapacityTooLow(leaseId, msg.sender);
        }
        uint256 required = nodeRegistry.minStake();
        if (lease.minNodeStake > required) required = lease.minNodeStake;
        if (node.stake < required) revert Errors.LeaseMarket_StakeTooLow(leaseId, node.stake, required);
        uint256 rate = uint256(node.pricePerSecondPerUnit) * lease.vcpu;
        if (rate > lease.maxPricePerSecond) {
            revert Errors.LeaseMarket_PriceTooHigh(leaseId, rate, lease.maxPricePerSecond);
        }

        lease.nodeKey = msg.sender;
        // Safe: rate <= maxPricePerSecond, a uint64.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.ratePerSecond = uint88(rate);
        lease.status = LeaseStatus.ACTIVE;
        lease.acceptedAt = uint40(block.timestamp);
        emit LeaseAccepted(leaseId, msg.sender, rate);
    }

    /// @inheritdoc ILeaseMarket
    function claim(uint256 leaseId) external override nonReentrant returns (uint256 amount) {
        Lease storage lease = _leases[leaseId];
        if (lease.status == LeaseStatus.NONE) revert Errors.LeaseMarket_LeaseNotFound(leaseId);
        address operator = nodeRegistry.operatorOf(lease.nodeKey);
        if (msg.sender != operator || operator == address(0)) {
            revert Errors.LeaseMarket_NotOperator(leaseId, msg.sender, operator);
        }
        uint256 claimed = lease.claimed;
        amount = _earned(leaseId, lease) - claimed;
        // slither-disable-next-line incorrect-equality (nothing earned since the last claim, not a balance race)
        if (amount == 0) revert Errors.LeaseMarket_NothingToClaim(leaseId);
        // Safe: claimed + amount = earned <= deposit, a uint128.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.claimed = uint128(claimed + amount);
        emit EarningsClaimed(leaseId, msg.sender, amount);
        // The caller is the operator pulling its own earnings after all effects: a direct transfer is safe.
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc ILeaseMarket
    function exitLease(uint256 leaseId) external override nonReentrant {
        Lease storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        if (msg.sender != lease.nodeKey) revert Errors.LeaseMarket_NotLeaseNode(leaseId, msg.sender, lease.nodeKey);
        uint256 earnedAmount = _earned(leaseId, lease);
        uint256 refund = lease.deposit - earnedAmount;
        _close(leaseId, lease, CloseReason.NODE_EXIT, earnedAmount, refund, 0);
        _credit(lease.renter, refund);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      ANYONE
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function settle(uint256 leaseId) external override nonReentrant {
        Lease storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        uint256 earnedAmount = _earned(leaseId, lease);
        if (earnedAmount < lease.deposit) {
            revert Errors.LeaseMarket_NotExhausted(leaseId, earnedAmount, lease.deposit);
        }
        _close(leaseId, lease, CloseReason.EXHAUSTED, earnedAmount, 0, 0);
    }

    /// @inheritdoc ILeaseMarket
    function reportMissedAttestation(uint256 leaseId) external override nonReentrant {
        Lease storage lease = _leases[leaseId];
        _requireStatus(leaseId, lease.status, LeaseStatus.ACTIVE);
        if (attestationRegistry.attestationNonce(leaseId) != 0) {
            revert Errors.LeaseMarket_AttestationSubmitted(leaseId);
        }
        uint256 deadline = uint256(lease.acceptedAt) + attestationWindow;
        if (block.timestamp <= deadline) {
            revert Errors.LeaseMarket_AttestationDeadlineNotPassed(leaseId, deadline, block.timestamp);
        }
        // Nothing was ever attested, so nothing was earned: the whole deposit goes back.
        uint256 refund = lease.deposit;
        address nodeKey = lease.nodeKey;
        // Effects first (the slashed amount is known in advance), then the slash pays the market.
        uint256 compensation = nodeRegistry.slashAmountOf(nodeKey);
        _close(leaseId, lease, CloseReason.ATTESTATION_MISSED, 0, refund, compensation);
        _credit(lease.renter, refund + compensation);
        _slash(nodeKey, compensation);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                ATTESTATION REGISTRY
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseMarket
    function onAttestationRejected(uint256 leaseId) external override nonReentrant {
        if (msg.sender != address(attestationRegistry)) {
            revert Errors.LeaseMarket_CallerNotAttestationRegistry(msg.sender);
        }
        Lease storage lease = _leases[leaseId];
        address nodeKey = lease.nodeKey;
        // The registry only accepts submits for active leases, but the verdict may land after the
        // renter closed: the fault is proven either way, so the slash stands and compensates the renter.
        uint256 compensation = nodeRegistry.slashAmountOf(nodeKey);
        uint256 refund = 0;
        if (lease.status == LeaseStatus.ACTIVE) {
            // The registry already marks the attestation Rejected, so only earlier verified time counts.
            uint256 earnedAmount = _earned(leaseId, lease);
            refund = lease.deposit - earnedAmount;
            _close(leaseId, lease, CloseReason.ATTESTATION_REJECTED, earnedAmount, refund, compensation);
        }
        _credit(lease.renter, refund + compensation);
        _slash(nodeKey, compensation);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       OWNER
    //////////////////////////////////////////////////////////////////////////*/

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
        if (
            spec.teeType == TeeType.NONE || spec.vcpu == 0 || spec.memoryMiB == 0 || spec.diskGiB == 0
                || spec.reattestInterval == 0
        ) revert Errors.LeaseMarket_InvalidLeaseSpec();
        if (maxPricePerSecond == 0) revert Errors.LeaseMarket_ZeroMaxPrice();
        if (deposit == 0) revert Errors.LeaseMarket_ZeroAmount();
        if (expectedMeasurement.length != MEASUREMENT_LENGTH) {
            revert Errors.LeaseMarket_InvalidMeasurementLength(expectedMeasurement.length);
        }

        leaseId = nextLeaseId;
        nextLeaseId = leaseId + 1;
        Lease storage lease = _leases[leaseId];
        lease.renter = msg.sender;
        lease.status = LeaseStatus.OPEN;
        lease.deposit = deposit;
        lease.teeType = spec.teeType;
        lease.vcpu = spec.vcpu;
        lease.memoryMiB = spec.memoryMiB;
        lease.diskGiB = spec.diskGiB;
        lease.minNodeStake = spec.minNodeStake;
        lease.maxPricePerSecond = maxPricePerSecond;
        emit LeaseCreated(leaseId, msg.sender, spec, maxPricePerSecond, deposit, expectedMeasurement);

        // Both callees are fixed at construction: the registry is ours, the token is the deployment's.
        attestationRegistry.openLease(leaseId, expectedMeasurement, spec.reattestInterval);
        token.safeTransferFrom(msg.sender, address(this), deposit);
    }

    /// @dev Earned so far: verified seconds times the rate, capped at the deposit. A closed
    /// lease's deposit was cut to its final earnings, so it is returned as is.
    function _earned(uint256 leaseId, Lease storage lease) private view returns (uint256) {
        LeaseStatus status = lease.status;
        if (status == LeaseStatus.CLOSED) return lease.deposit;
        if (status != LeaseStatus.ACTIVE) return 0;
        uint256 deposit = lease.deposit;
        uint256 secs = attestationRegistry.attestedSeconds(leaseId, block.timestamp);
        uint256 amount = secs * lease.ratePerSecond;
        return amount < deposit ? amount : deposit;
    }

    function _close(
        uint256 leaseId,
        Lease storage lease,
        CloseReason reason,
        uint256 earnedAmount,
        uint256 refund,
        uint256 compensation
    ) private {
        // From here on the escrow holds exactly the earnings not yet claimed.
        // Safe: earned <= deposit, a uint128.
        // forge-lint: disable-next-line(unsafe-typecast)
        lease.deposit = uint128(earnedAmount);
        lease.status = LeaseStatus.CLOSED;
        lease.closedAt = uint40(block.timestamp);
        lease.closeReason = reason;
        emit LeaseClosed(leaseId, reason, earnedAmount, refund, compensation);
    }

    /// @dev The last step of a slashing close: every effect is booked, the registry now pays in.
    function _slash(address nodeKey, uint256 expected) private {
        if (expected == 0) return;
        uint256 slashed = nodeRegistry.slash(nodeKey);
        // Same transaction, nothing in between: the registry takes exactly what it reported.
        assert(slashed == expected);
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
        attestationWindow = newWindow;
        emit AttestationWindowSet(newWindow);
    }
}
