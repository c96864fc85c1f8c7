"""The VCEK or VLEK certificate: the chip's (or cloud's) report-signing key and what AMD says of it.

AMD encodes the product name, the TCB security patch levels and the chip's hwID as X.509
extensions under 1.3.6.1.4.1.3704.1 (AMD pub. 57230). This module reads them (and, for the
simulated AMD-SP, writes them) so that the verifier can bind a report to its certificate.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cvm.attestation import _der
from cvm.attestation.abi import SigningKey, TcbVersion
from cvm.attestation.errors import Reason, VerificationError
from cvm.attestation.product import Product

_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{_AMD}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD}.3.3")
OID_SPL_4 = x509.ObjectIdentifier(f"{_AMD}.3.4")
OID_SPL_5 = x509.ObjectIdentifier(f"{_AMD}.3.5")
OID_SPL_6 = x509.ObjectIdentifier(f"{_AMD}.3.6")
OID_SPL_7 = x509.ObjectIdentifier(f"{_AMD}.3.7")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{_AMD}.3.9")
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{_AMD}.5")

_RESERVED_SPLS = (OID_SPL_4, OID_SPL_5, OID_SPL_6, OID_SPL_7)

VCEK_CN = "SEV-VCEK"
VLEK_CN = "SEV-VLEK"
MAX_CERT_SIZE = 8192
_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class EndorsementKey:
    """A parsed VCEK or VLEK certificate with AMD's extensions decoded."""

    certificate: x509.Certificate
    fingerprint: bytes  # SHA-256 of the DER encoding
    kind: SigningKey  # VCEK or VLEK
    product: Product
    product_name: str  # as in the certificate, e.g. "Milan-B0"
    tcb: TcbVersion  # the SPL extensions
    tcb_value: int  # the same, packed as a TCB_VERSION in the product's layout
    hwid: bytes | None  # VCEK only: 64 bytes (8 on Turin)
    csp_id: str | None  # VLEK only: the cloud provider that loaded the key
    public_key: ec.EllipticCurvePublicKey


def load_certificate(data: bytes) -> x509.Certificate:
    """Load one certificate from DER or PEM; AMD's serial number 0 is accepted."""
    if len(data) > MAX_CERT_SIZE:
        raise VerificationError(
            f"certificate is {len(data)} bytes, more than {MAX_CERT_SIZE}",
            Reason.MALFORMED_CERTIFICATE,
        )
    try:
        with warnings.catch_warnings():
            # Real VCEKs have serial number 0, which RFC 5280 forbids and cryptography warns on.
            warnings.simplefilter("ignore")
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise VerificationError(
            f"not an X.509 certificate: {exc}", Reason.MALFORMED_CERTIFICATE
        ) from exc


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle (an AMD cert_chain: ASK or ASVK, then ARK)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise VerificationError(
            f"not a PEM certificate bundle: {exc}", Reason.MALFORMED_CERTIFICATE
        ) from exc
    return certs


def common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _extensions(cert: x509.Certificate) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            found[ext.oid.dotted_string] = ext.value.value
    return found


def _bad(message: str) -> VerificationError:
    return VerificationError(message, Reason.MALFORMED_CERTIFICATE)


def _spl(
    exts: dict[str, bytes], oid: x509.ObjectIdentifier, name: str, *, optional: bool = False
) -> int:
    raw = exts.get(oid.dotted_string)
    if raw is None and optional:
        return 0
    if raw is None:
        raise _bad(f"endorsement key certificate lacks the {name} extension ({oid.dotted_string})")
    try:
        value = _der.decode_integer(raw)
    except _der.DerError as exc:
        raise _bad(f"{name} extension is not a DER INTEGER: {exc}") from exc
    if value > 0xFF:
        raise _bad(f"{name}={value} does not fit a TCB component")
    return value


def _hwid(raw: bytes, product: Product) -> bytes:
    size = product.hwid_size
    if len(raw) == size:
        return raw
    # Some KDS certificates wrap hwID in an OCTET STRING; the content must have the same size.
    try:
        inner = _der.decode(_der.OCTET_STRING, raw)
    except _der.DerError as exc:
        raise _bad(f"hwID extension is {len(raw)} bytes, {product} uses {size}") from exc
    if len(inner) != size:
        raise _bad(f"hwID extension holds {len(inner)} bytes, {product} uses {size}")
    return inner


def parse_endorsement_key(cert: x509.Certificate) -> EndorsementKey:
    """Decode a VCEK or VLEK; raise `VerificationError(MALFORMED_CERTIFICATE)` if it is not one."""
    try:
        return _parse_endorsement_key(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # cryptography decodes names, keys and known extensions lazily and may refuse them here.
        raise _bad(f"malformed endorsement key certificate: {exc}") from exc


def _parse_endorsement_key(cert: x509.Certificate) -> EndorsementKey:
    subject = common_name(cert.subject)
    if subject == VCEK_CN:
        kind = SigningKey.VCEK
    elif subject == VLEK_CN:
        kind = SigningKey.VLEK
    else:
        raise _bad(f"certificate subject CN is {subject!r}, not {VCEK_CN} or {VLEK_CN}")
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise _bad("endorsement key is not an ECDSA P-384 key")
    exts = _extensions(cert)
    issuer = common_name(cert.issuer)
    raw_name = exts.get(OID_PRODUCT_NAME.dotted_string)
    try:
        product_name = _der.decode_ia5(raw_name) if raw_name is not None else issuer
        product = Product.from_name(product_name)
    except (_der.DerError, ValueError) as exc:
        raise VerificationError(
            f"cannot tell the product line from the certificate: {exc}", Reason.UNKNOWN_PRODUCT
        ) from exc
    fmc = _spl(exts, OID_FMC_SPL, "fmcSPL") if product.has_fmc else None
    tcb = TcbVersion(
        bl=_spl(exts, OID_BL_SPL, "blSPL"),
        tee=_spl(exts, OID_TEE_SPL, "teeSPL"),
        snp=_spl(exts, OID_SNP_SPL, "snpSPL"),
        ucode=_spl(exts, OID_UCODE_SPL, "ucodeSPL"),
        fmc=fmc,
    )
    tcb_value = tcb.to_int(product)
    if not product.has_fmc:
        # Milan/Genoa TCB bytes 2-5 are the reserved SPLs 4-7 (zero today); compare them too.
        reserved = [_spl(exts, oid, oid.dotted_string, optional=True) for oid in _RESERVED_SPLS]
        tcb_value |= int.from_bytes(bytes([0, 0, *reserved, 0, 0]), "little")
    hwid: bytes | None = None
    csp_id: str | None = None
    if kind is SigningKey.VCEK:
        raw_hwid = exts.get(OID_HWID.dotted_string)
        if raw_hwid is None:
            raise _bad("VCEK certificate lacks the hwID extension")
        hwid = _hwid(raw_hwid, product)
    else:
        raw_csp = exts.get(OID_CSP_ID.dotted_string)
        if raw_csp is not None:
            try:
                csp_id = _der.decode_ia5(raw_csp)
            except _der.DerError:
                csp_id = raw_csp.hex()
    return EndorsementKey(
        certificate=cert,
        fingerprint=hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(),
        kind=kind,
        product=product,
        product_name=product_name,
        tcb=tcb,
        tcb_value=tcb_value,
        hwid=hwid,
        csp_id=csp_id,
        public_key=public_key,
    )


_parsed: OrderedDict[bytes, EndorsementKey] = OrderedDict()
_parsed_lock = threading.Lock()


def load_endorsement_key(data: bytes) -> EndorsementKey:
    """Parse a VCEK or VLEK from DER or PEM, memoised by content (bounded LRU)."""
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise _bad(f"a certificate is bytes, not {type(data).__name__}")
        data = bytes(data)
    # Keyed by the bytes themselves: Python caches a bytes object's hash, so a caller that
    # passes the same certificate again pays one dict lookup.
    with _parsed_lock:
        cached = _parsed.get(data)
        if cached is not None:
            _parsed.move_to_end(data)
            return cached
    parsed = parse_endorsement_key(load_certificate(data))
    with _parsed_lock:  # verifier threads share the cache
        _parsed[data] = parsed
        if len(_parsed) > _CACHE_SIZE:
            _parsed.popitem(last=False)
    return parsed
