// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Vm} from "./Vm.sol";

/// @title Test
/// @notice Minimal test base standing in for forge-std (not fetchable offline): the cheatcode
/// handle, assertion shorthands, `bound` for fuzz inputs, and the invariant target hooks forge
/// reads from a test contract.
abstract contract Test {
    /// @dev forge's cheatcode address: address(bytes20(uint160(uint256(keccak256("hevm cheat code"))))).
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);

    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetContracts;
    FuzzSelector[] private _targetSelectors;
    address[] private _targetSenders;

    // ---------------------------------------------------------------- invariant hooks

    function targetContract(address target) internal {
        _targetContracts.push(target);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetSelectors.push(selector);
    }

    function targetSender(address sender) internal {
        _targetSenders.push(sender);
    }

    /// @dev Read by forge to pick the contracts an invariant campaign calls.
    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    /// @dev Read by forge to restrict which functions of a target it calls.
    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }

    /// @dev Read by forge to restrict msg.sender during a campaign.
    function targetSenders() public view returns (address[] memory) {
        return _targetSenders;
    }

    // ---------------------------------------------------------------- helpers

    /// @dev Maps any fuzzed value into [min, max] without discarding runs (unlike vm.assume).
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + (x % (size + 1));
    }

    /// @dev The node key's EIP-712 consent to `operator`, built from the spec (not from the
    /// registry's own digest view) so the tests check the contract's encoding.
    function signNodeConsent(address registry, uint256 nodePrivateKey, address operator)
        internal
        view
        returns (bytes memory signature)
    {
        bytes32 domainSeparator = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("cvm NodeRegistry"),
                keccak256("1"),
                block.chainid,
                registry
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(keccak256("NodeConsent(address nodeKey,address operator)"), vm.addr(nodePrivateKey), operator)
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(nodePrivateKey, keccak256(abi.encodePacked("\x19\x01", domainSeparator, structHash)));
        signature = abi.encodePacked(r, s, v);
    }

    /// @dev The private key behind `makeAddr(name)`.
    function makeKey(string memory name) internal pure returns (uint256) {
        return uint256(keccak256(bytes(name)));
    }

    function makeAddr(string memory name) internal returns (address account) {
        account = vm.addr(uint256(keccak256(bytes(name))));
        vm.label(account, name);
    }

    function assertTrue(bool condition, string memory err) internal pure {
        vm.assertTrue(condition, err);
    }

    function assertFalse(bool condition, string memory err) internal pure {
        vm.assertFalse(condition, err);
    }

    function assertEq(uint256 a, uint256 b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(address a, address b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(bytes32 a, bytes32 b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(bytes memory a, bytes memory b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(bool a, bool b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertLe(uint256 a, uint256 b, string memory err) internal pure {
        vm.assertLe(a, b, err);
    }

    function assertGe(uint256 a, uint256 b, string memory err) internal pure {
        vm.assertGe(a, b, err);
    }
}
