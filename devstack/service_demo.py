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
import tempfile
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
DISK_KEY = "cvm.disk_key"  # the sealed-secret name of a lease's volume key


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


def guest_pids(data_dir: Path, lease_id: int | None) -> list[int]:
    """QEMU processes of this stack's guests (of one lease, or of any with None), by their
    command line: the guest's name and the stack's data directory."""
    name = b"cvm-lease-" if lease_id is None else f"cvm-lease-{lease_id}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        named = name in argv if lease_id is not None else any(a.startswith(name) for a in argv)
        if state != "Z" and named and any(str(data_dir).encode() in part for part in argv):
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


def workload_secrets(image_dir: Path, image_id: str) -> list[str]:
    """The secret names the image's workload expects (its manifest's summary)."""
    manifest = json.loads((image_dir / image_id / "manifest.json").read_text())
    return [str(name) for name in (manifest.get("workload") or {}).get("secrets") or []]


def make_secrets(work: Path, names: list[str]) -> tuple[list[str], Path | None]:
    """A random value for each secret the workload expects, in owner-only files under `work`
    (`--secret NAME=FILE` options), and a header file with the first as a bearer token (the
    kv-store example's API key): values never reach a command line."""
    import secrets as random

    options: list[str] = []
    header: Path | None = None
    for name in names:
        value = random.token_hex(16)
        path = work / f"secret-{name}"
        path.touch(mode=0o600)
        path.write_text(value)
        options += ["--secret", f"{name}={path}"]
        if header is None:
            header = work / "auth-header"
            header.touch(mode=0o600)
            header.write_text(f"Authorization: Bearer {value}\n")
    return options, header


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
    with tempfile.TemporaryDirectory(prefix="cvm-service-demo-") as work:
        _journey(state, shell, image_id, journey, step, timeout, say, Path(work))


def _journey(
    state: StackState,
    shell: RenterShell,
    image_id: str,
    journey: ServiceJourney,
    step: Callable[..., Any],
    timeout: float,
    say: Callable[[str], None],
    work: Path,
) -> None:
    from cvm.config import Settings

    data_dir = Path(state.data_dir)
    image_dir = Settings(data_dir=data_dir).image_dir
    trust = "--trust-simulated-amd"  # the local stack's guests are attested by its simulator
    journey.facts["image"] = image_id

    def measure() -> tuple[int, list[str], Path | None]:
        view = shell.json("image", "measure", image_id, "--vcpus", "1")
        journey.facts["measurement"] = view["measurement"]
        port = workload_port(image_dir, image_id)
        journey.facts["port"] = port
        return port, *make_secrets(work, workload_secrets(image_dir, image_id))

    port, secret_options, header = step(
        2, "measure the image; its workload's port and secrets", measure
    )
    headers = ["-H", f"@{header}"] if header is not None else []

    def wallet() -> None:
        secret = work / "wallet.password"
        secret.touch(mode=0o600)
        secret.write_text(f"service demo {os.getpid()} {time.time_ns()}\n")
        name = f"service-{time.time_ns()}"
        shell.json("wallet", "new", name, "--password-file", str(secret), *_WALLET_KDF)
        shell.json("wallet", "fund", name, "--tokens", "100")
        shell.wallet_name, shell.password_file = name, secret

    step(3, "a funded renter wallet", wallet)

    def rent() -> int:
        lease = shell.json(
            "rent", "--vcpu", "1", "--memory", "512", "--disk", "1", "--duration", "30m",
            "--image", image_id, *secret_options, trust, "--timeout", str(int(timeout)),
            unlock=True,
        )  # fmt: skip
        status = lease["attestation"]["status"]
        if status != "verified":
            raise RuntimeError(f"lease {lease['lease_id']} ended as {status}, not Verified")
        journey.facts["lease_id"] = lease["lease_id"]
        journey.facts["node"] = lease.get("node")
        journey.facts["released"] = lease.get("released") or {}
        return int(lease["lease_id"])

    lease_id = step(4, "rent it with --disk 1: matched, booted, Verified", rent)
    lease = str(lease_id)

    def key_released() -> None:
        released = journey.facts.get("released") or {}
        if not released.get("disk_key"):
            raise RuntimeError(f"`cvm rent` released no disk key ({released.get('secrets')})")
        if not volume_files(data_dir, lease_id):
            raise RuntimeError("the node holds no volume file for the lease")
        names = [*map(literal, released.get("secrets") or []), DISK_KEY]
        say(f"sealed to the attested guest: {', '.join(names)}")

    step(5, "the disk key is released to the attested guest", key_released)

    def open_port() -> str:
        view = shell.json("lease", "open", lease, str(port), trust, unlock=True)
        journey.facts["address"] = view.get("address")
        journey.facts["fingerprint"] = view["fingerprint"]
        journey.facts["fingerprint_sha256"] = view.get("fingerprint_sha256")
        say(
            f"port {port} at {literal(view.get('address'))}, attested TLS key "
            f"[bold]{literal(view['fingerprint'])}[/bold]"
        )
        return str(view["fingerprint"])

    first_fingerprint = step(6, f"port {port} over attested TLS (cvm lease open)", open_port)
    value = f"written before the restart at {time.strftime('%H:%M:%S')}"
    journey.facts["value"] = value
    path = f"/kv/{DEMO_KEY}"

    def curl(*extra: str) -> dict[str, Any]:
        return dict(shell.json("lease", "curl", lease, str(port), path, *extra, *headers, trust,
                               unlock=True))  # fmt: skip

    def write() -> None:
        # The supervisor starts the app once its secrets are in and its volume is open.
        wait_until("the service storing the value",
                   lambda: curl("-X", "PUT", "-d", value)["status"] == 200, timeout)  # fmt: skip
        read = curl()
        if read["status"] != 200 or read["body"] != value:
            raise RuntimeError(
                f"the service answered {read['status']}: {literal(read['body'][:200])}"
            )
        say(f"PUT then GET {path} over attested TLS: {literal(value)}")

    step(7, "write a value to the service (cvm lease curl)", write)

    def restart() -> None:
        before = guest_pids(data_dir, lease_id)
        if not before:
            raise RuntimeError("no QEMU process runs the guest")
        reported = shell.json("lease", "show", lease, wallet=True)["attestation"]
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        say(f"killed the guest's QEMU (pid {', '.join(map(str, before))})")
        after = wait_until(
            "the node relaunching the guest",
            lambda: [pid for pid in guest_pids(data_dir, lease_id) if pid not in before],
            timeout,
        )
        say(f"the node relaunched it (pid {', '.join(map(str, after))})")
        # The registry takes a fresh attestation in the first half of the re-attestation
        # interval only after a challenge: the renter asks for one, the node answers at once.
        shell.json("lease", "challenge", lease, unlock=True)
        say("challenged the lease: its node must attest the new guest now")

        def attested_again() -> bool:
            now = shell.json("lease", "show", lease, wallet=True)["attestation"]
            return bool(
                now["status"] == "verified"
                and now.get("report_hash") != reported.get("report_hash")
            )

        wait_until("a fresh Verified attestation of the relaunched guest", attested_again, timeout)
        if not volume_files(data_dir, lease_id):
            raise RuntimeError("the relaunched guest has no volume file")

    step(
        8,
        "kill the guest: its node relaunches it on the same volume; challenged, Verified again",
        restart,
    )

    def release_again() -> None:
        answer = shell.json("lease", "secrets", "put", lease, *secret_options, trust, unlock=True)
        if not answer.get("disk_key"):
            raise RuntimeError(f"the client released no disk key ({answer.get('secrets')})")

    step(9, "release the secrets and the disk key to the new guest", release_again)

    def read_back() -> None:
        def answered() -> dict[str, Any] | None:
            got = curl()
            return got if got["status"] == 200 else None

        got = wait_until("the relaunched service answering", answered, timeout)
        if got["body"] != value:
            raise RuntimeError(
                f"after the restart the service answered {literal(got['body'][:200])}"
            )
        view = shell.json("lease", "open", lease, str(port), trust, unlock=True)
        journey.facts["fingerprint_after_restart"] = view["fingerprint"]
        if view["fingerprint"] == first_fingerprint:
            raise RuntimeError("the relaunched guest kept the old TLS key: it made none at boot")
        say(
            f"GET {path}: {literal(value)} (still there); the new guest's attested TLS"
            f" key is {literal(view['fingerprint'])}"
        )

    step(10, "the value is still there, over the new attested TLS key", read_back)

    def close() -> None:
        shell.json("lease", "close", lease, unlock=True)
        wait_until("the guest stopping", lambda: not guest_pids(data_dir, lease_id), 60)
        wait_until("the volume file removed", lambda: not volume_files(data_dir, lease_id), 60)
        say("the node stopped the guest and removed its volume")

    step(11, "close: the guest stops, its volume is removed", close)


def abandon_lease(shell: RenterShell, data_dir: Path, lease_id: int | None) -> None:
    """After a failed step: close the demo's lease (the renter's refund; its node stops the
    guest and removes the volume), and stop a guest of this stack that still runs (a QEMU
    guest outlives its node agent by design). Best effort: the failure is what is reported."""
    if lease_id is None:
        return
    try:
        shell.json("lease", "close", str(lease_id), unlock=True)
        wait_until("the guest stopping", lambda: not guest_pids(data_dir, lease_id), 30)
    except (CommandFailed, RuntimeError):
        for pid in guest_pids(data_dir, lease_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def summary_rows(journey: ServiceJourney) -> Sequence[tuple[str, str]]:
    facts = journey.facts
    rows = [
        ("workload", journey.workload),
        ("image", str(facts.get("image", ""))),
        ("measurement", str(facts.get("measurement", ""))),
        ("lease", str(facts.get("lease_id", ""))),
        ("service port", f"{facts.get('port', '')} at {facts.get('address', '')}"),
        ("attested TLS fingerprint", str(facts.get("fingerprint", ""))),
        ("  sha256 hex", str(facts.get("fingerprint_sha256", ""))),
        ("after the restart", str(facts.get("fingerprint_after_restart", ""))),
        ("value kept across the restart", str(facts.get("value", ""))),
        ("AMD-SP", "SIMULATED (local stack; demo only)"),
    ]
    return rows
