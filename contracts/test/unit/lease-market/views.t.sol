// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Views_LeaseMarket_Test is Base {
    function test_UnknownLease() external view {
        (address key, LeaseStatus status) = market.leaseNode(42);
        assertEq(key, address(0), "no node");
        assertEq(uint256(status), uint256(LeaseStatus.NONE), "NONE");
        assertEq(market.getLease(42).renter, address(0), "no renter");
        assertEq(market.earned(42), 0, "earned");
        assertEq(market.refundable(42), 0, "refundable");
    }

    function test_Earned_WhenOpen() external {
        uint256 leaseId = createLease();
        vm.warp(block.timestamp + 1 days);
        assertEq(market.earned(leaseId), 0, "open leases earn nothing");
    }

    function testFuzz_Earned_WhenActive(uint256 elapsed) external {
        elapsed = bound(elapsed, 0, 400 days);
        uint256 leaseId = attestedLease();
        uint256 t0 = block.timestamp;
        // Keep re-attesting on time so every second is covered.
        while (block.timestamp + REATTEST_INTERVAL <= t0 + elapsed) {
            vm.warp(block.timestamp + REATTEST_INTERVAL);
            bytes32 reportHash = keccak256(abi.encode(block.timestamp));
            submitReport(leaseId, reportHash);
            confirmReport(leaseId, reportHash, true);
        }
        vm.warp(t0 + elapsed);
        uint256 expected = elapsed * rate();
        if (expected > DEPOSIT) expected = DEPOSIT;
        assertEq(market.earned(leaseId), expected, "capped stream");
        assertEq(market.refundable(leaseId), DEPOSIT - expected, "refundable = deposit - earned");
    }

    function test_WhenClosed() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 100);
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.warp(block.timestamp + 1000);
        assertEq(market.earned(leaseId), 100 * rate(), "frozen at close");
        assertEq(market.refundable(leaseId), 0, "nothing left to refund");
    }
}
