"""Release latency: a lease's guest Verified on chain -> t key holders' shares sealed to it.

    python -m bench.release_latency --json [--leases 20]

The embedded stack of `cvm up --holders 3` (simulated launcher, one node): one renter rents
`--leases` leases one after the other, each with a threshold key (2-of-3, deposited right
after the create, as `cvm rent --key-service` does). For each: the registry's status is
polled every 50 ms until Verified (the renter's wall clock), then the releases the holders
posted for that guest's report are read as the lease's node reads them (the node relays
them to its guest at once); the latency is the t-th release's arrival at the backend (its
`created_at`, this machine's clock) minus the moment Verified was seen. The lease is closed
before the next. Prints JSON (p50 goal: 2 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import percentile

THRESHOLD = 2
HOLDERS = 3
POLL_S = 0.05
TIMEOUT_S = 120.0


def measure(leases: int) -> list[float]:
    """Seconds from Verified to the t-th share at the backend, one sample per lease."""
    from cvm.api_client import ApiClient
    from cvm.chain import AttestationStatus, Deployment, connect
    from cvm.key_release import deposit_keys, resolve_holders
    from cvm.renter import RentRequest
    from cvm.wallet import load_account, read_password_file
    from devstack import DEMO_MEASUREMENT, EmbeddedStack, StackConfig
    from devstack.demo_renter import new_demo_renter

    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-release-") as work:
        stack = EmbeddedStack(StackConfig(Path(work), nodes=1, holders=HOLDERS))
        state = stack.start()
        try:
            chain = connect(Deployment.load(state.deployment_file), rpc_url=state.rpc_url)
            renter = new_demo_renter(state, chain)
            node = state.nodes[0]
            node_key = load_account(
                Path(node.node_keystore), read_password_file(Path(node.node_password_file))
            ).key
            holders = resolve_holders(renter.chain, None, HOLDERS)
            request = RentRequest(vcpu=1, memory_mib=512, disk_gib=1, image="cvm-demo-guest",
                                  measurement=DEMO_MEASUREMENT, max_rate_per_second=10**13,
                                  deposit=10**13 * 600)  # fmt: skip
            with ApiClient(state.api_url) as reader:
                for _ in range(leases):
                    lease_id = renter.rent(request)
                    deposit_keys(
                        renter.chain, renter.signed_in_api(), lease_id, renter=renter.account,
                        holders=holders, threshold=THRESHOLD, measurements=[DEMO_MEASUREMENT],
                        failover=False,
                    )  # fmt: skip
                    deadline = time.monotonic() + TIMEOUT_S
                    attestations = renter.chain.attestations
                    while attestations.status_of(lease_id) != AttestationStatus.VERIFIED:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"lease {lease_id} not Verified in {TIMEOUT_S} s")
                        time.sleep(POLL_S)
                    verified_at = time.time()
                    report_hash = "0x" + attestations.attestation_of(lease_id).report_hash.hex()
                    while True:
                        keys = reader.get_guest_keys(lease_id, node_key=bytes(node_key))
                        times = sorted(
                            r.created_at.timestamp() for r in keys.releases
                            if r.report_hash.lower() == report_hash
                        )  # fmt: skip
                        if len(times) >= THRESHOLD:
                            samples.append(max(0.0, times[THRESHOLD - 1] - verified_at))
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"lease {lease_id}: {len(times)} releases only")
                        time.sleep(0.25)
                    renter.close_lease(lease_id)
        finally:
            stack.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    parser.add_argument("--leases", type=int, default=20)
    args = parser.parse_args()
    if not 1 <= args.leases <= 200:
        parser.error("--leases: 1 to 200")
    with contextlib.redirect_stdout(sys.stderr):  # the stack's and renter's words
        samples = measure(args.leases)
    result: dict[str, Any] = {
        "leases": len(samples),
        "threshold": f"{THRESHOLD} of {HOLDERS}",
        "p50_s": round(statistics.median(samples), 3),
        "p90_s": round(percentile(samples, 0.9), 3),
        "max_s": round(max(samples), 3),
        "samples_s": [round(s, 3) for s in samples],
        "goal_p50_s": 2.0,
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
