"""Issue 19's journey on a real TCG guest: your own service in a confidential VM.

The README's "Run your own service" commands, run as written (the lease is 1: this module's
stack is fresh), on one `cvm up --launcher qemu` stack: build the stateful example from its
workload file, rent it with `--disk 1`, Verified, the disk key released, the service answers
`cvm lease curl` over TLS pinned to the attested key, a value written; then the guest's QEMU
is killed, the node relaunches it on the same volume, it attests afresh (a new TLS key), the
key is released again and the value is still there; close removes the volume. Beside it, on
no guest: an app that differs in one byte, as a workload file or as an OCI archive, gives
another measurement (`cvm image measure`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.service_demo import guest_pids, volume_files
from tests.e2e.conftest import Stack
from tests.e2e.harness import Cli, Result, stop_up
from tests.fixtures.images import shared_image_store
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLE = REPO / "examples" / "kv-store"
BOOT_TIMEOUT_S = 420  # a TCG boot of the workload image on 2 busy cores, and its first report


def readme_lines() -> list[str]:
    """The shell lines of the README's "Run your own service" block (continuations joined)."""
    text = README.read_text()
    start = text.index("## Run your own service\n")
    section = text[start : text.index("\n## ", start + 1)]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


class CommandFailed(Exception):
    """A line exited non-zero (polled lines retry on it; anything else fails the test)."""


class Shell:
    """A renter's second shell: bash in a working directory holding the repository's examples
    (as the README's "from the repository's root"), `cvm` on the PATH, the stack's data
    directory in the environment. Lines run exactly as written, IMAGE replaced by the id."""

    def __init__(self, cli: Cli, work: Path) -> None:
        self.cli = cli
        self.work = work
        self.image = "IMAGE"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**cli.env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}

    def line(self, text: str, *, check: bool = True, timeout: float = 900) -> Result:
        typed = re.sub(r"\bIMAGE\b", self.image, text)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", typed],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        if check and result.code != 0:
            raise CommandFailed(f"{typed}\nexited {result.code}:\n{result.stderr[-3000:]}")
        return result

    def line_json(self, text: str, *, timeout: float = 900) -> dict:
        """A README line as written, with --json added (before its trailing comment)."""
        command = re.sub(r"\s+#[^'\"]*$", "", text)
        return dict(json.loads(self.line(f"{command} --json", timeout=timeout).stdout))

    def json(self, words: list[str]) -> dict:
        return dict(json.loads(self.line(shlex.join(["cvm", *words, "--json"])).stdout))


@pytest.fixture(scope="module")
def service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ensure_qemu()
    cli = Cli(tmp_path_factory.mktemp("cvm-service"))
    # Images (and the Debian packages they are built from) in the store the test suite keeps
    # between runs: an unchanged workload is not built again. The stack's backend serves them.
    cli.env["CVM_IMAGE_DIR"] = str(shared_image_store().root)
    up = cli.spawn_up("--nodes", "1", "--launcher", "qemu")
    try:
        state = cli.wait_ready(up)
        yield Stack(cli, up, state)
    finally:
        stop_up(up)
        # A guest outlives its node agent by design; one a failed test left running goes too.
        for pid in guest_pids(cli.data_dir, None):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def shell(service_stack: Stack, tmp_path: Path) -> Shell:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    password = work / "alice.pw"
    password.write_text("correct horse battery alice\n")
    password.chmod(0o600)
    return Shell(service_stack.cli, work)


def holds(path: Path, needle: bytes) -> bool:
    """Whether `needle` occurs in the file, read 4 MiB at a time (the volume is 1 GiB)."""
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 2**20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


def test_run_your_own_service_as_the_readme_says(service_stack: Stack, shell: Shell) -> None:
    data_dir = service_stack.data_dir
    lines = readme_lines()
    kinds = [" ".join(line.split()[:3]) for line in lines]
    assert kinds == [
        "cvm image build",
        "cvm image measure",
        "cvm wallet new",
        "cvm wallet fund",
        "(umask 077; printf",
        "cvm rent --vcpu",
        "cvm lease open",
        "cvm lease curl",
        "cvm lease curl",
        "cvm lease challenge",
        "cvm lease secrets",
        "cvm lease close",
    ], kinds
    build, measure, new, fund, token, rent, open_, write, read, challenge, release, close = lines

    shell.image = json.loads(shell.line(build, timeout=1800).stdout)["image"]
    measured = shell.line_json(measure)["measurement"]
    for line in (new, fund, token):
        shell.line(line)
    shell.line(rent, timeout=900)
    lease = shell.json(["lease", "show", "1"])
    assert lease["lease_id"] == 1  # the README's lease number on a fresh stack
    assert lease["attestation"]["status"] == "verified"
    assert lease["attestation"]["measurement"] == measured  # the app's image, as booted
    (volume,) = volume_files(data_dir, 1)
    assert volume.stat().st_size == 2**30  # --disk 1, sparse

    opened = shell.line_json(open_)
    fingerprint = opened["fingerprint"]

    # The service answers over TLS pinned to the attested key, once the guest has the token
    # and its volume open (the supervisor starts it only then).
    def written() -> bool:
        return shell.line_json(write)["status"] == 200

    assert wait_for(written, timeout=180, interval=2)
    assert shell.line(read).stdout == "hello"

    # The guest dies right after the answered write; its node relaunches it on the same
    # volume and attests it afresh.
    (before,) = guest_pids(data_dir, 1)
    attested = lease["attestation"]
    os.kill(before, signal.SIGKILL)
    assert wait_for(lambda: [pid for pid in guest_pids(data_dir, 1) if pid != before],
                    timeout=180, interval=1)  # fmt: skip

    # The registry takes the new guest's attestation at once only for a challenged lease.
    shell.line(challenge)

    def verified_again() -> bool:
        now = shell.json(["lease", "show", "1"])["attestation"]
        return bool(now["status"] == "verified" and now["report_hash"] != attested["report_hash"])

    assert wait_for(verified_again, timeout=BOOT_TIMEOUT_S, interval=3)
    assert volume_files(data_dir, 1) == [volume]
    # The host holds only ciphertext of what the app wrote.
    assert not holds(volume, b"hello"), f"{volume} holds the app's plaintext"

    shell.line(release)  # KV_TOKEN again, and the lease's disk key with it
    assert wait_for(
        lambda: shell.line(read, check=False).stdout == "hello", timeout=180, interval=2
    )
    again = shell.line_json(open_)
    assert again["fingerprint"] != fingerprint  # a new guest made a new TLS key at boot

    shell.line(close)
    assert shell.json(["lease", "show", "1"])["status"] == "closed"
    assert wait_for(lambda: not guest_pids(data_dir, 1), timeout=60, interval=0.5)
    assert wait_for(lambda: not volume_files(data_dir, 1), timeout=60, interval=0.5)


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _oci_workload(directory: Path, app: bytes) -> Path:
    """A workload whose root file system is a `docker save` archive holding `app`."""
    from tests.unit.test_oci import _tar, docker_save

    directory.mkdir()
    layer = _tar([("app", "dir", None), ("app/server.py", 0o755, app)])
    docker_save(directory / "image.tar", [layer])
    (directory / "workload.toml").write_text(
        'format = "cvm.workload.v1"\nname = "oci-app"\noci = "image.tar"\n'
        '[[ports]]\nname = "http"\nport = 8080\n'
    )
    return directory / "workload.toml"


def test_one_byte_of_the_app_changes_the_measurement(tmp_path: Path) -> None:
    """`cvm image build --workload` then `cvm image measure`, on no guest: the measurement
    covers the app, from a workload file's files or from an OCI archive's layers."""
    cli = Cli(tmp_path / "data")
    cli.data_dir.mkdir()
    cli.env["CVM_IMAGE_DIR"] = str(shared_image_store().root)

    def measured(workload: Path) -> str:
        image = cli.json("image", "build", "--workload", str(workload))["image"]
        return str(cli.json("image", "measure", image, "--vcpus", "1")["measurement"])

    changed = tmp_path / "kv-store"
    shutil.copytree(EXAMPLE, changed)
    _flip_one_byte(changed / "app" / "server.py")
    assert measured(EXAMPLE / "workload.toml") != measured(changed / "workload.toml")

    app = (EXAMPLE / "app" / "server.py").read_bytes()
    other = bytearray(app)
    other[len(other) // 2] ^= 0x01
    first = _oci_workload(tmp_path / "oci-a", app)
    second = _oci_workload(tmp_path / "oci-b", bytes(other))
    assert measured(first) != measured(second)
