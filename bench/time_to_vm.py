"""Time to a reachable VM at a real block time, against its physical floor.

`python -m bench.time_to_vm --json [--block-time 2] [--leases 3] [--launcher qemu]` starts
the stack of `cvm up` (node agents on the `qemu` launcher, the real default image) with
anvil mining a block every `--block-time` seconds once the stack is ready, and has one
renter, as `cvm rent` and `cvm demo --launcher qemu` do, rent N leases one after the
other. For each, on the renter's wall clock: create sent -> created, accepted (the events'
blocks seen) -> guest launched (its QEMU pid file) -> report in hand, evidence uploaded
(the node's own store) -> submitted -> verified (events) -> the renter's client sees
Verified (`cvm rent`'s follow) -> SSH key and secret sealed and queued (`release`) -> `ssh`
answers with the secret's hash. The chain's own view beside it: the four events' block
timestamps.

In the same run: the guest's boot time with QEMU alone (no stack, `bench.guest_boot`'s
measurement, launch to a report bound to its key) and the block time. The transactions that
must each wait for the one before are, with the agents' combined accept (their default,
`--accept-mode combined`), create, acceptAndSubmit, confirm (secrets go off chain): the node
boots the guest once it sees the create and sends its report with the accept, so the floor
is create + boot + acceptAndSubmit + confirm: boot + 3 blocks. With `--accept-mode separate`
they are create, accept, submit, confirm, and the node boots the guest while its accept is
mined (speculative boot), so the floor is create + max(boot, accept) + submit + confirm:
max(boot, block) + 3 blocks; with the speculative boot off (`--speculative off`, which
accepts separately) the boot follows the accept and the floor is boot + 4 blocks.
`over_floor` is the p50 of create sent -> ssh answers over it.
`--compare-speculative` runs the same leases on a stack with the speculative boot off first
(the baseline, under `baseline_no_speculative`) and then on, and prints both. The direct boot
is taken before and after the leases (median): a loaded machine's boot times move by tens
of percent within a run, so beside it `over_own_boot_floor_p50` is each lease over its own
guest's boot in the stack (launched -> report in hand, which with the speculative boot spans
the accept too) plus the remaining blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

# The transactions one lease needs, each of which can only be sent once the one before is
# mined: the renter's create, the node's accept (after it sees the create), the node's
# submit (after the accept is final and the guest booted: with the speculative boot the two
# overlap), the verifier's confirm (after it sees the submit). Secrets and SSH are off chain.
SEQUENTIAL_INCLUSIONS = ("create", "accept", "submit", "confirm")
# The combined accept (the agents' default, with the speculative boot): the node boots the guest
# once it sees the create, takes its report while the lease is still open, and accepts and
# submits in one transaction; the boot no longer overlaps a block, but one inclusion is gone.
COMBINED_INCLUSIONS = ("create", "acceptAndSubmit", "confirm")
# The accept mode in the node agent's environment (`CVM_NODE_ACCEPT_MODE`).
ACCEPT_MODE_ENV = "CVM_NODE_ACCEPT_MODE"
# The speculative boot in the node agent's environment (its setting, read by the stack's agents).
SPECULATIVE_ENV = "CVM_NODE_SPECULATIVE_BOOT"

# The marks of one lease, in the order they happen; each phase runs from one to the next.
MARKS = (
    "create_sent",
    "created",
    "accepted",
    "guest_launched",
    "report_in_hand",
    "evidence_uploaded",
    "submitted",
    "verified",
    "renter_sees_verified",
    "secret_released",
    "ssh_answers",
)
# The events that mark a lease's on-chain steps, by the mark they set.
_EVENTS = {
    "LeaseCreated": "created",
    "LeaseAccepted": "accepted",
    "AttestationSubmitted": "submitted",
    "AttestationVerified": "verified",
}
_SUBMISSION_MARKS = {"reported": "report_in_hand", "uploaded": "evidence_uploaded"}
_POLL_S = 0.05


def phases(marks: Mapping[str, float]) -> dict[str, float]:
    """Seconds between consecutive marks present (`a_to_b`), in the order they happened (the
    order of MARKS for ties: with the speculative boot the guest is launched before the accept
    is seen). A mark missing from `marks` is skipped: its phase folds into the next one."""
    present = sorted((name for name in MARKS if name in marks),
                     key=lambda name: (marks[name], MARKS.index(name)))  # fmt: skip
    return {f"{a}_to_{b}": marks[b] - marks[a] for a, b in pairwise(present)}


def chain_phases(block_times: Mapping[str, int]) -> dict[str, int]:
    """Seconds between the blocks of consecutive on-chain steps (block timestamps)."""
    present = [
        name for name in ("created", "accepted", "submitted", "verified") if name in block_times
    ]
    return {f"{a}_to_{b}": block_times[b] - block_times[a] for a, b in pairwise(present)}


def inclusions_of(*, speculative: bool, combined: bool) -> tuple[str, ...]:
    """The transactions a lease needs one after the other in this mode (combined only with the
    speculative boot: without it the agents accept separately)."""
    return COMBINED_INCLUSIONS if combined and speculative else SEQUENTIAL_INCLUSIONS


def floor_s(
    boot_s: float,
    block_time_s: float,
    inclusions: int = len(SEQUENTIAL_INCLUSIONS),
    *,
    speculative: bool = False,
    combined: bool = False,
) -> float:
    """The physical floor: the guest's own boot plus one block per sequential inclusion; with
    the speculative boot the boot overlaps the accept's block, so max(boot, block) + the
    other inclusions' blocks; with the combined accept the boot sits between the create's
    block and acceptAndSubmit's (boot + 3 blocks: it saves block - boot when the boot is
    shorter than a block, a whole block with no boot)."""
    if combined and speculative:
        return boot_s + len(COMBINED_INCLUSIONS) * block_time_s
    if speculative:
        return max(boot_s, block_time_s) + (inclusions - 1) * block_time_s
    return boot_s + inclusions * block_time_s


def summarize(
    leases: Sequence[Mapping[str, float]],
    block_times: Sequence[Mapping[str, int]],
    boot_s: float,
    block_time_s: float,
    speculative: bool = False,
    combined: bool = False,
) -> dict[str, Any]:
    """The figures of a run: per-lease totals (create sent -> ssh answers), their p50, the
    floor, `over_floor`, and the p50 of every phase (wall clock and chain)."""
    done = [marks for marks in leases if "create_sent" in marks and "ssh_answers" in marks]
    totals = [marks["ssh_answers"] - marks["create_sent"] for marks in done]
    floor = floor_s(boot_s, block_time_s, speculative=speculative, combined=combined)
    result: dict[str, Any] = {
        "leases_reachable": len(done),
        "time_to_vm_s": [round(total, 2) for total in totals],
        "p50_s": round(statistics.median(totals), 2) if totals else None,
        "floor_s": round(floor, 2),
        "over_floor": round(statistics.median(totals) / floor, 2) if totals else None,
    }
    # The direct boot is sampled apart from the leases on a machine whose load moves: each lease
    # against its own guest's boot in the stack (launched -> report in hand) plus the blocks
    # (speculative: that span already holds the accept's block; combined: it is the boot
    # alone, and three blocks remain).
    own = [
        (marks["ssh_answers"] - marks["create_sent"])
        / floor_s(
            marks["report_in_hand"] - marks["guest_launched"],
            block_time_s,
            len(SEQUENTIAL_INCLUSIONS) - 1 if speculative else len(SEQUENTIAL_INCLUSIONS),
        )
        for marks in done
        if "guest_launched" in marks and "report_in_hand" in marks
    ]
    result["over_own_boot_floor_p50"] = round(statistics.median(own), 2) if own else None
    # What the speculative boot moves, free of how fast the guest boots: create mined -> its
    # guest launched (the accept's block, and the accept's own round trip, when off).
    launch_after = [
        marks["guest_launched"] - marks["created"]
        for marks in done
        if "guest_launched" in marks and "created" in marks
    ]
    result["created_to_guest_launched_p50_s"] = (
        round(statistics.median(launch_after), 2) if launch_after else None
    )
    per_phase: dict[str, list[float]] = {}
    for marks in done:
        for name, seconds in phases(marks).items():
            per_phase.setdefault(name, []).append(seconds)
    result["phases_p50_s"] = {
        name: round(statistics.median(values), 2) for name, values in per_phase.items()
    }
    per_chain: dict[str, list[int]] = {}
    for stamps in block_times:
        for name, seconds in chain_phases(stamps).items():
            per_chain.setdefault(name, []).append(seconds)
    result["chain_phases_p50_s"] = {
        name: statistics.median(values) for name, values in per_chain.items()
    }
    return result


class _Observer(threading.Thread):
    """Records, on the wall clock, when each mark of each lease is first seen: chain events
    (with their blocks' timestamps), the node stores' submissions and the guests' pid files."""

    def __init__(self, chain: Any, stack_dir: Path, from_block: int) -> None:
        super().__init__(daemon=True, name="time-to-vm-observer")
        self.chain = chain
        self.stack_dir = stack_dir
        self.next_block = from_block
        self.marks: dict[int, dict[str, float]] = {}
        self.block_times: dict[int, dict[str, int]] = {}
        self.stop = threading.Event()
        self.error: str | None = None
        self._stores = sorted(stack_dir.glob("**/agent.sqlite"))

    def mark(self, lease_id: int, name: str, at: float | None = None) -> None:
        self.marks.setdefault(lease_id, {}).setdefault(name, time.time() if at is None else at)

    def run(self) -> None:
        while not self.stop.wait(_POLL_S):
            try:
                self._poll_chain()
                self._poll_nodes()
            except Exception as exc:  # reported in the JSON; the run goes on
                self.error = f"{type(exc).__name__}: {exc}"

    def _poll_chain(self) -> None:
        head = int(self.chain.w3.eth.block_number)
        if head < self.next_block:
            return
        now = time.time()
        stamps: dict[int, int] = {}
        for event in self.chain.fetch_events(self.next_block, head):
            mark = _EVENTS.get(event.name)
            if mark is None:
                continue
            lease_id = int(event.args["leaseId"])
            self.mark(lease_id, mark, now)
            if event.block_number not in stamps:
                stamps[event.block_number] = int(
                    self.chain.w3.eth.get_block(event.block_number)["timestamp"]
                )
            self.block_times.setdefault(lease_id, {}).setdefault(mark, stamps[event.block_number])
        self.next_block = head + 1

    def _poll_nodes(self) -> None:
        if not self._stores:
            self._stores = sorted(self.stack_dir.glob("**/agent.sqlite"))
        for store in self._stores:
            for lease_id in list(self.marks):
                if "guest_launched" not in self.marks[lease_id] and any(
                    store.parent.glob(f"**/lease-{lease_id}/qemu.pid")
                ):
                    self.mark(lease_id, "guest_launched")
            connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
            try:
                rows = connection.execute(
                    "SELECT lease_id, state FROM submissions WHERE nonce = 0"
                ).fetchall()
            except sqlite3.OperationalError:
                rows = []  # the agent has not made its tables yet
            finally:
                connection.close()
            for lease_id, state in rows:
                # A later state implies the earlier ones: seen together, they share a time.
                if state in ("uploaded", "submitted"):
                    self.mark(int(lease_id), "report_in_hand")
                if state in ("reported", "uploaded", "submitted"):
                    self.mark(int(lease_id), _SUBMISSION_MARKS.get(state, "evidence_uploaded"))


def _funded_renter(state: Any, chain: Any) -> Any:
    """A fresh renter funded from the local faucet (as the demos' own, without printing)."""
    from cvm.api_client import ApiClient
    from cvm.renter import Renter
    from devstack.faucet import fund, local_deployer
    from devstack.keys import new_stack_key

    key = new_stack_key(Path(state.data_dir) / "stack" / "bench-wallets", "renter")
    fund(chain.with_account(local_deployer(chain.deployment)), key.address, 100 * 10**18, 10**19)
    return Renter(chain.with_account(key.account), ApiClient(state.api_url))


def _ssh_key(work: Path) -> tuple[Path, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    identity = work / "id_ed25519"
    identity.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    identity.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return identity, public.decode()


def _wait_for_ssh(
    api: Any, lease_id: int, guest: Any, identity: Path, work: Path, digest: str, timeout_s: float
) -> None:
    """Until `ssh` into the guest (its attested host key pinned) prints the secret's hash."""
    from cvm.api_client import ApiError
    from cvm.cli.guest import ssh_argv

    deadline = time.monotonic() + timeout_s
    known = work / "known_hosts"
    while True:
        try:
            access = api.guest_access(lease_id)
            known.write_text(guest.identity.known_hosts_line(access.host, access.ssh_port))
            argv = ssh_argv(known, access.host, access.ssh_port, identity,
                            ["sha256sum", "/run/cvm/secrets/bench"])  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and done.stdout.split()[:1] == [digest]:
                return
        except (ApiError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"lease {lease_id}: ssh did not answer within {timeout_s:.0f} s")
        time.sleep(0.25)


def _simulated_leases(
    renter: Any, request: Any, observer: _Observer, count: int, timeout_s: float
) -> None:
    """The simulated launcher has no guest to reach: a lease ends at the renter seeing
    Verified (no secret, no ssh)."""
    from bench.e2e import time_creates
    from cvm.cli.renter import follow
    from cvm.renter import is_verified

    stamp = time_creates(renter)
    for _ in range(count):
        lease_id = renter.rent(request)
        observer.mark(lease_id, "create_sent", stamp.wall)
        report = follow(renter, lease_id, timeout_s, quiet=True)
        if not is_verified(report):
            raise SystemExit(f"lease {lease_id} ended unverified")
        observer.mark(lease_id, "renter_sees_verified")
        renter.close(lease_id)


def _stack_round(
    leases: int,
    block_time_s: int,
    launcher: str,
    image: Any,
    timeout_s: float,
    directory: Path,
    work: Path,
    speculative: bool,
    accept_mode: str = "combined",
) -> dict[str, Any]:
    """One stack (`cvm up`'s, its node agents' speculative boot on or off, accepting combined or
    separately) and `leases` leases rented one after the other; the marks, block timestamps and
    per-lease phases."""
    from bench.e2e import time_creates
    from cvm.chain import connect
    from cvm.cli.renter import follow
    from cvm.config import Settings
    from cvm.images import measure
    from cvm.renter import RentRequest, is_verified
    from cvm.secret_release import release, trusted_roots
    from devstack import DEMO_MEASUREMENT, EmbeddedStack, StackConfig
    from devstack.vm_demo import _guest_pids

    round_result: dict[str, Any] = {"speculative_boot": speculative, "accept_mode": accept_mode}
    started = time.perf_counter()
    config = StackConfig(directory, nodes=1, launcher=launcher, block_time_s=block_time_s)
    saved = os.environ.get(SPECULATIVE_ENV)
    saved_mode = os.environ.get(ACCEPT_MODE_ENV)
    os.environ[SPECULATIVE_ENV] = "true" if speculative else "false"  # the agents inherit it
    os.environ[ACCEPT_MODE_ENV] = accept_mode
    try:
        with EmbeddedStack(config) as stack:
            round_result["stack_startup_s"] = round(time.perf_counter() - started, 1)
            assert stack.deployment is not None and stack.state is not None
            state = stack.state
            chain = connect(stack.deployment, rpc_url=state.rpc_url)
            renter = _funded_renter(state, chain)
            observer = _Observer(chain, config.stack_dir, int(chain.w3.eth.block_number) + 1)
            observer.start()
            try:
                if image is None:
                    request = RentRequest(
                        vcpu=1, memory_mib=512, disk_gib=1, image="cvm-demo-guest",
                        measurement=DEMO_MEASUREMENT, max_rate_per_second=10**13,
                        deposit=10**13 * 600,
                    )  # fmt: skip
                    _simulated_leases(renter, request, observer, leases, timeout_s)
                else:
                    identity, public = _ssh_key(work)
                    renter.publish_image(image)
                    request = RentRequest(
                        vcpu=1, memory_mib=512, disk_gib=1, image=image.image_id,
                        measurement=measure(image), max_rate_per_second=10**13,
                        deposit=10**13 * 600, ssh_public_key=public,
                    )  # fmt: skip
                    roots = trusted_roots(True, Settings(data_dir=Path(state.data_dir)).sim_amd_dir)
                    api = renter.signed_in_api()
                    stamp = time_creates(renter)
                    for _ in range(leases):
                        secret = secrets.token_bytes(32)
                        lease_id = renter.rent(request)
                        observer.mark(lease_id, "create_sent", stamp.wall)
                        report = follow(renter, lease_id, timeout_s, quiet=True)
                        if not is_verified(report):
                            raise SystemExit(f"lease {lease_id} ended unverified")
                        observer.mark(lease_id, "renter_sees_verified")
                        guest = release(chain, api, lease_id, renter=renter.account,
                                        ssh_keys=[public], secrets={"bench": secret},
                                        roots=roots).guest  # fmt: skip
                        observer.mark(lease_id, "secret_released")
                        digest = hashlib.sha256(secret).hexdigest()
                        _wait_for_ssh(api, lease_id, guest, identity, work, digest, timeout_s)
                        observer.mark(lease_id, "ssh_answers")
                        renter.close(lease_id)
                        # One guest at a time: the next lease's boot must not share the cores.
                        deadline = time.monotonic() + 60
                        while _guest_pids(Path(state.data_dir), lease_id):
                            if time.monotonic() > deadline:
                                break
                            time.sleep(0.5)
                time.sleep(0.5)  # the observer's last poll
            finally:
                observer.stop.set()
                observer.join(5)
    finally:
        if saved is None:
            os.environ.pop(SPECULATIVE_ENV, None)
        else:
            os.environ[SPECULATIVE_ENV] = saved
        if saved_mode is None:
            os.environ.pop(ACCEPT_MODE_ENV, None)
        else:
            os.environ[ACCEPT_MODE_ENV] = saved_mode
    ordered = sorted(observer.marks)
    marks = [observer.marks[i] for i in ordered]
    if image is None:  # the end of a simulated lease is the renter seeing Verified
        marks = [{**m, "ssh_answers": m["renter_sees_verified"]} for m in marks]
    round_result["marks"] = marks
    round_result["block_times"] = [observer.block_times.get(i, {}) for i in ordered]
    round_result["leases"] = {
        str(i): {
            "phases_s": {k: round(v, 2) for k, v in phases(observer.marks[i]).items()},
            "chain_block_timestamps": observer.block_times.get(i, {}),
        }
        for i in ordered
    }
    if observer.error:
        round_result["observer_error"] = observer.error
    return round_result


def _round_figures(
    round_result: dict[str, Any], boot_s: float, block_time_s: int
) -> dict[str, Any]:
    """A round's summary (its floor by whether the guest boots while the accept is mined)."""
    speculative = bool(round_result["speculative_boot"])
    combined = round_result.get("accept_mode") == "combined"
    summary = summarize(round_result.pop("marks"), round_result.pop("block_times"), boot_s,
                        block_time_s, speculative=speculative, combined=combined)  # fmt: skip
    steps = inclusions_of(speculative=speculative, combined=combined)
    summary["sequential_inclusions"] = {"count": len(steps), "steps": list(steps)}
    leases = round_result.pop("leases")
    return {**round_result, **summary, "leases": leases}


def run(
    leases: int,
    block_time_s: int,
    launcher: str,
    images: Path,
    timeout_s: float,
    keep: Path | None = None,
    *,
    speculative: bool = True,
    compare: bool = False,
    accept_mode: str = "combined",
) -> dict[str, Any]:
    """One run: the leases on a stack whose agents boot speculatively (or not) and accept
    combined (or separately); with `compare`, first the same on a stack with the speculative
    boot off (the baseline, which accepts separately)."""
    from bench.guest_boot import boot_once, launcher_for
    from cvm.images import ImageStore

    result: dict[str, Any] = {
        "benchmark": "time_to_vm",
        "launcher": launcher,
        "block_time_s": block_time_s,
        "speculative_boot": speculative or compare,
        "accept_mode": accept_mode,
        "sequential_inclusions_note": "each waits for the one before to be mined; combined"
        " (with the speculative boot): create, acceptAndSubmit, confirm, the guest booted"
        " between the create and acceptAndSubmit (floor: boot + 3 blocks); separate with the"
        " speculative boot: the guest boots while the accept is mined (max(boot, block) + 3"
        " blocks), without it after (boot + 4 blocks); secrets and ssh are off chain",
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
    }
    image = None
    boots: list[tuple[float, float]] = []  # (to agent, to bound report), before and after
    if launcher == "qemu":
        store = ImageStore(images)
        image = store.build()
        direct, accel = launcher_for(store, image)
        boots.append(boot_once(direct, image, 990_000 + os.getpid() % 1000))
    modes = [False, True] if compare else [speculative]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cvm-bench-ttv-") as temporary:
        for number, mode in enumerate(modes):
            directory = (keep / f"round-{number}") if keep else Path(temporary) / f"stack-{number}"
            work = Path(temporary) / f"renter-{number}"
            work.mkdir(mode=0o700)
            args = (leases, block_time_s, launcher, image, timeout_s, directory, work, mode)
            rounds.append(_stack_round(*args, accept_mode=accept_mode))
    boot_s = 0.0
    if image is not None:
        # Again once the stacks are gone: the load moves during a run, the floor takes the median.
        boots.append(boot_once(direct, image, 990_001 + os.getpid() % 1000))
        boot_s = statistics.median(reported for _agent, reported in boots)
        result["guest_boot_direct"] = {
            "accel": accel,
            "to_agent_s": [round(agent, 2) for agent, _reported in boots],
            "to_bound_report_s": [round(reported, 2) for _agent, reported in boots],
            "floor_boot_s": round(boot_s, 2),
            "note": "QEMU alone, no stack, same image and size, before and after the leases;"
            " the floor takes the median of to_bound_report_s",
        }
    figures = [_round_figures(round_result, boot_s, block_time_s) for round_result in rounds]
    main_round = figures[-1]
    result = {**result, **main_round}
    if compare:
        baseline = figures[0]
        result["baseline_no_speculative"] = baseline
        if baseline["p50_s"] is not None and main_round["p50_s"] is not None:
            launch = (baseline["created_to_guest_launched_p50_s"],
                      main_round["created_to_guest_launched_p50_s"])  # fmt: skip
            result["speculative_effect"] = {
                "p50_saved_s": round(baseline["p50_s"] - main_round["p50_s"], 2),
                "p50_ratio": round(main_round["p50_s"] / baseline["p50_s"], 3),
                "guest_launched_earlier_s": (
                    round(launch[0] - launch[1], 2) if None not in launch else None
                ),
                "note": "baseline: the same leases on a stack whose agents boot the guest"
                " only after the accept is mined (run first, same machine, same run); the p50s"
                " also carry the guests' boot times, which move with the machine's load between"
                " the rounds; guest_launched_earlier_s is the lever alone (create mined ->"
                " guest launched, p50)",
            }
    result["machine"]["load_average_at_end"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.time_to_vm", description=__doc__)
    parser.add_argument("--leases", type=int, default=3)
    parser.add_argument("--block-time", type=int, default=2, help="seconds per block (>= 1)")
    parser.add_argument("--launcher", choices=("qemu", "simulated"), default="qemu")
    parser.add_argument("--timeout", type=float, default=600.0, help="per lease step, seconds")
    parser.add_argument(
        "--images", type=Path, default=Path(tempfile.gettempdir()) / "cvm-test-images"
    )
    parser.add_argument("--data-dir", type=Path, help="keep the stack's logs here (debugging)")
    parser.add_argument(
        "--speculative",
        choices=("on", "off"),
        default="on",
        help="the node agents boot the guest while the accept is mined (on, their default)",
    )
    parser.add_argument(
        "--accept-mode",
        choices=("combined", "separate"),
        default="combined",
        help="how the node agents accept (CVM_NODE_ACCEPT_MODE): combined, their default, sends"
        " acceptAndSubmit once the guest's report is in hand; separate accepts, then submits",
    )
    parser.add_argument(
        "--compare-speculative",
        action="store_true",
        help="run the leases with the speculative boot off (baseline) then on; print both",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    args = parser.parse_args()
    if not 1 <= args.leases <= 100 or not 1 <= args.block_time <= 60:
        parser.error("--leases must be 1..100 and --block-time 1..60")
    result = run(args.leases, args.block_time, args.launcher, args.images, args.timeout,
                 args.data_dir, speculative=args.speculative == "on",
                 compare=args.compare_speculative, accept_mode=args.accept_mode)  # fmt: skip
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
