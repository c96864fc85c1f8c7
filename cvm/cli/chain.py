"""`cvm chain deploy`: deploy the cvm contracts to any RPC and write the deployment record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Deploy the cvm contracts.", no_args_is_help=True)
_err = Console(stderr=True)


@app.command("deploy")
def deploy_command(
    rpc: Annotated[str, typer.Option(help="JSON-RPC endpoint of the chain")],
    keystore: Annotated[Path, typer.Option(help="keystore of the deployer (becomes the owner)")],
    out: Annotated[Path, typer.Option(help="where to write the deployment record")],
    password_file: Annotated[
        Path | None, typer.Option(help="owner-only file with the keystore password")
    ] = None,
    verifier: Annotated[
        list[str] | None, typer.Option(help="verifier address allowed to confirm (repeatable)")
    ] = None,
    quorum: Annotated[int, typer.Option(min=1, help="verifier confirmations needed")] = 1,
    token: Annotated[
        str | None,
        typer.Option(help="existing ERC-20 (with EIP-2612 permit); default deploys a TestToken"),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False,
) -> None:
    """Deploy token (unless --token), NodeRegistry, LeaseMarket, AttestationRegistry, example."""
    # Imported here: web3 takes a second to import and `cvm --help` should not wait for it.
    from web3 import Web3

    from cvm.chain import ChainError, DeployConfig, deploy, open_web3
    from cvm.wallet import WalletError, load_account, resolve_password

    verifiers = verifier or []
    for address in [*verifiers, *([token] if token else [])]:
        if not Web3.is_address(address):
            _err.print(f"[red]error:[/] not an address: {address}")
            raise typer.Exit(2)
    if quorum > max(len(verifiers), 1):
        _err.print(f"[red]error:[/] quorum {quorum} exceeds the {len(verifiers)} verifiers given")
        raise typer.Exit(2)
    try:
        password = resolve_password(password_file, lambda text: typer.prompt(text, hide_input=True))
        account = load_account(keystore, password)
        w3 = open_web3(rpc)
        if not w3.is_connected():
            _err.print(f"[red]error:[/] no JSON-RPC endpoint answers at {rpc}")
            raise typer.Exit(1)
        config = DeployConfig(
            token=Web3.to_checksum_address(token) if token else None,
            quorum=quorum,
            verifiers=[Web3.to_checksum_address(v) for v in verifiers],
        )
        deployment = deploy(w3, account, config, rpc_url=rpc)
    except (WalletError, ChainError) as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    deployment.save(out)
    if json_output:
        typer.echo(deployment.to_json())
    else:
        Console().print(f"deployed on chain {deployment.chain_id}; record written to {out}")
        for name, address in json.loads(deployment.to_json()).items():
            Console().print(f"  {name}: {address}")
