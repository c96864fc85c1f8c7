// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract OnAttestationRejected_LeaseMarket_Test is Base {
    uint256 private constant SLASHED = MIN_STAKE * SLASH_BPS / 10_000;

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
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.ATTESTATION_REJECTED, 0, DEPOSIT, 0);
        confirmReport(leaseId, REPORT_HASH, false);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.CLOSED), "closed");
        assertEq(market.credits(renter), DEPOSIT, "full refund; nothing paid, so no compensation");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - SLASHED, "bond slashed");
        assertEq(nodes.burnedStake(), SLASHED, "and burned");
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
        uint256 compensation = earned < SLASHED ? earned : SLASHED;
        assertEq(market.credits(renter), DEPOSIT - earned + compensation, "rest refunded plus what it paid");
        assertEq(nodes.burnedStake(), SLASHED - compensation, "the rest of the bond burned");
    }

    function test_WhenLeaseAlreadyClosed() external {
        uint256 leaseId = attestedLease();
        vm.prank(renter);
        market.closeLease(leaseId);
        // Only reachable directly: the registry refuses votes once no lease can end while pending.
        vm.prank(address(attestations));
        market.onAttestationRejected(leaseId);
        assertEq(market.credits(renter), 0, "nothing more");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash of a closed lease");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.RENTER), "reason unchanged");
    }
}
