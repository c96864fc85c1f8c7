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
    _register_renter_commands()
    app.add_typer(chain_cli.app, name="chain")
    app.add_typer(node_cli.app, name="node")


def _register_renter_commands() -> None:
    from cvm.cli import demo as demo_cli
    from cvm.cli import renter as renter_cli
    from cvm.cli import stack as stack_cli
    from cvm.cli import wallet as wallet_cli

    app.command("up")(stack_cli.up)
    app.command("down")(stack_cli.down)
    app.command("demo")(demo_cli.demo)
    app.add_typer(wallet_cli.app, name="wallet")
    app.command("rent")(renter_cli.rent)
    app.command("leases")(renter_cli.leases)
    app.add_typer(renter_cli.lease_app, name="lease")


_register_subcommands()
