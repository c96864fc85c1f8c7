"""API throughput: the attestation-status endpoint beside a bare FastAPI endpoint.

`python -m bench.api --json` stores 1,000 attested leases (with full verification results)
in a SQLite store, then serves, one after the other and each in its own uvicorn process
(one worker): the cvm app, and a bare FastAPI app whose only endpoint returns a constant
JSON object. The same load generator drives both: 64 concurrent keep-alive connections
for a fixed time, random lease ids for the status endpoint. It prints one JSON object with
requests per second and p50/p99 latency for each, the ratio, and whether the target (at
least half the bare rate) is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

CONNECTIONS = 64
LEASES = 1_000


def seed_store(url: str) -> None:
    from backend.store import Attestation, Lease, Store, Verification

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
                    "status": "active",
                    "tee_type": 1,
                    "vcpus": 4,
                    "memory_mib": 8192,
                    "disk_gib": 40,
                    "min_stake": 0,
                    "max_price_per_second": 10**12,
                    "price_per_second": 10**12,
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
                    "status": "verified",
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
    """Run one server (called in the child process)."""
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
        from backend.api.schemas import ChainInfo
        from backend.store import Store
        from cvm.config import Settings

        context = AppContext(
            settings=Settings(database_url=database_url),
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
    # Warm-up (imports, caches, connection pools), not measured.
    warm: list[float] = []
    await asyncio.gather(
        *(_connection(port, paths, time.perf_counter() + 0.5, warm, []) for _ in range(8))
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_connection(port, paths, stop_at, latencies, errors) for _ in range(CONNECTIONS))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": len(errors),
        "per_second": round(len(ordered) / elapsed, 1),
        "p50_ms": round(ordered[len(ordered) // 2] * 1e3, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1e3, 3),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _measure(kind: str, database_url: str, paths: list[str], seconds: float) -> dict[str, Any]:
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "--serve", kind, "--port", str(port)],
        env={**os.environ, "CVM_BENCH_DATABASE_URL": database_url},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.05)
        return asyncio.run(_load(port, paths, seconds))
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", choices=["bare", "status"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, os.environ["CVM_BENCH_DATABASE_URL"])
        return
    with tempfile.TemporaryDirectory(prefix="cvm-bench-api-") as workdir:
        url = f"sqlite:///{Path(workdir) / 'bench.db'}"
        seed_store(url)
        status_paths = [f"/v1/leases/{i}/attestation" for i in range(LEASES)]
        status = _measure("status", url, status_paths, args.seconds)
        bare = _measure("bare", url, ["/bare"], args.seconds)
    ratio = status["per_second"] / bare["per_second"]
    result = {
        "benchmark": "api",
        "connections": CONNECTIONS,
        "attestation_status": status,
        "bare_fastapi": bare,
        "status_over_bare": round(ratio, 3),
        "targets": {"at_least_half_bare_rate": ratio >= 0.5},
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
