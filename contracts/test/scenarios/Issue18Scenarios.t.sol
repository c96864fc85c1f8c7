// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {Errors} from "../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../src/types/DataTypes.sol";
import {Base} from "../Base.t.sol";

/// @notice The contract holes of issue 18, one test (or a few) each, named after the hole. Each
/// attack succeeded against main before the fix: there a declining node re-took its lease, an
/// undecided first attestation was slashed whatever its approvals, quorum and role changes
/// applied mid-vote, a Pending lease could not be closed, and an exit erased the node's miss. Every
/// assertion below that the attack fails would have failed on that code.
contract Issue18Scenarios_Test is Base {
    uint256 private constant BOND = MIN_STAKE * SLASH_BPS / 10_000;

    // ------------------------------------------------------------------ helpers

    function _leaseFrom(address who) private returns (uint256 leaseId) {
        token.mint(who, DEPOSIT);
        vm.prank(who);
        token.approve(address(market), type(uint256).max);
        vm.prank(who);
        leaseId = market.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
    }

    function _accept(uint256 leaseId) private {
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function _vote(address who, uint256 leaseId, bytes32 reportHash, bool ok) private {
        vm.prank(who);
        attestations.confirm(leaseId, reportHash, ok);
    }

    function _status(uint256 leaseId) private view returns (IAttestationRegistry.Status) {
        return attestations.statusOf(leaseId);
    }

    function _threeVerifiersQuorumTwo() private returns (address verifier3) {
        verifier3 = makeAddr("verifier3");
        vm.startPrank(admin);
        attestations.grantRole(verifierRole(), verifier3);
        attestations.setQuorum(2);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ decline squat

    /// A price-0 node accepted, declined for free at the deadline and re-accepted in the same block,
    /// indefinitely. Now a node key can never take back a lease it declined.
    function test_DeclineSquat_NodeCannotRetakeALeaseItDeclined() external {
        uint256 leaseId = acceptedLease();
        vm.warp(market.freeDeclineDeadline(leaseId));
        vm.prank(nodeKey);
        market.declineLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_DeclinedBefore.selector, leaseId, nodeKey));
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "still open for other nodes");
    }

    /// Holding a lease past the grace period (half the attestation window) costs a part of the bond
    /// that grows to all of it at the attestation deadline; within it the decline is free.
    function test_DeclineSquat_HoldingPastTheGracePeriodCosts() external {
        uint256 leaseId = acceptedLease();
        uint256 free = market.freeDeclineDeadline(leaseId);
        uint256 attestBy = market.getLease(leaseId).attestBy;
        assertEq(free, block.timestamp + ATTESTATION_WINDOW / 2, "grace: half the attestation window");
        vm.warp(free + (attestBy - free) / 2);
        vm.prank(nodeKey);
        market.declineLease(leaseId);
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND / 2, "half the bond burned at half the way");
        assertEq(nodes.burnedStake(), BOND / 2, "burned, not paid to anyone");
        assertEq(market.bondedStake(nodeKey), 0, "the rest freed");
    }

    /// The same cost through exitLease (which declines before the first attestation).
    function test_DeclineSquat_ExitAfterTheGracePeriodCostsToo() external {
        uint256 leaseId = acceptedLease();
        vm.warp(market.getLease(leaseId).attestBy);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "the whole bond at the deadline");
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "back on the market");
    }

    // ------------------------------------------------------------------ silence is a verdict

    /// A verifier who is also the renter got an hour free at quorum 2-of-2 just by not voting (the
    /// node's first attestation was then slashed). It may not vote on its own lease now, the quorum
    /// is capped at the one verifier allowed, and that verifier's approval decides.
    function test_SilenceIsAVerdict_VerifierRenterCannotWithholdTheQuorum() external {
        vm.prank(admin);
        attestations.setQuorum(2);
        registerAndStake();
        uint256 leaseId = _leaseFrom(verifier);
        _accept(leaseId);
        submitReport(leaseId, REPORT_HASH);
        assertFalse(attestations.canVote(leaseId, verifier), "the renter may not vote");
        assertTrue(attestations.canVote(leaseId, verifier2), "the other verifier may");
        _vote(verifier2, leaseId, REPORT_HASH, true);
        assertEq(uint256(_status(leaseId)), uint256(IAttestationRegistry.Status.Verified), "decided by the allowed one");
    }

    /// An undecided first attestation with a valid approval is not slashed: the renter's close
    /// refunds it all without a slash and counts no miss, and the node could submit again.
    function test_SilenceIsAVerdict_UndecidedFirstAttestationWithAnApprovalIsNotSlashed() external {
        _threeVerifiersQuorumTwo();
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        _vote(verifier, leaseId, REPORT_HASH, true);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        assertTrue(attestations.progressOf(leaseId).excused, "excused");
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationSubmitted.selector, leaseId));
        market.reportMissedAttestation(leaseId);
        // The node may submit again (nothing paid for the undecided one).
        submitReport(leaseId, keccak256("report-2"));
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, DEPOSIT, "nothing was verified, all refunded");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash");
    }

    /// Junk with no approval stays slashable (the NO_EVIDENCE path still works).
    function test_SilenceIsAVerdict_JunkWithNoApprovalStaysSlashable() external {
        _threeVerifiersQuorumTwo();
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256("junk"));
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        market.reportMissedAttestation(leaseId);
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "slashed");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "missed");
    }

    /// An admin who raised the quorum mid-vote slashed a unanimously approved node. The quorum in
    /// force at submission applies.
    function test_SilenceIsAVerdict_QuorumRaisedMidVoteDoesNotApply() external {
        _threeVerifiersQuorumTwo();
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        _vote(verifier, leaseId, REPORT_HASH, true);
        vm.prank(admin);
        attestations.setQuorum(3);
        _vote(verifier2, leaseId, REPORT_HASH, true);
        assertEq(uint256(_status(leaseId)), uint256(IAttestationRegistry.Status.Verified), "2 of the 2 required");
    }

    /// An admin who revoked a verifier mid-vote voided its approval and slashed the node. A role
    /// change applies to attestations submitted after it.
    function test_SilenceIsAVerdict_RevocationMidVoteDoesNotSlash() external {
        _threeVerifiersQuorumTwo();
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        _vote(verifier, leaseId, REPORT_HASH, true);
        vm.startPrank(admin);
        attestations.revokeRole(verifierRole(), verifier);
        attestations.revokeRole(verifierRole(), verifier2);
        vm.stopPrank();
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationSubmitted.selector, leaseId));
        market.reportMissedAttestation(leaseId);
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash");
    }

    /// The quorum can never exceed the verifiers allowed to vote: quorum 3 with two verifiers is
    /// two; and with no verifier allowed at all the attestation is excused, never slashed.
    function test_SilenceIsAVerdict_QuorumNeverExceedsTheAllowedVoters() external {
        vm.prank(admin);
        attestations.setQuorum(3);
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        _vote(verifier, leaseId, REPORT_HASH, true);
        _vote(verifier2, leaseId, REPORT_HASH, true);
        assertEq(uint256(_status(leaseId)), uint256(IAttestationRegistry.Status.Verified), "2 of 2 allowed");

        // The operator's own verifier key, the only verifier: nobody may vote, nobody is slashed.
        vm.startPrank(admin);
        attestations.revokeRole(verifierRole(), verifier2);
        attestations.revokeRole(verifierRole(), verifier);
        attestations.grantRole(verifierRole(), operator);
        vm.stopPrank();
        uint256 second = createLease();
        _accept(second);
        submitReport(second, keccak256("report-2"));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, second, operator));
        _vote(operator, second, keccak256("report-2"), true);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationSubmitted.selector, second));
        market.reportMissedAttestation(second);
    }

    /// Re-attestations that a verifier-renter left undecided counted as the node's misses. An
    /// undecided re-attestation with an allowed approval is no miss (nor is it paid).
    function test_SilenceIsAVerdict_UndecidedReattestationWithAnApprovalIsNoMiss() external {
        _threeVerifiersQuorumTwo();
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        _vote(verifier, leaseId, REPORT_HASH, true);
        _vote(verifier2, leaseId, REPORT_HASH, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        _vote(verifier, leaseId, second, true);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.prank(renter);
        market.closeLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.RENTER), "no fault");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 0, "no miss");
        assertEq(market.earned(leaseId), (REATTEST_INTERVAL / 2) * rate(), "only the verified time paid");
    }

    /// A verifier may not vote on, nor challenge, a lease of its own node (as operator or node key).
    function test_SilenceIsAVerdict_OperatorVerifierMayNotVoteOrChallenge() external {
        bytes32 role = verifierRole();
        vm.prank(admin);
        attestations.grantRole(role, operator);
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256("junk"));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, leaseId, operator));
        _vote(operator, leaseId, keccak256("junk"), true);
        _vote(verifier, leaseId, keccak256("junk"), false);

        uint256 second = createLease();
        _accept(second);
        submitReport(second, REPORT_HASH);
        _vote(verifier, second, REPORT_HASH, true);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_ChallengerIsParty.selector, second, operator));
        vm.prank(operator);
        market.challenge(second);
    }

    // ------------------------------------------------------------------ pending forever

    /// A node kept its lease Pending at every block (a verdict at half the interval, a re-submission
    /// in the same block), so the renter could never close and the whole deposit flowed to it. The
    /// renter closes at once now; the pending time is held and paid only if verified.
    function test_PendingForever_RenterClosesWhileAVerdictIsPending() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        vm.warp(block.timestamp + 600);
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        uint256 verified = (REATTEST_INTERVAL / 2) * rate();
        assertEq(refund, DEPOSIT - verified - 600 * rate(), "the verified part paid, 600 s held");
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.CLOSED), "closed");
        assertEq(market.earned(leaseId), verified, "held time not earned yet");
        // No more submissions on a closed lease.
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_LeaseNotActive.selector, leaseId));
        vm.prank(nodeKey);
        attestations.submit(leaseId, 2, keccak256("report-3"), measurement, TCB, CHIP_ID_HASH, SIGNER);
        // Rejected: the held time goes back to the renter and the bond is slashed.
        _vote(verifier, leaseId, second, false);
        assertEq(market.credits(renter), 600 * rate(), "held time refunded");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "a rejection still finds the bond");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "rejected");
        assertEq(market.bondedStake(nodeKey), 0, "bond released");
    }

    /// Undecided past the window without an approval: the held time is refunded by anyone's
    /// finalizeClose, and the lapsed re-attestation counts as a miss.
    function test_PendingForever_UndecidedHeldTimeIsRefunded() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        uint256 decideBy = block.timestamp + attestations.VERIFICATION_WINDOW();
        vm.warp(block.timestamp + 600);
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationPending.selector, leaseId, decideBy));
        market.finalizeClose(leaseId);
        vm.warp(decideBy + 1);
        vm.prank(stranger);
        market.finalizeClose(leaseId);
        assertEq(market.credits(renter), 600 * rate(), "held time refunded");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "a miss");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash for a re-attestation");
        assertEq(market.bondedStake(nodeKey), 0, "bond released");
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NothingHeld.selector, leaseId));
        market.finalizeClose(leaseId);
    }

    /// Held, then verified: the node is paid the held time, the renter nothing more.
    function test_PendingForever_HeldTimeIsPaidOnceVerified() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + 300);
        vm.prank(renter);
        market.closeLease(leaseId);
        confirmReport(leaseId, REPORT_HASH, true);
        assertEq(market.claimable(leaseId), 300 * rate(), "held time paid");
        assertEq(market.credits(renter), 0, "nothing more refunded");
        vm.prank(operator);
        market.claim(leaseId);
        assertEq(market.bondedStake(nodeKey), 0, "bond released");
    }

    // ------------------------------------------------------------------ exit erases a miss

    /// A node whose attestation lapsed exited before the renter closed: no miss was recorded.
    function test_ExitErasesAMiss_LapsedAttestation() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL + 1);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "the miss is recorded");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "missed");
    }

    /// A node that did not answer a challenge exited before the renter closed: no miss was recorded.
    function test_ExitErasesAMiss_UnansweredChallenge() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 100);
        vm.prank(renter);
        market.challenge(leaseId);
        vm.warp(block.timestamp + attestations.CHALLENGE_WINDOW() + 1);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "the miss is recorded");
    }

    /// An exit in good standing is still no miss.
    function test_ExitErasesAMiss_ExitInGoodStandingIsNoMiss() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 100);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(nodes.getNode(nodeKey).missedAttestations, 0, "no miss");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.NODE_EXIT), "exit");
    }
}
