"""`cvm up`, `cvm down` and `cvm wallet fund`: the embedded stack in the foreground,
stopping it, and its faucet.

Only typer is imported at module level: `cvm --help` loads this module too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cvm.cli.plumbing import (
    CliError,
    DeploymentOption,
    JsonOption,
    UsageError,
    base_units,
    emit,
    err,
    find_wallet,
    format_amount,
    load_deployment,
    out,
    parse_amount,
)

if TYPE_CHECKING:
    from types import FrameType

    from rich.table import Table

    from devstack import StackState

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the stack keeps its state (default: CVM_DATA_DIR)."),
]


def data_dir_of(option: Path | None) -> Path:
    from cvm.config import get_settings

    return (option or get_settings().data_dir).absolute()


def describe(state: StackState) -> Table:
    """Where everything of a running stack is."""
    from rich.table import Table

    table = Table(title="cvm stack", show_header=False)
    table.add_row("chain (anvil)", state.rpc_url)
    table.add_row("backend API", f"{state.api_url}/v1  (OpenAPI: {state.api_url}/openapi.json)")
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
    for holder in state.holders:
        table.add_row(holder.name, f"{holder.address}  key holder  pid {holder.pid}")
    return table


LauncherOption = Annotated[
    str,
    typer.Option(
        help="Node launcher: simulated (no VM) or qemu (boots the image each lease names;"
        " `cvm image build` first). Both sign with the simulated AMD-SP."
    ),
]


def check_launcher(launcher: str) -> str:
    if launcher not in ("simulated", "qemu"):
        raise UsageError(f"--launcher {launcher!r}: simulated or qemu")
    return launcher


HoldersOption = Annotated[
    int,
    typer.Option(
        "--holders",
        min=0,
        max=16,
        help="Key holders (python -m keyservice run), registered and staked at start.",
    ),
]
ChallengeWindowOption = Annotated[
    int | None,
    typer.Option(
        "--challenge-window",
        min=30,
        max=86400,
        help="Seconds a challenged node has to attest afresh (default: 900; short for tests).",
    ),
]
LivenessTimeoutOption = Annotated[
    int | None,
    typer.Option(
        "--liveness-timeout",
        min=1,
        max=86400,
        help="Seconds without a heartbeat before a failover-allowed lease is challenged"
        " (default: CVM_LIVENESS_TIMEOUT_S, 60).",
    ),
]


def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=50, help="Simulated nodes.")] = 3,
    data_dir: DataDirOption = None,
    api_port: Annotated[int, typer.Option(help="Backend API port (0: a free one).")] = 0,
    launcher: LauncherOption = "simulated",
    holders: HoldersOption = 0,
    challenge_window: ChallengeWindowOption = None,
    liveness_timeout: LivenessTimeoutOption = None,
) -> None:
    """Start the embedded stack (anvil, contracts, Redis, backend, node agents, key holders)
    until Ctrl-C."""
    import signal
    import threading

    from devstack import EmbeddedStack, StackConfig, StackError

    directory = data_dir_of(data_dir)
    stack = EmbeddedStack(
        StackConfig(
            directory,
            nodes=nodes,
            api_port=api_port,
            launcher=check_launcher(launcher),
            holders=holders,
            challenge_window_s=challenge_window,
            liveness_timeout_s=liveness_timeout,
        ),
        say=lambda message: err().print(f"[dim]…[/dim] {message}"),
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
        out().print(describe(state))
        out().print(f"[green]ready[/green]: stop with Ctrl-C or `cvm down --data-dir {directory}`")
        stack.supervise(stop)
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        raise CliError(str(exc)) from None
    finally:
        err().print("[dim]…[/dim] stopping the stack")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err().print("stopped")


def down(
    data_dir: DataDirOption = None,
    kill_node: Annotated[
        str | None,
        typer.Option(
            "--kill-node",
            help="Stop nothing else: SIGKILL this node of the stack (node-0, its address, or"
            " lease:N for the node running lease N) with its guests, as if its host died; the"
            " stack does not restart it (for failover tests).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop the stack `cvm up` runs in the data directory, leaving no process behind."""
    from devstack import stop_stack

    directory = data_dir_of(data_dir)
    if kill_node is not None:
        _kill_node(directory, kill_node)
        return
    state = stop_stack(directory)
    emit(
        {"stopped": state is not None, "data_dir": str(directory)},
        f"no stack recorded in {directory}: nothing to stop"
        if state is None
        else f"stopped the stack of {directory} (runner pid {state.pid})",
    )


def fund(
    wallet: Annotated[str, typer.Argument(help="Wallet name, keystore path or address.")],
    amount: Annotated[
        str, typer.Option("--tokens", help="Test tokens to mint (or base units: 1000base).")
    ] = "1000",
    ether: Annotated[int, typer.Option(min=0, help="Ether for gas.")] = 10,
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Local stacks only: mint test tokens and send ether for gas to a wallet or node key."""
    from cvm.cli.plumbing import connect_chain
    from devstack.faucet import fund as faucet
    from devstack.faucet import local_deployer

    typed = parse_amount(amount, "--tokens", allow_zero=True)
    record = load_deployment(deployment)
    address = wallet if re.fullmatch(r"0x[0-9a-fA-F]{40}", wallet) else None
    address = address or find_wallet(wallet).address
    admin = connect_chain(record, local_deployer(record))
    decimals = admin.token.decimals()
    minted = base_units(typed, decimals, "--tokens")
    balance = faucet(admin, address, minted, ether * 10**18)
    emit(
        {"address": address, "minted": minted, "token_balance": balance, "ether": ether},
        f"{address}: +{format_amount(minted, decimals)} "
        f"(now {format_amount(balance, decimals)}), +{ether} ETH",
    )


def _kill_node(directory: Path, which: str) -> None:
    """`cvm down --kill-node NODE`: one node of the running stack dies, and stays dead."""
    from devstack import running_state
    from devstack.failover_demo import kill_node

    state = running_state(directory)
    if state is None:
        raise CliError(f"no stack runs in {directory}")
    wanted = which.strip()
    if wanted.startswith("lease:"):
        import httpx

        number = wanted.removeprefix("lease:")
        if not number.isdigit():
            raise UsageError(f"--kill-node {which!r}: lease:N with N a lease id")
        try:
            answer = httpx.get(f"{state.api_url}/v1/leases/{int(number)}", timeout=10)
        except httpx.HTTPError as exc:
            raise CliError(f"the stack's backend does not answer ({exc})") from None
        if answer.status_code != 200:
            raise CliError(f"lease {number}: the backend answered {answer.status_code}")
        wanted = str(answer.json().get("node") or "")
        if not wanted:
            raise CliError(f"lease {number} runs on no node now")
    node = next(
        (n for n in state.nodes if wanted in (n.name, n.address) or
         n.address.lower() == wanted.lower()),
        None,
    )  # fmt: skip
    if node is None:
        names = ", ".join(n.name for n in state.nodes)
        raise UsageError(f"--kill-node {which!r}: not a node of this stack ({names})")
    killed = kill_node(state, node.name)
    emit(
        {"node": node.name, "address": node.address, "killed": killed},
        f"{node.name} ({node.address}) killed: pids {', '.join(map(str, killed)) or 'none'};"
        " the stack will not restart it",
    )
