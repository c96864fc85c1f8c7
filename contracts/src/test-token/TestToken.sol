// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title TestToken
/// @notice FOR LOCAL CHAINS AND TESTS ONLY: an ERC-20 with EIP-2612 permit that anyone can mint.
/// Real deployments pay and stake in an existing token.
contract TestToken is ERC20Permit {
    constructor() ERC20("cvm Test Token", "CVMT") ERC20Permit("cvm Test Token") {}

    /// @notice Mints `amount` to `to`. Unrestricted on purpose: this token has no value.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
