// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Stake_NodeRegistry_Test is Base {
    function test_RevertWhen_NodeNotRegistered() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NodeNotRegistered.selector, nodeKey));
        vm.prank(operator);
        nodes.stake(nodeKey, 1);
    }

    function test_RevertWhen_CallerNotOperator() external {
        registerNode();
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NotOperator.selector, nodeKey, stranger, operator));
        vm.prank(stranger);
        nodes.stake(nodeKey, 1);
    }

    function test_RevertWhen_AmountZero() external {
        registerNode();
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_ZeroAmount.selector, nodeKey));
        vm.prank(operator);
        nodes.stake(nodeKey, 0);
    }

    function testFuzz_WhenAmountNotZero(uint256 first, uint256 second) external {
        first = bound(first, 1, 5000e18);
        second = bound(second, 1, 5000e18);
        registerNode();
        vm.prank(operator);
        nodes.stake(nodeKey, first);
        vm.expectEmit(true, true, false, true, address(nodes));
        emit INodeRegistry.Staked(nodeKey, operator, second, first + second);
        vm.prank(operator);
        nodes.stake(nodeKey, second);
        assertEq(nodes.getNode(nodeKey).stake, first + second, "stake");
        assertEq(token.balanceOf(address(nodes)), first + second, "tokens held");
        assertEq(token.balanceOf(operator), 10_000e18 - first - second, "tokens pulled");
    }
}
