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
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
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
        uint256 slashed = STAKE * SLASH_BPS / 10_000;
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.ATTESTATION_MISSED, 0, DEPOSIT, slashed);
        vm.prank(stranger);
        market.reportMissedAttestation(leaseId);
        assertEq(market.credits(renter), DEPOSIT + slashed, "refund and compensation credited");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - slashed, "slashed");
        assertEq(market.claimable(leaseId), 0, "node earns nothing");
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        market.withdraw();
        assertEq(token.balanceOf(renter) - before, DEPOSIT + slashed, "renter pulls it");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
    }
}
