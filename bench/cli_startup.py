"""Start-up time of the `cvm` command, against bare Python measured in the same run.

`python -m bench.cli_startup --json` prints one JSON object: the median wall time of
`python -c pass` (the baseline), `cvm --help` and `cvm attestation show REPORT`, each run
as a fresh process in alternating rounds so that machine load hits them alike, plus each
command's time above the baseline and the modules that cost most (`python -X importtime`).
Target: every command under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "tests" / "data" / "snp" / "reports"
TARGET_S = 0.3


def _commands() -> dict[str, list[str]]:
    report = sorted(REPORT.glob("*.bin"))[0]
    cvm = [sys.executable, "-m", "cvm"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "cvm --help": [*cvm, "--help"],
        "cvm attestation show": [*cvm, "attestation", "show", str(report), "--json"],
    }


def _run(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def _costliest_imports(argv: list[str], count: int = 5) -> list[dict[str, object]]:
    """The top-level imports that took longest (cumulative µs), from -X importtime."""
    traced = [argv[0], "-X", "importtime", *argv[1:]]
    stderr = subprocess.run(traced, check=True, capture_output=True, text=True).stderr
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if cumulative.isdigit() and not name.startswith(" ") and "." not in name.strip():
            rows.append({"module": name.strip(), "cumulative_us": int(cumulative)})
    return sorted(rows, key=lambda row: -int(str(row["cumulative_us"])))[:count]


def measure(rounds: int) -> dict[str, object]:
    commands = _commands()
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            times[name].append(_run(argv))
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["python -c pass"]
    return {
        "rounds": rounds,
        "target_s": TARGET_S,
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "above_baseline_s": {
            name: round(value - baseline, 4) for name, value in medians.items() if "cvm" in name
        },
        "within_target": all(value < TARGET_S for name, value in medians.items() if "cvm" in name),
        "costliest_imports": {
            name: _costliest_imports(argv) for name, argv in commands.items() if "cvm" in name
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="fresh processes per command")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
