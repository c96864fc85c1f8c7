// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, Lease, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract CloseLease_LeaseMarket_Test is Base {
    function _close(uint256 leaseId) private returns (uint256 refund, uint256 received) {
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        refund = market.closeLease(leaseId);
        received = token.balanceOf(renter) - before;
    }

    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 1));
        vm.prank(renter);
        market.closeLease(1);
    }

    function test_RevertWhen_LeaseClosed() external {
        uint256 leaseId = createLease();
        _close(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseClosed.selector, leaseId));
        vm.prank(renter);
        market.closeLease(leaseId);
    }

    function test_RevertWhen_CallerNotRenter() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotRenter.selector, leaseId, nodeKey, renter));
        vm.prank(nodeKey);
        market.closeLease(leaseId);
    }

    function test_WhenLeaseOpen() external {
        uint256 leaseId = createLease();
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.RENTER, 0, DEPOSIT, 0);
        (uint256 refund, uint256 received) = _close(leaseId);
        assertEq(refund, DEPOSIT, "full refund");
        assertEq(received, DEPOSIT, "sent");
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.CLOSED), "closed");
        assertEq(lease.closedAt, block.timestamp, "closedAt");
    }

    function testFuzz_WhenActiveAndAttested(uint256 elapsed) external {
        elapsed = bound(elapsed, 0, REATTEST_INTERVAL - 1);
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + elapsed);
        uint256 earned = elapsed * rate();
        (uint256 refund, uint256 received) = _close(leaseId);
        assertEq(refund, DEPOSIT - earned, "refund");
        assertEq(received, refund, "sent");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.RENTER), "reason");
        assertEq(market.claimable(leaseId), earned, "earnings stay claimable");
        assertEq(token.balanceOf(address(market)), earned, "escrow holds the earnings");
    }

    function test_WhenAttestationPending_HoldsItsTimeUntilTheVerdict() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + 100);
        (uint256 refund,) = _close(leaseId);
        assertEq(refund, DEPOSIT - 100 * rate(), "the pending 100 s are held back");
        assertEq(market.claimable(leaseId), 0, "not payable before the verdict");
        assertEq(market.bondedStake(nodeKey), MIN_STAKE * SLASH_BPS / 10_000, "bond still locked");
        confirmReport(leaseId, REPORT_HASH, true);
        assertEq(market.claimable(leaseId), 100 * rate(), "paid once verified");
        assertEq(market.bondedStake(nodeKey), 0, "bond freed by the verdict");
    }

    function test_WhenPendingAttestationVerifiedBeforeClose() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + 100);
        confirmReport(leaseId, REPORT_HASH, true);
        (uint256 refund,) = _close(leaseId);
        assertEq(refund, DEPOSIT - 100 * rate(), "pending time is paid once verified");
    }

    function test_WhenReattestationMissed() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL + 1 hours);
        uint256 earned = uint256(REATTEST_INTERVAL) * rate();
        vm.expectEmit(true, false, false, true, address(market));
        emit ILeaseMarket.LeaseClosed(leaseId, CloseReason.ATTESTATION_MISSED, earned, DEPOSIT - earned, 0);
        (uint256 refund,) = _close(leaseId);
        assertEq(refund, DEPOSIT - earned, "only the attested interval is paid");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "counted against the node");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "not slashed");
    }
}
