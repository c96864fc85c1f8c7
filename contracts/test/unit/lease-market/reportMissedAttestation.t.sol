// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract ReportMissedAttestation_LeaseMarket_Test is Base {
    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 4));
        market.reportMissedAttestation(4);
    }

    function test_RevertWhen_LeaseNotActive() external {
        uint256 leaseId = createLease();
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.OPEN, LeaseStatus.ACTIVE
            )
        );
        market.reportMissedAttestation(leaseId);
    }

    function test_RevertWhen_AttestationSubmitted() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        // Still within the verification window: the submission is not (yet) a miss.
        vm.warp(block.timestamp + ATTESTATION_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationSubmitted.selector, leaseId));
        market.reportMissedAttestation(leaseId);
    }

    function test_RevertWhen_DeadlineNotPassed() external {
        uint256 leaseId = acceptedLease();
        uint256 deadline = block.timestamp + ATTESTATION_WINDOW;
        vm.warp(deadline);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_AttestationDeadlineNotPassed.selector, leaseId, deadline, deadline
            )
        );
        market.reportMissedAttestation(leaseId);
    }

    function test_WhenNoAttestationInWindow() external {
        uint256 leaseId = acceptedLease();
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        uint256 slashed = MIN_STAKE * SLASH_BPS / 10_000;
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.ATTESTATION_MISSED, 0, DEPOSIT, 0);
        vm.prank(stranger);
        market.reportMissedAttestation(leaseId);
        assertEq(market.credits(renter), DEPOSIT, "full refund, no compensation (the renter paid nothing)");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - slashed, "the lease's bond is slashed");
        assertEq(nodes.burnedStake(), slashed, "and burned");
        assertEq(market.bondedStake(nodeKey), 0, "bond released");
        assertEq(market.claimable(leaseId), 0, "node earns nothing");
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        market.withdraw();
        assertEq(token.balanceOf(renter) - before, DEPOSIT, "renter pulls it");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
    }

    function test_WhenFirstAttestationUndecidedPastVerificationWindow() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.prank(stranger);
        market.reportMissedAttestation(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "missed");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - MIN_STAKE * SLASH_BPS / 10_000, "bond slashed");
    }
}
