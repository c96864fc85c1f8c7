// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

import {IAttestationCourt} from "./interfaces/IAttestationCourt.sol";
import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IAttestationRegistryCore} from "./interfaces/IAttestationRegistryCore.sol";
import {ILeaseMarket} from "./interfaces/ILeaseMarket.sol";
import {ISnpVerifier, SnpReason, SnpReportFields} from "./interfaces/ISnpVerifier.sol";
import {Errors} from "./libraries/Errors.sol";
import {SubmissionInfo} from "./types/DataTypes.sol";

/// @title AttestationCourt
/// @notice Disputes and on-chain confirmations of attestation verdicts. See {IAttestationCourt}.
/// @dev Holds no funds and no state: the bond goes straight to the registry, which settles.
contract AttestationCourt is IAttestationCourt {
    using SafeERC20 for IERC20;

    /// @inheritdoc IAttestationCourt
    uint256 public constant override GUEST_KEY_LENGTH = 116;

    uint256 private constant _REPORT_LENGTH = 1184;
    uint256 private constant _MEASUREMENT_LENGTH = 48;

    /// @inheritdoc IAttestationCourt
    ISnpVerifier public immutable override snpVerifier;

    /// @inheritdoc IAttestationCourt
    IAttestationRegistryCore public immutable override registry;

    constructor(ISnpVerifier snpVerifier_, IAttestationRegistryCore registry_) {
        if (address(snpVerifier_) == address(0) || address(registry_) == address(0)) {
            revert Errors.AttestationCourt_ZeroAddress();
        }
        snpVerifier = snpVerifier_;
        registry = registry_;
    }

    /// @inheritdoc IAttestationCourt
    function dispute(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override returns (bool overturned) {
        SubmissionInfo memory sub = _submission(leaseId, reportHash);
        uint256 bond = registry.disputeTerms().bond;
        // The registry holds the bond (and the verifiers' stake it is paid back or out from); the
        // deployment's token moves exactly what it is told.
        if (bond != 0) registry.stakeToken().safeTransferFrom(msg.sender, address(registry), bond);
        bool genuine = this.truth(leaseId, sub.number - 1, sub.signer, reportHash, report, certs, guestKey);
        overturned = registry.resolveDispute(leaseId, reportHash, msg.sender, genuine, bond);
    }

    /// @inheritdoc IAttestationCourt
    function confirmOnChain(
        uint256 leaseId,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override {
        SubmissionInfo memory sub = _submission(leaseId, reportHash);
        if (!this.truth(leaseId, sub.number - 1, sub.signer, reportHash, report, certs, guestKey)) {
            revert Errors.AttestationRegistry_NotConfirmed(leaseId, reportHash);
        }
        registry.confirmByCourt(leaseId, reportHash);
    }

    /// @inheritdoc IAttestationCourt
    function truth(
        uint256 leaseId,
        uint256 nonce,
        address signer,
        bytes32 reportHash,
        bytes calldata report,
        bytes[] calldata certs,
        bytes calldata guestKey
    ) external override returns (bool) {
        if (keccak256(report) != reportHash) revert Errors.AttestationCourt_ReportMismatch(leaseId, reportHash);
        // The node committed to bytes that are no report: not genuine, whatever the certificates.
        if (report.length != _REPORT_LENGTH) return false;
        SnpReportFields memory fields;
        {
            (bool ok, uint8 reason, SnpReportFields memory checked) = snpVerifier.checkReport(report, certs);
            if (!ok) {
                // Conclusive only when the report itself is at fault (see the interface).
                if (reason == uint8(SnpReason.UnsignedReport)) return false;
                if (reason == uint8(SnpReason.BadSignature) && _chipBound(report)) return false;
                revert Errors.AttestationCourt_Inconclusive(leaseId, reason);
            }
            fields = checked;
        }
        if (guestKey.length != GUEST_KEY_LENGTH || sha256(guestKey) != fields.reportData1) {
            revert Errors.AttestationCourt_GuestKeyMismatch(leaseId);
        }
        return address(bytes20(guestKey[64:84])) == signer && _policy(leaseId, nonce, fields);
    }

    /// @dev The submission, refused early if unknown (the registry checks the rest when it settles).
    function _submission(uint256 leaseId, bytes32 reportHash) private view returns (SubmissionInfo memory sub) {
        sub = registry.submissionOf(leaseId, reportHash);
        if (sub.number == 0) revert Errors.AttestationRegistry_UnknownSubmission(leaseId, reportHash);
    }

    function _policy(uint256 leaseId, uint256 nonce, SnpReportFields memory fields) private view returns (bool) {
        if (fields.vmpl != 0 || (fields.policy >> 19) & 1 != 0) return false;
        IAttestationRegistry.Attestation memory attestation = registry.attestationOf(leaseId);
        if (fields.measurement.length != _MEASUREMENT_LENGTH) return false;
        if (keccak256(fields.measurement) != keccak256(attestation.measurement)) return false;
        (,, address renter,,) = ILeaseMarket(registry.leaseMarket()).leaseParties(leaseId);
        return fields.reportData0
            == keccak256(abi.encode("cvm.attest.v1", block.chainid, address(registry), leaseId, nonce))
            && fields.hostData == keccak256(abi.encode("cvm.host.v1", block.chainid, address(registry), leaseId, renter));
    }

    /// @dev A VCEK-signed report (SIGNING_KEY 0 at 0x48 bits 2..4) with a CHIP_ID (0x1A0, 64 bytes) not all zero.
    function _chipBound(bytes calldata report) private pure returns (bool) {
        if ((uint8(report[0x48]) >> 2) & 7 != 0) return false;
        return bytes32(report[0x1A0:0x1C0]) != 0 || bytes32(report[0x1C0:0x1E0]) != 0;
    }
}
