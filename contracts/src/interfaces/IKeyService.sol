// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IAttestationRegistry} from "./IAttestationRegistry.sol";
import {ILeaseMarket} from "./ILeaseMarket.sol";
import {HolderInfo, KeyPolicy} from "../types/DataTypes.sol";

/// @title IKeyService
/// @notice The threshold key service's on-chain part: the registry of key holders (each with an
/// X25519 key and a stake, as verifiers stake in the court) and each lease's key-release policy,
/// which only the lease's renter sets. A lease's workload root key is split t-of-n among the holders
/// its policy names; a holder releases its share only to a guest of the lease that the chain says is
/// Verified with a measurement the policy allows (`isReleasable`), after checking the evidence itself.
/// Nothing here holds a key or a share. Closing the lease needs no call: holders watch `LeaseClosed`
/// and delete their shares. No admin can take a stake, and holder stake is never slashed: it prices
/// a place in the bounded holder set.
interface IKeyService {
    /// @notice Emitted when an account registers as a key holder with its X25519 public key.
    event HolderRegistered(address indexed holder, bytes32 key);

    /// @notice Emitted when a holder leaves the holder set (no stake left).
    event HolderDeregistered(address indexed holder);

    /// @notice Emitted when stake is added for a holder; `stake` is its active stake after.
    event HolderStaked(address indexed holder, uint256 amount, uint256 stake);

    /// @notice Emitted when a holder asks for stake back (it leaves at `unlocksAt`).
    event HolderUnstakeRequested(address indexed holder, uint256 amount, uint256 unlocksAt);

    /// @notice Emitted when unbonded holder stake goes back to the holder.
    event HolderUnstaked(address indexed holder, uint256 amount);

    /// @notice Emitted when the renter sets a lease's whole key policy.
    event KeyPolicySet(uint256 indexed leaseId, uint32 keyVersion, bytes32 manifestHash, bool failover);

    /// @notice Emitted when the renter changes a lease's allowed measurements.
    event KeyMeasurementsSet(uint256 indexed leaseId);

    /// @notice Emitted when the renter allows or forbids a lease's failover.
    event KeyFailoverSet(uint256 indexed leaseId, bool failover);

    /// @notice Length of a measurement (SEV-SNP MEASUREMENT), 48 bytes.
    function MEASUREMENT_LENGTH() external view returns (uint256);

    /// @notice Most measurements a policy allows (8).
    function MAX_MEASUREMENTS() external view returns (uint256);

    /// @notice Most holders a policy names (16).
    function MAX_POLICY_HOLDERS() external view returns (uint256);

    /// @notice Most holders registered at once (64).
    function MAX_HOLDERS() external view returns (uint256);

    /// @notice The token holders stake.
    function stakeToken() external view returns (IERC20);

    /// @notice The lease market whose renters set policies.
    function leaseMarket() external view returns (ILeaseMarket);

    /// @notice The attestation registry `isReleasable` reads.
    function attestationRegistry() external view returns (IAttestationRegistry);

    /// @notice Active stake a holder needs to be named in a policy (and to register).
    function minHolderStake() external view returns (uint256);

    /// @notice Seconds unstaked holder stake waits before it can be withdrawn.
    function unbondingDelay() external view returns (uint256);

    /// @notice A holder's key, stake, unbonding stake and registration (all zero: unknown).
    function holderOf(address holder) external view returns (HolderInfo memory);

    /// @notice Every registered holder with at least `minHolderStake` active (at most MAX_HOLDERS).
    function activeHolders() external view returns (address[] memory);

    /// @notice Whether `holder` is registered with at least `minHolderStake` active.
    function isActiveHolder(address holder) external view returns (bool);

    /// @notice Registers the caller as a key holder with its X25519 public key. Needs at least
    /// `minHolderStake` staked first (`stakeHolder`), so the bounded holder set cannot be squatted for free.
    /// When all MAX_HOLDERS places are taken, the first registered holder below `minHolderStake` loses its
    /// place (HolderDeregistered; its stake stays withdrawable; it registers again after staking).
    /// @dev Emits HolderRegistered (and HolderDeregistered for an evicted holder). Reverts: KeyService_ZeroKey, _AlreadyRegistered, _StakeTooLow, _TooManyHolders.
    function registerHolder(bytes32 x25519Key) external;

    /// @notice Leaves the holder set; only with no stake active or unbonding.
    /// @dev Emits HolderDeregistered. Reverts: KeyService_NotRegistered, _StakeRemaining.
    function deregisterHolder() external;

    /// @notice Adds `amount` (pulled from the caller; approve first) to the caller's holder stake.
    /// @dev Emits HolderStaked. Reverts: KeyService_ZeroAmount, _TransferAmountMismatch.
    function stakeHolder(uint256 amount) external;

    /// @notice Starts unbonding `amount` of the caller's active stake (restarts the timer for all of it).
    /// @dev Emits HolderUnstakeRequested. Reverts: KeyService_ZeroAmount, _UnstakeExceedsStake.
    function requestUnstakeHolder(uint256 amount) external;

    /// @notice Sends the caller its unbonded stake once `unbondingDelay` after its last request has passed.
    /// @dev Emits HolderUnstaked. Reverts: KeyService_NothingUnbonding, _StakeLocked.
    /// @return amount The tokens sent.
    function withdrawHolderStake() external returns (uint256 amount);

    /// @notice Sets the whole key-release policy of an open or active lease (its renter only). Measurements:
    /// 1..MAX_MEASUREMENTS of 48 bytes; holders: 1..MAX_POLICY_HOLDERS distinct active holders; threshold
    /// 1..holders; manifestHash non-zero. A new root key (holders or manifestHash changed) needs a higher
    /// keyVersion; the version never goes down.
    /// @dev Emits KeyPolicySet. Reverts: KeyService_LeaseNotOpenOrActive, _NotRenter, _InvalidMeasurements,
    /// _InvalidThreshold, _DuplicateHolder, _HolderNotActive, _ZeroManifestHash, _KeyVersionNotIncreased.
    function setKeyPolicy(uint256 leaseId, KeyPolicy calldata policy) external;

    /// @notice Replaces the allowed measurements (an app upgrade is a policy change); renter only, while
    /// the lease is open or active and has a policy.
    /// @dev Emits KeyMeasurementsSet. Reverts: KeyService_LeaseNotOpenOrActive, _NotRenter, _NoPolicy,
    /// _InvalidMeasurements.
    function updateMeasurements(uint256 leaseId, bytes[] calldata measurements) external;

    /// @notice Allows or forbids the lease's failover; renter only, while open or active with a policy.
    /// @dev Emits KeyFailoverSet. Reverts: KeyService_LeaseNotOpenOrActive, _NotRenter, _NoPolicy.
    function setFailover(uint256 leaseId, bool failover) external;

    /// @notice The lease's key policy (empty if none).
    function keyPolicyOf(uint256 leaseId) external view returns (KeyPolicy memory);

    /// @notice Whether the lease has a key policy.
    function hasKeyPolicy(uint256 leaseId) external view returns (bool);

    /// @notice Whether the lease has a policy that allows failover (what `ILeaseMarket.failover` asks).
    function failoverAllowed(uint256 leaseId) external view returns (bool);

    /// @notice Whether a holder may release its share now: the lease has a policy allowing
    /// `measurement`, is active and not used up (`ILeaseMarket.isServing`, as `isAttested` asks), and its
    /// latest attestation is Verified with exactly that measurement.
    /// Holders still verify the evidence (AMD chain, bindings, guest key) off chain.
    function isReleasable(uint256 leaseId, bytes calldata measurement) external view returns (bool);
}
