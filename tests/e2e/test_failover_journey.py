"""Issue 20's journey on real TCG guests: a lease that survives its node.

Three key holders (2-of-3) and two qemu nodes on the embedded stack. The stateful example is
rented with `--key-service --failover`; a value is written over attested TLS; once a snapshot
epoch covers it, the first node's agent and guest are SIGKILLed; the failover watch moves the
lease; the second node's guest gets the key from the holders, restores the snapshot and
serves the value again over attested TLS. Then only that guest's QEMU is SIGKILLed: its node
relaunches it, asks the backend for a challenge, answers it, and the new guest gets the key
and serves the value again. The renter runs no command after renting but reads.

Two ways, each on a stack of its own: `cvm demo --failover --json` (the journey with its
phases timed), and the README's "Leases that survive their node" commands as written. The
demo runs in the background while the README's commands run: most of each journey is
waiting (snapshot epochs, the liveness timeout, the challenge window), so the two waits
overlap instead of adding up. Neither shares anything with the other but the image store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.service_demo import guest_pids
from tests.e2e.conftest import Stack
from tests.e2e.harness import Cli, stop_up
from tests.e2e.test_service_journey import CommandFailed, Shell
from tests.fixtures.images import shared_image_store
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
WORKLOAD = REPO / "examples" / "kv-store" / "workload.toml"
MOVE_TIMEOUT_S = 900  # detection (~1 min with the short windows) + a TCG boot on 2 busy cores
RELAUNCH_TIMEOUT_S = 600  # a TCG boot, a challenge and its answer, the verifiers, the holders


def readme_lines() -> list[str]:
    """The shell lines of the README's "Leases that survive their node" block."""
    text = README.read_text()
    start = text.index("## Leases that survive their node\n")
    section = text[start : text.index("\n## ", start + 1)]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def kill_guests(data_dir: Path) -> None:
    """A guest outlives its node agent by design; those a failed test left running go too."""
    for pid in guest_pids(data_dir, None):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture  # stopped right after its journey: the demo may still be running
def failover_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ensure_qemu()
    cli = Cli(tmp_path_factory.mktemp("cvm-failover"))
    cli.env["CVM_IMAGE_DIR"] = str(shared_image_store().root)
    cli.env["CVM_SNAPSHOT_INTERVAL_S"] = "10"  # the agents snapshot often (inherited by up)
    up = cli.spawn_up("--holders", "3", "--nodes", "2", "--launcher", "qemu",
                      "--challenge-window", "30", "--liveness-timeout", "15")  # fmt: skip
    try:
        state = cli.wait_ready(up)
        yield Stack(cli, up, state)
    finally:
        stop_up(up)
        kill_guests(cli.data_dir)


@dataclass
class DemoRun:
    cli: Cli
    process: subprocess.Popen[str]
    stdout: Path
    stderr: Path


def build_workload_image(cli: Cli) -> None:
    """The stateful example's image, built before both journeys start, so that they do not
    build the same image at once; each journey's own build step then finds it by its recipe."""
    cli.run("image", "build", "--workload", str(WORKLOAD), "--json", timeout=1800)


@pytest.fixture(scope="module")
def failover_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """`cvm demo --failover --json`, started in the background (its outcome is asserted by
    the demo's test, which waits for it)."""
    ensure_qemu()
    cli = Cli(tmp_path_factory.mktemp("cvm-failover-demo") / "data")
    cli.data_dir.mkdir()
    cli.env["CVM_IMAGE_DIR"] = str(shared_image_store().root)
    build_workload_image(cli)
    stdout, stderr = cli.data_dir.parent / "demo.json", cli.data_dir.parent / "demo.log"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "cvm", "demo", "--failover", "--json",
             "--workload", str(WORKLOAD)],
            env=cli.env, cwd=cli.data_dir, stdout=out, stderr=err, text=True,
        )  # fmt: skip
    try:
        yield DemoRun(cli, process, stdout, stderr)
    finally:
        if process.poll() is None:  # a failed test left it running: Ctrl-C, as a user would
            process.send_signal(signal.SIGINT)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_guests(cli.data_dir)


# Started first, so the README's journey runs while the demo runs; the demo's test follows.
@pytest.mark.usefixtures("failover_demo")
def test_leases_that_survive_their_node_as_the_readme_says(
    failover_stack: Stack, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    password = work / "bob.pw"
    password.write_text("correct horse battery bob\n")
    password.chmod(0o600)
    shell = Shell(failover_stack.cli, work)
    lines = readme_lines()
    kinds = [" ".join(line.split()[:3]) for line in lines]
    assert kinds == [
        "cvm image build",
        "cvm wallet new",
        "cvm wallet fund",
        "(umask 077; printf",
        "cvm rent --vcpu",
        "cvm lease curl",
        "cvm lease show",
        "cvm down --kill-node",
        "cvm lease show",
        "cvm lease curl",
        "cvm lease close",
    ], kinds
    build, new, fund, token, rent, write, show, kill, _show_again, read, close = lines

    shell.image = json.loads(shell.line(build, timeout=1800).stdout)["image"]
    for line in (new, fund, token):
        shell.line(line)
    shell.line(rent, timeout=900)
    lease = shell.json(["lease", "show", "1"])
    assert lease["attestation"]["status"] == "verified"
    first = lease["node"]

    # The guest got its key from the holders (no release by the client): it answers.
    def written() -> bool:
        return shell.line_json(write)["status"] == 200

    assert wait_for(written, timeout=300, interval=2)
    epoch_at_write = shell.line_json(show).get("snapshot_epoch") or 0

    def snapshotted() -> bool:  # two on: a snapshot under way at the write may predate it
        return (shell.line_json(show).get("snapshot_epoch") or 0) >= epoch_at_write + 2

    assert wait_for(snapshotted, timeout=180, interval=3)

    shell.line(kill)

    def moved() -> bool:
        nodes = shell.line_json(show).get("nodes") or []
        return len(nodes) == 2 and nodes[0]["ended_at"] is not None

    assert wait_for(moved, timeout=MOVE_TIMEOUT_S, interval=3)
    nodes = shell.line_json(show)["nodes"]
    assert nodes[0]["node"] == first and nodes[1]["node"] != first

    def answered() -> bool:
        try:
            return shell.line(read, check=True).stdout == "hello"
        except CommandFailed:
            return False

    assert wait_for(answered, timeout=MOVE_TIMEOUT_S, interval=3)

    # A guest crash on the same node: only the lease's guest QEMU dies. Its node relaunches it
    # and, since the registry takes no fresh report early in the interval unless the lease was
    # challenged, asks the backend for a challenge; the failover watch challenges, the node
    # answers with the new guest's report, the holders release the key to it. The renter only
    # reads. (After the move, not before: the chain allows one challenge per lease per
    # MIN_CHALLENGE_INTERVAL, an hour, and the move resets it; a requested challenge before the
    # kill would leave the dead node to be found only when its attestation expires.)
    before = shell.json(["lease", "show", "1"])["attestation"]["report_hash"]
    (guest,) = guest_pids(failover_stack.cli.data_dir, 1)
    os.kill(guest, signal.SIGKILL)

    def reattested() -> bool:
        attestation = shell.json(["lease", "show", "1"])["attestation"]
        return attestation["status"] == "verified" and attestation["report_hash"] != before

    assert wait_for(reattested, timeout=RELAUNCH_TIMEOUT_S, interval=3)
    assert wait_for(answered, timeout=RELAUNCH_TIMEOUT_S, interval=3)
    shell.line(close)
    assert shell.json(["lease", "show", "1"])["status"] == "closed"


def test_cvm_demo_failover_moves_the_lease_with_its_data(failover_demo: DemoRun) -> None:
    try:
        code = failover_demo.process.wait(timeout=3600)
    finally:
        kill_guests(failover_demo.cli.data_dir)
    stdout, stderr = failover_demo.stdout.read_text(), failover_demo.stderr.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    outcome = json.loads(stdout)
    assert code == 0 and outcome["ok"], (outcome.get("failed_step"), stderr[-3000:])
    assert outcome["first_node"].lower() != outcome["second_node"].lower()
    assert [n["node"].lower() for n in outcome["nodes"]] == [
        outcome["first_node"].lower(),
        outcome["second_node"].lower(),
    ]
    assert outcome["nodes"][0]["reason"] in ("attestation_expired", "first_attestation_missed")
    assert set(outcome["phases"]) >= {"detection", "matching", "boot", "key_release", "restore"}
    assert all(seconds >= 0 for seconds in outcome["phases"].values())
    assert outcome["epoch_before_kill"] >= 1
