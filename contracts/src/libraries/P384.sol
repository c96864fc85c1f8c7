// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ECDSA384} from "@solarity/solidity-lib/libs/crypto/ECDSA384.sol";

/// @title P384
/// @notice ECDSA over NIST P-384 (secp384r1) with a SHA-384 digest, through solarity's
/// `ECDSA384` (which accepts only low-s signatures: a high s is folded to n - s here, which
/// verifies exactly the same signatures as the standard check).
library P384 {
    bytes private constant _A =
        hex"fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffc";
    bytes private constant _B =
        hex"b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef";
    bytes private constant _GX =
        hex"aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7";
    bytes private constant _GY =
        hex"3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f";
    bytes private constant _P =
        hex"fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff";
    bytes private constant _N =
        hex"ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

    // n split into its high 128 and low 256 bits, for the low-s fold.
    uint256 private constant _N_HI = 0xffffffffffffffffffffffffffffffff;
    uint256 private constant _N_LO = 0xffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973;

    /// @notice True if (r, s) (48 bytes each, big-endian) is a valid signature of the 48-byte
    /// `digest` under the public key x || y (96 bytes, big-endian coordinates).
    function verify(bytes memory digest, bytes memory r, bytes memory s, bytes memory pubKey)
        internal
        view
        returns (bool)
    {
        if (digest.length != 48 || r.length != 48 || s.length != 48 || pubKey.length != 96) return false;
        bytes memory lowS = _lowS(s);
        if (lowS.length == 0) return false;
        return ECDSA384.verify(
            ECDSA384.Parameters({a: _A, b: _B, gx: _GX, gy: _GY, p: _P, n: _N}),
            digest,
            bytes.concat(r, lowS),
            pubKey
        );
    }

    /// @dev s if s <= n/2, else n - s; empty if s >= n (invalid: the caller refuses it).
    function _lowS(bytes memory s) private pure returns (bytes memory) {
        uint256 hi;
        uint256 lo;
        assembly ("memory-safe") {
            hi := shr(128, mload(add(s, 0x20)))
            lo := mload(add(s, 0x30))
        }
        if (hi > _N_HI || (hi == _N_HI && lo >= _N_LO)) return "";
        // n / 2 = (_N_HI >> 1, (_N_LO >> 1) | (_N_HI & 1) << 255)
        uint256 halfHi = _N_HI >> 1;
        uint256 halfLo = (_N_LO >> 1) | ((_N_HI & 1) << 255);
        if (hi < halfHi || (hi == halfHi && lo <= halfLo)) return s;
        unchecked {
            uint256 borrow = lo > _N_LO ? 1 : 0;
            uint256 outLo = _N_LO - lo;
            uint256 outHi = _N_HI - hi - borrow;
            return abi.encodePacked(uint128(outHi), outLo);
        }
    }
}
