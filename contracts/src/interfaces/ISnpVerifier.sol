// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice Why a report or certificate was refused. Shared by `checkReport` (returned) and
/// `verifyReport` / `verifyCertificate` (reverted as `SnpVerifier_Refused(reason)`).
enum SnpReason {
    Ok, // 0: not a failure
    Malformed, // 1: the report or a certificate does not parse (size, DER, fields out of range)
    UnsignedReport, // 2: SIGNING_KEY is "none", MASK_CHIP_KEY on a VCEK report, or SIGNATURE_ALGO != 1
    SignerMismatch, // 3: the report says VCEK and the certificate is a VLEK, or the reverse
    UnknownProduct, // 4: the certificate names no product with a pinned ARK
    ProductMismatch, // 5: the report's CPUID (v3+) names another product than the certificate
    CertChain, // 6: a certificate is not signed (RSASSA-PSS SHA-384) by its issuer, or the
    //              issuer is not the expected ASK/ASVK/ARK of the product, or is not cached
    BadSignature, // 7: the ECDSA P-384/SHA-384 report signature does not verify with the VCEK/VLEK
    TcbMismatch, // 8: REPORTED_TCB differs from the VCEK/VLEK SPL extensions
    ChipIdMismatch, // 9: CHIP_ID (not all zero) differs from the VCEK hwID
    DebugPolicy // 10: reserved for callers (POLICY bit 19); the verifier itself never refuses on it
}

/// @notice Fields of a verified SEV-SNP attestation report (AMD pub. 56860, little-endian
/// integers decoded into native ones; byte strings as they appear in the report).
struct SnpReportFields {
    uint32 version;
    uint64 policy;
    uint32 vmpl;
    uint8 signingKey; // 0 VCEK, 1 VLEK
    bytes measurement; // 48 bytes
    bytes32 reportData0; // REPORT_DATA[0:32]
    bytes32 reportData1; // REPORT_DATA[32:64]
    bytes32 hostData;
    bytes chipId; // 64 bytes
    uint64 reportedTcb;
    uint64 committedTcb;
    bytes32 reportHash; // keccak256(report)
    bytes32 productKey; // keccak256(bytes(product name)): "Milan", "Genoa" or "Turin"
}

/// @title ISnpVerifier
/// @notice On-chain check of an AMD SEV-SNP attestation report: the ECDSA P-384 signature by
/// the VCEK or VLEK, its chain VCEK <- ASK <- ARK or VLEK <- ASVK <- ARK (RSASSA-PSS with
/// SHA-384, MGF1-SHA-384, salt 48) to the ARK pinned at deploy for the report's product
/// (Milan, Genoa, Turin), REPORTED_TCB against the certificate's SPL extensions and CHIP_ID
/// against the VCEK's hwID, the same checks as the off-chain `cvm.attestation.verify_report`.
/// Certificate validity dates are NOT checked (real VCEKs expire; a report stays genuine):
/// freshness is the caller's business (report nonce / REPORT_DATA).
/// The debug policy bit is not refused here either: callers read `policy` (bit 19).
/// @dev Certificates: `certs` = [VCEK or VLEK, ASK or ASVK]. Each element is either the DER
/// certificate or, for one already verified (`isCertVerified`), exactly its 32-byte
/// keccak256(DER). An element of any other length is parsed as DER. A DER certificate not yet
/// cached is verified against its issuer (the next element, or the product's pinned ARK for
/// the ASK/ASVK) and cached. A report on a known chip is then one cheap call with
/// [keccak(VCEK), keccak(ASK)] (the ASK element may also be empty or absent once the VCEK is
/// cached: a cached VCEK already chains to a verified ASK, and a second element is then
/// ignored). More than two elements, or none: Malformed. The ASK/ASVK's ARK is the pinned root
/// whose subject Name is its issuer Name (a local stack may pin its simulated AMD-SP's roots
/// beside AMD's). Costs: see contracts/README.md (each step fits EIP-7825's cap on Osaka).
interface ISnpVerifier {
    /// @notice A certificate's signature by its issuer was checked and the certificate cached.
    event SnpCertificateVerified(bytes32 indexed certHash, bytes32 indexed issuerHash, bytes32 productKey);

    /// @notice Refusal raised by `verifyReport` and `verifyCertificate`.
    error SnpVerifier_Refused(SnpReason reason);

    /// @notice Full check of signature + chain to the pinned ARK; reverts with
    /// `SnpVerifier_Refused(reason)` on failure. Caches the certificates it verifies.
    function verifyReport(bytes calldata report, bytes[] calldata certs) external returns (SnpReportFields memory);

    /// @notice Same checks; never reverts for a bad report or certificate: (ok, reason, fields).
    /// `reason` is a `SnpReason` as uint8; fields are zero unless ok.
    function checkReport(bytes calldata report, bytes[] calldata certs)
        external
        returns (bool ok, uint8 reason, SnpReportFields memory fields);

    /// @notice Verify one certificate against its issuer and cache it. `issuerHash` is the
    /// keccak256(DER) of an already verified certificate (for a VCEK/VLEK: its ASK/ASVK), or a
    /// pinned ARK's key hash `arkKeyHash(productKey)` (for an ASK/ASVK). Returns keccak256(der).
    /// Reverts with `SnpVerifier_Refused(reason)`. Idempotent: a certificate cached against the
    /// same `issuerHash`, or against the same issuer in another DER encoding (a cached ASK/ASVK of
    /// the same kind, product and subject under the same ARK: the outer AlgorithmIdentifier is not
    /// signed, so anyone can cache such a twin), returns at once; against another: CertChain.
    function verifyCertificate(bytes calldata der, bytes32 issuerHash) external returns (bytes32 certHash);

    /// @notice True if keccak256(DER) of a certificate verified to a pinned ARK.
    function isCertVerified(bytes32 certHash) external view returns (bool);

    /// @notice True iff the cached VCEK `signerCertHash` is the one AMD issues for the chip and
    /// TCB that `report` names: SIGNING_KEY is VCEK, CHIP_ID is not masked (not all zero) and
    /// equals the hwID, REPORTED_TCB equals the SPLs, and the CPUID product (v3+) matches.
    /// Only for such a certificate does a BadSignature refusal prove that the chip did not sign
    /// the report: with any other certificate (another chip's, another TCB's) a genuine report
    /// fails too. A dispute that claims a report is forged must therefore use a bound
    /// certificate. Always false for a VLEK (tied to no chip) and for a masked CHIP_ID: such a
    /// report cannot be proven forged on chain, only proven genuine.
    function isSignerBound(bytes calldata report, bytes32 signerCertHash) external view returns (bool);

    /// @notice keccak256 of the pinned ARK's RSA modulus (big-endian, no leading zero) for a
    /// product (the first pinned if a local stack pinned more than one), or zero if none.
    function arkKeyHash(bytes32 productKey) external view returns (bytes32);
}
