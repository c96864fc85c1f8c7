// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IAttestationRegistry
/// @notice The stable dApp interface of cvm: is lease N running the code I expect, on real
/// AMD hardware? Names and types here must not change (dApps and acceptance checks bind to them).
interface IAttestationRegistry {
    /// @notice Status of a lease's latest attestation. `Expired` is reported once the
    /// re-attestation interval has passed without a new one, or once the lease has closed.
    enum Status {
        None,
        Pending,
        Verified,
        Rejected,
        Expired
    }

    /// @notice A lease's latest attestation.
    /// @param status See `Status`.
    /// @param node The node key of the lease (zero while no attestation was submitted).
    /// @param reportHash keccak256 of the raw 1184-byte SEV-SNP report.
    /// @param measurement The 48-byte launch measurement (always the lease's expected one).
    /// @param reportedTcb The TCB version the report states.
    /// @param submittedAt When the node submitted it (payment accrues from here once verified).
    /// @param verifiedAt When the verifier quorum confirmed it (0 unless verified).
    /// @param expiresAt submittedAt plus the lease's re-attestation interval.
    struct Attestation {
        Status status;
        address node;
        bytes32 reportHash;
        bytes measurement; // 48 bytes
        uint64 reportedTcb;
        uint64 submittedAt;
        uint64 verifiedAt;
        uint64 expiresAt;
    }

    /// @notice The latest attestation of a lease (all zero if none was submitted).
    function attestationOf(uint256 leaseId) external view returns (Attestation memory);

    /// @notice True only while the lease is active and funded, its measurement equals
    /// `expectedMeasurement`, and its latest attestation is Verified and unexpired, or is a
    /// re-attestation still awaiting the verifiers while the previous verified one is unexpired.
    function isAttested(uint256 leaseId, bytes calldata expectedMeasurement) external view returns (bool);

    /// @notice The guest's own signing address ("attested signer") vouched for by the attestation that
    /// makes `isAttested(leaseId, ...)` true right now, else address(0).
    /// @dev The guest makes a secp256k1 key at boot; its address is part of the guest key whose
    /// SHA-256 the SEV-SNP report binds in REPORT_DATA, the node submits it with the report, and the
    /// verifiers reject a report whose guest key names another signer. Exact rule: if the latest
    /// attestation is Verified and unexpired, its signer; if it is a re-attestation still awaiting
    /// the verifiers while the previous verified attestation is unexpired (seamless re-attestation),
    /// the PREVIOUS verified attestation's signer; otherwise (none, pending first attestation,
    /// rejected, expired, lease closed or used up) address(0). It never returns the node key (`submit`
    /// refuses it). A dApp accepts a result only when it is signed by this address while `isAttested`
    /// holds for the measurement it trusts: the host cannot sign as the guest.
    function attestedSignerOf(uint256 leaseId) external view returns (address);

    /// @notice Like `isAttested`, but only for an attestation no verifier can still take back: true
    /// only while `isAttested(leaseId, expectedMeasurement)` holds AND the Verified attestation that
    /// makes it hold was either confirmed by the on-chain report check (a dispute that upheld it, or
    /// `confirmOnChain`) or its dispute window (submittedAt + VERIFICATION_WINDOW + the lease's
    /// dispute window) has passed without a dispute overturning it, and no challenge of a Verified verdict
    /// of the lease is pending in the court (`IAttestationCourt.challengeOf`). Trusts no verifier key.
    function isAttestedFinal(uint256 leaseId, bytes calldata expectedMeasurement) external view returns (bool);

    /// @notice Emitted when a node submits an attestation for a lease.
    event AttestationSubmitted(uint256 indexed leaseId, address indexed node, bytes32 reportHash, bytes measurement);

    /// @notice Emitted when the verifier quorum confirms an attestation.
    event AttestationVerified(uint256 indexed leaseId, bytes32 reportHash);

    /// @notice Emitted when the verifier quorum rejects an attestation.
    event AttestationRejected(uint256 indexed leaseId, bytes32 reportHash);
}
