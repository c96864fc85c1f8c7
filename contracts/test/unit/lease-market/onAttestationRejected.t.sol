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
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        vm.warp(block.timestamp + 100);
        confirmReport(leaseId, second, false);
        uint256 earned = (REATTEST_INTERVAL / 2) * rate();
        assertEq(market.claimable(leaseId), earned, "verified time stays paid");
        // The renter got the verified time; the rejected time is never paid, so no compensation.
        assertEq(market.credits(renter), DEPOSIT - earned, "the unearned rest refunded, no compensation");
        assertEq(nodes.burnedStake(), SLASHED, "the whole bond burned");
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
