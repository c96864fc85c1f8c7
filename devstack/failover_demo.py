"""`cvm demo --failover`: a lease that survives its node, on the embedded stack.

Three key holders (2-of-3), two qemu nodes. The renter builds and rents the stateful example
(examples/kv-store) with `--key-service --failover`: its disk key and its API token come
from the holders, never from the renter's client, which exits once the lease is Verified.
A value is written over attested TLS; once a snapshot epoch covers it, the first node dies
(its agent and its guest SIGKILLed, kept dead); the backend's failover watch challenges the
silent node's lease and, when the challenge window passes unanswered, calls
`LeaseMarket.failover`; the matcher hands the lease to the second node, which boots the same
measured image; the holders release their shares to the new Verified guest; it restores the
latest snapshot and the service answers again, over attested TLS, with the value.

Every renter step is the `cvm` command a renter types (a subprocess, as a second shell).
Each phase after the kill is timed (detection, matching, boot, key release, restore); the
first failing step ends the journey with its number and title (exit 1).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from cvm.cli.plumbing import literal
from devstack.service_demo import (
    DEMO_KEY,
    CommandFailed,
    RenterShell,
    StepRecord,
    guest_pids,
    make_secrets,
    volume_files,
    wait_until,
    workload_port,
    workload_secrets,
)

if TYPE_CHECKING:
    from devstack import StackState

PHASES = ("detection", "matching", "boot", "key_release", "restore")
# Short windows for the journey and the benchmark (production: 900 s and 60 s, README).
CHALLENGE_WINDOW_S = 30  # the registry's lower bound
LIVENESS_TIMEOUT_S = 15  # three missed heartbeats of the stack's agents (every 5 s)
SNAPSHOT_INTERVAL_S = 10.0
HOLDERS = 3
THRESHOLD = 2
NODES = 2


@dataclass
class FailoverJourney:
    """What the journey found, for the summary and `--json`."""

    workload: str
    steps: list[StepRecord] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds, in PHASES order
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        failed = next((step for step in self.steps if not step.ok), None)
        return {
            "ok": failed is None,
            "workload": self.workload,
            "failed_step": None if failed is None else f"{failed.number}. {failed.title}",
            "steps": [step.__dict__ for step in self.steps],
            "phases": self.phases,
            **self.facts,
        }


@dataclass
class Marks:
    """Wall-clock moments of the move (time.time()), set as each is seen."""

    killed: float = 0.0
    failed_over: float = 0.0
    accepted: float = 0.0
    verified: float = 0.0
    released: float = 0.0
    answered: float = 0.0

    def phases(self) -> dict[str, float]:
        order = [self.killed, self.failed_over, self.accepted, self.verified, self.released,
                 self.answered]  # fmt: skip
        found: dict[str, float] = {}
        for name, start, end in zip(PHASES, order, order[1:], strict=False):
            if start and end:
                found[name] = round(end - start, 2)
        if self.killed and self.answered:
            found["total"] = round(self.answered - self.killed, 2)
        return found


class Api:
    """The backend's public reads the journey watches (plain HTTP: what anyone can see)."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=f"{url}/v1", timeout=10)

    def lease(self, lease_id: int) -> dict[str, Any]:
        answer = self.client.get(f"/leases/{lease_id}")
        answer.raise_for_status()
        return dict(answer.json())

    def attestation(self, lease_id: int) -> dict[str, Any]:
        answer = self.client.get(f"/leases/{lease_id}/attestation")
        answer.raise_for_status()
        return dict(answer.json())

    def latest_epoch(self, lease_id: int) -> int:
        answer = self.client.get(f"/leases/{lease_id}/epochs/latest")
        if answer.status_code == 404:
            return 0
        answer.raise_for_status()
        return int(answer.json()["epoch"])

    def close(self) -> None:
        self.client.close()


def releases_for(state: StackState, node: str, lease_id: int, report_hash: str) -> int:
    """How many holders released their share to the guest of `report_hash` (read as the
    lease's node: releases are relayed to that node only)."""
    from cvm.api_client import ApiClient
    from cvm.wallet import load_account, read_password_file

    record = next(n for n in state.nodes if n.address.lower() == node.lower())
    account = load_account(
        Path(record.node_keystore), read_password_file(Path(record.node_password_file))
    )
    with ApiClient(state.api_url) as api:
        keys = api.get_guest_keys(lease_id, node_key=bytes(account.key))
    return len({r.holder for r in keys.releases if r.report_hash.lower() == report_hash.lower()})


def node_guest_pids(data_dir: Path, address: str) -> list[int]:
    """QEMU processes of the guests of one node of this stack (its state directory,
    `<stack>/node/<address>/`, is on their command lines)."""
    marker = f"/node/{address.lower()}/".encode()
    found = []
    for pid in guest_pids(data_dir, None):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in argv:
            found.append(pid)
    return found


def kill_node(state: StackState, name: str) -> list[int]:
    """The node `name` dies as a host would: its agent's process group and its guests
    SIGKILLed, and the stack told not to restart it. The pids killed."""
    from devstack.state import hold

    data_dir = Path(state.data_dir)
    record = next((node for node in state.nodes if node.name == name), None)
    hold(data_dir, name)
    killed: list[int] = []
    group = state.groups.get(name)
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)
            killed.append(group)
        except ProcessLookupError:
            pass
    for pid in node_guest_pids(data_dir, record.address) if record is not None else []:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def run_failover_journey(
    state: StackState,
    shell: RenterShell,
    image_id: str,
    journey: FailoverJourney,
    step: Callable[..., Any],
    timeout: float,
    say: Callable[[str], None],
) -> None:
    """Steps 3 onward (1 builds the image, 2 starts the stack)."""
    with tempfile.TemporaryDirectory(prefix="cvm-failover-demo-") as work:
        api = Api(state.api_url)
        try:
            _journey(state, shell, image_id, journey, step, timeout, say, Path(work), api)
        finally:
            api.close()


def _journey(
    state: StackState,
    shell: RenterShell,
    image_id: str,
    journey: FailoverJourney,
    step: Callable[..., Any],
    timeout: float,
    say: Callable[[str], None],
    work: Path,
    api: Api,
) -> None:
    from cvm.config import Settings

    data_dir = Path(state.data_dir)
    image_dir = Settings(data_dir=data_dir).image_dir
    trust = "--trust-simulated-amd"
    journey.facts["image"] = image_id
    marks = Marks()

    def measure() -> tuple[int, list[str], Path | None]:
        view = shell.json("image", "measure", image_id, "--vcpus", "1")
        journey.facts["measurement"] = view["measurement"]
        port = workload_port(image_dir, image_id)
        journey.facts["port"] = port
        return port, *make_secrets(work, workload_secrets(image_dir, image_id))

    port, secret_options, header = step(3, "measure the image; its port and secrets", measure)
    headers = ["-H", f"@{header}"] if header is not None else []

    def wallet() -> None:
        secret = work / "wallet.password"
        secret.touch(mode=0o600)
        secret.write_text(f"failover demo {os.getpid()} {time.time_ns()}\n")
        name = f"failover-{time.time_ns()}"
        shell.json("wallet", "new", name, "--password-file", str(secret),
                   "--kdf", "pbkdf2", "--iterations", "1000")  # fmt: skip
        shell.json("wallet", "fund", name, "--tokens", "100")
        shell.wallet_name, shell.password_file = name, secret

    step(4, "a funded renter wallet", wallet)

    def rent() -> int:
        lease = shell.json(
            "rent", "--vcpu", "1", "--memory", "512", "--disk", "1", "--duration", "30m",
            "--image", image_id, *secret_options, "--key-service", "--failover",
            "--threshold", str(THRESHOLD), trust, "--timeout", str(int(timeout)), unlock=True,
        )  # fmt: skip
        status = lease["attestation"]["status"]
        if status != "verified":
            raise RuntimeError(f"lease {lease['lease_id']} ended as {status}, not Verified")
        journey.facts["lease_id"] = lease["lease_id"]
        journey.facts["first_node"] = lease.get("node")
        say(f"lease {lease['lease_id']} Verified on {literal(lease.get('node'))}; its key is"
            f" with the holders ({THRESHOLD} of {HOLDERS}); the renter's client exits")  # fmt: skip
        return int(lease["lease_id"])

    lease_id = step(5, "rent it with --key-service --failover: Verified, key with the holders",
                    rent)  # fmt: skip
    lease = str(lease_id)

    def curl(*extra: str) -> dict[str, Any]:
        return dict(shell.json("lease", "curl", lease, str(port), f"/kv/{DEMO_KEY}", *extra,
                               *headers, trust, unlock=True))  # fmt: skip

    value = f"written before the failover at {time.strftime('%H:%M:%S')}"
    journey.facts["value"] = value

    def write() -> int:
        # The guest combines the holders' shares, opens its volume, then starts the app.
        wait_until("the service storing the value",
                   lambda: curl("-X", "PUT", "-d", value)["status"] == 200, timeout)  # fmt: skip
        # A snapshot under way now may have frozen the disk before the write: the one after
        # it (two epochs on) surely holds the value.
        written_at = api.latest_epoch(lease_id)
        read = curl()
        if read["status"] != 200 or read["body"] != value:
            raise RuntimeError(f"the service answered {read['status']}: {literal(read['body'])}")
        say(f"PUT then GET /kv/{DEMO_KEY} over attested TLS: {literal(value)}")
        return written_at

    epoch_before = step(6, "write a value to the service (cvm lease curl)", write)

    def snapshot() -> None:
        epoch = wait_until(
            "a snapshot epoch after the write",
            lambda: (e := api.latest_epoch(lease_id)) >= epoch_before + 2 and e,
            max(120.0, 6 * SNAPSHOT_INTERVAL_S),
        )
        journey.facts["epoch_before_kill"] = epoch
        say(f"snapshot epoch {epoch} recorded (signed by the lease's epoch key)")

    step(7, "wait for a snapshot epoch that holds the value", snapshot)

    first = str(journey.facts.get("first_node") or "")
    first_name = next((n.name for n in state.nodes if n.address.lower() == first.lower()), None)

    def kill() -> None:
        if first_name is None:
            raise RuntimeError(f"node {first} is not one of this stack's nodes")
        killed = kill_node(state, first_name)
        marks.killed = time.time()
        if not killed:
            raise RuntimeError(f"nothing of {first_name} was running")
        say(f"SIGKILLed {first_name}'s agent and guest (pids {', '.join(map(str, killed))});"
            " it is not restarted")  # fmt: skip

    step(8, "the first node dies: its agent and guest SIGKILLed", kill)

    def moved() -> None:
        def failed_over() -> bool:
            nodes = api.lease(lease_id).get("nodes") or []
            return bool(nodes) and nodes[0].get("ended_at") is not None

        wait_until("the failover watch moving the lease", failed_over,
                   CHALLENGE_WINDOW_S * 4 + LIVENESS_TIMEOUT_S * 4, 0.5)  # fmt: skip
        marks.failed_over = time.time()
        reason = api.lease(lease_id)["nodes"][0].get("reason")
        say(f"LeaseFailedOver ({literal(reason)}) after {marks.failed_over - marks.killed:.1f} s")

        def accepted() -> str | None:
            view = api.lease(lease_id)
            node = view.get("node")
            return str(node) if view["status"] == "active" and node else None

        second = wait_until("another node accepting the lease", accepted, timeout, 0.5)
        marks.accepted = time.time()
        journey.facts["second_node"] = second
        if second.lower() == first.lower():
            raise RuntimeError("the lease went back to the node it failed over from")
        say(f"accepted by {literal(second)} after {marks.accepted - marks.failed_over:.1f} s")

    step(9, "the liveness path moves the lease: challenged, failed over, re-matched", moved)
    second = str(journey.facts["second_node"])

    def booted() -> str:
        def verified() -> str | None:
            view = api.attestation(lease_id)
            same = str(view.get("node") or "").lower() == second.lower()
            return str(view["report_hash"]) if view.get("status") == "verified" and same else None

        report_hash = wait_until("the new guest Verified", verified, timeout, 0.5)
        marks.verified = time.time()
        say(f"the new guest booted and is Verified after {marks.verified - marks.accepted:.1f} s")
        return str(report_hash)

    report_hash = step(10, "the second node boots the same image: Verified", booted)

    def released() -> None:
        wait_until(
            f"{THRESHOLD} holders releasing their shares to the new guest",
            lambda: releases_for(state, second, lease_id, report_hash) >= THRESHOLD,
            timeout,
            0.25,
        )
        marks.released = time.time()
        say(f"{THRESHOLD} of {HOLDERS} holders released their shares after"
            f" {marks.released - marks.verified:.2f} s (nobody awake)")  # fmt: skip

    step(11, "the holders release the key to the new guest", released)

    def restored() -> None:
        def answered() -> dict[str, Any] | None:
            got = curl()
            return got if got["status"] == 200 else None

        got = wait_until("the service answering on the new node", answered, timeout, 0.5)
        marks.answered = time.time()
        if got["body"] != value:
            raise RuntimeError(f"after the failover the service answered {literal(got['body'])}")
        view = shell.json("lease", "open", lease, str(port), trust, unlock=True)
        journey.facts["fingerprint_after"] = view["fingerprint"]
        say(f"GET /kv/{DEMO_KEY} on the new node over attested TLS"
            f" ({literal(view['fingerprint'])}): {literal(value)}")  # fmt: skip

    step(12, "the service answers on the second node with the data", restored)
    journey.phases = marks.phases()

    def history() -> None:
        nodes = shell.json("lease", "show", lease, wallet=True).get("nodes") or []
        if [n["node"].lower() for n in nodes] != [first.lower(), second.lower()]:
            raise RuntimeError(f"`cvm lease show` history is {nodes}")
        journey.facts["nodes"] = nodes
        if guest_pids(data_dir, lease_id) and not volume_files(data_dir, lease_id):
            raise RuntimeError("the new guest runs without a volume")

    step(13, "cvm lease show: the lease's history of nodes", history)

    def close() -> None:
        shell.json("lease", "close", lease, unlock=True)
        wait_until("the guest stopping", lambda: not guest_pids(data_dir, lease_id), 60)

    step(14, "close the lease", close)


def abandon(shell: RenterShell, data_dir: Path, lease_id: int | None) -> None:
    """After a failed step: close the lease and stop any guest of this stack still running."""
    if lease_id is not None:
        try:
            shell.json("lease", "close", str(lease_id), unlock=True)
        except (CommandFailed, RuntimeError):
            pass
    for pid in guest_pids(data_dir, None):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def summary_rows(journey: FailoverJourney) -> list[tuple[str, str]]:
    facts = journey.facts
    rows = [
        ("workload", journey.workload),
        ("lease", str(facts.get("lease_id", ""))),
        ("first node (killed)", str(facts.get("first_node", ""))),
        ("second node", str(facts.get("second_node", ""))),
        ("value kept across the failover", str(facts.get("value", ""))),
        ("snapshot epoch before the kill", str(facts.get("epoch_before_kill", ""))),
    ]
    rows += [(f"phase: {name.replace('_', ' ')}", f"{seconds:.1f} s")
             for name, seconds in journey.phases.items()]  # fmt: skip
    rows.append(("AMD-SP", "SIMULATED (local stack; demo only)"))
    return rows
