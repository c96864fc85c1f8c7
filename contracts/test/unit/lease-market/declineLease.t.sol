// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Lease, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract DeclineLease_LeaseMarket_Test is Base {
    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 8));
        vm.prank(nodeKey);
        market.declineLease(8);
    }

    function test_RevertWhen_LeaseNotActive() external {
        uint256 leaseId = createLease();
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.OPEN, LeaseStatus.ACTIVE
            )
        );
        vm.prank(nodeKey);
        market.declineLease(leaseId);
    }

    function test_RevertWhen_CallerNotLeaseNode() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotLeaseNode.selector, leaseId, operator, nodeKey));
        vm.prank(operator);
        market.declineLease(leaseId);
    }

    function test_RevertWhen_AttestationSubmitted() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationSubmitted.selector, leaseId));
        vm.prank(nodeKey);
        market.declineLease(leaseId);
    }

    function test_RevertWhen_DeadlinePassed() external {
        uint256 leaseId = acceptedLease();
        uint256 deadline = block.timestamp + ATTESTATION_WINDOW;
        vm.warp(deadline + 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_AttestationDeadlinePassed.selector, leaseId, deadline, deadline + 1
            )
        );
        vm.prank(nodeKey);
        market.declineLease(leaseId);
    }

    function test_WhenNodeDeclinesInTime() external {
        uint256 leaseId = acceptedLease();
        vm.warp(market.freeDeclineDeadline(leaseId));
        vm.expectEmit(true, true, false, true, address(market));
        emit ILeaseMarket.LeaseDeclined(leaseId, nodeKey);
        vm.prank(nodeKey);
        market.declineLease(leaseId);
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "open again");
        assertEq(lease.nodeKey, address(0), "no node");
        assertEq(lease.ratePerSecond + lease.bond + lease.attestBy + lease.acceptedAt, 0, "terms of accept cleared");
        assertEq(lease.deposit, DEPOSIT, "deposit untouched");
        assertEq(market.bondedStake(nodeKey), 0, "bond freed");
        assertEq(market.nodeUsage(nodeKey).vcpu, 0, "capacity freed");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash");
        assertTrue(market.declinedBy(leaseId, nodeKey), "recorded");
    }
}
