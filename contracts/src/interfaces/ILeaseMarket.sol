// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IAttestationRegistryCore} from "./IAttestationRegistryCore.sol";
import {INodeRegistry} from "./INodeRegistry.sol";
import {CloseReason, Lease, LeaseSpec, LeaseStatus} from "../types/DataTypes.sol";

/// @title ILeaseMarket
/// @notice Leases of confidential VMs with an ERC-20 escrow streamed per second.
/// @dev Payment: a lease earns `ratePerSecond` for every second covered by a verified
/// attestation (`IAttestationRegistryCore.attestedSeconds`), counted from the attestation's
/// submission (the verifiers' delay does not cost the node), capped at the deposit. Nothing
/// is claimable before the attestation is Verified. Whatever is not earned goes back to the
/// renter on close. Tokens leaving the contract go either straight to the caller who is
/// owed them (renter closing, operator claiming: checks-effects-interactions + nonReentrant)
/// or, when someone else triggered the payout, to a credit the owner pulls with `withdraw`.
interface ILeaseMarket {
    /// @notice Emitted when a renter creates a lease. The spec (with `specHash`) lives in the event.
    event LeaseCreated(
        uint256 indexed leaseId,
        address indexed renter,
        LeaseSpec spec,
        uint256 maxPricePerSecond,
        uint256 deposit,
        bytes expectedMeasurement
    );

    /// @notice Emitted when a node key accepts a lease.
    event LeaseAccepted(uint256 indexed leaseId, address indexed nodeKey, uint256 ratePerSecond);

    /// @notice Emitted when the renter adds to the deposit.
    event LeaseToppedUp(uint256 indexed leaseId, uint256 amount, uint256 deposit);

    /// @notice Emitted when an operator claims earnings of a lease.
    event EarningsClaimed(uint256 indexed leaseId, address indexed operator, uint256 amount);

    /// @notice Emitted when a lease closes. `refund` went (or was credited) to the renter,
    /// `compensation` is slashed stake credited to the renter.
    event LeaseClosed(
        uint256 indexed leaseId, CloseReason reason, uint256 earned, uint256 refund, uint256 compensation
    );

    /// @notice Emitted when an account is credited tokens to `withdraw`.
    event Credited(address indexed account, uint256 amount);

    /// @notice Emitted when an account withdraws its credit.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice Emitted when the owner changes the first-attestation window.
    event AttestationWindowSet(uint256 attestationWindow);

    /// @notice Length of an expected measurement (SEV-SNP MEASUREMENT), in bytes.
    function MEASUREMENT_LENGTH() external view returns (uint256);

    /// @notice The ERC-20 token leases are paid in.
    function token() external view returns (IERC20);

    /// @notice The node registry consulted on accept and used to slash.
    function nodeRegistry() external view returns (INodeRegistry);

    /// @notice The attestation registry that records attestations of leases.
    function attestationRegistry() external view returns (IAttestationRegistryCore);

    /// @notice Seconds after accept within which the first attestation must be submitted.
    function attestationWindow() external view returns (uint256);

    /// @notice The id the next lease will get (ids start at 1).
    function nextLeaseId() external view returns (uint256);

    /// @notice The stored lease (all zero if it does not exist).
    function getLease(uint256 leaseId) external view returns (Lease memory);

    /// @notice The node key and status of a lease in one read (used by the attestation registry).
    function leaseNode(uint256 leaseId) external view returns (address nodeKey, LeaseStatus status);

    /// @notice What the lease has earned so far (for a closed lease: in total), capped at the deposit.
    function earned(uint256 leaseId) external view returns (uint256);

    /// @notice What the operator can claim now (earned minus claimed).
    function claimable(uint256 leaseId) external view returns (uint256);

    /// @notice What the renter would get back by closing now (deposit minus earned; 0 if closed).
    function refundable(uint256 leaseId) external view returns (uint256);

    /// @notice Tokens credited to `account`, waiting for `withdraw`.
    function credits(address account) external view returns (uint256);

    /// @notice Creates a lease and pulls `deposit` from the caller into escrow (needs an allowance).
    /// @dev Reverts: LeaseMarket_InvalidLeaseSpec, _ZeroMaxPrice, _ZeroAmount, _DepositOverflow,
    /// _InvalidMeasurementLength.
    /// @param spec Public terms (TEE type, vCPU, memory, disk, minimum node stake, re-attestation interval, specHash).
    /// @param maxPricePerSecond Highest total rate per second the renter pays (node price per vCPU times vCPUs).
    /// @param deposit Tokens to escrow.
    /// @param expectedMeasurement The 48-byte launch measurement the guest must attest.
    /// @return leaseId The new lease id.
    function createLease(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement
    ) external returns (uint256 leaseId);

    /// @notice `createLease` with an EIP-2612 permit for the deposit, so the renter needs one transaction.
    /// @dev A failing permit is ignored (it may have been front-run); the transfer then needs an allowance.
    function createLeaseWithPermit(
        LeaseSpec calldata spec,
        uint64 maxPricePerSecond,
        uint128 deposit,
        bytes calldata expectedMeasurement,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256 leaseId);

    /// @notice Accepts an open lease; the caller is the node key. The first valid accept wins.
    /// @dev Checks the node is registered, its active stake >= max(lease minimum, registry minimum),
    /// its TEE type matches, its declared capacity suffices, and its rate <= the renter's maximum.
    /// Starts the first-attestation window. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus,
    /// _NodeNotRegistered, _TeeTypeMismatch, _CapacityTooLow, _StakeTooLow, _PriceTooHigh.
    function acceptLease(uint256 leaseId) external;

    /// @notice Adds `amount` to an open or active lease's deposit (renter only).
    /// @dev Reverts: LeaseMarket_LeaseNotFound, _LeaseClosed, _NotRenter, _ZeroAmount,
    /// _LeaseExhausted, _DepositOverflow.
    function topUp(uint256 leaseId, uint256 amount) external;

    /// @notice Sends the claimable earnings of a lease to its node's operator (the caller).
    /// @dev Works on active and closed leases. Reverts: LeaseMarket_LeaseNotFound, _NotOperator, _NothingToClaim.
    /// @return amount The tokens sent.
    function claim(uint256 leaseId) external returns (uint256 amount);

    /// @notice Closes the lease and sends the renter (the caller) the unearned rest.
    /// @dev Reason RENTER, or ATTESTATION_MISSED (counted against the node) when the latest
    /// verified attestation has expired without a re-attestation. A pending attestation's time is
    /// not paid. Reverts: LeaseMarket_LeaseNotFound, _LeaseClosed, _NotRenter.
    /// @return refund The tokens sent to the renter.
    function closeLease(uint256 leaseId) external returns (uint256 refund);

    /// @notice Closes a lease whose deposit is fully earned (anyone). Reason EXHAUSTED.
    /// @dev Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus, _NotExhausted.
    function settle(uint256 leaseId) external;

    /// @notice Closes an accepted lease whose node submitted no attestation within
    /// `attestationWindow` (anyone): full refund and the slashed stake credited to the renter.
    /// @dev Reason ATTESTATION_MISSED. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus,
    /// _AttestationSubmitted, _AttestationDeadlineNotPassed.
    function reportMissedAttestation(uint256 leaseId) external;

    /// @notice The node key gives up an active lease: the unearned rest is credited to the renter.
    /// @dev Reason NODE_EXIT. Reverts: LeaseMarket_LeaseNotFound, _UnexpectedStatus, _NotLeaseNode.
    function exitLease(uint256 leaseId) external;

    /// @notice Called by the attestation registry when the verifier quorum rejects an attestation:
    /// closes an active lease (reason ATTESTATION_REJECTED, unearned rest credited to the renter)
    /// and slashes the node, crediting the slashed stake to the renter.
    /// @dev Reverts: LeaseMarket_CallerNotAttestationRegistry.
    function onAttestationRejected(uint256 leaseId) external;

    /// @notice Sends the caller its whole credit.
    /// @dev Reverts: LeaseMarket_NothingToWithdraw.
    /// @return amount The tokens sent.
    function withdraw() external returns (uint256 amount);

    /// @notice Sets the first-attestation window (owner only), between 1 minute and 1 day.
    /// @dev Reverts: LeaseMarket_InvalidAttestationWindow.
    function setAttestationWindow(uint256 newWindow) external;
}
