"""Who signs a guest's report when no real AMD Secure Processor is there.

The `simulated` and `qemu` launchers run without SEV, so their reports are signed by the
simulated AMD-SP of `cvm.attestation.sim`, which stands in for the only part of the system
that these machines cannot have. Such reports are never trusted outside tests and demos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from cvm.attestation.binding import GuestKey
from node_agent.launcher.base import GuestReport


class ReportSigner(Protocol):
    """Makes a signed SEV-SNP report for a guest of a given measurement."""

    def sign_report(self, measurement: bytes, report_data: bytes, host_data: bytes) -> GuestReport:
        """A 1184-byte report with this MEASUREMENT, REPORT_DATA and HOST_DATA (what the
        launch set), and its certificates."""
        ...


class SimulatedAmdSp:
    """A `ReportSigner` backed by one simulated chip of `cvm.attestation.sim`.

    With `amd_dir`, the simulated AMD roots are kept in (or loaded from) that directory, so a
    local verifier (demo, benchmark) can trust the same simulated ARK; nothing outside tests
    and demos should.
    """

    def __init__(self, amd_dir: Path | None = None, product: str = "Milan") -> None:
        from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor

        amd = SimulatedAmd(amd_dir) if amd_dir is not None else None
        self._chip = SimulatedSecureProcessor(product, amd=amd)

    @property
    def ark(self) -> x509.Certificate:
        """The simulated root this chip's reports chain to."""
        return self._chip.ark

    def sign_report(self, measurement: bytes, report_data: bytes, host_data: bytes) -> GuestReport:
        signed = self._chip.attest(
            measurement=measurement, report_data=report_data, host_data=host_data
        )
        return GuestReport(signed.report, signed.vcek_der, signed.chain_pem)


def simulated_guest_key() -> bytes:
    """A fresh, well-formed guest key (X25519 || Ed25519 || signer address || TLS SPKI
    sha256) for a guest that has no agent of its own (the `simulated` launcher, a `qemu`
    guest without a cvm image).
    Only the public halves are kept: nothing can be sealed to or signed by such a guest, as
    nothing runs in it to use them."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
    from eth_account import Account

    raw = serialization.PublicFormat.Raw
    hpke = x25519.X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, raw)
    ssh = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, raw)
    signer = bytes.fromhex(Account.create().address[2:])
    tls = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = tls.public_bytes(Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return GuestKey.parse(hpke + ssh + signer + hashlib.sha256(spki).digest()).to_bytes()
