"""A format v2 image on a real QEMU guest (TCG): the initramfs opens the rootfs with
dm-verity against the root hash on the measured command line, switches to it, and the
workload's services run under the in-guest supervisor; a rootfs with one byte changed by
the host makes the guest refuse to boot. Images are cached by their recipe (shared store)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account

from cvm.images import Image, ImageError, ImageStore, measure
from node_agent.launcher.base import GuestSpec, HostBinding
from node_agent.launcher.qemu import QemuLauncher, free_local_port
from node_agent.launcher.qemu_args import image_args
from node_agent.launcher.signer import SimulatedAmdSp
from tests.fixtures.images import image_store  # noqa: F401
from tests.fixtures.processes import wait_for
from tests.fixtures.workloads import hello_workload
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = pytest.mark.e2e

LEASE = 61
BINDING = HostBinding(31337, "0x" + "5a" * 20, Account.create().address)
SERVICE_LINE = "[svc probe] probe got: hello over the verity root"


def _build(store: ImageStore, marker: str) -> Image:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.fail("building the guest image needs a Debian host (apt-get, dpkg-deb)")
    try:
        return store.build(workload=hello_workload(marker))
    except ImageError as exc:
        pytest.fail(f"the v2 image did not build: {exc}")


@pytest.fixture(scope="module")
def workload_image(image_store: ImageStore) -> Image:  # noqa: F811
    return _build(image_store, "")


@pytest.fixture(scope="module")
def launcher(
    tmp_path_factory: pytest.TempPathFactory,
    image_store: ImageStore,  # noqa: F811
) -> Iterator[QemuLauncher]:
    run = QemuLauncher(tmp_path_factory.mktemp("qemu"), SimulatedAmdSp(),
                       qemu_binary=ensure_qemu(), images=image_store)  # fmt: skip
    yield run
    for info in run.running():
        run.stop(info.lease_id)


@pytest.fixture(scope="module")
def console(launcher: QemuLauncher, workload_image: Image) -> str:
    """The guest's console up to the probe's answer (the service ran and answered on its port)."""
    started = time.monotonic()
    spec = GuestSpec(LEASE, 1, 512, 1, measure(workload_image), workload_image.image_id, BINDING)
    launcher.launch(spec)
    text = ""
    deadline = started + 180
    while SERVICE_LINE not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        text += launcher.read_console(LEASE).decode(errors="replace")
    # Timing is for bench/, not asserted: printed for whoever reads the log (-s).
    print(json.dumps({"v2_boot_to_service_s": round(time.monotonic() - started, 1)}))
    return text


def test_the_guest_boots_from_the_verity_root_and_its_service_answers(
    launcher, console, workload_image
):
    root_hash = workload_image.cmdline.split("cvm.verity=")[1].split()[0]
    assert f"cvm-init: dm-verity root {root_hash} opened" in console
    assert "[svc hello] hello from the workload" in console
    assert SERVICE_LINE in console, console[-3000:]
    assert "REFUSING" not in console
    channel = launcher.bound_channel(LEASE)

    def probe_ended() -> dict[str, Any] | None:
        # The probe prints its answer, then exits: the supervisor notices the exit on its
        # next poll, so the status may say "running" for a moment after the line.
        services: dict[str, Any] = channel.request({"op": "status"})["services"]
        return services if services["probe"]["state"] != "running" else None

    services = wait_for(probe_ended, timeout=60, interval=0.5, what="the probe's exit")
    assert services["hello"] == {"state": "running", "restarts": 0}
    assert services["probe"]["state"] == "exited" and services["probe"]["exit"] == 0
    assert workload_image.workload is not None and workload_image.workload["name"] == "hello"


def test_one_byte_of_the_workload_gives_another_image_and_measurement(image_store, workload_image):  # noqa: F811
    other = _build(image_store, "#")
    assert other.image_id != workload_image.image_id
    assert other.cmdline != workload_image.cmdline  # another verity root hash
    assert measure(other) != measure(workload_image)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ("flip-byte", "the root file system fails its dm-verity check"),
        # veritysetup opens it (the kernel checks lazily): the first read at mount fails.
        ("other-hash", "the root file system fails its dm-verity check"),
        ("no-hash", "the kernel command line has no cvm.verity root hash"),
    ],
)
def test_a_rootfs_or_root_hash_changed_by_the_host_makes_the_guest_refuse_to_boot(
    workload_image, tmp_path, change, refusal
):
    tampered_dir = tmp_path / "tampered"
    shutil.copytree(workload_image.directory, tampered_dir)
    cmdline = workload_image.cmdline
    root_hash = cmdline.split("cvm.verity=")[1].split()[0]
    if change == "flip-byte":
        with (tampered_dir / "rootfs.img").open("r+b") as handle:
            handle.seek(100)  # in the first block: read when the root is mounted
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 0x01]))
    elif change == "other-hash":
        cmdline = cmdline.replace(root_hash, hashlib.sha256(root_hash.encode()).hexdigest())
    else:
        cmdline = cmdline.replace(f"cvm.verity={root_hash}", "")
    # The host boots it anyway (the store would refuse the files: a hostile host skips that;
    # under SEV-SNP another command line is another measurement as well).
    tampered = dataclasses.replace(workload_image, directory=tampered_dir, cmdline=cmdline)
    console_file = tmp_path / "console.txt"
    args = [ensure_qemu(), "-machine", "q35", "-accel", "tcg", "-m", "512M", "-nodefaults",
            "-display", "none", "-serial", f"file:{console_file}",
            *image_args(tampered, free_local_port(), tmp_path / "agent.sock")]  # fmt: skip
    result = subprocess.run(args, capture_output=True, timeout=180, check=False)
    text = console_file.read_text(errors="replace")
    assert result.returncode == 0, result.stderr  # the guest powered itself off
    assert f"cvm-init: REFUSING TO BOOT: {refusal}" in text, text[-2000:]
    if change != "no-hash":
        assert "verity" in text.split("REFUSING TO BOOT", 1)[1]  # the kernel's own words follow
    assert "cvm-guest-agent" not in text and "[svc" not in text
