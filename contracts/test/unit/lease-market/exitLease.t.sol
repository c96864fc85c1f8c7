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
}
