// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SnpVerifier} from "../../../src/SnpVerifier.sol";
import {Der} from "../../../src/libraries/Der.sol";
import {ISnpVerifier, SnpReason, SnpReportFields} from "../../../src/interfaces/ISnpVerifier.sol";
import {Test} from "../../base/Test.sol";
import {SnpFixtures as F} from "../../data/SnpFixtures.sol";

/// @notice The EVM's SEV-SNP check over the real AMD material in test/data (generated from the
/// shared testdata by scripts/snp_fixtures.py, with the off-chain verifier's verdicts).
contract SnpVerifier_Test is Test {
    SnpVerifier internal verifier;

    function setUp() external {
        bytes[] memory arks = new bytes[](3);
        arks[0] = F.ARK_MILAN;
        arks[1] = F.ARK_GENOA;
        arks[2] = F.ARK_TURIN;
        verifier = new SnpVerifier(arks);
    }

    function _certs(bytes memory a, bytes memory b) internal pure returns (bytes[] memory c) {
        c = new bytes[](2);
        c[0] = a;
        c[1] = b;
    }

    function _refused(SnpReason reason) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(ISnpVerifier.SnpVerifier_Refused.selector, reason);
    }

    function test_ArksArePinnedPerProduct() external view {
        assertTrue(verifier.arkKeyHash(keccak256("Milan")) != bytes32(0), "milan");
        assertTrue(verifier.arkKeyHash(keccak256("Genoa")) != bytes32(0), "genoa");
        assertTrue(verifier.arkKeyHash(keccak256("Turin")) != bytes32(0), "turin");
        assertEq(verifier.arkKeyHash(keccak256("Bergamo")), bytes32(0), "unknown product");
    }

    function test_Sha384MatchesHashlib() external view {
        for (uint256 i = 0; i < F.SHA_COUNT; ++i) {
            (bytes memory input, bytes memory digest) = F.sha(i);
            assertEq(verifier.sha384(input), digest, "sha384");
        }
    }

    function test_EveryRealReportVerifiesInOneCall() external {
        _verifies(F.REPORT_MILAN_VIRTEE_SEV, F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN, "Milan");
        _verifies(F.REPORT_MILAN_GO_SEV_GUEST, F.VCEK_MILAN_GO_SEV_GUEST, F.ASK_MILAN, "Milan");
        _verifies(F.REPORT_GENOA_AZURE, F.VCEK_GENOA_AZURE, F.ASK_GENOA, "Genoa");
    }

    function _verifies(bytes memory report, bytes memory vcek, bytes memory ask, string memory product) internal {
        SnpReportFields memory f = verifier.verifyReport(report, _certs(vcek, ask));
        assertEq(f.reportHash, keccak256(report), "report hash");
        assertEq(f.productKey, keccak256(bytes(product)), "product");
        assertEq(uint256(f.signingKey), 0, "VCEK");
        assertEq(f.measurement.length, 48, "measurement");
        assertEq(f.chipId.length, 64, "chip id");
        assertTrue(verifier.isCertVerified(keccak256(vcek)), "vcek cached");
        assertTrue(verifier.isCertVerified(keccak256(ask)), "ask cached");
        // Warm: the cached certificates by hash.
        SnpReportFields memory g = verifier.verifyReport(report, _certs(abi.encode(keccak256(vcek)), ""));
        assertEq(g.reportHash, f.reportHash, "warm");
    }

    function test_ColdStepsInSeparateCalls() external {
        bytes32 ark = verifier.arkKeyHash(keccak256("Milan"));
        bytes32 ask = verifier.verifyCertificate(F.ASK_MILAN, ark);
        assertEq(uint256(verifier.certKind(ask)), 1, "ASK");
        bytes32 vcek = verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        assertEq(uint256(verifier.certKind(vcek)), 3, "VCEK");
        bytes[] memory certs = _certs(abi.encode(vcek), abi.encode(ask));
        (bool ok, uint8 reason,) = verifier.checkReport(F.REPORT_MILAN_VIRTEE_SEV, certs);
        assertTrue(ok, "ok");
        assertEq(uint256(reason), 0, "reason");
    }

    function test_AsvksChainToTheirArk() external {
        bytes32[3] memory products = [keccak256("Milan"), keccak256("Genoa"), keccak256("Turin")];
        bytes[3] memory asvks = [F.ASVK_MILAN, F.ASVK_GENOA, F.ASVK_TURIN];
        bytes[3] memory asks = [F.ASK_MILAN, F.ASK_GENOA, F.ASK_TURIN];
        for (uint256 i = 0; i < 3; ++i) {
            bytes32 h = verifier.verifyCertificate(asvks[i], verifier.arkKeyHash(products[i]));
            assertEq(uint256(verifier.certKind(h)), 2, "ASVK");
            h = verifier.verifyCertificate(asks[i], verifier.arkKeyHash(products[i]));
            assertEq(uint256(verifier.certKind(h)), 1, "ASK");
            // Another product's ARK did not sign it.
            bytes32 other = verifier.arkKeyHash(products[(i + 1) % 3]);
            vm.expectRevert(_refused(SnpReason.CertChain));
            verifier.verifyCertificate(bytes.concat(asks[i], ""), other);
        }
    }

    function test_AskOfAnotherProductIsRefused() external {
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyReport(F.REPORT_GENOA_AZURE, _certs(F.VCEK_GENOA_AZURE, F.ASK_MILAN));
    }

    function test_ReportWithAnotherChipsVcekIsRefused() external {
        vm.expectRevert(_refused(SnpReason.BadSignature));
        verifier.verifyReport(F.REPORT_MILAN_GO_SEV_GUEST, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
    }

    function test_EveryNegativeIsRefusedWithTheOffchainReason() external {
        for (uint256 i = 0; i < F.NEGATIVE_COUNT; ++i) {
            (bytes memory data, uint8 reason, bool isReport) = F.negative(i);
            bytes[] memory certs = isReport ? _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN) : _certs(data, F.ASK_MILAN);
            bytes memory report = F.REPORT_MILAN_VIRTEE_SEV;
            if (isReport) report = data;
            (bool ok, uint8 got,) = verifier.checkReport(report, certs);
            assertFalse(ok, "refused");
            assertEq(uint256(got), uint256(reason), "reason");
            assertTrue(reason != 0, "fixture has a reason");
            vm.expectRevert(_refused(SnpReason(reason)));
            verifier.verifyReport(report, certs);
        }
    }

    function test_OnlyTheChipsOwnVcekIsBoundToItsReport() external {
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
        verifier.verifyReport(F.REPORT_MILAN_GO_SEV_GUEST, _certs(F.VCEK_MILAN_GO_SEV_GUEST, F.ASK_MILAN));
        bytes32 own = keccak256(F.VCEK_MILAN_VIRTEE_SEV);
        bytes32 other = keccak256(F.VCEK_MILAN_GO_SEV_GUEST);
        assertTrue(verifier.isSignerBound(F.REPORT_MILAN_VIRTEE_SEV, own), "own VCEK");
        assertFalse(verifier.isSignerBound(F.REPORT_MILAN_VIRTEE_SEV, other), "another chip's VCEK");
        assertFalse(verifier.isSignerBound(F.REPORT_MILAN_VIRTEE_SEV, keccak256("uncached")), "uncached");
        // A forged report that names the chip and TCB of `own`: bound, and its BadSignature proves it.
        bytes memory forged = F.REPORT_MILAN_VIRTEE_SEV;
        forged[0x90] = bytes1(uint8(forged[0x90]) ^ 1); // another measurement
        assertTrue(verifier.isSignerBound(forged, own), "forged but bound");
        (bool ok, uint8 reason,) = verifier.checkReport(forged, _certs(abi.encode(own), ""));
        assertFalse(ok, "forged refused");
        assertEq(uint256(reason), uint256(SnpReason.BadSignature), "bad signature");
        // Masked CHIP_ID: nothing binds the certificate to the report.
        bytes memory masked = F.REPORT_MILAN_VIRTEE_SEV;
        for (uint256 i = 0x1A0; i < 0x1E0; ++i) {
            masked[i] = 0;
        }
        assertFalse(verifier.isSignerBound(masked, own), "masked");
    }

    function test_UnknownCachedHashIsRefused() external {
        vm.expectRevert(_refused(SnpReason.CertChain));
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(abi.encode(keccak256("nope")), ""));
    }

    function test_MalformedReportAndCertificate() external {
        bytes memory shortReport = new bytes(100);
        (bool ok, uint8 reason,) = verifier.checkReport(shortReport, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
        assertFalse(ok, "short report");
        assertEq(uint256(reason), uint256(SnpReason.Malformed), "short report reason");
        bytes memory vcek = bytes.concat(F.VCEK_MILAN_VIRTEE_SEV, hex"00");
        (ok, reason,) = verifier.checkReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(vcek, F.ASK_MILAN));
        assertFalse(ok, "trailing byte");
        assertEq(uint256(reason), uint256(SnpReason.Malformed), "trailing byte reason");
    }

    function test_TamperedTcbIsRefused() external {
        // The signature covers REPORTED_TCB, so a changed TCB fails the signature first: the
        // TCB check is reached only for a genuinely signed report whose VCEK SPLs differ.
        bytes memory report = F.REPORT_MILAN_VIRTEE_SEV;
        report[0x180] = bytes1(uint8(report[0x180]) ^ 1);
        vm.expectRevert(_refused(SnpReason.BadSignature));
        verifier.verifyReport(report, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
    }

    function test_UnsignedReportIsRefused() external {
        bytes memory report = F.REPORT_MILAN_VIRTEE_SEV;
        report[0x48] = bytes1(uint8(7 << 2));
        vm.expectRevert(_refused(SnpReason.UnsignedReport));
        verifier.verifyReport(report, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
        report[0x48] = bytes1(uint8(1 << 2)); // says VLEK, the certificate is a VCEK
        vm.expectRevert(_refused(SnpReason.SignerMismatch));
        verifier.verifyReport(report, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
    }

    function test_GasOfEachStep() external {
        bytes32 ark = verifier.arkKeyHash(keccak256("Milan"));
        uint256 g = gasleft();
        bytes32 ask = verifier.verifyCertificate(F.ASK_MILAN, ark);
        uint256 askGas = g - gasleft();
        g = gasleft();
        bytes32 vcek = verifier.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        uint256 vcekGas = g - gasleft();
        g = gasleft();
        verifier.verifyReport(F.REPORT_MILAN_VIRTEE_SEV, _certs(abi.encode(vcek), abi.encode(ask)));
        uint256 reportGas = g - gasleft();
        // EIP-7825's per-transaction cap, with room for calldata and the transaction's base cost.
        assertLe(askGas, 15_000_000, "ask");
        assertLe(vcekGas, 15_000_000, "vcek");
        assertLe(reportGas, 15_000_000, "report");
    }

    /// @dev Any bytes: the parse answers or refuses with Der_Malformed, never panics.
    function testFuzz_ParseOfAnyBytesOnlyRefusesCleanly(bytes calldata data) external view {
        _parsesOrRefuses(data);
    }

    /// @dev A real certificate with one byte changed anywhere: the same.
    function testFuzz_ParseOfAMutatedCertificateOnlyRefusesCleanly(uint256 at, uint8 xor) external view {
        bytes memory der = F.VCEK_MILAN_VIRTEE_SEV;
        at = bound(at, 0, der.length - 1);
        der[at] = bytes1(uint8(der[at]) ^ (xor == 0 ? 1 : xor));
        _parsesOrRefuses(der);
    }

    /// @dev A real report with one byte changed anywhere is refused (the signature covers
    /// bytes 0x000-0x29F; the rest is must-be-zero or the signature itself), never accepted.
    function testFuzz_AMutatedReportIsRefused(uint256 at, uint8 xor) external {
        bytes memory report = F.REPORT_MILAN_VIRTEE_SEV;
        at = bound(at, 0, report.length - 1);
        report[at] = bytes1(uint8(report[at]) ^ (xor == 0 ? 1 : xor));
        (bool ok,,) = verifier.checkReport(report, _certs(F.VCEK_MILAN_VIRTEE_SEV, F.ASK_MILAN));
        assertFalse(ok, "mutated report accepted");
    }

    function _parsesOrRefuses(bytes memory data) internal view {
        try verifier.parseCertificate(data) returns (Der.Certificate memory c) {
            assertLe(c.tbsEnd, data.length, "tbs inside");
        } catch (bytes memory err) {
            assertEq(bytes32(bytes4(err)), bytes32(Der.Der_Malformed.selector), "only Der_Malformed");
        }
    }
}
