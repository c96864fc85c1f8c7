"""`cvm up` and `cvm down`: the embedded stack in the foreground, and stopping it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from cvm.cli._renting import JsonOption, emit, err, fail, out
from cvm.config import get_settings
from cvm.stack import EmbeddedStack, StackConfig, StackError, StackState, stop_stack

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the stack keeps its state (default: CVM_DATA_DIR)."),
]


def describe(state: StackState) -> Table:
    """Where everything of a running stack is."""
    table = Table(title="cvm stack", show_header=False)
    table.add_row("chain (anvil)", state.rpc_url)
    table.add_row("backend API", f"{state.api_url}/v1  (docs: {state.api_url}/docs)")
    table.add_row("broker (redis)", state.broker_url)
    table.add_row("store", state.database_url)
    table.add_row("deployment", state.deployment_file)
    table.add_row("logs", state.logs)
    for node in state.nodes:
        table.add_row(
            node.name,
            f"{node.address}  {node.vcpu} vCPU / {node.memory_mib} MiB / {node.disk_gib} GiB"
            f"  price {node.price_per_vcpu_second} per vCPU-s  pid {node.pid}",
        )
    return table


def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=50, help="Simulated nodes.")] = 3,
    data_dir: DataDirOption = None,
    api_port: Annotated[int, typer.Option(help="Backend API port (0: a free one).")] = 0,
) -> None:
    """Start the embedded stack (anvil, contracts, Redis, backend, node agents) until Ctrl-C."""
    directory = (data_dir or get_settings().data_dir).resolve()
    stack = EmbeddedStack(
        StackConfig(directory, nodes=nodes, api_port=api_port),
        say=lambda message: err.print(f"[dim]…[/dim] {message}"),
    )
    stop = threading.Event()
    starting = [True]

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if starting[0]:
            raise KeyboardInterrupt  # abandon start-up; start() stops what it began

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = stack.start()
        starting[0] = False
        out.print(describe(state))
        out.print(f"[green]ready[/green]: stop with Ctrl-C or `cvm down --data-dir {directory}`")
        stack.supervise(stop)
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        fail(str(exc))
    finally:
        err.print("[dim]…[/dim] stopping the stack")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err.print("stopped")


def down(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Stop the stack `cvm up` runs in the data directory, leaving no process behind."""
    directory = (data_dir or get_settings().data_dir).resolve()
    state = stop_stack(directory)
    if as_json:
        emit({"stopped": state is not None, "data_dir": str(directory)})
    elif state is None:
        out.print(f"no stack recorded in {directory}: nothing to stop")
    else:
        out.print(f"stopped the stack of {directory} (runner pid {state.pid})")
