"""Renter commands: `cvm rent`, `cvm leases`, `cvm lease show|topup|close`, attestation status."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from cvm.cli._renting import (
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    WalletOption,
    emit,
    fail,
    failures,
    load_deployment,
    open_renter,
    out,
    parse_duration,
    parse_tokens,
    rpc_url,
    tokens,
)
from cvm.renter import (
    LeaseReport,
    Renter,
    RenterError,
    RentRequest,
    connect_chain,
    is_verified,
    lease_phase,
)

lease_app = typer.Typer(help="Show, top up or close one of your leases.", no_args_is_help=True)

_PHASES = ("open", "accepted", "pending", "verified")


def _lease_table(report: LeaseReport) -> Table:
    data = report.as_dict()
    table = Table(title=f"lease {data['lease_id']}", show_header=False)
    for key in ("status", "node", "vcpu", "memory_mib", "disk_gib"):
        table.add_row(key, str(data[key]))
    table.add_row("rate / s", tokens(data["rate_per_second"]))
    for key in ("deposit", "earned", "refundable"):
        table.add_row(key, tokens(data[key]))
    attestation = data["attestation"]
    table.add_row("attestation", attestation["status"])
    table.add_row("measurement", attestation["measurement"])
    return table


def follow(renter: Renter, lease_id: int, timeout_s: float, quiet: bool) -> LeaseReport:
    """Wait until the lease is Verified, showing each phase live unless `quiet`."""
    if quiet:
        return renter.wait(lease_id, _settled_or_verified, timeout_s=timeout_s)
    seen: list[str] = []

    def render() -> Table:
        table = Table(title=f"lease {lease_id}", show_header=False)
        for phase in _PHASES:
            mark = "[green]✓[/green]" if phase in seen else "[dim]…[/dim]"
            table.add_row(mark, phase)
        return table

    with Live(render(), console=out, transient=False, refresh_per_second=8) as live:

        def changed(phase: str, _report: LeaseReport) -> None:
            if phase in _PHASES:
                seen.extend(p for p in _PHASES[: _PHASES.index(phase) + 1] if p not in seen)
            live.update(render())

        return renter.wait(lease_id, _settled_or_verified, timeout_s=timeout_s, on_change=changed)


def _settled_or_verified(report: LeaseReport) -> bool:
    return is_verified(report) or lease_phase(report).startswith(("closed", "rejected"))


def rent(
    vcpu: Annotated[int, typer.Option("--vcpu", min=1, help="vCPUs.")] = 2,
    memory: Annotated[int, typer.Option("--memory", min=1, help="Memory in MiB.")] = 4096,
    disk: Annotated[int, typer.Option("--disk", min=1, help="Disk in GiB.")] = 20,
    image: Annotated[str, typer.Option(help="Guest image (private: kept by the backend).")] = (
        "cvm-demo-guest"
    ),
    measurement: Annotated[
        str | None,
        typer.Option(help="Expected launch measurement (hex, 48 bytes); default: the demo's."),
    ] = None,
    max_price: Annotated[
        str, typer.Option("--max-price", help="Most tokens per second for the whole VM.")
    ] = "0.00002",
    duration: Annotated[
        str | None, typer.Option(help="Prepay this long at --max-price (e.g. 15m, 2h).")
    ] = None,
    deposit: Annotated[
        str | None, typer.Option(help="Tokens to deposit (else --duration).")
    ] = None,
    reattest: Annotated[str, typer.Option(help="Re-attestation interval.")] = "1h",
    ssh_key: Annotated[str | None, typer.Option("--ssh-key", help="SSH public key.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the lease until it is Verified.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Verified.")] = 120.0,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rent a confidential VM: private spec to the backend, lease and deposit on chain."""
    with failures(as_json):
        renter = open_renter(deployment, wallet, password_file)
        chosen = measurement or renter.chain.deployment.extra.get("demo_measurement")
        if not chosen:
            raise RenterError("--measurement is required: this deployment has no demo image")
        try:
            expected = bytes.fromhex(str(chosen).removeprefix("0x"))
        except ValueError:
            raise RenterError("--measurement is not hex") from None
        price = parse_tokens(max_price, "--max-price")
        if deposit is not None:
            amount = parse_tokens(deposit, "--deposit")
        elif duration is not None:
            amount = price * parse_duration(duration)
        else:
            raise RenterError("say how much to prepay: --duration (e.g. 1h) or --deposit")
        request = RentRequest(
            vcpu=vcpu,
            memory_mib=memory,
            disk_gib=disk,
            image=image,
            measurement=expected,
            max_price_per_second=price,
            deposit=amount,
            reattest_interval=parse_duration(reattest),
            ssh_public_key=ssh_key,
        )
        lease_id = renter.rent(request)
        if not as_json:
            out.print(f"lease [bold]{lease_id}[/bold] created, deposit {tokens(amount)} tokens")
        report = (
            follow(renter, lease_id, timeout, quiet=as_json) if wait else renter.report(lease_id)
        )
        if as_json:
            emit(report.as_dict())
        else:
            out.print(_lease_table(report))
        if wait and not is_verified(report):
            fail(f"lease {lease_id} ended as '{lease_phase(report)}'", as_json)


def leases(
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the leases of your wallet."""
    with failures(as_json):
        renter = open_renter(deployment, wallet, password_file)
        reports = renter.my_leases()
        if as_json:
            emit([report.as_dict() for report in reports])
            return
        table = Table("lease", "status", "node", "vCPU", "deposit", "earned", "attestation")
        for report in reports:
            data = report.as_dict()
            table.add_row(
                str(data["lease_id"]),
                lease_phase(report),
                str(data["node"] or "-"),
                str(data["vcpu"]),
                tokens(data["deposit"]),
                tokens(data["earned"]),
                data["attestation"]["status"],
            )
        out.print(table)


LeaseId = Annotated[int, typer.Argument(help="The lease id.", min=1)]


@lease_app.command("show")
def show(
    lease_id: LeaseId,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one of your leases: status, node, money, attestation."""
    with failures(as_json):
        report = open_renter(deployment, wallet, password_file).own_report(lease_id)
        if as_json:
            emit(report.as_dict())
        else:
            out.print(_lease_table(report))


@lease_app.command("topup")
def topup(
    lease_id: LeaseId,
    amount: Annotated[str, typer.Argument(help="Tokens to add (e.g. 5, or 1000base).")],
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add to the deposit of one of your leases."""
    with failures(as_json):
        renter = open_renter(deployment, wallet, password_file)
        report = renter.top_up(lease_id, parse_tokens(amount, "amount"))
        if as_json:
            emit(report.as_dict())
        else:
            out.print(f"lease {lease_id}: deposit now {tokens(report.lease.deposit)} tokens")


@lease_app.command("close")
def close(
    lease_id: LeaseId,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close one of your leases and take back what was not earned."""
    with failures(as_json):
        renter = open_renter(deployment, wallet, password_file)
        report, refund = renter.close(lease_id)
        if as_json:
            emit({**report.as_dict(), "refund": refund})
        else:
            out.print(
                f"lease {lease_id} closed: refund {tokens(refund)} tokens, "
                f"node earned {tokens(report.earned)}"
            )


def attestation_status(
    lease_id: LeaseId,
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """The attestation of a lease, from the chain, with the verifier's details if available."""
    from cvm.api_client import ApiClient, ApiError
    from cvm.cli._renting import api_url
    from cvm.renter import attestation_dict

    with failures(as_json):
        record = load_deployment(deployment)
        chain = connect_chain(record, rpc_url(record), None)
        attestation = chain.attestations.attestation_of(lease_id)
        result: dict[str, Any] = {
            "lease_id": lease_id,
            **attestation_dict(attestation),
            "verification": None,
        }
        try:
            with ApiClient(api_url(record)) as api:
                view = api.attestation_status(lease_id)
            if view.verification is not None:
                result["verification"] = view.verification.model_dump(mode="json")
        except ApiError:
            pass  # the chain's answer stands on its own; the details are a bonus
        if as_json:
            emit(result)
            return
        table = Table(title=f"attestation of lease {lease_id}", show_header=False)
        for key in ("status", "node", "measurement", "report_hash", "submitted_at",
                    "verified_at", "expires_at"):  # fmt: skip
            table.add_row(key, str(result[key]))
        verification = result["verification"]
        if verification is not None:
            reasons = ", ".join(verification["reason_codes"]) or "none"
            table.add_row("verifier", f"ok={verification['ok']} reasons: {reasons}")
        out.print(table)
