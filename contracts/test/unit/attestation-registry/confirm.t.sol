// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;


import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "../../../src/interfaces/IAttestationRegistryCore.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Confirm_AttestationRegistry_Test is Base {
    uint256 private leaseId;

    function setUp() public override {
        super.setUp();
        leaseId = acceptedLease();
    }

    function _status() private view returns (IAttestationRegistry.Status) {
        return attestations.attestationOf(leaseId).status;
    }

    function test_RevertWhen_CallerNotVerifier() external {
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_NotEligibleVoter.selector, leaseId, stranger));
        vm.prank(stranger);
        attestations.confirm(leaseId, REPORT_HASH, true);
    }

    function test_RevertWhen_NothingPending() external {
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationRegistry_NotPending.selector, leaseId, IAttestationRegistry.Status.None
            )
        );
        confirmReport(leaseId, REPORT_HASH, true);
    }

    function test_RevertWhen_AlreadyDecided() external {
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationRegistry_NotPending.selector, leaseId, IAttestationRegistry.Status.Verified
            )
        );
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, false);
    }

    function test_RevertWhen_ReportHashMismatch() external {
        submitReport(leaseId, REPORT_HASH);
        bytes32 other = keccak256("other");
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_ReportHashMismatch.selector, leaseId, other, REPORT_HASH)
        );
        confirmReport(leaseId, other, true);
    }

    function test_WhenQuorumOneAndOk() external {
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + 42);
        vm.expectEmit(true, true, false, true, address(attestations));
        emit IAttestationRegistryCore.AttestationVote(leaseId, verifier, REPORT_HASH, true);
        vm.expectEmit(true, false, false, true, address(attestations));
        emit IAttestationRegistry.AttestationVerified(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        assertEq(uint256(_status()), uint256(IAttestationRegistry.Status.Verified), "verified");
        assertEq(attestations.attestationOf(leaseId).verifiedAt, block.timestamp, "verifiedAt");
        assertTrue(attestations.isAttested(leaseId, measurement), "attested");
    }

    function test_WhenQuorumOneAndNotOk() external {
        submitReport(leaseId, REPORT_HASH);
        vm.expectEmit(true, false, false, true, address(attestations));
        emit IAttestationRegistry.AttestationRejected(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, false);
        assertEq(uint256(_status()), uint256(IAttestationRegistry.Status.Rejected), "rejected");
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.CLOSED), "lease closed");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "reason");
        assertFalse(attestations.isAttested(leaseId, measurement), "not attested");
    }

    function test_RevertWhen_QuorumAboveOneAndAlreadyVoted() external {
        vm.prank(admin);
        attestations.setQuorum(2);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AlreadyVoted.selector, leaseId, verifier));
        confirmReport(leaseId, REPORT_HASH, false);
    }

    function test_WhenQuorumAboveOneAndBelowQuorum() external {
        vm.prank(admin);
        attestations.setQuorum(2);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, false);
        assertEq(uint256(_status()), uint256(IAttestationRegistry.Status.Pending), "split vote stays pending");
    }

    function testFuzz_WhenQuorumReached(bool ok) external {
        vm.prank(admin);
        attestations.setQuorum(2);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, ok);
        assertEq(uint256(_status()), uint256(IAttestationRegistry.Status.Pending), "one vote is not enough");
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, ok);
        IAttestationRegistry.Status expected =
            ok ? IAttestationRegistry.Status.Verified : IAttestationRegistry.Status.Rejected;
        assertEq(uint256(_status()), uint256(expected), "decided by quorum");
    }

    function test_WhenQuorumAboveOneVotesResetPerAttestation() external {
        vm.prank(admin);
        attestations.setQuorum(2);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.prank(verifier2);
        attestations.confirm(leaseId, REPORT_HASH, true);
        bytes32 second = keccak256("second");
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        submitReport(leaseId, second);
        // The same verifier may vote again on the next attestation, and one vote is again not enough.
        confirmReport(leaseId, second, true);
        assertEq(uint256(_status()), uint256(IAttestationRegistry.Status.Pending), "counters reset");
    }
}
