"""`cvm node ...`: the operator's commands: keys, register, stake, unstake, claim, withdraw,
status, run, doctor.

Two keys: the operator's wallet (cold) registers and stakes; the node key (hot) is what
the agent runs with, and it pays gas for every accept and attestation, so it needs ether
(`cvm wallet fund NODE_KEY --tokens 0` on a local stack). Both live in keystores;
passwords come from a prompt or an owner-only `--password-file`, never from the command
line. Amounts are in tokens (decimals allowed, read from the token) or base units with a
`base` suffix (`1000base`); JSON shows base units.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.plumbing import (
    CliError,
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    RpcOption,
    UsageError,
    base_units,
    checksum_address,
    emit,
    format_amount,
    format_rate,
    format_time,
    literal,
    load_deployment,
    parse_amount,
    password,
    unlock_keystore,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from cvm.chain import ChainClient

app = typer.Typer(help="Run a node: keys, registration, stake, the agent.", no_args_is_help=True)

KeystoreOpt = Annotated[Path, typer.Option("--keystore", help="keystore of the operator wallet")]
PasswordOpt = PasswordFileOption
JsonOpt = JsonOption
DeploymentOpt = DeploymentOption
RpcOpt = RpcOption
NodeKeyOpt = Annotated[str, typer.Option("--node-key", help="address of the node (hot) key")]
AmountArg = Annotated[
    str, typer.Argument(help="tokens (e.g. 150 or 0.5), or base units (1000base)")
]


def _client(
    account: LocalAccount | None, deployment_file: Path | None, rpc: str | None
) -> ChainClient:
    from cvm.cli.plumbing import connect_chain

    return connect_chain(load_deployment(deployment_file), account, rpc)


def _operator(
    keystore: Path, password_file: Path | None, deployment: Path | None, rpc: str | None
) -> ChainClient:
    """The operator's client: the record and network are checked before the password is asked."""
    client = _client(None, deployment, rpc)
    return client.with_account(unlock_keystore(keystore, password_file))


def _tokens(client: ChainClient, base: int) -> str:
    return format_amount(base, client.token.decimals())


@app.command("new-key")
def new_key(
    out: Annotated[Path, typer.Option("--out", help="where to write the new keystore")],
    password_file: PasswordOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Create a node (hot) key in a new keystore; prints only its address."""
    from cvm.wallet import create_keystore

    secret = password(password_file, confirm=password_file is None)
    info = create_keystore(out, secret)
    emit(
        {"address": info.address, "keystore": str(out)},
        f"node key {info.address} in {out}; it pays gas: fund it with ether before `run`",
    )


@app.command("register")
def register(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    vcpu: Annotated[int, typer.Option(min=1, help="vCPUs offered")],
    memory_mib: Annotated[int, typer.Option(min=1, help="memory offered, MiB")],
    disk_gib: Annotated[int, typer.Option(min=1, help="disk offered, GiB")],
    price: Annotated[
        str,
        typer.Option(
            help="price per vCPU-second: tokens (0.000001) or base units (1000000000000base)"
        ),
    ],
    region: Annotated[int, typer.Option(min=0, help="ISO 3166 numeric region code")] = 0,
    endpoint: Annotated[str, typer.Option(help="public endpoint of the node")] = "",
    update: Annotated[bool, typer.Option("--update", help="change a registered node")] = False,
    password_file: PasswordOpt = None,
    node_keystore: Annotated[
        Path | None,
        typer.Option(help="keystore of NODE_KEY, to sign its consent (default: settings)"),
    ] = None,
    node_password_file: Annotated[
        Path | None,
        typer.Option(help="owner-only file with the node keystore password (default: settings)"),
    ] = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Register NODE_KEY (or --update it) under the operator wallet of --keystore.

    Registering needs the node key's consent to this operator (an EIP-712 signature), so
    its keystore is unlocked too; --update does not.
    """
    from cvm.chain import NodeSpec, TeeType

    node = checksum_address(node_key, "--node-key")
    typed_price = parse_amount(price, "--price", allow_zero=True)
    client = _operator(keystore, password_file, deployment, rpc)
    price_base = base_units(typed_price, client.token.decimals(), "--price")
    spec = NodeSpec(TeeType.SEV_SNP, vcpu, memory_mib, disk_gib, region, price_base)
    consent = b"" if update else _node_consent(node, client, node_keystore, node_password_file)
    if update:
        tx = client.nodes.update(node, spec, endpoint)
    else:
        tx = client.nodes.register(node, spec, endpoint, node_key_signature=consent)
    verb = "updated" if update else "registered"
    emit(
        {"node": node, "operator": client.address, "tx": tx.tx_hash, verb: True,
         "price_per_vcpu_second": price_base},
        f"{verb} node {node} (operator {client.address}) at "
        f"{format_rate(price_base, client.token.decimals())} per vCPU in {tx.tx_hash}",
    )  # fmt: skip


def _node_consent(
    node: str, client: ChainClient, keystore: Path | None, password_file: Path | None
) -> bytes:
    """The node key's signature consenting to the client's account as its operator."""
    from cvm.chain import sign_node_consent
    from cvm.config import get_settings

    settings = get_settings()
    path = keystore or settings.node_keystore
    if path is None:
        raise UsageError("registering needs the node key: pass --node-keystore")
    node_account = unlock_keystore(
        path, password_file or settings.node_password_file, "Node keystore password"
    )
    if node_account.address != node:
        raise UsageError(f"--node-keystore holds {node_account.address}, not --node-key {node}")
    assert client.address is not None
    return sign_node_consent(node_account, client.address, client.deployment)


@app.command("stake")
def stake(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    amount: AmountArg,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Stake AMOUNT on NODE_KEY from the operator wallet (approving the registry if needed)."""
    node = checksum_address(node_key, "--node-key")
    typed = parse_amount(amount, "amount")
    client = _operator(keystore, password_file, deployment, rpc)
    value = base_units(typed, client.token.decimals(), "amount")
    registry = client.deployment.node_registry
    assert client.address is not None
    if client.token.allowance(client.address, registry) < value:
        client.token.approve(registry, value)
    tx = client.nodes.stake(node, value)
    total = client.nodes.get_node(node).stake
    emit(
        {"node": node, "staked": value, "stake": total, "tx": tx.tx_hash},
        f"staked {_tokens(client, value)} on {node}; its stake is now {_tokens(client, total)} "
        f"({tx.tx_hash})",
    )


@app.command("unstake")
def unstake(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    amount: AmountArg,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Start unbonding AMOUNT of NODE_KEY's stake; `withdraw` takes it after the delay."""
    node = checksum_address(node_key, "--node-key")
    typed = parse_amount(amount, "amount")
    client = _operator(keystore, password_file, deployment, rpc)
    value = base_units(typed, client.token.decimals(), "amount")
    tx = client.nodes.request_unstake(node, value)
    record = client.nodes.get_node(node)
    emit(
        {
            "node": node,
            "unbonding": record.unbonding,
            "unlocks_at": record.unbonding_ends_at,
            "tx": tx.tx_hash,
        },
        f"{_tokens(client, record.unbonding)} unbonding until "
        f"{format_time(record.unbonding_ends_at)} ({tx.tx_hash})",
    )


def _claim_all(client: ChainClient, node: str, lease_ids: list[int] | None) -> dict[int, int]:
    """Claim the earnings of `lease_ids` (default: every lease the node accepted) → amounts."""
    from cvm.chain import LeaseStatus

    if lease_ids is None:
        lease_ids = client.leases.leases_accepted_by(node, client.deployment.start_block)
    claimed: dict[int, int] = {}
    for lease_id in lease_ids:
        lease = client.leases.get_lease(lease_id)
        if lease.status == LeaseStatus.NONE or lease.node_key.lower() != node.lower():
            raise CliError(f"lease {lease_id} is not a lease of node {node}")
        if client.leases.claimable(lease_id) > 0:
            tx = client.leases.claim(lease_id)
            claimed[lease_id] = int(tx.event("EarningsClaimed").args["amount"])
    return claimed


@app.command("claim")
def claim(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    lease: Annotated[
        list[int] | None,
        typer.Option("--lease", min=1, help="claim this lease only (repeatable; default: all)"),
    ] = None,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Claim what NODE_KEY's leases earned, paid to the operator wallet of --keystore.

    Earnings become claimable once the lease's attestation is Verified.
    """
    node = checksum_address(node_key, "--node-key")
    client = _operator(keystore, password_file, deployment, rpc)
    claimed = _claim_all(client, node, lease)
    total = sum(claimed.values())
    emit(
        {"node": node, "claimed": total, "leases": {str(k): v for k, v in claimed.items()}},
        f"claimed {_tokens(client, total)} from {len(claimed)} lease(s) of {node}",
    )


@app.command("withdraw")
def withdraw(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    earnings: Annotated[
        bool,
        typer.Option(
            "--earnings",
            help="also claim every lease's earnings and withdraw what the market credited",
        ),
    ] = False,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Take back stake whose unbonding delay has passed (and earnings with --earnings)."""
    node = checksum_address(node_key, "--node-key")
    client = _operator(keystore, password_file, deployment, rpc)
    result: dict[str, Any] = {"node": node}
    assert client.address is not None
    record = client.nodes.get_node(node)
    if record.unbonding > 0 and client.block_timestamp() >= record.unbonding_ends_at:
        result["stake_tx"] = client.nodes.withdraw_unstaked(node).tx_hash
        result["stake_withdrawn"] = record.unbonding
    else:
        result["stake_withdrawn"] = 0
    message = f"withdrew {_tokens(client, result['stake_withdrawn'])} of stake"
    if record.unbonding > 0 and not result["stake_withdrawn"]:
        message += (
            f" ({_tokens(client, record.unbonding)} unlock {format_time(record.unbonding_ends_at)})"
        )
    if earnings:
        claimed = sum(_claim_all(client, node, None).values())
        credit = client.leases.credits(client.address)
        if credit > 0:
            result["earnings_tx"] = client.leases.withdraw().tx_hash
        result["earnings_claimed"] = claimed
        result["credit_withdrawn"] = credit
        result["earnings_withdrawn"] = claimed + credit
        message += f" and {_tokens(client, claimed + credit)} of earnings"
    emit(result, message)


@app.command("status")
def status(
    node_key: NodeKeyOpt,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """What the chain says of NODE_KEY: registration, stake, gas, and the leases it accepted."""
    from rich.table import Table

    node = checksum_address(node_key, "--node-key")
    client = _client(None, deployment, rpc)
    record = client.nodes.get_node(node)
    min_stake = client.nodes.min_stake()
    result: dict[str, Any] = {
        "node": node,
        "registered": record.registered,
        "operator": record.operator,
        "stake": record.stake,
        "min_stake": min_stake,
        "unbonding": record.unbonding,
        "unbonding_ends_at": record.unbonding_ends_at,
        "vcpu": record.vcpu,
        "memory_mib": record.memory_mib,
        "disk_gib": record.disk_gib,
        "price_per_vcpu_second": record.price_per_vcpu_second,
        "missed_attestations": record.missed_attestations,
        "gas_wei": _gas_wei(client, node),
        "leases": _node_leases(client, node),
    }

    def table() -> Table:
        rows = Table(title=f"node {node}", show_header=False)
        for key, value in result.items():
            if key in ("stake", "min_stake", "unbonding"):
                rows.add_row(key, _tokens(client, value))
            elif key == "price_per_vcpu_second":
                rows.add_row("price per vCPU", format_rate(value, client.token.decimals()))
            elif key == "unbonding_ends_at":
                rows.add_row(key, format_time(value))
            elif key == "gas_wei":
                rows.add_row(
                    "gas (ether)", f"{value / 10**18:g}" + ("  (fund it!)" if not value else "")
                )
            elif key != "leases":
                rows.add_row(key, literal(value))
        for lease in result["leases"]:
            rows.add_row(
                f"lease {lease['lease_id']}",
                literal(f"{lease['status']}, attestation {lease['attestation']}, ")
                + f"claimable {_tokens(client, lease['claimable'])}",
            )
        return rows

    emit(result, table)


def _gas_wei(client: ChainClient, address: str) -> int:
    from web3 import Web3

    return int(client.w3.eth.get_balance(Web3.to_checksum_address(address)))


def _node_leases(client: ChainClient, node: str) -> list[dict[str, Any]]:
    """Every lease the node accepted (from `LeaseAccepted`), with its status now."""
    leases = []
    for lease_id in client.leases.leases_accepted_by(node, client.deployment.start_block):
        lease = client.leases.get_lease(lease_id)
        attestation = client.attestations.attestation_of(lease_id)
        leases.append(
            {
                "lease_id": lease_id,
                "status": lease.status.name.lower(),
                "attestation": attestation.status.name.lower(),
                "vcpu": lease.vcpu,
                "memory_mib": lease.memory_mib,
                "disk_gib": lease.disk_gib,
                "claimable": client.leases.claimable(lease_id),
            }
        )
    return leases


@app.command("run")
def run(
    keystore: Annotated[Path | None, typer.Option("--keystore", help="node key keystore")] = None,
    password_file: PasswordOpt = None,
    launcher: Annotated[
        str | None, typer.Option(help="simulated, qemu or qemu-snp (default: settings)")
    ] = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
) -> None:
    """Run the node agent (a Celery worker on this node's queue, with its reconciler).

    It uses the same deployment record and chain as `register` and `stake`, checked here
    before it starts. This process becomes `python -m node_agent` (exec): the CLI never
    imports the agent. A prompted password reaches it through an inherited pipe, never
    argv or environment.
    """
    from cvm.chain import resolve_rpc_url
    from cvm.config import get_settings
    from cvm.wallet import PASSWORD_FD_ENV, load_account, read_password_file

    settings = get_settings()
    env = dict(os.environ)
    path = keystore or settings.node_keystore
    if path is None:
        raise UsageError("no node keystore: pass --keystore or set CVM_NODE_KEYSTORE")
    record_file = (deployment or settings.deployment_file).absolute()
    record = load_deployment(record_file)
    client = _client(None, record_file, rpc)  # the agent starts only on a chain that answers
    env["CVM_DEPLOYMENT_FILE"] = str(record_file)
    env["CVM_RPC_URL"] = resolve_rpc_url(rpc, record, settings)
    env["CVM_DATA_DIR"] = str(settings.data_dir)
    # The record names its backend and broker (a `cvm up` stack does); settings set win,
    # from the environment or the operator's CVM_SETTINGS_FILE (model_fields_set has both).
    given = settings.model_fields_set
    if "api_url" not in given and record.api_url:
        env["CVM_API_URL"] = record.api_url
    if "broker_url" not in given and record.extra.get("broker_url"):
        env["CVM_BROKER_URL"] = str(record.extra["broker_url"])
    env["CVM_NODE_KEYSTORE"] = str(path.absolute())
    if launcher is not None:
        env["CVM_NODE_LAUNCHER"] = launcher
    demo = record.extra.get("demo_measurement")
    if (
        demo
        and not settings.node_measurements
        and (launcher or settings.node_launcher) == "simulated"
    ):
        # A local stack's simulated node serves its demo image unless told otherwise.
        env["CVM_NODE_MEASUREMENTS"] = str(demo)
    password_source = password_file or settings.node_password_file
    if password_source is not None:
        secret = read_password_file(password_source)  # fail here, clearly, not in the worker
        env["CVM_NODE_PASSWORD_FILE"] = str(password_source.absolute())
        env.pop(PASSWORD_FD_ENV, None)
    else:
        secret = password(None, label="Node keystore password")
        read_end, write_end = os.pipe()
        os.write(write_end, secret.encode() + b"\n")
        os.close(write_end)
        os.set_inheritable(read_end, True)
        env.pop("CVM_NODE_PASSWORD_FILE", None)
        env[PASSWORD_FD_ENV] = str(read_end)
    node = load_account(path, secret)  # a wrong password is told now
    if _gas_wei(client, node.address) == 0:
        raise CliError(
            f"the node key {node.address} has no ether for gas: send it some "
            "(`cvm wallet fund ADDRESS --tokens 0` on a local stack)"
        )
    os.execve(sys.executable, [sys.executable, "-m", "node_agent"], env)  # noqa: S606


@app.command("doctor")
def doctor(
    disk_gib: Annotated[
        int | None,
        typer.Option(
            "--disk-gib", min=1, help="disk the node offers (default: CVM_NODE_CAPACITY_DISK_GIB)"
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """What this host lacks to run real SEV-SNP guests: one line per check, with the fix.

    Looks at kvm_amd and its sev_snp parameter, /dev/kvm, /dev/sev, the SEV-SNP firmware
    version (from the kernel log, when readable), QEMU's sev-snp-guest, an AmdSev OVMF and
    the free space under CVM_DATA_DIR against the disk the node offers. Changes nothing.
    Exit 0: real SEV-SNP guests can run here (warnings aside); 1: at least one check failed.
    """
    from cvm.config import get_settings
    from cvm.node_doctor import HostView, diagnose, ready_for_snp

    settings = get_settings()
    view = HostView(
        qemu_binary=settings.node_qemu_binary,
        ovmf=settings.image_ovmf,
        data_dir=settings.data_dir,
        disk_capacity_gib=disk_gib or settings.node_capacity_disk_gib,
    )
    checks = diagnose(view)
    ready = ready_for_snp(checks)

    if json_output:
        emit({"ready": ready, "checks": [check.as_dict() for check in checks]})
    else:
        from cvm.cli.plumbing import out

        marks = {
            "ok": "[green]ok  [/green]",
            "warn": "[yellow]warn[/yellow]",
            "fail": "[red]FAIL[/red]",
        }
        for check in checks:
            line = f"{marks[check.status]} {literal(check.name)}: {literal(check.found)}"
            if check.fix and check.status != "ok":
                line += f"; fix: {literal(check.fix)}"
            out().print(line, soft_wrap=True, highlight=False)
        out().print(
            "this host can run SEV-SNP guests (launcher qemu-snp)"
            if ready
            else "this host cannot run real SEV-SNP guests yet: fix the FAIL lines"
            " (the qemu and simulated launchers work without them)",
            soft_wrap=True,
        )
    if not ready:
        raise typer.Exit(1)
