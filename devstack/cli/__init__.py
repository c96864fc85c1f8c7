"""The dev stack's commands, joined to `cvm` as a plugin (entry-point group `cvm.cli`).

`cvm up`, `cvm down`, `cvm demo` and `cvm wallet fund` live here because they start or
use the local stack, which knows the backend and the node agent; the SDK's CLI loads
`register` by name at run time and so never imports this package.
"""

from __future__ import annotations

import typer

from cvm.cli.plumbing import register_layer_error


def register(app: typer.Typer) -> None:
    """Add the dev stack's commands to the `cvm` app."""
    from cvm.cli import sub_app
    from devstack.cli import demo, stack

    register_layer_error("devstack.errors", "StackError")
    app.command("up")(stack.up)
    app.command("down")(stack.down)
    app.command("demo")(demo.demo)
    sub_app(app, "wallet").command("fund")(stack.fund)
