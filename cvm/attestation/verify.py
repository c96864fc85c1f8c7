"""Is this report signed by a genuine AMD Secure Processor? (AMD pub. 56860 and 57230)

Checks, in order, each with its own reason code:
the report parses; it is signed (SIGNING_KEY is not "none") by the kind of key whose
certificate was given (VCEK or VLEK); the certificate's product matches the report's CPUID
(v3+); the certificate chains VCEK <- ASK <- ARK or VLEK <- ASVK <- ARK with RSASSA-PSS
(SHA-384, MGF1-SHA-384, salt 48) to a trusted root (AMD's pinned ARKs unless the caller
passes others); every certificate is valid at the given time; the ECDSA P-384/SHA-384
signature over bytes 0x000-0x29F holds; REPORTED_TCB equals the certificate's SPLs; CHIP_ID
equals the certificate's hwID (unless it is all zero: MASK_CHIP_ID; a VLEK has no hwID).
A VCEK report with MASK_CHIP_KEY set is unsigned by definition. Nothing here touches the
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import SignatureAlgorithmOID

from cvm.attestation import abi
from cvm.attestation.abi import Report, SigningKey, TcbVersion
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.endorsement import (
    EndorsementKey,
    common_name,
    load_certificates,
    load_endorsement_key,
)
from cvm.attestation.errors import Reason, VerificationError
from cvm.attestation.product import Product
from cvm.attestation.trust import (
    amd_intermediates,
    amd_roots,
    fingerprint,
    is_simulated,
    root_kind,
)

# AMD signs ARK, ASK, ASVK, VCEK and VLEK with exactly these parameters (57230 ch. 2).
AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())

# Pairs (subject fingerprint, issuer fingerprint) whose signature has been checked. Only
# successes are kept, so a cache hit can never turn a failure into a pass.
_verified_links: set[tuple[bytes, bytes]] = set()
_parsed_chains: dict[bytes, list[x509.Certificate]] = {}
_MAX_CACHED = 1024


@dataclass(frozen=True, slots=True)
class _VerifiedChain:
    intermediate: x509.Certificate
    root: x509.Certificate
    not_before: datetime  # the latest notBefore of the three certificates
    not_after: datetime  # the earliest notAfter of the three certificates


# Verified chains by (endorsement key, supplied chain, trusted roots), so that repeated
# verifications against the same certificates cost one ECDSA check and a few lookups.
_verified_chains: dict[tuple[bytes, bytes, bytes], _VerifiedChain] = {}
_AMD_ROOTS_KEY = b"amd"


@dataclass(frozen=True, slots=True)
class VerifiedReport:
    """A report whose signature, chain and endorsement binding all hold."""

    raw: bytes
    report: Report
    product: Product
    signer: SigningKey
    endorsement: EndorsementKey
    intermediate: x509.Certificate
    root: x509.Certificate

    @property
    def amd_root(self) -> AmdRoot:
        """AMD when the chain ends in a pinned AMD ARK; SIMULATED when the caller trusted
        another root (the simulated AMD-SP): such a report proves nothing about hardware."""
        return root_kind(self.root)

    @property
    def reported_tcb(self) -> TcbVersion:
        return TcbVersion.from_int(self.report.reported_tcb, self.product)


def _fail(reason: Reason, message: str) -> VerificationError:
    return VerificationError(message, reason)


def verify_amd_signature(subject: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if `issuer`'s RSA key signed `subject` with AMD's RSASSA-PSS parameters."""
    link = (fingerprint(subject), fingerprint(issuer))
    if link in _verified_links:
        return True
    try:
        if subject.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
            return False
        if not isinstance(subject.signature_hash_algorithm, hashes.SHA384):
            return False
        if subject.issuer != issuer.subject:
            return False
        key = issuer.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        # Explicit padding: we require AMD's salt length rather than trusting the cert's own.
        key.verify(subject.signature, subject.tbs_certificate_bytes, AMD_PSS, hashes.SHA384())
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    if len(_verified_links) >= _MAX_CACHED:
        _verified_links.clear()
    _verified_links.add(link)
    return True


def _as_certificates(
    chain: bytes | Sequence[x509.Certificate] | None,
) -> tuple[bytes, list[x509.Certificate]]:
    """The supplied chain as certificates, with a key that identifies its content."""
    if chain is None:
        return b"", []
    if isinstance(chain, bytes | bytearray):
        key = bytes(chain)  # the bytes are the key: their hash is cached by Python
        parsed = _parsed_chains.get(key)
        if parsed is None:
            parsed = load_certificates(bytes(chain))
            if len(_parsed_chains) >= _MAX_CACHED:
                _parsed_chains.clear()
            _parsed_chains[key] = parsed
        return key, parsed
    certs = list(chain)
    return b"".join(fingerprint(c) for c in certs), certs


def _chain_for(
    ek: EndorsementKey,
    product: Product,
    chain: bytes | Sequence[x509.Certificate] | None,
    trusted_roots: Sequence[x509.Certificate] | None,
) -> _VerifiedChain:
    chain_key, certs = _as_certificates(chain)
    roots_key = (
        _AMD_ROOTS_KEY
        if trusted_roots is None
        else b"".join(sorted(fingerprint(r) for r in trusted_roots))
    )
    key = (ek.fingerprint, chain_key, roots_key)
    found = _verified_chains.get(key)
    if found is not None:
        return found
    try:
        intermediate, root = _verify_chain(ek, product, certs, trusted_roots)
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography decodes names and keys lazily; a malformed supplied certificate lands here.
        raise _fail(Reason.CHAIN_INVALID, f"malformed certificate in the chain: {exc}") from exc
    trio = (ek.certificate, intermediate, root)
    verified = _VerifiedChain(
        intermediate=intermediate,
        root=root,
        not_before=max(c.not_valid_before_utc for c in trio),
        not_after=min(c.not_valid_after_utc for c in trio),
    )
    if len(_verified_chains) >= _MAX_CACHED:
        _verified_chains.clear()
    _verified_chains[key] = verified
    return verified


def _simulated_hint(cert: x509.Certificate) -> str:
    if not is_simulated(cert):
        return ""
    return ": it is the simulated AMD-SP's, which this verifier does not trust (local demos only)"


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _verify_chain(
    ek: EndorsementKey,
    product: Product,
    chain: list[x509.Certificate],
    trusted_roots: Sequence[x509.Certificate] | None,
) -> tuple[x509.Certificate, x509.Certificate]:
    """Return (intermediate, root) of a valid chain for `ek`, or raise."""
    roots = list(trusted_roots) if trusted_roots is not None else amd_roots()
    root_prints = {fingerprint(r) for r in roots}
    supplied_roots = [c for c in chain if _is_self_signed(c)]
    for supplied in supplied_roots:
        if fingerprint(supplied) not in root_prints:
            raise _fail(
                Reason.UNTRUSTED_ROOT,
                f"the chain's root {common_name(supplied.subject)!r} "
                f"(sha256 {fingerprint(supplied).hex()}) is not a trusted root"
                + _simulated_hint(supplied),
            )
    expected_issuer = (
        f"SEV-{product.value}" if ek.kind is SigningKey.VCEK else f"SEV-VLEK-{product.value}"
    )
    issuer_cn = common_name(ek.certificate.issuer)
    if issuer_cn != expected_issuer:
        raise _fail(
            Reason.CHAIN_INVALID,
            f"{ek.kind.name} issuer is {issuer_cn!r}, expected {expected_issuer!r}",
        )
    candidates = [c for c in chain if not _is_self_signed(c)] + amd_intermediates()
    intermediates = [c for c in candidates if c.subject == ek.certificate.issuer]
    if not intermediates:
        raise _fail(Reason.CHAIN_INVALID, f"no {expected_issuer} certificate in the chain")
    intermediate = next((c for c in intermediates if verify_amd_signature(ek.certificate, c)), None)
    if intermediate is None:
        raise _fail(
            Reason.CHAIN_INVALID,
            f"the {ek.kind.name} certificate is not signed by the {expected_issuer} key",
        )
    ark_cn = f"ARK-{product.value}"
    issuers = [r for r in roots if r.subject == intermediate.issuer]
    if common_name(intermediate.issuer) != ark_cn or not issuers:
        raise _fail(
            Reason.UNTRUSTED_ROOT,
            f"{expected_issuer} is issued by {common_name(intermediate.issuer)!r}, "
            f"which is not a trusted {ark_cn}" + _simulated_hint(intermediate),
        )
    for root in issuers:
        if verify_amd_signature(root, root) and verify_amd_signature(intermediate, root):
            return intermediate, root
    raise _fail(
        Reason.CHAIN_INVALID,
        f"{expected_issuer} is not signed by a trusted self-signed {ark_cn}",
    )


def check_validity(certificates: Sequence[x509.Certificate], at: datetime) -> None:
    """Every certificate must be valid at `at` (a separate check: real VCEKs do expire)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    for cert in certificates:
        name = common_name(cert.subject)
        if at < cert.not_valid_before_utc:
            raise _fail(
                Reason.CERT_NOT_YET_VALID,
                f"{name} is valid from {cert.not_valid_before_utc.isoformat()}, "
                f"checked at {at.isoformat()}",
            )
        if at > cert.not_valid_after_utc:
            raise _fail(
                Reason.CERT_EXPIRED,
                f"{name} expired at {cert.not_valid_after_utc.isoformat()}, "
                f"checked at {at.isoformat()}",
            )


def verify_signature(raw: bytes, report: Report, ek: EndorsementKey) -> None:
    """ECDSA P-384/SHA-384 over bytes 0x000-0x29F with the endorsement key."""
    r, s = report.signature_ints()
    try:
        ek.public_key.verify(encode_dss_signature(r, s), abi.signed_bytes(raw), _ECDSA_SHA384)
    except (InvalidSignature, ValueError) as exc:
        raise _fail(
            Reason.SIGNATURE_INVALID,
            f"the report signature does not verify with the {ek.kind.name} key "
            f"(sha256 {ek.fingerprint.hex()})",
        ) from exc


def _check_tcb(report: Report, ek: EndorsementKey, product: Product) -> None:
    expected = ek.tcb_value
    if report.reported_tcb != expected:
        found = TcbVersion.from_int(report.reported_tcb, product).components()
        raise _fail(
            Reason.TCB_MISMATCH,
            f"REPORTED_TCB {report.reported_tcb:#018x} {found} differs from the "
            f"{ek.kind.name} SPLs {expected:#018x} {ek.tcb.components()}",
        )


def _check_chip_id(report: Report, ek: EndorsementKey, product: Product) -> None:
    if ek.hwid is None:  # VLEK: not tied to one chip
        return
    if report.chip_id.count(0) == len(report.chip_id):
        # MASK_CHIP_ID (SNP_CONFIG) zeroes CHIP_ID; the VCEK signature still binds the chip.
        return
    size = product.hwid_size
    if report.chip_id[:size] != ek.hwid or any(report.chip_id[size:]):
        raise _fail(
            Reason.CHIP_ID_MISMATCH,
            f"CHIP_ID {report.chip_id.hex()} differs from the VCEK hwID {ek.hwid.hex()}",
        )


def verify_report(
    raw: bytes,
    endorsement_key: bytes,
    *,
    chain: bytes | Sequence[x509.Certificate] | None = None,
    trusted_roots: Sequence[x509.Certificate] | None = None,
    at: datetime | None = None,
    check_cert_validity: bool = True,
) -> VerifiedReport:
    """Verify a raw report against its VCEK or VLEK (DER or PEM) and AMD's chain.

    `chain`: intermediates and optionally the root (PEM bundle or certificates), e.g. a KDS
    cert_chain file; AMD's shipped intermediates are always candidates too. `trusted_roots`:
    the only roots accepted; None means AMD's pinned ARKs (a simulated AMD-SP's root must be
    passed here explicitly). `at`: the time at which certificates must be valid (default
    now); `check_cert_validity=False` skips that check. Raises `ReportFormatError` or
    `VerificationError`, both carrying a `Reason`.
    """
    report = abi.parse(raw)
    raw = bytes(raw)
    if report.signing_key is SigningKey.NONE:
        raise _fail(Reason.UNSIGNED_REPORT, "SIGNING_KEY is 'none': the report is not signed")
    if report.signer_info.mask_chip_key and report.signing_key is SigningKey.VCEK:
        # With MASK_CHIP_KEY the firmware does not use the VCEK: the signature field is zero.
        raise _fail(
            Reason.UNSIGNED_REPORT, "MASK_CHIP_KEY is set: the VCEK did not sign this report"
        )
    ek = load_endorsement_key(endorsement_key)
    if ek.kind is not report.signing_key:
        raise _fail(
            Reason.SIGNER_MISMATCH,
            f"the report says it is signed by the {report.signing_key.name}, "
            f"the certificate is a {ek.kind.name}",
        )
    product = ek.product
    cpuid_product = report.cpuid_product
    if cpuid_product is not None and cpuid_product is not product:
        raise _fail(
            Reason.PRODUCT_MISMATCH,
            f"the report's CPUID says {cpuid_product}, the certificate {product}",
        )
    verified = _chain_for(ek, product, chain, trusted_roots)
    intermediate, root = verified.intermediate, verified.root
    if check_cert_validity:
        when = at or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if not verified.not_before <= when <= verified.not_after:
            check_validity((ek.certificate, intermediate, root), when)
    verify_signature(raw, report, ek)
    _check_tcb(report, ek, product)
    _check_chip_id(report, ek, product)
    return VerifiedReport(
        raw=raw,
        report=report,
        product=product,
        signer=ek.kind,
        endorsement=ek,
        intermediate=intermediate,
        root=root,
    )
