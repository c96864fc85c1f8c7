// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {AttestationRegistry} from "../../../src/AttestationRegistry.sol";
import {IAttestationRegistryCore} from "../../../src/interfaces/IAttestationRegistryCore.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Admin_AttestationRegistry_Test is Base {
    function test_RevertWhen_ConstructedBadly() external {
        vm.expectRevert(Errors.AttestationRegistry_ZeroAddress.selector);
        new AttestationRegistry(address(0), 1, 15 minutes);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidQuorum.selector, 0));
        new AttestationRegistry(admin, 0, 15 minutes);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidChallengeWindow.selector, 29));
        new AttestationRegistry(admin, 1, 29);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_InvalidChallengeWindow.selector, 1 days + 1)
        );
        new AttestationRegistry(admin, 1, 1 days + 1);
    }

    function test_ChallengeWindowIsFixedAtDeployment() external {
        assertEq(new AttestationRegistry(admin, 1, 30).CHALLENGE_WINDOW(), 30, "lower bound");
        assertEq(new AttestationRegistry(admin, 1, 1 days).CHALLENGE_WINDOW(), 1 days, "upper bound");
        assertEq(attestations.CHALLENGE_WINDOW(), 15 minutes, "the default deployment's");
    }

    function test_RevertWhen_CallerNotAdmin() external {
        bytes memory err = abi.encodeWithSelector(
            IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, attestations.DEFAULT_ADMIN_ROLE()
        );
        bytes32 role = verifierRole();
        vm.startPrank(stranger);
        vm.expectRevert(err);
        attestations.setQuorum(2);
        vm.expectRevert(err);
        attestations.setLeaseMarket(stranger);
        vm.expectRevert(err);
        attestations.grantRole(role, stranger);
        vm.stopPrank();
    }

    function test_RevertWhen_QuorumInvalid() external {
        vm.startPrank(admin);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidQuorum.selector, 0));
        attestations.setQuorum(0);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidQuorum.selector, 256));
        attestations.setQuorum(256);
        vm.stopPrank();
    }

    function test_RevertWhen_LeaseMarketZero() external {
        AttestationRegistry fresh = new AttestationRegistry(admin, 1, 15 minutes);
        vm.expectRevert(Errors.AttestationRegistry_ZeroAddress.selector);
        vm.prank(admin);
        fresh.setLeaseMarket(address(0));
    }

    function test_RevertWhen_LeaseMarketAlreadySet() external {
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestationRegistry_LeaseMarketAlreadySet.selector, address(market))
        );
        vm.prank(admin);
        attestations.setLeaseMarket(stranger);
    }

    function test_WhenQuorumValid() external {
        vm.expectEmit(address(attestations));
        emit IAttestationRegistryCore.QuorumSet(3);
        vm.prank(admin);
        attestations.setQuorum(3);
        assertEq(attestations.quorum(), 3, "quorum");
    }
}
