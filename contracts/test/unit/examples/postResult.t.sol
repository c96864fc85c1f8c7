// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestedService} from "../../../src/examples/AttestedService.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract PostResult_AttestedService_Test is Base {
    AttestedService private service;

    function setUp() public override {
        super.setUp();
        service = new AttestedService(attestations, measurement);
    }

    function test_RevertWhen_NotAttested() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestedService_NotAttested.selector, leaseId));
        vm.prank(nodeKey);
        service.postResult(leaseId, "x");
    }

    function test_RevertWhen_OtherMeasurement() external {
        uint256 leaseId = attestedLease();
        AttestedService other = new AttestedService(attestations, new bytes(48));
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestedService_NotAttested.selector, leaseId));
        vm.prank(nodeKey);
        other.postResult(leaseId, "x");
    }

    function test_RevertWhen_CallerNotLeaseNode() external {
        uint256 leaseId = attestedLease();
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestedService_NotLeaseNode.selector, leaseId, stranger, nodeKey)
        );
        vm.prank(stranger);
        service.postResult(leaseId, "x");
    }

    function test_WhenAttested() external {
        uint256 leaseId = attestedLease();
        vm.expectEmit(true, false, false, true, address(service));
        emit AttestedService.ResultPosted(leaseId, "result");
        vm.prank(nodeKey);
        service.postResult(leaseId, "result");
        assertEq(service.results(leaseId), "result", "stored");
    }
}
