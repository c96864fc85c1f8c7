"""`cvm demo`: one renter's whole journey on the embedded stack, step by step.

Starts the stack unless one runs in the data directory, makes a keystore wallet, funds it
from the local faucet, rents a confidential VM, follows it to Verified, lets the example
dApp contract check `isAttested`, tops up, closes, and shows the refund and the operator's
earnings. Exits 0, or 1 naming the step that failed; stops whatever it started.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from cvm.cli.plumbing import CliError, err, literal, out
from devstack.cli.stack import (
    DataDirOption,
    LauncherOption,
    check_launcher,
    data_dir_of,
    describe,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from rich.table import Table

    from cvm.chain import ChainClient
    from devstack import StackState

_T = TypeVar("_T")


class DemoFailed(Exception):
    """A step of the demo failed."""


def _refuse_another_launcher(directory: Path, launcher: str) -> None:
    """A running stack is reused only if its nodes run `launcher`: a simulated node would
    never boot the VM a qemu demo rents (nor the reverse)."""
    from devstack import running_state

    state = running_state(directory)
    if state is not None and state.status == "ready" and state.launcher != launcher:
        raise CliError(
            f"the stack running in {directory} uses --launcher {state.launcher or 'unknown'}, "
            f"not {launcher}: stop it (`cvm down`) or pass --launcher {state.launcher or '...'}"
        )


@contextmanager
def _stack(
    directory: Path, nodes: int, launcher: str = "simulated", *, quiet_stdout: bool = False
) -> Iterator[StackState]:
    """The stack running in `directory`, or one started (and stopped) here. `quiet_stdout`:
    what it says goes to stderr (stdout is the demo's JSON)."""
    from devstack import EmbeddedStack, StackConfig, running_state

    console = err() if quiet_stdout else out()
    state = running_state(directory)
    if state is not None and state.status == "ready":
        console.print(f"using the stack already running in {directory}")
        yield state
        return
    stack = EmbeddedStack(
        StackConfig(directory, nodes=nodes, launcher=launcher),
        say=lambda m: err().print(f"[dim]…[/dim] {m}"),
    )
    try:
        started = stack.start()
        console.print(describe(started))
        yield started
    finally:
        err().print("[dim]…[/dim] stopping the stack the demo started")
        stack.stop()


def _step(number: int, title: str, action: Callable[[], _T]) -> _T:
    out().rule(f"[bold]{number}. {title}")
    try:
        return action()
    except Exception as exc:
        raise DemoFailed(f"step {number} ({title}) failed: {exc}") from exc


def _key_of(state: StackState, role: str, node_address: str) -> LocalAccount:
    """The node's `role` ("node" or "operator") key, from the keystore the record names."""
    from cvm.wallet import load_account, read_password_file

    for node in state.nodes:
        if node.address.lower() == node_address.lower():
            keystore = Path(getattr(node, f"{role}_keystore"))
            secret = read_password_file(Path(getattr(node, f"{role}_password_file")))
            return load_account(keystore, secret)
    raise DemoFailed(f"node {node_address} is not one of this stack's nodes")


def demo(
    data_dir: DataDirOption = None,
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=20)] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Verified.")] = 90.0,
    launcher: LauncherOption = "simulated",
    workload: Annotated[
        Path | None,
        typer.Option(
            "--workload",
            help="Run your own service: build this workload file's image and rent it with a"
            " disk on qemu nodes (implies --launcher qemu; see README, Run your own service).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="With --workload or --failover: the outcome as JSON."),
    ] = False,
    failover: Annotated[
        bool,
        typer.Option(
            "--failover",
            help="A lease that survives its node: 3 key holders, 2 qemu nodes; rent the"
            " stateful example with --key-service --failover, write, kill the first node, read"
            " the value back from the second (see README, Leases that survive their node).",
        ),
    ] = False,
) -> None:
    """Rent, attest, check from a dApp contract, top up, close: the whole journey.

    With --launcher qemu: build the guest image, rent a real VM by its id, release an SSH key
    and a secret to the attested guest, read the secret's hash over SSH, close.

    With --workload FILE: build that workload's image, rent it with --disk 1, Verified, the
    disk key released, the service reached over attested TLS, a value written, the guest
    killed and relaunched by its node, the key released again, the value read back, close.
    Prints the attested TLS fingerprint; exits 1 naming the step that failed."""
    directory = data_dir_of(data_dir)
    started = time.monotonic()
    if failover:
        _failover_demo(directory, workload, timeout, as_json)
        return
    if workload is not None:
        _service_demo(directory, workload, nodes, timeout, as_json)
        return
    check_launcher(launcher)
    _refuse_another_launcher(directory, launcher)  # before building any image
    try:
        if launcher == "qemu":
            from devstack.vm_demo import build_image

            image = _step(
                0, "build the guest image (Debian packages)", lambda: build_image(directory)
            )
        with _stack(directory, nodes, launcher) as state:
            out().print(f"web console: {state.api_url}/ (wallet RPC: {state.rpc_url})")
            if launcher == "qemu":
                from devstack.vm_demo import vm_journey

                summary = vm_journey(state, image, timeout, _step)
            else:
                summary = _journey(state, timeout)
    except DemoFailed as exc:
        # A step failure carries the backend's, the chain's or the guest's words: as text.
        err().print(f"[red]demo failed[/red]: {literal(exc)}")
        raise typer.Exit(1) from None
    summary.add_row("demo took", f"{time.monotonic() - started:.1f} s")
    out().print(summary)
    out().print("[green]demo passed[/green]")


def _journey(state: StackState, timeout: float) -> Table:
    from rich.table import Table

    from cvm.chain import Deployment, connect
    from cvm.cli.plumbing import format_amount, format_rate
    from cvm.cli.renter import follow
    from cvm.renter import RentRequest, is_verified
    from devstack import DEMO_MEASUREMENT

    deployment = Deployment.load(state.deployment_file)
    chain = connect(deployment, rpc_url=state.rpc_url)
    decimals = chain.token.decimals()

    def tokens(base: int) -> str:
        return format_amount(base, decimals).removesuffix(" tokens")

    from devstack.demo_renter import new_demo_renter

    renter = _step(1, "a renter with a keystore wallet", lambda: new_demo_renter(state, chain))
    request = RentRequest(
        vcpu=2,
        memory_mib=4096,
        disk_gib=20,
        image="cvm-demo-guest",
        measurement=DEMO_MEASUREMENT,
        max_rate_per_second=10**13,
        deposit=10**13 * 600,
    )

    def rent() -> int:
        offers = renter.matching_nodes(request)
        most = format_rate(request.max_rate_per_second, decimals)
        out().print(f"{len(offers)} nodes fit 2 vCPU / 4 GiB / 20 GiB at ≤ {most}")
        lease_id = renter.rent(request)
        out().print(f"lease {lease_id} created with {tokens(request.deposit)} tokens in escrow")
        return lease_id

    lease_id = _step(2, "rent a confidential VM", rent)

    def watch() -> None:
        report = follow(renter, lease_id, timeout, quiet=False)
        if not is_verified(report):
            raise DemoFailed(f"the lease ended as {report.attestation.status.name}")
        rate = format_rate(report.lease.rate_per_second, decimals)
        out().print(f"matched to node {literal(report.lease.node_key)} at {rate}")

    _step(3, "matched, launched and attested", watch)

    def verified_event() -> None:
        events = [
            event
            for event in chain.fetch_events(deployment.start_block)
            if event.name == "AttestationVerified" and event.args["leaseId"] == lease_id
        ]
        if not events:
            raise DemoFailed("no AttestationVerified event on chain")
        out().print(f"AttestationVerified in block {events[-1].block_number}")
        # The embedded stack has no SEV hardware: its verifiers trust the local simulated AMD-SP.
        out().print(
            "[bold yellow]SIMULATED AMD-SP[/bold yellow]: the report was signed by this local"
            " stack's simulator, trusted here only because `cvm up` configured it (demo only)"
        )

    _step(4, "AttestationVerified on chain", verified_event)
    node_address = renter.report(lease_id).lease.node_key

    def dapp() -> None:
        if not chain.attestations.is_attested(lease_id, DEMO_MEASUREMENT):
            raise DemoFailed("isAttested is false")
        out().print("AttestationRegistry.isAttested(lease, demo measurement) = true")
        from cvm.chain import ContractRevert, sign_guest_result

        signer = chain.attestations.attested_signer_of(lease_id)
        if int(signer, 16) == 0 or signer.lower() == node_address.lower():
            raise DemoFailed(f"no attested guest signer for lease {lease_id} ({signer})")
        out().print(f"AttestationRegistry.attestedSignerOf(lease) = {signer} (made in the guest)")
        # The example dApp takes results signed by that guest key only: the host's node key,
        # which could sign anything, is refused.
        node_account = _key_of(state, "node", node_address)
        node = chain.with_account(node_account)
        request = secrets.token_bytes(32)
        result = bytes.fromhex("c0ffee")
        deployment = chain.deployment
        forged = sign_guest_result(
            node_account,
            lease_id,
            request,
            result,
            deployment.chain_id,
            deployment.attestation_registry,
        )
        try:
            node.service.post_result(lease_id, request, result, forged)
        except ContractRevert as refused:
            if refused.name != "AttestedService_NotAttestedSigner":
                raise
        else:
            raise DemoFailed("the example dApp accepted a result signed by the node key")
        out().print("the example dApp (AttestedService) refused a result signed by the node key")

    _step(5, "a dApp contract checks isAttested", dapp)
    before_topup = renter.report(lease_id).lease.deposit
    _step(6, "top up", lambda: renter.top_up(lease_id, 10**13 * 300))
    out().print(f"deposit {tokens(before_topup)} → {tokens(renter.report(lease_id).lease.deposit)}")
    time.sleep(2)  # let a couple of attested seconds accrue
    closed, refund = _step(7, "close and get the refund", lambda: renter.close(lease_id))
    out().print(f"refund {tokens(refund)} tokens, node earned {tokens(closed.earned)}")

    def claim() -> int:
        operator: ChainClient = chain.with_account(_key_of(state, "operator", node_address))
        tx = operator.leases.claim(lease_id)
        return int(tx.event("EarningsClaimed").args["amount"])

    earnings = _step(8, "the operator claims its earnings", claim)
    out().print(f"claimed {tokens(earnings)} tokens")
    deposited = request.deposit + 10**13 * 300
    if refund + earnings != deposited:
        raise DemoFailed(f"refund {refund} + earnings {earnings} != deposit {deposited}")
    summary = Table(title="demo summary", show_header=False)
    summary.add_row("lease", str(lease_id))
    summary.add_row("node", node_address)
    summary.add_row("deposited", f"{tokens(deposited)} tokens")
    summary.add_row("refunded to renter", f"{tokens(refund)} tokens")
    summary.add_row("earned by operator", f"{tokens(earnings)} tokens")
    return summary


def _service_demo(
    directory: Path, workload: Path, nodes: int, timeout: float, as_json: bool
) -> None:
    """`cvm demo --workload FILE`: the service journey on qemu nodes (devstack.service_demo)."""
    import json
    import sys

    from rich.table import Table

    from devstack.service_demo import (
        RenterShell,
        ServiceJourney,
        StepRecord,
        abandon_lease,
        build_workload_image,
        run_service_journey,
        summary_rows,
    )

    if not workload.is_file():
        raise CliError(f"--workload {workload}: no such file", code=2)
    workload = workload.absolute()
    _refuse_another_launcher(directory, "qemu")
    journey = ServiceJourney(str(workload))
    # With --json the story goes to stderr and stdout holds only the outcome.
    console = err() if as_json else out()
    timeout = max(timeout, 240.0)  # a TCG boot of a workload image takes minutes on 2 cores
    started = time.monotonic()

    def step(number: int, title: str, action: Callable[[], _T]) -> _T:
        console.rule(f"[bold]{number}. {title}")
        begun = time.monotonic()
        try:
            result = action()
        except Exception as exc:
            journey.steps.append(
                StepRecord(number, title, False, round(time.monotonic() - begun, 2), str(exc))
            )
            raise DemoFailed(f"step {number} ({title}) failed: {exc}") from exc
        journey.steps.append(StepRecord(number, title, True, round(time.monotonic() - begun, 2)))
        return result

    directory.mkdir(parents=True, exist_ok=True)
    shell = RenterShell(directory)
    try:
        image_id = step(
            1, "build the workload's image (measured: app, rootfs, disk, ports)",
            lambda: build_workload_image(shell, workload),
        )  # fmt: skip
        with _stack(directory, nodes, "qemu", quiet_stdout=as_json) as state:
            try:
                run_service_journey(
                    state, shell, image_id, journey, step, timeout,
                    lambda text: console.print(text, highlight=False),
                )  # fmt: skip
            except DemoFailed:
                abandon_lease(shell, directory, journey.facts.get("lease_id"))
                raise
    except DemoFailed as exc:
        if as_json:
            sys.stdout.write(json.dumps(journey.as_dict(), indent=2, default=str) + "\n")
        err().print(f"[red]demo failed[/red]: {literal(exc)}")
        raise typer.Exit(1) from None
    journey.facts["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        sys.stdout.write(json.dumps(journey.as_dict(), indent=2, default=str) + "\n")
        return
    summary = Table(title="service demo summary", show_header=False)
    for name, value in summary_rows(journey):
        summary.add_row(name, literal(value))
    summary.add_row("demo took", f"{journey.facts['seconds']:.1f} s")
    out().print(summary)
    out().print("[green]demo passed[/green]")


def _failover_demo(directory: Path, workload: Path | None, timeout: float, as_json: bool) -> None:
    """`cvm demo --failover`: the failover journey on its own stack (devstack.failover_demo)."""
    import json
    import sys

    from rich.table import Table

    from devstack import EmbeddedStack, StackConfig, running_state
    from devstack.failover_demo import (
        CHALLENGE_WINDOW_S,
        HOLDERS,
        LIVENESS_TIMEOUT_S,
        NODES,
        SNAPSHOT_INTERVAL_S,
        FailoverJourney,
        abandon,
        run_failover_journey,
        summary_rows,
    )
    from devstack.service_demo import RenterShell, StepRecord, build_workload_image

    workload = (workload or Path("examples/kv-store/workload.toml")).absolute()
    if not workload.is_file():
        raise CliError(f"--workload {workload}: no such file (run from the repository's root)",
                       code=2)  # fmt: skip
    if running_state(directory) is not None:
        raise CliError(
            f"a stack already runs in {directory}: the failover demo starts its own (3 key"
            " holders, 2 qemu nodes, short windows); `cvm down` first or pass --data-dir"
        )
    journey = FailoverJourney(str(workload))
    console = err() if as_json else out()
    timeout = max(timeout, 420.0)  # TCG boots of the workload image on 2 busy cores
    started = time.monotonic()

    def step(number: int, title: str, action: Callable[[], _T]) -> _T:
        console.rule(f"[bold]{number}. {title}")
        begun = time.monotonic()
        try:
            result = action()
        except Exception as exc:
            journey.steps.append(
                StepRecord(number, title, False, round(time.monotonic() - begun, 2), str(exc))
            )
            raise DemoFailed(f"step {number} ({title}) failed: {exc}") from exc
        journey.steps.append(StepRecord(number, title, True, round(time.monotonic() - begun, 2)))
        return result

    directory.mkdir(parents=True, exist_ok=True)
    shell = RenterShell(directory)
    stack = EmbeddedStack(
        StackConfig(
            directory, nodes=NODES, launcher="qemu", holders=HOLDERS,
            challenge_window_s=CHALLENGE_WINDOW_S, liveness_timeout_s=LIVENESS_TIMEOUT_S,
            snapshot_interval_s=SNAPSHOT_INTERVAL_S,
        ),
        say=lambda m: err().print(f"[dim]…[/dim] {m}"),
    )  # fmt: skip
    try:
        image_id = step(
            1, "build the workload's image", lambda: build_workload_image(shell, workload)
        )
        try:
            state = step(2, "start the stack: 3 key holders, 2 qemu nodes", stack.start)
            console.print(describe(state))
            try:
                run_failover_journey(
                    state, shell, image_id, journey, step, timeout,
                    lambda text: console.print(text, highlight=False),
                )  # fmt: skip
            except DemoFailed:
                abandon(shell, directory, journey.facts.get("lease_id"))
                raise
        finally:
            err().print("[dim]…[/dim] stopping the stack the demo started")
            stack.stop()
            # Guests outlive their node agents by design: the demo's own go with its stack.
            abandon(shell, directory, None)
    except DemoFailed as exc:
        if as_json:
            sys.stdout.write(json.dumps(journey.as_dict(), indent=2, default=str) + "\n")
        err().print(f"[red]demo failed[/red]: {literal(exc)}")
        raise typer.Exit(1) from None
    journey.facts["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        sys.stdout.write(json.dumps(journey.as_dict(), indent=2, default=str) + "\n")
        return
    summary = Table(title="failover demo summary", show_header=False)
    for name, value in summary_rows(journey):
        summary.add_row(name, literal(value))
    summary.add_row("demo took", f"{journey.facts['seconds']:.1f} s")
    out().print(summary)
    out().print("[green]demo passed[/green]")
