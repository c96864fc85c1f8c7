// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Sha384
/// @notice SHA-384 (FIPS 180-4: SHA-512's compression, its own initial values, the first
/// 48 bytes of the state). The EVM has no SHA-512 family precompile and we know of no
/// maintained Solidity implementation, so this one is small and tested against Python's
/// hashlib on random inputs (contracts/test/unit/Sha384.t.sol, tests/integration/test_evm_snp.py).
/// @dev 64-bit words are held in 256-bit stack slots and masked after every addition.
library Sha384 {
    /// @dev The 80 SHA-512 round constants, 8 bytes each, big-endian.
    bytes private constant K = hex"428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b53859f111f1b605d019923f82a4af194f9bab1c5ed5da6d8118"
        hex"d807aa98a303024212835b0145706fbe243185be4ee4b28c550c7dc3d5ffb4e272be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235c19bf174cf692694"
        hex"e49b69c19ef14ad2efbe4786384f25e30fc19dc68b8cd5b5240ca1cc77ac9c652de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5"
        hex"983e5152ee66dfaba831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa72506ca6351e003826f142929670a0e6e70"
        hex"27b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed53380d139d95b3df650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353b"
        hex"a2bfe8a14cf10364a81a664bbc423001c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218d69906245565a910f40e35855771202a106aa07032bbd1b8"
        hex"19a4c116b8d2d0c81e376c085141ab532748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb5b9cca4f7763e373682e6ff3d6b2b8a3"
        hex"748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532b"
        hex"ca273eceea26619cd186b8c721c0c207eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6113f9804bef90dae1b710b35131c471b"
        hex"28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a5fcb6fab3ad6faec6c44198c4a475817";

    /// @notice SHA-384 of `data`, as 48 bytes (the shape solarity's RSASSAPSS hasher expects).
    function hash(bytes memory data) internal pure returns (bytes memory digest) {
        (bytes32 hi, bytes16 lo) = hashParts(data);
        digest = abi.encodePacked(hi, lo);
    }

    /// @notice SHA-384 of `data` as its first 32 and last 16 bytes.
    function hashParts(bytes memory data) internal pure returns (bytes32 hi, bytes16 lo) {
        bytes memory k = K;
        assembly ("memory-safe") {
            let m := 0xffffffffffffffff

            function rotr(x, n) -> r {
                r := or(shr(n, x), and(shl(sub(64, n), x), 0xffffffffffffffff))
            }

            // Runs the 80 rounds on the block whose schedule is at w, adding into the state at hp.
            function compress(hp, w, kp) {
                let a := mload(hp)
                let b := mload(add(hp, 0x20))
                let c := mload(add(hp, 0x40))
                let d := mload(add(hp, 0x60))
                let e := mload(add(hp, 0x80))
                let f := mload(add(hp, 0xa0))
                let g := mload(add(hp, 0xc0))
                let h := mload(add(hp, 0xe0))
                for { let t := 0 } lt(t, 80) { t := add(t, 1) } {
                    let t1 :=
                        add(
                            add(h, xor(xor(rotr(e, 14), rotr(e, 18)), rotr(e, 41))),
                            add(
                                xor(g, and(e, xor(f, g))),
                                add(shr(192, mload(add(kp, shl(3, t)))), mload(add(w, shl(5, t))))
                            )
                        )
                    h := g
                    g := f
                    f := e
                    e := and(add(d, t1), 0xffffffffffffffff)
                    d := c
                    c := b
                    b := a
                    a := and(
                        add(t1, add(xor(xor(rotr(b, 28), rotr(b, 34)), rotr(b, 39)), or(and(b, c), and(d, or(b, c))))),
                        0xffffffffffffffff
                    )
                }
                mstore(hp, and(add(mload(hp), a), 0xffffffffffffffff))
                mstore(add(hp, 0x20), and(add(mload(add(hp, 0x20)), b), 0xffffffffffffffff))
                mstore(add(hp, 0x40), and(add(mload(add(hp, 0x40)), c), 0xffffffffffffffff))
                mstore(add(hp, 0x60), and(add(mload(add(hp, 0x60)), d), 0xffffffffffffffff))
                mstore(add(hp, 0x80), and(add(mload(add(hp, 0x80)), e), 0xffffffffffffffff))
                mstore(add(hp, 0xa0), and(add(mload(add(hp, 0xa0)), f), 0xffffffffffffffff))
                mstore(add(hp, 0xc0), and(add(mload(add(hp, 0xc0)), g), 0xffffffffffffffff))
                mstore(add(hp, 0xe0), and(add(mload(add(hp, 0xe0)), h), 0xffffffffffffffff))
            }

            let len := mload(data)
            // Padded length: data, 0x80, zeros, 128-bit big-endian bit length; a multiple of 128.
            let total := and(add(len, 144), not(127))
            let buf := mload(0x40)
            mcopy(buf, add(data, 0x20), len)
            for { let i := len } lt(i, total) { i := add(i, 0x20) } { mstore(add(buf, i), 0) }
            mstore8(add(buf, len), 0x80)
            let lp := add(buf, sub(total, 0x20))
            mstore(lp, or(mload(lp), shl(3, len)))

            let hp := add(buf, add(total, 0x20))
            let w := add(hp, 0x100)
            mstore(0x40, add(w, 0xa00))
            mstore(hp, 0xcbbb9d5dc1059ed8)
            mstore(add(hp, 0x20), 0x629a292a367cd507)
            mstore(add(hp, 0x40), 0x9159015a3070dd17)
            mstore(add(hp, 0x60), 0x152fecd8f70e5939)
            mstore(add(hp, 0x80), 0x67332667ffc00b31)
            mstore(add(hp, 0xa0), 0x8eb44a8768581511)
            mstore(add(hp, 0xc0), 0xdb0c2e0d64f98fa7)
            mstore(add(hp, 0xe0), 0x47b5481dbefa4fa4)

            let kp := add(k, 0x20)
            for { let blk := buf } lt(blk, add(buf, total)) { blk := add(blk, 128) } {
                for { let t := 0 } lt(t, 16) { t := add(t, 1) } {
                    mstore(add(w, shl(5, t)), shr(192, mload(add(blk, shl(3, t)))))
                }
                for { let t := 16 } lt(t, 80) { t := add(t, 1) } {
                    let x := mload(add(w, shl(5, sub(t, 15))))
                    let y := mload(add(w, shl(5, sub(t, 2))))
                    mstore(
                        add(w, shl(5, t)),
                        and(
                            add(
                                add(mload(add(w, shl(5, sub(t, 16)))), mload(add(w, shl(5, sub(t, 7))))),
                                add(
                                    xor(xor(rotr(x, 1), rotr(x, 8)), shr(7, x)),
                                    xor(xor(rotr(y, 19), rotr(y, 61)), shr(6, y))
                                )
                            ),
                            m
                        )
                    )
                }
                compress(hp, w, kp)
            }
            hi := or(
                or(shl(192, mload(hp)), shl(128, mload(add(hp, 0x20)))),
                or(shl(64, mload(add(hp, 0x40))), mload(add(hp, 0x60)))
            )
            lo := or(shl(192, mload(add(hp, 0x80))), shl(128, mload(add(hp, 0xa0))))
        }
    }
}
