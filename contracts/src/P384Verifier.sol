// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {P384} from "./libraries/P384.sol";

/// @title P384Verifier
/// @notice ECDSA P-384 verification as a contract of its own: solarity's ECDSA384 is large, and
/// SnpVerifier with it inside would pass the 24,576-byte code size limit (EIP-170). SnpVerifier
/// deploys one in its constructor; anyone may call it.
contract P384Verifier {
    /// @notice True if (r, s) (48 bytes each, big-endian) signs the 48-byte SHA-384 `digest`
    /// under the P-384 public key x || y (96 bytes).
    function verify(bytes calldata digest, bytes calldata r, bytes calldata s, bytes calldata pubKey)
        external
        view
        returns (bool)
    {
        return P384.verify(digest, r, s, pubKey);
    }
}
