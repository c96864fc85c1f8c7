// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISnpVerifier, SnpReportFields} from "../../src/interfaces/ISnpVerifier.sol";

/// @notice Test double of the EVM report check: `checkReport` answers what the test set for the
/// report's keccak256 (unknown reports: not ok, CertChain). The real SnpVerifier is wired at deploy.
contract MockSnpVerifier is ISnpVerifier {
    struct Answer {
        bool set;
        bool ok;
        uint8 reason;
        SnpReportFields fields;
    }

    mapping(bytes32 reportHash => Answer) private _answers;

    function setAnswer(bytes calldata report, bool ok, uint8 reason, SnpReportFields calldata fields) external {
        Answer storage answer = _answers[keccak256(report)];
        answer.set = true;
        answer.ok = ok;
        answer.reason = reason;
        answer.fields = fields;
    }

    function checkReport(bytes calldata report, bytes[] calldata)
        public
        view
        override
        returns (bool ok, uint8 reason, SnpReportFields memory fields)
    {
        Answer storage answer = _answers[keccak256(report)];
        if (!answer.set) return (false, 6, fields);
        if (!answer.ok) return (false, answer.reason, fields);
        return (true, 0, answer.fields);
    }

    function verifyReport(bytes calldata report, bytes[] calldata certs)
        external
        view
        override
        returns (SnpReportFields memory fields)
    {
        bool ok;
        uint8 reason;
        (ok, reason, fields) = checkReport(report, certs);
        require(ok, "refused");
    }

    function verifyCertificate(bytes calldata der, bytes32) external pure override returns (bytes32) {
        return keccak256(der);
    }

    function isCertVerified(bytes32) external pure override returns (bool) {
        return true;
    }

    /// @dev As the real one for the report (VCEK-signed, CHIP_ID not masked), for any certificate.
    function isSignerBound(bytes calldata report, bytes32) external pure override returns (bool) {
        if (report.length != 1184 || (uint8(report[0x48]) >> 2) & 7 != 0) return false;
        return bytes32(report[0x1A0:0x1C0]) != 0 || bytes32(report[0x1C0:0x1E0]) != 0;
    }

    function arkKeyHash(bytes32) external pure override returns (bytes32) {
        return bytes32(0);
    }
}
