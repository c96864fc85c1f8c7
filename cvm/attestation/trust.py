"""AMD's root of trust, shipped with the package and pinned by fingerprint.

Each product line has one ARK (AMD Root Key, self-signed RSA-4096) that signs an ASK (for
VCEKs) and an ASVK (for VLEKs). The PEM files in `trust/` are AMD's KDS cert_chain files;
the ARK fingerprints below are the anchor, the files only a convenient carrier.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.endorsement import common_name, load_certificates
from cvm.attestation.errors import Reason, VerificationError
from cvm.attestation.product import Product

# SHA-256 of the DER encoding of each ARK, as published by AMD's KDS.
PINNED_ARK_SHA256: dict[Product, str] = {
    Product.MILAN: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    Product.GENOA: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    Product.TURIN: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}


# The organisation of every certificate the simulated AMD-SP makes (cvm.attestation.sim):
# it says plainly that the chain is not AMD's, and lets an error say so too.
SIMULATED_ORGANIZATION = "cvm simulated AMD-SP (not AMD)"


@dataclass(frozen=True, slots=True)
class AmdChain:
    """AMD's certificates for one product line: the root and its two intermediates."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate  # signs VCEKs, CN "SEV-<Product>"
    asvk: x509.Certificate  # signs VLEKs, CN "SEV-VLEK-<Product>"


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 over the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256())


def _read(name: str) -> list[x509.Certificate]:
    data = resources.files("cvm.attestation").joinpath("trust").joinpath(name).read_bytes()
    return load_certificates(data)


@cache
def builtin_chains() -> dict[Product, AmdChain]:
    """AMD's chains for Milan, Genoa and Turin; refuses files whose ARK is not the pinned one."""
    chains: dict[Product, AmdChain] = {}
    for product, pin in PINNED_ARK_SHA256.items():
        ask, ark = _read(f"{product.value.lower()}_vcek_cert_chain.pem")
        asvk, ark_again = _read(f"{product.value.lower()}_vlek_cert_chain.pem")
        for root in (ark, ark_again):
            if fingerprint(root).hex() != pin:
                raise VerificationError(
                    f"shipped ARK for {product} does not match its pinned fingerprint {pin}",
                    Reason.UNTRUSTED_ROOT,
                )
        if (
            common_name(ask.subject) != f"SEV-{product.value}"
            or common_name(asvk.subject) != f"SEV-VLEK-{product.value}"
        ):
            raise VerificationError(
                f"shipped intermediates for {product} are not its ASK and ASVK",
                Reason.CHAIN_INVALID,
            )
        chains[product] = AmdChain(product=product, ark=ark, ask=ask, asvk=asvk)
    return chains


def amd_roots() -> list[x509.Certificate]:
    """The pinned ARKs of every supported product line."""
    return [chain.ark for chain in builtin_chains().values()]


def amd_intermediates() -> list[x509.Certificate]:
    """AMD's ASKs and ASVKs; untrusted by themselves, they must chain to a trusted root."""
    return [c for chain in builtin_chains().values() for c in (chain.ask, chain.asvk)]


def root_kind(root: x509.Certificate) -> AmdRoot:
    """AMD for one of the pinned ARKs; SIMULATED for any other root, whatever it claims."""
    pinned = {bytes.fromhex(pin) for pin in PINNED_ARK_SHA256.values()}
    return AmdRoot.AMD if fingerprint(root) in pinned else AmdRoot.SIMULATED


def is_simulated(cert: x509.Certificate) -> bool:
    """Made by the simulated AMD-SP (by its organisation; an error message hint, not a check)."""
    names = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(attribute.value == SIMULATED_ORGANIZATION for attribute in names)
