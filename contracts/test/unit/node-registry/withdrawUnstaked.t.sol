// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Node} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract WithdrawUnstaked_NodeRegistry_Test is Base {
    function setUp() public override {
        super.setUp();
        registerAndStake();
    }

    function test_RevertWhen_CallerNotOperator() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NotOperator.selector, nodeKey, stranger, operator));
        vm.prank(stranger);
        nodes.withdrawUnstaked(nodeKey);
    }

    function test_RevertWhen_NothingUnbonding() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NothingUnbonding.selector, nodeKey));
        vm.prank(operator);
        nodes.withdrawUnstaked(nodeKey);
    }

    function test_RevertWhen_DelayNotPassed() external {
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, 10e18);
        uint256 unlocksAt = block.timestamp + UNBONDING_DELAY;
        vm.warp(unlocksAt - 1);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_UnbondingNotFinished.selector, nodeKey, unlocksAt, unlocksAt - 1)
        );
        vm.prank(operator);
        nodes.withdrawUnstaked(nodeKey);
    }

    function test_WhenDelayPassed() external {
        vm.prank(operator);
        nodes.requestUnstake(nodeKey, 10e18);
        vm.warp(block.timestamp + UNBONDING_DELAY);
        uint256 before = token.balanceOf(operator);
        vm.expectEmit(true, true, false, true, address(nodes));
        emit INodeRegistry.Unstaked(nodeKey, operator, 10e18);
        vm.prank(operator);
        uint256 amount = nodes.withdrawUnstaked(nodeKey);
        assertEq(amount, 10e18, "amount");
        assertEq(token.balanceOf(operator) - before, 10e18, "paid to operator");
        Node memory node = nodes.getNode(nodeKey);
        assertEq(node.unbonding, 0, "cleared");
        assertEq(node.stake, STAKE - 10e18, "active untouched");
    }
}
