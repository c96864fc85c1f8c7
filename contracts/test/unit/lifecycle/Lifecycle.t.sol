// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {CloseReason, Lease, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {Base} from "../../Base.t.sol";

/// @notice The full lease lifecycle of DESIGN.md, end to end.
contract LifecycleTest is Base {
    function test_FullLifecycle_PaysAttestedTimeAndRefundsTheRest() external {
        registerAndStake();
        uint256 leaseId = createLease();
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        vm.warp(block.timestamp + 30);
        submitReport(leaseId, REPORT_HASH);
        uint256 submittedAt = block.timestamp;
        vm.warp(block.timestamp + 60); // the verifiers take a minute
        confirmReport(leaseId, REPORT_HASH, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "attested");

        vm.warp(block.timestamp + 1000);
        uint256 expected = (block.timestamp - submittedAt) * rate();
        vm.prank(operator);
        uint256 claimed = market.claim(leaseId);
        assertEq(claimed, expected, "claim pays from submission, verifier delay included");

        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, DEPOSIT - expected, "refund of the unearned rest");
        assertEq(token.balanceOf(renter) - before, refund, "refund sent");
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.CLOSED), "closed");
        assertEq(uint256(lease.closeReason), uint256(CloseReason.RENTER), "reason");
        assertEq(token.balanceOf(address(market)), 0, "market holds nothing");
        assertFalse(attestations.isAttested(leaseId, measurement), "closed lease is not attested");
        assertEq(
            uint256(attestations.attestationOf(leaseId).status),
            uint256(IAttestationRegistry.Status.Expired),
            "closed lease reports Expired"
        );
    }
}
