// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {AttestationCourt} from "../../../src/AttestationCourt.sol";
import {IAttestationCourt} from "../../../src/interfaces/IAttestationCourt.sol";
import {ISnpVerifier} from "../../../src/interfaces/ISnpVerifier.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {DisputeTerms} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

/// @notice Access and bounds of the issue-21 surface: terms, court wiring, the hooks between
/// court, registry, market and node registry, staking edge cases.
contract DisputeAdmin_Test is Base {
    function test_DefaultTerms_AndTheirBounds() external {
        DisputeTerms memory terms = attestations.disputeTerms();
        assertEq(terms.window, 1 days, "default window");
        assertEq(terms.bond, 1e18, "default bond");
        assertEq(terms.slashBps, 5000, "default voter slash");
        assertEq(terms.minVerifierStake, 1e18, "default minimum stake");
        DisputeTerms[4] memory bad = [
            DisputeTerms({window: 30 minutes, bond: 1, slashBps: 1, minVerifierStake: 1}),
            DisputeTerms({window: 8 days, bond: 1, slashBps: 1, minVerifierStake: 1}),
            DisputeTerms({window: 1 days, bond: 1, slashBps: 10_001, minVerifierStake: 1}),
            DisputeTerms({window: 1 days, bond: 1, slashBps: 1, minVerifierStake: 0})
        ];
        for (uint256 i; i < bad.length; ++i) {
            vm.expectRevert(Errors.AttestationRegistry_InvalidDisputeTerms.selector);
            vm.prank(admin);
            attestations.setDisputeTerms(bad[i]);
        }
        vm.expectRevert();
        vm.prank(stranger);
        attestations.setDisputeTerms(terms);
    }

    function test_WindowIsFixedWhenTheLeaseIsOpened() external {
        uint256 before = createLease();
        vm.prank(admin);
        attestations.setDisputeTerms(DisputeTerms({window: 3 hours, bond: 2e18, slashBps: 100, minVerifierStake: 1}));
        uint256 later = createLease();
        assertEq(attestations.disputeWindowOf(before), 1 days, "earlier lease keeps its window");
        assertEq(attestations.disputeWindowOf(later), 3 hours, "later lease gets the new one");
    }

    function test_CourtIsSetOnce() external {
        AttestationCourt other = new AttestationCourt(snp, attestations, token);
        vm.expectRevert(Errors.AttestationRegistry_CourtAlreadySet.selector);
        vm.prank(admin);
        attestations.setCourt(other);
    }

    function test_HooksRefuseStrangers() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_CallerNotCourt.selector, stranger));
        vm.prank(stranger);
        attestations.resolveDispute(1, bytes32(0), stranger, true);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_CallerNotCourt.selector, stranger));
        vm.prank(stranger);
        attestations.confirmByCourt(1, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_CallerNotRegistry.selector, stranger));
        vm.prank(stranger);
        court.lockVote(verifier, type(uint40).max, 0);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CallerNotAttestationRegistry.selector, stranger));
        vm.prank(stranger);
        market.onVerifiedOverturned(1, 0, false);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CallerNotAttestationRegistry.selector, stranger));
        vm.prank(stranger);
        market.onRejectedOverturned(1, address(0), 0, 0);
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_CallerNotLeaseMarket.selector, stranger));
        vm.prank(stranger);
        nodes.restoreSlash(nodeKey, 1);
    }

    function test_StakingEdges() external {
        vm.expectRevert(Errors.AttestationCourt_ZeroAmount.selector);
        vm.prank(verifier);
        court.stake(0);
        vm.expectRevert(Errors.AttestationCourt_ZeroAddress.selector);
        court.stakeFor(address(0), 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationCourt_UnstakeExceedsStake.selector, verifier, VERIFIER_STAKE + 1, VERIFIER_STAKE
            )
        );
        vm.prank(verifier);
        court.requestUnstake(VERIFIER_STAKE + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_NothingUnbonding.selector, verifier));
        vm.prank(verifier);
        court.withdrawStake();
        // Without votes, the stake leaves after the verification window.
        vm.prank(verifier);
        court.requestUnstake(1e18);
        vm.warp(block.timestamp + 1 hours + 1);
        vm.prank(verifier);
        assertEq(court.withdrawStake(), 1e18, "withdrawn");
        // A gift of stake is the verifier's.
        token.mint(stranger, 5e18);
        vm.startPrank(stranger);
        token.approve(address(court), 5e18);
        court.stakeFor(verifier, 5e18);
        vm.stopPrank();
        assertEq(court.stakeOf(verifier).stake, VERIFIER_STAKE - 1e18 + 5e18, "staked for it");
    }

    function test_DisputesNeedAReportCheck() external {
        AttestationCourt blind = new AttestationCourt(ISnpVerifier(address(0)), attestations, token);
        vm.expectRevert(Errors.AttestationCourt_NoSnpVerifier.selector);
        blind.truth(1, 0, address(1), keccak256(""), "", new bytes[](0), "");
        vm.expectRevert(Errors.AttestationCourt_ZeroAddress.selector);
        new AttestationCourt(snp, attestations, IERC20(address(0)));
    }

    function test_UnknownOrUndecidedSubmissionsCannotBeDisputed() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_UnknownSubmission.selector, leaseId, REPORT_HASH)
        );
        court.dispute(leaseId, REPORT_HASH, "", new bytes[](0), "");
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotDecided.selector, leaseId, REPORT_HASH));
        vm.prank(address(court));
        attestations.resolveDispute(leaseId, REPORT_HASH, stranger, true);
        IAttestationCourt iface = court;
        assertEq(address(iface.registry()), address(attestations), "wired");
    }
}
