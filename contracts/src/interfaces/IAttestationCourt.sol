// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistryCore} from "./IAttestationRegistryCore.sol";
import {ISnpVerifier} from "./ISnpVerifier.sol";

/// @title IAttestationCourt
/// @notice The court of appeal of cvm attestations: anyone disputes a verifier verdict (or confirms a
/// Verified one) with the raw report in hand, and the EVM finds the truth: the SEV-SNP report check
/// of `ISnpVerifier` plus the policy the off-chain verifier applies. The attestation registry then
/// settles the money (`IAttestationRegistryCore.resolveDispute`). A separate contract only to keep
/// the registry under the 24 KiB code size limit.
interface IAttestationCourt {
    /// @notice The on-chain SEV-SNP report check this court uses.
    function snpVerifier() external view returns (ISnpVerifier);

    /// @notice The registry whose leases this court judges (bound into REPORT_DATA and HOST_DATA).
    function registry() external view returns (IAttestationRegistryCore);

    /// @notice Length of the guest key: X25519 (32) || Ed25519 (32) || signer address (20) || TLS SPKI
    /// SHA-256 (32); REPORT_DATA[32:64] is its SHA-256.
    function GUEST_KEY_LENGTH() external view returns (uint256);

    /// @notice Disputes the verdict on the submission of `leaseId` whose report hash is `reportHash`,
    /// within its dispute window, once per submission. Anyone may; the caller bonds
    /// `registry().disputeTerms().bond` of the stake token (approve the REGISTRY for it: it holds the bond).
    /// @dev The truth is `truth(...)` for the submission's nonce and signer; the registry reverses a
    /// wrong verdict with its money (see `IAttestationRegistryCore.resolveDispute`).
    /// Reverts: AttestationRegistry_UnknownSubmission, _NotDecided, _AlreadySettled, _DisputeWindowPassed,
    /// the errors of `truth`, and the token's for the bond.
    /// @return overturned Whether the verdict was reversed.
    function dispute(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external returns (bool overturned);

    /// @notice Confirms a Verified verdict by the same check, without a bond, within its dispute window:
    /// `isAttestedFinal` then holds at once (a finalisation ahead of the window).
    /// @dev Reverts: as `dispute` (no bond), and AttestationRegistry_NotConfirmed if the report is false
    /// (dispute it instead) or the verdict is not Verified.
    function confirmOnChain(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external;

    /// @notice Whether the report of submission `nonce` of `leaseId` is genuine and acceptable.
    /// @dev True iff `snpVerifier.checkReport(report, certs)` passes (ECDSA P-384 signature by the
    /// VCEK/VLEK, chain to the product's pinned ARK, TCB and CHIP_ID against the certificate), VMPL is
    /// 0, the POLICY debug bit (19) is off, MEASUREMENT is the lease's expected one, REPORT_DATA[0:32] is
    /// keccak256(abi.encode("cvm.attest.v1", chainid, registry, leaseId, nonce)), REPORT_DATA[32:64] is
    /// sha256(guestKey), guestKey[64:84] is `signer`, and HOST_DATA is
    /// keccak256(abi.encode("cvm.host.v1", chainid, registry, leaseId, renter)).
    /// False also for a report that is not 1184 bytes, that says it is unsigned (UnsignedReport), or
    /// whose signature fails (BadSignature) for a VCEK-signed report with an unmasked CHIP_ID (this
    /// relies on `checkReport` checking the VCEK's hwID and TCB against the report before the
    /// signature, so that the VCEK was the chip's own). Every other check failure may come from
    /// certificates the caller chose, and a guest key that is not REPORT_DATA[32:64]'s preimage from
    /// the caller too: those revert, so that no caller's input can make a genuine report look false.
    /// Anyone may call it (it caches the certificates it verifies).
    /// Reverts: AttestationCourt_ReportMismatch (keccak256(report) != reportHash),
    /// _Inconclusive(leaseId, reason), _GuestKeyMismatch.
    function truth(
        uint256 leaseId,
        uint256 nonce,
        address signer,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external returns (bool);
}
