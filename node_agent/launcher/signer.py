"""Who signs a guest's report when no real AMD Secure Processor is there.

The `simulated` and `qemu` launchers run without SEV, so their reports are signed by the
simulated AMD-SP of `cvm.attestation.sim`, which stands in for the only part of the system
that these machines cannot have. Such reports are never trusted outside tests and demos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography import x509

from node_agent.launcher.base import GuestReport


class ReportSigner(Protocol):
    """Makes a signed SEV-SNP report for a guest of a given measurement."""

    def sign_report(self, measurement: bytes, report_data: bytes) -> GuestReport:
        """A 1184-byte report with this MEASUREMENT and REPORT_DATA, and its certificates."""
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

    def sign_report(self, measurement: bytes, report_data: bytes) -> GuestReport:
        signed = self._chip.attest(measurement=measurement, report_data=report_data)
        return GuestReport(signed.report, signed.vcek_der, signed.chain_pem)
