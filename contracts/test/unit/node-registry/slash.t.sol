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
        nodes.slash(nodeKey);
    }

    function test_WhenNodeHasNoStake() external {
        registerNode();
        vm.prank(address(market));
        uint256 amount = nodes.slash(nodeKey);
        assertEq(amount, 0, "nothing taken");
        assertEq(token.balanceOf(address(market)), 0, "nothing moved");
    }

    function testFuzz_WhenNodeHasStake(uint256 unstake) external {
        registerAndStake();
        unstake = bound(unstake, 0, STAKE);
        if (unstake > 0) {
            vm.prank(operator);
            nodes.requestUnstake(nodeKey, unstake);
        }
        uint256 expected = STAKE * SLASH_BPS / 10_000;
        uint256 fromStake = expected <= STAKE - unstake ? expected : STAKE - unstake;
        vm.expectEmit(true, false, false, true, address(nodes));
        emit INodeRegistry.Slashed(nodeKey, expected, fromStake, expected - fromStake);
        assertEq(nodes.slashAmountOf(nodeKey), expected, "slashAmountOf predicts the slash");
        vm.prank(address(market));
        uint256 amount = nodes.slash(nodeKey);
        assertEq(amount, expected, "slashBps of total stake");
        Node memory node = nodes.getNode(nodeKey);
        assertEq(node.stake, STAKE - unstake - fromStake, "active first");
        assertEq(node.unbonding, unstake - (expected - fromStake), "then unbonding");
        assertEq(token.balanceOf(address(market)), expected, "sent to market");
        assertEq(token.balanceOf(address(nodes)), STAKE - expected, "registry keeps the rest");
    }
}
