"""`cvm demo --launcher qemu`: a real VM on the embedded stack, from image to shell.

Build (or reuse) the guest image, publish it to the backend (the node downloads it by its
id and checks it), rent by its id (the expected measurement derived from it), wait for
Verified, seal an SSH key and a secret to the attested guest, run `sha256sum` on the
secret inside the guest over SSH with its attested host key pinned, have a process in the
guest sign that result with the guest's attested key and post it to a dApp contract
(`AttestedService`) trusting the image, which refuses the node key's signature; close, and
see the guest stop. Everything the simulated AMD-SP signed is shown as such.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvm.cli.plumbing import literal, out

if TYPE_CHECKING:
    from rich.table import Table

    from cvm.images import Image
    from devstack import StackState


def build_image(data_dir: Path) -> Image:
    from cvm.config import Settings
    from cvm.images import ImageStore

    started = time.monotonic()
    # The image store every other command uses: CVM_IMAGE_DIR, else `<data_dir>/images`.
    image = ImageStore(Settings(data_dir=data_dir).image_dir).build()
    out().print(f"image {image.image_id} ({time.monotonic() - started:.0f} s)")
    return image


def vm_journey(state: StackState, image: Image, timeout: float, step: Callable[..., Any]) -> Table:
    # The SSH private key lives in this directory, unencrypted: removed whatever happens.
    with tempfile.TemporaryDirectory(prefix="cvm-vm-demo-") as work:
        return _vm_journey(state, image, timeout, step, Path(work))


def _vm_journey(
    state: StackState, image: Image, timeout: float, step: Callable[..., Any], work: Path
) -> Table:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from rich.table import Table

    from cvm.api_client import ApiError
    from cvm.chain import Deployment, connect
    from cvm.cli.guest import ssh_argv
    from cvm.cli.renter import follow
    from cvm.images import measure
    from cvm.renter import RentRequest, is_verified
    from cvm.secret_release import release, trusted_roots
    from devstack.demo_renter import new_demo_renter

    deployment = Deployment.load(state.deployment_file)
    chain = connect(deployment, rpc_url=state.rpc_url)
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
    secret = secrets.token_bytes(32)

    renter = step(1, "a funded renter wallet", lambda: new_demo_renter(state, chain))

    def push() -> None:
        _, uploaded = renter.publish_image(image)
        out().print("pushed to the backend" if uploaded else "the backend already serves it")

    step(2, "publish the image to the backend (nodes download it by its id)", push)
    expected = measure(image)
    request = RentRequest(
        vcpu=1, memory_mib=512, disk_gib=1, image=image.image_id, measurement=expected,
        max_rate_per_second=10**13, deposit=10**13 * 600, ssh_public_key=public.decode(),
    )  # fmt: skip
    lease_id = step(3, f"rent image {image.image_id[:16]}…", lambda: renter.rent(request))

    def verified() -> None:
        report = follow(renter, lease_id, timeout, quiet=False)
        if not is_verified(report):
            raise RuntimeError(f"the lease ended as {report.attestation.status.name}")

    step(4, "the guest boots, binds its key, is Verified on chain", verified)
    from cvm.config import Settings

    roots = trusted_roots(True, Settings(data_dir=Path(state.data_dir)).sim_amd_dir)
    api = renter.signed_in_api()

    def seal_and_send() -> Any:
        guest = release(chain, api, lease_id, renter=renter.account, ssh_keys=[public.decode()],
                        secrets={"demo": secret}, roots=roots).guest  # fmt: skip
        marker = (
            " [bold yellow](SIMULATED AMD-SP: demo only)[/bold yellow]" if guest.simulated else ""
        )
        out().print(f"report verified here, SSH key and secret sealed to the guest{marker}")
        return guest

    guest = step(5, "verify the report, seal an SSH key and a secret (HPKE)", seal_and_send)

    def shell() -> str:
        deadline = time.monotonic() + 90
        while True:
            try:
                access = api.guest_access(lease_id)
                known = work / "known_hosts"
                known.write_text(guest.identity.known_hosts_line(access.host, access.ssh_port))
                argv = ssh_argv(known, access.host, access.ssh_port, identity,
                                ["sha256sum", "/run/cvm/secrets/demo"])  # fmt: skip
                done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                if done.returncode == 0 and done.stdout:
                    return literal(done.stdout.split()[0])  # the guest's words
            except (ApiError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the guest did not serve the secret over SSH in 90 s")
            time.sleep(1)

    seen = step(6, "ssh into the guest (attested host key pinned): sha256sum", shell)
    if seen != hashlib.sha256(secret).hexdigest():
        raise RuntimeError(f"the guest holds another secret ({seen})")
    out().print(f"sha256 in the guest = {seen} = the renter's")

    def dapp() -> str:
        from cvm.chain import (
            ContractRevert,
            deploy_attested_service,
            sign_guest_result,
            verify_guest_result,
        )
        from cvm.wallet import load_account, read_password_file

        # The guest signs for processes inside it only: ask over SSH, as the renter.
        request, result = secrets.token_bytes(32), seen.encode()
        access = api.guest_access(lease_id)
        known = work / "known_hosts"
        known.write_text(guest.identity.known_hosts_line(access.host, access.ssh_port))
        command = f"printf %s {seen} | python3 /usr/lib/cvm/agent.py sign-result {request.hex()}"
        argv = ssh_argv(known, access.host, access.ssh_port, identity, [command])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        try:
            answer = json.loads(done.stdout)
            signature = bytes.fromhex(answer["signature"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"the guest did not sign: {literal(done.stderr[-500:])}") from None
        if not verify_guest_result(renter.chain, lease_id, request, result, signature,
                                   expected_measurement=expected):  # fmt: skip
            raise RuntimeError("the guest's signature is not by its attested signer")
        dapp_chain = deploy_attested_service(renter.chain, expected)
        node_address = renter.report(lease_id).lease.node_key
        # The node's own key, from the stack's record: what an operator could sign with.
        node = next(n for n in state.nodes if n.address.lower() == node_address.lower())
        node_key = load_account(
            Path(node.node_keystore), read_password_file(Path(node.node_password_file))
        )
        forged = sign_guest_result(node_key, lease_id, request, result, deployment.chain_id,
                                   deployment.attestation_registry)  # fmt: skip
        try:
            dapp_chain.with_account(node_key).service.post_result(lease_id, request, result, forged)
        except ContractRevert as refused:
            if refused.name != "AttestedService_NotAttestedSigner":
                raise
        else:
            raise RuntimeError("the dApp accepted a result signed by the node key")
        out().print("the dApp refused the same result signed by the node key")
        posted = dapp_chain.service.post_result(lease_id, request, result, signature)
        signer = str(posted.event("ResultPosted").args["signer"])
        out().print(f"ResultPosted by the guest's attested signer {signer} (made in the guest)")
        return signer

    signer = step(7, "a process in the guest signs the result; a dApp contract takes it", dapp)

    def close() -> None:
        renter.close(lease_id)
        deadline = time.monotonic() + 60
        while _guest_pids(Path(state.data_dir), lease_id):
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not stop the guest within 60 s of the close")
            time.sleep(0.5)
        out().print("the node stopped the guest")

    step(8, "close the lease; the guest stops", close)
    summary = Table(title="VM demo summary", show_header=False)
    summary.add_row("image", image.image_id)
    summary.add_row("measurement", "0x" + expected.hex())
    summary.add_row("lease", str(lease_id))
    summary.add_row("secret sha256 in guest", seen)
    summary.add_row("guest's attested signer", signer)
    summary.add_row("AMD-SP", "SIMULATED" if guest.simulated else "AMD")
    return summary


def _guest_pids(data_dir: Path, lease_id: int) -> list[int]:
    """QEMU processes of this stack's guest for `lease_id` (by their command line)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"cvm-lease-{lease_id}".encode() in argv and any(
            str(data_dir).encode() in part for part in argv
        ):
            found.append(int(proc.name))
    return found
