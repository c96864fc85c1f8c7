"""`cvm chain deploy`: deploy the cvm contracts to any RPC and write the deployment record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cvm.cli.plumbing import CliError, JsonOption, checksum_address, emit, unlock_keystore

app = typer.Typer(help="Deploy the cvm contracts.", no_args_is_help=True)


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
    verifier_stake: Annotated[
        int,
        typer.Option(
            min=0, help="base units the deployer stakes for each verifier (votes need it)"
        ),
    ] = 10**18,
    json_output: JsonOption = False,
) -> None:
    """Deploy token (unless --token), NodeRegistry, LeaseMarket, AttestationRegistry, example,
    AttestationCourt (verifier stake and disputes; the deployer stakes for each verifier)."""
    from cvm.chain import DeployConfig, deploy, open_web3
    from cvm.cli.plumbing import UsageError

    verifiers = [checksum_address(v, "--verifier") for v in verifier or []]
    chosen_token = checksum_address(token, "--token") if token else None
    if quorum > max(len(verifiers), 1):
        raise UsageError(f"quorum {quorum} exceeds the {len(verifiers)} verifiers given")
    account = unlock_keystore(keystore, password_file)
    w3 = open_web3(rpc)
    if not w3.is_connected():
        raise CliError(f"no JSON-RPC endpoint answers at {rpc}")
    config = DeployConfig(
        token=chosen_token,
        quorum=quorum,
        verifiers=verifiers,
        verifier_stake=verifier_stake,
    )
    deployment = deploy(w3, account, config, rpc_url=rpc)
    out.parent.mkdir(parents=True, exist_ok=True)
    deployment.save(out)
    lines = [f"deployed on chain {deployment.chain_id}; record written to {out}"]
    lines += [f"  {name}: {address}" for name, address in json.loads(deployment.to_json()).items()]
    emit(json.loads(deployment.to_json()), "\n".join(lines))
