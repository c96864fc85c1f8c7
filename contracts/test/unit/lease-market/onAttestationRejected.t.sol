// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract OnAttestationRejected_LeaseMarket_Test is Base {
    uint256 private constant SLASHED = STAKE * SLASH_BPS / 10_000;

    function test_RevertWhen_CallerNotAttestationRegistry() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CallerNotAttestationRegistry.selector, verifier));
        vm.prank(verifier);
        market.onAttestationRejected(leaseId);
    }

    function test_WhenFirstAttestationRejected() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + 600);
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.ATTESTATION_REJECTED, 0, DEPOSIT, SLASHED);
        confirmReport(leaseId, REPORT_HASH, false);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.CLOSED), "closed");
        assertEq(market.credits(renter), DEPOSIT + SLASHED, "full refund plus compensation");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - SLASHED, "slashed");
        assertEq(market.claimable(leaseId), 0, "nothing paid");
    }

    function test_WhenEarlierAttestationsVerified() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 3000);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        vm.warp(block.timestamp + 100);
        confirmReport(leaseId, second, false);
        uint256 earned = 3000 * rate();
        assertEq(market.claimable(leaseId), earned, "verified time stays paid");
        assertEq(market.credits(renter), DEPOSIT - earned + SLASHED, "rest refunded plus compensation");
    }

    function test_WhenLeaseAlreadyClosed() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.prank(renter);
        market.closeLease(leaseId);
        confirmReport(leaseId, REPORT_HASH, false);
        assertEq(market.credits(renter), SLASHED, "compensation only; the deposit was already refunded");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.RENTER), "reason unchanged");
        assertEq(token.balanceOf(address(market)), SLASHED, "escrow holds the credit");
    }
}
