"""The renter's journey to a real VM on `cvm up --launcher qemu`: rent by image with an SSH
key and a secret, Verified on chain with the guest's key bound, the secret sealed by the
renter's client and relayed as ciphertext, `cvm lease ssh N -- sha256sum` inside the guest,
close, guest stopped. The backend's and the node's files never hold the secret."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.images import Image, measure
from tests.e2e.conftest import Stack, new_wallet
from tests.e2e.harness import Cli, stop_up
from tests.fixtures.images import guest_image, image_store  # noqa: F401
from tests.fixtures.processes import wait_for
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

SECRET = b"the renter's API token: 4f1c...\n"


@pytest.fixture(scope="module")
def qemu_stack(
    tmp_path_factory: pytest.TempPathFactory,
    guest_image: Image,  # noqa: F811
) -> Iterator[Stack]:
    ensure_qemu()
    cli = Cli(tmp_path_factory.mktemp("cvm-vm"))
    # The renter's image store: `cvm rent --image` pushes the image from it to the backend,
    # from which the node downloads it into its own store (checked against the id).
    target = cli.data_dir / "images" / guest_image.image_id
    target.mkdir(parents=True)
    for path in guest_image.directory.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            target.joinpath(path.name).write_bytes(path.read_bytes())
    up = cli.spawn_up("--nodes", "1", "--launcher", "qemu")
    try:
        state = cli.wait_ready(up)
        yield Stack(cli, up, state)
    finally:
        stop_up(up)


def guest_processes(data_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if str(data_dir) in line]


def test_rent_a_real_vm_get_the_secret_over_ssh_and_close(qemu_stack, guest_image, tmp_path):  # noqa: F811
    stack = qemu_stack
    alice = new_wallet(stack, "alice")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")],
                   check=True)  # fmt: skip
    secret_file = tmp_path / "token"
    secret_file.write_bytes(SECRET)

    lease = stack.cli.json(
        "rent", "--vcpu", "1", "--memory", "512", "--disk", "1", "--duration", "10m",
        "--image", guest_image.image_id, "--ssh-key", str(tmp_path / "id.pub"),
        "--secret", f"token={secret_file}", "--trust-simulated-amd", "--timeout", "240", *alice,
    )  # fmt: skip
    lease_id = lease["lease_id"]
    assert lease["attestation"]["status"] == "verified"
    # The stack trusts its simulated AMD-SP, and says so wherever the lease is shown.
    assert lease["attestation"]["amd_root"] == "simulated"
    # Derived from the image, and what the node really booted (the simulated AMD-SP signs
    # the booted image's measurement, so a mismatch would have been rejected).
    assert lease["attestation"]["measurement"] == "0x" + measure(guest_image).hex()
    released = lease["released"]
    assert released["secrets"] == ["token"] and released["amd_root"] == "simulated"

    # Without trusting the simulated root, the same client releases nothing.
    refused = stack.cli.run("lease", "secrets", "put", str(lease_id), "--secret",
                            f"again={secret_file}", *alice, check=False)  # fmt: skip
    assert refused.code == 1 and "root" in refused.stderr.lower()
    assert "pass --trust-simulated-amd" in refused.stderr and "Traceback" not in refused.stderr

    def hashed() -> str:
        done = stack.cli.run(
            "lease", "ssh", str(lease_id), "-i", str(tmp_path / "id"), "--trust-simulated-amd",
            *alice, "--", "sha256sum", "/run/cvm/secrets/token", check=False,
        )  # fmt: skip
        return done.stdout.split()[0] if done.code == 0 and done.stdout else ""

    # The node relays on its next reconcile pass (every 2 s in the stack).
    assert wait_for(hashed, timeout=60, interval=1) == hashlib.sha256(SECRET).hexdigest()

    # The guest's own signed word on what it installed: the renter's one message, seq 1.
    status = stack.cli.json("lease", "secrets", "status", str(lease_id), "-i", str(tmp_path / "id"),
                            "--trust-simulated-amd", *alice)  # fmt: skip
    assert (status["installed_seq"], status["sent_seq"], status["withheld"]) == (1, 1, False)

    # The same, as the node relayed it (no SSH key needed; the node cannot raise it).
    def relayed() -> object:
        view = stack.cli.json("lease", "secrets", "status", str(lease_id),
                              "--trust-simulated-amd", *alice)  # fmt: skip
        return (view["source"], view["installed_seq"], view["withheld"])

    assert wait_for(lambda: relayed() == ("node", 1, False), timeout=30, interval=1)

    # The node had the image from the backend (pushed by `cvm rent`), in its own store.
    downloaded = list((stack.data_dir / "stack" / "node-images").glob(f"*/{guest_image.image_id}"))
    assert len(downloaded) == 1 and (downloaded[0] / "initrd.cpio").stat().st_size > 0

    # The guest's console reaches its renter through the node's host, marked untrusted.
    def console() -> str:
        return str(stack.cli.json("lease", "logs", str(lease_id), *alice)["text"])

    assert wait_for(lambda: "Linux version" in console(), timeout=30, interval=1)
    assert "UNTRUSTED" in stack.cli.run("lease", "logs", str(lease_id), *alice).stderr

    # The backend and the node carried only ciphertext.
    for path in (stack.data_dir / "stack").rglob("*"):
        if path.is_file():
            assert SECRET.strip() not in path.read_bytes(), path

    closed = stack.cli.json("lease", "close", str(lease_id), *alice)
    assert closed["status"] == "closed"
    assert wait_for(lambda: not guest_processes(stack.data_dir), timeout=60, interval=0.5)
