// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../interfaces/IAttestationRegistry.sol";
import {Errors} from "../libraries/Errors.sol";

/// @title AttestedService
/// @notice Example dApp: accepts results only from a lease that is currently attested to run
/// the exact code (launch measurement) this contract was deployed for.
contract AttestedService {
    /// @notice Emitted when an attested lease posts a result.
    event ResultPosted(uint256 indexed leaseId, bytes32 result);

    /// @notice The registry asked whether a lease is attested.
    IAttestationRegistry public immutable registry;

    /// @notice The 48-byte launch measurement of the code this service trusts.
    bytes public expectedMeasurement;

    /// @notice The latest result posted by each lease.
    mapping(uint256 leaseId => bytes32 result) public results;

    constructor(IAttestationRegistry registry_, bytes memory expectedMeasurement_) {
        registry = registry_;
        expectedMeasurement = expectedMeasurement_;
    }

    /// @notice Records `result` for `leaseId`, only while that lease is attested with the expected
    /// measurement, and only from the node key hosting it.
    /// @dev Reverts: AttestedService_NotAttested, AttestedService_NotLeaseNode.
    function postResult(uint256 leaseId, bytes32 result) external {
        if (!registry.isAttested(leaseId, expectedMeasurement)) revert Errors.AttestedService_NotAttested(leaseId);
        address node = registry.attestationOf(leaseId).node;
        if (msg.sender != node) revert Errors.AttestedService_NotLeaseNode(leaseId, msg.sender, node);
        results[leaseId] = result;
        emit ResultPosted(leaseId, result);
    }
}
