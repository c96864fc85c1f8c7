// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Lease, LeaseSpec, LeaseStatus, TeeType} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract CreateLease_LeaseMarket_Test is Base {
    function test_RevertWhen_SpecInvalid(uint8 which) external {
        LeaseSpec memory spec = leaseSpec();
        which = uint8(bound(which, 0, 3));
        if (which == 0) spec.teeType = TeeType.NONE;
        if (which == 1) spec.vcpu = 0;
        if (which == 2) spec.memoryMiB = 0;
        if (which == 3) spec.diskGiB = 0;
        vm.expectRevert(Errors.LeaseMarket_InvalidLeaseSpec.selector);
        vm.prank(renter);
        market.createLease(spec, MAX_PRICE, DEPOSIT, measurement);
    }

    function testFuzz_RevertWhen_ReattestIntervalOutOfRange(uint32 interval) external {
        vm.assume(interval < market.MIN_REATTEST_INTERVAL() || interval > market.MAX_REATTEST_INTERVAL());
        LeaseSpec memory spec = leaseSpec();
        spec.reattestInterval = interval;
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_InvalidReattestInterval.selector, interval));
        vm.prank(renter);
        market.createLease(spec, MAX_PRICE, DEPOSIT, measurement);
    }

    function test_RevertWhen_MaxPriceZero() external {
        vm.expectRevert(Errors.LeaseMarket_ZeroMaxPrice.selector);
        vm.prank(renter);
        market.createLease(leaseSpec(), 0, DEPOSIT, measurement);
    }

    function test_RevertWhen_DepositZero() external {
        vm.expectRevert(Errors.LeaseMarket_ZeroAmount.selector);
        vm.prank(renter);
        market.createLease(leaseSpec(), MAX_PRICE, 0, measurement);
    }

    function test_RevertWhen_MeasurementNot48Bytes(uint8 length) external {
        vm.assume(length != 48);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_InvalidMeasurementLength.selector, length));
        vm.prank(renter);
        market.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, new bytes(length));
    }

    function test_RevertWhen_NoAllowance() external {
        token.mint(stranger, DEPOSIT);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, DEPOSIT)
        );
        vm.prank(stranger);
        market.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
    }

    function testFuzz_WhenValid(uint128 deposit) external {
        deposit = uint128(bound(deposit, 1, 10_000e18));
        uint256 expectedId = market.nextLeaseId();
        vm.expectEmit(true, true, false, true, address(market));
        emit ILeaseMarket.LeaseCreated(expectedId, renter, leaseSpec(), MAX_PRICE, deposit, measurement);
        vm.prank(renter);
        uint256 leaseId = market.createLease(leaseSpec(), MAX_PRICE, deposit, measurement);
        assertEq(leaseId, expectedId, "id");
        assertEq(market.nextLeaseId(), expectedId + 1, "next id");
        Lease memory lease = market.getLease(leaseId);
        assertEq(lease.renter, renter, "renter");
        assertEq(uint256(lease.status), uint256(LeaseStatus.OPEN), "open");
        assertEq(lease.deposit, deposit, "deposit");
        assertEq(lease.vcpu, VCPU, "vcpu");
        assertEq(lease.minNodeStake, MIN_STAKE, "min stake");
        assertEq(lease.maxPricePerSecond, MAX_PRICE, "max price");
        assertEq(token.balanceOf(address(market)), deposit, "escrowed");
        assertEq(attestations.attestationNonce(leaseId), 0, "nonce starts at 0");
        assertEq(
            uint256(attestations.attestationOf(leaseId).status), uint256(IAttestationRegistry.Status.None), "none yet"
        );
        assertEq(market.refundable(leaseId), deposit, "all refundable");
    }
}
