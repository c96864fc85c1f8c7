// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SnpVerifier} from "../../src/SnpVerifier.sol";
import {ISnpVerifier, SnpReason} from "../../src/interfaces/ISnpVerifier.sol";
import {Errors} from "../../src/libraries/Errors.sol";
import {CloseReason, LeaseStatus} from "../../src/types/DataTypes.sol";
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
        // Cache the chain (anyone may), then the bad signature under the chip's own VCEK decides at once.
        bytes32 ask = real.verifyCertificate(F.ASK_MILAN, real.arkKeyHash(keccak256("Milan")));
        real.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        vm.prank(disputer);
        assertTrue(court.dispute(leaseId, keccak256(forged), forged, certs(true), guestKey), "overturned");
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "ended");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded");
        assertEq(court.stakeOf(verifier).stake, VERIFIER_STAKE / 2, "voter slashed");
    }

    /// Uncached, the refusal proves nothing about the report: the dispute opens a challenge instead, and
    /// the certificates anyone brings within it (the chip's own VCEK, now cached) prove it false at once.
    function test_ForgedReportUncached_Challenged_ThenProvenFalse() external {
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256(forged));
        confirmReport(leaseId, keccak256(forged), true);
        vm.prank(disputer);
        assertFalse(court.dispute(leaseId, keccak256(forged), forged, certs(false), guestKey), "challenged");
        assertTrue(court.challengeOf(leaseId, keccak256(forged)).deadline != 0, "pending");
        // The uncached chain as a "defence": inconclusive, refused.
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationCourt_Inconclusive.selector, leaseId, uint8(SnpReason.BadSignature)
            )
        );
        court.defend(leaseId, keccak256(forged), forged, certs(false), guestKey);
        bytes32 ask = real.verifyCertificate(F.ASK_MILAN, real.arkKeyHash(keccak256("Milan")));
        real.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        court.defend(leaseId, keccak256(forged), forged, certs(true), guestKey);
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "ended");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded");
        assertEq(court.stakeOf(verifier).stake, VERIFIER_STAKE / 2, "voter slashed");
        assertEq(token.balanceOf(disputer), 10e18 + VERIFIER_STAKE / 4, "disputer: bond back and half the slash");
    }

    /// A real report re-labelled VLEK-signed (SIGNING_KEY = 1): no VCEK can ever be bound to it, so a
    /// dispute could never prove it false. A colluding quorum verifies it; the dispute opens a challenge;
    /// nobody can defend it (no certificates pass); after the deadline anyone resolves it: reversed.
    function test_ForgedVlekReport_Challenged_Undefended_Reversed() external {
        bytes memory vlek = F.REPORT_MILAN_VIRTEE_SEV;
        vlek[0x48] = bytes1(uint8(vlek[0x48]) | 0x04);
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256(vlek));
        confirmReport(leaseId, keccak256(vlek), true);
        bytes32 ask = real.verifyCertificate(F.ASK_MILAN, real.arkKeyHash(keccak256("Milan")));
        real.verifyCertificate(F.VCEK_MILAN_VIRTEE_SEV, ask);
        assertFalse(real.isSignerBound(vlek, keccak256(F.VCEK_MILAN_VIRTEE_SEV)), "never bound");
        vm.prank(disputer);
        assertFalse(court.dispute(leaseId, keccak256(vlek), vlek, certs(true), guestKey), "challenged");
        uint256 deadline = court.challengeOf(leaseId, keccak256(vlek)).deadline;
        vm.expectRevert();
        court.defend(leaseId, keccak256(vlek), vlek, certs(true), guestKey);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.AttestationCourt_ChallengeNotExpired.selector, leaseId, keccak256(vlek), deadline
            )
        );
        court.resolve(leaseId, keccak256(vlek));
        vm.warp(deadline + 1);
        court.resolve(leaseId, keccak256(vlek));
        assertEq(uint256(market.getLease(leaseId).closeReason), uint256(CloseReason.ATTESTATION_REJECTED), "ended");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded");
        assertEq(court.stakeOf(verifier).stake, VERIFIER_STAKE / 2, "voter slashed");
        assertFalse(attestations.isAttested(leaseId, measurement), "no longer attested");
    }

    /// A genuine report cannot be framed: a dispute with inputs that prove nothing only opens a
    /// challenge; the real chain with a guest key that is not REPORT_DATA's preimage, or another chip's
    /// VCEK, is no defence (refused). (These fixtures do not bind a lease, so no defence passes here;
    /// Issue21Disputes covers a successful defence.)
    function test_AGenuineReportCannotBeFramedAtOnce() external {
        bytes memory genuine = F.REPORT_MILAN_VIRTEE_SEV;
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, keccak256(genuine));
        confirmReport(leaseId, keccak256(genuine), true);
        // The real chain checks out; the disputer has no guest key whose SHA-256 the report binds.
        vm.prank(disputer);
        assertFalse(court.dispute(leaseId, keccak256(genuine), genuine, certs(false), guestKey), "challenged");
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.ACTIVE), "not reversed at once");
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationCourt_GuestKeyMismatch.selector, leaseId));
        court.defend(leaseId, keccak256(genuine), genuine, certs(false), guestKey);
        // Another chip's certificate: the check fails, but that proves nothing about the report.
        bytes[] memory wrong = new bytes[](2);
        wrong[0] = F.VCEK_MILAN_GO_SEV_GUEST;
        wrong[1] = F.ASK_MILAN;
        (bool ok,,) = real.checkReport(genuine, wrong);
        assertFalse(ok, "refused with another chip's VCEK");
        vm.expectRevert();
        court.defend(leaseId, keccak256(genuine), genuine, wrong, guestKey);
        assertEq(court.bonded(), 1e18, "the bond held");
    }
}
