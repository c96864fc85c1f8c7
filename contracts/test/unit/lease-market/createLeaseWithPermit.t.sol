// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {LeaseStatus} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";

contract CreateLeaseWithPermit_LeaseMarket_Test is Base {
    bytes32 private constant _PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    function setUp() public override {
        super.setUp();
        // The renter relies on the permit alone.
        vm.prank(renter);
        token.approve(address(market), 0);
    }

    function _sign(uint256 value, uint256 deadline) private view returns (uint8 v, bytes32 r, bytes32 s) {
        bytes32 structHash =
            keccak256(abi.encode(_PERMIT_TYPEHASH, renter, address(market), value, token.nonces(renter), deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (v, r, s) = vm.sign(renterKey, digest);
    }

    function test_WhenPermitValid() external {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _sign(DEPOSIT, deadline);
        vm.prank(renter);
        uint256 leaseId = market.createLeaseWithPermit(leaseSpec(), MAX_PRICE, DEPOSIT, measurement, deadline, v, r, s);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "created");
        assertEq(token.balanceOf(address(market)), DEPOSIT, "escrowed");
        assertEq(token.nonces(renter), 1, "permit consumed");
        assertEq(token.allowance(renter, address(market)), 0, "allowance used up");
    }

    function test_WhenPermitFrontRun() external {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _sign(DEPOSIT, deadline);
        // Someone copies the permit from the mempool and submits it first.
        vm.prank(stranger);
        token.permit(renter, address(market), DEPOSIT, deadline, v, r, s);
        vm.prank(renter);
        uint256 leaseId = market.createLeaseWithPermit(leaseSpec(), MAX_PRICE, DEPOSIT, measurement, deadline, v, r, s);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "still created");
    }

    function test_RevertWhen_PermitInvalidAndNoAllowance() external {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _sign(DEPOSIT - 1, deadline); // signed for another value
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, DEPOSIT)
        );
        vm.prank(renter);
        market.createLeaseWithPermit(leaseSpec(), MAX_PRICE, DEPOSIT, measurement, deadline, v, r, s);
    }
}
