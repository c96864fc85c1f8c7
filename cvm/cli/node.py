"""`cvm node ...`: the operator's commands: keys, register, stake, unstake, withdraw, status, run.

Two keys: the operator's wallet (cold) registers and stakes; the node key (hot) is what
the agent runs with. Both live in keystores; passwords come from a prompt or an
owner-only `--password-file`, never from the command line. Amounts are in whole tokens
(decimals allowed) unless `--base-units` is given.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from web3 import Web3

from cvm.chain import (
    ChainClient,
    ChainError,
    Deployment,
    NodeSpec,
    TeeType,
    connect,
    sign_node_consent,
)
from cvm.config import get_settings
from cvm.wallet import (
    PASSWORD_FD_ENV,
    WalletError,
    create_keystore,
    load_account,
    read_password_file,
    resolve_password,
)

app = typer.Typer(help="Run a node: keys, registration, stake, the agent.", no_args_is_help=True)
_err = Console(stderr=True)

KeystoreOpt = Annotated[Path, typer.Option("--keystore", help="keystore file of the signing key")]
PasswordOpt = Annotated[
    Path | None, typer.Option("--password-file", help="owner-only file with the password")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
DeploymentOpt = Annotated[
    Path | None, typer.Option("--deployment", help="deployment record (default: settings)")
]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="JSON-RPC endpoint (default: settings)")]
NodeKeyOpt = Annotated[str, typer.Option("--node-key", help="address of the node (hot) key")]
BaseUnitsOpt = Annotated[
    bool, typer.Option("--base-units", help="AMOUNT is in the token's smallest unit")
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


def _prompt(text: str) -> str:
    return str(typer.prompt(text, hide_input=True))


def _account(keystore: Path, password_file: Path | None) -> LocalAccount:
    try:
        return load_account(keystore, resolve_password(password_file, _prompt))
    except WalletError as exc:
        raise _fail(str(exc)) from None


def _client(
    account: LocalAccount | None, deployment_file: Path | None, rpc: str | None
) -> ChainClient:
    settings = get_settings()
    try:
        deployment = Deployment.load(deployment_file or settings.deployment_file)
    except ChainError as exc:
        raise _fail(str(exc)) from None
    try:
        return connect(deployment, account, rpc_url=rpc, settings=settings)
    except ChainError as exc:
        raise _fail(str(exc)) from None


def _address(value: str, what: str) -> str:
    if not Web3.is_address(value):
        raise _fail(f"{what} is not an address: {value}", 2)
    return str(Web3.to_checksum_address(value))


def _amount(client: ChainClient, text: str, base_units: bool) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _fail(f"not an amount: {text}", 2) from None
    scaled = value if base_units else value * (Decimal(10) ** client.token.decimals())
    if scaled <= 0 or scaled != scaled.to_integral_value():
        raise _fail(f"amount must be positive and whole in base units: {text}", 2)
    return int(scaled)


def _emit(result: dict[str, Any], as_json: bool, message: str) -> None:
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, default=str))
    else:
        Console().print(message)


@app.command("new-key")
def new_key(
    out: Annotated[Path, typer.Option("--out", help="where to write the new keystore")],
    password_file: PasswordOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Create a node (hot) key in a new keystore; prints only its address."""
    try:
        password = resolve_password(password_file, _prompt, confirm=password_file is None)
        info = create_keystore(out, password)
    except WalletError as exc:
        raise _fail(str(exc)) from None
    _emit({"address": info.address, "keystore": str(out)}, json_output, f"node key {info.address}")


@app.command("register")
def register(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    vcpu: Annotated[int, typer.Option(min=1, help="vCPUs offered")],
    memory_mib: Annotated[int, typer.Option(min=1, help="memory offered, MiB")],
    disk_gib: Annotated[int, typer.Option(min=1, help="disk offered, GiB")],
    price: Annotated[int, typer.Option(min=0, help="price per second per unit, base units")],
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
    node = _address(node_key, "--node-key")
    client = _client(_account(keystore, password_file), deployment, rpc)
    spec = NodeSpec(TeeType.SEV_SNP, vcpu, memory_mib, disk_gib, region, price)
    consent = b"" if update else _node_consent(node, client, node_keystore, node_password_file)
    try:
        if update:
            tx = client.nodes.update(node, spec, endpoint)
        else:
            tx = client.nodes.register(node, spec, endpoint, node_key_signature=consent)
    except (ChainError, OSError) as exc:
        raise _fail(str(exc)) from None
    verb = "updated" if update else "registered"
    _emit(
        {"node": node, "operator": client.address, "tx": tx.tx_hash, verb: True},
        json_output,
        f"{verb} node {node} (operator {client.address}) in {tx.tx_hash}",
    )


def _node_consent(
    node: str, client: ChainClient, keystore: Path | None, password_file: Path | None
) -> bytes:
    """The node key's signature consenting to the client's account as its operator."""
    settings = get_settings()
    path = keystore or settings.node_keystore
    if path is None:
        raise _fail("registering needs the node key: pass --node-keystore", 2)
    password_source = password_file or settings.node_password_file
    try:
        password = resolve_password(password_source, lambda _: _prompt("Node keystore password"))
        node_account = load_account(path, password)
    except WalletError as exc:
        raise _fail(str(exc)) from None
    if node_account.address != node:
        raise _fail(f"--node-keystore holds {node_account.address}, not --node-key {node}", 2)
    assert client.address is not None
    return sign_node_consent(node_account, client.address, client.deployment)


@app.command("stake")
def stake(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    amount: Annotated[str, typer.Argument(help="tokens to stake")],
    base_units: BaseUnitsOpt = False,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Stake AMOUNT on NODE_KEY from the operator wallet (approving the registry if needed)."""
    node = _address(node_key, "--node-key")
    client = _client(_account(keystore, password_file), deployment, rpc)
    value = _amount(client, amount, base_units)
    registry = client.deployment.node_registry
    try:
        assert client.address is not None
        if client.token.allowance(client.address, registry) < value:
            client.token.approve(registry, value)
        tx = client.nodes.stake(node, value)
        total = client.nodes.get_node(node).stake
    except (ChainError, OSError) as exc:
        raise _fail(str(exc)) from None
    _emit(
        {"node": node, "staked": value, "stake": total, "tx": tx.tx_hash},
        json_output,
        f"staked {value} on {node}; stake is now {total} ({tx.tx_hash})",
    )


@app.command("unstake")
def unstake(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    amount: Annotated[str, typer.Argument(help="tokens to move into unbonding")],
    base_units: BaseUnitsOpt = False,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Start unbonding AMOUNT of NODE_KEY's stake; `withdraw` takes it after the delay."""
    node = _address(node_key, "--node-key")
    client = _client(_account(keystore, password_file), deployment, rpc)
    value = _amount(client, amount, base_units)
    try:
        tx = client.nodes.request_unstake(node, value)
        record = client.nodes.get_node(node)
    except (ChainError, OSError) as exc:
        raise _fail(str(exc)) from None
    _emit(
        {
            "node": node,
            "unbonding": record.unbonding,
            "unlocks_at": record.unbonding_ends_at,
            "tx": tx.tx_hash,
        },
        json_output,
        f"{record.unbonding} unbonding until {record.unbonding_ends_at} ({tx.tx_hash})",
    )


@app.command("withdraw")
def withdraw(
    keystore: KeystoreOpt,
    node_key: NodeKeyOpt,
    earnings: Annotated[
        bool, typer.Option("--earnings", help="also withdraw tokens the market credited")
    ] = False,
    password_file: PasswordOpt = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Take back stake whose unbonding delay has passed (and market credits with --earnings)."""
    node = _address(node_key, "--node-key")
    client = _client(_account(keystore, password_file), deployment, rpc)
    result: dict[str, Any] = {"node": node}
    try:
        assert client.address is not None
        record = client.nodes.get_node(node)
        if record.unbonding > 0 and client.block_timestamp() >= record.unbonding_ends_at:
            result["stake_tx"] = client.nodes.withdraw_unstaked(node).tx_hash
            result["stake_withdrawn"] = record.unbonding
        else:
            result["stake_withdrawn"] = 0
        if earnings:
            credit = client.leases.credits(client.address)
            result["earnings_withdrawn"] = credit
            if credit > 0:
                result["earnings_tx"] = client.leases.withdraw().tx_hash
    except (ChainError, OSError) as exc:
        raise _fail(str(exc)) from None
    message = f"withdrew {result['stake_withdrawn']} of stake"
    if earnings:
        message += f" and {result['earnings_withdrawn']} of earnings"
    _emit(result, json_output, message)


@app.command("status")
def status(
    node_key: NodeKeyOpt,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """What the chain says of NODE_KEY: registration, stake, and the leases it accepted."""
    node = _address(node_key, "--node-key")
    client = _client(None, deployment, rpc)
    try:
        record = client.nodes.get_node(node)
        min_stake = client.nodes.min_stake()
    except (ChainError, OSError) as exc:
        raise _fail(str(exc)) from None
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
    }
    try:
        result["leases"] = _node_leases(client, node)
    except (ChainError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if json_output:
        typer.echo(json.dumps(result, sort_keys=True, default=str))
        return
    table = Table(title=f"node {node}", show_header=False)
    for key, value in result.items():
        if key != "leases":
            table.add_row(key, str(value))
    Console().print(table)
    for lease in result["leases"]:
        Console().print(
            f"  lease {lease['lease_id']}: {lease['status']}, attestation {lease['attestation']}"
        )


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
) -> None:
    """Run the node agent (a Celery worker on this node's queue, with its reconciler).

    This process becomes `python -m node_agent` (exec): the CLI never imports the agent.
    A prompted password reaches it through an inherited pipe, never argv or environment.
    """
    settings = get_settings()
    env = dict(os.environ)
    path = keystore or settings.node_keystore
    if path is None:
        raise _fail("no node keystore: pass --keystore or set CVM_NODE_KEYSTORE", 2)
    env["CVM_NODE_KEYSTORE"] = str(path.resolve())
    if launcher is not None:
        env["CVM_NODE_LAUNCHER"] = launcher
    password_source = password_file or settings.node_password_file
    try:
        if password_source is not None:
            read_password_file(password_source)  # fail here, clearly, not in the worker
            env["CVM_NODE_PASSWORD_FILE"] = str(password_source.resolve())
        else:
            password = resolve_password(None, _prompt)
            load_account(path, password)  # a wrong password is told now
            read_end, write_end = os.pipe()
            os.write(write_end, password.encode() + b"\n")
            os.close(write_end)
            os.set_inheritable(read_end, True)
            env.pop("CVM_NODE_PASSWORD_FILE", None)
            env[PASSWORD_FD_ENV] = str(read_end)
    except WalletError as exc:
        raise _fail(str(exc)) from None
    os.execve(sys.executable, [sys.executable, "-m", "node_agent"], env)  # noqa: S606
