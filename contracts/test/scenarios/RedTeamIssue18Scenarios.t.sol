// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {Errors} from "../../src/libraries/Errors.sol";
import {CloseReason} from "../../src/types/DataTypes.sol";
import {Base} from "../Base.t.sol";

/// @notice A red team's attacks on the rules of issues 17 and 18 (held close, excused attestations,
/// decline burn, vote snapshots, attested signer). Each test is named after the attack.
contract RedTeamIssue18Scenarios_Test is Base {
    uint256 private constant BOND = MIN_STAKE * SLASH_BPS / 10_000;

    /// A node that let `attestBy` pass with nothing submitted is a missed first attestation
    /// (slash, and a miss on its record). Before this fix the registry still took a first submission
    /// after the deadline: a node watching the mempool front-ran the renter's `closeLease` (or anyone's
    /// `reportMissedAttestation`) with a late report, which turned the slash into a held close with no
    /// fault at all, and the node's record stayed clean. Failed on that code (the late submit went
    /// through); now a first submission after `attestBy` is refused.
    function test_LateFirstAttestation_CannotFrontRunTheMissedReport() external {
        uint256 leaseId = acceptedLease();
        uint256 attestBy = market.getLease(leaseId).attestBy;
        vm.warp(attestBy + 1);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_AttestationDeadlinePassed.selector, leaseId, attestBy)
        );
        vm.prank(nodeKey);
        attestations.submit(leaseId, 0, REPORT_HASH, measurement, TCB, CHIP_ID_HASH, SIGNER);
        vm.prank(renter);
        assertEq(market.closeLease(leaseId), 0, "the refund is credited by the missed-attestation path");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_MISSED), "missed");
        assertEq(nodes.getNode(nodeKey).stake, STAKE - BOND, "slashed");
        assertEq(market.credits(renter), DEPOSIT, "all refunded");
    }

    /// A first submission exactly at `attestBy` is still in time (the missed path starts after it).
    function test_LateFirstAttestation_AtTheDeadlineIsInTime() external {
        uint256 leaseId = acceptedLease();
        vm.warp(market.getLease(leaseId).attestBy);
        submitReport(leaseId, REPORT_HASH);
        assertEq(attestations.attestationNonce(leaseId), 1, "accepted");
    }

    /// `attestedSignerOf` never names the signer of an attestation that is not Verified: not the
    /// relaunched guest's while its re-attestation is pending, not after that re-attestation was
    /// left undecided (excused), and not the old guest's once a newer submission replaces the
    /// undecided one (no verified predecessor vouches then). Passes on the current code.
    function test_AttestedSigner_NeverOfAnUnverifiedOrReplacedGuest() external {
        address guestA = makeAddr("guestA");
        address guestB = makeAddr("guestB");
        address guestC = makeAddr("guestC");
        vm.prank(admin);
        attestations.setQuorum(2);
        uint256 leaseId = acceptedLease();
        submitReportWithSigner(leaseId, REPORT_HASH, guestA);
        vm.prank(verifier);
        attestations.confirm(leaseId, REPORT_HASH, true);
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, true);
        assertEq(attestations.attestedSignerOf(leaseId), guestA, "verified guest A");

        // A relaunch with a new key: B is pending, the verified A still vouches (seamless).
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReportWithSigner(leaseId, second, guestB);
        assertEq(attestations.attestedSignerOf(leaseId), guestA, "A until B is verified");
        vm.prank(verifier);
        attestations.confirm(leaseId, second, true);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        assertTrue(attestations.progressOf(leaseId).excused, "B undecided with an approval: excused");
        assertEq(attestations.attestedSignerOf(leaseId), address(0), "neither A nor the undecided B");

        // The next submission replaces B; nothing verified precedes it.
        submitReportWithSigner(leaseId, keccak256("report-3"), guestC);
        assertEq(attestations.attestedSignerOf(leaseId), address(0), "C pending, no verified predecessor");
        assertFalse(attestations.isAttested(leaseId, measurement), "isAttested agrees");
    }

    /// The renter closing while a re-attestation awaits its verdict cannot dodge paying for it, and
    /// nobody can release the held escrow early: a stranger's `finalizeClose` is refused until the
    /// verdict, the verdict pays the held time up to the close, and the bond is freed. Passes now.
    function test_HeldClose_NeitherRenterNorStrangerDodgesTheVerdict() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        bytes32 second = keccak256("report-2");
        submitReport(leaseId, second);
        vm.warp(block.timestamp + 10 minutes);
        vm.prank(renter);
        market.closeLease(leaseId);
        uint256 decideBy = block.timestamp - 10 minutes + attestations.VERIFICATION_WINDOW();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_AttestationPending.selector, leaseId, decideBy));
        vm.prank(stranger);
        market.finalizeClose(leaseId);
        assertEq(market.bondedStake(nodeKey), BOND, "bond locked while held");
        vm.warp(block.timestamp + 20 minutes);
        confirmReport(leaseId, second, true);
        assertEq(market.earned(leaseId), (REATTEST_INTERVAL / 2 + 10 minutes) * rate(), "held time paid to the close");
        assertEq(market.bondedStake(nodeKey), 0, "bond freed");
        assertEq(uint256(attestations.statusOf(leaseId)), uint256(IAttestationRegistry.Status.Expired), "lease closed");
    }
}
