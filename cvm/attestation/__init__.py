"""SEV-SNP attestation: parse, verify to AMD's roots, validate a policy, simulate the AMD-SP.

Layers as in google/go-sev-guest, each knowing only the ones below: `abi` (bytes <-> report),
`verify` (signature, chain, endorsement binding), `validate` (policy), with `binding`
(REPORT_DATA for a lease), `kds`, `measure`, `evidence`, `sim` and `appraisal` (verify then
validate) beside them. Everything a caller needs is re-exported here.
"""

from cvm.attestation.abi import (
    REPORT_SIZE,
    GuestPolicy,
    Report,
    SignerInfo,
    SigningKey,
    TcbVersion,
    parse,
)
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
from cvm.attestation.kds import CachingKds, CertificateSource, HttpKds, cert_chain_url, vcek_url
from cvm.attestation.measure import expected_measurement
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedAttestation, SimulatedSecureProcessor
from cvm.attestation.trust import amd_roots
from cvm.attestation.validate import Failure, Policy, ValidationResult, validate_report
from cvm.attestation.verify import VerifiedReport, check_validity, verify_report

__all__ = [
    "REPORT_SIZE",
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
