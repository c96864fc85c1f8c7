// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Withdraw_LeaseMarket_Test is Base {
    function test_RevertWhen_NoCredit() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NothingToWithdraw.selector, renter));
        vm.prank(renter);
        market.withdraw();
    }

    function test_WhenCredit() external {
        uint256 leaseId = attestedLease();
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        uint256 before = token.balanceOf(renter);
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.Withdrawn(renter, DEPOSIT);
        vm.prank(renter);
        uint256 amount = market.withdraw();
        assertEq(amount, DEPOSIT, "amount");
        assertEq(token.balanceOf(renter) - before, DEPOSIT, "sent");
        assertEq(market.credits(renter), 0, "zeroed");
    }
}
