// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {RSASSAPSS} from "@solarity/solidity-lib/libs/crypto/RSASSAPSS.sol";

import {ISnpVerifier, SnpReason, SnpReportFields} from "./interfaces/ISnpVerifier.sol";
import {P384Verifier} from "./P384Verifier.sol";
import {Der} from "./libraries/Der.sol";
import {Sha384} from "./libraries/Sha384.sol";

/// @title SnpVerifier
/// @notice The EVM's check of an AMD SEV-SNP attestation report, mirroring the off-chain
/// `cvm.attestation.verify.verify_report` (see ISnpVerifier for what is and is not checked).
/// ARKs are pinned at deploy (their self-signed DER certificates: the key is the anchor, so
/// the constructor does not spend gas on the self-signature; the deployer checks it off chain); ASK/ASVK and VCEK/VLEK certificates are verified once and cached by
/// keccak256(DER), so that the costly steps can be spread over transactions:
/// `verifyCertificate(ask, arkKeyHash)`, `verifyCertificate(vcek, keccak(ask))`, then
/// `verifyReport(report, [keccak(vcek), keccak(ask)])` (or everything in one call if gas allows).
/// @dev Nothing here is owned or upgradable: the pinned ARKs are the only trust anchors.
contract SnpVerifier is ISnpVerifier {
    uint256 private constant _REPORT_SIZE = 0x4A0;
    uint256 private constant _SIGNED_SIZE = 0x2A0;
    uint256 private constant _SIG_R = 0x2A0;
    uint256 private constant _SIG_S = 0x2E8;

    uint8 private constant _KIND_NONE = 0;
    uint8 private constant _KIND_ASK = 1;
    uint8 private constant _KIND_ASVK = 2;
    uint8 private constant _KIND_VCEK = 3;
    uint8 private constant _KIND_VLEK = 4;

    bytes32 private constant _MILAN = keccak256("Milan");
    bytes32 private constant _GENOA = keccak256("Genoa");
    bytes32 private constant _TURIN = keccak256("Turin");

    /// @notice A pinned ARK's RSA key.
    struct Ark {
        bytes32 productKey;
        bytes32 keyHash; // keccak256 of the modulus: what callers name it by
        bytes modulus;
        bytes exponent;
    }

    /// @notice A verified ASK/ASVK (an issuer of VCEKs/VLEKs) or VCEK/VLEK (a report signer).
    struct CachedCert {
        uint8 kind;
        bytes32 productKey;
        bytes32 issuerHash; // what it was verified against: an ARK key hash or an ASK/ASVK hash
        bytes32 subjectHash; // keccak256 of the subject Name TLV (issuers only)
        bytes modulus; // issuers: RSA key
        bytes exponent;
        bytes pubKey; // signers: P-384 x || y
        uint64 tcb; // signers: the SPLs as a TCB_VERSION of the product
        bytes hwid; // VCEK: 64 bytes (8 on Turin); VLEK: empty
    }

    /// @notice A report signer's certificate, parsed (not yet necessarily chain-verified).
    struct Endorsement {
        bytes32 certHash;
        bool cached;
        bytes tbs; // the signed TBSCertificate bytes (when parsed)
        Der.Certificate cert;
        CachedCert info;
    }

    /// @notice The ECDSA P-384 verifier this contract deployed (see P384Verifier).
    P384Verifier public immutable P384_VERIFIER;

    mapping(bytes32 subjectHash => Ark) private _arks; // by subject Name (= its children's issuer Name)
    mapping(bytes32 productKey => bytes32) private _arkKeyHash; // the first ARK pinned for it
    mapping(bytes32 keyHash => bool) private _isArkKey; // (simulated roots may share one key)
    mapping(bytes32 productKey => string) private _productName;
    mapping(bytes32 certHash => CachedCert) private _certs;

    /// @param arkCertificates the self-signed ARK certificates (DER); the product is the subject
    /// CN after "ARK-" ("ARK-Milan" -> "Milan"). A product may have more than one root (a local
    /// stack also pins its simulated AMD-SP's); an ASK/ASVK is checked against the root whose
    /// subject Name is its issuer Name. `arkKeyHash(product)` is the first one given.
    constructor(bytes[] memory arkCertificates) {
        P384_VERIFIER = new P384Verifier();
        for (uint256 i = 0; i < arkCertificates.length; ++i) {
            Der.Certificate memory c = Der.parseCertificate(arkCertificates[i]);
            bytes memory cn = c.subjectCN;
            if (
                c.keyType != Der.KEY_RSA || c.issuerHash != c.subjectHash || cn.length < 5
                    || bytes4(cn) != bytes4("ARK-")
            ) {
                revert SnpVerifier_Refused(SnpReason.Malformed);
            }
            string memory name = string(Der.slice(cn, 4, cn.length));
            bytes32 productKey = keccak256(bytes(name));
            bytes32 keyHash = keccak256(c.rsaModulus);
            if (_arks[c.subjectHash].modulus.length != 0) {
                revert SnpVerifier_Refused(SnpReason.Malformed); // the same root twice
            }
            _arks[c.subjectHash] = Ark(productKey, keyHash, c.rsaModulus, c.rsaExponent);
            _isArkKey[keyHash] = true;
            if (_arkKeyHash[productKey] == bytes32(0)) _arkKeyHash[productKey] = keyHash;
            _productName[productKey] = name;
        }
    }

    /*//////////////////////////////////////////////////////////////////////////
                                    ISnpVerifier
    //////////////////////////////////////////////////////////////////////////*/

    /// @inheritdoc ISnpVerifier
    function verifyReport(bytes calldata report, bytes[] calldata certs) external returns (SnpReportFields memory f) {
        _checkLayout(report);
        uint8 signingKey = uint8((_le(report, 0x48, 4) >> 2) & 7);
        bool maskChipKey = (_le(report, 0x48, 4) & 2) != 0;
        if (signingKey == 7) _refuse(SnpReason.UnsignedReport);
        if (maskChipKey && signingKey == 0) _refuse(SnpReason.UnsignedReport);
        if (certs.length == 0 || certs.length > 2) _refuse(SnpReason.Malformed);

        Endorsement memory ek = _endorsement(certs[0]);
        if ((ek.info.kind == _KIND_VCEK ? 0 : 1) != signingKey) _refuse(SnpReason.SignerMismatch);
        bytes32 cpuidProduct = _cpuidProduct(report);
        if (cpuidProduct != bytes32(0) && cpuidProduct != ek.info.productKey) _refuse(SnpReason.ProductMismatch);
        if (!ek.cached) {
            if (certs.length < 2 || certs[1].length == 0) _refuse(SnpReason.CertChain);
            bytes32 issuerHash = _issuer(certs[1]);
            _verifySigner(ek, issuerHash);
        }

        if (!_reportSignatureValid(report, ek.info.pubKey)) _refuse(SnpReason.BadSignature);
        if (uint64(_le(report, 0x180, 8)) != ek.info.tcb) _refuse(SnpReason.TcbMismatch);
        _checkChipId(report, ek.info);
        f = _fields(report, signingKey, ek.info.productKey);
    }

    /// @inheritdoc ISnpVerifier
    function checkReport(bytes calldata report, bytes[] calldata certs)
        external
        returns (bool ok, uint8 reason, SnpReportFields memory fields)
    {
        try this.verifyReport(report, certs) returns (SnpReportFields memory f) {
            return (true, uint8(SnpReason.Ok), f);
        } catch (bytes memory err) {
            return (false, _reasonOf(err), fields);
        }
    }

    /// @inheritdoc ISnpVerifier
    function verifyCertificate(bytes calldata der, bytes32 issuerHash) external returns (bytes32 certHash) {
        certHash = keccak256(der);
        if (_certs[certHash].kind != _KIND_NONE) {
            bytes32 cachedIssuer = _certs[certHash].issuerHash;
            if (cachedIssuer != issuerHash && !_sameIssuer(cachedIssuer, issuerHash)) _refuse(SnpReason.CertChain);
            return certHash;
        }
        Der.Certificate memory c = _parse(der);
        if (_isArkKey[issuerHash]) {
            if (_arks[c.issuerHash].keyHash != issuerHash) _refuse(SnpReason.CertChain);
            _verifyIssuerCert(der, certHash, c, c.issuerHash);
        } else {
            uint8 issuerKind = _certs[issuerHash].kind;
            if (issuerKind != _KIND_ASK && issuerKind != _KIND_ASVK) _refuse(SnpReason.CertChain);
            // slither-disable-next-line uninitialized-local (a zeroed memory struct, filled below)
            Endorsement memory ek;
            ek.certHash = certHash;
            ek.cert = c;
            ek.tbs = der[c.tbsStart:c.tbsEnd];
            ek.info = _signerInfo(c);
            _verifySigner(ek, issuerHash);
        }
    }

    /// @inheritdoc ISnpVerifier
    function isCertVerified(bytes32 certHash) external view returns (bool) {
        return _certs[certHash].kind != _KIND_NONE;
    }

    /// @inheritdoc ISnpVerifier
    function isSignerBound(bytes calldata report, bytes32 signerCertHash) external view returns (bool) {
        CachedCert memory info = _certs[signerCertHash];
        if (report.length != _REPORT_SIZE || info.kind != _KIND_VCEK) return false;
        if ((_le(report, 0x48, 4) >> 2) & 7 != 0) return false; // SIGNING_KEY is not VCEK
        if (_zero(report, 0x1A0, 0x1E0)) return false; // MASK_CHIP_ID
        bytes32 cpuidProduct = _cpuidProduct(report);
        if (cpuidProduct != bytes32(0) && cpuidProduct != info.productKey) return false;
        uint256 size = info.hwid.length;
        return keccak256(report[0x1A0:0x1A0 + size]) == keccak256(info.hwid) && _zero(report, 0x1A0 + size, 0x1E0)
            && uint64(_le(report, 0x180, 8)) == info.tcb;
    }

    /// @inheritdoc ISnpVerifier
    function arkKeyHash(bytes32 productKey) external view returns (bytes32) {
        return _arkKeyHash[productKey];
    }

    /*//////////////////////////////////////////////////////////////////////////
                          HELPERS (also used by off-chain tests)
    //////////////////////////////////////////////////////////////////////////*/

    /// @notice The kind of a cached certificate: 0 none, 1 ASK, 2 ASVK, 3 VCEK, 4 VLEK.
    function certKind(bytes32 certHash) external view returns (uint8) {
        return _certs[certHash].kind;
    }

    /// @notice The product name of a pinned ARK ("" if none).
    function productName(bytes32 productKey) external view returns (string memory) {
        return _productName[productKey];
    }

    /// @notice SHA-384 of `data` (the library this contract uses).
    function sha384(bytes calldata data) external pure returns (bytes memory) {
        return Sha384.hash(data);
    }

    /// @notice The DER parse this contract uses (reverts `Der.Der_Malformed(offset)`).
    function parseCertificate(bytes calldata der) external pure returns (Der.Certificate memory) {
        return Der.parseCertificate(der);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                    INTERNALS
    //////////////////////////////////////////////////////////////////////////*/

    function _refuse(SnpReason reason) private pure {
        revert SnpVerifier_Refused(reason);
    }

    /// @dev A Refused(reason) revert's reason; any other failure (out of gas, a panic) is
    /// re-raised, so that a caller can never make a good report look bad by starving the call.
    function _reasonOf(bytes memory err) private pure returns (uint8 reason) {
        if (err.length != 36 || bytes4(err) != SnpVerifier_Refused.selector) _rethrow(err);
        assembly ("memory-safe") {
            reason := mload(add(err, 0x24))
        }
    }

    /// @dev Pass on a failure of a self-call that is not a refusal. No data means the call ran
    /// out of gas: fail the same way (all gas used), so that gas estimators search higher
    /// instead of taking it for a revert.
    function _rethrow(bytes memory err) private pure {
        if (err.length == 0) {
            assembly ("memory-safe") {
                for {} // burn the rest: a true out-of-gas, which gas estimators retry higher
                 1 {} {}
            }
        }
        assembly ("memory-safe") {
            revert(add(err, 0x20), mload(err))
        }
    }

    function _parse(bytes calldata der) private view returns (Der.Certificate memory c) {
        if (der.length < 64 || der.length > 8192) _refuse(SnpReason.Malformed);
        try this.parseCertificate(der) returns (Der.Certificate memory parsed) {
            c = parsed;
        } catch (bytes memory err) {
            if (err.length != 36 || bytes4(err) != Der.Der_Malformed.selector) _rethrow(err);
            _refuse(SnpReason.Malformed);
        }
    }

    /// @dev The report signer's certificate from certs[0]: a cached hash or DER.
    function _endorsement(bytes calldata element) private view returns (Endorsement memory ek) {
        if (element.length == 32) {
            ek.certHash = bytes32(element);
            ek.info = _certs[ek.certHash];
            if (ek.info.kind != _KIND_VCEK && ek.info.kind != _KIND_VLEK) _refuse(SnpReason.CertChain);
            ek.cached = true;
            return ek;
        }
        ek.certHash = keccak256(element);
        CachedCert memory cached = _certs[ek.certHash];
        if (cached.kind == _KIND_VCEK || cached.kind == _KIND_VLEK) {
            ek.info = cached;
            ek.cached = true;
            return ek;
        }
        ek.cert = _parse(element);
        ek.tbs = element[ek.cert.tbsStart:ek.cert.tbsEnd];
        ek.info = _signerInfo(ek.cert);
    }

    /// @dev The issuer (ASK/ASVK) named by certs[1]: a cached hash, or DER verified against the
    /// pinned ARK its issuer CN names ("ARK-<Product>").
    function _issuer(bytes calldata element) private returns (bytes32 issuerHash) {
        if (element.length == 32) return bytes32(element);
        issuerHash = keccak256(element);
        if (_certs[issuerHash].kind != _KIND_NONE) return issuerHash;
        Der.Certificate memory c = _parse(element);
        if (_arks[c.issuerHash].modulus.length == 0) {
            bytes memory cn = c.issuerCN;
            bool known = cn.length > 4 && bytes4(cn) == bytes4("ARK-")
                && _arkKeyHash[keccak256(Der.slice(cn, 4, cn.length))] != bytes32(0);
            _refuse(known ? SnpReason.CertChain : SnpReason.UnknownProduct); // not a pinned ARK
        }
        _verifyIssuerCert(element, issuerHash, c, c.issuerHash);
    }

    /// @dev Verify an ASK/ASVK against the pinned ARK with subject `arkSubject` and cache it.
    function _verifyIssuerCert(bytes calldata der, bytes32 certHash, Der.Certificate memory c, bytes32 arkSubject)
        private
    {
        Ark memory ark = _arks[arkSubject];
        string memory name = _productName[ark.productKey];
        uint8 kind = _KIND_NONE;
        if (keccak256(c.subjectCN) == keccak256(bytes.concat("SEV-", bytes(name)))) {
            kind = _KIND_ASK;
        } else if (keccak256(c.subjectCN) == keccak256(bytes.concat("SEV-VLEK-", bytes(name)))) {
            kind = _KIND_ASVK;
        } else {
            _refuse(SnpReason.CertChain);
        }
        if (keccak256(c.issuerCN) != keccak256(bytes.concat("ARK-", bytes(name)))) _refuse(SnpReason.CertChain);
        if (c.issuerHash != arkSubject) _refuse(SnpReason.CertChain);
        if (c.keyType != Der.KEY_RSA) _refuse(SnpReason.Malformed);
        if (!c.pssSha384 || !_pss(der[c.tbsStart:c.tbsEnd], c.signature, ark.modulus, ark.exponent)) {
            _refuse(SnpReason.CertChain);
        }
        CachedCert storage s = _certs[certHash];
        s.kind = kind;
        s.productKey = ark.productKey;
        s.issuerHash = ark.keyHash;
        s.subjectHash = c.subjectHash;
        s.modulus = c.rsaModulus;
        s.exponent = c.rsaExponent;
        emit SnpCertificateVerified(certHash, ark.keyHash, ark.productKey);
    }

    /// @dev Verify a VCEK/VLEK (parsed in `ek`) against the cached ASK/ASVK `issuerHash`; cache it.
    function _verifySigner(Endorsement memory ek, bytes32 issuerHash) private {
        CachedCert storage issuer = _certs[issuerHash];
        uint8 expected = ek.info.kind == _KIND_VCEK ? _KIND_ASK : _KIND_ASVK;
        if (issuer.kind != expected || issuer.productKey != ek.info.productKey) _refuse(SnpReason.CertChain);
        if (ek.cert.issuerHash != issuer.subjectHash) _refuse(SnpReason.CertChain);
        if (!ek.cert.pssSha384) _refuse(SnpReason.CertChain);
        if (!_pss(ek.tbs, ek.cert.signature, issuer.modulus, issuer.exponent)) _refuse(SnpReason.CertChain);
        ek.info.issuerHash = issuerHash;
        _certs[ek.certHash] = ek.info;
        emit SnpCertificateVerified(ek.certHash, issuerHash, ek.info.productKey);
    }

    /// @dev Whether the cached issuers `a` and `b` are one issuer: the same kind, product and
    /// subject Name, both verified under the same ARK key. Two DER encodings of one certificate
    /// differ in bytes no signature covers (the outer AlgorithmIdentifier), so anyone can cache a
    /// twin of AMD's ASK; a certificate cached under one is then taken as verified under the other.
    function _sameIssuer(bytes32 a, bytes32 b) private view returns (bool) {
        CachedCert storage x = _certs[a];
        CachedCert storage y = _certs[b];
        return (y.kind == _KIND_ASK || y.kind == _KIND_ASVK) && y.kind == x.kind && y.productKey == x.productKey
            && y.subjectHash == x.subjectHash && y.issuerHash == x.issuerHash;
    }

    /// @dev What a VCEK/VLEK says: kind, product, key, TCB, hwID (refusing what is not one).
    function _signerInfo(Der.Certificate memory c) private view returns (CachedCert memory info) {
        bytes32 cn = keccak256(c.subjectCN);
        if (cn == keccak256("SEV-VCEK")) info.kind = _KIND_VCEK;
        else if (cn == keccak256("SEV-VLEK")) info.kind = _KIND_VLEK;
        else _refuse(SnpReason.Malformed);
        if (c.keyType != Der.KEY_P384) _refuse(SnpReason.Malformed);
        info.pubKey = c.ecPoint;

        // Product: the product-name extension's part before '-', else the issuer CN's suffix.
        bytes memory issuerPrefix = info.kind == _KIND_VCEK ? bytes("SEV-") : bytes("SEV-VLEK-");
        bytes memory name;
        if (c.amdExtensions & Der.EXT_PRODUCT_NAME != 0) {
            name = _beforeDash(c.productName);
        } else {
            name = _afterPrefix(c.issuerCN, issuerPrefix);
        }
        info.productKey = keccak256(name);
        if (_arkKeyHash[info.productKey] == bytes32(0)) _refuse(SnpReason.UnknownProduct);
        if (keccak256(c.issuerCN) != keccak256(bytes.concat(issuerPrefix, name))) _refuse(SnpReason.CertChain);

        uint256 required = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 8);
        bool turin = info.productKey == _TURIN;
        if (turin) required |= 1 << 9;
        if (c.amdExtensions & required != required) _refuse(SnpReason.Malformed);
        if (turin) {
            info.tcb = uint64(c.spl[9]) | (uint64(c.spl[1]) << 8) | (uint64(c.spl[2]) << 16) | (uint64(c.spl[3]) << 24)
                | (uint64(c.spl[8]) << 56);
        } else {
            info.tcb = uint64(c.spl[1]) | (uint64(c.spl[2]) << 8) | (uint64(c.spl[4]) << 16) | (uint64(c.spl[5]) << 24)
                | (uint64(c.spl[6]) << 32) | (uint64(c.spl[7]) << 40) | (uint64(c.spl[3]) << 48)
                | (uint64(c.spl[8]) << 56);
        }
        if (info.kind == _KIND_VCEK) {
            if (c.amdExtensions & Der.EXT_HWID == 0) _refuse(SnpReason.Malformed);
            info.hwid = _hwid(c.hwid, turin ? 8 : 64);
        }
    }

    function _hwid(bytes memory raw, uint256 size) private pure returns (bytes memory) {
        if (raw.length == size) return raw;
        // Some KDS certificates wrap hwID in an OCTET STRING (one-byte length: size < 0x80).
        if (raw.length != size + 2 || uint8(raw[0]) != 0x04 || uint8(raw[1]) != size) {
            _refuse(SnpReason.Malformed);
        }
        return Der.slice(raw, 2, raw.length);
    }

    function _beforeDash(bytes memory s) private pure returns (bytes memory) {
        for (uint256 i = 0; i < s.length; ++i) {
            if (s[i] == "-") return Der.slice(s, 0, i);
        }
        return s;
    }

    function _afterPrefix(bytes memory s, bytes memory prefix) private pure returns (bytes memory) {
        if (s.length < prefix.length || keccak256(Der.slice(s, 0, prefix.length)) != keccak256(prefix)) {
            _refuse(SnpReason.CertChain);
        }
        return _beforeDash(Der.slice(s, prefix.length, s.length));
    }

    /// @dev RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48: AMD's parameters, whatever the
    /// certificate's own say) of `tbs` under (n, e); the signature must be exactly |n| long and
    /// below n (RFC 8017 RSAVP1; solarity does not check it, and s + n would be a second valid
    /// DER of the certificate that `cryptography` refuses).
    /// solarity's EMSA-PSS decoding is lax (it ignores EM's top bit and takes the 0x01 separator
    /// wherever the zeros end); that only widens what the issuer's private key can sign, since
    /// H must still equal SHA-384(0^8 || mHash || salt): no one without AMD's key can use it.
    function _pss(bytes memory tbs, bytes memory signature, bytes memory n, bytes memory e)
        private
        view
        returns (bool)
    {
        if (signature.length != n.length || !_below(signature, n)) return false;
        return RSASSAPSS.verify(
            RSASSAPSS.Parameters({hashLength: 48, saltLength: 48, hasher: Sha384.hash}), tbs, signature, e, n
        );
    }

    /// @dev a < b for big-endian unsigned integers of the same length.
    function _below(bytes memory a, bytes memory b) private pure returns (bool below) {
        assembly ("memory-safe") {
            let len := mload(a)
            let pa := add(a, 0x20)
            let pb := add(b, 0x20)
            let end := add(pa, len)
            let decided := 0
            let rem := mod(len, 0x20)
            if rem {
                // The first `rem` bytes, so that the rest is whole words.
                let sh := shl(3, sub(0x20, rem))
                let x := shr(sh, mload(pa))
                let y := shr(sh, mload(pb))
                if iszero(eq(x, y)) {
                    below := lt(x, y)
                    decided := 1
                }
                pa := add(pa, rem)
                pb := add(pb, rem)
            }
            for {} and(iszero(decided), lt(pa, end)) {} {
                let x := mload(pa)
                let y := mload(pb)
                if iszero(eq(x, y)) {
                    below := lt(x, y)
                    decided := 1
                }
                pa := add(pa, 0x20)
                pb := add(pb, 0x20)
            }
        }
    }

    /*//////////////////////////////////////////////////////////////////////////
                                    THE REPORT
    //////////////////////////////////////////////////////////////////////////*/

    /// @dev Little-endian unsigned integer of `size` (<= 32) bytes at `offset`.
    function _le(bytes calldata report, uint256 offset, uint256 size) private pure returns (uint256 v) {
        for (uint256 i = 0; i < size; ++i) {
            v |= uint256(uint8(report[offset + i])) << (8 * i);
        }
    }

    /// @dev True if report[start:end] is all zero.
    function _zero(bytes calldata report, uint256 start, uint256 end) private pure returns (bool) {
        uint256 acc = 0;
        uint256 i = start;
        for (; i + 32 <= end; i += 32) {
            acc |= uint256(bytes32(report[i:i + 32]));
        }
        for (; i < end; ++i) {
            acc |= uint8(report[i]);
        }
        return acc == 0;
    }

    /// @dev What `cvm.attestation.abi.parse` refuses: size, version 2-5, must-be-zero ranges,
    /// POLICY bit 17 set and bits 63:26 clear, signer info bits 31:5 and reserved SIGNING_KEY
    /// values, SIGNATURE_ALGO other than 1 (0 allowed only for an unsigned report).
    function _checkLayout(bytes calldata report) private pure {
        if (report.length != _REPORT_SIZE) _refuse(SnpReason.Malformed);
        uint256 version = _le(report, 0, 4);
        if (version < 2 || version > 5) _refuse(SnpReason.Malformed);
        if (
            !_zero(report, 0x04C, 0x050) || !_zero(report, 0x18B, 0x1A0) || !_zero(report, 0x1EB, 0x1EC)
                || !_zero(report, 0x1EF, 0x1F0) || !_zero(report, 0x208, 0x2A0) || !_zero(report, 0x2D0, 0x2E8)
                || !_zero(report, 0x318, _REPORT_SIZE)
        ) _refuse(SnpReason.Malformed);
        if (version < 3 && !_zero(report, 0x188, 0x18B)) _refuse(SnpReason.Malformed);
        if (version < 5 && !_zero(report, 0x1F8, 0x208)) _refuse(SnpReason.Malformed);
        uint256 policy = _le(report, 0x008, 8);
        if (policy & (1 << 17) == 0 || policy >> 26 != 0) _refuse(SnpReason.Malformed);
        uint256 signer = _le(report, 0x048, 4);
        uint256 key = (signer >> 2) & 7;
        if (signer >> 5 != 0 || (key != 0 && key != 1 && key != 7)) _refuse(SnpReason.Malformed);
        uint256 algo = _le(report, 0x034, 4);
        if (algo != 1 && !(key == 7 && algo == 0)) _refuse(SnpReason.Malformed);
    }

    /// @dev The product the CPUID fields (version 3+) name, or zero if unknown / version 2.
    function _cpuidProduct(bytes calldata report) private pure returns (bytes32) {
        if (_le(report, 0, 4) < 3) return bytes32(0);
        uint8 family = uint8(report[0x188]);
        uint8 model = uint8(report[0x189]);
        if (family == 0x19 && model <= 0x0F) return _MILAN;
        if (family == 0x19 && model >= 0x10 && model <= 0x1F) return _GENOA;
        if (family == 0x1A && model <= 0x1F) return _TURIN;
        return bytes32(0);
    }

    /// @dev Big-endian copy of a 48-byte little-endian integer at `offset`.
    function _be48(bytes calldata report, uint256 offset) private pure returns (bytes memory out) {
        out = new bytes(48);
        for (uint256 i = 0; i < 48; ++i) {
            out[i] = report[offset + 47 - i];
        }
    }

    function _reportSignatureValid(bytes calldata report, bytes memory pubKey) private view returns (bool) {
        bytes memory digest = Sha384.hash(report[0:_SIGNED_SIZE]);
        (bool success, bytes memory ret) = address(P384_VERIFIER)
            .staticcall(
                abi.encodeCall(P384Verifier.verify, (digest, _be48(report, _SIG_R), _be48(report, _SIG_S), pubKey))
            );
        if (!success) _rethrow(ret);
        return abi.decode(ret, (bool));
    }

    /// @dev CHIP_ID against the VCEK's hwID: skipped for a VLEK (no hwID) and for an all-zero
    /// CHIP_ID (MASK_CHIP_ID; the VCEK signature still binds the chip). hwID is 64 bytes, 8 on Turin.
    function _checkChipId(bytes calldata report, CachedCert memory info) private pure {
        if (info.kind != _KIND_VCEK) return;
        if (_zero(report, 0x1A0, 0x1E0)) return;
        uint256 size = info.hwid.length;
        if (keccak256(report[0x1A0:0x1A0 + size]) != keccak256(info.hwid) || !_zero(report, 0x1A0 + size, 0x1E0)) {
            _refuse(SnpReason.ChipIdMismatch);
        }
    }

    function _fields(bytes calldata report, uint8 signingKey, bytes32 productKey)
        private
        pure
        returns (SnpReportFields memory f)
    {
        f.version = uint32(_le(report, 0x000, 4));
        f.policy = uint64(_le(report, 0x008, 8));
        f.vmpl = uint32(_le(report, 0x030, 4));
        f.signingKey = signingKey;
        f.measurement = report[0x090:0x0C0];
        f.reportData0 = bytes32(report[0x050:0x070]);
        f.reportData1 = bytes32(report[0x070:0x090]);
        f.hostData = bytes32(report[0x0C0:0x0E0]);
        f.chipId = report[0x1A0:0x1E0];
        f.reportedTcb = uint64(_le(report, 0x180, 8));
        f.committedTcb = uint64(_le(report, 0x1E0, 8));
        f.reportHash = keccak256(report);
        f.productKey = productKey;
    }
}
