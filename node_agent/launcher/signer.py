"""Who signs a guest's report when no real AMD Secure Processor is there.

The `simulated` and `qemu` launchers run without SEV, so their reports are signed by the
simulated AMD-SP of `cvm.attestation.sim`, which stands in for the only part of the system
that these machines cannot have. Such reports are never trusted outside tests and demos.
"""

from __future__ import annotations

from typing import Protocol

from node_agent.launcher.base import GuestReport


class ReportSigner(Protocol):
    """Makes a signed SEV-SNP report for a guest of a given measurement."""

    def sign_report(self, measurement: bytes, report_data: bytes) -> GuestReport:
        """A 1184-byte report with this MEASUREMENT and REPORT_DATA, and its certificates."""
        ...
