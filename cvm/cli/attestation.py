"""`cvm attestation ...`: inspect, verify and measure SEV-SNP attestation reports."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Inspect, verify and measure SEV-SNP attestation reports.", no_args_is_help=True
)
