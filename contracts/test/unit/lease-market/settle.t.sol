// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Settle_LeaseMarket_Test is Base {
    uint128 private constant SMALL_DEPOSIT = 1e16; // 2,500 seconds at the test rate

    function _smallLease() private returns (uint256 leaseId) {
        registerAndStake();
        vm.prank(renter);
        leaseId = market.createLease(leaseSpec(), MAX_PRICE, SMALL_DEPOSIT, measurement);
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
    }

    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 5));
        market.settle(5);
    }

    function test_RevertWhen_LeaseNotActive() external {
        uint256 leaseId = createLease();
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.OPEN, LeaseStatus.ACTIVE
            )
        );
        market.settle(leaseId);
    }

    function test_RevertWhen_NotExhausted() external {
        uint256 leaseId = _smallLease();
        vm.warp(block.timestamp + 2499);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.LeaseMarket_NotExhausted.selector, leaseId, 2499 * rate(), SMALL_DEPOSIT)
        );
        vm.prank(stranger);
        market.settle(leaseId);
    }

    function test_WhenExhausted() external {
        uint256 leaseId = _smallLease();
        vm.warp(block.timestamp + 2500);
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.EXHAUSTED, SMALL_DEPOSIT, 0, 0);
        vm.prank(stranger);
        market.settle(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.CLOSED), "closed");
        assertEq(market.claimable(leaseId), SMALL_DEPOSIT, "all of it claimable");
        assertEq(market.credits(renter), 0, "no refund");
    }
}
