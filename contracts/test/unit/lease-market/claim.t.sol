// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Claim_LeaseMarket_Test is Base {
    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 3));
        vm.prank(operator);
        market.claim(3);
    }

    function test_RevertWhen_CallerNotOperator() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotOperator.selector, leaseId, nodeKey, operator));
        vm.prank(nodeKey);
        market.claim(leaseId);
    }

    function test_RevertWhen_LeaseOpen() external {
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotOperator.selector, leaseId, operator, address(0)));
        vm.prank(operator);
        market.claim(leaseId);
    }

    function test_RevertWhen_AttestationPending() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + 1 hours);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NothingToClaim.selector, leaseId));
        vm.prank(operator);
        market.claim(leaseId);
    }

    function test_RevertWhen_AlreadyClaimed() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 100);
        vm.prank(operator);
        market.claim(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NothingToClaim.selector, leaseId));
        vm.prank(operator);
        market.claim(leaseId);
    }

    function testFuzz_WhenClaimable(uint256 verifierDelay, uint256 elapsed) external {
        verifierDelay = bound(verifierDelay, 0, 1 hours);
        elapsed = bound(elapsed, verifierDelay + 1, 10 days);
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        uint256 submittedAt = block.timestamp;
        vm.warp(submittedAt + verifierDelay);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.warp(submittedAt + elapsed);
        // Coverage stops at expiry; the deposit caps the rest.
        uint256 covered = elapsed < REATTEST_INTERVAL ? elapsed : REATTEST_INTERVAL;
        uint256 expected = covered * rate();
        if (expected > DEPOSIT) expected = DEPOSIT;
        uint256 before = token.balanceOf(operator);
        vm.expectEmit(true, true, false, true, address(market));
        emit ILeaseMarket.EarningsClaimed(leaseId, operator, expected);
        vm.prank(operator);
        uint256 amount = market.claim(leaseId);
        assertEq(amount, expected, "amount");
        assertEq(token.balanceOf(operator) - before, expected, "paid");
        assertEq(market.getLease(leaseId).claimed, expected, "claimed");
        assertEq(market.claimable(leaseId), 0, "nothing left to claim");
    }

    function test_WhenLeaseClosed() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 500);
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.warp(block.timestamp + 500);
        vm.prank(operator);
        uint256 amount = market.claim(leaseId);
        assertEq(amount, 500 * rate(), "earnings frozen at close");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
    }
}
