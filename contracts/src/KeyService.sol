// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IKeyService} from "./interfaces/IKeyService.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {Errors} from "./libraries/Errors.sol";
import {HolderInfo, KeyPolicy, Lease, LeaseStatus} from "./types/DataTypes.sol";

/// @title KeyService
/// @notice Key holders and per-lease key-release policies. See {IKeyService}.
contract KeyService is IKeyService {
    using SafeERC20 for IERC20;

    /// @inheritdoc IKeyService
    uint256 public constant override MEASUREMENT_LENGTH = 48;

    /// @inheritdoc IKeyService
    uint256 public constant override MAX_MEASUREMENTS = 8;

    /// @inheritdoc IKeyService
    uint256 public constant override MAX_POLICY_HOLDERS = 16;

    /// @inheritdoc IKeyService
    uint256 public constant override MAX_HOLDERS = 64;

    uint256 private constant _MAX_UNBONDING_DELAY = 365 days;

    /// @inheritdoc IKeyService
    IERC20 public immutable override stakeToken;

    /// @inheritdoc IKeyService
    ILeaseMarket public immutable override leaseMarket;

    /// @inheritdoc IKeyService
    IAttestationRegistry public immutable override attestationRegistry;

    /// @inheritdoc IKeyService
    uint256 public immutable override minHolderStake;

    /// @inheritdoc IKeyService
    uint256 public immutable override unbondingDelay;

    /// @dev A lease's policy as stored; `manifestHash` is never zero once set (it marks the policy).
    struct StoredPolicy {
        bytes32 manifestHash;
        uint32 keyVersion;
        uint8 threshold;
        bool failover;
        address[] holders;
        bytes[] measurements;
    }

    mapping(address holder => HolderInfo) private _holders;

    /// @dev The registered holders, in registration order (swap-and-pop on deregistration).
    address[] private _holderList;

    /// @dev 1-based position in `_holderList` (0: not listed).
    mapping(address holder => uint256) private _holderPosition;

    mapping(uint256 leaseId => StoredPolicy) private _policies;

    constructor(
        IERC20 stakeToken_,
        ILeaseMarket leaseMarket_,
        IAttestationRegistry attestationRegistry_,
        uint256 minHolderStake_,
        uint256 unbondingDelay_
    ) {
        if (
            address(stakeToken_) == address(0) || address(leaseMarket_) == address(0)
                || address(attestationRegistry_) == address(0)
        ) revert Errors.KeyService_ZeroAddress();
        if (minHolderStake_ == 0 || minHolderStake_ > type(uint96).max || unbondingDelay_ > _MAX_UNBONDING_DELAY) {
            revert Errors.KeyService_InvalidTerms();
        }
        stakeToken = stakeToken_;
        leaseMarket = leaseMarket_;
        attestationRegistry = attestationRegistry_;
        minHolderStake = minHolderStake_;
        unbondingDelay = unbondingDelay_;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      HOLDERS
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IKeyService
    function holderOf(address holder) external view override returns (HolderInfo memory) {
        return _holders[holder];
    }

    /// @inheritdoc IKeyService
    function activeHolders() external view override returns (address[] memory active) {
        uint256 count = _holderList.length;
        active = new address[](count);
        uint256 n;
        for (uint256 i; i < count; ++i) {
            address holder = _holderList[i];
            if (_holders[holder].stake >= minHolderStake) active[n++] = holder;
        }
        // Shrink the array to the holders found.
        assembly ("memory-safe") {
            mstore(active, n)
        }
    }

    /// @inheritdoc IKeyService
    function isActiveHolder(address holder) public view override returns (bool) {
        HolderInfo storage info = _holders[holder];
        return info.registered && info.stake >= minHolderStake;
    }

    /// @inheritdoc IKeyService
    function registerHolder(bytes32 x25519Key) external override {
        if (x25519Key == bytes32(0)) revert Errors.KeyService_ZeroKey();
        HolderInfo storage info = _holders[msg.sender];
        if (info.registered) revert Errors.KeyService_AlreadyRegistered(msg.sender);
        if (info.stake < minHolderStake) revert Errors.KeyService_StakeTooLow(msg.sender, info.stake, minHolderStake);
        // A full set gives the place of a holder that no longer keeps the minimum stake (it cannot be named
        // in a new policy): otherwise 64 accounts could stake, register, unstake and hold every place for good.
        if (_holderList.length >= MAX_HOLDERS) _evictInactive();
        info.key = x25519Key;
        info.registered = true;
        _holderList.push(msg.sender);
        _holderPosition[msg.sender] = _holderList.length;
        emit HolderRegistered(msg.sender, x25519Key);
    }

    /// @inheritdoc IKeyService
    function deregisterHolder() external override {
        HolderInfo storage info = _holders[msg.sender];
        if (!info.registered) revert Errors.KeyService_NotRegistered(msg.sender);
        if (info.stake != 0 || info.unbonding != 0) revert Errors.KeyService_StakeRemaining(msg.sender);
        _unlist(msg.sender, info);
    }

    /// @dev Unlists the first registered holder below the minimum stake (at most MAX_HOLDERS reads);
    /// reverts KeyService_TooManyHolders if every place is held by an active holder.
    function _evictInactive() private {
        uint256 count = _holderList.length;
        for (uint256 i; i < count; ++i) {
            address holder = _holderList[i];
            HolderInfo storage info = _holders[holder];
            if (info.stake < minHolderStake) {
                // Its stake (unbonding or below the minimum) stays its own to withdraw.
                _unlist(holder, info);
                return;
            }
        }
        revert Errors.KeyService_TooManyHolders();
    }

    /// @dev Removes `holder` from the set (swap-and-pop) and forgets its key.
    function _unlist(address holder, HolderInfo storage info) private {
        info.registered = false;
        info.key = bytes32(0);
        uint256 position = _holderPosition[holder];
        uint256 last = _holderList.length;
        if (position != last) {
            address moved = _holderList[last - 1];
            _holderList[position - 1] = moved;
            _holderPosition[moved] = position;
        }
        _holderList.pop();
        delete _holderPosition[holder];
        emit HolderDeregistered(holder);
    }

    /// @inheritdoc IKeyService
    function stakeHolder(uint256 amount) external override {
        if (amount == 0) revert Errors.KeyService_ZeroAmount();
        HolderInfo storage info = _holders[msg.sender];
        uint96 staked = SafeCast.toUint96(uint256(info.stake) + amount);
        info.stake = staked;
        emit HolderStaked(msg.sender, amount, staked);
        uint256 before = stakeToken.balanceOf(address(this));
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = stakeToken.balanceOf(address(this)) - before;
        if (received != amount) revert Errors.KeyService_TransferAmountMismatch(amount, received);
    }

    /// @inheritdoc IKeyService
    function requestUnstakeHolder(uint256 amount) external override {
        if (amount == 0) revert Errors.KeyService_ZeroAmount();
        HolderInfo storage info = _holders[msg.sender];
        uint256 active = info.stake;
        if (amount > active) revert Errors.KeyService_UnstakeExceedsStake(msg.sender, amount, active);
        // Safe: amount <= stake, and stake + unbonding <= tokens staked < 2^96.
        // forge-lint: disable-next-line(unsafe-typecast)
        info.stake = uint96(active - amount);
        info.unbonding = SafeCast.toUint96(uint256(info.unbonding) + amount);
        uint256 unlocksAt = block.timestamp + unbondingDelay;
        info.unlocksAt = SafeCast.toUint40(unlocksAt);
        emit HolderUnstakeRequested(msg.sender, amount, unlocksAt);
    }

    /// @inheritdoc IKeyService
    function withdrawHolderStake() external override returns (uint256 amount) {
        HolderInfo storage info = _holders[msg.sender];
        amount = info.unbonding;
        if (amount == 0) revert Errors.KeyService_NothingUnbonding(msg.sender);
        uint256 unlocksAt = info.unlocksAt;
        if (block.timestamp < unlocksAt) revert Errors.KeyService_StakeLocked(msg.sender, unlocksAt);
        info.unbonding = 0;
        emit HolderUnstaked(msg.sender, amount);
        stakeToken.safeTransfer(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      POLICIES
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc IKeyService
    function setKeyPolicy(uint256 leaseId, KeyPolicy calldata policy) external override {
        _requireRenter(leaseId);
        _checkMeasurements(leaseId, policy.measurements);
        address[] calldata holders = policy.holders;
        uint256 count = holders.length;
        if (count == 0 || count > MAX_POLICY_HOLDERS || policy.threshold == 0 || policy.threshold > count) {
            revert Errors.KeyService_InvalidThreshold(leaseId, policy.threshold, count);
        }
        for (uint256 i; i < count; ++i) {
            address holder = holders[i];
            if (!isActiveHolder(holder)) revert Errors.KeyService_HolderNotActive(leaseId, holder);
            for (uint256 j; j < i; ++j) {
                if (holders[j] == holder) revert Errors.KeyService_DuplicateHolder(leaseId, holder);
            }
        }
        if (policy.manifestHash == bytes32(0)) revert Errors.KeyService_ZeroManifestHash(leaseId);
        StoredPolicy storage stored = _policies[leaseId];
        if (stored.manifestHash != bytes32(0)) {
            uint32 current = stored.keyVersion;
            // A new root key (other holders or another manifest) must be a new version; none goes back.
            bool rekey = stored.manifestHash != policy.manifestHash || !_sameHolders(stored.holders, holders);
            if (policy.keyVersion < current || (rekey && policy.keyVersion == current)) {
                revert Errors.KeyService_KeyVersionNotIncreased(leaseId, policy.keyVersion, current);
            }
        }
        stored.manifestHash = policy.manifestHash;
        stored.keyVersion = policy.keyVersion;
        stored.threshold = policy.threshold;
        stored.failover = policy.failover;
        delete stored.holders;
        for (uint256 i; i < count; ++i) {
            stored.holders.push(holders[i]);
        }
        _storeMeasurements(stored, policy.measurements);
        emit KeyPolicySet(leaseId, policy.keyVersion, policy.manifestHash, policy.failover);
    }

    /// @inheritdoc IKeyService
    function updateMeasurements(uint256 leaseId, bytes[] calldata measurements) external override {
        StoredPolicy storage stored = _requirePolicy(leaseId);
        _checkMeasurements(leaseId, measurements);
        _storeMeasurements(stored, measurements);
        emit KeyMeasurementsSet(leaseId);
    }

    /// @inheritdoc IKeyService
    function setFailover(uint256 leaseId, bool failover) external override {
        StoredPolicy storage stored = _requirePolicy(leaseId);
        stored.failover = failover;
        emit KeyFailoverSet(leaseId, failover);
    }

    /// @inheritdoc IKeyService
    function keyPolicyOf(uint256 leaseId) external view override returns (KeyPolicy memory policy) {
        StoredPolicy storage stored = _policies[leaseId];
        policy.measurements = stored.measurements;
        policy.failover = stored.failover;
        policy.threshold = stored.threshold;
        policy.holders = stored.holders;
        policy.keyVersion = stored.keyVersion;
        policy.manifestHash = stored.manifestHash;
    }

    /// @inheritdoc IKeyService
    function hasKeyPolicy(uint256 leaseId) external view override returns (bool) {
        return _policies[leaseId].manifestHash != bytes32(0);
    }

    /// @inheritdoc IKeyService
    function failoverAllowed(uint256 leaseId) external view override returns (bool) {
        StoredPolicy storage stored = _policies[leaseId];
        return stored.manifestHash != bytes32(0) && stored.failover;
    }

    /// @inheritdoc IKeyService
    function isReleasable(uint256 leaseId, bytes calldata measurement) external view override returns (bool) {
        StoredPolicy storage stored = _policies[leaseId];
        if (stored.manifestHash == bytes32(0) || measurement.length != MEASUREMENT_LENGTH) return false;
        bytes32 wanted = keccak256(measurement);
        bytes[] storage allowed = stored.measurements;
        uint256 count = allowed.length;
        bool found = false;
        for (uint256 i; i < count && !found; ++i) {
            found = keccak256(allowed[i]) == wanted;
        }
        if (!found) return false;
        // Active and not used up, as `isAttested` asks: a used-up lease's node is no longer paid to serve it.
        if (!leaseMarket.isServing(leaseId)) return false;
        IAttestationRegistry.Attestation memory attestation = attestationRegistry.attestationOf(leaseId);
        return attestation.status == IAttestationRegistry.Status.Verified && keccak256(attestation.measurement) == wanted;
    }

    /*//////////////////////////////////////////////////////////////////////////
                                      PRIVATE
    //////////////////////////////////////////////////////////////////////////*/

    /// @dev The caller must be the renter of an open or active lease.
    function _requireRenter(uint256 leaseId) private view {
        Lease memory lease = leaseMarket.getLease(leaseId);
        if (lease.status != LeaseStatus.OPEN && lease.status != LeaseStatus.ACTIVE) {
            revert Errors.KeyService_LeaseNotOpenOrActive(leaseId);
        }
        if (msg.sender != lease.renter) revert Errors.KeyService_NotRenter(leaseId, msg.sender, lease.renter);
    }

    function _requirePolicy(uint256 leaseId) private view returns (StoredPolicy storage stored) {
        _requireRenter(leaseId);
        stored = _policies[leaseId];
        if (stored.manifestHash == bytes32(0)) revert Errors.KeyService_NoPolicy(leaseId);
    }

    function _checkMeasurements(uint256 leaseId, bytes[] calldata measurements) private pure {
        uint256 count = measurements.length;
        if (count == 0 || count > MAX_MEASUREMENTS) revert Errors.KeyService_InvalidMeasurements(leaseId);
        for (uint256 i; i < count; ++i) {
            if (measurements[i].length != MEASUREMENT_LENGTH) revert Errors.KeyService_InvalidMeasurements(leaseId);
        }
    }

    function _storeMeasurements(StoredPolicy storage stored, bytes[] calldata measurements) private {
        delete stored.measurements;
        uint256 count = measurements.length;
        for (uint256 i; i < count; ++i) {
            stored.measurements.push(measurements[i]);
        }
    }

    function _sameHolders(address[] storage current, address[] calldata next) private view returns (bool) {
        uint256 count = current.length;
        if (count != next.length) return false;
        for (uint256 i; i < count; ++i) {
            if (current[i] != next[i]) return false;
        }
        return true;
    }
}
