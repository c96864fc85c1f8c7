// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {Base} from "../../Base.t.sol";

contract Views_AttestationRegistry_Test is Base {
    function test_IsAttested_WhenNotVerified() external {
        uint256 leaseId = acceptedLease();
        assertFalse(attestations.isAttested(leaseId, measurement), "none");
        submitReport(leaseId, REPORT_HASH);
        assertFalse(attestations.isAttested(leaseId, measurement), "pending");
        confirmReport(leaseId, REPORT_HASH, false);
        assertFalse(attestations.isAttested(leaseId, measurement), "rejected");
    }

    function test_IsAttested_WhenExpired() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL - 1);
        assertTrue(attestations.isAttested(leaseId, measurement), "last second");
        vm.warp(block.timestamp + 1);
        assertFalse(attestations.isAttested(leaseId, measurement), "expired");
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Expired), "statusOf");
        assertEq(
            uint256(attestations.attestationOf(leaseId).status),
            uint256(IAttestationRegistry.Status.Expired),
            "attestationOf"
        );
    }

    function testFuzz_IsAttested_WhenMeasurementDiffers(bytes memory other) external {
        vm.assume(keccak256(other) != keccak256(measurement));
        uint256 leaseId = attestedLease();
        assertFalse(attestations.isAttested(leaseId, other), "other measurement");
        assertTrue(attestations.isAttested(leaseId, measurement), "own measurement");
    }

    function test_IsAttested_WhenLeaseClosed() external {
        uint256 leaseId = attestedLease();
        vm.prank(renter);
        market.closeLease(leaseId);
        assertFalse(attestations.isAttested(leaseId, measurement), "closed");
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Expired), "statusOf");
    }

    function test_IsAttested_WhenAllHold() external {
        uint256 leaseId = attestedLease();
        assertTrue(attestations.isAttested(leaseId, measurement), "attested");
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Verified), "statusOf");
    }

    function testFuzz_AttestedSeconds(uint256 delay, uint256 until) external {
        delay = bound(delay, 0, attestations.VERIFICATION_WINDOW());
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        uint256 submittedAt = block.timestamp;
        vm.warp(submittedAt + delay);
        confirmReport(leaseId, REPORT_HASH, true);
        until = bound(until, 0, submittedAt + 10 days);
        uint256 expected;
        if (until > submittedAt) {
            expected = until - submittedAt;
            if (expected > REATTEST_INTERVAL) expected = REATTEST_INTERVAL;
        }
        assertEq(attestations.attestedSeconds(leaseId, until), expected, "coverage");
    }
}
