// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Node, NodeSpec, TeeType} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract Register_NodeRegistry_Test is Base {
    function test_RevertWhen_NodeKeyIsZero() external {
        vm.expectRevert(Errors.NodeRegistry_ZeroAddress.selector);
        vm.prank(operator);
        nodes.register(address(0), nodeSpec(), "", nodeConsent(operator));
    }

    function test_RevertWhen_NodeKeyAlreadyRegistered() external {
        registerNode();
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_NodeAlreadyRegistered.selector, nodeKey, operator));
        vm.prank(stranger);
        nodes.register(nodeKey, nodeSpec(), "", nodeConsent(stranger));
    }

    function test_RevertWhen_SpecInvalid(uint8 which) external {
        NodeSpec memory spec = nodeSpec();
        which = uint8(bound(which, 0, 3));
        if (which == 0) spec.teeType = TeeType.NONE;
        if (which == 1) spec.vcpu = 0;
        if (which == 2) spec.memoryMiB = 0;
        if (which == 3) spec.diskGiB = 0;
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_InvalidNodeSpec.selector, nodeKey));
        vm.prank(operator);
        nodes.register(nodeKey, spec, "", nodeConsent(operator));
    }

    function test_RevertWhen_SignatureByAnotherKey() external {
        bytes memory signature = signNodeConsent(address(nodes), makeKey("stranger"), operator);
        expectInvalidSignature(signature);
    }

    /// @dev The front-run: a stranger replays the consent the node key gave to the operator.
    function test_RevertWhen_SignatureForAnotherOperator() external {
        bytes memory signature = nodeConsent(operator);
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_InvalidNodeKeySignature.selector, nodeKey, stranger));
        vm.prank(stranger);
        nodes.register(nodeKey, nodeSpec(), "", signature);
    }

    function test_RevertWhen_SignatureForAnotherRegistry() external {
        bytes memory signature = signNodeConsent(address(market), makeKey("nodeKey"), operator);
        expectInvalidSignature(signature);
    }

    function test_RevertWhen_SignatureMalformed() external {
        bytes memory signature = nodeConsent(operator);
        expectInvalidSignature("");
        // Truncated: 64 bytes without v.
        bytes memory truncated = new bytes(64);
        for (uint256 i; i < 64; ++i) {
            truncated[i] = signature[i];
        }
        expectInvalidSignature(truncated);
        // Right length, invalid v.
        signature[64] = bytes1(uint8(29));
        expectInvalidSignature(signature);
    }

    function expectInvalidSignature(bytes memory signature) private {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_InvalidNodeKeySignature.selector, nodeKey, operator));
        vm.prank(operator);
        nodes.register(nodeKey, nodeSpec(), "", signature);
    }

    function test_WhenNodeKeyConsentsToCaller() external {
        vm.expectEmit(true, true, false, true, address(nodes));
        emit INodeRegistry.NodeRegistered(nodeKey, operator, nodeSpec(), "https://node.example:8443");
        registerNode();
        Node memory node = nodes.getNode(nodeKey);
        assertEq(node.operator, operator, "operator");
        assertEq(nodes.operatorOf(nodeKey), operator, "operatorOf");
        assertEq(uint256(node.teeType), uint256(TeeType.SEV_SNP), "tee");
        assertEq(node.vcpu, 64, "vcpu");
        assertEq(node.memoryMiB, 256 * 1024, "memory");
        assertEq(node.diskGiB, 4096, "disk");
        assertEq(node.region, 276, "region");
        assertEq(node.pricePerSecondPerUnit, PRICE_PER_VCPU, "price");
        assertEq(node.stake, 0, "no stake yet");
    }
}
