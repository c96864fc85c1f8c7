// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Lease, LeaseSpec, LeaseStatus, NodeSpec, TeeType} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract AcceptLease_LeaseMarket_Test is Base {
    uint256 private leaseId;

    function setUp() public override {
        super.setUp();
        registerAndStake();
        leaseId = createLease();
    }

    function _updateNode(NodeSpec memory spec) private {
        vm.prank(operator);
        nodes.update(nodeKey, spec, "");
    }

    function test_RevertWhen_LeaseNotFound() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_LeaseNotFound.selector, 99));
        vm.prank(nodeKey);
        market.acceptLease(99);
    }

    function test_RevertWhen_LeaseNotOpen() external {
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.LeaseMarket_UnexpectedStatus.selector, leaseId, LeaseStatus.ACTIVE, LeaseStatus.OPEN
            )
        );
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_RevertWhen_NodeNotRegistered() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_NodeNotRegistered.selector, stranger));
        vm.prank(stranger);
        market.acceptLease(leaseId);
    }

    function test_RevertWhen_TeeTypeMismatch() external {
        NodeSpec memory spec = nodeSpec();
        spec.teeType = TeeType.TDX;
        _updateNode(spec);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.LeaseMarket_TeeTypeMismatch.selector, leaseId, TeeType.SEV_SNP, TeeType.TDX)
        );
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_RevertWhen_CapacityTooLow(uint8 which) external {
        NodeSpec memory spec = nodeSpec();
        which = uint8(bound(which, 0, 2));
        if (which == 0) spec.vcpu = VCPU - 1;
        if (which == 1) spec.memoryMiB = 8191;
        if (which == 2) spec.diskGiB = 99;
        _updateNode(spec);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CapacityTooLow.selector, leaseId, nodeKey));
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_RevertWhen_StakeBelowLeaseMinimum() external {
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, STAKE - MIN_STAKE + 1);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.LeaseMarket_StakeTooLow.selector, leaseId, MIN_STAKE - 1, MIN_STAKE)
        );
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_RevertWhen_StakeBelowRegistryMinimum() external {
        vm.prank(admin);
        nodes.setMinStake(STAKE + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_StakeTooLow.selector, leaseId, STAKE, STAKE + 1));
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_RevertWhen_PriceTooHigh() external {
        NodeSpec memory spec = nodeSpec();
        spec.pricePerSecondPerUnit = uint96(MAX_PRICE / VCPU + 1);
        _updateNode(spec);
        uint256 tooHigh = uint256(spec.pricePerSecondPerUnit) * VCPU;
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_PriceTooHigh.selector, leaseId, tooHigh, MAX_PRICE));
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function test_WhenChecksPass() external {
        vm.warp(block.timestamp + 5);
        vm.expectEmit(true, true, false, true, address(market));
        emit ILeaseMarket.LeaseAccepted(leaseId, nodeKey, rate());
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        Lease memory lease = market.getLease(leaseId);
        assertEq(uint256(lease.status), uint256(LeaseStatus.ACTIVE), "active");
        assertEq(lease.nodeKey, nodeKey, "node");
        assertEq(lease.ratePerSecond, rate(), "rate");
        assertEq(lease.acceptedAt, block.timestamp, "acceptedAt");
        (address key, LeaseStatus status) = market.leaseNode(leaseId);
        assertEq(key, nodeKey, "leaseNode key");
        assertEq(uint256(status), uint256(LeaseStatus.ACTIVE), "leaseNode status");
        assertEq(market.earned(leaseId), 0, "nothing earned before attestation");
        uint256 bond = MIN_STAKE * SLASH_BPS / 10_000;
        assertEq(lease.bond, bond, "bond fixed: required stake x slashBps");
        assertEq(lease.attestBy, block.timestamp + ATTESTATION_WINDOW, "deadline fixed");
        assertEq(market.bondedStake(nodeKey), bond, "bond locked");
        assertEq(market.nodeUsage(nodeKey).vcpu, VCPU, "capacity taken");
    }

    function test_RevertWhen_FreeStakeTooLow() external {
        // Stake 1000: a lease requiring all of it bonds 100 (10%), so the 11th finds no free stake.
        uint96 required = uint96(STAKE);
        uint256 bond = uint256(required) * SLASH_BPS / 10_000;
        uint256 last;
        for (uint256 i; i <= STAKE / bond; ++i) {
            vm.prank(renter);
            last = market.createLease(_spec(required), MAX_PRICE, 1, measurement);
            if (i < STAKE / bond) {
                vm.prank(nodeKey);
                market.acceptLease(last);
            }
        }
        uint256 free = STAKE - (STAKE / bond) * bond;
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_FreeStakeTooLow.selector, last, free, bond));
        vm.prank(nodeKey);
        market.acceptLease(last);
    }

    function test_RevertWhen_CapacityUsedByOtherLeases() external {
        LeaseSpec memory spec = leaseSpec();
        spec.vcpu = 40; // the node has 64
        vm.startPrank(renter);
        uint256 first = market.createLease(spec, uint64(PRICE_PER_VCPU) * 40, DEPOSIT, measurement);
        uint256 second = market.createLease(spec, uint64(PRICE_PER_VCPU) * 40, DEPOSIT, measurement);
        vm.stopPrank();
        vm.prank(nodeKey);
        market.acceptLease(first);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_CapacityTooLow.selector, second, nodeKey));
        vm.prank(nodeKey);
        market.acceptLease(second);
    }

    function _spec(uint96 minNodeStake) private pure returns (LeaseSpec memory spec) {
        spec = leaseSpec();
        spec.minNodeStake = minNodeStake;
    }
}
