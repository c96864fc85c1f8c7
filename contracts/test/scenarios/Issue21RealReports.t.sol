// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SnpVerifier} from "../../src/SnpVerifier.sol";
import {ISnpVerifier, SnpReason} from "../../src/interfaces/ISnpVerifier.sol";
import {Errors} from "../../src/libraries/Errors.sol";
import {CloseReason} from "../../src/types/DataTypes.sol";
import {Base} from "../Base.t.sol";
import {SnpFixtures as F} from "../data/SnpFixtures.sol";

/// @notice Issue 21 with the real EVM report check and real AMD-signed reports: a report signed by a
/// non-AMD key (a real report with its REPORT_DATA altered) verified by a colluding quorum is
/// overturned once the chip's own VCEK is cached; a genuine report cannot be made to look false.
contract Issue21RealReports_Test is Base {
    SnpVerifier internal real;
    bytes internal forged;
    bytes internal guestKey;
    address internal disputer;

    function courtSnpVerifier() internal override returns (ISnpVerifier) {
        bytes[] memory arks = new bytes[](3);
        arks[0] = F.ARK_MILAN;
        arks[1] = F.ARK_GENOA;
        arks[2] = F.ARK_TURIN;
        real = new SnpVerifier(arks);
        return real;
    }

    function setUp() public override {
        // The lease expects the real report's MEASUREMENT (0x90, 48 bytes).
        super.setUp();
        bytes memory report = F.REPORT_MILAN_VIRTEE_SEV;
        bytes memory m = new bytes(48);
        for (uint256 i; i < 48; ++i) {
            m[i] = report[0x90 + i];
        }
        measurement = m;
        forged = report;
        forged[0x50] = bytes1(uint8(forged[0x50]) ^ 0x01); // REPORT_DATA changed: AMD never signed this
        guestKey = abi.encodePacked(keccak256("x25519"), keccak256("ed25519"), SIGNER, keccak256("spki"));
        disputer = makeAddr("disputer");
        token.mint(disputer, 10e18);
        vm.prank(disputer);
        token.approve(address(court), type(uint256).max);
    }

    function certs(bool cached) internal pure returns (bytes[] memory list) {
        list = new bytes[](2);
        list[0] = cached ? abi.encode(keccak256(F.VCEK_MILAN_VIRTEE_SEV)) : F.VCEK_MILAN_VIRTEE_SEV;
        list[1] = cached ? bytes("") : F.ASK_MILAN;
    }

    function test_ForgedReportVerifiedByTheQuorumIsOverturned() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256(forged));
        confirmReport(leaseId, keccak256(forged), true);
        // Uncached, the refusal proves nothing: the chip's VCEK is not known to be its own yet.
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationCourt_Inconclusive.selector, leaseId, uint8(SnpReason.BadSignature)
            )
        );
        vm.prank(disputer);
        court.dispute(leaseId, keccak256(forged), forged, certs(false), guestKey);
        // Cache the chain (anyone may), then the bad signature under the chip's own VCEK decides.
        bytes32 ask = real.verifyCertificate(F.ASK_MILAN, real.arkKeyHash(keccak256("Milan")));
        real.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        vm.prank(disputer);
        assertTrue(court.dispute(leaseId, keccak256(forged), forged, certs(true), guestKey), "overturned");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "ended");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded");
        assertEq(court.stakeOf(verifier).stake, VERIFIER_STAKE / 2, "voter slashed");
    }

    function test_AGenuineReportCannotBeFramed() external {
        bytes memory genuine = F.REPORT_MILAN_VIRTEE_SEV;
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256(genuine));
        confirmReport(leaseId, keccak256(genuine), true);
        // The real chain checks out; the disputer has no guest key whose SHA-256 the report binds.
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_GuestKeyMismatch.selector, leaseId));
        vm.prank(disputer);
        court.dispute(leaseId, keccak256(genuine), genuine, certs(false), guestKey);
        // Another chip's certificate: the check fails, but that proves nothing about the report.
        bytes[] memory wrong = new bytes[](2);
        wrong[0] = F.VCEK_MILAN_GO_SEV_GUEST;
        wrong[1] = F.ASK_MILAN;
        (bool ok,,) = real.checkReport(genuine, wrong);
        assertFalse(ok, "refused with another chip's VCEK");
        vm.prank(disputer);
        vm.expectRevert();
        court.dispute(leaseId, keccak256(genuine), genuine, wrong, guestKey);
        assertEq(token.balanceOf(disputer), 10e18, "no bond taken by a refused dispute");
    }
}
