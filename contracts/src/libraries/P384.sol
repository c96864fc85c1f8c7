// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {call512, uint512} from "@solarity/solidity-lib/libs/bn/U512.sol";
import {U512} from "@solarity/solidity-lib/libs/bn/U512.sol";

/// @title P384
/// @notice ECDSA verification over NIST P-384 (secp384r1) for a SHA-384 digest.
/// @dev Why not solarity's `ECDSA384`: it works in affine coordinates and so computes a
/// modular inverse (a modexp with a 384-bit exponent) for every point operation, ~570 per
/// signature. EIP-7883 (Osaka) makes each such modexp ~10x dearer, and one verification then
/// costs ~50M gas, three times EIP-7825's per-transaction cap. This verifier does the same
/// maths in Jacobian coordinates (dbl-2001-b for a = -3, madd-2007-bl; Bernstein-Lange's
/// Explicit-Formulas Database) on solarity's maintained 512-bit arithmetic (`U512`: every
/// multiplication is one floor-priced modexp reduction), with Shamir's trick over the table
/// {G, Q, G+Q}, and needs exactly two inversions: s^-1 mod n and the one that makes G+Q
/// affine. The final check compares r * Z^2 with X (mod p) instead of inverting Z.
/// Standard ECDSA: a high s is accepted (as `cryptography` does); r and s must be in [1, n-1]
/// and Q on the curve.
library P384 {
    uint256 private constant _P_HI = 0xffffffffffffffffffffffffffffffff;
    uint256 private constant _P_LO = 0xfffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff;
    uint256 private constant _N_HI = 0xffffffffffffffffffffffffffffffff;
    uint256 private constant _N_LO = 0xffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973;
    uint256 private constant _B_HI = 0xb3312fa7e23ee7e4988e056be3f82d19;
    uint256 private constant _B_LO = 0x181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef;
    uint256 private constant _GX_HI = 0xaa87ca22be8b05378eb1c71ef320ad74;
    uint256 private constant _GX_LO = 0x6e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7;
    uint256 private constant _GY_HI = 0x3617de4a96262c6f5d9e98bf9292dc29;
    uint256 private constant _GY_LO = 0xf8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f;

    /// @dev Gas left below which a failed verification may be a starved precompile call (U512
    /// ignores a failed call, whose output then keeps stale bytes): then fail as out of gas.
    uint256 private constant _STARVED = 100_000;

    /// @dev Working memory: the call buffer, the moduli, the accumulator and temporaries.
    struct Ctx {
        call512 c;
        uint256 buf; // the modexp input of a field multiplication: lengths, product, 1, p
        uint512 p;
        uint512 x; // accumulator, Jacobian
        uint512 y;
        uint512 z;
        uint512[11] t;
        uint512 gx; // the table: G, Q, G + Q (affine)
        uint512 gy;
        uint512 qx;
        uint512 qy;
        uint512 sx;
        uint512 sy;
        bool sumInfinite; // Q = -G
    }

    /// @notice True if (r, s) (48 bytes each, big-endian) is a valid ECDSA signature of the
    /// 48-byte `digest` under the public key x || y (96 bytes, big-endian coordinates).
    function verify(bytes memory digest, bytes memory r, bytes memory s, bytes memory pubKey)
        internal
        view
        returns (bool valid)
    {
        if (digest.length != 48 || r.length != 48 || s.length != 48 || pubKey.length != 96) return false;
        valid = _verify(digest, r, s, pubKey);
        if (!valid && gasleft() < _STARVED) {
            assembly ("memory-safe") {
                for {} // burn the rest: a true out-of-gas, which gas estimators retry higher
                 1 {} {}
            }
        }
    }

    function _verify(bytes memory digest, bytes memory rb, bytes memory sb, bytes memory pubKey)
        private
        view
        returns (bool)
    {
        // slither-disable-next-line uninitialized-local (a zeroed memory struct, filled below)
        Ctx memory k;
        k.c = U512.initCall();
        k.buf = _fieldBuffer();
        k.p = _u(_P_HI, _P_LO);
        uint512 r = _word48(rb, 0);
        uint512 s = _word48(sb, 0);
        uint512 n = _u(_N_HI, _N_LO);
        if (U512.eqU256(r, 0) || U512.cmp(r, n) >= 0 || U512.eqU256(s, 0) || U512.cmp(s, n) >= 0) return false;
        uint512 qx = _word48(pubKey, 0);
        uint512 qy = _word48(pubKey, 48);
        if (U512.cmp(qx, k.p) >= 0 || U512.cmp(qy, k.p) >= 0 || !_onCurve(k, qx, qy)) return false;
        for (uint256 i = 0; i < 11; ++i) {
            k.t[i] = U512.fromUint256(0);
        }
        k.x = U512.fromUint256(0);
        k.y = U512.fromUint256(0);
        k.z = U512.fromUint256(0);
        (uint512 u1, uint512 u2) = _scalars(k, digest, r, s, n);
        k.qx = qx;
        k.qy = qy;
        _table(k);
        _shamir(k, u1, u2);
        return _xMatches(k, r, n);
    }

    /// @dev u1 = e / s, u2 = r / s (mod n)
    function _scalars(Ctx memory k, bytes memory digest, uint512 r, uint512 s, uint512 n)
        private
        view
        returns (uint512 u1, uint512 u2)
    {
        uint512 w = U512.fromUint256(0);
        U512.modinvAssignTo(k.c, s, n, w);
        u1 = U512.fromUint256(0);
        u2 = U512.fromUint256(0);
        U512.modmulAssignTo(k.c, _word48(digest, 0), w, n, u1);
        U512.modmulAssignTo(k.c, r, w, n, u2);
    }

    function _table(Ctx memory k) private view {
        k.gx = _u(_GX_HI, _GX_LO);
        k.gy = _u(_GY_HI, _GY_LO);
        (k.sx, k.sy, k.sumInfinite) = _affineSum(k, k.gx, k.gy, k.qx, k.qy);
    }

    /// @dev (X, Y, Z) <- u1 G + u2 Q, bit by bit from the top, with the table {G, Q, G + Q}.
    function _shamir(Ctx memory k, uint512 u1, uint512 u2) private view {
        (uint256 a1, uint256 a0) = _words(u1);
        (uint256 b1, uint256 b0) = _words(u2);
        _setInfinity(k);
        for (uint256 i = 384; i > 0;) {
            unchecked {
                --i;
            }
            _double(k);
            uint256 bits = i >= 256
                ? (((a1 >> (i - 256)) & 1) << 1) | ((b1 >> (i - 256)) & 1)
                : (((a0 >> i) & 1) << 1) | ((b0 >> i) & 1);
            if (bits == 3) {
                if (!k.sumInfinite) _addAffine(k, k.sx, k.sy);
            } else if (bits == 2) {
                _addAffine(k, k.gx, k.gy);
            } else if (bits == 1) {
                _addAffine(k, k.qx, k.qy);
            }
        }
    }

    /// @dev x(R) = X / Z^2 (mod p); valid iff x(R) mod n == r, i.e. X == r Z^2 or, when
    /// r + n < p, X == (r + n) Z^2 (mod p). No inversion needed.
    function _xMatches(Ctx memory k, uint512 r, uint512 n) private view returns (bool) {
        if (U512.eqU256(k.z, 0)) return false;
        uint512 zz = k.t[0];
        uint512 rz = k.t[1];
        _fmul(k.buf, zz, k.z, k.z);
        _fmul(k.buf, rz, r, zz);
        if (U512.eq(rz, k.x)) return true;
        uint512 rn = U512.add(r, n);
        if (U512.cmp(rn, k.p) >= 0) return false;
        _fmul(k.buf, rz, rn, zz);
        return U512.eq(rz, k.x);
    }

    /// @dev y^2 == x^3 - 3x + b (mod p)
    function _onCurve(Ctx memory k, uint512 x, uint512 y) private view returns (bool) {
        uint512 lhs = U512.fromUint256(0);
        uint512 rhs = U512.fromUint256(0);
        uint512 t = U512.fromUint256(0);
        _fmul(k.buf, lhs, y, y);
        _fmul(k.buf, rhs, x, x);
        _fmul(k.buf, rhs, rhs, x);
        _fadd(t, x, x);
        _fadd(t, t, x);
        _fsub(rhs, rhs, t);
        U512.redaddAssignTo(k.c, rhs, _u(_B_HI, _B_LO), k.p, rhs);
        return U512.eq(lhs, rhs);
    }

    /// @dev G + Q as an affine point (one inversion), or infinite if Q = -G.
    function _affineSum(Ctx memory k, uint512 gx, uint512 gy, uint512 qx, uint512 qy)
        private
        view
        returns (uint512 sx, uint512 sy, bool infinite)
    {
        _setInfinity(k);
        _addAffine(k, gx, gy);
        _addAffine(k, qx, qy);
        if (U512.eqU256(k.z, 0)) return (sx, sy, true);
        uint512 zi = U512.fromUint256(0);
        uint512 zi2 = U512.fromUint256(0);
        sx = U512.fromUint256(0);
        sy = U512.fromUint256(0);
        U512.modinvAssignTo(k.c, k.z, k.p, zi);
        _fmul(k.buf, zi2, zi, zi);
        _fmul(k.buf, sx, k.x, zi2);
        _fmul(k.buf, zi2, zi2, zi);
        _fmul(k.buf, sy, k.y, zi2);
    }

    function _setInfinity(Ctx memory k) private pure {
        U512.assign(_u0(), k.x);
        U512.assign(_u0(), k.y);
        U512.assign(_u0(), k.z);
    }

    /// @dev (X, Y, Z) <- 2 (X, Y, Z); dbl-2001-b (a = -3): 3M + 5S.
    function _double(Ctx memory k) private view {
        if (U512.eqU256(k.z, 0)) return;
        uint512 d = k.t[0];
        uint512 g = k.t[1];
        uint512 b = k.t[2];
        uint512 al = k.t[3];
        uint512 t1 = k.t[4];
        uint512 t2 = k.t[5];
        _fmul(k.buf, d, k.z, k.z); // delta = Z^2
        _fmul(k.buf, g, k.y, k.y); // gamma = Y^2
        _fmul(k.buf, b, k.x, g); // beta = X gamma
        _fsub(t1, k.x, d);
        _fadd(t2, k.x, d);
        _fmul(k.buf, al, t1, t2);
        _fadd(t1, al, al);
        _fadd(al, t1, al); // alpha = 3 (X - delta)(X + delta)
        _fadd(t1, k.y, k.z);
        _fmul(k.buf, t1, t1, t1);
        _fsub(t1, t1, g);
        _fsub(k.z, t1, d); // Z3 = (Y + Z)^2 - gamma - delta
        _fadd(b, b, b);
        _fadd(b, b, b); // b = 4 beta
        _fmul(k.buf, t1, al, al);
        _fadd(t2, b, b);
        _fsub(k.x, t1, t2); // X3 = alpha^2 - 8 beta
        _fsub(t2, b, k.x);
        _fmul(k.buf, t2, al, t2);
        _fmul(k.buf, t1, g, g);
        _fadd(t1, t1, t1);
        _fadd(t1, t1, t1);
        _fadd(t1, t1, t1);
        _fsub(k.y, t2, t1); // Y3 = alpha (4 beta - X3) - 8 gamma^2
    }

    /// @dev (X, Y, Z) <- (X, Y, Z) + (x2, y2) with (x2, y2) affine; madd-2007-bl: 7M + 4S,
    /// with the exceptional cases (infinity, equal points, opposite points) handled.
    /// Temporaries: t0 Z1Z1, t1 H, t2 2(S2 - Y1), t3 HH, t4 I, t5 J, t6 V, t7 t8 scratch.
    function _addAffine(Ctx memory k, uint512 x2, uint512 y2) private view {
        if (U512.eqU256(k.z, 0)) {
            U512.assign(x2, k.x);
            U512.assign(y2, k.y);
            U512.assign(_u(0, 1), k.z);
            return;
        }
        uint512[11] memory t = k.t;
        _fmul(k.buf, t[0], k.z, k.z); // Z1Z1
        _fmul(k.buf, t[7], x2, t[0]); // U2
        _fmul(k.buf, t[8], y2, k.z);
        _fmul(k.buf, t[8], t[8], t[0]); // S2
        _fsub(t[1], t[7], k.x); // H = U2 - X1
        _fsub(t[2], t[8], k.y); // S2 - Y1
        if (U512.eqU256(t[1], 0)) {
            if (U512.eqU256(t[2], 0)) {
                _double(k); // the same point
            } else {
                U512.assign(_u0(), k.z); // opposite points: infinity
            }
            return;
        }
        _maddFinish(k, t);
    }

    function _maddFinish(Ctx memory k, uint512[11] memory t) private view {
        _fmul(k.buf, t[3], t[1], t[1]); // HH
        _fadd(t[4], t[3], t[3]);
        _fadd(t[4], t[4], t[4]); // I = 4 HH
        _fmul(k.buf, t[5], t[1], t[4]); // J = H I
        _fadd(t[2], t[2], t[2]); // r = 2 (S2 - Y1)
        _fmul(k.buf, t[6], k.x, t[4]); // V = X1 I
        _fmul(k.buf, t[7], t[2], t[2]);
        _fsub(t[7], t[7], t[5]);
        _fadd(t[8], t[6], t[6]);
        _fsub(k.x, t[7], t[8]); // X3 = r^2 - J - 2V
        _fsub(t[7], t[6], k.x);
        _fmul(k.buf, t[7], t[2], t[7]);
        _fmul(k.buf, t[8], k.y, t[5]);
        _fadd(t[8], t[8], t[8]);
        _fsub(k.y, t[7], t[8]); // Y3 = r (V - X3) - 2 Y1 J
        _fadd(t[7], k.z, t[1]);
        _fmul(k.buf, t[7], t[7], t[7]);
        _fsub(t[7], t[7], t[0]);
        _fsub(k.z, t[7], t[3]); // Z3 = (Z1 + H)^2 - Z1Z1 - HH
    }

    /// @dev Scratch memory for `_fmul`: the modexp input (base length 96, exponent length 1,
    /// modulus length 48; the 96-byte product; exponent 1; p), constant parts written once.
    function _fieldBuffer() private pure returns (uint256 buf) {
        assembly ("memory-safe") {
            buf := mload(0x40)
            mstore(0x40, add(buf, 0x120))
            mstore(buf, 0x60)
            mstore(add(buf, 0x20), 0x01)
            mstore(add(buf, 0x40), 0x30)
            mstore8(add(buf, 0xc0), 0x01)
            mstore(add(buf, 0xc1), or(shl(128, _P_HI), shr(128, _P_LO)))
            mstore(add(buf, 0xe1), shl(128, _P_LO))
        }
    }

    /// @dev dst = a * b mod p (a, b < 2^384 as [hi | lo] words, hi < 2^128): the 768-bit
    /// product in three words, reduced by one modexp (exponent 1) at the floor price.
    function _fmul(uint256 buf, uint512 dst, uint512 a, uint512 b) private view {
        assembly ("memory-safe") {
            let ah := mload(a)
            let al := mload(add(a, 0x20))
            let bh := mload(b)
            let bl := mload(add(b, 0x20))
            // al * bl = (h0, l0)
            let mm := mulmod(al, bl, not(0))
            let l0 := mul(al, bl)
            let h0 := sub(sub(mm, l0), lt(mm, l0))
            // ah * bl = (h1, l1), al * bh = (h2, l2); each < 2^384
            mm := mulmod(ah, bl, not(0))
            let l1 := mul(ah, bl)
            let h1 := sub(sub(mm, l1), lt(mm, l1))
            mm := mulmod(al, bh, not(0))
            let l2 := mul(al, bh)
            let h2 := sub(sub(mm, l2), lt(mm, l2))
            // w1 = h0 + l1 + l2 (carries into w2); w2 = ah * bh + h1 + h2 + carries
            let w1 := add(h0, l1)
            let carry := lt(w1, h0)
            let w1b := add(w1, l2)
            carry := add(carry, lt(w1b, w1))
            let w2 := add(add(mul(ah, bh), add(h1, h2)), carry)
            mstore(add(buf, 0x60), w2)
            mstore(add(buf, 0x80), w1b)
            mstore(add(buf, 0xa0), l0)
            mstore(dst, 0)
            // Fails only when starved of gas: fail as out of gas too (estimators retry higher).
            if iszero(staticcall(gas(), 0x05, buf, 0xf1, add(dst, 0x10), 0x30)) { for {} 1 {} {} }
        }
    }

    /// @dev dst = a + b mod p for a, b < p.
    function _fadd(uint512 dst, uint512 a, uint512 b) private pure {
        assembly ("memory-safe") {
            let al := mload(add(a, 0x20))
            let lo := add(al, mload(add(b, 0x20)))
            let hi := add(add(mload(a), mload(b)), lt(lo, al))
            if or(gt(hi, _P_HI), and(eq(hi, _P_HI), iszero(lt(lo, _P_LO)))) {
                hi := sub(sub(hi, _P_HI), lt(lo, _P_LO))
                lo := sub(lo, _P_LO)
            }
            mstore(dst, hi)
            mstore(add(dst, 0x20), lo)
        }
    }

    /// @dev dst = a - b mod p for a, b < p.
    function _fsub(uint512 dst, uint512 a, uint512 b) private pure {
        assembly ("memory-safe") {
            let ah := mload(a)
            let al := mload(add(a, 0x20))
            let bh := mload(b)
            let bl := mload(add(b, 0x20))
            let lo := sub(al, bl)
            let hi := sub(sub(ah, bh), lt(al, bl))
            if or(lt(ah, bh), and(eq(ah, bh), lt(al, bl))) {
                let lo2 := add(lo, _P_LO)
                hi := add(add(hi, _P_HI), lt(lo2, lo))
                lo := lo2
            }
            mstore(dst, hi)
            mstore(add(dst, 0x20), lo)
        }
    }

    function _u(uint256 hi, uint256 lo) private pure returns (uint512 v) {
        v = U512.fromUint256(lo);
        assembly ("memory-safe") {
            mstore(v, hi)
        }
    }

    function _u0() private pure returns (uint512) {
        return U512.fromUint256(0);
    }

    function _words(uint512 v) private pure returns (uint256 hi, uint256 lo) {
        assembly ("memory-safe") {
            hi := mload(v)
            lo := mload(add(v, 0x20))
        }
    }

    /// @dev The 48-byte big-endian integer at `offset` of `b` (the caller checked the length).
    function _word48(bytes memory b, uint256 offset) private pure returns (uint512 v) {
        uint256 hi;
        uint256 lo;
        assembly ("memory-safe") {
            let at := add(add(b, 0x20), offset)
            hi := shr(128, mload(at))
            lo := mload(add(at, 0x10))
        }
        return _u(hi, lo);
    }
}
