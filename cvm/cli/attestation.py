"""`cvm attestation ...`: inspect, verify and measure SEV-SNP attestation reports.

Exit codes of `verify` (stable): 0 valid, 1 invalid, 2 usage error or unreadable file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.plumbing import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    WalletOption,
    err,
    literal,
)
from cvm.cli.plumbing import out as _out

if TYPE_CHECKING:
    from cvm.attestation import Product, Report

app = typer.Typer(
    help="Inspect, verify and measure SEV-SNP attestation reports.", no_args_is_help=True
)
EXIT_VALID, EXIT_INVALID = EXIT_OK, EXIT_FAILED


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        err().print(
            f"[red]cannot read {what} {literal(path)}: {literal(exc.strerror or exc)}[/red]"
        )
        raise typer.Exit(EXIT_USAGE) from exc


def _hex_option(value: str | None, size: int, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError as exc:
        raise typer.BadParameter(f"{name} is not hex") from exc
    if len(raw) != size:
        raise typer.BadParameter(f"{name} must be {size} bytes, got {len(raw)}")
    return raw


def _time_option(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"--at {value!r} is not an ISO 8601 time") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _report_fields(report: Report, product: Product | None) -> dict[str, Any]:
    from cvm.attestation import TcbVersion

    tcb: dict[str, int] | None = None
    if product is not None:
        tcb = TcbVersion.from_int(report.reported_tcb, product).components()
    return {
        "version": report.version,
        "policy": report.policy.as_dict(),
        "vmpl": report.vmpl,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "host_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
        "reported_tcb": tcb,
        "reported_tcb_raw": f"{report.reported_tcb:#018x}",
        "guest_svn": report.guest_svn,
        "mask_chip_key": report.signer_info.mask_chip_key,
    }


def _product_hint(report: Report | None, vcek: bytes) -> Product | None:
    from cvm.attestation import AttestationError, load_endorsement_key

    try:
        return load_endorsement_key(vcek).product
    except AttestationError:
        return report.cpuid_product if report is not None else None


@app.command()
def verify(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="Raw 1184-byte report.")],
    vcek: Annotated[Path, typer.Option("--vcek", help="VCEK or VLEK certificate (DER or PEM).")],
    chain: Annotated[
        Path | None,
        typer.Option(
            "--chain",
            help="Chain (PEM: ASK or ASVK, then ARK); its ARK replaces AMD's built-in roots.",
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Check certificate validity at this ISO 8601 time.")
    ] = None,
    expect_measurement: Annotated[
        str | None, typer.Option("--expect-measurement", help="Expected MEASUREMENT, 48 bytes hex.")
    ] = None,
    allow_debug: Annotated[
        bool, typer.Option("--allow-debug", help="Accept a policy that allows debugging.")
    ] = False,
    onchain: Annotated[
        bool,
        typer.Option(
            "--onchain",
            help="Also run the EVM's check (SnpVerifier): the deployment's, read-only, or a"
            " throwaway local chain's if none is configured; its verdict, fields and gas.",
        ),
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="With --onchain: a throwaway local chain even if a deployment is configured.",
        ),
    ] = False,
    hardfork: Annotated[
        str | None,
        typer.Option(
            "--hardfork",
            help="With --onchain on a local chain: its gas schedule (cancun, prague or osaka).",
        ),
    ] = "cancun",
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify REPORT against its VCEK and AMD's root of trust; exit 0 valid, 1 invalid, 2 usage.

    With --onchain the EVM's check must agree (verdict, reason and fields): exit 1 if not."""
    # Imported here, not at module level, so that `cvm --help` stays fast.
    from cvm.attestation import AttestationError, Policy, appraise, parse, report_hash
    from cvm.attestation.endorsement import load_certificates

    when = _time_option(at)
    measurement = _hex_option(expect_measurement, 48, "--expect-measurement")
    raw = _read(report_path, "report")
    vcek_bytes = _read(vcek, "certificate")
    chain_bytes = _read(chain, "chain") if chain is not None else None
    policy = Policy(
        measurements=(measurement,) if measurement else (),
        allow_debug=allow_debug,
        vmpl=None,
    )
    roots = None
    errors: list[dict[str, str]] = []
    if chain_bytes is not None:
        try:
            # The chain's own root(s) replace AMD's; a chain without a root only adds
            # intermediates and AMD's built-in roots stay the anchor.
            roots = [c for c in load_certificates(chain_bytes) if c.issuer == c.subject] or None
        except AttestationError as exc:
            errors.append({"code": exc.reason.value, "message": exc.message})
    verdict = None
    if not errors:
        verdict = appraise(raw, vcek_bytes, policy, chain=chain_bytes, trusted_roots=roots, at=when)
        errors = [{"code": f.reason.value, "message": f.message} for f in verdict.failures]
    valid = verdict is not None and verdict.ok
    try:
        parsed: Report | None = parse(raw)
    except AttestationError:
        parsed = None
    amd_root: str | None = None
    if verdict is not None and verdict.verified is not None:
        product: Product | None = verdict.verified.product
        signer: str | None = verdict.verified.signer.name
        # A --chain root replaces AMD's: say whether the chain still ends in AMD's pinned ARK.
        amd_root = verdict.verified.amd_root.value
    else:
        product = _product_hint(parsed, vcek_bytes)
        signer = parsed.signing_key.name if parsed is not None else None
    result: dict[str, Any] = {
        "valid": valid,
        "amd_root": amd_root,
        "product": product.value if product else None,
        "signer": signer,
        **(_report_fields(parsed, product) if parsed is not None else {}),
        "report_hash": report_hash(raw).hex() if parsed is not None else None,
        "checked_at": (when or datetime.now(UTC)).isoformat(),
        "errors": errors,
    }
    for key in ("version", "policy", "measurement", "report_data", "chip_id", "reported_tcb"):
        result.setdefault(key, None)
    agrees = True
    if onchain:
        result["onchain"] = _onchain(
            raw, vcek_bytes, chain_bytes, verdict, errors, parsed, result,
            local=local, deployment=deployment, hardfork=hardfork,
            allow_debug=allow_debug, measurement=measurement,
        )  # fmt: skip
        agrees = bool(result["onchain"]["agrees"])
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        _print_verdict(result)
        if onchain:
            _print_onchain(result["onchain"])
    raise typer.Exit(EXIT_VALID if valid and agrees else EXIT_INVALID)


def _onchain(
    raw: bytes,
    vcek: bytes,
    chain: bytes | None,
    verdict: Any,
    errors: list[dict[str, str]],
    parsed: Report | None,
    result: dict[str, Any],
    *,
    local: bool,
    deployment: Path | None,
    hardfork: str | None,
    allow_debug: bool,
    measurement: bytes | None,
) -> dict[str, Any]:
    """The EVM's verdict compared with the off-chain one; a failure to run it is exit 2."""
    from cvm.attestation.onchain import SnpReason
    from cvm.chain.errors import ChainError
    from cvm.chain.report_check import NotFramable, OnchainCheck
    from cvm.cli.onchain import compare, offchain_fields, run_onchain

    try:
        onchain = run_onchain(
            raw, vcek, chain, local=local, deployment=deployment, hardfork=hardfork
        )
    except NotFramable as exc:
        # Not even a report or a certificate: the contract refuses it as Malformed unsent.
        onchain = OnchainCheck(False, SnpReason.MALFORMED, None, chain=f"not run ({exc})")
    except ChainError as exc:
        err().print(f"[red]the on-chain check could not run:[/red] {literal(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    fields = (
        offchain_fields(parsed, raw, result.get("product"))
        if parsed is not None and verdict is not None and verdict.verified is not None
        else None
    )
    return compare(
        verdict, errors, fields, onchain, allow_debug=allow_debug, measurement=measurement
    )


def _print_onchain(onchain: dict[str, Any]) -> None:
    from rich.table import Table

    status = "[bold green]VALID[/]" if onchain["valid"] else "[bold red]INVALID[/]"
    where = literal(onchain["chain"])
    if onchain["verifier"]:
        where += f", SnpVerifier {literal(onchain['verifier'])}"
    _out().print(f"on chain ({where}): {status} ({literal(onchain['reason'])})")
    steps = Table(show_header=True, box=None)
    estimated = " (estimated)" if onchain.get("gas_estimated") else ""
    for column in ("step", f"gas used{estimated}", "under the 16,777,216 cap"):
        steps.add_column(column)
    for step in onchain["steps"]:
        steps.add_row(
            literal(step["step"]), f"{step['gas_used']:,}", "yes" if step["under_cap"] else "NO"
        )
    steps.add_row("total", f"{onchain['gas_total']:,}", "")
    _out().print(steps)
    if onchain["agrees"]:
        _out().print("the EVM's check agrees with the off-chain one, field for field")
    else:
        _out().print("[bold red]the EVM's check DISAGREES[/bold red]:")
        for mismatch in onchain["mismatches"]:
            _out().print(f"  {literal(mismatch)}")


def _print_verdict(result: dict[str, Any]) -> None:
    from rich.table import Table

    status = "[bold green]VALID[/]" if result["valid"] else "[bold red]INVALID[/]"
    _out().print(f"attestation report: {status}")
    if result.get("amd_root") == "simulated":
        _out().print(
            "[bold yellow]NOT AMD's root[/bold yellow]: the chain given with --chain ends in"
            " another ARK (such as the simulated AMD-SP's); this proves nothing about AMD hardware"
        )
    table = Table(show_header=False, box=None)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in ("product", "signer", "version", "measurement", "report_data", "chip_id"):
        table.add_row(key, literal(result.get(key)))
    if result.get("policy"):
        policy = result["policy"]
        table.add_row("policy", literal(f"{policy['raw']} debug={policy['debug']}"))
    table.add_row("reported_tcb", literal(result.get("reported_tcb")))
    _out().print(table)
    for error in result["errors"]:
        # A report, its certificates and its chain come from the node: their words as text.
        _out().print(f"[red]{literal(error['code'])}[/red]: {literal(error['message'])}")


@app.command()
def show(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="Raw 1184-byte report.")],
    product: Annotated[
        str | None,
        typer.Option("--product", help="Milan, Genoa or Turin (for the TCB layout)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the fields of REPORT (no verification)."""
    from cvm.attestation import AttestationError, Product, parse, report_hash

    raw = _read(report_path, "report")
    try:
        report = parse(raw)
    except AttestationError as exc:
        err().print(f"[red]{literal(exc.reason.value)}[/red]: {literal(exc.message)}")
        raise typer.Exit(EXIT_INVALID) from exc
    try:
        chosen = Product.from_name(product) if product else report.cpuid_product
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    fields: dict[str, Any] = {
        "product": chosen.value if chosen else None,
        "signer": report.signing_key.name,
        **_report_fields(report, chosen),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "platform_info": f"{report.platform_info:#x}",
        "current_tcb": f"{report.current_tcb:#018x}",
        "committed_tcb": f"{report.committed_tcb:#018x}",
        "launch_tcb": f"{report.launch_tcb:#018x}",
        "firmware": f"{report.current_major}.{report.current_minor}.{report.current_build}",
        "report_hash": report_hash(raw).hex(),
    }
    if as_json:
        typer.echo(json.dumps(fields, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title="SEV-SNP attestation report", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in fields.items():
        table.add_row(key, literal(json.dumps(value) if isinstance(value, dict) else value))
    _out().print(table)


@app.command()
def measure(
    ovmf: Annotated[Path, typer.Option("--ovmf", help="OVMF firmware image.")],
    kernel: Annotated[Path | None, typer.Option("--kernel", help="Kernel (direct boot).")] = None,
    initrd: Annotated[Path | None, typer.Option("--initrd", help="Initrd (direct boot).")] = None,
    append: Annotated[str | None, typer.Option("--append", help="Kernel command line.")] = None,
    vcpus: Annotated[int, typer.Option("--vcpus", min=1, help="Number of vCPUs.")] = 1,
    vcpu_type: Annotated[
        str,
        typer.Option("--vcpu-type", help="QEMU CPU model (EPYC-v4, EPYC-Milan, ...) or 'none'."),
    ] = "EPYC-v4",
    guest_features: Annotated[
        str, typer.Option("--guest-features", help="VMSA SEV_FEATURES (hex).")
    ] = "0x1",
    vmm_type: Annotated[str, typer.Option("--vmm-type", help="qemu, ec2 or gce.")] = "qemu",
    mode: Annotated[str, typer.Option("--mode", help="snp, sev-es or sev.")] = "snp",
    as_json: JsonOption = False,
) -> None:
    """Compute the expected launch measurement of an image with sev-snp-measure."""
    from cvm.attestation import MeasurementError, expected_measurement

    try:
        features = int(guest_features, 16)
    except ValueError as exc:
        raise typer.BadParameter("--guest-features must be hex") from exc
    for path in (ovmf, kernel, initrd):
        if path is not None and not path.is_file():
            err().print(f"[red]cannot read {literal(path)}[/red]")
            raise typer.Exit(EXIT_USAGE)
    try:
        digest = expected_measurement(
            ovmf,
            kernel=kernel,
            initrd=initrd,
            append=append,
            vcpus=vcpus,
            vcpu_type=None if vcpu_type.lower() == "none" else vcpu_type,
            guest_features=features,
            vmm_type=vmm_type,
            mode=mode,
        )
    except MeasurementError as exc:
        err().print(f"[red]{literal(exc.message)}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    if as_json:
        typer.echo(json.dumps({"mode": mode, "measurement": digest.hex()}))
    else:
        typer.echo(digest.hex())


@app.command("status")
def status(
    lease_id: Annotated[int, typer.Argument(help="The lease id.", min=1)],
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """The attestation of a lease: from the chain, with the backend's verification details."""
    from cvm.cli.renter import attestation_status

    attestation_status(lease_id, deployment)


@app.command("dispute")
def dispute(
    lease_id: Annotated[int, typer.Argument(help="The lease whose verdict to dispute.", min=1)],
    report_hash: Annotated[
        str | None,
        typer.Option(
            "--report-hash",
            help="The report whose verdict to dispute (0x keccak256; default: the lease's latest"
            " submission; an earlier one is disputable while its window runs).",
        ),
    ] = None,
    check_only: Annotated[
        bool,
        typer.Option(
            "--check-only", help="Check and say what the chain would decide; send nothing."
        ),
    ] = False,
    trust_simulated: Annotated[
        bool,
        typer.Option(
            "--trust-simulated-amd",
            help="Also accept reports of the local stack's simulated AMD-SP (demos only).",
        ),
    ] = False,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    deployment: DeploymentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dispute the verifiers' verdict on a lease's attestation, with a bond, in the EVM.

    Fetches the evidence from the backend by the report hash recorded on chain, checks it
    here as a verifier does, says what the chain will decide, and only then disputes: a
    verdict this check agrees with, or that is wrong only on what the EVM cannot check,
    is not disputed (it would lose the bond)."""
    from cvm.cli.dispute import run_dispute

    run_dispute(
        lease_id,
        report_hash=_report_hash_option(report_hash),
        check_only=check_only,
        trust_simulated=trust_simulated,
        wallet=wallet,
        password_file=password_file,
        deployment=deployment,
    )


def _report_hash_option(value: str | None) -> bytes | None:
    return _hex_option(value, 32, "--report-hash")
