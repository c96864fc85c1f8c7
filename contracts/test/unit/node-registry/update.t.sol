// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Node, NodeSpec, TeeType} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Update_NodeRegistry_Test is Base {
    function test_RevertWhen_NodeNotRegistered() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NodeNotRegistered.selector, nodeKey));
        vm.prank(operator);
        nodes.update(nodeKey, nodeSpec(), "");
    }

    function test_RevertWhen_CallerNotOperator() external {
        registerNode();
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NotOperator.selector, nodeKey, nodeKey, operator));
        vm.prank(nodeKey);
        nodes.update(nodeKey, nodeSpec(), "");
    }

    function test_RevertWhen_SpecInvalid() external {
        registerNode();
        NodeSpec memory spec = nodeSpec();
        spec.vcpu = 0;
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_InvalidNodeSpec.selector, nodeKey));
        vm.prank(operator);
        nodes.update(nodeKey, spec, "");
    }

    function test_WhenSpecValid() external {
        registerAndStake();
        NodeSpec memory spec = nodeSpec();
        spec.teeType = TeeType.TDX;
        spec.pricePerSecondPerUnit = 7;
        spec.region = 840;
        vm.expectEmit(true, false, false, true, address(nodes));
        emit INodeRegistry.NodeUpdated(nodeKey, spec, "https://new.example");
        vm.prank(operator);
        nodes.update(nodeKey, spec, "https://new.example");
        Node memory node = nodes.getNode(nodeKey);
        assertEq(uint256(node.teeType), uint256(TeeType.TDX), "tee");
        assertEq(node.pricePerSecondPerUnit, 7, "price");
        assertEq(node.region, 840, "region");
        assertEq(node.stake, STAKE, "stake kept");
        assertEq(node.operator, operator, "operator kept");
    }
}
