"""Renter commands: `cvm nodes`, `cvm rent`, `cvm leases`,
`cvm lease show|topup|challenge|close|finalize`, attestation status.

Read-only commands (`leases`, `lease show`) need only an address: `--address`, or the
wallet's, read from its keystore file without unlocking it. Amounts are tokens (or base
units with a `base` suffix); prices are shown in tokens per hour for the VM's size, with the
chain's base units per second beside them; JSON keeps base units and Unix seconds.
Everything the backend or the chain said is printed through `literal` (no terminal control,
no markup).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.keys import (
    AllowMeasurementOption,
    AllowThresholdOneOption,
    ExportRootOption,
    HoldersOption,
    KeyRequest,
    ThresholdOption,
    deposit_text,
    holders_for,
    warn_threshold_one,
)
from cvm.cli.keys import deposit as key_deposit
from cvm.cli.plumbing import (
    AddressOption,
    CliError,
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    UsageError,
    WalletOption,
    base_units,
    check_rate,
    connect_chain,
    emit,
    format_amount,
    format_duration,
    format_rate,
    format_time,
    json_output,
    literal,
    load_deployment,
    out,
    parse_amount,
    parse_duration,
    parse_rate,
)
from cvm.cli.renting import lease_app, open_renter, read_ssh_public_key

if TYPE_CHECKING:
    from rich.table import Table

    from cvm.api_models import LeaseNodeView, NodeView
    from cvm.renter import LeaseReport, Renter, RentRequest

_PHASES = ("open", "accepted", "pending", "verified")


def lease_hint(report: LeaseReport) -> str | None:
    """What the renter can do about a lease in its state, if anything."""
    from cvm.renter import lease_phase

    if lease_phase(report) == "open":
        return (
            f"no node has accepted lease {report.lease.lease_id} yet; if it stays open, "
            f"`cvm lease close {report.lease.lease_id}` returns the whole deposit"
        )
    return None


SIMULATED_MARKER = (
    "[bold yellow]SIMULATED AMD-SP[/bold yellow]: signed by the local stack's simulator,"
    " not an AMD chip (proves nothing about hardware)"
)


def amd_root_text(amd_root: str | None) -> str:
    """How the human output names the root a report chained to."""
    if amd_root == "simulated":
        return SIMULATED_MARKER
    if amd_root == "amd":
        return "AMD (chains to AMD's pinned root)"
    return "not known (no verdict from the backend's verifier)"


def _lease_table(report: LeaseReport, decimals: int) -> Table:
    from rich.table import Table

    from cvm.renter import lease_status

    data = report.as_dict()
    attestation = data["attestation"]
    table = Table(title=f"lease {literal(data['lease_id'])}", show_header=False)
    table.add_row("status", literal(lease_status(report)))
    table.add_row("attestation", literal(attestation["status"]))
    for key in ("node", "vcpu", "memory_mib", "disk_gib"):
        table.add_row(key, literal(data[key] or "-"))
    table.add_row("rate", format_rate(data["rate_per_second"], decimals))
    table.add_row("max rate", format_rate(data["max_rate_per_second"], decimals))
    for key in ("deposit", "earned", "refundable"):
        table.add_row(key, format_amount(data[key], decimals))
    table.add_row("accepted", format_time(data["accepted_at"]))
    table.add_row("closed", format_time(data["closed_at"]))
    table.add_row("measurement", literal(attestation["measurement"]))
    if report.attestation.status.name != "NONE":
        table.add_row("signed by", amd_root_text(report.amd_root))
    table.add_row("attested", format_time(attestation["submitted_at"]))
    table.add_row("attestation expires", format_time(attestation["expires_at"]))
    if report.held is not None:
        held = report.held
        table.add_row("held", held_text(report.lease.lease_id, held.amount, held.releasable_at,
                                        decimals))  # fmt: skip
    if report.snapshot_epoch:
        table.add_row("snapshot epoch", str(report.snapshot_epoch))
    if report.nodes and (len(report.nodes) > 1 or report.nodes[0].ended_at is not None):
        # Where the lease ran before (it failed over, or a node declined it).
        for number, node in enumerate(report.nodes, 1):
            table.add_row(f"node {number}", literal(node_history_text(node)))
    hint = lease_hint(report)
    if hint:
        table.add_row("what to do", literal(hint))
    return table


def node_history_text(node: LeaseNodeView) -> str:
    """One node's time on a lease: `0xabc… from 12:00:01 until 12:05:09 (attestation expired)`."""
    until = "now" if node.ended_at is None else format_time(node.ended_at)
    why = f" ({node.reason.replace('_', ' ')})" if node.reason else ""
    return f"{node.node} from {format_time(node.accepted_at)} until {until}{why}"


def follow(renter: Renter, lease_id: int, timeout_s: float, quiet: bool) -> LeaseReport:
    """Wait until the lease is Verified, showing each phase live unless `quiet`."""
    from rich.live import Live
    from rich.table import Table

    if quiet:
        return renter.wait(lease_id, _settled_or_verified, timeout_s=timeout_s)
    seen: list[str] = []

    def render() -> Table:
        table = Table(title=f"lease {lease_id}", show_header=False)
        for phase in _PHASES:
            mark = "[green]✓[/green]" if phase in seen else "[dim]…[/dim]"
            table.add_row(mark, phase)
        return table

    with Live(render(), console=out(), transient=False, refresh_per_second=8) as live:

        def changed(phase: str, _report: LeaseReport) -> None:
            if phase in _PHASES:
                seen.extend(p for p in _PHASES[: _PHASES.index(phase) + 1] if p not in seen)
            live.update(render())

        report = renter.wait(lease_id, _settled_or_verified, timeout_s=timeout_s, on_change=changed)
    if not out().is_terminal:
        out().line()  # off a terminal, Live leaves its last frame unterminated
    return report


def _settled_or_verified(report: LeaseReport) -> bool:
    from cvm.renter import is_verified, lease_phase

    return is_verified(report) or lease_phase(report).startswith(("closed", "rejected"))


def _is_image_id(image: str) -> bool:
    value = image.lower().removeprefix("0x").removeprefix("sha256:")
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _image_measurement(image: str, vcpus: int) -> bytes:
    """The launch measurement of a stored image for a lease of `vcpus` vCPUs."""
    from cvm.config import get_settings
    from cvm.images import ImageStore, measure

    settings = get_settings()
    stored = ImageStore(settings.image_dir).get(image)
    return measure(stored, vcpus=vcpus, ovmf=settings.image_ovmf)


def _ensure_published(renter: Renter, image: str) -> None:
    """Before the lease exists: the backend must serve the image to the node. A local image
    it lacks is pushed (as `cvm image push`); one that is not here must already be there."""
    from cvm.cli.image import publish
    from cvm.config import get_settings
    from cvm.images import ImageStore

    store = ImageStore(get_settings().image_dir)
    if store.has(image):
        if publish(renter, store.get(image)) and not json_output():
            out().print(f"image {image} pushed to the backend (nodes download it by its id)")
    elif renter.published_image(image) is None:
        raise UsageError(
            f"the backend has no image {image} and it is not in this image directory"
            " (CVM_IMAGE_DIR): run `cvm image push` where it was built"
        )


def _measurement(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise UsageError("--measurement is not hex") from None


def quote(offers: list[NodeView], request: RentRequest, decimals: int) -> dict[str, Any]:
    """What renting `request` costs on today's market, in base units (the JSON of `rent`)."""
    cheapest = offers[0] if offers else None
    rate = cheapest.price_per_vcpu_second * request.vcpu if cheapest is not None else None
    return {
        "nodes": len(offers),
        "cheapest_node": cheapest.address if cheapest is not None else None,
        "cheapest_rate_per_second": rate,
        "max_rate_per_second": request.max_rate_per_second,
        "deposit": request.deposit,
    }


def quote_text(offer: dict[str, Any], request: RentRequest, decimals: int) -> str:
    """The quote as a renter reads it: tokens per hour for this VM, how long the deposit lasts."""
    rate, most = offer["cheapest_rate_per_second"], offer["max_rate_per_second"]
    size = f"{request.vcpu} vCPU, {request.memory_mib} MiB, {request.disk_gib} GiB"
    lasts = format_duration(request.deposit // rate) if rate else "until closed"
    return (
        f"quote: {offer['nodes']} node(s) offer {size}; the cheapest costs "
        f"{format_rate(rate, decimals)}, your max is {format_rate(most, decimals)}; "
        f"the deposit of {format_amount(request.deposit, decimals)} lasts {lasts} at that rate "
        f"(at least {format_duration(request.deposit // most)})"
    )


def _fits(node: NodeView, vcpu: int, memory_mib: int, disk_gib: int) -> bool:
    free = (
        node.free_vcpus if node.free_vcpus is not None else node.vcpus,
        node.free_memory_mib if node.free_memory_mib is not None else node.memory_mib,
        node.free_disk_gib if node.free_disk_gib is not None else node.disk_gib,
    )
    return node.active and free[0] >= vcpu and free[1] >= memory_mib and free[2] >= disk_gib


def nodes(
    vcpu: Annotated[int, typer.Option("--vcpu", min=1, help="vCPUs of the VM to price.")] = 2,
    memory: Annotated[int, typer.Option("--memory", min=1, help="Memory in MiB.")] = 4096,
    disk: Annotated[int, typer.Option("--disk", min=1, help="Disk in GiB.")] = 20,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also nodes that are inactive or lack room for it.")
    ] = False,
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """The market's SEV-SNP nodes, cheapest first, priced for a VM of this size.

    A node's price is per vCPU and second on chain; a lease pays it times its vCPUs. Shown in
    tokens per hour for the VM, the chain's base units per second beside (and in --json)."""
    from rich.table import Table

    from cvm.api_client import ApiClient
    from cvm.chain import TeeType
    from cvm.config import get_settings

    record = load_deployment(deployment)
    decimals = connect_chain(record).token.decimals()
    with ApiClient(record.api_url or get_settings().api_url) as api:
        listed = api.list_nodes(
            tee_type=int(TeeType.SEV_SNP), active=None if show_all else True, limit=1000
        )
    rows = [(n, _fits(n, vcpu, memory, disk)) for n in listed]
    rows = sorted((r for r in rows if show_all or r[1]), key=lambda r: r[0].price_per_vcpu_second)
    data = [
        node.model_dump(mode="json")
        | {"fits": fits, "rate_per_second": node.price_per_vcpu_second * vcpu}
        for node, fits in rows
    ]

    def table() -> Table | str:
        if not rows:
            return f"no active node has room for {vcpu} vCPU, {memory} MiB, {disk} GiB"
        shown = Table(
            "node", f"{vcpu} vCPU VM", "per vCPU", "free vCPU / MiB / GiB", "stake",
            "reputation", "region", "endpoint", *(["fits"] if show_all else []),
            title=f"nodes for a {vcpu} vCPU, {memory} MiB, {disk} GiB VM, cheapest first",
        )  # fmt: skip
        for node, fits in rows:
            free = (node.free_vcpus, node.free_memory_mib, node.free_disk_gib)
            shown.add_row(
                literal(node.address),
                format_rate(node.price_per_vcpu_second * vcpu, decimals),
                format_amount(node.price_per_vcpu_second * 3600, decimals) + "/h",
                literal(" / ".join("?" if value is None else str(value) for value in free)),
                format_amount(node.stake, decimals),
                literal(f"{node.reputation:.2f}"),
                literal(node.region or "-"),
                literal(node.endpoint or "-"),
                *(["yes" if fits else "no"] if show_all else []),
            )
        return shown

    emit(data, table)


def rent(
    vcpu: Annotated[int, typer.Option("--vcpu", min=1, help="vCPUs.")] = 2,
    memory: Annotated[int, typer.Option("--memory", min=1, help="Memory in MiB.")] = 4096,
    disk: Annotated[int, typer.Option("--disk", min=1, help="Disk in GiB.")] = 20,
    image: Annotated[
        str,
        typer.Option(
            help="Guest image: an id from `cvm image list` (the expected measurement is derived"
            " from it) or a name (private: kept by the backend)."
        ),
    ] = "cvm-demo-guest",
    measurement: Annotated[
        str | None,
        typer.Option(
            help="Expected launch measurement (hex, 48 bytes);"
            " default: the image's, else the demo's."
        ),
    ] = None,
    max_price: Annotated[
        str,
        typer.Option(
            "--max-price",
            help="Most the whole VM may cost: tokens per hour (0.072/h), per second (0.00002/s;"
            " a bare number is per second), or base units per second (1000base/s).",
        ),
    ] = "0.072/h",
    duration: Annotated[
        str | None, typer.Option(help="Prepay this long at --max-price (e.g. 15m, 2h).")
    ] = None,
    deposit: Annotated[
        str | None,
        typer.Option(help="Tokens to deposit, or base units (1000base); else --duration."),
    ] = None,
    reattest: Annotated[str, typer.Option(help="Re-attestation interval.")] = "1h",
    ssh_key: Annotated[
        Path | None,
        typer.Option("--ssh-key", help="SSH public key file (e.g. ~/.ssh/id_ed25519.pub)."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="NAME=FILE, sealed to the attested guest once Verified (/run/cvm/secrets/NAME).",
        ),
    ] = None,
    trust_simulated_amd: Annotated[
        bool,
        typer.Option(
            "--trust-simulated-amd",
            help="Release secrets to a guest attested by the local stack's simulated AMD-SP.",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the lease until it is Verified.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Verified.")] = 120.0,
    key_service: Annotated[
        bool,
        typer.Option(
            "--key-service",
            help="Give the guest its keys through the staked key holders (threshold key): it"
            " gets its disk key and --secret files with you offline, after crashes and failover.",
        ),
    ] = False,
    holders: HoldersOption = None,
    threshold: ThresholdOption = None,
    allow_threshold_one: AllowThresholdOneOption = False,
    failover: Annotated[
        bool,
        typer.Option(
            "--failover/--no-failover",
            help="With --key-service: let the lease move to another node if its node fails.",
        ),
    ] = True,
    allow_measurement: AllowMeasurementOption = None,
    export_root_key: ExportRootOption = None,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rent a confidential VM: private spec to the backend, lease and deposit on chain."""
    from cvm.renter import RentRequest, is_verified, lease_phase

    # Everything the user typed is checked before a wallet is unlocked or a chain touched.
    check_rate(max_price, "--max-price")
    deposit_typed = parse_amount(deposit, "--deposit") if deposit is not None else None
    seconds = parse_duration(duration, "--duration") if duration is not None else None
    if deposit_typed is None and seconds is None:
        raise UsageError("say how much to prepay: --duration (e.g. 1h) or --deposit")
    reattest_s = parse_duration(reattest, "--reattest")
    expected = _measurement(measurement) if measurement else None
    ssh_public_key = read_ssh_public_key(ssh_key) if ssh_key is not None else None
    from cvm.cli.guest import image_workload_disk, read_secrets, release_to_guest

    secrets = read_secrets(secret)
    keys_wanted = None
    if key_service:
        # The secrets go into the key's sealed bundle: no --wait, no renter online needed.
        keys_wanted = KeyRequest(holders, threshold, failover, allow_measurement, secrets,
                                 export_root_key, allow_threshold_one)  # fmt: skip
    elif (holders or threshold is not None or allow_measurement or export_root_key
          or allow_threshold_one):  # fmt: skip
        raise UsageError(
            "--holders/--threshold/--allow-threshold-one/--allow-measurement/--export-root-key"
            " need --key-service"
        )
    if secrets and not wait and not key_service:
        raise UsageError("--secret needs --wait: secrets go only to a Verified guest")
    if secrets and not _is_image_id(image):
        raise UsageError("--secret needs --image ID: only a cvm image has an agent to receive it")
    if _is_image_id(image):
        image = image.lower().removeprefix("0x").removeprefix("sha256:")
        if expected is None:
            expected = _image_measurement(image, vcpu)

    renter = open_renter(deployment, wallet, password_file)
    # An image whose workload declares a disk needs its key released even with no secrets.
    disk_image = _is_image_id(image) and image_workload_disk(renter.api, image)
    if keys_wanted is not None:
        secrets, disk_image = {}, False  # both come from the threshold key
    releasing = wait and bool(secrets or ssh_public_key or disk_image) and _is_image_id(image)
    if releasing and renter.chain.deployment.extra.get("local") and not trust_simulated_amd:
        # A local stack's guests are signed by its simulated AMD-SP, whose release would be
        # refused only after the lease is created and paid: refuse before anything is signed.
        what = "--secret/--ssh-key" if secrets or ssh_public_key else "the image's disk key"
        raise UsageError(
            "this local stack's guests are attested by its simulated AMD-SP: "
            f"pass --trust-simulated-amd to release {what} to them"
        )
    if _is_image_id(image):
        _ensure_published(renter, image)
    decimals = renter.chain.token.decimals()
    if expected is None:
        demo = renter.chain.deployment.extra.get("demo_measurement")
        if not demo:
            raise UsageError("--measurement is required: this deployment has no demo image")
        expected = _measurement(str(demo))
    price = parse_rate(max_price, "--max-price", decimals)
    if deposit_typed is not None:
        amount = base_units(deposit_typed, decimals, "--deposit")
    else:
        amount = price * (seconds or 0)
    request = RentRequest(
        vcpu=vcpu,
        memory_mib=memory,
        disk_gib=disk,
        image=image,
        measurement=expected,
        max_rate_per_second=price,
        deposit=amount,
        reattest_interval=reattest_s,
        ssh_public_key=ssh_public_key,
    )
    key_holders = None
    if keys_wanted is not None:  # checked on chain before the lease is paid for
        key_holders = holders_for(renter, keys_wanted.holders, keys_wanted.count)
        key_measurements = keys_wanted.measurements(expected)
        warn_threshold_one(keys_wanted.threshold)
    offer = quote(renter.matching_nodes(request), request, decimals)
    if not as_json and offer["nodes"]:
        out().print(quote_text(offer, request, decimals), highlight=False)
    lease_id = renter.rent(request)
    if not as_json:
        out().print(
            f"lease [bold]{lease_id}[/bold] created, deposit {format_amount(amount, decimals)}"
        )
    keys_view = None
    if keys_wanted is not None and key_holders is not None:
        keys_view = key_deposit(renter, lease_id, keys_wanted, key_holders, key_measurements)
        if not as_json:
            out().print(deposit_text(keys_view), highlight=False)
    report = follow(renter, lease_id, timeout, quiet=as_json) if wait else renter.report(lease_id)
    report = renter.with_amd_root(report)
    released = None
    if releasing and is_verified(report):
        released = release_to_guest(
            renter,
            lease_id,
            ssh_keys=[ssh_public_key] if ssh_public_key else [],
            secrets=secrets,
            trust_simulated=trust_simulated_amd,
            # The lease exists and is paid for by now: the retry is for it, not a new rent.
            retry=f"run `cvm lease secrets put {lease_id} --trust-simulated-amd`",
            with_disk_key=keys_wanted is None,
        )
    view = report.as_dict() | {"quote": offer} | ({"released": released} if released else {})
    if keys_view is not None:
        view["keys"] = keys_view
    emit(view, lambda: _lease_table(report, decimals))
    if released and not as_json:
        simulated = released["amd_root"] == "simulated"
        out().print(
            f"sealed {len(secrets)} secret(s)"
            + (" and the disk key" if released.get("disk_key") else "")
            + " to the attested guest"
            + (" [bold yellow](SIMULATED AMD-SP)[/bold yellow]" if simulated else "")
        )
    if wait and not is_verified(report):
        raise CliError(f"lease {lease_id} ended as '{lease_phase(report)}'")


def leases(
    address: AddressOption = None,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the leases of an address (yours by default); no password needed."""
    from rich.table import Table

    from cvm.renter import lease_status

    renter = open_renter(deployment, wallet, None, address=address, unlock=False)
    reports = renter.my_leases()
    decimals = renter.chain.token.decimals()

    def table() -> Table:
        rows = Table("lease", "status", "attestation", "node", "vCPU", "deposit", "earned",
                     "accepted",
                     title=f"leases of {literal(renter.address)}")  # fmt: skip
        for report in reports:
            data = report.as_dict()
            rows.add_row(
                literal(data["lease_id"]),
                literal(lease_status(report)),
                literal(data["attestation"]["status"]),
                literal(data["node"] or "-"),
                literal(data["vcpu"]),
                format_amount(data["deposit"], decimals),
                format_amount(data["earned"], decimals),
                format_time(data["accepted_at"]),
            )
        return rows

    emit([report.as_dict() for report in reports], table)
    if not json_output():
        for report in reports:
            hint = lease_hint(report)
            if hint:
                out().print(f"lease {report.lease.lease_id}: {literal(hint)}")


LeaseId = Annotated[int, typer.Argument(help="The lease id.", min=1)]


@lease_app.command("show")
def show(
    lease_id: LeaseId,
    address: AddressOption = None,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one of your leases: status, node, money, attestation; no password needed."""
    renter = open_renter(deployment, wallet, None, address=address, unlock=False)
    report = renter.with_history(renter.with_amd_root(renter.own_report(lease_id)))
    decimals = renter.chain.token.decimals()
    emit(report.as_dict(), lambda: _lease_table(report, decimals))


@lease_app.command("topup")
def topup(
    lease_id: LeaseId,
    amount: Annotated[
        str, typer.Argument(help="Tokens to add (e.g. 5), or base units (1000base).")
    ],
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add to the deposit of one of your leases."""
    typed = parse_amount(amount, "amount")
    renter = open_renter(deployment, wallet, password_file)
    decimals = renter.chain.token.decimals()
    report = renter.top_up(lease_id, base_units(typed, decimals, "amount"))
    emit(
        report.as_dict(),
        f"lease {lease_id}: deposit now {format_amount(report.lease.deposit, decimals)}",
    )


@lease_app.command("challenge")
def challenge(
    lease_id: LeaseId,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask the node to attest afresh now (at most once an hour per lease).

    Payment stops at the challenge and resumes from a fresh attestation once verified; if the
    node sends none within the challenge window, close the lease to get the refund.
    """
    renter = open_renter(deployment, wallet, password_file)
    report, respond_by, already = renter.challenge(lease_id)
    said = "was already challenged" if already else "challenged"
    emit(
        {**report.as_dict(), "respond_by": respond_by, "already_challenged": already},
        f"lease {lease_id} {said}: the node must attest afresh by {format_time(respond_by)}; "
        f"if it does not, `cvm lease close {lease_id}` refunds everything after the challenge",
    )


@lease_app.command("close")
def close(
    lease_id: LeaseId,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close one of your leases now and take back what was not earned.

    If an attestation still awaits the verifiers, the pay for its time stays held in escrow:
    paid to the node only if they verify it, refunded to you otherwise. Their verdict releases
    it; if none comes within their window, `cvm lease finalize` refunds it.
    """
    renter = open_renter(deployment, wallet, password_file)
    result = renter.close_lease(lease_id)
    report = result.report
    decimals = renter.chain.token.decimals()
    message = (
        f"lease {lease_id} closed: refund {format_amount(result.refund, decimals)}, "
        f"node earned {format_amount(report.earned, decimals)}"
    )
    if result.withdrawn:
        message += f"; withdrew {format_amount(result.withdrawn, decimals)} of market credit"
    if report.held is not None:
        message += "\n" + held_text(lease_id, report.held.amount, report.held.releasable_at,
                                     decimals)  # fmt: skip
    emit({**report.as_dict(), "refund": result.refund, "withdrawn": result.withdrawn}, message)


def held_text(lease_id: int, amount: int, releasable_at: int, decimals: int) -> str:
    """The held escrow of a closed lease, and what becomes of it."""
    what = (
        f"held for the pending attestation's verdict: {format_amount(amount, decimals)}, paid to "
        "the node only if the verifiers verify it, otherwise refunded to you. "
    )
    if releasable_at == 0:
        return what + f"Release it now: `cvm lease finalize {lease_id}`."
    return what + (
        f"Their verdict releases it by itself; if none comes by {format_time(releasable_at)}, "
        f"`cvm lease finalize {lease_id}` then refunds it."
    )


@lease_app.command("finalize")
def finalize(
    lease_id: LeaseId,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Release what a lease closed during a pending attestation holds, and withdraw your refund.

    After the verdict, or once the verifiers' window passed without one (then it is refunded).
    Anyone may release it on chain; the refund is always the renter's.
    """
    renter = open_renter(deployment, wallet, password_file)
    result = renter.finalize(lease_id)
    decimals = renter.chain.token.decimals()
    data = {
        **result.report.as_dict(),
        "released": {
            "held": result.held,
            "paid_to_node": result.paid_to_node,
            "refunded": result.refunded,
            "earned": result.release.earned,
            "close_reason": result.release.close_reason.name.lower(),
            "tx_hash": result.release.tx_hash,
        },
        "withdrawn": result.withdrawn,
    }
    reason = literal(result.release.close_reason.name.lower())
    if result.held is None:
        message = f"lease {lease_id}: the verdict already released the held escrow ({reason})"
    else:
        paid = format_amount(result.paid_to_node or 0, decimals)
        message = (
            f"lease {lease_id}: released {format_amount(result.held, decimals)} held "
            f"({reason}): {paid} to the node"
        )
    message += f", {format_amount(result.refunded, decimals)} refunded to the renter"
    if result.withdrawn:
        message += f"; withdrew {format_amount(result.withdrawn, decimals)} to your wallet"
    emit(data, message)


def attestation_status(lease_id: int, deployment: Path | None) -> None:
    """The attestation of a lease, from the chain, with the verifier's details if available."""
    from rich.table import Table

    from cvm.api_client import ApiClient, ApiError
    from cvm.chain import LeaseStatus
    from cvm.config import get_settings
    from cvm.renter import attestation_dict, verified_amd_root

    record = load_deployment(deployment)
    chain = connect_chain(record)
    if chain.leases.get_lease(lease_id).status == LeaseStatus.NONE:
        raise CliError(f"lease {lease_id} does not exist on this deployment")
    attestation = chain.attestations.attestation_of(lease_id)
    result: dict[str, Any] = {
        "lease_id": lease_id,
        **attestation_dict(attestation),
        "amd_root": None,
        "verification": None,
        "dispute_window_ends_at": None,
        "dispute": None,
    }
    try:
        with ApiClient(record.api_url or get_settings().api_url) as api:
            view = api.attestation_status(lease_id)
        if view.verification is not None:
            result["verification"] = view.verification.model_dump(mode="json")
        result["amd_root"] = verified_amd_root(view.verification, attestation.report_hash)
        if view.report_hash == result["report_hash"]:
            # The backend's index of the chain: until when the verdict may be disputed, and
            # any dispute with the EVM's outcome.
            result["dispute_window_ends_at"] = view.dispute_window_ends_at
            if view.dispute is not None:
                result["dispute"] = view.dispute.model_dump(mode="json")
    except ApiError:
        pass  # the chain's answer stands on its own; the details are a bonus

    def table() -> Table:
        rows = Table(title=f"attestation of lease {lease_id}", show_header=False)
        for key in ("status", "node", "measurement", "report_hash"):
            rows.add_row(key, literal(result[key]))
        for key in ("submitted_at", "verified_at", "expires_at"):
            rows.add_row(key.removesuffix("_at"), format_time(result[key]))
        verification = result["verification"]
        if verification is not None:
            # The backend's words: each reason code is shown as text, never acted on.
            reasons = ", ".join(literal(code) for code in verification["reason_codes"]) or "none"
            rows.add_row("verifier", f"ok={literal(verification['ok'])} reasons: {reasons}")
        if result["status"] != "none":
            rows.add_row("signed by", amd_root_text(result["amd_root"]))
        if result["dispute_window_ends_at"] is not None:
            rows.add_row("disputable until", format_time(result["dispute_window_ends_at"]))
        dispute = result["dispute"]
        if dispute is not None:
            outcome = "REVERSED" if dispute["overturned"] else "upheld"
            rows.add_row("dispute", f"{outcome} (disputed by {literal(dispute['disputer'])})")
        return rows

    emit(result, table)
