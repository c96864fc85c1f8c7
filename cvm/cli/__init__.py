"""The `cvm` command line: one Typer app with a sub-app per domain.

The command modules import only typer at module level (web3, eth-account and pydantic
load inside the command that runs), so `cvm --help` starts in a fraction of a second.

Commands of other installed packages join through the `cvm.cli` entry-point group: each
entry names a `register(app)` function, loaded by name when the app is built. That is how
the dev stack (`devstack`: `cvm up`, `down`, `demo`, `wallet fund`) reaches the `cvm`
command without the SDK importing it; an import-linter contract keeps it that way.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from cvm.cli import attestation as attestation_cli
from cvm.cli import chain as chain_cli
from cvm.cli import guest as guest_cli  # noqa: F401 - adds `lease secrets` and `lease ssh`
from cvm.cli import image as image_cli
from cvm.cli import keys as keys_cli  # noqa: F401 - adds `lease policy` and `lease rekey`
from cvm.cli import node as node_cli
from cvm.cli import renter as renter_cli
from cvm.cli import wallet as wallet_cli
from cvm.cli.plumbing import new_app

PLUGIN_GROUP = "cvm.cli"


def create_app() -> typer.Typer:
    """The whole `cvm` command: the SDK's commands, then each installed plugin's."""
    root = new_app("Confidential VMs on AMD SEV-SNP, leased and attested on chain.")
    root.add_typer(attestation_cli.app, name="attestation")
    root.add_typer(chain_cli.app, name="chain")
    root.add_typer(image_cli.app, name="image")
    root.add_typer(node_cli.app, name="node")
    root.add_typer(wallet_cli.app, name="wallet")
    root.command("nodes")(renter_cli.nodes)
    root.command("rent")(renter_cli.rent)
    root.command("leases")(renter_cli.leases)
    root.add_typer(renter_cli.lease_app, name="lease")
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()(root)
    return root


def sub_app(root: typer.Typer, name: str) -> typer.Typer:
    """The sub-app registered as `name` (for a plugin that adds a command to it)."""
    for group in root.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    raise LookupError(f"no `cvm {name}` sub-app")


app = create_app()


def main() -> None:
    """Entry point of the `cvm` console script."""
    app()
