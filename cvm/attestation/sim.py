"""A simulated AMD Secure Processor, for tests and the local demo on machines without SEV-SNP.

A `SimulatedAmd` holds the roots: an ARK and an ASK/ASVK per product (RSA-4096, RSASSA-PSS
SHA-384 salt 48, as AMD's), in memory for one process or persisted in a directory to be
shared between processes. A `SimulatedSecureProcessor` is one chip under it: a VCEK or VLEK
(P-384) carrying AMD's extensions (product name, SPLs, hwID or cspID) that signs reports in
exactly the real ABI format. The roots are never AMD's: `verify_report` rejects these reports
unless the caller passes `trusted_roots=[sim.ark]` explicitly.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cvm.attestation import _der
from cvm.attestation.abi import (
    ECDSA_COMPONENT_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
    SIGNED_SIZE,
    GuestPolicy,
    Report,
    SignerInfo,
    SigningKey,
    TcbVersion,
)
from cvm.attestation.endorsement import (
    OID_BL_SPL,
    OID_CSP_ID,
    OID_FMC_SPL,
    OID_HWID,
    OID_PRODUCT_NAME,
    OID_SNP_SPL,
    OID_SPL_4,
    OID_SPL_5,
    OID_SPL_6,
    OID_SPL_7,
    OID_STRUCT_VERSION,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    VCEK_CN,
    VLEK_CN,
)
from cvm.attestation.product import Product
from cvm.attestation.trust import SIMULATED_ORGANIZATION, amd_roots
from cvm.attestation.verify import AMD_PSS

DEFAULT_POLICY = 0x30000  # SMT allowed, reserved bit 17, no debug
_PRODUCT_NAMES = {Product.MILAN: "Milan-B0", Product.GENOA: "Genoa", Product.TURIN: "Turin"}
_CPUID = {Product.MILAN: (0x19, 0x01, 0x01), Product.GENOA: (0x19, 0x11, 0x01),
          Product.TURIN: (0x1A, 0x02, 0x00)}  # fmt: skip
_DEFAULT_TCB = {
    Product.MILAN: TcbVersion(bl=3, tee=0, snp=8, ucode=115),
    Product.GENOA: TcbVersion(bl=10, tee=0, snp=23, ucode=84),
    Product.TURIN: TcbVersion(fmc=1, bl=1, tee=1, snp=4, ucode=72),
}


class SimulatedAttestation(NamedTuple):
    """What a real guest obtains: the report, its VCEK/VLEK (DER), the chain (PEM, ASK then ARK)."""

    report: bytes
    vcek_der: bytes
    chain_pem: bytes


def _name(common_name: str) -> x509.Name:
    # AMD's attribute set, with an organisation that says plainly this is not AMD.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIMULATED_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sign_rsa_pss(
    builder: x509.CertificateBuilder, issuer_key: CertificateIssuerPrivateKeyTypes
) -> x509.Certificate:
    return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=AMD_PSS)


def _ca_certificate(
    subject: str, issuer: str, key: rsa.RSAPrivateKey, issuer_key: rsa.RSAPrivateKey
) -> x509.Certificate:
    start = datetime.now(UTC) - timedelta(days=1)
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=25 * 365))  # AMD's roots live 25 years
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )
    return _sign_rsa_pss(builder, issuer_key)


class SimulatedAmd:
    """The simulated AMD: one ARK and one ASK/ASVK key, and per product their certificates.

    Every simulated chip made from one `SimulatedAmd` chains to the same roots, as real chips
    of one product chain to AMD's. With a `directory`, keys (PEM, unencrypted: they protect
    nothing real) and certificates are loaded from it or created there, so that separate
    processes (a node agent and a verifier in the demo) share one simulated root.
    """

    def __init__(self, directory: Path | None = None, rsa_key_size: int = 4096) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.rsa_key_size = rsa_key_size
        self._lock = threading.Lock()
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self._certs: dict[str, x509.Certificate] = {}

    def _key(self, role: str) -> rsa.RSAPrivateKey:
        key = self._keys.get(role)
        if key is not None:
            return key
        path = self.directory / f"{role}.key.pem" if self.directory else None
        if path is not None and path.is_file():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError(f"{path} is not an RSA key")
            key = loaded
        else:
            # RSA-4096 generation takes a second or more: done once per role and process.
            key = rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_key_size)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                # Created 0600 from the start: never readable by others, even briefly.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
        self._keys[role] = key
        return key

    def _cert(self, name: str, issuer: str, role: str) -> x509.Certificate:
        cert = self._certs.get(name)
        if cert is not None:
            return cert
        path = self.directory / f"{name}.pem" if self.directory else None
        if path is not None and path.is_file():
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        else:
            cert = _ca_certificate(name, issuer, self._key(role), self._key("ark"))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(cert.public_bytes(Encoding.PEM))
        self._certs[name] = cert
        return cert

    def ark(self, product: Product) -> x509.Certificate:
        """The simulated root of `product`: pass it as `trusted_roots` to accept sim reports."""
        with self._lock:
            return self._cert(f"ARK-{product.value}", f"ARK-{product.value}", "ark")

    def ask(self, product: Product) -> x509.Certificate:
        with self._lock:
            self._cert(f"ARK-{product.value}", f"ARK-{product.value}", "ark")
            return self._cert(f"SEV-{product.value}", f"ARK-{product.value}", "ask")

    def asvk(self, product: Product) -> x509.Certificate:
        with self._lock:
            self._cert(f"ARK-{product.value}", f"ARK-{product.value}", "ark")
            return self._cert(f"SEV-VLEK-{product.value}", f"ARK-{product.value}", "ask")

    def signing_key(self) -> rsa.RSAPrivateKey:
        """The key of every ASK and ASVK: it signs the chips' VCEKs and VLEKs."""
        with self._lock:
            return self._key("ask")


_process_amd: SimulatedAmd | None = None
_process_amd_lock = threading.Lock()


def process_amd() -> SimulatedAmd:
    """The in-memory simulated AMD this process's chips share unless given another."""
    global _process_amd
    with _process_amd_lock:
        if _process_amd is None:
            _process_amd = SimulatedAmd()
        return _process_amd


def roots_trusting_simulated(directory: Path) -> list[x509.Certificate]:
    """AMD's pinned roots plus the simulated ones persisted in `directory`: what a local
    stack's verifier and renter trust, and nothing outside tests and demos should."""
    simulated = SimulatedAmd(directory)
    return [*amd_roots(), *(simulated.ark(product) for product in Product)]


class SimulatedSecureProcessor:
    """One simulated chip of `product`: its own VCEK (or VLEK) under a simulated AMD's roots."""

    def __init__(
        self,
        product: Product | str = Product.MILAN,
        *,
        amd: SimulatedAmd | None = None,
        chip_id: bytes | None = None,
        tcb: TcbVersion | None = None,
        signer: SigningKey = SigningKey.VCEK,
        csp_id: str = "cvm-simulated-csp",
        chip_key: ec.EllipticCurvePrivateKey | None = None,
        not_before: datetime | None = None,
        validity: timedelta = timedelta(days=7 * 365),
    ) -> None:
        self.product = product if isinstance(product, Product) else Product.from_name(product)
        if signer is SigningKey.NONE:
            raise ValueError("a simulated AMD-SP signs with a VCEK or a VLEK")
        self.signer = signer
        self.amd = amd or process_amd()
        self.tcb = tcb or _DEFAULT_TCB[self.product]
        size = self.product.hwid_size
        self.hwid = chip_id[:size] if chip_id else secrets.token_bytes(size)
        if len(self.hwid) != size:
            raise ValueError(f"{self.product} chip ids are {size} bytes")
        self.ark = self.amd.ark(self.product)
        self.ask = self.amd.ask(self.product)
        self.asvk = self.amd.asvk(self.product)
        self._key = chip_key or ec.generate_private_key(ec.SECP384R1())
        if not isinstance(self._key.curve, ec.SECP384R1):
            raise ValueError("a VCEK is a P-384 key")
        issuer = self.ask if signer is SigningKey.VCEK else self.asvk
        start = not_before or datetime.now(UTC) - timedelta(days=1)
        self.vcek = self._endorsement_cert(issuer, self.amd.signing_key(), start, validity, csp_id)

    def _endorsement_cert(
        self,
        issuer: x509.Certificate,
        issuer_key: rsa.RSAPrivateKey,
        start: datetime,
        validity: timedelta,
        csp_id: str,
    ) -> x509.Certificate:
        vcek = self.signer is SigningKey.VCEK
        integers = [
            (OID_STRUCT_VERSION, 0),
            (OID_BL_SPL, self.tcb.bl),
            (OID_TEE_SPL, self.tcb.tee),
            (OID_SPL_4, 0),
            (OID_SPL_5, 0),
            (OID_SPL_6, 0),
            (OID_SPL_7, 0),
            (OID_SNP_SPL, self.tcb.snp),
            (OID_UCODE_SPL, self.tcb.ucode),
        ]
        if self.product.has_fmc:
            integers.append((OID_FMC_SPL, self.tcb.fmc or 0))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(VCEK_CN if vcek else VLEK_CN))
            .issuer_name(issuer.subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
        )
        name = _der.encode(_der.IA5_STRING, _PRODUCT_NAMES[self.product].encode())
        builder = builder.add_extension(x509.UnrecognizedExtension(OID_PRODUCT_NAME, name), False)
        for oid, value in integers:
            ext = x509.UnrecognizedExtension(oid, _der.encode_integer(value))
            builder = builder.add_extension(ext, critical=False)
        if vcek:
            builder = builder.add_extension(x509.UnrecognizedExtension(OID_HWID, self.hwid), False)
        else:
            csp = _der.encode(_der.IA5_STRING, csp_id.encode())
            builder = builder.add_extension(x509.UnrecognizedExtension(OID_CSP_ID, csp), False)
        return _sign_rsa_pss(builder, issuer_key)

    @property
    def vcek_der(self) -> bytes:
        """The VCEK (or VLEK) certificate, DER-encoded as AMD's KDS serves it."""
        return self.vcek.public_bytes(Encoding.DER)

    @property
    def chain_pem(self) -> bytes:
        """ASK (or ASVK) then ARK, PEM, like KDS's cert_chain."""
        middle = self.ask if self.signer is SigningKey.VCEK else self.asvk
        return middle.public_bytes(Encoding.PEM) + self.ark.public_bytes(Encoding.PEM)

    def attest(
        self,
        *,
        measurement: bytes = bytes(48),
        report_data: bytes = bytes(64),
        policy: int = DEFAULT_POLICY,
        vmpl: int = 0,
        host_data: bytes = bytes(32),
        guest_svn: int = 0,
        family_id: bytes = bytes(16),
        image_id: bytes = bytes(16),
        version: int = 3,
        mask_chip_id: bool = False,
    ) -> SimulatedAttestation:
        """Sign a report for a guest with this launch measurement and REPORT_DATA."""
        tcb = self.tcb.to_int(self.product)
        # MASK_CHIP_ID (a host setting) zeroes CHIP_ID; the report is still signed.
        chip_id = bytes(64) if mask_chip_id else self.hwid.ljust(64, b"\0")
        fam, mod, step = _CPUID[self.product] if version >= 3 else (0, 0, 0)
        unsigned = Report(
            version=version,
            guest_svn=guest_svn,
            policy=GuestPolicy.from_int(policy),
            family_id=family_id,
            image_id=image_id,
            vmpl=vmpl,
            signature_algo=SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb=tcb,
            platform_info=0x1,
            signer_info=SignerInfo(signing_key=self.signer),
            report_data=report_data,
            measurement=measurement,
            host_data=host_data,
            id_key_digest=bytes(48),
            author_key_digest=bytes(48),
            report_id=secrets.token_bytes(32),
            report_id_ma=b"\xff" * 32,
            reported_tcb=tcb,
            chip_id=chip_id,
            committed_tcb=tcb,
            launch_tcb=tcb,
            cpuid_fam_id=fam,
            cpuid_mod_id=mod,
            cpuid_step=step,
            current_build=4,
            current_minor=55,
            current_major=1,
            committed_build=4,
            committed_minor=55,
            committed_major=1,
            launch_mit_vector=0,
            current_mit_vector=0,
            signature_r=bytes(72),
            signature_s=bytes(72),
        )
        return SimulatedAttestation(self.sign_report(unsigned), self.vcek_der, self.chain_pem)

    def sign_report(self, report: Report) -> bytes:
        """Sign any report structure with this chip's key (tests use it to forge bad fields)."""
        body = replace(report, signature_r=bytes(72), signature_s=bytes(72)).to_bytes()
        r, s = decode_dss_signature(self._key.sign(body[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384())))
        signed = replace(
            report,
            signature_r=r.to_bytes(ECDSA_COMPONENT_SIZE, "little"),
            signature_s=s.to_bytes(ECDSA_COMPONENT_SIZE, "little"),
        )
        return signed.to_bytes()
