"""`cvm demo --workload FILE`: your own service in a confidential VM, the README's "Run your
own service" typed by a script on the embedded stack (`cvm up --launcher qemu`).

Every step is the `cvm` command a renter types (run as a subprocess with the stack's data
directory, exactly as a second shell would): build the workload's image, rent it with an
encrypted disk, Verified, the disk key released to the attested guest, the service reached
over attested TLS (`cvm lease open`, `cvm lease curl`), a value written, the guest killed and
relaunched by its node on the same volume, the key released again, the value read back, close
(volume removed). The first failing step ends the demo with its number and title.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvm.cli.plumbing import literal

if TYPE_CHECKING:
    from devstack import StackState

# The demo's wallet unlocks in every command: a cheap KDF keeps each under a second.
_WALLET_KDF = ("--kdf", "pbkdf2", "--iterations", "1000")
DEMO_KEY = "greeting"


class CommandFailed(RuntimeError):
    """A `cvm` command exited non-zero; the message is its last words (it prints no traceback)."""


@dataclass
class RenterShell:
    """`cvm ...` as a renter's shell on this stack runs it: the stack's data directory and
    deployment record in the environment, the demo's wallet on every command."""

    data_dir: Path
    wallet_name: str | None = None
    password_file: Path | None = None
    timeout_s: float = 600.0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CVM_DATA_DIR": str(self.data_dir),
            "CVM_DEPLOYMENT_FILE": str(self.data_dir / "deployment.json"),
            "COLUMNS": "200",
        }

    def wallet_args(self, unlock: bool) -> list[str]:
        """`--wallet NAME` (read-only commands), with `--password-file` when it unlocks."""
        words = ["--wallet", self.wallet_name] if self.wallet_name else []
        if unlock and self.password_file is not None:
            words += ["--password-file", str(self.password_file)]
        return words

    def run(self, *args: str, wallet: bool = False, unlock: bool = False) -> str:
        chosen = self.wallet_args(unlock) if wallet or unlock else []
        argv = [sys.executable, "-m", "cvm", *args, *chosen]
        try:
            done = subprocess.run(
                argv,
                env=self.env(),
                cwd=self.data_dir,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandFailed(
                f"`cvm {' '.join(args)}` did not end in {self.timeout_s:.0f} s"
            ) from None
        if done.returncode != 0:
            words = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise CommandFailed(
                f"`cvm {' '.join(args)}` exited {done.returncode}: " + " / ".join(words)
            )
        return done.stdout

    def json(self, *args: str, wallet: bool = False, unlock: bool = False) -> Any:
        text = self.run(*args, "--json", wallet=wallet, unlock=unlock)
        try:
            return json.loads(text)
        except ValueError:
            raise CommandFailed(f"`cvm {' '.join(args)} --json` printed no JSON") from None


@dataclass
class StepRecord:
    number: int
    title: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class ServiceJourney:
    """What the journey found, for the summary and `--json`."""

    workload: str
    steps: list[StepRecord] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        failed = next((step for step in self.steps if not step.ok), None)
        return {
            "ok": failed is None,
            "workload": self.workload,
            "failed_step": None if failed is None else f"{failed.number}. {failed.title}",
            "steps": [step.__dict__ for step in self.steps],
            **self.facts,
        }


def workload_port(image_dir: Path, image_id: str) -> int:
    """The first port the image's workload declares (its manifest's summary)."""
    manifest = json.loads((image_dir / image_id / "manifest.json").read_text())
    ports = (manifest.get("workload") or {}).get("ports") or []
    if not ports:
        raise RuntimeError(f"image {image_id} declares no [[ports]]: nothing to reach over TLS")
    first = ports[0]
    return int(first["port"] if isinstance(first, dict) else first)


def guest_pids(data_dir: Path, lease_id: int) -> list[int]:
    """QEMU processes of this stack's guest for `lease_id` (by their command line)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        if f"cvm-lease-{lease_id}".encode() in argv and any(
            str(data_dir).encode() in part for part in argv
        ):
            found.append(int(proc.name))
    return found


def volume_files(data_dir: Path, lease_id: int) -> list[Path]:
    """The node's volume file of `lease_id` (`<node data dir>/volumes/lease-<id>.img`)."""
    return sorted((data_dir / "stack").rglob(f"volumes/lease-{lease_id}.img"))


def wait_until(
    what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 1.0
) -> Any:
    """`check()`'s first truthy answer; RuntimeError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except (CommandFailed, RuntimeError) as exc:
            last = exc
        if time.monotonic() > deadline:
            suffix = f" (last: {last})" if last else ""
            raise RuntimeError(f"{what} did not happen within {timeout_s:.0f} s{suffix}")
        time.sleep(interval_s)


def build_workload_image(shell: RenterShell, workload: Path) -> str:
    """`cvm image build --workload FILE`: the image id."""
    view = shell.json("image", "build", "--workload", str(workload))
    return str(view["image"])


def run_service_journey(
    state: StackState,
    shell: RenterShell,
    image_id: str,
    journey: ServiceJourney,
    step: Callable[..., Any],
    timeout: float,
    say: Callable[[str], None],
) -> None:
    """Steps 2 onward of the journey (step 1, the build, runs before the stack starts)."""
    from cvm.config import Settings

    data_dir = Path(state.data_dir)
    image_dir = Settings(data_dir=data_dir).image_dir
    port = workload_port(image_dir, image_id)
    journey.facts.update(image=image_id, port=port)

    def measure() -> str:
        view = shell.json("image", "measure", image_id, "--vcpus", "1")
        journey.facts["measurement"] = view["measurement"]
        return str(view["measurement"])

    step(2, "measure the image (what the lease will expect)", measure)

    def wallet() -> None:
        secret = data_dir / "stack" / "service-demo.password"
        secret.write_text(f"service demo {os.getpid()} {time.time_ns()}\n")
        secret.chmod(0o600)
        name = f"service-{time.time_ns()}"
        shell.json("wallet", "new", name, "--password-file", str(secret), *_WALLET_KDF)
        shell.json("wallet", "fund", name, "--tokens", "100")
        shell.wallet_name, shell.password_file = name, secret

    step(3, "a funded renter wallet", wallet)

    def rent() -> int:
        lease = shell.json(
            "rent", "--vcpu", "1", "--memory", "512", "--disk", "1", "--duration", "30m",
            "--image", image_id, "--trust-simulated-amd", "--timeout", str(int(timeout)),
            unlock=True,
        )  # fmt: skip
        status = lease["attestation"]["status"]
        if status != "verified":
            raise RuntimeError(f"lease {lease['lease_id']} ended as {status}, not Verified")
        journey.facts["lease_id"] = lease["lease_id"]
        journey.facts["node"] = lease.get("node")
        return int(lease["lease_id"])

    lease_id = step(4, "rent it with --disk 1: matched, booted, Verified", rent)

    def key_released() -> None:
        # `cvm rent` released the lease's disk key (the workload has [disk]); the guest's
        # signed status says it installed it and opened the volume.
        status = shell.json("lease", "secrets", "status", str(lease_id), "--trust-simulated-amd",
                            unlock=True)  # fmt: skip
        journey.facts["volume"] = status.get("volume")
        if not volume_files(data_dir, lease_id):
            raise RuntimeError("the node holds no volume file for the lease")

    step(5, "the disk key is released to the attested guest", key_released)

    def open_port() -> str:
        view = wait_until(
            "the service port open over attested TLS",
            lambda: shell.json("lease", "open", str(lease_id), str(port), unlock=True),
            timeout,
        )
        journey.facts["address"] = view.get("address")
        journey.facts["fingerprint"] = view["fingerprint"]
        say(
            f"port {port} at {literal(view.get('address'))}, attested TLS key "
            f"[bold]{literal(view['fingerprint'])}[/bold]"
        )
        return str(view["fingerprint"])

    first_fingerprint = step(6, f"port {port} over attested TLS (cvm lease open)", open_port)
    value = f"written before the restart, {time.strftime('%H:%M:%S')}"
    journey.facts["value"] = value

    def write() -> None:
        wait_until(
            "the service answering",
            lambda: shell.run(
                "lease",
                "curl",
                str(lease_id),
                str(port),
                f"/kv/{DEMO_KEY}",
                "--data",
                value,
                unlock=True,
            ),
            timeout,
        )
        read = shell.run("lease", "curl", str(lease_id), str(port), f"/kv/{DEMO_KEY}", unlock=True)
        if value not in read:
            raise RuntimeError(f"the service answered {literal(read[:200])!r}, not the value")
        say(f"PUT then GET /kv/{DEMO_KEY} over attested TLS: {literal(value)}")

    step(7, "write a value to the service (cvm lease curl)", write)

    def restart() -> None:
        before = guest_pids(data_dir, lease_id)
        if not before:
            raise RuntimeError("no QEMU process runs the guest")
        reported = shell.json("lease", "show", str(lease_id), wallet=True)["attestation"]
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        say(f"killed the guest's QEMU (pid {', '.join(map(str, before))})")
        after = wait_until(
            "the node relaunching the guest",
            lambda: [pid for pid in guest_pids(data_dir, lease_id) if pid not in before],
            timeout,
        )
        say(f"the node relaunched it (pid {', '.join(map(str, after))})")

        def attested_again() -> bool:
            now = shell.json("lease", "show", str(lease_id), wallet=True)["attestation"]
            return bool(
                now["status"] == "verified"
                and now.get("report_hash") != reported.get("report_hash")
            )

        wait_until("a fresh Verified attestation of the relaunched guest", attested_again, timeout)
        files = volume_files(data_dir, lease_id)
        if not files:
            raise RuntimeError("the relaunched guest has no volume file")
        journey.facts["volume_file"] = str(files[0])

    step(8, "kill the guest: its node relaunches it on the same volume, Verified again", restart)

    def release_again() -> None:
        shell.json("lease", "secrets", "put", str(lease_id), "--trust-simulated-amd", unlock=True)

    step(9, "release the disk key to the new guest", release_again)

    def read_back() -> str:
        def answer() -> str:
            return shell.run("lease", "curl", str(lease_id), str(port), f"/kv/{DEMO_KEY}",
                             unlock=True)  # fmt: skip

        got = wait_until("the relaunched service answering", answer, timeout)
        if value not in got:
            raise RuntimeError(f"after the restart the service answered {literal(got[:200])!r}")
        view = shell.json("lease", "open", str(lease_id), str(port), unlock=True)
        journey.facts["fingerprint_after_restart"] = view["fingerprint"]
        say(
            f"GET /kv/{DEMO_KEY}: {literal(value)} (still there); the new guest's attested TLS"
            f" key is {literal(view['fingerprint'])}"
        )
        return str(view["fingerprint"])

    second_fingerprint = step(
        10, "the value is still there, over the new attested TLS key", read_back
    )
    if second_fingerprint == first_fingerprint:
        raise RuntimeError("the relaunched guest kept the old TLS key: it made none at boot")

    def close() -> None:
        shell.json("lease", "close", str(lease_id), unlock=True)
        wait_until("the guest stopping", lambda: not guest_pids(data_dir, lease_id), 60)
        wait_until("the volume file removed", lambda: not volume_files(data_dir, lease_id), 60)
        say("the node stopped the guest and removed its volume")

    step(11, "close: the guest stops, its volume is removed", close)


def summary_rows(journey: ServiceJourney) -> Sequence[tuple[str, str]]:
    facts = journey.facts
    rows = [
        ("workload", journey.workload),
        ("image", str(facts.get("image", ""))),
        ("measurement", str(facts.get("measurement", ""))),
        ("lease", str(facts.get("lease_id", ""))),
        ("service port", f"{facts.get('port', '')} at {facts.get('address', '')}"),
        ("attested TLS fingerprint", str(facts.get("fingerprint", ""))),
        ("after the restart", str(facts.get("fingerprint_after_restart", ""))),
        ("value kept across the restart", str(facts.get("value", ""))),
        ("AMD-SP", "SIMULATED (local stack; demo only)"),
    ]
    return rows
