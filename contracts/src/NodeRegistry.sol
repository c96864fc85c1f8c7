// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {Errors} from "./libraries/Errors.sol";
import {Node, NodeSpec, TeeType} from "./types/DataTypes.sol";

/// @title NodeRegistry
/// @notice Nodes, operators and stake of cvm. See {INodeRegistry}.
contract NodeRegistry is INodeRegistry, Ownable2Step, ReentrancyGuard, EIP712 {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @inheritdoc INodeRegistry
    uint256 public constant override MAX_SLASH_BPS = 5000;

    /// @inheritdoc INodeRegistry
    uint256 public constant override MAX_UNBONDING_DELAY = 30 days;

    /// @inheritdoc INodeRegistry
    bytes32 public constant override NODE_CONSENT_TYPEHASH = keccak256("NodeConsent(address nodeKey,address operator)");

    /// @inheritdoc INodeRegistry
    IERC20 public immutable override token;

    /// @inheritdoc INodeRegistry
    address public override leaseMarket;

    /// @inheritdoc INodeRegistry
    uint256 public override minStake;

    /// @inheritdoc INodeRegistry
    uint256 public override unbondingDelay;

    /// @inheritdoc INodeRegistry
    uint256 public override slashBps;

    /// @inheritdoc INodeRegistry
    uint256 public override burnedStake;

    mapping(address nodeKey => Node) private _nodes;

    constructor(IERC20 token_, address initialOwner, uint256 minStake_, uint256 unbondingDelay_, uint256 slashBps_)
        Ownable(initialOwner)
        EIP712("cvm NodeRegistry", "1")
    {
        if (address(token_) == address(0)) revert Errors.NodeRegistry_ZeroAddress();
        if (unbondingDelay_ > MAX_UNBONDING_DELAY) {
            revert Errors.NodeRegistry_UnbondingDelayTooLong(unbondingDelay_, MAX_UNBONDING_DELAY);
        }
        if (slashBps_ > MAX_SLASH_BPS) revert Errors.NodeRegistry_SlashBpsTooHigh(slashBps_, MAX_SLASH_BPS);
        token = token_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        slashBps = slashBps_;
        emit MinStakeSet(minStake_);
        emit UnbondingDelaySet(unbondingDelay_);
        emit SlashBpsSet(slashBps_);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                     MODIFIERS
    //////////////////////////////////////////////////////////////////////////*/

    modifier onlyLeaseMarket() {
        if (msg.sender != leaseMarket) revert Errors.NodeRegistry_CallerNotLeaseMarket(msg.sender);
        _;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       VIEWS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc INodeRegistry
    function getNode(address nodeKey) external view override returns (Node memory) {
        return _nodes[nodeKey];
    }

    /// @inheritdoc INodeRegistry
    function operatorOf(address nodeKey) external view override returns (address) {
        return _nodes[nodeKey].operator;
    }

    /// @inheritdoc INodeRegistry
    function nodeConsentDigest(address nodeKey, address operator) public view override returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(NODE_CONSENT_TYPEHASH, nodeKey, operator)));
    }

    /// @inheritdoc INodeRegistry
    function nodeTerms(address nodeKey) external view override returns (Node memory, uint256, uint256) {
        return (_nodes[nodeKey], minStake, slashBps);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                     OPERATORS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc INodeRegistry
    function register(
        address nodeKey,
        NodeSpec calldata spec,
        string calldata endpoint,
        bytes calldata nodeKeySignature
    ) external override {
        if (nodeKey == address(0)) revert Errors.NodeRegistry_ZeroAddress();
        Node storage node = _nodes[nodeKey];
        if (node.operator != address(0)) revert Errors.NodeRegistry_NodeAlreadyRegistered(nodeKey, node.operator);
        _checkSpec(nodeKey, spec);
        _checkNodeConsent(nodeKey, nodeKeySignature);
        node.operator = msg.sender;
        _writeSpec(node, spec);
        emit NodeRegistered(nodeKey, msg.sender, spec, endpoint);
    }

    /// @inheritdoc INodeRegistry
    function update(address nodeKey, NodeSpec calldata spec, string calldata endpoint) external override {
        Node storage node = _operatorNode(nodeKey);
        _checkSpec(nodeKey, spec);
        _writeSpec(node, spec);
        emit NodeUpdated(nodeKey, spec, endpoint);
    }

    /// @inheritdoc INodeRegistry
    function stake(address nodeKey, uint256 amount) external override nonReentrant {
        Node storage node = _operatorNode(nodeKey);
        if (amount == 0) revert Errors.NodeRegistry_ZeroAmount(nodeKey);
        uint128 newStake = (uint256(node.stake) + amount).toUint128();
        node.stake = newStake;
        emit Staked(nodeKey, msg.sender, amount, newStake);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        // Stake is booked at face value, so a token that delivers less (fee on transfer) is refused.
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert Errors.NodeRegistry_TransferAmountMismatch(amount, received);
    }

    /// @inheritdoc INodeRegistry
    function requestUnstake(address nodeKey, uint256 amount) external override {
        Node storage node = _operatorNode(nodeKey);
        if (amount == 0) revert Errors.NodeRegistry_ZeroAmount(nodeKey);
        uint256 active = node.stake;
        if (amount > active) revert Errors.NodeRegistry_UnstakeExceedsStake(nodeKey, amount, active);
        address market = leaseMarket;
        if (market != address(0)) {
            // Stake bonded by running leases stays until they end (the market is fixed and trusted).
            uint256 bonded = ILeaseMarket(market).bondedStake(nodeKey);
            uint256 unbondable = active > bonded ? active - bonded : 0;
            if (amount > unbondable) revert Errors.NodeRegistry_StakeBonded(nodeKey, amount, unbondable);
        }
        uint256 unlocksAt = block.timestamp + unbondingDelay;
        // Safe: below the current uint128 stake.
        // forge-lint: disable-next-line(unsafe-typecast)
        node.stake = uint128(active - amount);
        // Cannot overflow: stake + unbonding <= tokens held, each below 2^128 by construction.
        // Safe: amount <= active stake, a uint128.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint128 unbonding = node.unbonding + uint128(amount);
        node.unbonding = unbonding;
        // One timer for the whole unbonding amount: adding to it restarts the delay, so a node
        // cannot escape a pending slash by trickling stake out.
        node.unbondingEndsAt = unlocksAt.toUint40();
        emit UnstakeRequested(nodeKey, amount, unbonding, unlocksAt);
    }

    /// @inheritdoc INodeRegistry
    function withdrawUnstaked(address nodeKey) external override nonReentrant returns (uint256 amount) {
        Node storage node = _operatorNode(nodeKey);
        amount = node.unbonding;
        if (amount == 0) revert Errors.NodeRegistry_NothingUnbonding(nodeKey);
        if (block.timestamp < node.unbondingEndsAt) {
            revert Errors.NodeRegistry_UnbondingNotFinished(nodeKey, node.unbondingEndsAt, block.timestamp);
        }
        node.unbonding = 0;
        node.unbondingEndsAt = 0;
        emit Unstaked(nodeKey, msg.sender, amount);
        // The caller is the operator pulling its own stake: a direct transfer after the effects is safe.
        token.safeTransfer(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                    LEASE MARKET
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc INodeRegistry
    function slash(address nodeKey, uint256 amount, uint256 compensation)
        external
        override
        onlyLeaseMarket
        nonReentrant
        returns (uint256 taken, uint256 paid)
    {
        Node storage node = _nodes[nodeKey];
        uint256 active = node.stake;
        uint256 unbonding = node.unbonding;
        // Never the stake that backs the bonds of the node's active leases (the market releases a lease's
        // bond before slashing it).
        uint256 bonded = ILeaseMarket(leaseMarket).bondedStake(nodeKey);
        uint256 available = unbonding + (active > bonded ? active - bonded : 0);
        taken = amount < available ? amount : available;
        // slither-disable-next-line incorrect-equality (zero is the "nothing to take" case, not a balance race)
        if (taken == 0) return (0, 0);
        // Unbonding first: active stake backs the bonds of the node's active leases.
        uint256 fromUnbonding = taken <= unbonding ? taken : unbonding;
        uint256 fromStake = taken - fromUnbonding;
        // Safe: below the current uint128 stake.
        // forge-lint: disable-next-line(unsafe-typecast)
        node.stake = uint128(active - fromStake);
        // Safe: below the current uint128 unbonding.
        // forge-lint: disable-next-line(unsafe-typecast)
        node.unbonding = uint128(unbonding - fromUnbonding);
        paid = compensation < taken ? compensation : taken;
        // The rest is burned by staying here: no function moves it, so neither the operator nor the
        // owner can route it back (a treasury could be, and a transfer to a dead address can revert).
        burnedStake += taken - paid;
        emit Slashed(nodeKey, taken, fromStake, fromUnbonding);
        emit SlashSplit(nodeKey, paid, taken - paid);
        // The lease market is a fixed, trusted contract that credits the renter.
        if (paid != 0) token.safeTransfer(msg.sender, paid);
    }

    /// @inheritdoc INodeRegistry
    function restoreSlash(address nodeKey, uint256 amount) external override onlyLeaseMarket {
        // Burned stake never leaves the registry, so an overturned rejection's slash is still here.
        burnedStake -= amount;
        Node storage node = _nodes[nodeKey];
        node.stake = (uint256(node.stake) + amount).toUint128();
        emit SlashRestored(nodeKey, amount);
    }

    /// @inheritdoc INodeRegistry
    function recordMissedAttestation(address nodeKey) external override onlyLeaseMarket {
        Node storage node = _nodes[nodeKey];
        uint16 missed = node.missedAttestations;
        if (missed < type(uint16).max) {
            missed += 1;
            node.missedAttestations = missed;
        }
        emit MissedAttestationRecorded(nodeKey, missed);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       OWNER
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc INodeRegistry
    function setMinStake(uint256 newMinStake) external override onlyOwner {
        minStake = newMinStake;
        emit MinStakeSet(newMinStake);
    }

    /// @inheritdoc INodeRegistry
    function setUnbondingDelay(uint256 newDelay) external override onlyOwner {
        if (newDelay > MAX_UNBONDING_DELAY) {
            revert Errors.NodeRegistry_UnbondingDelayTooLong(newDelay, MAX_UNBONDING_DELAY);
        }
        if (leaseMarket != address(0)) _checkUnbondingDelay(newDelay, leaseMarket);
        unbondingDelay = newDelay;
        emit UnbondingDelaySet(newDelay);
    }

    /// @inheritdoc INodeRegistry
    function setSlashBps(uint256 newSlashBps) external override onlyOwner {
        if (newSlashBps > MAX_SLASH_BPS) revert Errors.NodeRegistry_SlashBpsTooHigh(newSlashBps, MAX_SLASH_BPS);
        slashBps = newSlashBps;
        emit SlashBpsSet(newSlashBps);
    }

    /// @inheritdoc INodeRegistry
    function setLeaseMarket(address market) external override onlyOwner {
        if (market == address(0)) revert Errors.NodeRegistry_ZeroAddress();
        // Set once: whoever can slash must not be swappable by the admin.
        if (leaseMarket != address(0)) revert Errors.NodeRegistry_LeaseMarketAlreadySet(leaseMarket);
        _checkUnbondingDelay(unbondingDelay, market);
        leaseMarket = market;
        emit LeaseMarketSet(market);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      PRIVATE
    //////////////////////////////////////////////////////////////////////////*/

    /// @dev Unbonding must outlast every window in which a lease's fault can still be decided or its verdicts disputed.
    function _checkUnbondingDelay(uint256 delay, address market) private view {
        uint256 minDelay = ILeaseMarket(market).minUnbondingDelay();
        if (delay < minDelay) revert Errors.NodeRegistry_UnbondingDelayTooShort(delay, minDelay);
    }

    function _operatorNode(address nodeKey) private view returns (Node storage node) {
        node = _nodes[nodeKey];
        address operator = node.operator;
        if (operator == address(0)) revert Errors.NodeRegistry_NodeNotRegistered(nodeKey);
        if (operator != msg.sender) revert Errors.NodeRegistry_NotOperator(nodeKey, msg.sender, operator);
    }

    /// @dev The caller is the operator the node key must have consented to. tryRecover (not recover)
    /// so that a malformed signature reverts with the same named error as a wrong one.
    function _checkNodeConsent(address nodeKey, bytes calldata signature) private view {
        // slither-disable-next-line unused-return (the third value only details `err`, which is checked)
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(nodeConsentDigest(nodeKey, msg.sender), signature);
        if (err != ECDSA.RecoverError.NoError || signer != nodeKey) {
            revert Errors.NodeRegistry_InvalidNodeKeySignature(nodeKey, msg.sender);
        }
    }

    function _checkSpec(address nodeKey, NodeSpec calldata spec) private pure {
        if (spec.teeType == TeeType.NONE || spec.vcpu == 0 || spec.memoryMiB == 0 || spec.diskGiB == 0) {
            revert Errors.NodeRegistry_InvalidNodeSpec(nodeKey);
        }
    }

    function _writeSpec(Node storage node, NodeSpec calldata spec) private {
        node.teeType = spec.teeType;
        node.vcpu = spec.vcpu;
        node.memoryMiB = spec.memoryMiB;
        node.diskGiB = spec.diskGiB;
        node.region = spec.region;
        node.pricePerSecondPerUnit = spec.pricePerSecondPerUnit;
    }
}
