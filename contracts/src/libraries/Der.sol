// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Der
/// @notice Just enough DER (X.690) to read AMD's SEV-SNP certificates (ARK, ASK, ASVK, VCEK,
/// VLEK; AMD pub. 57230) in the EVM: the TBSCertificate's bytes, issuer and subject (their
/// bytes' hash and common name), the subject public key (RSA n, e or an EC P-384 point), the
/// outer signature algorithm (RSASSA-PSS with SHA-384?) and value, and AMD's extensions under
/// 1.3.6.1.4.1.3704.1 (product name, SPLs .3.1-.3.9, hwID .4). No maintained Solidity DER
/// library covers this, so it is small and fuzzed against Python `cryptography`
/// (tests/integration/test_evm_snp.py).
/// @dev Strict where it matters: single-byte tags, definite minimal lengths of at most two
/// bytes (certificates are < 64 KiB), every child inside its parent, no trailing bytes after
/// the certificate or inside the TBS. Validity dates are not read (see ISnpVerifier).
/// Anything else reverts with `Der_Malformed(offset)`.
library Der {
    error Der_Malformed(uint256 offset);

    uint8 internal constant KEY_NONE = 0;
    uint8 internal constant KEY_RSA = 1;
    uint8 internal constant KEY_P384 = 2;

    /// @dev Bits of `Certificate.amdExtensions`: bit i (1..9) for SPL 1.3.6.1.4.1.3704.1.3.i,
    /// bit 10 product name (.2), bit 11 hwID (.4), bit 12 struct version (.1), bit 13 cspID (.5).
    uint256 internal constant EXT_PRODUCT_NAME = 1 << 10;
    uint256 internal constant EXT_HWID = 1 << 11;
    uint256 internal constant EXT_STRUCT_VERSION = 1 << 12;
    uint256 internal constant EXT_CSP_ID = 1 << 13;

    /// @notice One TLV: tag, where its header starts, where its content starts and ends.
    struct Node {
        uint256 tag;
        uint256 start;
        uint256 content;
        uint256 end;
    }

    /// @notice What the SEV-SNP checks need of one certificate.
    struct Certificate {
        uint256 tbsStart; // offset of the TBSCertificate TLV (the signed bytes)
        uint256 tbsEnd;
        bytes32 issuerHash; // keccak256 of the issuer Name TLV
        bytes32 subjectHash; // keccak256 of the subject Name TLV
        bytes issuerCN; // first commonName value of the issuer (empty if none)
        bytes subjectCN;
        uint8 keyType; // KEY_NONE, KEY_RSA, KEY_P384
        bytes rsaModulus; // big-endian, without the sign byte
        bytes rsaExponent;
        bytes ecPoint; // x || y, 48 bytes each
        bool pssSha384; // signatureAlgorithm is RSASSA-PSS whose hashAlgorithm is SHA-384
        bytes signature; // signatureValue's bits (no unused-bits byte)
        uint256 amdExtensions; // EXT_* and SPL bits present
        uint8[10] spl; // spl[i] = value of 1.3.6.1.4.1.3704.1.3.i (i = 1..9)
        bytes productName; // IA5String content of .2
        bytes hwid; // content of the .4 OCTET STRING (raw, possibly itself an OCTET STRING)
    }

    // OID contents.
    bytes32 private constant _OID_CN = keccak256(hex"550403");
    bytes32 private constant _OID_RSA = keccak256(hex"2a864886f70d010101");
    bytes32 private constant _OID_EC = keccak256(hex"2a8648ce3d0201");
    bytes32 private constant _OID_P384 = keccak256(hex"2b81040022");
    bytes32 private constant _OID_PSS = keccak256(hex"2a864886f70d01010a");
    bytes32 private constant _OID_SHA384 = keccak256(hex"608648016503040202");
    // 1.3.6.1.4.1.3704.1
    uint256 private constant _AMD_PREFIX = 0x2b060104019c7801;

    /// @notice Read the TLV at `p`, which must end by `limit`.
    function node(bytes memory d, uint256 p, uint256 limit) internal pure returns (Node memory n) {
        if (limit > d.length || p + 2 > limit) revert Der_Malformed(p);
        uint256 tag = _at(d, p);
        if (tag & 0x1f == 0x1f) revert Der_Malformed(p); // multi-byte tags are never used here
        uint256 first = _at(d, p + 1);
        uint256 len = 0;
        uint256 content = 0;
        if (first < 0x80) {
            len = first;
            content = p + 2;
        } else if (first == 0x81) {
            if (p + 3 > limit) revert Der_Malformed(p);
            len = _at(d, p + 2);
            if (len < 0x80) revert Der_Malformed(p);
            content = p + 3;
        } else if (first == 0x82) {
            if (p + 4 > limit) revert Der_Malformed(p);
            len = (_at(d, p + 2) << 8) | _at(d, p + 3);
            if (len < 0x100) revert Der_Malformed(p);
            content = p + 4;
        } else {
            revert Der_Malformed(p);
        }
        if (content + len > limit) revert Der_Malformed(p);
        n = Node(tag, p, content, content + len);
    }

    /// @notice `node` that must carry `tag`.
    function expect(bytes memory d, uint256 p, uint256 limit, uint256 tag) internal pure returns (Node memory n) {
        n = node(d, p, limit);
        if (n.tag != tag) revert Der_Malformed(p);
    }

    /// @notice keccak256 of a node's content.
    function contentHash(bytes memory d, Node memory n) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            h := keccak256(add(add(d, 0x20), mload(add(n, 0x40))), sub(mload(add(n, 0x60)), mload(add(n, 0x40))))
        }
    }

    /// @notice Bytes [start, end) of `d` as a new array.
    function slice(bytes memory d, uint256 start, uint256 end) internal pure returns (bytes memory out) {
        if (end < start || end > d.length) revert Der_Malformed(start);
        out = new bytes(end - start);
        assembly ("memory-safe") {
            mcopy(add(out, 0x20), add(add(d, 0x20), start), sub(end, start))
        }
    }

    /// @notice Parse an X.509 certificate (DER) into what the SEV-SNP checks need.
    function parseCertificate(bytes memory d) internal pure returns (Certificate memory c) {
        Node memory cert = expect(d, 0, d.length, 0x30);
        if (cert.end != d.length) revert Der_Malformed(cert.end);
        Node memory tbs = expect(d, cert.content, cert.end, 0x30);
        c.tbsStart = tbs.start;
        c.tbsEnd = tbs.end;
        _parseTbs(d, tbs, c);

        Node memory alg = expect(d, tbs.end, cert.end, 0x30);
        c.pssSha384 = _isPssSha384(d, alg);
        Node memory sig = expect(d, alg.end, cert.end, 0x03);
        if (sig.end != cert.end) revert Der_Malformed(sig.end);
        if (sig.end == sig.content || _at(d, sig.content) != 0) revert Der_Malformed(sig.start);
        c.signature = slice(d, sig.content + 1, sig.end);
    }

    function _parseTbs(bytes memory d, Node memory tbs, Certificate memory c) private pure {
        uint256 p = tbs.content;
        uint256 limit = tbs.end;
        Node memory n = node(d, p, limit);
        if (n.tag == 0xa0) n = node(d, n.end, limit); // [0] version
        if (n.tag != 0x02) revert Der_Malformed(n.start); // serialNumber
        n = expect(d, n.end, limit, 0x30); // signature (inner AlgorithmIdentifier)
        Node memory issuer = expect(d, n.end, limit, 0x30);
        c.issuerHash = _tlvHash(d, issuer);
        c.issuerCN = _commonName(d, issuer);
        n = expect(d, issuer.end, limit, 0x30); // validity
        Node memory subject = expect(d, n.end, limit, 0x30);
        c.subjectHash = _tlvHash(d, subject);
        c.subjectCN = _commonName(d, subject);
        Node memory spki = expect(d, subject.end, limit, 0x30);
        _parseKey(d, spki, c);
        p = spki.end;
        while (p < limit) {
            n = node(d, p, limit);
            if (n.tag == 0xa3) {
                Node memory exts = expect(d, n.content, n.end, 0x30);
                if (exts.end != n.end) revert Der_Malformed(exts.end);
                _parseExtensions(d, exts, c);
            } else if (n.tag != 0x81 && n.tag != 0x82 && n.tag != 0xa1 && n.tag != 0xa2) {
                revert Der_Malformed(n.start); // only the unique identifiers may come before [3]
            }
            p = n.end;
        }
    }

    function _parseKey(bytes memory d, Node memory spki, Certificate memory c) private pure {
        Node memory alg = expect(d, spki.content, spki.end, 0x30);
        Node memory oid = expect(d, alg.content, alg.end, 0x06);
        Node memory bits = expect(d, alg.end, spki.end, 0x03);
        if (bits.end != spki.end || bits.end == bits.content || _at(d, bits.content) != 0) {
            revert Der_Malformed(bits.start);
        }
        bytes32 algo = contentHash(d, oid);
        if (algo == _OID_RSA) {
            Node memory key = expect(d, bits.content + 1, bits.end, 0x30);
            if (key.end != bits.end) revert Der_Malformed(key.end);
            Node memory modulus = expect(d, key.content, key.end, 0x02);
            Node memory exponent = expect(d, modulus.end, key.end, 0x02);
            if (exponent.end != key.end) revert Der_Malformed(exponent.end);
            c.keyType = KEY_RSA;
            c.rsaModulus = _unsigned(d, modulus);
            c.rsaExponent = _unsigned(d, exponent);
        } else if (algo == _OID_EC) {
            Node memory curve = expect(d, oid.end, alg.end, 0x06);
            if (curve.end != alg.end || contentHash(d, curve) != _OID_P384) return;
            // 0x00 unused bits, 0x04 uncompressed, x, y
            if (bits.end - bits.content != 98 || _at(d, bits.content + 1) != 0x04) revert Der_Malformed(bits.start);
            c.keyType = KEY_P384;
            c.ecPoint = slice(d, bits.content + 2, bits.end);
        }
    }

    /// @dev A non-negative INTEGER's magnitude: minimal, positive, sign byte dropped.
    function _unsigned(bytes memory d, Node memory n) private pure returns (bytes memory) {
        uint256 len = n.end - n.content;
        if (len == 0) revert Der_Malformed(n.start);
        uint256 b0 = _at(d, n.content);
        if (b0 & 0x80 != 0) revert Der_Malformed(n.start); // negative
        if (b0 == 0) {
            if (len == 1 || _at(d, n.content + 1) < 0x80) revert Der_Malformed(n.start); // zero or non-minimal
            return slice(d, n.content + 1, n.end);
        }
        return slice(d, n.content, n.end);
    }

    function _isPssSha384(bytes memory d, Node memory alg) private pure returns (bool) {
        Node memory oid = expect(d, alg.content, alg.end, 0x06);
        if (contentHash(d, oid) != _OID_PSS || oid.end == alg.end) return false;
        Node memory params = expect(d, oid.end, alg.end, 0x30);
        if (params.end == params.content) return false; // defaults: SHA-1
        Node memory hashAlg = node(d, params.content, params.end);
        if (hashAlg.tag != 0xa0) return false;
        Node memory hashId = expect(d, hashAlg.content, hashAlg.end, 0x30);
        return contentHash(d, expect(d, hashId.content, hashId.end, 0x06)) == _OID_SHA384;
    }

    /// @dev The first commonName in a Name (SEQUENCE OF SET OF SEQUENCE {OID, value}).
    function _commonName(bytes memory d, Node memory name) private pure returns (bytes memory) {
        uint256 p = name.content;
        while (p < name.end) {
            Node memory rdn = expect(d, p, name.end, 0x31);
            uint256 q = rdn.content;
            while (q < rdn.end) {
                Node memory atv = expect(d, q, rdn.end, 0x30);
                Node memory oid = expect(d, atv.content, atv.end, 0x06);
                Node memory value = node(d, oid.end, atv.end);
                if (value.end != atv.end) revert Der_Malformed(value.end);
                if (contentHash(d, oid) == _OID_CN) return slice(d, value.content, value.end);
                q = atv.end;
            }
            p = rdn.end;
        }
        return "";
    }

    function _parseExtensions(bytes memory d, Node memory exts, Certificate memory c) private pure {
        uint256 p = exts.content;
        while (p < exts.end) {
            Node memory ext = expect(d, p, exts.end, 0x30);
            Node memory oid = expect(d, ext.content, ext.end, 0x06);
            Node memory value = node(d, oid.end, ext.end);
            if (value.tag == 0x01) value = node(d, value.end, ext.end); // critical
            if (value.tag != 0x04 || value.end != ext.end) revert Der_Malformed(value.start);
            _amdExtension(d, oid, value, c);
            p = ext.end;
        }
    }

    function _amdExtension(bytes memory d, Node memory oid, Node memory value, Certificate memory c) private pure {
        uint256 len = oid.end - oid.content;
        if (len < 9 || len > 10) return;
        uint256 word;
        assembly ("memory-safe") {
            word := mload(add(add(d, 0x20), mload(add(oid, 0x40))))
        }
        if (word >> 192 != _AMD_PREFIX) return;
        uint256 arc = (word >> 184) & 0xff;
        uint256 bit;
        if (len == 10) {
            uint256 sub = (word >> 176) & 0xff;
            if (arc != 3 || sub == 0 || sub > 9) return;
            bit = 1 << sub;
            _seen(c, bit, oid.start);
            c.spl[sub] = _splValue(d, value);
            return;
        }
        if (arc == 1) {
            bit = EXT_STRUCT_VERSION;
        } else if (arc == 2) {
            bit = EXT_PRODUCT_NAME;
            Node memory name = expect(d, value.content, value.end, 0x16);
            if (name.end != value.end) revert Der_Malformed(name.end);
            for (uint256 i = name.content; i < name.end; ++i) {
                if (_at(d, i) >= 0x80) revert Der_Malformed(i);
            }
            c.productName = slice(d, name.content, name.end);
        } else if (arc == 4) {
            bit = EXT_HWID;
            c.hwid = slice(d, value.content, value.end);
        } else if (arc == 5) {
            bit = EXT_CSP_ID;
        } else {
            return;
        }
        _seen(c, bit, oid.start);
    }

    function _seen(Certificate memory c, uint256 bit, uint256 at) private pure {
        if (c.amdExtensions & bit != 0) revert Der_Malformed(at); // duplicate extension
        c.amdExtensions |= bit;
    }

    /// @dev An SPL: the OCTET STRING holds exactly one minimal non-negative DER INTEGER <= 255.
    function _splValue(bytes memory d, Node memory value) private pure returns (uint8) {
        Node memory i = expect(d, value.content, value.end, 0x02);
        if (i.end != value.end) revert Der_Malformed(i.end);
        uint256 len = i.end - i.content;
        if (len == 1) {
            uint256 v = _at(d, i.content);
            if (v >= 0x80) revert Der_Malformed(i.start);
            return uint8(v);
        }
        if (len == 2 && _at(d, i.content) == 0 && _at(d, i.content + 1) >= 0x80) {
            return uint8(_at(d, i.content + 1));
        }
        revert Der_Malformed(i.start);
    }

    function _tlvHash(bytes memory d, Node memory n) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            h := keccak256(add(add(d, 0x20), mload(add(n, 0x20))), sub(mload(add(n, 0x60)), mload(add(n, 0x20))))
        }
    }

    function _at(bytes memory d, uint256 i) private pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := byte(0, mload(add(add(d, 0x20), i)))
        }
    }
}
