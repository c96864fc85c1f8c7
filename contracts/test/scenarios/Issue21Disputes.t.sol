// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationCourt} from "../../src/interfaces/IAttestationCourt.sol";
import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {SnpReason, SnpReportFields} from "../../src/interfaces/ISnpVerifier.sol";
import {Errors} from "../../src/libraries/Errors.sol";
import {
    Challenge,
    CloseReason,
    DisputeTerms,
    Lease,
    LeaseStatus,
    SubmissionInfo,
    VerifierStake
} from "../../src/types/DataTypes.sol";
import {Base} from "../Base.t.sol";

/// @notice Issue 21: any wrong attestation verdict can be overturned on chain by anyone with the report,
/// the money follows the truth, the wrong voters lose stake, and a dApp can ask for final attestation.
/// The EVM report check is a test double here (its answer per report is set by each test); the
/// registry-side policy (measurement, REPORT_DATA, HOST_DATA, signer, debug, VMPL) is the real one.
contract Issue21Disputes_Test is Base {
    uint256 internal constant BOND = 1e18; // the default dispute bond
    uint256 internal constant SLASH_BPS_VERIFIER = 5000; // the default voter slash
    address internal disputer;
    bytes internal guestKey;

    function setUp() public override {
        super.setUp();
        disputer = makeAddr("disputer");
        token.mint(disputer, 100e18);
        vm.prank(disputer);
        token.approve(address(court), type(uint256).max);
        // X25519 (32) || Ed25519 (32) || signer (20) || TLS SPKI hash (32)
        guestKey = abi.encodePacked(keccak256("x25519"), keccak256("ed25519"), SIGNER, keccak256("spki"));
    }

    // ------------------------------------------------------------------ helpers

    /// @dev 1184 report bytes, VCEK-signed (byte 0x48 = 0) with a CHIP_ID, distinct per seed.
    function reportBytes(string memory seed) internal pure returns (bytes memory report) {
        report = new bytes(1184);
        bytes32 fill = keccak256(bytes(seed));
        for (uint256 i; i < 1184; i += 32) {
            bytes32 word = keccak256(abi.encode(fill, i));
            for (uint256 j; j < 32 && i + j < 1184; ++j) {
                report[i + j] = word[j];
            }
        }
        report[0x48] = 0x00;
        report[0x1A0] = 0x01;
    }

    /// @dev The fields a genuine report for submission `nonce` of `leaseId` carries.
    function genuineFields(uint256 leaseId, uint256 nonce, bytes memory report)
        internal
        view
        returns (SnpReportFields memory fields)
    {
        fields.version = 3;
        fields.policy = 0x30000;
        fields.measurement = measurement;
        fields.reportData0 =
            keccak256(abi.encode("cvm.attest.v1", block.chainid, address(attestations), leaseId, nonce));
        fields.reportData1 = sha256(guestKey);
        fields.hostData = keccak256(abi.encode("cvm.host.v1", block.chainid, address(attestations), leaseId, renter));
        fields.chipId = new bytes(64);
        fields.reportedTcb = TCB;
        fields.committedTcb = TCB;
        fields.reportHash = keccak256(report);
    }

    /// @dev The node submits `report`; the EVM check finds it genuine (or forged: a bad signature).
    function submitChecked(uint256 leaseId, string memory seed, bool genuine) internal returns (bytes memory report) {
        report = reportBytes(seed);
        uint256 nonce = attestations.attestationNonce(leaseId);
        SnpReportFields memory fields = genuineFields(leaseId, nonce, report);
        snp.setAnswer(report, genuine, genuine ? 0 : uint8(SnpReason.BadSignature), fields);
        submitReport(leaseId, keccak256(report));
    }

    function certs() internal pure returns (bytes[] memory list) {
        list = new bytes[](2);
        list[0] = hex"01";
        list[1] = hex"02";
    }

    function disputeAs(address who, uint256 leaseId, bytes memory report) internal returns (bool) {
        vm.prank(who);
        return court.dispute(leaseId, keccak256(report), report, certs(), guestKey);
    }

    function stakeOf(address account) internal view returns (uint256) {
        VerifierStake memory s = court.stakeOf(account);
        return uint256(s.stake) + s.unbonding;
    }

    /// @dev Tokens the market holds = every lease's escrow + all credits (of the accounts these tests use).
    function assertMarketConserves(uint256 leaseId) internal view {
        Lease memory lease = market.getLease(leaseId);
        uint256 credits = market.credits(renter) + market.credits(operator) + market.credits(disputer);
        assertEq(token.balanceOf(address(market)), uint256(lease.deposit) - lease.claimed + credits, "escrow conserved");
    }

    /// @dev Tokens the court holds = every stake + burned.
    function assertCourtConserves() internal view {
        assertEq(
            token.balanceOf(address(court)),
            stakeOf(verifier) + stakeOf(verifier2) + stakeOf(renter) + court.burned(),
            "court balance = stakes + burned"
        );
    }

    // ------------------------------------------------------------------ the scenarios

    /// A colluding quorum verifies a report signed by a non-AMD key: anyone disputes it; the verdict is
    /// reversed (lease ends as rejected, renter refunded every second paid since, node bond slashed),
    /// the voter loses half its stake, the disputer gets its bond back and half of that.
    function test_ColludingQuorumVerifiesForgedReport_DisputedReversedSlashedRefunded() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        assertTrue(attestations.isAttested(leaseId, measurement), "the quorum's word");
        assertFalse(attestations.isAttestedFinal(leaseId, measurement), "not final while disputable");

        // The node is paid for an hour of forged service, and its operator claims it.
        vm.warp(block.timestamp + 1 hours);
        vm.prank(operator);
        uint256 claimed = market.claim(leaseId);
        assertEq(claimed, 1 hours * rate(), "an hour paid");

        uint256 nodeStakeBefore = nodes.getNode(nodeKey).stake;
        uint256 bond = market.getLease(leaseId).bond;
        uint256 voterStake = stakeOf(verifier);
        uint256 disputerBefore = token.balanceOf(disputer);

        assertTrue(disputeAs(disputer, leaseId, report), "overturned");

        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.CLOSED), "lease ended");
        assertEq(uint256(lease.closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "as rejected");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded every second paid since the forged report");
        assertEq(nodes.getNode(nodeKey).stake, nodeStakeBefore - bond, "node bond slashed");
        assertEq(nodes.burnedStake(), bond - claimed, "the bond, less the renter's compensation, burned");
        uint256 slashed = (voterStake * SLASH_BPS_VERIFIER) / 10_000;
        assertEq(stakeOf(verifier), voterStake - slashed, "the voter lost half its stake");
        assertEq(token.balanceOf(disputer), disputerBefore + slashed / 2, "bond back plus half the slash");
        assertEq(court.burned(), slashed - slashed / 2, "the rest burned");
        assertFalse(attestations.isAttested(leaseId, measurement), "no longer attested");
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Rejected), "rejected");
        assertMarketConserves(leaseId);
        assertCourtConserves();
    }

    /// A node whose forged report was verified ends its lease and starts unbonding all its stake at
    /// once: it cannot withdraw before the report's dispute window closes (the unbonding delay outlasts
    /// the longest one), so a dispute in the window's last second still takes the bond.
    function test_UnbondingOutlastsTheDisputeWindow() external {
        assertEq(
            market.minUnbondingDelay(),
            attestations.MAX_DISPUTE_WINDOW() + attestations.VERIFICATION_WINDOW(),
            "the market's floor is the registry's longest dispute"
        );
        // The longest dispute window the registry allows, and the shortest unbonding the market allows.
        vm.startPrank(admin);
        attestations.setDisputeTerms(
            DisputeTerms({window: uint32(attestations.MAX_DISPUTE_WINDOW()), bond: uint96(BOND), slashBps: 5000, minVerifierStake: 1e18})
        );
        nodes.setUnbondingDelay(market.minUnbondingDelay());
        vm.stopPrank();
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged-then-gone", false);
        confirmReport(leaseId, keccak256(report), true);
        uint256 bond = market.getLease(leaseId).bond;
        vm.warp(block.timestamp + 10);
        vm.prank(nodeKey);
        market.exitLease(leaseId);
        uint256 stake = nodes.getNode(nodeKey).stake;
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, stake);
        uint256 until = attestations.submissionOf(leaseId, keccak256(report)).disputableUntil;
        vm.warp(until);
        uint256 endsAt = nodes.getNode(nodeKey).unbondingEndsAt;
        assertTrue(endsAt > until, "still unbonding when the window closes");
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_UnbondingNotFinished.selector, nodeKey, endsAt, block.timestamp)
        );
        vm.prank(operator);
        nodes.withdrawUnstaked(nodeKey);
        assertTrue(disputeAs(disputer, leaseId, report), "overturned on the window's last second");
        assertEq(nodes.getNode(nodeKey).unbonding, stake - bond, "the bond taken out of the unbonding stake");
        assertMarketConserves(leaseId);
    }

    /// A quorum rejects a genuine report (burning an honest node's bond): the node disputes it; its
    /// bond comes back, its time up to the close is paid, the voter is slashed.
    function test_QuorumRejectsGenuineReport_DisputedNodeRestoredAndPaid() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "genuine", true);
        vm.warp(block.timestamp + 30 minutes);
        uint256 nodeStakeBefore = nodes.getNode(nodeKey).stake;
        confirmReport(leaseId, keccak256(report), false);
        assertEq(nodes.getNode(nodeKey).stake, nodeStakeBefore - market.getLease(leaseId).bond, "slashed");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded");

        uint256 voterStake = stakeOf(verifier);
        token.mint(operator, BOND);
        vm.prank(operator);
        token.approve(address(court), BOND);
        uint256 operatorBefore = token.balanceOf(operator);
        assertTrue(disputeAs(operator, leaseId, report), "overturned by the node's operator");

        assertEq(nodes.getNode(nodeKey).stake, nodeStakeBefore, "the node's slash undone");
        assertEq(nodes.burnedStake(), 0, "nothing burned");
        uint256 pay = 30 minutes * rate();
        assertEq(market.claimable(leaseId), pay, "its time up to the close is paid");
        assertEq(market.credits(renter), DEPOSIT - pay, "out of the renter's refund");
        uint256 slashed = (voterStake * SLASH_BPS_VERIFIER) / 10_000;
        assertEq(stakeOf(verifier), voterStake - slashed, "the voter lost half its stake");
        assertEq(token.balanceOf(operator), operatorBefore + slashed / 2, "bond back plus half the slash");
        vm.prank(operator);
        market.claim(leaseId);
        assertMarketConserves(leaseId);
        assertCourtConserves();
    }

    /// A dispute of a correct verdict loses its bond to the verdict's voters, and confirms it on chain.
    function test_FrivolousDisputeLosesItsBond() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "genuine", true);
        confirmReport(leaseId, keccak256(report), true);
        uint256 voterStake = stakeOf(verifier);
        uint256 disputerBefore = token.balanceOf(disputer);

        assertFalse(disputeAs(disputer, leaseId, report), "stands");

        assertEq(token.balanceOf(disputer), disputerBefore - BOND, "bond lost");
        assertEq(stakeOf(verifier), voterStake + BOND, "to the voter");
        assertTrue(attestations.isAttestedFinal(leaseId, measurement), "confirmed by the on-chain check");
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.ACTIVE), "lease untouched");
        assertCourtConserves();
    }

    /// So is a frivolous dispute of a correct rejection.
    function test_FrivolousDisputeOfACorrectRejectionLosesItsBond() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), false);
        uint256 voterStake = stakeOf(verifier);
        uint256 burnedBefore = nodes.burnedStake();
        assertFalse(disputeAs(disputer, leaseId, report), "stands");
        assertEq(stakeOf(verifier), voterStake + BOND, "bond to the voter");
        assertEq(nodes.burnedStake(), burnedBefore, "the node's slash stays");
    }

    function test_DisputeAfterTheWindowIsRefused() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        SubmissionInfo memory sub = attestations.submissionOf(leaseId, keccak256(report));
        assertEq(sub.disputableUntil, block.timestamp + 1 hours + 1 days, "verification window + 1 day");
        vm.warp(uint256(sub.disputableUntil) + 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationRegistry_DisputeWindowPassed.selector, leaseId, keccak256(report), sub.disputableUntil
            )
        );
        disputeAs(disputer, leaseId, report);
        // ... and an undisputed verdict is final once the window passed (while still attested).
        assertEq(
            attestations.isAttestedFinal(leaseId, measurement), attestations.isAttested(leaseId, measurement), "final"
        );
    }

    function test_VerifierCannotUnstakeWhileItsVotesCanBeDisputed() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        uint256 until = attestations.submissionOf(leaseId, keccak256(report)).disputableUntil;
        assertEq(court.stakeOf(verifier).lockedUntil, until, "locked until the vote's window closes");

        vm.prank(verifier);
        court.requestUnstake(VERIFIER_STAKE);
        vm.warp(block.timestamp + 2 hours);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_StakeLocked.selector, verifier, until));
        vm.prank(verifier);
        court.withdrawStake();
        // Unbonding stake is still slashed by a dispute within the window.
        disputeAs(disputer, leaseId, report);
        assertEq(stakeOf(verifier), VERIFIER_STAKE / 2, "slashed while unbonding");

        vm.warp(until + 1);
        vm.prank(verifier);
        assertEq(court.withdrawStake(), VERIFIER_STAKE / 2, "after the window");
    }

    function test_UnbondingStakeCannotVote() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "genuine", true);
        vm.prank(verifier);
        court.requestUnstake(VERIFIER_STAKE);
        assertFalse(attestations.canVote(leaseId, verifier), "no active stake");
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_StakeTooLow.selector, verifier, 0, 1e18));
        confirmReport(leaseId, keccak256(report), true);
        // A verifier holding the role but never staked cannot vote either.
        address unstaked = makeAddr("unstaked");
        bytes32 role = verifierRole();
        vm.prank(admin);
        attestations.grantRole(role, unstaked);
        assertFalse(attestations.canVote(leaseId, unstaked), "not staked");
    }

    function test_DoubleDisputeIsRefused() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "genuine", true);
        confirmReport(leaseId, keccak256(report), true);
        disputeAs(disputer, leaseId, report);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, keccak256(report))
        );
        disputeAs(disputer, leaseId, report);
    }

    function test_DoubleDisputeOfAnOverturnedVerdictIsRefused() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        disputeAs(disputer, leaseId, report);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, keccak256(report))
        );
        disputeAs(disputer, leaseId, report);
    }

    /// A voter that disputes its own wrong vote (to dodge its slash) still loses half of it.
    function test_AVoterDisputingItsOwnWrongVoteStillLoses() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        uint256 wealthBefore = stakeOf(verifier) + token.balanceOf(verifier);
        token.mint(verifier, BOND);
        wealthBefore += BOND;
        disputeAs(verifier, leaseId, report);
        uint256 wealthAfter = stakeOf(verifier) + token.balanceOf(verifier);
        assertEq(wealthAfter, wealthBefore - VERIFIER_STAKE / 4, "loses half of its slash");
    }

    /// A renter colluding with the voter (forged verdict, then the renter disputes): the renter is made
    /// whole, the coalition loses; the colluding node loses its bond.
    function test_RenterColludingWithTheVoterDoesNotProfit() external {
        uint256 renterBefore = token.balanceOf(renter);
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        vm.warp(block.timestamp + 2 hours);
        uint256 coalitionBefore = renterBefore + stakeOf(verifier);
        vm.prank(renter);
        token.approve(address(court), type(uint256).max);
        disputeAs(renter, leaseId, report);
        vm.prank(renter);
        market.withdraw();
        uint256 coalitionAfter = token.balanceOf(renter) + stakeOf(verifier);
        assertEq(token.balanceOf(renter), renterBefore + VERIFIER_STAKE / 4, "renter whole plus the reward");
        assertLe(coalitionAfter + VERIFIER_STAKE / 4, coalitionBefore, "the coalition loses a quarter stake");
    }

    /// An operator whose node's forged report was verified, disputing it itself: loses the bond; the
    /// reward from the colluding voter's slash does not cover it.
    function test_NodeDisputingItsOwnForgedVerdictDoesNotProfit() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        vm.warp(block.timestamp + 1 hours);
        vm.prank(operator);
        market.claim(leaseId);
        token.mint(operator, BOND);
        vm.prank(operator);
        token.approve(address(court), BOND);
        uint256 before = token.balanceOf(operator) + nodes.getNode(nodeKey).stake + stakeOf(verifier);
        disputeAs(operator, leaseId, report);
        uint256 afterwards = token.balanceOf(operator) + nodes.getNode(nodeKey).stake + stakeOf(verifier);
        assertLe(
            afterwards + market.getLease(leaseId).bond, before, "operator + colluding voter lose the bond and more"
        );
    }

    /// A renter that is also a (staked) verifier cannot vote on its own lease; as a disputer it is
    /// like any renter.
    function test_RenterVerifierCannotVoteOnItsLease() external {
        bytes32 role = verifierRole();
        vm.prank(admin);
        attestations.grantRole(role, renter);
        stakeVerifier(renter);
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "genuine", true);
        assertFalse(attestations.canVote(leaseId, renter), "a party of the lease");
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, leaseId, renter));
        vm.prank(renter);
        attestations.confirm(leaseId, keccak256(report), false);
    }

    function test_ConfirmOnChainFinalizesAtOnce_AndRefusesAForgedReport() external {
        uint256 leaseId = acceptedLease();
        bytes memory forged = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(forged), true);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_NotConfirmed.selector, leaseId, keccak256(forged))
        );
        court.confirmOnChain(leaseId, keccak256(forged), forged, certs(), guestKey);

        uint256 other = createLease();
        vm.prank(nodeKey);
        market.acceptLease(other);
        bytes memory genuine = submitChecked(other, "genuine", true);
        confirmReport(other, keccak256(genuine), true);
        assertFalse(attestations.isAttestedFinal(other, measurement), "not yet");
        vm.prank(stranger);
        court.confirmOnChain(other, keccak256(genuine), genuine, certs(), guestKey);
        assertTrue(attestations.isAttestedFinal(other, measurement), "final at once");
        assertFalse(attestations.isAttestedFinal(other, abi.encodePacked(bytes32(0), bytes16(0))), "other measurement");
    }

    /// The disputer's inputs can never make a genuine report look false: against a Rejected verdict
    /// (the disputer claims it genuine, so must prove it) inconclusive inputs are refused.
    function test_InconclusiveInputsAgainstARejectionRevert() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = reportBytes("genuine");
        SnpReportFields memory fields = genuineFields(leaseId, 0, report);
        // Certificates that do not chain: no verdict either way.
        snp.setAnswer(report, false, uint8(SnpReason.CertChain), fields);
        submitReport(leaseId, keccak256(report));
        confirmReport(leaseId, keccak256(report), false);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationCourt_Inconclusive.selector, leaseId, uint8(SnpReason.CertChain))
        );
        disputeAs(disputer, leaseId, report);
        snp.setAnswer(report, true, 0, fields);
        // With certificates that check out: a guest key that is not REPORT_DATA's preimage: refused, not "false".
        bytes memory otherKey = abi.encodePacked(keccak256("other"), keccak256("ed"), SIGNER, keccak256("s"));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_GuestKeyMismatch.selector, leaseId));
        vm.prank(disputer);
        court.dispute(leaseId, keccak256(report), report, certs(), otherKey);
        // Report bytes that are not the submitted ones.
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationCourt_ReportMismatch.selector, leaseId, keccak256(report))
        );
        vm.prank(disputer);
        court.dispute(leaseId, keccak256(report), reportBytes("other"), certs(), guestKey);
        assertEq(court.challengeOf(leaseId, keccak256(report)).deadline, 0, "no challenge of a rejection");
    }

    // ------------------------------------------------------------------ burden of proof (challenges)

    /// @dev A report the EVM can never bind to a VCEK: VLEK-signed (SIGNING_KEY 1) or with a masked CHIP_ID.
    function unbindable(string memory seed, bool vlek) internal pure returns (bytes memory report) {
        report = reportBytes(seed);
        if (vlek) {
            report[0x48] = 0x04;
        } else {
            for (uint256 i = 0x1A0; i < 0x1E0; ++i) {
                report[i] = 0x00;
            }
        }
    }

    /// @dev A colluding quorum verifies `report` (whose check fails with `reason`); a stranger disputes it.
    function challenged(bytes memory report, uint8 reason) internal returns (uint256 leaseId, uint256 deadline) {
        // A one-hour dispute window: it passes while the attestation still holds and the challenge is pending.
        DisputeTerms memory terms = attestations.disputeTerms();
        terms.window = 1 hours;
        vm.prank(admin);
        attestations.setDisputeTerms(terms);
        leaseId = acceptedLease();
        snp.setAnswer(report, reason == 0, reason, genuineFields(leaseId, 0, report));
        submitReport(leaseId, keccak256(report));
        confirmReport(leaseId, keccak256(report), true);
        assertFalse(snp.isSignerBound(report, bytes32(0)) && reason == uint8(SnpReason.BadSignature), "unbindable");
        uint256 before = token.balanceOf(disputer);
        vm.expectEmit(true, true, true, true, address(court));
        emit IAttestationCourt.ChallengeOpened(leaseId, keccak256(report), disputer, block.timestamp + 1 days, BOND);
        assertFalse(disputeAs(disputer, leaseId, report), "not overturned at once");
        deadline = block.timestamp + court.RESPONSE_WINDOW();
        Challenge memory c = court.challengeOf(leaseId, keccak256(report));
        assertEq(c.disputer, disputer, "challenger");
        assertEq(c.deadline, deadline, "deadline");
        assertEq(c.bond, BOND, "bond");
        assertEq(token.balanceOf(disputer), before - BOND, "bond held");
        assertEq(court.bonded(), BOND, "held by the court");
        assertTrue(attestations.submissionOf(leaseId, keccak256(report)).challenged, "registry knows");
    }

    /// The red-team hole: a forged report a colluding quorum verified that the EVM cannot bind to a
    /// certificate (VLEK-signed, masked CHIP_ID) used to be beyond appeal. Now the dispute opens a
    /// challenge; nobody proves the report genuine by the deadline; anyone resolves it: reversed as a
    /// proven false Verified.
    function test_ForgedVlekVerified_Challenged_Undefended_ResolvedReversed() external {
        undefendedReverses(unbindable("forged vlek", true));
    }

    function test_ForgedMaskedChipVerified_Challenged_Undefended_ResolvedReversed() external {
        undefendedReverses(unbindable("forged masked", false));
    }

    function undefendedReverses(bytes memory report) internal {
        {
            (uint256 leaseId, uint256 deadline) = challenged(report, uint8(SnpReason.BadSignature));
            bytes32 h = keccak256(report);
            uint256 voterStake = stakeOf(verifier);
            uint256 nodeStakeBefore = nodes.getNode(nodeKey).stake;
            uint256 bond = market.getLease(leaseId).bond;
            uint256 disputerBefore = token.balanceOf(disputer);
            uint256 renterBefore = market.credits(renter);

            // While pending: the quorum's word stands but is not final, even past the dispute window.
            vm.warp(attestations.submissionOf(leaseId, h).disputableUntil + 1);
            assertTrue(attestations.isAttested(leaseId, measurement), "quorum's word");
            assertFalse(attestations.isAttestedFinal(leaseId, measurement), "not final while challenged");
            // A second dispute, a confirmation: refused.
            vm.expectRevert(
                abi.encodeWithSelector(Errors.AttestationCourt_ChallengePending.selector, leaseId, h, deadline)
            );
            disputeAs(disputer, leaseId, report);
            vm.expectRevert(
                abi.encodeWithSelector(Errors.AttestationCourt_ChallengePending.selector, leaseId, h, deadline)
            );
            court.confirmOnChain(leaseId, h, report, certs(), guestKey);
            // The voter's stake cannot leave meanwhile.
            vm.startPrank(verifier);
            court.requestUnstake(1);
            vm.warp(deadline + 30 days);
            vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_StakeChallenged.selector, verifier, 1));
            court.withdrawStake();
            vm.stopPrank();
            vm.warp(deadline);
            // Resolve before the deadline has passed: refused.
            vm.expectRevert(
                abi.encodeWithSelector(Errors.AttestationCourt_ChallengeNotExpired.selector, leaseId, h, deadline)
            );
            court.resolve(leaseId, h);
            // Defend after it: refused.
            vm.warp(deadline + 1);
            vm.expectRevert(
                abi.encodeWithSelector(Errors.AttestationCourt_ChallengeExpired.selector, leaseId, h, deadline)
            );
            court.defend(leaseId, h, report, certs(), guestKey);

            vm.expectEmit(true, true, true, true, address(court));
            emit IAttestationCourt.ChallengeResolved(leaseId, h, address(this));
            court.resolve(leaseId, h);

            Lease memory lease = market.getLease(leaseId);
            assertEq(uint256(lease.closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "ended as rejected");
            assertEq(market.credits(renter), renterBefore + DEPOSIT, "renter refunded");
            assertEq(nodes.getNode(nodeKey).stake, nodeStakeBefore - bond, "node bond slashed");
            uint256 slashed = (voterStake * SLASH_BPS_VERIFIER) / 10_000;
            assertEq(stakeOf(verifier), voterStake - slashed, "voter slashed");
            assertEq(token.balanceOf(disputer), disputerBefore + BOND + slashed / 2, "bond back plus half");
            assertFalse(attestations.isAttested(leaseId, measurement), "no longer attested");
            assertFalse(attestations.isAttestedFinal(leaseId, measurement), "nor final");
            assertEq(court.challengeOf(leaseId, h).deadline, 0, "closed");
            assertEq(court.bonded(), 0, "no bond held");
            vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_NoChallenge.selector, leaseId, h));
            court.resolve(leaseId, h);
            vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, h));
            disputeAs(disputer, leaseId, report);
            assertCourtConserves();
            // The voter may leave with what is left once nothing is pending.
            vm.prank(verifier);
            court.withdrawStake();
        }
    }

    /// A genuine report the disputer's certificates cannot show either way is challenged; the node
    /// defends it with certificates under which the check passes: the verdict stands and is final, the
    /// disputer's bond goes to the voter. Certificates that do not pass are refused first.
    function test_GenuineVerifiedChallenged_Defended_Stands() external {
        bytes memory report = reportBytes("genuine, VCEK not cached");
        (uint256 leaseId, uint256 deadline) = challenged(report, uint8(SnpReason.CertChain));
        bytes32 h = keccak256(report);
        uint256 voterStake = stakeOf(verifier);
        uint256 disputerBefore = token.balanceOf(disputer);
        // A defence whose certificates do not pass: refused, the challenge still pending.
        vm.prank(operator);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationCourt_Inconclusive.selector, leaseId, uint8(SnpReason.CertChain))
        );
        court.defend(leaseId, h, report, certs(), guestKey);
        snp.setAnswer(report, true, 0, genuineFields(leaseId, 0, report)); // the right certificates
        bytes memory otherKey = abi.encodePacked(keccak256("other"), keccak256("ed"), SIGNER, keccak256("s"));
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_GuestKeyMismatch.selector, leaseId));
        court.defend(leaseId, h, report, certs(), otherKey);
        assertEq(court.challengeOf(leaseId, h).deadline, deadline, "still pending");

        // Past the dispute window, the verdict is not final while challenged.
        vm.warp(attestations.submissionOf(leaseId, h).disputableUntil + 1);
        assertTrue(attestations.isAttested(leaseId, measurement), "quorum's word");
        assertFalse(attestations.isAttestedFinal(leaseId, measurement), "not final while challenged");
        vm.warp(deadline); // the deadline itself is still in time
        vm.expectEmit(true, true, true, true, address(court));
        emit IAttestationCourt.ChallengeDefended(leaseId, h, operator, true);
        vm.prank(operator);
        court.defend(leaseId, h, report, certs(), guestKey);

        assertEq(stakeOf(verifier), voterStake + BOND, "the bond to the voter");
        assertEq(token.balanceOf(disputer), disputerBefore, "disputer lost its bond");
        assertTrue(attestations.submissionOf(leaseId, h).confirmedOnChain, "confirmed on chain");
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.ACTIVE), "lease untouched");
        assertEq(court.challengeOf(leaseId, h).deadline, 0, "closed");
        assertTrue(attestations.submissionOf(leaseId, h).disputed, "settled");
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_NoChallenge.selector, leaseId, h));
        court.resolve(leaseId, h);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, h));
        disputeAs(disputer, leaseId, report);
        assertCourtConserves();
    }

    /// A defence whose certificates prove the report false (here: a genuine AMD report for another
    /// measurement) reverses the verdict at once, paying the disputer.
    function test_ADefenceThatProvesTheReportFalseReverses() external {
        bytes memory report = reportBytes("wrong measurement");
        (uint256 leaseId,) = challenged(report, uint8(SnpReason.CertChain));
        SnpReportFields memory fields = genuineFields(leaseId, 0, report);
        fields.measurement = abi.encodePacked(bytes32(uint256(1)), bytes16(0));
        snp.setAnswer(report, true, 0, fields);
        vm.expectEmit(true, true, true, true, address(court));
        emit IAttestationCourt.ChallengeDefended(leaseId, keccak256(report), operator, false);
        vm.prank(operator);
        court.defend(leaseId, keccak256(report), report, certs(), guestKey);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "reversed");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded");
        assertCourtConserves();
    }

    /// A provably false report (bound signer, bad signature) still reverses at once, without a challenge.
    function test_BoundBadSignatureStillReversesAtOnce() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged, bound", false);
        confirmReport(leaseId, keccak256(report), true);
        assertTrue(disputeAs(disputer, leaseId, report), "overturned at once");
        assertEq(court.challengeOf(leaseId, keccak256(report)).deadline, 0, "no challenge");
        assertCourtConserves();
    }

    /// The policy the off-chain verifier applies: a genuine AMD report for another lease, nonce, signer,
    /// renter or measurement, or with debug on, is false for this submission.
    function test_PolicyMismatchesOverturnAVerifiedVerdict() external {
        for (uint256 which; which < 5; ++which) {
            uint256 leaseId = which == 0 ? acceptedLease() : createLease();
            if (which != 0) {
                vm.prank(nodeKey);
                market.acceptLease(leaseId);
            }
            bytes memory report = reportBytes(string(abi.encode("policy", which)));
            SnpReportFields memory fields = genuineFields(leaseId, 0, report);
            if (which == 0) fields.reportData0 = keccak256("another lease or nonce");
            if (which == 1) fields.hostData = keccak256("another renter");
            if (which == 2) fields.policy = uint64(1) << 19;
            if (which == 3) fields.measurement = abi.encodePacked(bytes32(0), bytes16(0));
            if (which == 4) fields.vmpl = 1;
            snp.setAnswer(report, true, 0, fields);
            submitReport(leaseId, keccak256(report));
            confirmReport(leaseId, keccak256(report), true);
            assertTrue(disputeAs(disputer, leaseId, report), "overturned");
        }
        // A guest key naming another signer than the one submitted.
        uint256 last = createLease();
        vm.prank(nodeKey);
        market.acceptLease(last);
        bytes memory r = submitChecked(last, "signer", true);
        bytes memory key =
            abi.encodePacked(keccak256("x25519"), keccak256("ed25519"), address(0xBEEF), keccak256("spki"));
        SnpReportFields memory f = genuineFields(last, 0, r);
        f.reportData1 = sha256(key);
        snp.setAnswer(r, true, 0, f);
        confirmReport(last, keccak256(r), true);
        vm.prank(disputer);
        assertTrue(court.dispute(last, keccak256(r), r, certs(), key), "another signer: overturned");
    }

    /// A forged verified report replaced by a re-attestation stays disputable: the reversal reaches back
    /// to it (every second since is unpaid) and settles the later one.
    function test_AReplacedForgedVerdictIsStillDisputable() external {
        uint256 leaseId = acceptedLease();
        bytes memory first = submitChecked(leaseId, "forged-1", false);
        confirmReport(leaseId, keccak256(first), true);
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes memory second = submitChecked(leaseId, "genuine-2", true);
        confirmReport(leaseId, keccak256(second), true);
        vm.warp(block.timestamp + 1 hours);
        assertEq(attestations.submissionOf(leaseId, keccak256(first)).number, 1, "kept");
        assertTrue(disputeAs(disputer, leaseId, first), "the first is overturned");
        assertEq(market.credits(renter), DEPOSIT, "nothing since the first is paid");
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_AlreadySettled.selector, leaseId, keccak256(second))
        );
        disputeAs(disputer, leaseId, second);
        assertMarketConserves(leaseId);
    }

    /// A challenged submission settled meanwhile by the reversal of an earlier one: resolving it
    /// closes the challenge, returns the bond and frees the voters' stake.
    function test_AChallengeSettledByAnEarlierReversalReturnsTheBond() external {
        uint256 leaseId = acceptedLease();
        bytes memory first = submitChecked(leaseId, "forged-1", false);
        confirmReport(leaseId, keccak256(first), true);
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes memory second = unbindable("forged-2", true);
        snp.setAnswer(second, false, uint8(SnpReason.BadSignature), genuineFields(leaseId, 1, second));
        submitReport(leaseId, keccak256(second));
        confirmReport(leaseId, keccak256(second), true);
        uint256 before = token.balanceOf(disputer);
        assertFalse(disputeAs(disputer, leaseId, second), "challenged");
        assertTrue(disputeAs(disputer, leaseId, first), "the first is overturned");
        uint256 deadline = court.challengeOf(leaseId, keccak256(second)).deadline;
        vm.warp(deadline + 1);
        court.resolve(leaseId, keccak256(second));
        assertEq(court.bonded(), 0, "no bond held");
        uint256 slashed = VERIFIER_STAKE / 2;
        assertEq(token.balanceOf(disputer), before + slashed / 2, "both bonds back, the reward of the first");
        vm.startPrank(verifier);
        court.requestUnstake(1);
        vm.warp(block.timestamp + 30 days);
        court.withdrawStake();
        vm.stopPrank();
        assertCourtConserves();
    }

    /// With a quorum of 2, both voters of an overturned verdict are slashed.
    function test_EveryVoterOfAnOverturnedVerdictIsSlashed() external {
        vm.prank(admin);
        attestations.setQuorum(2);
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        vm.prank(verifier2);
        attestations.confirm(leaseId, keccak256(report), true);
        disputeAs(disputer, leaseId, report);
        assertEq(stakeOf(verifier), VERIFIER_STAKE / 2, "first voter slashed");
        assertEq(stakeOf(verifier2), VERIFIER_STAKE / 2, "second voter slashed");
        assertEq(token.balanceOf(disputer), 100e18 + VERIFIER_STAKE / 2, "half of both slashes");
        assertCourtConserves();
    }

    /// A lease closed by its renter after a forged verdict: the reversal still refunds the paid time.
    function test_ReversalAfterTheRenterClosed() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged", false);
        confirmReport(leaseId, keccak256(report), true);
        vm.warp(block.timestamp + 3 hours);
        vm.prank(renter);
        uint256 refund = market.closeLease(leaseId);
        assertEq(refund, DEPOSIT - 3 hours * rate(), "paid three hours");
        uint256 nodeStake = nodes.getNode(nodeKey).stake;
        disputeAs(disputer, leaseId, report);
        assertEq(market.credits(renter), 3 hours * rate(), "the three hours come back");
        assertEq(nodes.getNode(nodeKey).stake, nodeStake - market.getLease(leaseId).bond, "bond still slashed");
        assertMarketConserves(leaseId);
    }

    // ------------------------------------------------------------------ issue 20: disputes after a failover

    /// @dev A second node (its own operator) that takes leases that fail over.
    function secondNode() internal returns (address key) {
        key = makeAddr("nodeKey2");
        address op = makeAddr("operator2");
        token.mint(op, STAKE);
        vm.startPrank(op);
        token.approve(address(nodes), type(uint256).max);
        nodes.register(key, nodeSpec(), "", signNodeConsent(address(nodes), makeKey("nodeKey2"), op));
        nodes.stake(key, STAKE);
        vm.stopPrank();
    }

    /// The old node's genuine verdict stays upheld after the lease failed over (even before the new node
    /// submits): the on-chain check still reads the lease's measurement, so a dispute of it is frivolous.
    function test_GenuineOldVerdict_AfterFailover_StandsAgainstADispute() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "genuine-old", true);
        confirmReport(leaseId, keccak256(report), true);
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        market.failover(leaseId);
        assertEq(attestations.attestationOf(leaseId).measurement, measurement, "the lease's measurement stays");
        uint256 voterStake = stakeOf(verifier);
        uint256 nodeStake = nodes.getNode(nodeKey).stake;
        assertFalse(disputeAs(disputer, leaseId, report), "upheld");
        assertEq(stakeOf(verifier), voterStake + BOND, "the honest voter gets the frivolous bond");
        assertEq(nodes.getNode(nodeKey).stake, nodeStake, "the old node is not slashed");
        assertCourtConservesWithBond();
    }

    /// A colluding quorum verified a forged report; the node then failed and the lease moved to an honest
    /// node. The dispute reverses the old verdict against the old node alone: its bond is slashed, the renter
    /// is compensated for the forged time, the voter is slashed; the lease and the new node go on untouched.
    function test_ForgedOldVerdict_AfterFailover_OnlyTheOldNodeAndVoterPay() external {
        uint256 leaseId = acceptedLease();
        bytes memory report = submitChecked(leaseId, "forged-old", false);
        confirmReport(leaseId, keccak256(report), true);
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        market.failover(leaseId);
        uint256 paidForForgery = uint256(REATTEST_INTERVAL) * rate();
        assertEq(market.credits(operator), paidForForgery, "the old node was paid for the forged time");
        address key2 = secondNode();
        vm.prank(key2);
        market.acceptLease(leaseId);
        uint256 nonce = attestations.attestationNonce(leaseId);
        bytes memory fresh = reportBytes("honest-new");
        snp.setAnswer(fresh, true, 0, genuineFields(leaseId, nonce, fresh));
        vm.prank(key2);
        attestations.submit(leaseId, nonce, keccak256(fresh), measurement, TCB, CHIP_ID_HASH, SIGNER);
        confirmReport(leaseId, keccak256(fresh), true);
        Lease memory before = market.getLease(leaseId);
        uint256 stake2 = nodes.getNode(key2).stake;
        uint256 oldStake = nodes.getNode(nodeKey).stake;
        uint256 voterStake = stakeOf(verifier);

        assertTrue(disputeAs(disputer, leaseId, report), "overturned");

        assertEq(nodes.getNode(nodeKey).stake, oldStake - (MIN_STAKE * SLASH_BPS) / 10_000, "old bond slashed");
        assertEq(market.credits(renter), paidForForgery, "renter compensated for the forged time");
        assertTrue(stakeOf(verifier) < voterStake, "the voter is slashed");
        Lease memory afterwards = market.getLease(leaseId);
        assertEq(uint256(afterwards.status), uint256(LeaseStatus.ACTIVE), "the lease goes on");
        assertEq(afterwards.nodeKey, key2, "on the new node");
        assertEq(afterwards.deposit, before.deposit, "its escrow untouched");
        assertEq(nodes.getNode(key2).stake, stake2, "the new node untouched");
        assertTrue(attestations.isAttested(leaseId, measurement), "still attested by the new node");
    }

    /// @dev The court holds every stake + burned (no challenge bond pending here).
    function assertCourtConservesWithBond() internal view {
        assertEq(
            token.balanceOf(address(court)),
            stakeOf(verifier) + stakeOf(verifier2) + stakeOf(renter) + court.burned() + court.bonded(),
            "court balance = stakes + burned + bonds"
        );
    }
}
