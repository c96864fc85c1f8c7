// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Node} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract RequestUnstake_NodeRegistry_Test is Base {
    function setUp() public override {
        super.setUp();
        registerAndStake();
    }

    function test_RevertWhen_CallerNotOperator() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NotOperator.selector, nodeKey, nodeKey, operator));
        vm.prank(nodeKey);
        nodes.requestUnstake(nodeKey, 1);
    }

    function test_RevertWhen_AmountZero() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_ZeroAmount.selector, nodeKey));
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, 0);
    }

    function test_RevertWhen_AmountExceedsStake() external {
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_UnstakeExceedsStake.selector, nodeKey, STAKE + 1, STAKE)
        );
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, STAKE + 1);
    }

    function test_RevertWhen_StakeBonded() external {
        uint256 leaseId = createLease();
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        uint256 bond = MIN_STAKE * SLASH_BPS / 10_000;
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_StakeBonded.selector, nodeKey, STAKE - bond + 1, STAKE - bond)
        );
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, STAKE - bond + 1);
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, STAKE - bond);
    }

    function testFuzz_WhenAmountWithinStake(uint256 a, uint256 b) external {
        a = bound(a, 1, STAKE / 2);
        b = bound(b, 1, STAKE / 2);
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, a);
        vm.warp(block.timestamp + 1 days);
        vm.expectEmit(true, false, false, true, address(nodes));
        emit INodeRegistry.UnstakeRequested(nodeKey, b, a + b, block.timestamp + UNBONDING_DELAY);
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, b);
        Node memory node = nodes.getNode(nodeKey);
        assertEq(node.stake, STAKE - a - b, "active");
        assertEq(node.unbonding, a + b, "unbonding");
        assertEq(node.unbondingEndsAt, block.timestamp + UNBONDING_DELAY, "delay restarted");
        assertEq(token.balanceOf(address(nodes)), STAKE, "nothing left the registry");
    }
}
