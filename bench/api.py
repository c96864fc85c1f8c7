"""API throughput: the attestation-status endpoint beside a bare FastAPI endpoint.

`python -m bench.api --json` stores 1,000 attested leases (with full verification results)
in a SQLite store, then serves, each in its own uvicorn process (one worker), the cvm app
and a bare FastAPI app whose only endpoint returns a constant JSON object. The same load
generator drives both: 64 concurrent keep-alive connections, random lease ids for the
status endpoint, in alternating one-second rounds so that both servers see the same
background load. The status endpoint runs as deployed (answers cached for
`CVM_API_ATTESTATION_CACHE_S` = 1 s) and with the cache off, every request a query. It
prints one JSON object with requests per second and p50/p99 latency for each, the ratios,
and whether the target (at least half the bare rate) is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.harness import free_port

CONNECTIONS = 64
LEASES = 1_000


def seed_store(url: str) -> None:
    from backend.store import Attestation, Lease, Store, Verification
    from cvm.api_models import AttestationState, LeaseState

    store = Store(url)
    now = datetime.now(UTC)
    node = "0x" + "01" * 20
    with store.session() as session:
        session.execute(
            insert(Lease),
            [
                {
                    "id": i,
                    "renter": "0x" + "02" * 20,
                    "node": node,
                    "status": LeaseState.ACTIVE,
                    "tee_type": 1,
                    "vcpus": 4,
                    "memory_mib": 8192,
                    "disk_gib": 40,
                    "min_node_stake": 0,
                    "max_rate_per_second": 10**12,
                    "rate_per_second": 10**12,
                    "deposit": 10**19,
                    "spec_hash": "0x" + "c0" * 32,
                    "expected_measurement": "0x" + "5a" * 48,
                    "reattest_interval": 3600,
                    "attestation_nonce": 1,
                    "created_block": 1,
                }
                for i in range(LEASES)
            ],
        )
        session.execute(
            insert(Attestation),
            [
                {
                    "lease_id": i,
                    "node": node,
                    "status": AttestationState.VERIFIED,
                    "report_hash": f"0x{i:064x}",
                    "measurement": "0x" + "5a" * 48,
                    "nonce": 0,
                    "submitted_block": 2,
                    "submitted_at": int(now.timestamp()),
                    "verified_at": int(now.timestamp()),
                    "expires_at": int(now.timestamp()) + 86_400,
                }
                for i in range(LEASES)
            ],
        )
        session.execute(
            insert(Verification),
            [
                {
                    "lease_id": i,
                    "report_hash": f"0x{i:064x}",
                    "evidence_hash": f"0x{i + 1:064x}",
                    "ok": True,
                    "reason_codes": [],
                    "detail": {"product": "Milan", "measurement": "0x" + "5a" * 48},
                    "checked_at": now,
                    "confirm_tx": f"0x{i + 2:064x}",
                }
                for i in range(LEASES)
            ],
        )
    store.close()


def serve(kind: str, port: int, database_url: str) -> None:
    """Run one server (called in the child process); `status*` read the cache TTL from env."""
    import uvicorn
    from fastapi import FastAPI

    if kind == "bare":
        app = FastAPI()

        @app.get("/bare")
        async def bare() -> dict[str, str]:
            return {"status": "ok"}

    else:
        from backend.api import create_app
        from backend.api.deps import AppContext
        from backend.store import Store
        from cvm.api_models import ChainInfo
        from cvm.config import Settings

        context = AppContext(
            # One load generator is one client: measure the API, not its per-client limit.
            settings=Settings(database_url=database_url, rate_limit_per_client=0),
            store=Store(database_url, migrate_schema=False),
            chain=ChainInfo(
                chain_id=31337,
                node_registry="0x" + "11" * 20,
                lease_market="0x" + "22" * 20,
                attestation_registry="0x" + "33" * 20,
            ),
        )
        app = create_app(context)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _connection(
    port: int, paths: list[str], stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random(port)
    try:
        while time.perf_counter() < stop_at:
            path = paths[rng.randrange(len(paths))]
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()


async def _load(port: int, paths: list[str], seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_connection(port, paths, stop_at, latencies, errors) for _ in range(CONNECTIONS))
    )
    return {
        "latencies": latencies,
        "errors": len(errors),
        "elapsed": time.perf_counter() - started,
    }


def _start_server(kind: str, database_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "CVM_BENCH_DATABASE_URL": database_url}
    if kind == "status_uncached":
        env["CVM_API_ATTESTATION_CACHE_S"] = "0"
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "--serve", kind, "--port", str(port)], env=env
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return child, port
        except OSError:
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                raise RuntimeError(f"{kind} server did not start") from None
            time.sleep(0.05)


def _combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for r in rounds for x in r["latencies"])
    elapsed = sum(r["elapsed"] for r in rounds)
    return {
        "requests": len(latencies),
        "errors": sum(r["errors"] for r in rounds),
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1e3, 3),
    }


def _measure(database_url: str, seconds: float, rounds: int) -> dict[str, dict[str, Any]]:
    """Both servers up at once; alternate short load rounds so both see the same machine."""
    status_paths = [f"/v1/leases/{i}/attestation" for i in range(LEASES)]
    kinds = ("status", "status_uncached", "bare")
    servers = {kind: _start_server(kind, database_url) for kind in kinds}
    try:
        paths = {"status": status_paths, "status_uncached": status_paths, "bare": ["/bare"]}
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for kind in kinds:  # warm-up, not measured
            asyncio.run(_load(servers[kind][1], paths[kind], 0.5))
        for _ in range(rounds):
            for kind in kinds:
                results[kind].append(asyncio.run(_load(servers[kind][1], paths[kind], seconds)))
        return {kind: _combine(r) for kind, r in results.items()}
    finally:
        for child, _port in servers.values():
            child.terminate()
            child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per endpoint")
    parser.add_argument(
        "--serve", choices=["bare", "status", "status_uncached"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, os.environ["CVM_BENCH_DATABASE_URL"])
        return
    with tempfile.TemporaryDirectory(prefix="cvm-bench-api-") as workdir:
        url = f"sqlite:///{Path(workdir) / 'bench.db'}"
        seed_store(url)
        measured = _measure(url, args.seconds, args.rounds)
        status, bare = measured["status"], measured["bare"]
        uncached = measured["status_uncached"]
    ratio = status["per_second"] / bare["per_second"]
    result = {
        "benchmark": "api",
        "connections": CONNECTIONS,
        "attestation_status": status,
        "attestation_status_uncached": uncached,
        "bare_fastapi": bare,
        "status_over_bare": round(ratio, 3),
        "uncached_status_over_bare": round(uncached["per_second"] / bare["per_second"], 3),
        "targets": {"at_least_half_bare_rate": ratio >= 0.5},
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
