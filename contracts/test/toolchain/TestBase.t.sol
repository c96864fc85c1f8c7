// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Test} from "../base/Test.sol";

/// @notice Checks the home-made test base behaves like forge-std's where we rely on it.
contract TestBaseTest is Test {
    function test_Bound_KeepsValueInRange(uint256 x, uint256 lo, uint256 hi) external pure {
        lo = lo % 1e30;
        hi = lo + (hi % 1e30);
        uint256 y = bound(x, lo, hi);
        assertGe(y, lo, "below min");
        assertLe(y, hi, "above max");
    }

    function test_Warp_MovesTime() external {
        vm.warp(1000);
        assertEq(block.timestamp, 1000, "warp");
    }

    function test_RevertWhen_AssertionFails() external {
        vm.expectRevert();
        this.failingAssertion();
    }

    function failingAssertion() external pure {
        assertEq(uint256(1), uint256(2), "expected failure");
    }
}
