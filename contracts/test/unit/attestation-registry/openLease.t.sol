// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract OpenLease_AttestationRegistry_Test is Base {
    function test_RevertWhen_CallerNotLeaseMarket() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_CallerNotLeaseMarket.selector, renter));
        vm.prank(renter);
        attestations.openLease(1, measurement, 1);
    }

    function test_RevertWhen_MeasurementNot48Bytes() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidMeasurementLength.selector, 32));
        vm.prank(address(market));
        attestations.openLease(1, new bytes(32), 1);
    }

    function test_RevertWhen_IntervalZero() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_ZeroReattestInterval.selector, 1));
        vm.prank(address(market));
        attestations.openLease(1, measurement, 0);
    }

    function test_RevertWhen_AlreadyOpened() external {
        uint256 leaseId = createLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_LeaseAlreadyOpened.selector, leaseId));
        vm.prank(address(market));
        attestations.openLease(leaseId, measurement, 1);
    }

    function test_WhenNew() external {
        uint256 leaseId = createLease();
        IAttestationRegistry.Attestation memory a = attestations.attestationOf(leaseId);
        assertEq(uint256(a.status), uint256(IAttestationRegistry.Status.None), "status None");
        assertEq(a.reportHash, bytes32(0), "no report hash (placeholder hidden)");
        assertEq(a.node, address(0), "no node");
        assertEq(attestations.attestationNonce(leaseId), 0, "nonce");
        assertFalse(attestations.isAttested(leaseId, measurement), "not attested");
    }
}
