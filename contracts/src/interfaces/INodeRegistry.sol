// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Node, NodeSpec} from "../types/DataTypes.sol";

/// @title INodeRegistry
/// @notice Nodes, their operators and their stake. A node is identified by its node key (the
/// hot key its agent holds); the operator (cold wallet) registers it, owns its stake and its
/// earnings. Stake leaves only to the operator after the unbonding delay, or to the lease
/// market by `slash` for a provable fault; no admin can take it.
interface INodeRegistry {
    /// @notice Emitted when an operator registers a node key. `endpoint` is kept in the event only.
    event NodeRegistered(address indexed nodeKey, address indexed operator, NodeSpec spec, string endpoint);

    /// @notice Emitted when an operator updates a node's capabilities, price or endpoint.
    event NodeUpdated(address indexed nodeKey, NodeSpec spec, string endpoint);

    /// @notice Emitted when stake is added.
    event Staked(address indexed nodeKey, address indexed operator, uint256 amount, uint256 stake);

    /// @notice Emitted when stake starts unbonding.
    event UnstakeRequested(address indexed nodeKey, uint256 amount, uint256 unbonding, uint256 unlocksAt);

    /// @notice Emitted when unbonded stake goes back to the operator.
    event Unstaked(address indexed nodeKey, address indexed operator, uint256 amount);

    /// @notice Emitted when the lease market slashes a node; `compensation` of `amount` went to the
    /// market for the harmed renter, the rest is burned (locked in the registry for good).
    event Slashed(address indexed nodeKey, uint256 amount, uint256 fromStake, uint256 fromUnbonding);

    /// @notice Emitted with every slash: what went to the renter and what was burned.
    event SlashSplit(address indexed nodeKey, uint256 compensation, uint256 burned);

    /// @notice Emitted when a burned slash goes back to a node (its rejection was overturned by a dispute).
    event SlashRestored(address indexed nodeKey, uint256 amount);

    /// @notice Emitted when a non-slashable fault (missed re-attestation) is counted against a node.
    event MissedAttestationRecorded(address indexed nodeKey, uint256 missedAttestations);

    /// @notice Emitted when the admin changes the minimum stake.
    event MinStakeSet(uint256 minStake);

    /// @notice Emitted when the admin changes the unbonding delay.
    event UnbondingDelaySet(uint256 unbondingDelay);

    /// @notice Emitted when the admin changes the slashed fraction.
    event SlashBpsSet(uint256 slashBps);

    /// @notice Emitted once, when the lease market is wired in.
    event LeaseMarketSet(address leaseMarket);

    /// @notice Hard cap on the slashed fraction, in basis points (50%).
    function MAX_SLASH_BPS() external view returns (uint256);

    /// @notice Hard cap on the unbonding delay (30 days).
    function MAX_UNBONDING_DELAY() external view returns (uint256);

    /// @notice The ERC-20 token staked (the same one leases pay in).
    function token() external view returns (IERC20);

    /// @notice The lease market allowed to slash (zero until set).
    function leaseMarket() external view returns (address);

    /// @notice Active stake every node needs to accept any lease.
    function minStake() external view returns (uint256);

    /// @notice Seconds between `requestUnstake` and `withdrawUnstaked`.
    function unbondingDelay() external view returns (uint256);

    /// @notice Fraction, in basis points, of a lease's required stake (max of `minStake` and the lease's
    /// minimum) that the lease bonds at accept and a slash of it takes. Changes apply to later accepts only.
    function slashBps() external view returns (uint256);

    /// @notice The stored record of `nodeKey` (operator zero if unregistered).
    function getNode(address nodeKey) external view returns (Node memory);

    /// @notice The operator of `nodeKey` (zero if unregistered).
    function operatorOf(address nodeKey) external view returns (address);

    /// @notice The EIP-712 type hash of `NodeConsent(address nodeKey,address operator)`.
    function NODE_CONSENT_TYPEHASH() external view returns (bytes32);

    /// @notice The EIP-712 digest the node key signs to consent to `operator` registering it.
    function nodeConsentDigest(address nodeKey, address operator) external view returns (bytes32);

    /// @notice A node's record with the registry parameters an accepting lease market fixes, in one call.
    function nodeTerms(address nodeKey) external view returns (Node memory node, uint256 minStake, uint256 slashBps);

    /// @notice Slashed stake that went to no one (beyond the renters' compensation): it stays in
    /// this contract forever, as no function moves it.
    function burnedStake() external view returns (uint256);

    /// @notice Registers `nodeKey` with the caller as its operator.
    /// @dev `nodeKeySignature` is the node key's consent to this operator: a 65-byte ECDSA signature
    /// over `nodeConsentDigest(nodeKey, msg.sender)`, i.e. the EIP-712 struct
    /// `NodeConsent(address nodeKey,address operator)` under this registry's domain
    /// (name "cvm NodeRegistry", version "1", chain id, this contract). It stops a front-runner who
    /// copies a pending registration from taking the node key under its own operator address.
    /// No nonce is needed: the domain binds the signature to one chain and one registry, and a node
    /// key is registered at most once, so a consent can be used at most once.
    /// Reverts: NodeRegistry_ZeroAddress, _NodeAlreadyRegistered, _InvalidNodeSpec,
    /// _InvalidNodeKeySignature.
    function register(
        address nodeKey,
        NodeSpec calldata spec,
        string calldata endpoint,
        bytes calldata nodeKeySignature
    ) external;

    /// @notice Updates a node's capabilities, price and endpoint (operator only). Running leases keep their rate.
    /// @dev Reverts: NodeRegistry_NodeNotRegistered, _NotOperator, _InvalidNodeSpec.
    function update(address nodeKey, NodeSpec calldata spec, string calldata endpoint) external;

    /// @notice Moves `amount` tokens from the caller (the operator) into the node's active stake.
    /// @dev Needs an ERC-20 allowance. The registry must receive exactly `amount` (fee-on-transfer
    /// tokens are refused). Reverts: NodeRegistry_NodeNotRegistered, _NotOperator, _ZeroAmount,
    /// _TransferAmountMismatch.
    function stake(address nodeKey, uint256 amount) external;

    /// @notice Moves `amount` of active stake into unbonding and restarts the delay (operator only).
    /// @dev Unbonding stake no longer counts for accepting leases but stays slashable. Stake bonded
    /// by the node's active leases (`ILeaseMarket.bondedStake`) cannot be unstaked until they end.
    /// Reverts: NodeRegistry_NodeNotRegistered, _NotOperator, _ZeroAmount, _UnstakeExceedsStake, _StakeBonded.
    function requestUnstake(address nodeKey, uint256 amount) external;

    /// @notice Sends all unbonded stake to the operator once the delay has passed (operator only).
    /// @dev Reverts: NodeRegistry_NodeNotRegistered, _NotOperator, _NothingUnbonding, _UnbondingNotFinished.
    /// @return amount The tokens sent.
    function withdrawUnstaked(address nodeKey) external returns (uint256 amount);

    /// @notice Takes up to `amount` of the node's stake (unbonding first, then active): sends
    /// `min(compensation, taken)` to the lease market for the harmed renter and burns the rest
    /// (it stays here, out of everyone's reach). Lease market only.
    /// Never takes the active stake that backs the bonds of the node's active leases: at most
    /// unbonding + (stake - LeaseMarket.bondedStake(node)).
    /// @dev The market releases a lease's bond before slashing it (fixed at accept and locked since,
    /// so `taken == amount`), except for a dispute's reversal of a closed lease (what is left).
    /// Reverts: NodeRegistry_CallerNotLeaseMarket.
    /// @return taken The stake taken.
    /// @return paid The part sent to the lease market.
    function slash(address nodeKey, uint256 amount, uint256 compensation) external returns (uint256 taken, uint256 paid);

    /// @notice Gives back `amount` of burned stake to the node's active stake: a rejection whose slash
    /// was burned was overturned by a dispute. Lease market only.
    /// @dev Reverts: NodeRegistry_CallerNotLeaseMarket, and on underflow of `burnedStake`.
    function restoreSlash(address nodeKey, uint256 amount) external;

    /// @notice Counts a missed re-attestation against the node. Lease market only.
    /// @dev Reverts: NodeRegistry_CallerNotLeaseMarket.
    function recordMissedAttestation(address nodeKey) external;

    /// @notice Sets the minimum active stake (owner only).
    function setMinStake(uint256 newMinStake) external;

    /// @notice Sets the unbonding delay for future requests (owner only).
    /// @dev Never below `ILeaseMarket.minUnbondingDelay()` once the market is wired in, so a slash
    /// can always reach stake that started unbonding during a lease.
    /// Reverts: NodeRegistry_UnbondingDelayTooLong, _UnbondingDelayTooShort.
    function setUnbondingDelay(uint256 newDelay) external;

    /// @notice Sets the slashed fraction (owner only), capped at MAX_SLASH_BPS.
    /// @dev Reverts: NodeRegistry_SlashBpsTooHigh.
    function setSlashBps(uint256 newSlashBps) external;

    /// @notice Wires in the lease market, once (owner only).
    /// @dev Reverts: NodeRegistry_ZeroAddress, _LeaseMarketAlreadySet, _UnbondingDelayTooShort.
    function setLeaseMarket(address market) external;
}
