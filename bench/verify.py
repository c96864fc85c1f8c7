"""Attestation verification throughput against the raw ECDSA P-384 rate, on one core.

`python -m bench.verify --json` prints one JSON object: full `verify_report` calls per second
on a real Milan report (VCEK and chain supplied, chain already verified and cached) beside
`cryptography`'s bare ECDSA P-384/SHA-384 verify of the same signature, measured in the same
process in interleaved rounds so that both see the same machine load. Target: >= 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cvm.attestation import load_endorsement_key, parse, verify_report
from cvm.attestation.abi import signed_bytes

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "snp"
TARGET = 0.90


def _rate(fn: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def run(rounds: int, seconds: float) -> dict[str, object]:
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})  # one core, as the target says
    raw = (DATA / "reports" / "milan_virtee_sev.bin").read_bytes()
    vcek = (DATA / "vcek" / "milan_virtee_sev.der").read_bytes()
    chain = (DATA / "ca" / "milan_vcek_cert_chain.pem").read_bytes()

    def full() -> object:
        return verify_report(raw, vcek, chain=chain)

    public_key = load_endorsement_key(vcek).public_key
    signature = encode_dss_signature(*parse(raw).signature_ints())
    body = signed_bytes(raw)
    algorithm = ec.ECDSA(hashes.SHA384())

    def bare() -> None:
        public_key.verify(signature, body, algorithm)

    full()  # verifies and caches the chain
    bare()
    full_rates, raw_rates, ratios = [], [], []
    for _ in range(rounds):
        # Short interleaved pairs: the other processes' load changes between rounds, not
        # (much) within one pair, so the median of per-pair ratios is the stable figure.
        raw_rates.append(_rate(bare, seconds))
        full_rates.append(_rate(full, seconds))
        ratios.append(full_rates[-1] / raw_rates[-1])
    full_rate, raw_rate = statistics.median(full_rates), statistics.median(raw_rates)
    ratio = statistics.median(ratios)
    return {
        "benchmark": "attestation.verify",
        "report": "milan_virtee_sev",
        "full_verify_per_s": round(full_rate, 1),
        "raw_ecdsa_p384_verify_per_s": round(raw_rate, 1),
        "ratio": round(ratio, 4),
        "target_ratio": TARGET,
        "meets_target": ratio >= TARGET,
        "rounds": rounds,
        "seconds_per_round": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    result = run(args.rounds, args.seconds)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
