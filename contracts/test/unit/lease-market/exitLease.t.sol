// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract ExitLease_LeaseMarket_Test is Base {
    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 8));
        vm.prank(nodeKey);
        market.exitLease(8);
    }

    function test_RevertWhen_LeaseNotActive() external {
        uint256 leaseId = createLease();
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.OPEN, LeaseStatus.ACTIVE
            )
        );
        vm.prank(nodeKey);
        market.exitLease(leaseId);
    }

    function test_RevertWhen_CallerNotLeaseNode() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotLeaseNode.selector, leaseId, operator, nodeKey));
        vm.prank(operator);
        market.exitLease(leaseId);
    }

    function test_WhenNodeExits() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 1000);
        uint256 earned = 1000 * rate();
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.NODE_EXIT, earned, DEPOSIT - earned, 0);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(market.credits(renter), DEPOSIT - earned, "refund credited");
        assertEq(market.claimable(leaseId), earned, "earned stays claimable");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash for leaving");
    }

    function test_WhenNothingSubmittedBeforeDeadline() external {
        uint256 leaseId = acceptedLease();
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "declined, open again");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no penalty");
    }

    function test_WhenNothingSubmittedAfterDeadline() external {
        uint256 leaseId = acceptedLease();
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "missed");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - MIN_STAKE * SLASH_BPS / 10_000, "bond slashed");
    }

    function test_RevertWhen_AttestationPending() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        uint256 decideBy = block.timestamp + attestations.VERIFICATION_WINDOW();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationPending.selector, leaseId, decideBy));
        vm.prank(nodeKey);
        market.exitLease(leaseId);
    }
}
