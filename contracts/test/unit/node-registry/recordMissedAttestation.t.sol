// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract RecordMissedAttestation_NodeRegistry_Test is Base {
    function test_RevertWhen_CallerNotLeaseMarket() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_CallerNotLeaseMarket.selector, operator));
        vm.prank(operator);
        nodes.recordMissedAttestation(nodeKey);
    }

    function test_WhenCallerIsLeaseMarket() external {
        registerNode();
        vm.startPrank(address(market));
        nodes.recordMissedAttestation(nodeKey);
        vm.expectEmit(true, false, false, true, address(nodes));
        emit INodeRegistry.MissedAttestationRecorded(nodeKey, 2);
        nodes.recordMissedAttestation(nodeKey);
        vm.stopPrank();
        assertEq(nodes.getNode(nodeKey).missedAttestations, 2, "counted");
    }
}
