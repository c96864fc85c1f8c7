"""The `cvm` command line: one Typer app with a sub-app per domain."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cvm",
    help="Confidential VMs on AMD SEV-SNP, leased and attested on chain.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_subcommands() -> None:
    # Imported here so that `cvm --help` stays fast and a broken sub-app names itself.
    from cvm.cli import attestation as attestation_cli
    from cvm.cli import chain as chain_cli
    from cvm.cli import node as node_cli

    app.add_typer(attestation_cli.app, name="attestation")
    app.add_typer(chain_cli.app, name="chain")
    app.add_typer(node_cli.app, name="node")


_register_subcommands()
