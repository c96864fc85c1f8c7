"""The renter's journey to a real VM on `cvm up --launcher qemu`: rent by image with an SSH
key and a secret, Verified on chain with the guest's key bound, the secret sealed by the
renter's client and relayed as ciphertext, `cvm lease ssh N -- sha256sum` inside the guest,
close, guest stopped. The backend's and the node's files never hold the secret.

On the same guest, the README's dApp journey: a process inside the guest signs a result
with the key the guest made at boot, the renter posts it to an `AttestedService` trusting
the image; the node key's signature, a replay and another lease are refused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_utils import keccak

from cvm.chain import (
    ContractRevert,
    deploy_attested_service,
    recover_guest_result,
    sign_guest_result,
    verify_guest_result,
)
from cvm.images import Image, measure
from cvm.sdk import AttestationClient
from cvm.wallet import load_account, read_password_file
from tests.e2e.conftest import Stack, chain_of, new_wallet, node_name, stack_key
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

    # The lease's disk (--disk 1): the client sealed its disk key with the secrets; the guest
    # formatted its encrypted volume and says so over the attested SSH channel.
    assert released["disk_key"] is True

    def volume() -> object:
        view = stack.cli.json("lease", "secrets", "status", str(lease_id), "-i",
                              str(tmp_path / "id"), "--trust-simulated-amd", *alice)  # fmt: skip
        return view["volume"] if view["volume"]["state"] not in ("locked", "opening") else None

    assert wait_for(volume, timeout=120, interval=2) == {
        "state": "open", "formatted_at_boot": True, "integrity_errors": 0}  # fmt: skip
    volumes = list(stack.data_dir.glob(f"**/volumes/lease-{lease_id}.img"))
    assert len(volumes) == 1 and volumes[0].stat().st_size == 2**30

    # The same, as the node relayed it (no SSH key needed; the node cannot raise it).
    def relayed() -> object:
        view = stack.cli.json("lease", "secrets", "status", str(lease_id),
                              "--trust-simulated-amd", *alice)  # fmt: skip
        return (view["source"], view["installed_seq"], view["withheld"])

    assert wait_for(lambda: relayed() == ("node", 1, False), timeout=30, interval=1)

    dapp_journey(stack, lease, guest_image, tmp_path / "id", alice)

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


def dapp_journey(
    stack: Stack,
    lease: dict,
    image: Image,
    identity: Path,
    renter: list[str],
) -> None:
    """The README's dApp journey, command for command, on the running real guest.

    A result counts only when signed inside the guest by its attested signer: before
    issue 17 AttestedService took the node key's word (the node-key post below passed),
    and before `verify_guest_result` a dApp could not check a result off chain at all."""
    lease_id = lease["lease_id"]
    # The dApp trusts its image: `cvm image measure IMAGE --vcpus 1`.
    measured = stack.cli.json("image", "measure", image.image_id, "--vcpus", "1")
    assert measured["measurement"] == lease["attestation"]["measurement"]
    measurement = bytes.fromhex(measured["measurement"].removeprefix("0x"))
    account = load_account(
        stack.data_dir / "wallets" / "alice.json", read_password_file(Path(renter[3]))
    )
    chain = chain_of(stack).with_account(account)  # any account can deploy and relay
    dapp = deploy_attested_service(chain, measurement)
    assert dapp.service.expected_measurement() == measurement

    # A process inside the guest signs its result; over SSH with the renter's key.
    request, result = os.urandom(32), b"42"
    signed = stack.cli.run(
        "lease", "ssh", str(lease_id), "-i", str(identity), "--trust-simulated-amd", *renter,
        "--", f"printf 42 | python3 /usr/lib/cvm/agent.py sign-result {request.hex()}",
    )  # fmt: skip
    answer = json.loads(signed.stdout)
    assert answer["ok"] is True and answer["lease_id"] == lease_id
    assert answer["result_hash"] == keccak(result).hex()
    signature = bytes.fromhex(answer["signature"])

    # The key the guest made at boot, vouched for on chain: neither the node's nor the renter's.
    sdk = AttestationClient(chain.w3, chain.deployment.attestation_registry)
    signer = sdk.attested_signer(lease_id)
    assert signer is not None and signer.lower() == answer["signer"].lower()
    assert signer.lower() not in (lease["node"].lower(), account.address.lower())
    assert verify_guest_result(chain, lease_id, request, result, signature,
                               expected_measurement=measurement)  # fmt: skip
    assert sdk.verify_result(lease_id, request, result, signature)
    assert not verify_guest_result(chain, lease_id, request, b"43", signature)

    # The node key's signature over the same request (what an operator renting its own
    # node could make for any data): refused off chain and on chain, before the guest's post.
    node = stack_key(stack, node_name(stack, lease["node"]))
    assert node.account is not None
    deployment = chain.deployment
    forged = sign_guest_result(node.account, lease_id, request, result, deployment.chain_id,
                               deployment.attestation_registry)  # fmt: skip
    assert not verify_guest_result(chain, lease_id, request, result, forged)
    with pytest.raises(ContractRevert) as by_node:
        dapp.with_account(node.account).service.post_result(lease_id, request, result, forged)
    assert by_node.value.name == "AttestedService_NotAttestedSigner"
    # The guest's signature is for its lease only: under another lease id it recovers to
    # some other address, and the contract refuses it (that lease is not attested).
    other = lease_id + 1
    assert recover_guest_result(other, request, result, signature, deployment.chain_id,
                                deployment.attestation_registry) != signer  # fmt: skip
    assert not verify_guest_result(chain, other, request, result, signature)
    with pytest.raises(ContractRevert) as other_lease:
        dapp.service.post_result(other, request, result, signature)
    assert other_lease.value.name == "AttestedService_NotAttested"

    # Accepted, relayed by the renter's account.
    posted = dapp.service.post_result(lease_id, request, result, signature)
    assert posted.event("ResultPosted").args == {
        "leaseId": lease_id, "request": request, "resultHash": keccak(result), "signer": signer,
    }  # fmt: skip
    assert dapp.service.result_of(lease_id) == keccak(result) and dapp.service.answered(request)
    # Each request once: the same signed result again is refused.
    with pytest.raises(ContractRevert) as replay:
        dapp.service.post_result(lease_id, request, result, signature)
    assert replay.value.name == "AttestedService_RequestAnswered"
