"""`python -m keyservice` as an operator runs it, on a real anvil with the real KeyService:
`init` makes the keys, `register --stake` stakes and registers them, and `run` (a separate
process, trusting the simulated AMD-SP as the dev stack does) takes its deposit from an HTTP
backend, checking each request's holder signature the way the backend does, and posts its
share for the guest right after the verifier's confirm.

The backend here is a stand-in serving the routes of INTERFACES 4 (its real routes are branch
i-backendkeys'), checking signatures with cvm.holder_requests (same branch); the chain part
needs KeyService and `chain.keys` (branch i-contracts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException, Request, Response
from typer.testing import CliRunner

from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.eip712 import Domain, SignatureError
from keyservice.cli import app as keyservice_cli
from keyservice.keys import HolderKeys
from tests.fixtures.chain import MEASUREMENT
from tests.fixtures.processes import serving, stop_process, wait_for
from tests.integration.keyservice.test_holders_on_chain import (
    Backend,
    attest_and_confirm,
    deposits,
    manifest_for,
)

pytestmark = pytest.mark.integration


def stand_in_backend(domain: Domain, backend: Backend, holder: str) -> FastAPI:
    api = FastAPI()
    used: set[tuple[str, str]] = set()

    async def check(request: Request) -> None:
        from cvm.holder_requests import verify_holder_request  # type: ignore[import-not-found]

        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = request.headers
        try:
            signed = verify_holder_request(
                headers.get("X-CVM-Holder"), headers.get("X-CVM-Timestamp"),
                headers.get("X-CVM-Nonce"), headers.get("X-CVM-Signature"),
                method=request.method, path=path, body=await request.body(), domain=domain,
                now=int(time.time()), window_s=60,
            )  # fmt: skip
        except SignatureError as exc:
            raise HTTPException(401, str(exc)) from None
        if signed.holder.lower() != holder.lower():
            raise HTTPException(403, "not this holder")
        if (signed.holder, str(signed.nonce)) in used:
            raise HTTPException(409, "replayed nonce")
        used.add((signed.holder, str(signed.nonce)))

    @api.get("/v1/keyholders/{address}/shares")
    async def shares(address: str, after: int, request: Request) -> Any:
        await check(request)
        return backend.shares(after)

    @api.get("/v1/keyholders/{address}/epochs")
    async def epochs(address: str, after: int, request: Request) -> Any:
        await check(request)
        return []

    @api.get("/v1/evidence/{report_hash}")
    async def evidence(report_hash: str) -> Response:
        raw = backend.evidence_by_hash.get(bytes.fromhex(report_hash.removeprefix("0x")))
        if raw is None:
            raise HTTPException(404, "no such evidence")
        return Response(raw, media_type="application/octet-stream")

    @api.post("/v1/leases/{lease_id}/key-releases", status_code=201)
    async def release(lease_id: int, request: Request) -> Any:
        await check(request)
        backend.post_release(lease_id, json.loads(await request.body()))
        return {"ok": True}

    return api


def test_init_register_and_run_release_a_share_to_a_verified_guest(chain, anvil, tmp_path):
    client = chain.client()
    assert getattr(client, "keys", None) is not None, (
        "no KeyService in this deployment: this test needs the KeyService contract and its"
        " bindings (chain.keys, branch i-contracts)"
    )
    from cvm.chain import KeyPolicy as ChainKeyPolicy  # type: ignore[attr-defined]

    deployment_file = tmp_path / "deployment.json"
    chain.deployment.save(deployment_file)
    runner = CliRunner()
    holders: list[HolderKeys] = []
    for i in range(3):
        key_file = tmp_path / f"holder{i}.json"
        assert runner.invoke(keyservice_cli, ["init", "--key-file", str(key_file)]).exit_code == 0
        keys = HolderKeys.load(key_file)
        anvil.set_balance(keys.address, 10**20)
        minimum = client.keys.min_holder_stake()  # type: ignore[attr-defined]
        chain.client(keys.account).token.mint(keys.address, minimum)
        registered = runner.invoke(keyservice_cli, [
            "register", "--key-file", str(key_file), "--stake", f"{minimum}base",
            "--deployment", str(deployment_file), "--rpc", anvil.rpc_url, "--json",
        ])  # fmt: skip
        assert registered.exit_code == 0, registered.output
        info = client.keys.holder_of(keys.address)  # type: ignore[attr-defined]
        assert info.registered and info.key == keys.x25519_public and info.stake == minimum
        holders.append(keys)

    lease_id = chain.active_lease()
    manifest = manifest_for(chain, lease_id, holders)
    deployment = chain.deployment
    digest = manifest.manifest_hash(deployment.chain_id, deployment.attestation_registry)
    chain.renter.keys.set_key_policy(  # type: ignore[attr-defined]
        lease_id,
        ChainKeyPolicy(
            measurements=(MEASUREMENT,), failover=True, threshold=2, holders=manifest.holders,
            key_version=1, manifest_hash=digest,
        ),
    )  # fmt: skip
    backend = Backend(deposits=[deposits(chain, manifest, holders)[0]])
    sim_dir = tmp_path / "sim-amd"
    chip = SimulatedSecureProcessor("Milan", amd=SimulatedAmd(sim_dir))
    domain = Domain(chain_id=deployment.chain_id, node_registry=deployment.node_registry)
    data_dir = tmp_path / "data"
    with serving(stand_in_backend(domain, backend, holders[0].address)) as url:
        env = os.environ | {"PYTHONPATH": str(Path.cwd()), "CVM_DATA_DIR": str(tmp_path / "cvm")}
        process = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "run",
             "--key-file", str(tmp_path / "holder0.json"),
             "--backend", url, "--rpc", anvil.rpc_url, "--deployment", str(deployment_file),
             "--data-dir", str(data_dir), "--trust-simulated", "--sim-amd-dir", str(sim_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            store = data_dir / "holder.sqlite3"
            wait_for(lambda: store.exists() and os.stat(store).st_size > 0, timeout=60,
                     what="the holder's store")  # fmt: skip
            wait_for(lambda: _has_share(store, lease_id), timeout=60, what="the deposit kept")
            _, _, confirmed_at = attest_and_confirm(chain, lease_id, chip, [backend])
            wait_for(lambda: backend.posted, timeout=30, what="the release")
        finally:
            stop_process(process)
        output = process.stdout.read() if process.stdout else ""
    ((posted_lease, release, posted_at),) = backend.posted
    assert posted_lease == lease_id and release["holder"] == holders[0].address
    delay_ms = (posted_at - confirmed_at) * 1000
    print(f"keyservice run: confirm mined -> release received {delay_ms:.0f} ms")
    assert "Traceback" not in output
    assert oct(os.stat(data_dir / "holder.sqlite3").st_mode & 0o777) == "0o600"


def _has_share(store: Path, lease_id: int) -> bool:
    import sqlite3

    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        try:
            row = db.execute("SELECT 1 FROM shares WHERE lease_id = ?", (str(lease_id),))
        except sqlite3.OperationalError:
            return False
        return row.fetchone() is not None
