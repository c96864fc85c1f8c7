"""Calldata for the EVM's SEV-SNP report check (contracts/src/SnpVerifier.sol, ISnpVerifier).

The contract checks what `cvm.attestation.verify.verify_report` checks (not certificate
validity dates, not the debug policy) and answers with a `SnpReason`. A cold check is three
transactions, each under the EIP-7825 per-transaction cap:

    verifyCertificate(ask_der, ark_key_hash)     # the ASK/ASVK against the pinned ARK
    verifyCertificate(vcek_der, keccak(ask_der)) # the VCEK/VLEK against the ASK/ASVK
    verifyReport(report, [keccak(vcek_der), keccak(ask_der)])

`prepare_report_call` works out which of them a chain still needs (pass `is_cached`, e.g.
`contract.functions.isCertVerified(h).call`), so a report on a known chip is one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from eth_utils import keccak

from cvm.attestation import abi
from cvm.attestation.endorsement import load_certificates, load_endorsement_key
from cvm.attestation.errors import Reason
from cvm.attestation.trust import amd_intermediates, amd_roots


class SnpReason(IntEnum):
    """ISnpVerifier's `SnpReason`, in the contract's order."""

    OK = 0
    MALFORMED = 1
    UNSIGNED_REPORT = 2
    SIGNER_MISMATCH = 3
    UNKNOWN_PRODUCT = 4
    PRODUCT_MISMATCH = 5
    CERT_CHAIN = 6
    BAD_SIGNATURE = 7
    TCB_MISMATCH = 8
    CHIP_ID_MISMATCH = 9
    DEBUG_POLICY = 10


# The off-chain reason each on-chain reason corresponds to (the contract is coarser).
ONCHAIN_REASON: dict[Reason, SnpReason] = {
    Reason.MALFORMED_REPORT: SnpReason.MALFORMED,
    Reason.MALFORMED_CERTIFICATE: SnpReason.MALFORMED,
    Reason.UNSIGNED_REPORT: SnpReason.UNSIGNED_REPORT,
    Reason.SIGNER_MISMATCH: SnpReason.SIGNER_MISMATCH,
    Reason.UNKNOWN_PRODUCT: SnpReason.UNKNOWN_PRODUCT,
    Reason.PRODUCT_MISMATCH: SnpReason.PRODUCT_MISMATCH,
    Reason.UNTRUSTED_ROOT: SnpReason.CERT_CHAIN,
    Reason.CHAIN_INVALID: SnpReason.CERT_CHAIN,
    Reason.SIGNATURE_INVALID: SnpReason.BAD_SIGNATURE,
    Reason.TCB_MISMATCH: SnpReason.TCB_MISMATCH,
    Reason.CHIP_ID_MISMATCH: SnpReason.CHIP_ID_MISMATCH,
}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def cert_hash(der_bytes: bytes) -> bytes:
    """The contract's cache key of a certificate: keccak256 of its DER."""
    return keccak(der_bytes)


def rsa_key_hash(cert: x509.Certificate) -> bytes:
    """keccak256 of an RSA certificate's modulus, big-endian without a sign byte (`arkKeyHash`)."""
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA certificate")
    n = key.public_numbers().n
    return keccak(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def ark_certificates() -> list[bytes]:
    """The pinned AMD ARKs (Milan, Genoa, Turin) as DER: SnpVerifier's constructor argument."""
    return [der(c) for c in amd_roots()]


@dataclass(frozen=True, slots=True)
class ContractCall:
    """One transaction: a function name of ISnpVerifier and its arguments."""

    function: str
    args: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class ReportCall:
    """What to send for one report: `steps` (the certificate verifications still needed,
    then verifyReport) and the report/certs of the last step, for checkReport too."""

    report: bytes
    certs: list[bytes]
    signer_der: bytes
    issuer_der: bytes
    ark_key_hash: bytes
    steps: list[ContractCall] = field(default_factory=list)


def _issuer_for(signer: x509.Certificate, chain: bytes | None) -> x509.Certificate:
    candidates = list(load_certificates(chain)) if chain else []
    candidates += amd_intermediates()
    for cert in candidates:
        if cert.subject == signer.issuer and cert.issuer != cert.subject:
            return cert
    raise ValueError("no ASK/ASVK for this certificate's issuer in the chain or AMD's shipped ones")


def _root_for(
    issuer: x509.Certificate, roots: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for root in roots:
        if root.subject == issuer.issuer:
            return root
    return None


def prepare_report_call(
    report: bytes,
    endorsement_key: bytes,
    *,
    chain: bytes | None = None,
    is_cached: Callable[[bytes], bool] | None = None,
    split: bool = True,
    roots: Sequence[x509.Certificate] | None = None,
) -> ReportCall:
    """Calldata to check `report` signed by `endorsement_key` (VCEK/VLEK, DER or PEM) on chain.

    `chain`: a PEM cert_chain holding the ASK/ASVK (AMD's shipped ones are used otherwise).
    `is_cached(keccak(der))`: whether the contract already verified a certificate (None: nothing
    is). `split=True` verifies uncached certificates in their own transactions (each well under
    the gas cap); False puts everything into the one verifyReport call (DER in `certs`).
    `roots`: the ARKs the contract pins (AMD's by default; a local stack adds its simulated
    AMD-SP's). An intermediate under none of them gets a zero ARK key hash: the contract
    refuses it (CertChain), which is the verdict such a chain deserves.
    Raises ValueError if the report or certificates cannot even be framed (the contract would
    refuse them as Malformed).
    """
    if len(report) != abi.REPORT_SIZE:
        raise ValueError(f"a report is {abi.REPORT_SIZE} bytes, got {len(report)}")
    ek = load_endorsement_key(endorsement_key)
    signer_der = der(ek.certificate)
    issuer = _issuer_for(ek.certificate, chain)
    issuer_der = der(issuer)
    root = _root_for(issuer, amd_roots() if roots is None else roots)
    ark_hash = rsa_key_hash(root) if root is not None else bytes(32)
    cached = is_cached or (lambda _h: False)
    signer_h, issuer_h = cert_hash(signer_der), cert_hash(issuer_der)
    steps: list[ContractCall] = []
    if not split:
        certs = [signer_der, issuer_der]
    else:
        if not cached(signer_h):
            if not cached(issuer_h):
                steps.append(ContractCall("verifyCertificate", (issuer_der, ark_hash)))
            steps.append(ContractCall("verifyCertificate", (signer_der, issuer_h)))
        certs = [signer_h, issuer_h]
    steps.append(ContractCall("verifyReport", (bytes(report), certs)))
    return ReportCall(
        report=bytes(report),
        certs=certs,
        signer_der=signer_der,
        issuer_der=issuer_der,
        ark_key_hash=ark_hash,
        steps=steps,
    )


def expected_fields(raw: bytes, product: str, signing_key: int) -> tuple[object, ...]:
    """The SnpReportFields tuple verifyReport returns for a report that verifies, computed
    with `cvm.attestation.abi` (for comparing the two verifiers field for field)."""
    r = abi.parse(raw)
    return (
        r.version,
        r.policy.raw,
        r.vmpl,
        signing_key,
        r.measurement,
        r.report_data[:32],
        r.report_data[32:],
        r.host_data,
        r.chip_id,
        r.reported_tcb,
        r.committed_tcb,
        keccak(raw),
        keccak(product.encode()),
    )
