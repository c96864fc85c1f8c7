// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {NodeRegistry} from "../../../src/NodeRegistry.sol";
import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

contract Admin_NodeRegistry_Test is Base {
    function test_RevertWhen_CallerNotOwner() external {
        bytes memory err = abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger);
        vm.startPrank(stranger);
        vm.expectRevert(err);
        nodes.setMinStake(1);
        vm.expectRevert(err);
        nodes.setUnbondingDelay(1);
        vm.expectRevert(err);
        nodes.setSlashBps(1);
        vm.expectRevert(err);
        nodes.setLeaseMarket(stranger);
        vm.stopPrank();
    }

    function test_RevertWhen_SlashBpsTooHigh() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_SlashBpsTooHigh.selector, 5001, 5000));
        vm.prank(admin);
        nodes.setSlashBps(5001);
    }

    function test_RevertWhen_UnbondingDelayTooLong() external {
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_UnbondingDelayTooLong.selector, 30 days + 1, 30 days)
        );
        vm.prank(admin);
        nodes.setUnbondingDelay(30 days + 1);
    }

    function test_RevertWhen_UnbondingDelayTooShort() external {
        uint256 minDelay = market.minUnbondingDelay();
        vm.expectRevert(
            abi.encodeWithSelector(Errors.NodeRegistry_UnbondingDelayTooShort.selector, minDelay - 1, minDelay)
        );
        vm.prank(admin);
        nodes.setUnbondingDelay(minDelay - 1);
        // A fresh registry with a short delay cannot be wired to the market.
        NodeRegistry fresh = new NodeRegistry(token, admin, MIN_STAKE, 1 hours, SLASH_BPS);
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_UnbondingDelayTooShort.selector, 1 hours, minDelay));
        vm.prank(admin);
        fresh.setLeaseMarket(address(market));
    }

    function test_RevertWhen_LeaseMarketZero() external {
        NodeRegistry fresh = new NodeRegistry(token, admin, 0, 0, 0);
        vm.expectRevert(Errors.NodeRegistry_ZeroAddress.selector);
        vm.prank(admin);
        fresh.setLeaseMarket(address(0));
    }

    function test_RevertWhen_LeaseMarketAlreadySet() external {
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_LeaseMarketAlreadySet.selector, address(market)));
        vm.prank(admin);
        nodes.setLeaseMarket(stranger);
    }

    function test_RevertWhen_ConstructedWithBadParameters() external {
        vm.expectRevert(Errors.NodeRegistry_ZeroAddress.selector);
        new NodeRegistry(IERC20(address(0)), admin, 0, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_SlashBpsTooHigh.selector, 9000, 5000));
        new NodeRegistry(token, admin, 0, 0, 9000);
        vm.expectRevert(abi.encodeWithSelector(Errors.NodeRegistry_UnbondingDelayTooLong.selector, 31 days, 30 days));
        new NodeRegistry(token, admin, 0, 31 days, 0);
    }

    function test_WhenValues() external {
        vm.startPrank(admin);
        vm.expectEmit(address(nodes));
        emit INodeRegistry.MinStakeSet(5);
        nodes.setMinStake(5);
        vm.expectEmit(address(nodes));
        emit INodeRegistry.UnbondingDelaySet(9 days);
        nodes.setUnbondingDelay(9 days);
        vm.expectEmit(address(nodes));
        emit INodeRegistry.SlashBpsSet(5000);
        nodes.setSlashBps(5000);
        vm.stopPrank();
        assertEq(nodes.minStake(), 5, "minStake");
        assertEq(nodes.unbondingDelay(), 9 days, "delay");
        assertEq(nodes.slashBps(), 5000, "slashBps");
    }
}
