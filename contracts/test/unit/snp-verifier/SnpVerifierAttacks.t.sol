// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SnpVerifier} from "../../../src/SnpVerifier.sol";
import {Der} from "../../../src/libraries/Der.sol";
import {ISnpVerifier, SnpReason, SnpReportFields} from "../../../src/interfaces/ISnpVerifier.sol";
import {Test} from "../../base/Test.sol";
import {SnpFixtures as F} from "../../data/SnpFixtures.sol";

/// @notice Calls checkReport with a chosen gas limit, as a contract between a disputer and the
/// verifier could: it must never come back with a refusal for a genuine report.
contract StarvingCaller {
    function check(ISnpVerifier v, bytes calldata report, bytes[] calldata certs, uint256 gas)
        external
        returns (bool called, bool ok, uint8 reason)
    {
        try v.checkReport{gas: gas}(report, certs) returns (bool ok_, uint8 reason_, SnpReportFields memory) {
            return (true, ok_, reason_);
        } catch {
            return (false, false, 0);
        }
    }
}

/// @notice Red-team attacks on SnpVerifier over the real AMD material: each test is one way a
/// node (wanting a forgery to stand) or a disputer (wanting a genuine report refused) could try
/// to fool the check, and what the contract does about it.
contract SnpVerifier_Attacks_Test is Test {
    SnpVerifier internal verifier;
    bytes32 internal milanArk;

    uint256 private constant _N_HI = 0xffffffffffffffffffffffffffffffff;
    uint256 private constant _N_LO = 0xffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973;

    function setUp() external {
        bytes[] memory arks = new bytes[](3);
        arks[0] = F.ARK_MILAN;
        arks[1] = F.ARK_GENOA;
        arks[2] = F.ARK_TURIN;
        verifier = new SnpVerifier(arks);
        milanArk = verifier.arkKeyHash(keccak256("Milan"));
    }

    function _certs(bytes memory a, bytes memory b) internal pure returns (bytes[] memory c) {
        c = new bytes[](2);
        c[0] = a;
        c[1] = b;
    }

    function _refused(SnpReason reason) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(ISnpVerifier.SnpVerifier_Refused.selector, reason);
    }

    function _malformed() internal pure returns (bytes4) {
        return Der.Der_Malformed.selector;
    }

    /// @dev Index of the `nth` (0-based) occurrence of `pattern` in `data` at or after `from`.
    function _find(bytes memory data, bytes memory pattern, uint256 from, uint256 nth) internal pure returns (uint256) {
        for (uint256 i = from; i + pattern.length <= data.length; ++i) {
            bool hit = true;
            for (uint256 j = 0; j < pattern.length; ++j) {
                if (data[i + j] != pattern[j]) {
                    hit = false;
                    break;
                }
            }
            if (hit) {
                if (nth == 0) return i;
                --nth;
            }
        }
        revert("pattern not found");
    }

    function _copy(bytes memory d) internal pure returns (bytes memory) {
        return bytes.concat(d, "");
    }

    function _expectParseRefused(bytes memory der) internal view {
        try verifier.parseCertificate(der) {
            revert("parsed");
        } catch (bytes memory err) {
            assertEq(bytes32(bytes4(err)), bytes32(_malformed()), "only Der_Malformed");
        }
    }

    /// @dev forge does not enforce EIP-170 on `new`; anvil and real chains do.
    function test_TheVerifierFitsTheCodeSizeLimit() external view {
        assertLe(address(verifier).code.length, 24_576, "EIP-170");
    }

    /*//////////////////////////////////////////////////////////////////////////
                              DER LENGTH AND STRUCTURE TRICKS
    //////////////////////////////////////////////////////////////////////////*/

    function test_DerLengthTricksAreRefused() external view {
        bytes memory vcek = F.VCEK_MILAN_VIRTEE_SEV;
        // Indefinite length (BER, not DER).
        bytes memory d = _copy(vcek);
        d[1] = 0x80;
        _expectParseRefused(d);
        // A three-byte long form (never needed: certificates are < 64 KiB).
        _expectParseRefused(bytes.concat(hex"3083000552", vcek));
        // Non-minimal long forms: 0x81 for a length < 0x80, 0x82 for a length < 0x100.
        _expectParseRefused(hex"30810330010000");
        _expectParseRefused(bytes.concat(hex"308200053003020100"));
        // A length past the end, and a certificate one byte short of its length.
        d = _copy(vcek);
        d[3] = bytes1(uint8(d[3]) + 1);
        _expectParseRefused(d);
        _expectParseRefused(Der.slice(vcek, 0, vcek.length - 1));
        // The TBS claiming one byte more than it has: its last child runs into the outer algorithm.
        d = _copy(vcek);
        d[7] = bytes1(uint8(d[7]) + 1);
        _expectParseRefused(d);
        // Trailing data after the certificate.
        _expectParseRefused(bytes.concat(vcek, hex"00"));
        // A multi-byte tag.
        d = _copy(vcek);
        d[0] = 0x3f;
        _expectParseRefused(d);
    }

    /// @dev 1.3.6.1.4.1.3704.1.3.2 (teeSPL) renamed to .3.1: the blSPL extension appears twice.
    function test_ADuplicatedAmdExtensionIsRefused() external view {
        bytes memory d = _copy(F.VCEK_MILAN_VIRTEE_SEV);
        uint256 at = _find(d, hex"2b060104019c78010302", 0, 0) + 9;
        d[at] = 0x01;
        _expectParseRefused(d);
    }

    /// @dev .3.8 (ucodeSPL) renamed to .3.10 (not an SPL) or to .3.8.1 would look alike to a prefix
    /// match: neither is read as ucodeSPL, so the VCEK lacks a required SPL and is refused.
    function test_AnAmdOidLookalikeIsNotAnSpl() external {
        bytes memory d = _copy(F.VCEK_MILAN_VIRTEE_SEV);
        uint256 at = _find(d, hex"2b060104019c78010308", 0, 0) + 9;
        d[at] = 0x0a; // .3.10
        Der.Certificate memory c = verifier.parseCertificate(d);
        assertEq(c.amdExtensions & (1 << 8), 0, "not ucodeSPL");
        assertEq(uint256(c.spl[8]), 0, "no value");
        vm.expectRevert(_refused(SnpReason.Malformed));
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(d, F.ASK_MILAN));
    }

    /*//////////////////////////////////////////////////////////////////////////
                                 CERTIFICATE CACHE CONFUSION
    //////////////////////////////////////////////////////////////////////////*/

    function test_AVcekCannotIssue() external {
        bytes32 ask = verifier.verifyCertificate(F.ASK_MILAN, milanArk);
        bytes32 vcek = verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.VCEK_MILAN_GO_SEV_GUEST, vcek);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.ASK_GENOA, vcek);
    }

    function test_AVcekDoesNotChainToAnAsvk() external {
        bytes32 asvk = verifier.verifyCertificate(F.ASVK_MILAN, milanArk);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, asvk);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(F.VCEK_MILAN_VIRTEE_SEV, abi.encode(asvk)));
    }

    function test_AnIssuerCannotSignAReport() external {
        bytes32 ask = verifier.verifyCertificate(F.ASK_MILAN, milanArk);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(abi.encode(ask), ""));
        vm.expectRevert(_refused(SnpReason.Malformed));
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(F.ASK_MILAN, F.ASK_MILAN));
        assertFalse(verifier.isSignerBound(F.REPORT_MILAN_VIRTEE_SEV, ask), "an ASK binds nothing");
    }

    function test_AnArkKeyHashDoesNotStandForAnotherProductsArk() external {
        bytes32 genoaArk = verifier.arkKeyHash(keccak256("Genoa"));
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.ASK_MILAN, genoaArk);
        // The ARK itself is no ASK.
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.ARK_MILAN, milanArk);
    }

    function test_AnOuterAlgorithmOtherThanPssSha384IsRefused() external {
        bytes memory d = _copy(F.VCEK_MILAN_VIRTEE_SEV);
        Der.Certificate memory c = verifier.parseCertificate(d);
        // sha384WithRSAEncryption (PKCS#1 v1.5) instead of RSASSA-PSS in the outer algorithm.
        uint256 at = _find(d, hex"2a864886f70d01010a", c.tbsEnd, 0) + 8;
        d[at] = 0x0c;
        assertFalse(verifier.parseCertificate(d).pssSha384, "not PSS");
        bytes32 ask = verifier.verifyCertificate(F.ASK_MILAN, milanArk);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(d, ask);
    }

    /// @dev Outer AlgorithmIdentifier bytes are not signed: anyone can make a second DER of AMD's
    /// ASK (PSS saltLength 48 -> 32; the check uses AMD's parameters whatever the certificate
    /// says). Caching the chip's VCEK against that twin first made the honest
    /// `verifyCertificate(vcek, keccak(ask))` revert with CertChain: a genuine chain refused.
    function test_AnIssuerTwinCannotMakeAGenuineChainLookBroken() external {
        bytes memory twin = _copy(F.ASK_MILAN);
        Der.Certificate memory c = verifier.parseCertificate(twin);
        uint256 at = _find(twin, hex"a203020130", c.tbsEnd, 0) + 4;
        twin[at] = 0x20;
        bytes32 twinHash = verifier.verifyCertificate(twin, milanArk);
        bytes32 askHash = verifier.verifyCertificate(F.ASK_MILAN, milanArk);
        assertTrue(twinHash != askHash, "another cache key");
        verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, twinHash); // the attacker, first
        bytes32 vcek = verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, askHash); // the honest call
        assertEq(vcek, keccak256(F.VCEK_MILAN_VIRTEE_SEV), "same certificate");
        // Another issuer key is still refused for a cached certificate.
        bytes32 asvk = verifier.verifyCertificate(F.ASVK_MILAN, milanArk);
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, asvk);
        bytes32 genoaAsk = verifier.verifyCertificate(F.ASK_GENOA, verifier.arkKeyHash(keccak256("Genoa")));
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, genoaAsk);
    }

    /// @dev RSA signature representative s + n (same length as n): s^e mod n is unchanged, so
    /// a lax check accepts a second DER of a genuine certificate that `cryptography` (and RFC 8017
    /// RSAVP1: s must be < n) refuses: the on-chain and off-chain verdicts would differ.
    function test_ARsaSignatureNotBelowTheModulusIsRefused() external {
        bytes32 ask = verifier.verifyCertificate(F.ASK_MILAN, milanArk);
        bytes memory n = verifier.parseCertificate(F.ASK_MILAN).rsaModulus;
        bytes memory d = _copy(F.VCEK_MILAN_VIRTEE_SEV);
        uint256 start = d.length - n.length;
        uint256 carry = 0;
        for (uint256 i = n.length; i > 0; --i) {
            uint256 sum = uint256(uint8(d[start + i - 1])) + uint256(uint8(n[i - 1])) + carry;
            d[start + i - 1] = bytes1(uint8(sum & 0xff));
            carry = sum >> 8;
        }
        assertEq(carry, 0, "s + n fits the modulus' length");
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyCertificate(d, ask);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                THE REPORT AND ITS SIGNATURE
    //////////////////////////////////////////////////////////////////////////*/

    function _cached() internal returns (bytes[] memory certs) {
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
        certs = _certs(abi.encode(keccak256(F.VCEK_MILAN_VIRTEE_SEV)), "");
    }

    function test_NonZeroSignaturePaddingIsMalformed() external {
        bytes[] memory certs = _cached();
        uint256[4] memory offsets = [uint256(0x2D0), 0x2E7, 0x318, 0x32F];
        for (uint256 i = 0; i < offsets.length; ++i) {
            bytes memory report = _copy(F.REPORT_MILAN_VIRTEE_SEV);
            report[offsets[i]] = 0x01;
            (bool ok, uint8 reason,) = verifier.checkReport(report, certs);
            assertFalse(ok, "padding");
            assertEq(uint256(reason), uint256(SnpReason.Malformed), "malformed");
        }
    }

    function _setScalar(bytes memory report, uint256 offset, uint256 hi, uint256 lo) internal pure {
        for (uint256 i = 0; i < 32; ++i) {
            report[offset + i] = bytes1(uint8(lo >> (8 * i)));
        }
        for (uint256 i = 0; i < 16; ++i) {
            report[offset + 32 + i] = bytes1(uint8(hi >> (8 * i)));
        }
    }

    function _scalar(bytes memory report, uint256 offset) internal pure returns (uint256 hi, uint256 lo) {
        for (uint256 i = 0; i < 32; ++i) {
            lo |= uint256(uint8(report[offset + i])) << (8 * i);
        }
        for (uint256 i = 0; i < 16; ++i) {
            hi |= uint256(uint8(report[offset + 32 + i])) << (8 * i);
        }
    }

    /// @dev r or s zero or >= n: refused as a bad signature (never a revert, never accepted).
    function test_OutOfRangeScalarsAreABadSignature() external {
        bytes[] memory certs = _cached();
        uint256[2] memory at = [uint256(0x2A0), 0x2E8];
        for (uint256 k = 0; k < 2; ++k) {
            uint256[2][3] memory values = [[uint256(0), 0], [_N_HI, _N_LO], [_N_HI, type(uint256).max]];
            for (uint256 v = 0; v < 3; ++v) {
                bytes memory report = _copy(F.REPORT_MILAN_VIRTEE_SEV);
                _setScalar(report, at[k], values[v][0], values[v][1]);
                (bool ok, uint8 reason,) = verifier.checkReport(report, certs);
                assertFalse(ok, "out of range");
                assertEq(uint256(reason), uint256(SnpReason.BadSignature), "bad signature");
            }
        }
    }

    /// @dev s -> n - s is the same signature (ECDSA malleability; `cryptography` accepts it too):
    /// the report's bytes, hence its keccak256, differ, so whoever keys anything on reportHash must
    /// take the hash the node committed to, not one a disputer presents.
    function test_TheHighSTwinOfAGenuineReportVerifiesWithAnotherHash() external {
        bytes[] memory certs = _cached();
        bytes memory report = _copy(F.REPORT_MILAN_VIRTEE_SEV);
        (uint256 hi, uint256 lo) = _scalar(report, 0x2E8);
        uint256 borrow = lo > _N_LO ? 1 : 0;
        uint256 lo2;
        unchecked {
            lo2 = _N_LO - lo;
        }
        _setScalar(report, 0x2E8, _N_HI - hi - borrow, lo2);
        (bool ok,, SnpReportFields memory f) = _check(report, certs);
        assertTrue(ok, "twin verifies");
        assertTrue(f.reportHash != keccak256(F.REPORT_MILAN_VIRTEE_SEV), "another hash");
    }

    function _check(bytes memory report, bytes[] memory certs)
        internal
        returns (bool ok, uint8 reason, SnpReportFields memory f)
    {
        return verifier.checkReport(report, certs);
    }

    /*//////////////////////////////////////////////////////////////////////////
                                       GAS STARVATION
    //////////////////////////////////////////////////////////////////////////*/

    /// forge-config: default.fuzz.runs = 64
    function testFuzz_AStarvedWarmCheckNeverRefusesAGenuineReport(uint256 gas) external {
        bytes[] memory certs = _cached();
        StarvingCaller caller = new StarvingCaller();
        gas = bound(gas, 20_000, 9_000_000);
        (bool called, bool ok, uint8 reason) = caller.check(verifier, F.REPORT_MILAN_VIRTEE_SEV, certs, gas);
        if (called) {
            assertTrue(ok, "a starved check answered refused");
            assertEq(uint256(reason), 0, "reason");
        }
    }

    /// forge-config: default.fuzz.runs = 24
    function testFuzz_AStarvedColdCheckNeverRefusesAGenuineReport(uint256 gas) external {
        StarvingCaller caller = new StarvingCaller();
        gas = bound(gas, 20_000, 13_000_000);
        bytes[] memory certs = _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN);
        (bool called, bool ok, uint8 reason) = caller.check(verifier, F.REPORT_MILAN_VIRTEE_SEV, certs, gas);
        if (called) {
            assertTrue(ok, "a starved check answered refused");
            assertEq(uint256(reason), 0, "reason");
        }
    }
}
