"""SEV-SNP attestation: parse, verify to AMD's roots, validate a policy, simulate the AMD-SP.

Layers as in google/go-sev-guest, each knowing only the ones below: `abi` (bytes <-> report),
`verify` (signature, chain, endorsement binding), `validate` (policy), with `binding`
(REPORT_DATA for a lease), `kds`, `measure`, `evidence`, `sim` and `appraisal` (verify then
validate) beside them. Everything a caller needs is re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvm.attestation.abi import (
        REPORT_SIZE,
        GuestPolicy,
        Report,
        SignerInfo,
        SigningKey,
        TcbVersion,
        parse,
    )
    from cvm.attestation.amd_root import AmdRoot
    from cvm.attestation.appraisal import Appraisal, appraise, appraise_evidence
    from cvm.attestation.binding import LeaseBinding, build_report_data
    from cvm.attestation.endorsement import EndorsementKey, load_endorsement_key
    from cvm.attestation.errors import (
        AttestationError,
        EvidenceError,
        KdsError,
        MeasurementError,
        Reason,
        ReportFormatError,
        ValidationError,
        VerificationError,
    )
    from cvm.attestation.evidence import EvidenceBundle, report_hash
    from cvm.attestation.kds import (
        CachingKds,
        CertificateSource,
        HttpKds,
        KdsRateLimit,
        cert_chain_url,
        vcek_url,
    )
    from cvm.attestation.measure import expected_measurement
    from cvm.attestation.product import Product
    from cvm.attestation.sim import SimulatedAmd, SimulatedAttestation, SimulatedSecureProcessor
    from cvm.attestation.trust import amd_roots
    from cvm.attestation.validate import Failure, Policy, ValidationResult, validate_report
    from cvm.attestation.verify import VerifiedReport, check_validity, verify_report

# Names are imported on first use, so that `cvm --help` and light users (the abi alone) do
# not pay for eth-abi, httpx and sev-snp-measure.
_EXPORTS: dict[str, str] = {
    "Appraisal": "cvm.attestation.appraisal",
    "AttestationError": "cvm.attestation.errors",
    "CachingKds": "cvm.attestation.kds",
    "CertificateSource": "cvm.attestation.kds",
    "EndorsementKey": "cvm.attestation.endorsement",
    "EvidenceBundle": "cvm.attestation.evidence",
    "EvidenceError": "cvm.attestation.errors",
    "Failure": "cvm.attestation.validate",
    "GuestPolicy": "cvm.attestation.abi",
    "HttpKds": "cvm.attestation.kds",
    "KdsRateLimit": "cvm.attestation.kds",
    "KdsError": "cvm.attestation.errors",
    "LeaseBinding": "cvm.attestation.binding",
    "MeasurementError": "cvm.attestation.errors",
    "Policy": "cvm.attestation.validate",
    "Product": "cvm.attestation.product",
    "REPORT_SIZE": "cvm.attestation.abi",
    "Reason": "cvm.attestation.errors",
    "Report": "cvm.attestation.abi",
    "ReportFormatError": "cvm.attestation.errors",
    "SignerInfo": "cvm.attestation.abi",
    "SigningKey": "cvm.attestation.abi",
    "SimulatedAmd": "cvm.attestation.sim",
    "SimulatedAttestation": "cvm.attestation.sim",
    "SimulatedSecureProcessor": "cvm.attestation.sim",
    "TcbVersion": "cvm.attestation.abi",
    "ValidationError": "cvm.attestation.errors",
    "ValidationResult": "cvm.attestation.validate",
    "VerificationError": "cvm.attestation.errors",
    "VerifiedReport": "cvm.attestation.verify",
    "AmdRoot": "cvm.attestation.amd_root",
    "amd_roots": "cvm.attestation.trust",
    "appraise": "cvm.attestation.appraisal",
    "appraise_evidence": "cvm.attestation.appraisal",
    "build_report_data": "cvm.attestation.binding",
    "cert_chain_url": "cvm.attestation.kds",
    "check_validity": "cvm.attestation.verify",
    "expected_measurement": "cvm.attestation.measure",
    "load_endorsement_key": "cvm.attestation.endorsement",
    "parse": "cvm.attestation.abi",
    "report_hash": "cvm.attestation.evidence",
    "validate_report": "cvm.attestation.validate",
    "vcek_url": "cvm.attestation.kds",
    "verify_report": "cvm.attestation.verify",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "REPORT_SIZE",
    "AmdRoot",
    "Appraisal",
    "AttestationError",
    "CachingKds",
    "CertificateSource",
    "EndorsementKey",
    "EvidenceBundle",
    "EvidenceError",
    "Failure",
    "GuestPolicy",
    "HttpKds",
    "KdsError",
    "KdsRateLimit",
    "LeaseBinding",
    "MeasurementError",
    "Policy",
    "Product",
    "Reason",
    "Report",
    "ReportFormatError",
    "SignerInfo",
    "SigningKey",
    "SimulatedAmd",
    "SimulatedAttestation",
    "SimulatedSecureProcessor",
    "TcbVersion",
    "ValidationError",
    "ValidationResult",
    "VerificationError",
    "VerifiedReport",
    "amd_roots",
    "appraise",
    "appraise_evidence",
    "build_report_data",
    "cert_chain_url",
    "check_validity",
    "expected_measurement",
    "load_endorsement_key",
    "parse",
    "report_hash",
    "validate_report",
    "vcek_url",
    "verify_report",
]
