// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "../../../src/interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {LeaseStatus, NodeUsage} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

/// @dev The accept of an open lease and its first attestation in one transaction (issue 22).
contract AcceptAndSubmit_AttestationRegistry_Test is Base {
    function _acceptAndSubmit(address caller, uint256 leaseId, uint256 nonce, bytes memory m) private {
        vm.prank(caller);
        attestations.acceptAndSubmit(leaseId, nonce, REPORT_HASH, m, TCB, CHIP_ID_HASH, SIGNER);
    }

    /// @dev Neither effect took place: the lease is open, nothing submitted, nothing bonded.
    function _assertUntouched(uint256 leaseId) private view {
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "lease still open");
        assertEq(market.getLease(leaseId).nodeKey, address(0), "no node");
        assertEq(attestations.attestationNonce(leaseId), 0, "nothing submitted");
        assertEq(uint256(attestations.attestationOf(leaseId).status), 0, "no attestation");
        NodeUsage memory usage = market.nodeUsage(nodeKey);
        assertEq(usage.bonded, 0, "nothing bonded");
        assertEq(usage.vcpu, 0, "no capacity used");
    }

    function test_WhenLeaseOpen_AcceptsAndSubmits() external {
        registerAndStake();
        uint256 leaseId = createLease();
        vm.expectEmit(true, true, false, true, address(market));
        emit ILeaseMarket.LeaseAccepted(leaseId, nodeKey, rate());
        vm.expectEmit(true, true, false, true, address(attestations));
        emit IAttestationRegistry.AttestationSubmitted(leaseId, nodeKey, REPORT_HASH, measurement);
        vm.expectEmit(true, false, false, true, address(attestations));
        emit IAttestationRegistryCore.AttestationEvidence(leaseId, 0, TCB, CHIP_ID_HASH, SIGNER);
        _acceptAndSubmit(nodeKey, leaseId, 0, measurement);

        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.ACTIVE), "active");
        assertEq(market.getLease(leaseId).nodeKey, nodeKey, "the caller is the node");
        assertEq(market.getLease(leaseId).acceptedAt, block.timestamp, "accepted now");
        IAttestationRegistry.Attestation memory a = attestations.attestationOf(leaseId);
        assertEq(uint256(a.status), uint256(IAttestationRegistry.Status.Pending), "pending");
        assertEq(a.node, nodeKey, "node");
        assertEq(a.submittedAt, block.timestamp, "submitted in the same block");
        assertEq(attestations.attestationNonce(leaseId), 1, "nonce bumped");
        assertEq(attestations.signerOf(leaseId), SIGNER, "signer");
        // The verifier confirms it as any other first attestation.
        confirmReport(leaseId, REPORT_HASH, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "attested");
        // Something was submitted: no free decline any more.
        vm.prank(nodeKey);
        vm.expectRevert();
        market.declineLease(leaseId);
    }

    function test_RevertWhen_AcceptForCalledByOthers() external {
        registerAndStake();
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CallerNotAttestationRegistry.selector, nodeKey));
        vm.prank(nodeKey);
        market.acceptFor(leaseId, nodeKey);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CallerNotAttestationRegistry.selector, renter));
        vm.prank(renter);
        market.acceptFor(leaseId, nodeKey);
        _assertUntouched(leaseId);
    }

    function test_RevertWhen_LeaseNotOpen() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.ACTIVE, LeaseStatus.OPEN
            )
        );
        _acceptAndSubmit(nodeKey, leaseId, 0, measurement);
        assertEq(attestations.attestationNonce(leaseId), 0, "nothing submitted");
    }

    function test_RevertWhen_LeaseClosedByRenter() external {
        registerAndStake();
        uint256 leaseId = createLease();
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.CLOSED, LeaseStatus.OPEN
            )
        );
        _acceptAndSubmit(nodeKey, leaseId, 0, measurement);
    }

    function test_RevertWhen_NodeNotRegistered() external {
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NodeNotRegistered.selector, operator));
        _acceptAndSubmit(operator, leaseId, 0, measurement);
    }

    function test_RevertWhen_DeclinedBefore() external {
        uint256 leaseId = acceptedLease();
        vm.prank(nodeKey);
        market.declineLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_DeclinedBefore.selector, leaseId, nodeKey));
        _acceptAndSubmit(nodeKey, leaseId, 0, measurement);
        _assertUntouched(leaseId);
    }

    function test_RevertWhen_StaleNonce_NothingAccepted() external {
        registerAndStake();
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_StaleNonce.selector, leaseId, 1, 0));
        _acceptAndSubmit(nodeKey, leaseId, 1, measurement);
        _assertUntouched(leaseId);
    }

    function test_RevertWhen_MeasurementMismatch_RevertsBothEffects() external {
        registerAndStake();
        uint256 leaseId = createLease();
        bytes memory other = bytes.concat(measurement);
        other[0] = bytes1(uint8(other[0]) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_MeasurementMismatch.selector, leaseId));
        _acceptAndSubmit(nodeKey, leaseId, 0, other);
        _assertUntouched(leaseId);
        // The lease stays open to anyone, this node included (a failed combined accept is no decline).
        _acceptAndSubmit(nodeKey, leaseId, 0, measurement);
        assertEq(market.getLease(leaseId).nodeKey, nodeKey, "accepted by the retry");
    }

    function test_RevertWhen_SignerIsTheNodeKey() external {
        registerAndStake();
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidSigner.selector, leaseId, nodeKey));
        vm.prank(nodeKey);
        attestations.acceptAndSubmit(leaseId, 0, REPORT_HASH, measurement, TCB, CHIP_ID_HASH, nodeKey);
        _assertUntouched(leaseId);
    }

    /// @dev A lease that failed over is re-accepted through the combined path: a new segment whose
    /// first report binds the lease's running nonce (read while it is open), not 0.
    function test_WhenFailedOver_NewNodeAcceptsAndSubmits_NonceKeepsCounting() external {
        address operator2 = makeAddr("operator2");
        address nodeKey2 = makeAddr("nodeKey2");
        token.mint(operator2, 10_000e18);
        vm.startPrank(operator2);
        token.approve(address(nodes), type(uint256).max);
        nodes.register(
            nodeKey2, nodeSpec(), "https://node2.example", signNodeConsent(address(nodes), makeKey("nodeKey2"), operator2)
        );
        nodes.stake(nodeKey2, STAKE);
        vm.stopPrank();

        uint256 leaseId = attestedLease();
        setPolicy(leaseId, true);
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        market.failover(leaseId);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "open again");
        uint256 nonce = attestations.attestationNonce(leaseId);
        assertEq(nonce, 1, "the old node's submission counted");

        // A replay of a report bound to the old segment's nonce is refused, and nothing is accepted.
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_StaleNonce.selector, leaseId, 0, nonce));
        _acceptAndSubmit(nodeKey2, leaseId, 0, measurement);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "still open");

        _acceptAndSubmit(nodeKey2, leaseId, nonce, measurement);
        assertEq(market.getLease(leaseId).nodeKey, nodeKey2, "the new node");
        assertEq(attestations.attestationNonce(leaseId), nonce + 1, "the nonce keeps counting");
        assertEq(attestations.progressOf(leaseId).nonce, 1, "first of the new segment");
        confirmReport(leaseId, REPORT_HASH, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "attested by the new node");
    }

    /// @dev The same effects as acceptLease followed by submit, in one call (compare the gas report).
    function test_SameStateAsAcceptThenSubmit() external {
        registerAndStake();
        uint256 combined = createLease();
        uint256 separate = createLease();
        _acceptAndSubmit(nodeKey, combined, 0, measurement);
        vm.prank(nodeKey);
        market.acceptLease(separate);
        submitReport(separate, REPORT_HASH);
        IAttestationRegistry.Attestation memory a = attestations.attestationOf(combined);
        IAttestationRegistry.Attestation memory b = attestations.attestationOf(separate);
        assertEq(keccak256(abi.encode(a)), keccak256(abi.encode(b)), "same attestation");
        assertEq(
            keccak256(abi.encode(market.getLease(combined))),
            keccak256(abi.encode(market.getLease(separate))),
            "same lease"
        );
    }
}
