// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationRegistry} from "../../src/AttestationRegistry.sol";
import {LeaseMarket} from "../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../src/libraries/Errors.sol";
import {CloseReason, Lease, LeaseSpec, LeaseStatus} from "../../src/types/DataTypes.sol";
import {Base} from "../Base.t.sol";
import {FeeOnTransferToken} from "../mocks/FeeOnTransferToken.sol";

/// @notice The attacks of issue 10, one test each, named after the scenario. Every one of them
/// succeeded against the contracts before the fix; each test asserts the attack now fails or
/// does not pay.
contract Issue10Scenarios_Test is Base {
    uint256 private constant BOND = MIN_STAKE * SLASH_BPS / 10_000;

    // ------------------------------------------------------------------ helpers

    function _leaseFrom(address who, uint128 deposit) private returns (uint256 leaseId) {
        token.mint(who, deposit);
        vm.prank(who);
        token.approve(address(market), type(uint256).max);
        vm.prank(who);
        leaseId = market.createLease(leaseSpec(), MAX_PRICE, deposit, measurement);
    }

    function _accept(uint256 leaseId) private {
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function _reason(uint256 leaseId) private view returns (CloseReason) {
        return market.getLease(leaseId).closeReason;
    }

    // ------------------------------------------------------------------ 1

    /// Self-slash as a fast exit: the operator rents its own node with 1-wei leases, lets them miss
    /// and reports them. The slashed bonds are burned, so nothing comes back to the operator-renter
    /// before the unbonding delay; an honest renter's own bond stays intact for its rejection.
    function test_Scenario01_SelfSlashIsNotAFastExit() external {
        registerAndStake();
        // An honest renter's lease, attested and served for a while.
        uint256 honest = createLease();
        _accept(honest);
        submitReport(honest, REPORT_HASH);
        confirmReport(honest, REPORT_HASH, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);

        uint256 operatorBefore = token.balanceOf(operator);
        uint256[] memory own = new uint256[](5);
        for (uint256 i; i < own.length; ++i) {
            own[i] = _leaseFrom(operator, 1);
            _accept(own[i]);
        }
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        for (uint256 i; i < own.length; ++i) {
            market.reportMissedAttestation(own[i]);
        }
        vm.prank(operator);
        market.withdraw();
        // 5 wei deposited, 5 wei refunded: the slash paid the operator-renter nothing.
        // Its 5 wei of deposits came back, and nothing else.
        assertEq(token.balanceOf(operator), operatorBefore + own.length, "no stake comes back through a self-slash");
        assertEq(nodes.burnedStake(), 5 * BOND, "the self-slashed bonds are burned");

        // The genuine rejection still finds the honest lease's bond, fixed at accept.
        bytes32 second = keccak256("report-2");
        submitReport(honest, second);
        confirmReport(honest, second, false);
        uint256 earned = (REATTEST_INTERVAL / 2 + ATTESTATION_WINDOW + 1) * rate();
        assertEq(market.credits(renter), DEPOSIT - earned, "honest renter refunded the unearned rest");
        assertEq(nodes.burnedStake(), 6 * BOND, "its bond burned too, none of it paid out");
    }

    // ------------------------------------------------------------------ 2

    /// Impossible-measurement griefing: a 1-wei lease asks for a measurement no image produces. The
    /// node cannot attest it, declines before the deadline without penalty and the lease goes back
    /// to the market; and a renter who waits for the miss gets its deposit back, not the stake.
    function test_Scenario02_ImpossibleMeasurementCannotDrainANode() external {
        registerAndStake();
        bytes memory impossible = abi.encodePacked(bytes32(0), bytes16(0));
        vm.prank(renter);
        uint256 leaseId = market.createLease(leaseSpec(), MAX_PRICE, 1, impossible);
        _accept(leaseId);
        // The node's truthful report carries the measurement its image really produces.
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_MeasurementMismatch.selector, leaseId));
        vm.prank(nodeKey);
        attestations.submit(leaseId, 0, REPORT_HASH, measurement, TCB, CHIP_ID_HASH, SIGNER);
        vm.prank(nodeKey);
        market.declineLease(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "back on the market");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no penalty for declining");
        assertEq(market.bondedStake(nodeKey), 0, "bond freed");

        // Even if a node does not decline, the renter earns nothing from the miss.
        vm.prank(renter);
        uint256 other = market.createLease(leaseSpec(), MAX_PRICE, 1, impossible);
        _accept(other);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        vm.prank(renter);
        market.reportMissedAttestation(other);
        assertEq(market.credits(renter), 1, "the renter gets its 1 wei back, not 10% of the stake");
    }

    // ------------------------------------------------------------------ 3

    /// Exit after the deadline: a node that accepted and never attested cannot walk away with its
    /// stake by exiting (or front-running the report) after the attestation deadline.
    function test_Scenario03_ExitAfterDeadlineIsAMissedAttestation() external {
        uint256 leaseId = acceptedLease();
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        assertEq(uint256(_reason(leaseId)), uint256(CloseReason.ATTESTATION_MISSED), "missed, not exit");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "bond slashed");
    }

    // ------------------------------------------------------------------ 4

    /// Junk submission parks a lease forever: a report nobody can verify stays Pending only for the
    /// verification window; then votes are refused and it counts as missed (slashed if first).
    function test_Scenario04_JunkSubmissionTimesOut() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256("junk"));
        uint256 decideBy = block.timestamp + attestations.VERIFICATION_WINDOW();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationSubmitted.selector, leaseId));
        market.reportMissedAttestation(leaseId);
        vm.warp(decideBy + 1);
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Expired), "missed");
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_VerificationWindowPassed.selector, leaseId, decideBy)
        );
        confirmReport(leaseId, keccak256("junk"), true);
        market.reportMissedAttestation(leaseId);
        assertEq(uint256(_reason(leaseId)), uint256(CloseReason.ATTESTATION_MISSED), "closed as missed");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "bond slashed");

        // A junk re-attestation: the renter can close with the refund once the window passed.
        {
            uint256 second = createLease();
            _accept(second);
            submitReport(second, REPORT_HASH);
            confirmReport(second, REPORT_HASH, true);
            vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
            submitReport(second, keccak256("junk-2"));
            vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
            vm.prank(renter);
            market.closeLease(second);
            assertEq(uint256(_reason(second)), uint256(CloseReason.ATTESTATION_MISSED), "re-attestation missed");
            assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "counted against the node");
        }
    }

    // ------------------------------------------------------------------ 5

    /// Stake withdrawn while serving: the stake a lease bonds cannot be unstaked until it ends, so a
    /// rejection still slashes the full bond; and the unbonding delay cannot drop below the windows.
    function test_Scenario05_BondedStakeStaysWhileServing() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_StakeBonded.selector, nodeKey, STAKE, STAKE - BOND));
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, STAKE);
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, STAKE - BOND);
        vm.warp(block.timestamp + UNBONDING_DELAY);
        vm.prank(operator);
        nodes.withdrawUnstaked(nodeKey);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        confirmReport(leaseId, second, false);
        assertEq(nodes.getNode(nodeKey).stake, 0, "the bond was there to slash");
        assertEq(
            nodes.burnedStake() + market.credits(renter) - (DEPOSIT - market.getLease(leaseId).deposit),
            BOND,
            "whole bond slashed"
        );

        uint256 minDelay = market.minUnbondingDelay();
        // Past every window in which a fault is decided, and past the longest dispute of a verdict.
        assertTrue(minDelay >= ATTESTATION_WINDOW + market.MAX_REATTEST_INTERVAL() + attestations.VERIFICATION_WINDOW(), "faults");
        assertEq(minDelay, attestations.MAX_DISPUTE_WINDOW() + attestations.VERIFICATION_WINDOW(), "disputes");
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_UnbondingDelayTooShort.selector, minDelay - 1, minDelay)
        );
        vm.prank(admin);
        nodes.setUnbondingDelay(minDelay - 1);
    }

    // ------------------------------------------------------------------ 6

    /// Verifier-renter collusion: a verifier that also rents tries to reject genuine reports of its
    /// own 1-wei leases. Since issue 18 it may not vote on its own leases at all (the other verifier
    /// decides), so no bond burns.
    function test_Scenario06_ColludingVerifierRenterGainsNothing() external {
        registerAndStake();
        for (uint256 i; i < 3; ++i) {
            uint256 leaseId = _leaseFrom(verifier, 1);
            _accept(leaseId);
            bytes32 report = keccak256(abi.encode("genuine", i));
            submitReport(leaseId, report);
            vm.expectRevert(
                abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, leaseId, verifier)
            );
            confirmReport(leaseId, report, false);
            vm.prank(verifier2);
            attestations.confirm(leaseId, report, true);
        }
        assertEq(nodes.burnedStake(), 0, "no bond burned");
    }

    // ------------------------------------------------------------------ 7

    /// Retroactive parameters: shortening the attestation window or raising slashBps after accept
    /// changes nothing for that lease.
    function test_Scenario07_ParametersAreFixedAtAccept() external {
        uint256 leaseId = acceptedLease();
        vm.startPrank(admin);
        market.setAttestationWindow(1 minutes);
        nodes.setSlashBps(nodes.MAX_SLASH_BPS());
        vm.stopPrank();
        vm.warp(block.timestamp + 2 minutes);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_AttestationDeadlineNotPassed.selector,
                leaseId,
                market.getLease(leaseId).attestBy,
                block.timestamp
            )
        );
        market.reportMissedAttestation(leaseId);
        vm.warp(market.getLease(leaseId).attestBy + 1);
        market.reportMissedAttestation(leaseId);
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "slashBps of accept time, not 50%");
    }

    // ------------------------------------------------------------------ 8

    /// Accept-and-exit griefing: a node that accepts and exits in the same block only gives the
    /// lease back to the market; the matched node accepts it next, the renter does nothing.
    function test_Scenario08_AcceptAndExitReturnsTheLeaseToTheMarket() external {
        registerAndStake();
        address griefer = makeAddr("griefer");
        address grieferOperator = makeAddr("grieferOperator");
        vm.prank(grieferOperator);
        nodes.register(griefer, nodeSpec(), "", signNodeConsent(address(nodes), makeKey("griefer"), grieferOperator));
        token.mint(grieferOperator, MIN_STAKE);
        vm.startPrank(grieferOperator);
        token.approve(address(nodes), MIN_STAKE);
        nodes.stake(griefer, MIN_STAKE);
        vm.stopPrank();
        uint256 leaseId = createLease();
        vm.startPrank(griefer);
        market.acceptLease(leaseId);
        market.exitLease(leaseId);
        vm.stopPrank();
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "open again");
        assertEq(lease.deposit, DEPOSIT, "deposit untouched");
        _accept(leaseId);
        assertEq(market.getLease(leaseId).nodeKey, nodeKey, "the matched node accepts it");
    }

    // ------------------------------------------------------------------ 9

    /// Revoked verifier (issue 10, revised by issue 18): role changes apply only to attestations
    /// submitted after them, so an admin cannot undo approvals (or rejections) mid-vote. A verifier
    /// revoked after a submission keeps its vote on it; one granted after it cannot vote on it.
    function test_Scenario09_RoleChangesApplyToLaterSubmissions() external {
        address verifier3 = makeAddr("verifier3");
        bytes32 role = verifierRole();
        vm.startPrank(admin);
        attestations.setQuorum(2);
        attestations.grantRole(role, verifier3);
        vm.stopPrank();
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true); // verifier approves
        vm.prank(admin);
        attestations.revokeRole(role, verifier);
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, true);
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Verified), "both count");

        // A verifier granted after a submission cannot vote on it.
        uint256 second = createLease();
        _accept(second);
        submitReport(second, REPORT_HASH);
        address verifier4 = makeAddr("verifier4");
        vm.prank(admin);
        attestations.grantRole(role, verifier4);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, second, verifier4));
        vm.prank(verifier4);
        attestations.confirm(second, REPORT_HASH, true);
    }

    // ------------------------------------------------------------------ 10

    /// (a) Closing a used-up, unsettled lease after the attestation expired is no missed attestation.
    function test_Scenario10a_ClosingAUsedUpLeaseIsNoMiss() external {
        registerAndStake();
        uint256 leaseId = _leaseFrom(renter, uint128(rate() * 100));
        _accept(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL + 1);
        vm.prank(renter);
        market.closeLease(leaseId);
        assertEq(uint256(_reason(leaseId)), uint256(CloseReason.EXHAUSTED), "served in full");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 0, "nothing counted against the node");
    }

    /// (b) A renter closing while an attestation is Pending closes at once (issue 18); the pending
    /// time is held in escrow and paid once verified.
    function test_Scenario10b_CloseWhilePendingPaysThePendingTimeOnceVerified() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        vm.warp(block.timestamp + 500);
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, DEPOSIT - (REATTEST_INTERVAL / 2 + 500) * rate(), "the pending 500 s are held");
        confirmReport(leaseId, second, true);
        assertEq(market.earned(leaseId), (REATTEST_INTERVAL / 2 + 500) * rate(), "the pending 500 s are paid");
        assertEq(market.credits(renter), 0, "nothing more to refund");
    }

    /// (c) A top-up after the deposit ran out cannot pay for the Pending gap before it.
    function test_Scenario10c_TopUpCannotPayThePendingGap() external {
        registerAndStake();
        uint256 leaseId = _leaseFrom(renter, uint128(rate() * (REATTEST_INTERVAL / 2 + 50)));
        _accept(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        submitReport(leaseId, keccak256("report-2"));
        vm.warp(block.timestamp + 200); // pending covers 200 s, only 50 s of deposit left
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseExhausted.selector, leaseId));
        vm.prank(renter);
        market.topUp(leaseId, DEPOSIT);
    }

    /// (d) A used-up, unsettled lease is not attested.
    function test_Scenario10d_UsedUpLeaseIsNotAttested() external {
        registerAndStake();
        uint256 leaseId = _leaseFrom(renter, uint128(rate() * 100));
        _accept(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "attested while funded");
        vm.warp(block.timestamp + 100);
        assertFalse(attestations.isAttested(leaseId, measurement), "not once used up");
    }

    /// (e) Re-attestation is seamless: while the next attestation awaits the verifiers, the lease
    /// stays attested as long as the previous verified one has not expired.
    function test_Scenario10e_ReattestationIsSeamless() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL - 600);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        assertTrue(attestations.isAttested(leaseId, measurement), "no blink while pending");
        vm.warp(block.timestamp + 600);
        assertFalse(attestations.isAttested(leaseId, measurement), "previous one expired, next still pending");
        confirmReport(leaseId, second, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "verified");
    }

    // ------------------------------------------------------------------ 11

    /// Token assumptions: a fee-on-transfer token is refused, so the escrow cannot become insolvent.
    function test_Scenario11_FeeOnTransferTokenIsRefused() external {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        NodeRegistry feeNodes = new NodeRegistry(fee, admin, MIN_STAKE, UNBONDING_DELAY, SLASH_BPS);
        AttestationRegistry feeAttestations = new AttestationRegistry(admin, 1, 15 minutes);
        LeaseMarket feeMarket =
            new LeaseMarket(fee, INodeRegistry(address(feeNodes)), feeAttestations, admin, ATTESTATION_WINDOW);
        vm.startPrank(admin);
        feeNodes.setLeaseMarket(address(feeMarket));
        feeAttestations.setLeaseMarket(address(feeMarket));
        vm.stopPrank();
        fee.mint(renter, DEPOSIT);
        vm.startPrank(renter);
        fee.approve(address(feeMarket), DEPOSIT);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.LeaseMarket_TransferAmountMismatch.selector, DEPOSIT, DEPOSIT - DEPOSIT / 100)
        );
        feeMarket.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
        vm.stopPrank();
        vm.prank(operator);
        feeNodes.register(nodeKey, nodeSpec(), "", signNodeConsent(address(feeNodes), makeKey("nodeKey"), operator));
        fee.mint(operator, STAKE);
        vm.startPrank(operator);
        fee.approve(address(feeNodes), STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_TransferAmountMismatch.selector, STAKE, STAKE - STAKE / 100)
        );
        feeNodes.stake(nodeKey, STAKE);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ 12

    /// A dead node keeps earning: a challenge by the renter or a verifier stops payment at once; if
    /// no fresh attestation comes within the challenge window the renter closes with the refund and
    /// the miss counts against the node (no slash). An answering node keeps earning.
    function test_Scenario12_ChallengeStopsPayingADeadNode() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 1 hours);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NotChallenger.selector, leaseId, stranger));
        vm.prank(stranger);
        market.challenge(leaseId);
        vm.prank(renter);
        market.challenge(leaseId);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationRegistry_ChallengeTooSoon.selector,
                leaseId,
                block.timestamp + attestations.MIN_CHALLENGE_INTERVAL()
            )
        );
        vm.prank(verifier);
        market.challenge(leaseId);
        vm.warp(block.timestamp + attestations.CHALLENGE_WINDOW() + 1);
        assertEq(market.earned(leaseId), 1 hours * rate(), "payment stopped at the challenge");
        assertFalse(attestations.isAttested(leaseId, measurement), "no longer attested");
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, DEPOSIT - 1 hours * rate(), "refund from the challenge on");
        assertEq(uint256(_reason(leaseId)), uint256(CloseReason.ATTESTATION_MISSED), "a miss");
        assertEq(nodes.getNode(nodeKey).missedAttestations, 1, "on the node's record");
        assertEq(nodes.getNode(nodeKey).stake, STAKE, "no slash");

        // A live node answers within the window and keeps earning (verifier challenge).
        uint256 second = createLease();
        _accept(second);
        submitReport(second, REPORT_HASH);
        confirmReport(second, REPORT_HASH, true);
        vm.warp(block.timestamp + 1 hours);
        vm.prank(verifier);
        market.challenge(second);
        vm.warp(block.timestamp + 60);
        bytes32 fresh = keccak256("fresh");
        submitReport(second, fresh);
        confirmReport(second, fresh, true);
        vm.warp(block.timestamp + 1 hours);
        assertTrue(attestations.isAttested(second, measurement), "answered");
        assertEq(market.earned(second), 2 hours * rate(), "paid except the 60 s answer gap");
    }

    // ------------------------------------------------------------------ 13

    /// Capacity: a 64-vCPU node cannot accept 128 vCPU of leases; reattestInterval is bounded.
    function test_Scenario13_CapacityAndReattestIntervalAreChecked() external {
        registerAndStake();
        LeaseSpec memory spec = leaseSpec();
        spec.vcpu = 64;
        uint64 maxPrice = uint64(PRICE_PER_VCPU) * 64;
        vm.startPrank(renter);
        uint256 first = market.createLease(spec, maxPrice, DEPOSIT, measurement);
        uint256 second = market.createLease(spec, maxPrice, DEPOSIT, measurement);
        vm.stopPrank();
        _accept(first);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CapacityTooLow.selector, second, nodeKey));
        _accept(second);
        vm.prank(renter);
        market.closeLease(first);
        _accept(second);
        assertEq(market.nodeUsage(nodeKey).vcpu, 64, "capacity freed by the close and taken again");

        spec.vcpu = VCPU;
        spec.reattestInterval = 1;
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_InvalidReattestInterval.selector, 1));
        vm.prank(renter);
        market.createLease(spec, MAX_PRICE, DEPOSIT, measurement);
        spec.reattestInterval = type(uint32).max;
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_InvalidReattestInterval.selector, type(uint32).max));
        vm.prank(renter);
        market.createLease(spec, MAX_PRICE, DEPOSIT, measurement);
    }

    // ------------------------------------------------------------------ review fixes

    /// Verifier-renter free service: a verifier that rents lets its lease be served and verified,
    /// then rejects the node's next (genuine) report. Under the issue-10 rule it got `min(earned,
    /// bond)` back; since issue 18 it may not vote on its own lease at all.
    function test_VerifierRenterGetsNoFreeService() external {
        registerAndStake();
        uint256 leaseId = _leaseFrom(verifier, DEPOSIT);
        _accept(leaseId);
        submitReport(leaseId, REPORT_HASH);
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL - 60);
        bytes32 genuine = keccak256("genuine-2");
        submitReport(leaseId, genuine);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, leaseId, verifier));
        confirmReport(leaseId, genuine, false);
        assertEq(nodes.burnedStake(), 0, "no bond burned");
    }

    /// Self-dealing operator: the operator rents its own node, serves it honestly for a while, then
    /// submits a junk re-attestation that verifiers reject. Under the old rule it got its deposit
    /// back as refund + claim plus `min(earned, bond)` of its bonded stake at once; now the rejection
    /// returns nothing of the stake: deposit in, deposit out, the bond burned.
    function test_SelfDealingOperatorGetsNoStakeBackThroughARejection() external {
        registerAndStake();
        uint256 operatorBefore = token.balanceOf(operator);
        uint256 leaseId = _leaseFrom(operator, DEPOSIT);
        _accept(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL - 60);
        bytes32 junk = keccak256("junk");
        submitReport(leaseId, junk);
        confirmReport(leaseId, junk, false);
        vm.startPrank(operator);
        market.claim(leaseId);
        market.withdraw();
        vm.stopPrank();
        assertEq(token.balanceOf(operator), operatorBefore + DEPOSIT, "only its own deposit back");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "bond slashed");
        assertEq(nodes.burnedStake(), BOND, "and burned whole");
    }

    /// Close blocked by back-to-back re-attestations: a node re-submits the moment each verdict
    /// lands, so the lease is always Pending and its renter's close always reverts. A re-attestation
    /// before half the interval is refused (without a challenge since), so the renter closes.
    function test_NodeCannotBlockTheCloseByResubmittingAtEachVerdict() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 1);
        uint256 earliest = block.timestamp - 1 + REATTEST_INTERVAL / 2;
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_ReattestTooEarly.selector, leaseId, earliest));
        vm.prank(nodeKey);
        attestations.submit(leaseId, 1, keccak256("again"), measurement, TCB, CHIP_ID_HASH, SIGNER);
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, DEPOSIT - rate(), "closed, the verified second paid");
    }
}
