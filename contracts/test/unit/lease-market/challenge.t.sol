// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Challenge_LeaseMarket_Test is Base {
    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 8));
        vm.prank(renter);
        market.challenge(8);
    }

    function test_RevertWhen_LeaseNotActive() external {
        uint256 leaseId = createLease();
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.OPEN, LeaseStatus.ACTIVE
            )
        );
        vm.prank(renter);
        market.challenge(leaseId);
    }

    function test_RevertWhen_CallerNotChallenger() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotChallenger.selector, leaseId, operator));
        vm.prank(operator);
        market.challenge(leaseId);
    }

    function test_RevertWhen_NothingToChallenge() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationRegistry_NothingToChallenge.selector, leaseId, IAttestationRegistry.Status.Pending
            )
        );
        vm.prank(renter);
        market.challenge(leaseId);
    }

    function test_RevertWhen_ChallengedTooSoon() external {
        uint256 leaseId = attestedLease();
        vm.prank(verifier);
        market.challenge(leaseId);
        vm.warp(block.timestamp + 60);
        uint256 next = block.timestamp - 60 + attestations.MIN_CHALLENGE_INTERVAL();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_ChallengeTooSoon.selector, leaseId, next));
        vm.prank(renter);
        market.challenge(leaseId);
    }

    function test_WhenChallengeUnanswered() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 600);
        vm.expectEmit(true, true, false, true, address(market));
        emit ILeaseMarket.LeaseChallenged(leaseId, renter, block.timestamp + attestations.CHALLENGE_WINDOW());
        vm.prank(renter);
        market.challenge(leaseId);
        assertEq(attestations.challengedAt(leaseId), block.timestamp, "recorded");
        vm.warp(block.timestamp + 300);
        assertEq(market.earned(leaseId), 600 * rate(), "payment stopped at the challenge");
        assertTrue(attestations.isAttested(leaseId, measurement), "still attested within the window");
        vm.warp(block.timestamp + attestations.CHALLENGE_WINDOW());
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Expired), "expired");
        assertFalse(attestations.isAttested(leaseId, measurement), "not attested");
    }

    function test_WhenChallengeAnswered() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 600);
        vm.prank(verifier);
        market.challenge(leaseId);
        vm.warp(block.timestamp + 100);
        bytes32 fresh = keccak256("fresh");
        submitReport(leaseId, fresh);
        confirmReport(leaseId, fresh, true);
        vm.warp(block.timestamp + attestations.CHALLENGE_WINDOW() + 1000);
        assertTrue(attestations.isAttested(leaseId, measurement), "answered");
        uint256 sinceFresh = attestations.CHALLENGE_WINDOW() + 1000;
        assertEq(market.earned(leaseId), (600 + sinceFresh) * rate(), "paid but for the answer gap");
    }
}
