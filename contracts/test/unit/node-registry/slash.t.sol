// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Node} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Slash_NodeRegistry_Test is Base {
    function test_RevertWhen_CallerNotLeaseMarket() external {
        registerAndStake();
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_CallerNotLeaseMarket.selector, admin));
        vm.prank(admin);
        nodes.slash(nodeKey, 1, 0);
    }

    function test_WhenNodeHasNoStake() external {
        registerNode();
        vm.prank(address(market));
        (uint256 taken, uint256 paid) = nodes.slash(nodeKey, 10e18, 10e18);
        assertEq(taken, 0, "nothing taken");
        assertEq(paid, 0, "nothing paid");
        assertEq(token.balanceOf(address(market)), 0, "nothing moved");
    }

    function testFuzz_WhenNodeHasStake(uint256 unstake, uint256 amount, uint256 compensation) external {
        registerAndStake();
        unstake = bound(unstake, 0, STAKE);
        amount = bound(amount, 1, 2 * STAKE);
        compensation = bound(compensation, 0, 2 * STAKE);
        if (unstake > 0) {
            vm.prank(operator);
            nodes.requestUnstake(nodeKey, unstake);
        }
        uint256 taken = amount < STAKE ? amount : STAKE;
        uint256 fromStake = taken - (taken <= unstake ? taken : unstake);
        uint256 paidExpected = compensation < taken ? compensation : taken;
        vm.expectEmit(true, false, false, true, address(nodes));
        emit INodeRegistry.Slashed(nodeKey, taken, fromStake, taken - fromStake);
        vm.expectEmit(true, false, false, true, address(nodes));
        emit INodeRegistry.SlashSplit(nodeKey, paidExpected, taken - paidExpected);
        vm.prank(address(market));
        (uint256 takenActual, uint256 paid) = nodes.slash(nodeKey, amount, compensation);
        assertEq(takenActual, taken, "up to the amount");
        assertEq(paid, paidExpected, "compensation, at most what was taken");
        Node memory node = nodes.getNode(nodeKey);
        assertEq(node.unbonding, unstake - (taken - fromStake), "unbonding first");
        assertEq(node.stake, STAKE - unstake - fromStake, "then active");
        assertEq(token.balanceOf(address(market)), paidExpected, "compensation sent to market");
        assertEq(token.balanceOf(address(nodes)), STAKE - paidExpected, "the rest stays in the registry");
        assertEq(nodes.burnedStake(), taken - paidExpected, "the rest is burned");
    }
}
