// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "../../../src/interfaces/IAttestationRegistryCore.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Submit_AttestationRegistry_Test is Base {
    function _submitAs(address caller, uint256 leaseId, uint256 nonce, bytes32 reportHash, bytes memory m) private {
        vm.prank(caller);
        attestations.submit(leaseId, nonce, reportHash, m, TCB, CHIP_ID_HASH, SIGNER);
    }

    function test_RevertWhen_LeaseOpen() external {
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_LeaseNotActive.selector, leaseId));
        _submitAs(nodeKey, leaseId, 0, REPORT_HASH, measurement);
    }

    function test_RevertWhen_LeaseClosed() external {
        uint256 leaseId = acceptedLease();
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_LeaseNotActive.selector, leaseId));
        _submitAs(nodeKey, leaseId, 0, REPORT_HASH, measurement);
    }

    function test_RevertWhen_CallerNotLeaseNode() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_NotLeaseNode.selector, leaseId, operator, nodeKey)
        );
        _submitAs(operator, leaseId, 0, REPORT_HASH, measurement);
    }

    function test_RevertWhen_StaleNonce() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_StaleNonce.selector, leaseId, 0, 1));
        _submitAs(nodeKey, leaseId, 0, keccak256("replayed"), measurement);
    }

    function test_RevertWhen_ReportHashZero() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_ZeroReportHash.selector, leaseId));
        _submitAs(nodeKey, leaseId, 0, bytes32(0), measurement);
    }

    function testFuzz_RevertWhen_MeasurementMismatch(bytes memory other) external {
        vm.assume(keccak256(other) != keccak256(measurement));
        uint256 leaseId = acceptedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_MeasurementMismatch.selector, leaseId));
        _submitAs(nodeKey, leaseId, 0, REPORT_HASH, other);
    }

    function test_RevertWhen_MeasurementTailDiffers() external {
        uint256 leaseId = acceptedLease();
        bytes memory other = bytes.concat(measurement);
        other[47] = bytes1(uint8(other[47]) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_MeasurementMismatch.selector, leaseId));
        _submitAs(nodeKey, leaseId, 0, REPORT_HASH, other);
    }

    function test_RevertWhen_PreviousPending() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AttestationPending.selector, leaseId));
        _submitAs(nodeKey, leaseId, 1, keccak256("second"), measurement);
    }

    function test_RevertWhen_FirstAttestationLeftUndecided() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW() + 1);
        // A missed first attestation (slashed via the market), not a second chance.
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AttestationPending.selector, leaseId));
        _submitAs(nodeKey, leaseId, 1, keccak256("second"), measurement);
    }

    function test_WhenReattestationLeftUndecided() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL - 600);
        submitReport(leaseId, keccak256("second"));
        uint256 banked = REATTEST_INTERVAL - 600;
        vm.warp(block.timestamp + attestations.VERIFICATION_WINDOW());
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_AttestationPending.selector, leaseId));
        _submitAs(nodeKey, leaseId, 2, keccak256("third"), measurement);
        // Verifiers silent past the window: the node may submit again instead of the lease being stuck.
        vm.warp(block.timestamp + 1);
        _submitAs(nodeKey, leaseId, 2, keccak256("third"), measurement);
        assertEq(attestations.attestationNonce(leaseId), 3, "nonce");
        assertEq(attestations.attestedSeconds(leaseId, block.timestamp), banked, "the undecided one banks nothing");
        confirmReport(leaseId, keccak256("third"), true);
        vm.warp(block.timestamp + 100);
        assertEq(attestations.attestedSeconds(leaseId, block.timestamp), banked + 100, "the new one is paid");
    }

    function test_RevertWhen_ReattestTooEarly() external {
        uint256 leaseId = attestedLease();
        uint256 earliest = block.timestamp + REATTEST_INTERVAL / 2;
        vm.warp(earliest - 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_ReattestTooEarly.selector, leaseId, earliest));
        _submitAs(nodeKey, leaseId, 1, keccak256("second"), measurement);
        vm.warp(earliest);
        _submitAs(nodeKey, leaseId, 1, keccak256("second"), measurement);
    }

    function test_WhenReattestingEarlyAfterAChallenge() external {
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + 100);
        vm.prank(renter);
        market.challenge(leaseId);
        vm.warp(block.timestamp + 10);
        _submitAs(nodeKey, leaseId, 1, keccak256("answer"), measurement);
        assertEq(attestations.attestedSeconds(leaseId, block.timestamp), 100, "paid up to the challenge");
    }

    function test_WhenFirstAttestation() external {
        uint256 leaseId = acceptedLease();
        vm.expectEmit(true, true, false, true, address(attestations));
        emit IAttestationRegistry.AttestationSubmitted(leaseId, nodeKey, REPORT_HASH, measurement);
        vm.expectEmit(true, false, false, true, address(attestations));
        emit IAttestationRegistryCore.AttestationEvidence(leaseId, 0, TCB, CHIP_ID_HASH, SIGNER);
        submitReport(leaseId, REPORT_HASH);
        IAttestationRegistry.Attestation memory a = attestations.attestationOf(leaseId);
        assertEq(uint256(a.status), uint256(IAttestationRegistry.Status.Pending), "pending");
        assertEq(a.node, nodeKey, "node");
        assertEq(a.reportHash, REPORT_HASH, "report hash");
        assertEq(a.measurement, measurement, "measurement from the lease");
        assertEq(a.reportedTcb, TCB, "tcb");
        assertEq(a.submittedAt, block.timestamp, "submittedAt");
        assertEq(a.verifiedAt, 0, "not verified");
        assertEq(a.expiresAt, block.timestamp + REATTEST_INTERVAL, "expiresAt");
        assertEq(attestations.attestationNonce(leaseId), 1, "nonce bumped");
        assertEq(attestations.attestedSeconds(leaseId, block.timestamp + 100), 0, "pending covers nothing");
    }

    function testFuzz_WhenReattestingOnTime(uint256 after_) external {
        after_ = bound(after_, REATTEST_INTERVAL / 2, REATTEST_INTERVAL);
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + after_);
        submitReport(leaseId, keccak256("second"));
        assertEq(attestations.attestedSeconds(leaseId, block.timestamp + 1000), after_, "banked up to now");
        assertEq(attestations.attestationNonce(leaseId), 2, "nonce");
    }

    function testFuzz_WhenReattestingLate(uint256 late) external {
        late = bound(late, 1, 30 days);
        uint256 leaseId = attestedLease();
        vm.warp(block.timestamp + REATTEST_INTERVAL + late);
        submitReport(leaseId, keccak256("second"));
        confirmReport(leaseId, keccak256("second"), true);
        vm.warp(block.timestamp + 10);
        assertEq(attestations.attestedSeconds(leaseId, block.timestamp), uint256(REATTEST_INTERVAL) + 10, "gap unpaid");
    }
}
