"""`python -m keyservice`: make a holder's keys, register and stake it, run it.

The same edge as `cvm` (cvm.cli.plumbing): --json, one error line and no traceback, exit 1
for a refusal and 2 for a usage error.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from cvm.cli.plumbing import (
    CliError,
    DeploymentOption,
    JsonOption,
    RpcOption,
    emit,
    err,
    new_app,
    register_layer_error,
)

register_layer_error("keyservice.keys", "KeyFileError")

app = new_app("A key holder of cvm: one share of each lease's key, released to attested guests.")

KeyFileOption = Annotated[
    Path, typer.Option("--key-file", help="The holder's key file (JSON, mode 0600).")
]


@app.command("init")
def init_command(key_file: KeyFileOption, json_output: JsonOption = False) -> None:
    """Make the holder's keys (an Ethereum account and an X25519 key) in a new 0600 file."""
    from keyservice.keys import HolderKeys

    keys = HolderKeys.generate()
    keys.save_new(key_file)
    data = {"address": keys.address, "x25519_public": "0x" + keys.x25519_public.hex(),
            "key_file": str(key_file)}  # fmt: skip
    emit(data, f"holder {keys.address} (X25519 0x{keys.x25519_public.hex()}) in {key_file}")


@app.command("show")
def show_command(key_file: KeyFileOption, json_output: JsonOption = False) -> None:
    """The holder's address and X25519 public key."""
    from keyservice.keys import HolderKeys

    keys = HolderKeys.load(key_file)
    data = {"address": keys.address, "x25519_public": "0x" + keys.x25519_public.hex()}
    emit(data, f"holder {keys.address} (X25519 0x{keys.x25519_public.hex()})")


@app.command("register")
def register_command(
    key_file: KeyFileOption,
    stake: Annotated[str, typer.Option(help="Tokens to stake (12.5) or base units (1000base).")],
    deployment: DeploymentOption = None,
    rpc: RpcOption = None,
    json_output: JsonOption = False,
) -> None:
    """Register the holder on chain (KeyService.registerHolder with its X25519 key) and stake."""
    from cvm.cli.plumbing import base_units, connect_chain, load_deployment, parse_amount
    from keyservice.keys import HolderKeys

    amount = parse_amount(stake, "--stake", allow_zero=True)
    keys = HolderKeys.load(key_file)
    record = load_deployment(deployment)
    key_service = getattr(record, "key_service", None)
    if not key_service:
        raise CliError("the deployment record has no key_service: this deployment has no holders")
    chain = connect_chain(record, keys.account, rpc)
    keyring = getattr(chain, "keys", None)
    if keyring is None:
        raise CliError("this cvm has no KeyService bindings (chain.keys)")
    base = base_units(amount, chain.token.decimals(), "--stake")
    if base:  # the stake first: registering needs the minimum stake active
        chain.token.approve(key_service, base)
        keyring.stake_holder(base)
    info = keyring.holder_of(keys.address)
    if not info.registered:
        keyring.register_holder(keys.x25519_public)
    elif info.key != keys.x25519_public:
        raise CliError(f"{keys.address} is registered with another X25519 key than this file's")
    info = keyring.holder_of(keys.address)
    data = {"address": keys.address, "x25519_public": "0x" + keys.x25519_public.hex(),
            "stake": int(info.stake)}  # fmt: skip
    emit(data, f"holder {keys.address} registered; stake {data['stake']} base units")


@app.command("run")
def run_command(
    key_file: KeyFileOption,
    backend: Annotated[str, typer.Option("--backend", help="The backend's URL.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the holder keeps shares.")],
    deployment: DeploymentOption = None,
    rpc: RpcOption = None,
    trust_simulated: Annotated[
        bool,
        typer.Option(
            "--trust-simulated",
            help="Also trust the simulated AMD-SP of a local stack (tests and demos only).",
        ),
    ] = False,
    sim_amd_dir: Annotated[
        Path | None,
        typer.Option(help="The simulated AMD roots (default: CVM_SIM_AMD_DIR's)."),
    ] = None,
    poll_s: Annotated[float, typer.Option(min=0.05, max=10.0, help="Chain poll interval.")] = 0.2,
    max_leases: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10_000,
) -> None:
    """Run the holder until SIGTERM/SIGINT: take deposits, release shares, follow epochs."""
    from cvm.api_client import ApiClient
    from cvm.cli.plumbing import connect_chain, load_deployment
    from cvm.eip712 import Domain
    from cvm.secret_release import trusted_roots
    from keyservice.backend import ApiBackend
    from keyservice.chain_view import ChainView
    from keyservice.holder import Holder
    from keyservice.keys import HolderKeys
    from keyservice.service import Service
    from keyservice.store import Store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s keyservice %(message)s")
    # httpx logs every request at INFO: one line per poll, about every second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    keys = HolderKeys.load(key_file)
    record = load_deployment(deployment)
    chain = connect_chain(record, None, rpc)
    if getattr(chain, "keys", None) is None:
        raise CliError("the deployment record has no KeyService: nothing to hold")
    roots = None
    if trust_simulated:
        if sim_amd_dir is None:
            from cvm.config import get_settings

            sim_amd_dir = get_settings().sim_amd_dir
        roots = trusted_roots(True, sim_amd_dir)
    domain = Domain(chain_id=record.chain_id, node_registry=record.node_registry)
    # Its largest answer is a page of deposits (500 of ~2 KiB): no reason to read 16 MiB.
    api = ApiClient(backend, max_response_bytes=4 * 1024 * 1024)
    holder = Holder(
        keys, ChainView(chain), ApiBackend(api, bytes(keys.account.key), domain),
        Store(data_dir), roots=roots, max_leases=max_leases,
    )  # fmt: skip
    service = Service(holder, poll_s=poll_s)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    err().print(f"holder {keys.address} running (data in {data_dir})", highlight=False)
    service.run(stop)
    api.close()


def main() -> None:
    app()
