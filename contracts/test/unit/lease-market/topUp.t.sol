// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract TopUp_LeaseMarket_Test is Base {
    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 7));
        vm.prank(renter);
        market.topUp(7, 1);
    }

    function test_RevertWhen_LeaseClosed() external {
        uint256 leaseId = createLease();
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseClosed.selector, leaseId));
        vm.prank(renter);
        market.topUp(leaseId, 1);
    }

    function test_RevertWhen_CallerNotRenter() external {
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotRenter.selector, leaseId, stranger, renter));
        vm.prank(stranger);
        market.topUp(leaseId, 1);
    }

    function test_RevertWhen_AmountZero() external {
        uint256 leaseId = createLease();
        vm.expectRevert(Errors.LeaseMarket_ZeroAmount.selector);
        vm.prank(renter);
        market.topUp(leaseId, 0);
    }

    function test_RevertWhen_Exhausted() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL - 1);
        // Re-attest so coverage keeps growing until the deposit is spent.
        while (market.earned(leaseId) < DEPOSIT) {
            submitReport(leaseId, keccak256(abi.encode(block.timestamp)));
            confirmReport(leaseId, keccak256(abi.encode(block.timestamp)), true);
            vm.warp(block.timestamp + REATTEST_INTERVAL - 1);
        }
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseExhausted.selector, leaseId));
        vm.prank(renter);
        market.topUp(leaseId, 1);
    }

    function test_RevertWhen_DepositOverflow() external {
        uint256 leaseId = createLease();
        uint256 amount = uint256(type(uint128).max) - DEPOSIT + 1;
        vm.expectRevert(
            abi.encodeWithSelector(Errors.LeaseMarket_DepositOverflow.selector, leaseId, uint256(type(uint128).max) + 1)
        );
        vm.prank(renter);
        market.topUp(leaseId, amount);
    }

    function testFuzz_WhenAmountValid(uint256 amount) external {
        amount = bound(amount, 1, 9000e18 - DEPOSIT);
        uint256 leaseId = attestedLease();
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseToppedUp(leaseId, amount, DEPOSIT + amount);
        vm.prank(renter);
        market.topUp(leaseId, amount);
        assertEq(market.getLease(leaseId).deposit, DEPOSIT + amount, "deposit");
        assertEq(token.balanceOf(address(market)), DEPOSIT + amount, "escrow");
    }
}
