// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationRegistry} from "../../src/AttestationRegistry.sol";
import {LeaseMarket} from "../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {TestToken} from "../../src/test-token/TestToken.sol";
import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {Lease, LeaseSpec, LeaseStatus, Node, TeeType} from "../../src/types/DataTypes.sol";
import {Test} from "../base/Test.sol";

/// @notice Drives random sequences of every user-facing operation and keeps an independent
/// model (ghost state) of what each party is owed, for the invariant tests to compare against.
contract LeaseHandler is Test {
    uint32 internal constant INTERVAL = 6 hours;

    TestToken internal immutable token;
    NodeRegistry internal immutable nodes;
    AttestationRegistry internal immutable attestations;
    LeaseMarket internal immutable market;
    address internal immutable verifier;
    bytes internal measurement;

    address[] public renters;
    address[] public nodeKeys;
    address[] public operators;
    uint256[] public leaseIds;

    // ------------------------------------------------------------------ ghost model

    /// @dev Everything a renter put into a lease (create + top-ups).
    mapping(uint256 leaseId => uint256) public ghostDeposited;
    /// @dev What the renter got back from a lease (direct refund or credit), slashed stake excluded.
    mapping(uint256 leaseId => uint256) public ghostRefunded;
    /// @dev What operators received from a lease.
    mapping(uint256 leaseId => uint256) public ghostClaimed;
    /// @dev Verified seconds by the model: banked past coverage plus the current window.
    mapping(uint256 leaseId => uint256) public ghostBanked;
    mapping(uint256 leaseId => uint256) public ghostSubmittedAt;
    mapping(uint256 leaseId => bool) public ghostVerified;

    uint256 public ghostStakeIn;
    uint256 public ghostStakeOut;
    uint256 public ghostSlashed;
    /// @dev Count of observed rule breaks inside handler calls (handler reverts are not failures).
    uint256 public ghostViolations;

    constructor(
        TestToken token_,
        NodeRegistry nodes_,
        AttestationRegistry attestations_,
        LeaseMarket market_,
        address verifier_,
        bytes memory measurement_,
        address[] memory renters_,
        address[] memory nodeKeys_,
        address[] memory operators_
    ) {
        token = token_;
        nodes = nodes_;
        attestations = attestations_;
        market = market_;
        verifier = verifier_;
        measurement = measurement_;
        renters = renters_;
        nodeKeys = nodeKeys_;
        operators = operators_;
    }

    function leaseCount() external view returns (uint256) {
        return leaseIds.length;
    }

    function renterCount() external view returns (uint256) {
        return renters.length;
    }

    function nodeCount() external view returns (uint256) {
        return nodeKeys.length;
    }

    /// @dev Verified seconds the model grants a lease up to now.
    function modelCoverage(uint256 leaseId) public view returns (uint256 secs) {
        secs = ghostBanked[leaseId];
        if (ghostVerified[leaseId]) secs += _window(ghostSubmittedAt[leaseId], block.timestamp);
    }

    // ------------------------------------------------------------------ actions

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 2 days));
    }

    function createLease(uint256 renterSeed, uint256 deposit, uint256 vcpu) external {
        address renter = renters[renterSeed % renters.length];
        deposit = bound(deposit, 1, 1000e18);
        LeaseSpec memory spec = LeaseSpec({
            teeType: TeeType.SEV_SNP,
            vcpu: uint16(bound(vcpu, 1, 8)),
            memoryMiB: 1024,
            diskGiB: 10,
            minNodeStake: 10e18,
            reattestInterval: INTERVAL,
            specHash: keccak256(abi.encode(renterSeed))
        });
        token.mint(renter, deposit);
        vm.prank(renter);
        uint256 leaseId = market.createLease(spec, 1e16, uint128(deposit), measurement);
        leaseIds.push(leaseId);
        ghostDeposited[leaseId] = deposit;
    }

    function acceptLease(uint256 leaseSeed, uint256 nodeSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        vm.prank(nodeKeys[nodeSeed % nodeKeys.length]);
        market.acceptLease(leaseId);
    }

    function submit(uint256 leaseSeed, uint256 reportSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        uint256 nonce = attestations.attestationNonce(leaseId);
        vm.prank(lease.nodeKey);
        attestations.submit(leaseId, nonce, keccak256(abi.encode(reportSeed, nonce)), measurement, 1, bytes32(0));
        // Model: bank what the previous verified attestation covered, start a pending window.
        if (ghostVerified[leaseId]) ghostBanked[leaseId] += _window(ghostSubmittedAt[leaseId], block.timestamp);
        ghostSubmittedAt[leaseId] = block.timestamp;
        ghostVerified[leaseId] = false;
    }

    function confirm(uint256 leaseSeed, uint256 verdict) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        // Mostly approvals, so leases live long enough to stream; one in eight is rejected.
        bool ok = verdict % 8 != 0;
        bytes32 reportHash = attestations.attestationOf(leaseId).reportHash;
        Lease memory before = market.getLease(leaseId);
        uint256 registryBefore = token.balanceOf(address(nodes));
        uint256 creditBefore = market.credits(before.renter);
        vm.prank(verifier);
        attestations.confirm(leaseId, reportHash, ok);
        if (ok) {
            ghostVerified[leaseId] = true;
        } else {
            uint256 slashed = registryBefore - token.balanceOf(address(nodes));
            ghostSlashed += slashed;
            ghostRefunded[leaseId] += market.credits(before.renter) - creditBefore - slashed;
        }
    }

    function claim(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        address operator = nodes.operatorOf(market.getLease(leaseId).nodeKey);
        uint256 before = token.balanceOf(operator);
        vm.prank(operator);
        market.claim(leaseId);
        ghostClaimed[leaseId] += token.balanceOf(operator) - before;
    }

    function closeLease(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        address renter = market.getLease(leaseId).renter;
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        market.closeLease(leaseId);
        ghostRefunded[leaseId] += token.balanceOf(renter) - before;
    }

    function topUp(uint256 leaseSeed, uint256 amount) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        amount = bound(amount, 1, 500e18);
        address renter = market.getLease(leaseId).renter;
        token.mint(renter, amount);
        vm.prank(renter);
        market.topUp(leaseId, amount);
        ghostDeposited[leaseId] += amount;
    }

    function settle(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        market.settle(leaseId);
    }

    function reportMissedAttestation(uint256 leaseSeed, uint256 secs) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        vm.warp(block.timestamp + bound(secs, 0, 2 hours));
        address renter = market.getLease(leaseId).renter;
        uint256 registryBefore = token.balanceOf(address(nodes));
        uint256 creditBefore = market.credits(renter);
        market.reportMissedAttestation(leaseId);
        uint256 slashed = registryBefore - token.balanceOf(address(nodes));
        ghostSlashed += slashed;
        ghostRefunded[leaseId] += market.credits(renter) - creditBefore - slashed;
    }

    function exitLease(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        uint256 creditBefore = market.credits(lease.renter);
        vm.prank(lease.nodeKey);
        market.exitLease(leaseId);
        ghostRefunded[leaseId] += market.credits(lease.renter) - creditBefore;
    }

    function withdraw(uint256 renterSeed) external {
        address renter = renters[renterSeed % renters.length];
        vm.prank(renter);
        market.withdraw();
    }

    function stake(uint256 nodeSeed, uint256 amount) external {
        uint256 i = nodeSeed % nodeKeys.length;
        amount = bound(amount, 1, 100e18);
        token.mint(operators[i], amount);
        vm.prank(operators[i]);
        nodes.stake(nodeKeys[i], amount);
        ghostStakeIn += amount;
    }

    function requestUnstake(uint256 nodeSeed, uint256 amount) external {
        uint256 i = nodeSeed % nodeKeys.length;
        Node memory node = nodes.getNode(nodeKeys[i]);
        amount = bound(amount, 1, node.stake == 0 ? 1 : node.stake);
        vm.prank(operators[i]);
        nodes.requestUnstake(nodeKeys[i], amount);
    }

    function withdrawUnstaked(uint256 nodeSeed) external {
        uint256 i = nodeSeed % nodeKeys.length;
        Node memory node = nodes.getNode(nodeKeys[i]);
        vm.prank(operators[i]);
        uint256 amount = nodes.withdrawUnstaked(nodeKeys[i]);
        // Rule: unbonded stake leaves only after the delay, and only what was unbonding.
        if (block.timestamp < node.unbondingEndsAt || amount != node.unbonding) ghostViolations++;
        ghostStakeOut += amount;
    }

    // ------------------------------------------------------------------ private

    function _lease(uint256 seed) private view returns (uint256) {
        if (leaseIds.length == 0) return 0;
        return leaseIds[seed % leaseIds.length];
    }

    function _window(uint256 submittedAt, uint256 until) private pure returns (uint256) {
        if (until <= submittedAt) return 0;
        uint256 end = submittedAt + INTERVAL;
        return (until < end ? until : end) - submittedAt;
    }
}
