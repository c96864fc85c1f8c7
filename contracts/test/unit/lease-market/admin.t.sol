// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {LeaseMarket} from "../../../src/LeaseMarket.sol";
import {IAttestationRegistryCore} from "../../../src/interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Admin_LeaseMarket_Test is Base {
    function test_RevertWhen_ConstructedWithZeroAddress() external {
        vm.expectRevert(Errors.LeaseMarket_ZeroAddress.selector);
        new LeaseMarket(IERC20(address(0)), INodeRegistry(address(nodes)), attestations, admin, 1 hours);
        vm.expectRevert(Errors.LeaseMarket_ZeroAddress.selector);
        new LeaseMarket(token, INodeRegistry(address(0)), attestations, admin, 1 hours);
        vm.expectRevert(Errors.LeaseMarket_ZeroAddress.selector);
        new LeaseMarket(token, INodeRegistry(address(nodes)), IAttestationRegistryCore(address(0)), admin, 1 hours);
    }

    function test_RevertWhen_CallerNotOwner() external {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        vm.prank(stranger);
        market.setAttestationWindow(2 hours);
    }

    function test_RevertWhen_WindowOutOfBounds() external {
        vm.startPrank(admin);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_InvalidAttestationWindow.selector, 59));
        market.setAttestationWindow(59);
        vm.expectRevert(abi.encodeWithSelector(Errors.LeaseMarket_InvalidAttestationWindow.selector, 1 days + 1));
        market.setAttestationWindow(1 days + 1);
        vm.stopPrank();
    }

    function test_WhenWindowWithinBounds() external {
        vm.expectEmit(address(market));
        emit ILeaseMarket.AttestationWindowSet(2 hours);
        vm.prank(admin);
        market.setAttestationWindow(2 hours);
        assertEq(market.attestationWindow(), 2 hours, "window");
    }
}
