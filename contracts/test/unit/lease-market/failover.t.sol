// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationRegistry} from "../../../src/AttestationRegistry.sol";
import {LeaseMarket} from "../../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../../src/NodeRegistry.sol";
import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {IKeyService} from "../../../src/interfaces/IKeyService.sol";
import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {
    AttestationProgress, CloseReason, KeyPolicy, Lease, LeaseStatus, NodeUsage, Segment
} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

/// @dev Failover of a lease to another node (issue 20): every path and revert, and the attacks.
contract Failover_LeaseMarket_Test is Base {
    address internal operator2;
    address internal nodeKey2;
    bytes32 internal constant REPORT_2 = keccak256("report-2");
    bytes32 internal constant REPORT_3 = keccak256("report-3");

    function setUp() public override {
        super.setUp();
        operator2 = makeAddr("operator2");
        nodeKey2 = makeAddr("nodeKey2");
        token.mint(operator2, 10_000e18);
        vm.startPrank(operator2);
        token.approve(address(nodes), type(uint256).max);
        nodes.register(
            nodeKey2, nodeSpec(), "https://node2.example", signNodeConsent(address(nodes), makeKey("nodeKey2"), operator2)
        );
        nodes.stake(nodeKey2, STAKE);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ helpers

    function submitAs(address node, uint256 leaseId, bytes32 reportHash) internal {
        uint256 nonce = attestations.attestationNonce(leaseId);
        vm.prank(node);
        attestations.submit(leaseId, nonce, reportHash, measurement, TCB, CHIP_ID_HASH, SIGNER);
    }

    /// @dev An attested lease (failover allowed) whose attestation expired: the node is at fault.
    function expiredLease() internal returns (uint256 leaseId) {
        leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL);
    }

    /// @dev An attested lease (failover allowed) whose deposit pays 100 seconds.
    function smallAttestedLease() internal returns (uint256 leaseId) {
        registerAndStake();
        vm.prank(renter);
        leaseId = market.createLease(leaseSpec(), MAX_PRICE, uint128(rate() * 100), measurement);
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        setPolicy(leaseId, true);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
    }

    function bondOf() internal pure returns (uint256) {
        return (MIN_STAKE * SLASH_BPS) / 10_000;
    }

    // ------------------------------------------------------------------ reverts

    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 99));
        market.failover(99);
    }

    function test_RevertWhen_LeaseNotActive() external {
        uint256 leaseId = createLease();
        setPolicy(leaseId, true);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.OPEN, LeaseStatus.ACTIVE
            )
        );
        market.failover(leaseId);
    }

    function test_RevertWhen_NoPolicy() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_FailoverNotAllowed.selector, leaseId));
        market.failover(leaseId);
    }

    /// @dev Attack: failover of a lease whose policy forbids it is refused; the lease ends as today.
    function test_RevertWhen_PolicyForbidsFailover_LeaseEndsAsToday() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, false);
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_FailoverNotAllowed.selector, leaseId));
        market.failover(leaseId);
        vm.prank(renter);
        market.closeLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "as today");
    }

    function test_RevertWhen_KeyServiceUnset() external {
        NodeRegistry nodes2 = new NodeRegistry(token, admin, MIN_STAKE, UNBONDING_DELAY, SLASH_BPS);
        AttestationRegistry attestations2 = new AttestationRegistry(admin, 1, 15 minutes);
        LeaseMarket market2 =
            new LeaseMarket(token, INodeRegistry(address(nodes2)), attestations2, admin, ATTESTATION_WINDOW);
        vm.startPrank(admin);
        nodes2.setLeaseMarket(address(market2));
        attestations2.setLeaseMarket(address(market2));
        vm.stopPrank();
        vm.startPrank(operator);
        token.approve(address(nodes2), type(uint256).max);
        nodes2.register(nodeKey, nodeSpec(), "", signNodeConsent(address(nodes2), makeKey("nodeKey"), operator));
        nodes2.stake(nodeKey, STAKE);
        vm.stopPrank();
        vm.startPrank(renter);
        token.approve(address(market2), type(uint256).max);
        uint256 leaseId = market2.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
        vm.stopPrank();
        vm.prank(nodeKey);
        market2.acceptLease(leaseId);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_FailoverNotAllowed.selector, leaseId));
        market2.failover(leaseId);
    }

    function test_RevertWhen_NotAtFault() external {
        uint256 leaseId = acceptedLease();
        setPolicy(leaseId, true);
        // Within the first-attestation window.
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotAtFault.selector, leaseId));
        market.failover(leaseId);
        // Pending within the verification window.
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotAtFault.selector, leaseId));
        market.failover(leaseId);
        // Verified and fresh.
        confirmReport(leaseId, REPORT_HASH, true);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotAtFault.selector, leaseId));
        market.failover(leaseId);
        // Challenged, still within the challenge window.
        vm.prank(renter);
        market.challenge(leaseId);
        vm.warp(block.timestamp + attestations.CHALLENGE_WINDOW());
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotAtFault.selector, leaseId));
        market.failover(leaseId);
    }

    function test_RevertWhen_DepositUsedUp() external {
        uint256 leaseId = smallAttestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        // Used up is no fault (the close is EXHAUSTED): nothing to move.
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotAtFault.selector, leaseId));
        market.failover(leaseId);
    }

    function test_RevertWhen_UndecidedButExcused() external {
        uint256 leaseId = expiredLease();
        // A re-attestation that an allowed verifier approved but the quorum (2) never decided is excused.
        vm.prank(admin);
        attestations.setQuorum(2);
        submitReport(leaseId, REPORT_2);
        vm.prank(verifier);
        attestations.confirm(leaseId, REPORT_2, true);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotAtFault.selector, leaseId));
        market.failover(leaseId);
    }

    // ------------------------------------------------------------------ reason 1

    function test_FirstAttestationMissed_SlashesBond_KeepsEscrow() external {
        uint256 leaseId = acceptedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        uint256 stakeBefore = nodes.getNode(nodeKey).stake;
        uint256 balance = token.balanceOf(address(market));
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 1);
        market.failover(leaseId);
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "open again");
        assertEq(lease.nodeKey, address(0), "no node");
        assertEq(lease.deposit, DEPOSIT, "the whole escrow stays");
        assertEq(lease.claimed, 0, "nothing claimed");
        assertEq(lease.bond, 0, "no bond");
        assertEq(nodes.getNode(nodeKey).stake, stakeBefore - bondOf(), "bond slashed");
        assertEq(market.bondedStake(nodeKey), 0, "bond no longer locked");
        NodeUsage memory usage = market.nodeUsage(nodeKey);
        assertEq(usage.vcpu, 0, "capacity freed");
        assertTrue(market.declinedBy(leaseId, nodeKey), "never again for this node");
        assertEq(market.failovers(leaseId), 1, "counted");
        assertEq(token.balanceOf(address(market)), balance, "escrow stays in the market");
        assertEq(market.credits(operator), 0, "nothing earned");
        // The renter can still close with the full refund.
        vm.prank(renter);
        assertEq(market.closeLease(leaseId), DEPOSIT, "full refund");
    }

    function test_FirstAttestationUndecided_IsReasonOne() external {
        uint256 leaseId = acceptedLease();
        setPolicy(leaseId, true);
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 1);
        market.failover(leaseId);
    }

    // ------------------------------------------------------------------ reason 2

    function test_Expired_PaysUpToTheFault_RecordsMiss_FreesBond() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + 1000);
        vm.prank(operator);
        market.claim(leaseId);
        vm.warp(block.timestamp + 3 * REATTEST_INTERVAL);
        uint256 earned = uint256(REATTEST_INTERVAL) * rate();
        uint256 stakeBefore = nodes.getNode(nodeKey).stake;
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 2);
        market.failover(leaseId);
        Lease memory lease = market.getLease(leaseId);
        assertEq(lease.deposit, DEPOSIT - earned, "the escrow keeps the unearned rest");
        assertEq(lease.claimed, 0, "claimed restarts");
        assertEq(market.credits(operator), earned - 1000 * rate(), "the unclaimed earnings to the operator");
        assertEq(nodes.getNode(nodeKey).stake, stakeBefore, "no slash");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "a miss");
        assertEq(market.bondedStake(nodeKey), 0, "bond freed");
        Segment memory segment = market.segmentOf(leaseId, nodeKey);
        assertEq(segment.earned, earned, "segment earned");
        assertEq(segment.ratePerSecond, rate(), "segment rate");
        assertEq(segment.bond, bondOf(), "segment bond");
        // The old node cannot claim nor submit any more.
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotOperator.selector, leaseId, operator, address(0)));
        vm.prank(operator);
        market.claim(leaseId);
        uint256 nonce = attestations.attestationNonce(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_LeaseNotActive.selector, leaseId));
        vm.prank(nodeKey);
        attestations.submit(leaseId, nonce, REPORT_2, measurement, TCB, CHIP_ID_HASH, SIGNER);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_DeclinedBefore.selector, leaseId, nodeKey));
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_ChallengeUnanswered_PaysOnlyUpToTheChallenge() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + 2000);
        vm.prank(renter);
        market.challenge(leaseId);
        vm.warp(block.timestamp + attestations.CHALLENGE_WINDOW() + 1);
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 2);
        market.failover(leaseId);
        assertEq(market.credits(operator), 2000 * rate(), "paid up to the challenge, nothing after");
        assertEq(market.getLease(leaseId).deposit, DEPOSIT - 2000 * rate(), "the rest stays");
    }

    /// @dev Attack: reporting the missed first attestation (anyone) cannot end a lease whose renter wants
    /// it to survive its node: it fails over instead.
    function test_ReportMissedAttestation_FailsOverWhenAllowed() external {
        uint256 leaseId = acceptedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 1);
        vm.prank(stranger);
        market.reportMissedAttestation(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "moved, not closed");
        assertEq(market.getLease(leaseId).deposit, DEPOSIT, "whole escrow kept");
    }

    /// @dev Attack: the node at fault exits to end the lease instead of letting it move: it moves anyway.
    function test_ExitAtFault_FailsOverWhenAllowed() external {
        uint256 leaseId = expiredLease();
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 2);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "moved, not closed");
        assertEq(market.credits(operator), uint256(REATTEST_INTERVAL) * rate(), "paid up to the fault");
        // After a missed first attestation too.
        uint256 second = acceptedLeaseOf(nodeKey2);
        setPolicyAgain(second);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(second, nodeKey2, 1);
        vm.prank(nodeKey2);
        market.exitLease(second);
    }

    /// @dev Attack: a healthy node's voluntary exit must not end a lease its renter wants to survive its
    /// node (the close tells the key holders to delete the shares: the renter's data would go with it, at
    /// no cost to the node). It moves instead (reason 3): paid up to now, bond freed, no miss recorded.
    function test_ExitWithoutFault_FailsOverWhenAllowed() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + 100);
        uint256 deposit = market.getLease(leaseId).deposit;
        uint256 earnedNow = market.earned(leaseId);
        uint256 claimedBefore = market.getLease(leaseId).claimed;
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 3);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "moved, not closed");
        assertEq(market.failovers(leaseId), 1, "one failover");
        assertEq(lease.deposit, deposit - earnedNow, "the rest stays in escrow");
        assertEq(market.credits(operator), earnedNow - claimedBefore, "paid up to the exit");
        assertEq(market.nodeUsage(nodeKey).bonded, 0, "bond freed");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 0, "no miss: it was not at fault");
        assertTrue(market.declinedBy(leaseId, nodeKey), "never again for this node key");
        assertFalse(attestations.isAttested(leaseId, measurement), "not attested until the next node");
        // The renter can still close and recover the rest.
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        market.closeLease(leaseId);
        assertEq(token.balanceOf(renter) - before, deposit - earnedNow, "rest refunded");
    }

    /// @dev Without a failover policy a healthy node's exit closes as before.
    function test_ExitWithoutFault_ClosesWithoutPolicy() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, false);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.NODE_EXIT), "closed");
        assertEq(market.failovers(leaseId), 0, "no failover");
    }

    /// @dev An exhausted lease is not moved by its node's exit: it closes EXHAUSTED (nothing left to move).
    function test_ExitWhenExhausted_Closes() external {
        registerAndStake();
        uint128 small = uint128(rate() * 100);
        vm.prank(renter);
        uint256 leaseId = market.createLease(leaseSpec(), MAX_PRICE, small, measurement);
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + 200);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.EXHAUSTED), "closed");
        assertEq(market.failovers(leaseId), 0, "no failover");
    }

    function acceptedLeaseOf(address node) internal returns (uint256 leaseId) {
        leaseId = createLease();
        vm.prank(node);
        market.acceptLease(leaseId);
    }

    /// @dev A policy for another lease with the holders `setPolicy` registered already.
    function setPolicyAgain(uint256 leaseId) internal {
        KeyPolicy memory policy = keys.keyPolicyOf(1);
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, policy);
    }

    // ------------------------------------------------------------------ reason 4

    /// @dev The node answers a challenge of `leaseId` with `reportHash` (a re-attestation before the
    /// interval ends is taken only from a challenged lease).
    function challengedReattestation(uint256 leaseId, bytes32 reportHash) internal {
        vm.prank(renter);
        market.challenge(leaseId);
        submitReport(leaseId, reportHash);
    }

    /// @dev An attested lease (failover allowed) challenged `served` seconds after its first attestation,
    /// whose answer the verifiers reject `decidedAfter` seconds later.
    function rejectedReattestation(uint256 served, uint256 decidedAfter) internal returns (uint256 leaseId) {
        leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + served);
        challengedReattestation(leaseId, REPORT_2);
        vm.warp(block.timestamp + decidedAfter);
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 4);
        confirmReport(leaseId, REPORT_2, false);
    }

    /// @dev Attack: a node that submits a bad report must not end a lease whose renter wants it to survive
    /// its node (the close tells the key holders to delete the shares). It moves; the bond burns as on a close.
    function test_Rejected_FailsOverWhenAllowed() external {
        uint256 balance = token.balanceOf(address(market));
        uint256 leaseId = rejectedReattestation(100, 30);
        uint256 stakeBefore = STAKE;
        uint256 earned = 100 * rate();
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "moved, not closed");
        assertEq(lease.nodeKey, address(0), "no node");
        assertEq(lease.deposit, DEPOSIT - earned, "the escrow keeps all but the verified time");
        assertEq(market.credits(operator), earned, "verified time before the rejected report, none of it after");
        assertEq(market.credits(renter), 0, "nothing refunded: the escrow stays for the next node");
        assertEq(nodes.getNode(nodeKey).stake, stakeBefore - bondOf(), "bond slashed");
        assertEq(nodes.burnedStake(), bondOf(), "and burned");
        assertEq(market.bondedStake(nodeKey), 0, "bond no longer locked");
        assertEq(market.nodeUsage(nodeKey).vcpu, 0, "capacity freed");
        assertTrue(market.declinedBy(leaseId, nodeKey), "never again for this node");
        assertEq(market.failovers(leaseId), 1, "counted");
        assertEq(token.balanceOf(address(market)), balance + DEPOSIT, "nothing left the market");
        Segment memory segment = market.segmentOf(leaseId, nodeKey);
        assertEq(segment.earned, earned, "segment earned");
        assertEq(segment.bond, bondOf(), "segment bond (for a reversal)");
        assertTrue(segment.rejected, "moved by a rejection");
        assertFalse(keys.isReleasable(leaseId, measurement), "nothing released until the next node is Verified");
        // The next node takes it from a new segment.
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        submitAs(nodeKey2, leaseId, REPORT_3);
        confirmReport(leaseId, REPORT_3, true);
        assertTrue(keys.isReleasable(leaseId, measurement), "released to the next node's guest");
    }

    function test_Rejected_FirstAttestation_FailsOverWithTheWholeEscrow() external {
        uint256 leaseId = acceptedLease();
        setPolicy(leaseId, true);
        uint256 stakeBefore = nodes.getNode(nodeKey).stake;
        submitReport(leaseId, REPORT_HASH);
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 4);
        confirmReport(leaseId, REPORT_HASH, false);
        assertEq(market.getLease(leaseId).deposit, DEPOSIT, "the whole escrow stays");
        assertEq(market.credits(operator), 0, "nothing earned");
        assertEq(nodes.getNode(nodeKey).stake, stakeBefore - bondOf(), "bond slashed");
    }

    function test_Rejected_ClosesWithoutPolicy() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, false);
        vm.warp(block.timestamp + 100);
        challengedReattestation(leaseId, REPORT_2);
        confirmReport(leaseId, REPORT_2, false);
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "closed as today");
        assertEq(market.failovers(leaseId), 0, "no failover");
        assertEq(market.credits(renter), DEPOSIT - 100 * rate(), "the rest refunded");
    }

    /// @dev A used-up deposit has nothing to move: the rejection closes the lease.
    function test_Rejected_WhenExhausted_Closes() external {
        uint256 leaseId = smallAttestedLease();
        vm.warp(block.timestamp + 200);
        challengedReattestation(leaseId, REPORT_2);
        confirmReport(leaseId, REPORT_2, false);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "closed");
        assertEq(market.failovers(leaseId), 0, "no failover");
    }

    /// @dev A false rejection that moved the lease: the old node's bond comes back and its time from the
    /// rejected submission to the move is paid (from the renter's credit, the rest by the court), to the
    /// old node's operator; the lease and its new node are untouched.
    function test_RejectedOverturnedAfterFailover_BondBackAndTimePaid() external {
        uint256 leaseId = rejectedReattestation(100, 40);
        uint256 stakeAfterSlash = nodes.getNode(nodeKey).stake;
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        submitAs(nodeKey2, leaseId, REPORT_3);
        confirmReport(leaseId, REPORT_3, true);
        // The renter holds credit (another lease, without a policy, rejected on the second node).
        uint256 other = createLease();
        vm.prank(nodeKey2);
        market.acceptLease(other);
        submitAs(nodeKey2, other, REPORT_HASH);
        confirmReport(other, REPORT_HASH, false);
        uint256 renterCredit = market.credits(renter);
        assertEq(renterCredit, DEPOSIT, "refunded in full");
        uint256 operatorCredit = market.credits(operator);
        Lease memory before = market.getLease(leaseId);

        vm.expectEmit(address(market));
        emit ILeaseMarket.VerdictReversed(leaseId, false);
        vm.prank(address(court));
        (bool overturned,, uint256 unpaid, address paidTo) = attestations.resolveDispute(leaseId, REPORT_2, stranger, true);
        assertTrue(overturned, "overturned");
        assertEq(unpaid, 0, "the renter's credit covered it");
        assertEq(paidTo, operator, "the old node's operator, not the current one");
        assertEq(nodes.getNode(nodeKey).stake, stakeAfterSlash + bondOf(), "its bond back");
        assertEq(market.credits(operator) - operatorCredit, 40 * rate(), "its 40 s until the move");
        assertEq(renterCredit - market.credits(renter), 40 * rate(), "paid by the renter, who had that service");
        Segment memory segment = market.segmentOf(leaseId, nodeKey);
        assertFalse(segment.rejected, "given back once");
        assertEq(segment.earned, 140 * rate(), "its earnings include the reversed time");
        Lease memory afterwards = market.getLease(leaseId);
        assertEq(afterwards.nodeKey, nodeKey2, "the lease goes on with its current node");
        assertEq(afterwards.deposit, before.deposit, "escrow untouched");
        assertTrue(attestations.isAttested(leaseId, measurement), "still attested");
        vm.prank(address(court));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, REPORT_2));
        attestations.resolveDispute(leaseId, REPORT_2, stranger, true);
    }

    /// @dev Without credit the renter pays nothing: the court is told what is unpaid and to whom.
    function test_RejectedOverturnedAfterFailover_UnpaidToTheOldOperator() external {
        uint256 leaseId = rejectedReattestation(100, 40);
        vm.prank(address(court));
        (bool overturned,, uint256 unpaid, address paidTo) = attestations.resolveDispute(leaseId, REPORT_2, stranger, true);
        assertTrue(overturned, "overturned");
        assertEq(unpaid, 40 * rate(), "all of it unpaid");
        assertEq(paidTo, operator, "to the old node's operator");
        assertEq(market.credits(operator), 100 * rate(), "only the verified time from the market");
    }

    /// @dev Attack: a node whose earlier Verified verdict is found false cannot get its bond back by then
    /// having its later rejection overturned: it was at fault, the bond stays burned (once), in either order.
    function test_EarlierVerifiedOverturned_TheRejectionGivesNothingBack() external {
        uint256 leaseId = rejectedReattestation(100, 40);
        uint256 stake = STAKE;
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertEq(nodes.getNode(nodeKey).stake, stake - bondOf(), "slashed once");
        assertFalse(market.segmentOf(leaseId, nodeKey).rejected, "the rejection settled with it");
        vm.prank(address(court));
        (bool overturned,, uint256 unpaid, address paidTo) = attestations.resolveDispute(leaseId, REPORT_2, stranger, true);
        assertTrue(overturned, "the verdict itself was false (its voters answer for it)");
        assertEq(unpaid, 0, "nothing owed");
        assertEq(paidTo, address(0), "to nobody");
        assertEq(nodes.getNode(nodeKey).stake, stake - bondOf(), "the bond stays burned");
    }

    function test_RejectionOverturnedFirst_ThenEarlierVerified_SlashesTheRestoredBond() external {
        uint256 leaseId = rejectedReattestation(100, 40);
        uint256 stake = STAKE;
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_2, stranger, true);
        assertEq(nodes.getNode(nodeKey).stake, stake, "bond back");
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertEq(nodes.getNode(nodeKey).stake, stake - bondOf(), "slashed for the false Verified, once");
    }

    // ------------------------------------------------------------------ the new segment

    function test_NewNode_NewSegment_NonceKeepsCounting() external {
        uint256 leaseId = expiredLease();
        uint256 oldNonce = attestations.attestationNonce(leaseId);
        market.failover(leaseId);
        assertFalse(attestations.isAttested(leaseId, measurement), "not attested after the failover");
        assertFalse(attestations.isAttestedFinal(leaseId, measurement), "nor final");
        assertEq(uint256(attestations.attestationOf(leaseId).status), 0, "no attestation in the new segment");
        assertEq(attestations.signerOf(leaseId), address(0), "no signer");
        assertEq(attestations.attestedSignerOf(leaseId), address(0), "no attested signer");
        AttestationProgress memory progress = attestations.progressOf(leaseId);
        assertEq(progress.nonce, 0, "nothing in this segment");
        assertEq(progress.verifiedSeconds, 0, "nothing banked");
        assertEq(attestations.attestationNonce(leaseId), oldNonce, "the nonce keeps counting");

        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        // A stale nonce (a replayed old report) is refused.
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_StaleNonce.selector, leaseId, 0, oldNonce)
        );
        vm.prank(nodeKey2);
        attestations.submit(leaseId, 0, REPORT_2, measurement, TCB, CHIP_ID_HASH, SIGNER);
        // The old node cannot submit for the new node.
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_NotLeaseNode.selector, leaseId, nodeKey, nodeKey2)
        );
        vm.prank(nodeKey);
        attestations.submit(leaseId, oldNonce, REPORT_2, measurement, TCB, CHIP_ID_HASH, SIGNER);
        submitAs(nodeKey2, leaseId, REPORT_2);
        assertFalse(attestations.isAttested(leaseId, measurement), "pending: no seamless carry-over");
        assertEq(attestations.progressOf(leaseId).nonce, 1, "first of the segment");
        confirmReport(leaseId, REPORT_2, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "attested by the new node");
        assertTrue(keys.isReleasable(leaseId, measurement), "the holders may release to the new guest");
        vm.warp(block.timestamp + 100);
        assertEq(market.earned(leaseId), 100 * rate(), "the new node earns from its own submission");
        uint256 before = token.balanceOf(operator2);
        vm.prank(operator2);
        market.claim(leaseId);
        assertEq(token.balanceOf(operator2) - before, 100 * rate(), "claimed by the new operator");
        uint256 escrow = market.getLease(leaseId).deposit;
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, escrow - 100 * rate(), "the renter gets the rest");
    }

    function test_NewNode_MissesFirstAttestation_IsSlashedAsFirst() external {
        uint256 leaseId = expiredLease();
        market.failover(leaseId);
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        uint256 stake2 = nodes.getNode(nodeKey2).stake;
        // Its first attestation in the segment is missed: slashed, and the lease moves on again.
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey2, 1);
        market.reportMissedAttestation(leaseId);
        assertEq(nodes.getNode(nodeKey2).stake, stake2 - bondOf(), "slashed");
        assertEq(market.failovers(leaseId), 2, "moved again");
        // Forbidden from now on: the same fault of a third node ends the lease as today.
        address nodeKey3 = makeAddr("nodeKey3");
        vm.startPrank(operator2);
        nodes.register(nodeKey3, nodeSpec(), "", signNodeConsent(address(nodes), makeKey("nodeKey3"), operator2));
        nodes.stake(nodeKey3, STAKE);
        vm.stopPrank();
        vm.prank(renter);
        keys.setFailover(leaseId, false);
        vm.prank(nodeKey3);
        market.acceptLease(leaseId);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        market.reportMissedAttestation(leaseId);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "missed");
    }

    function test_NewNode_CanDecline_SecondFailover() external {
        uint256 leaseId = expiredLease();
        market.failover(leaseId);
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        // Nothing submitted in this segment: the new node may decline (the old nonce does not count).
        vm.prank(nodeKey2);
        market.declineLease(leaseId);
        vm.prank(nodeKey2);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_DeclinedBefore.selector, leaseId, nodeKey2));
        market.acceptLease(leaseId);
        assertEq(market.failovers(leaseId), 1, "a decline is no failover");
    }

    function test_TwoFailovers_EscrowConserved() external {
        uint256 leaseId = expiredLease();
        uint256 first = uint256(REATTEST_INTERVAL) * rate();
        market.failover(leaseId);
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        submitAs(nodeKey2, leaseId, REPORT_2);
        confirmReport(leaseId, REPORT_2, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL + 5);
        market.failover(leaseId);
        assertEq(market.failovers(leaseId), 2, "two");
        assertEq(market.credits(operator2), first, "the second node paid its interval");
        assertEq(market.getLease(leaseId).deposit, DEPOSIT - 2 * first, "escrow = deposit - both");
        assertEq(token.balanceOf(address(market)), DEPOSIT, "nothing left the market yet");
        vm.prank(renter);
        assertEq(market.closeLease(leaseId), DEPOSIT - 2 * first, "refund of the rest");
    }

    // ------------------------------------------------------------------ disputes across a failover

    function test_OldSegmentOverturned_OnlyTheOldNodePays() external {
        uint256 leaseId = expiredLease();
        uint256 earned = uint256(REATTEST_INTERVAL) * rate();
        market.failover(leaseId);
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        submitAs(nodeKey2, leaseId, REPORT_2);
        confirmReport(leaseId, REPORT_2, true);
        Lease memory before = market.getLease(leaseId);
        uint256 stake1 = nodes.getNode(nodeKey).stake;
        uint256 stake2 = nodes.getNode(nodeKey2).stake;
        uint256 renterCredit = market.credits(renter);
        // The old node's verdict is found false (within its dispute window).
        vm.expectEmit(address(market));
        emit ILeaseMarket.VerdictReversed(leaseId, true);
        vm.prank(address(court));
        (bool overturned,,,) = attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertTrue(overturned, "overturned");
        assertEq(nodes.getNode(nodeKey).stake, stake1 - bondOf(), "the old node's bond is slashed");
        assertEq(market.credits(renter) - renterCredit, earned, "the renter gets back what it paid for the false time");
        assertEq(market.segmentOf(leaseId, nodeKey).earned, 0, "its earnings cut");
        assertEq(market.segmentOf(leaseId, nodeKey).bond, 0, "slashed once");
        Lease memory afterwards = market.getLease(leaseId);
        assertEq(uint256(afterwards.status), uint256(LeaseStatus.ACTIVE), "the lease goes on");
        assertEq(afterwards.nodeKey, nodeKey2, "with its current node");
        assertEq(afterwards.deposit, before.deposit, "escrow untouched");
        assertEq(nodes.getNode(nodeKey2).stake, stake2, "the current node is not hurt");
        assertTrue(attestations.isAttested(leaseId, measurement), "still attested");
        assertTrue(earned < bondOf(), "(within the bond here)");
        // A second dispute of the same segment slashes nothing more.
        vm.prank(address(court));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, REPORT_HASH));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
    }

    /// @dev Attack: a forged report that colluding voters verified must not end a lease whose renter wants
    /// it to survive its node either (the close would make the holders delete the shares): the dispute moves
    /// it, with the current node's bond, and leaves the earlier segment's verdicts to their own disputes.
    function test_CurrentSegmentOverturned_MovesAgainWithTheCurrentNodesBond() external {
        uint256 leaseId = expiredLease();
        market.failover(leaseId);
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        submitAs(nodeKey2, leaseId, REPORT_2);
        confirmReport(leaseId, REPORT_2, true);
        vm.warp(block.timestamp + 100);
        uint256 escrow = market.getLease(leaseId).deposit;
        uint256 stake1 = nodes.getNode(nodeKey).stake;
        uint256 stake2 = nodes.getNode(nodeKey2).stake;
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey2, 5);
        vm.prank(address(court));
        (bool overturned,,,) = attestations.resolveDispute(leaseId, REPORT_2, stranger, false);
        assertTrue(overturned, "overturned");
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "moved again, not closed");
        assertEq(lease.deposit, escrow, "nothing of the false segment earned: the escrow stays whole");
        assertEq(market.credits(renter), 0, "nothing refunded: it stays for the next node");
        assertEq(market.credits(operator2), 0, "the false segment unpaid");
        assertEq(nodes.getNode(nodeKey).stake, stake1, "the old node is not touched");
        assertEq(nodes.getNode(nodeKey2).stake, stake2 - bondOf(), "the current node's bond taken");
        assertEq(market.bondedStake(nodeKey2), 0, "and no longer locked");
        assertTrue(market.declinedBy(leaseId, nodeKey2), "never again for this node");
        assertEq(market.failovers(leaseId), 2, "counted");
        assertFalse(keys.isReleasable(leaseId, measurement), "nothing released until the next node is Verified");
        assertFalse(attestations.isAttested(leaseId, measurement), "not attested");
        // The first segment's verdict is its own: still disputable after the second segment's reversal.
        vm.prank(address(court));
        (overturned,,,) = attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertTrue(overturned, "the first node's verdict disputed on its own");
        assertEq(nodes.getNode(nodeKey).stake, stake1 - bondOf(), "its bond slashed");
    }

    // ------------------------------------------------------------------ reason 5

    /// @dev An attested lease (failover allowed) challenged 100 s after its first attestation, whose answer
    /// REPORT_2 is verified, then claimed up to 50 s later: 150 s claimed, 100 s of it before REPORT_2.
    function verifiedThenClaimed() internal returns (uint256 leaseId) {
        leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + 100);
        challengedReattestation(leaseId, REPORT_2);
        confirmReport(leaseId, REPORT_2, true);
        vm.warp(block.timestamp + 50);
        vm.prank(operator);
        market.claim(leaseId);
    }

    /// @dev A dispute finds the current node's Verified verdict false: the lease moves (reason 5) rather
    /// than ending; the node keeps only the time verified before the false report; what its operator claimed
    /// beyond that leaves the escrow and comes back to the renter out of the bond, as a close would pay it.
    function test_VerdictOverturned_FailsOverWhenAllowed() external {
        uint256 leaseId = verifiedThenClaimed();
        uint256 claimed = 150 * rate();
        uint256 kept = 100 * rate();
        uint256 balance = token.balanceOf(address(market));
        assertEq(balance, DEPOSIT - claimed, "claimed");
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey, 5);
        vm.expectEmit(address(market));
        emit ILeaseMarket.VerdictReversed(leaseId, true);
        vm.prank(address(court));
        (bool overturned,,,) = attestations.resolveDispute(leaseId, REPORT_2, stranger, false);
        assertTrue(overturned, "overturned");
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "moved, not closed");
        assertEq(lease.nodeKey, address(0), "no node");
        assertEq(lease.deposit, DEPOSIT - claimed, "the escrow keeps all but what was claimed");
        assertEq(market.credits(renter), claimed - kept, "the overclaim back to the renter, out of the bond");
        assertEq(market.credits(operator), 0, "nothing more to the operator");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - bondOf(), "bond slashed");
        assertEq(market.bondedStake(nodeKey), 0, "no longer locked");
        assertEq(market.nodeUsage(nodeKey).vcpu, 0, "capacity freed");
        assertTrue(market.declinedBy(leaseId, nodeKey), "never again for this node");
        assertEq(token.balanceOf(address(market)), balance + claimed - kept, "the compensation came in");
        Segment memory segment = market.segmentOf(leaseId, nodeKey);
        assertEq(segment.earned, kept, "segment earned: the verified time before the false report");
        assertTrue(segment.rejected, "its bond is gone (slashed once)");
        AttestationProgress memory progress = attestations.progressOf(leaseId);
        assertEq(progress.nonce, 0, "a new segment");
        // The reversed report stays settled; the next node's segment is not.
        vm.prank(address(court));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, REPORT_2));
        attestations.resolveDispute(leaseId, REPORT_2, stranger, false);
        vm.prank(nodeKey2);
        market.acceptLease(leaseId);
        submitAs(nodeKey2, leaseId, REPORT_3);
        confirmReport(leaseId, REPORT_3, true);
        assertTrue(keys.isReleasable(leaseId, measurement), "released to the next node's guest");
        assertEq(attestations.submissionOf(leaseId, REPORT_3).disputed, false, "the next node's verdict is open");
        vm.expectEmit(address(market));
        emit ILeaseMarket.LeaseFailedOver(leaseId, nodeKey2, 5);
        vm.prank(address(court));
        (overturned,,,) = attestations.resolveDispute(leaseId, REPORT_3, stranger, false);
        assertTrue(overturned, "and disputable: found false, it moves the lease again");
        assertEq(market.getLease(leaseId).deposit, DEPOSIT - claimed, "still whole for the third node");
    }

    /// @dev Without a failover policy the lease ends as before.
    function test_VerdictOverturned_ClosesWithoutPolicy() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, false);
        vm.warp(block.timestamp + 100);
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "closed");
        assertEq(market.credits(renter), DEPOSIT, "all refunded");
        assertEq(market.failovers(leaseId), 0, "no failover");
    }

    /// @dev With the deposit used up (all of it claimed) there is nothing to move: it closes.
    function test_VerdictOverturned_ClosesWhenExhausted() external {
        uint256 small = smallAttestedLease();
        vm.warp(block.timestamp + 200);
        vm.prank(operator);
        market.claim(small);
        vm.prank(address(court));
        attestations.resolveDispute(small, REPORT_HASH, stranger, false);
        assertEq(uint256(market.getLease(small).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "closed");
        assertEq(market.failovers(small), 0, "nothing left to move");
    }

    /// @dev An attested lease the node's own operator rents, with a policy allowing failover.
    function ownAttestedLease() internal returns (uint256 leaseId) {
        token.mint(operator, DEPOSIT);
        vm.prank(operator);
        token.approve(address(market), type(uint256).max);
        registerAndStake();
        vm.prank(operator);
        leaseId = market.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        address[] memory holders = new address[](1);
        holders[0] = stakedHolder("own-holder");
        bytes[] memory measurements = new bytes[](1);
        measurements[0] = measurement;
        vm.prank(operator);
        keys.setKeyPolicy(leaseId, KeyPolicy(measurements, true, 1, holders, 1, keccak256("own")));
    }

    /// @dev Attack: an operator renting its own node gains nothing from its own forged
    /// verdict being found false: no compensation out of its bond, the bond burned.
    function test_VerdictOverturned_OperatorIsRenter_NoCompensation() external {
        uint256 leaseId = ownAttestedLease();
        vm.warp(block.timestamp + 100);
        vm.prank(operator);
        market.claim(leaseId);
        uint256 burned = nodes.burnedStake();
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertEq(market.failovers(leaseId), 1, "moved");
        assertEq(market.credits(operator), 0, "no compensation to itself");
        assertEq(market.getLease(leaseId).deposit, DEPOSIT - 100 * rate(), "its claim left the escrow");
        assertEq(nodes.burnedStake(), burned + bondOf(), "the whole bond burned");
    }

    /// @dev Attack: an operator renting its own node gets nothing out of a failover or a later overturn.
    function test_OperatorIsRenter_NoProfit() external {
        uint256 leaseId = ownAttestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        uint256 earned = uint256(REATTEST_INTERVAL) * rate();
        uint256 stake = nodes.getNode(nodeKey).stake;
        market.failover(leaseId);
        assertEq(market.credits(operator), earned, "only what it earned as a node");
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, false);
        assertEq(nodes.getNode(nodeKey).stake, stake - bondOf(), "the bond is burned");
        assertEq(market.credits(operator), earned, "no compensation to itself");
    }

    /// @dev Attack: a node failing at the worst moment (lots earned, nothing claimed) gets exactly what it
    /// earned up to its fault, once: not a second more, and never again through claim.
    function test_FailJustBeforeClaim_PaidOnceUpToTheFault() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL - 1);
        uint256 claimableBefore = market.claimable(leaseId);
        vm.warp(block.timestamp + 1 days);
        market.failover(leaseId);
        uint256 earned = uint256(REATTEST_INTERVAL) * rate();
        assertEq(market.credits(operator), earned, "its interval, nothing after the expiry");
        assertEq(earned - claimableBefore, rate(), "one more second than before the expiry");
        assertEq(market.claimable(leaseId), 0, "nothing claimable on the open lease");
        vm.prank(operator);
        assertEq(market.withdraw(), earned, "withdrawn once");
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NothingToWithdraw.selector, operator));
        market.withdraw();
    }

    /// @dev Attack: the renter changes the policy mid-lease. Forbidding failover after the fault makes the
    /// lease end as today; allowing it again lets it move. Only the renter can do either.
    function test_RenterChangesPolicyMidLease() external {
        uint256 leaseId = expiredLease();
        vm.prank(renter);
        keys.setFailover(leaseId, false);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_FailoverNotAllowed.selector, leaseId));
        market.failover(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NotRenter.selector, leaseId, nodeKey, renter));
        vm.prank(nodeKey);
        keys.setFailover(leaseId, true);
        vm.prank(renter);
        keys.setFailover(leaseId, true);
        market.failover(leaseId);
        // The policy survives the failover: the renter can still change it while the lease is open.
        vm.prank(renter);
        keys.setFailover(leaseId, false);
        assertFalse(keys.failoverAllowed(leaseId), "forbidden from now on");
    }

    // ------------------------------------------------------------------ hooks and admin

    function test_RevertWhen_HooksCalledByOthers() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CallerNotAttestationRegistry.selector, stranger));
        vm.prank(stranger);
        market.onSegmentOverturned(1, nodeKey, 0);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_CallerNotLeaseMarket.selector, stranger));
        vm.prank(stranger);
        attestations.onFailover(1, nodeKey);
    }

    function test_SetKeyService_OwnerOnlyOnce() external {
        assertEq(address(market.keyService()), address(keys), "set at deployment");
        vm.prank(admin);
        vm.expectRevert(Errors.LeaseMarket_KeyServiceAlreadySet.selector);
        market.setKeyService(IKeyService(address(1)));
        LeaseMarket fresh = new LeaseMarket(token, INodeRegistry(address(nodes)), attestations, admin, ATTESTATION_WINDOW);
        vm.prank(stranger);
        vm.expectRevert();
        fresh.setKeyService(keys);
        vm.prank(admin);
        vm.expectRevert(Errors.LeaseMarket_KeyServiceAlreadySet.selector);
        fresh.setKeyService(IKeyService(address(0)));
        vm.expectEmit(address(fresh));
        emit ILeaseMarket.KeyServiceSet(address(keys));
        vm.prank(admin);
        fresh.setKeyService(keys);
    }
}
