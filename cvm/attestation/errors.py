"""Error types of the attestation layers and the reason codes they carry.

Every failure anywhere in `cvm.attestation` is named by one `Reason`, so that callers (the
verifier service, the CLI's JSON output, dashboards) can branch on a stable code rather
than on message text.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable codes for every way a report can fail to be accepted."""

    # abi: the bytes are not a well-formed report
    MALFORMED_REPORT = "MALFORMED_REPORT"
    # verify: signature and certificate chain
    MALFORMED_CERTIFICATE = "MALFORMED_CERTIFICATE"
    UNSIGNED_REPORT = "UNSIGNED_REPORT"
    SIGNER_MISMATCH = "SIGNER_MISMATCH"
    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"
    PRODUCT_MISMATCH = "PRODUCT_MISMATCH"
    UNTRUSTED_ROOT = "UNTRUSTED_ROOT"
    CHAIN_INVALID = "CHAIN_INVALID"
    CERT_NOT_YET_VALID = "CERT_NOT_YET_VALID"
    CERT_EXPIRED = "CERT_EXPIRED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    TCB_MISMATCH = "TCB_MISMATCH"
    CHIP_ID_MISMATCH = "CHIP_ID_MISMATCH"
    # validate: a verified report that does not satisfy the caller's policy
    MEASUREMENT_MISMATCH = "MEASUREMENT_MISMATCH"
    REPORT_DATA_MISMATCH = "REPORT_DATA_MISMATCH"
    BINDING_MISMATCH = "BINDING_MISMATCH"
    HOST_DATA_MISMATCH = "HOST_DATA_MISMATCH"
    # The guest key REPORT_DATA binds is missing or not a well-formed GuestKey (empty,
    # short, zero X25519, bad Ed25519, zero signer): nothing could be sealed to that guest.
    # (The verifier votes on it only where the EVM cannot take the key either:
    # `cvm.disputes.check_evidence`.)
    GUEST_KEY_MALFORMED = "GUEST_KEY_MALFORMED"
    # The guest key is already bound by another live lease's attestation (one guest, one
    # lease): the later claim is not voted on by the verifiers (the EVM cannot see it).
    GUEST_KEY_REUSED = "GUEST_KEY_REUSED"
    # The attested signer the node submitted on chain is not the one in the guest key the
    # report binds: `attestedSignerOf` would vouch for a key the guest never made.
    GUEST_SIGNER_MISMATCH = "GUEST_SIGNER_MISMATCH"
    DEBUG_ALLOWED = "DEBUG_ALLOWED"
    MIGRATION_AGENT_ALLOWED = "MIGRATION_AGENT_ALLOWED"
    TCB_TOO_LOW = "TCB_TOO_LOW"
    GUEST_SVN_TOO_LOW = "GUEST_SVN_TOO_LOW"
    VMPL_MISMATCH = "VMPL_MISMATCH"
    PRODUCT_NOT_ALLOWED = "PRODUCT_NOT_ALLOWED"
    SIGNER_NOT_ALLOWED = "SIGNER_NOT_ALLOWED"
    REPORT_TOO_OLD = "REPORT_TOO_OLD"
    REPORT_AGE_UNKNOWN = "REPORT_AGE_UNKNOWN"


class AttestationError(Exception):
    """Base of every error raised by `cvm.attestation`; carries a reason code."""

    reason: Reason = Reason.MALFORMED_REPORT

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0])


class ReportFormatError(AttestationError):
    """abi layer: the bytes are not a well-formed ATTESTATION_REPORT."""

    reason = Reason.MALFORMED_REPORT


class VerificationError(AttestationError):
    """verify layer: the signature, the certificate chain or the endorsement binding failed."""


class ValidationError(AttestationError):
    """validate layer: a verified report does not satisfy the policy (first failure)."""


class KdsError(AttestationError):
    """kds layer: a certificate could not be located or fetched."""


class KdsNotFound(KdsError):
    """kds layer: the KDS answered that it has no certificate at that URL (HTTP 404), as
    opposed to not answering (unreachable, rate limiting, a server error: plain `KdsError`)."""


class EvidenceError(AttestationError):
    """evidence layer: a bundle is malformed, too large or not canonical."""


class MeasurementError(AttestationError):
    """measure layer: the launch measurement cannot be computed for these inputs."""
