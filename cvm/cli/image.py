"""`cvm image build|list|measure|push`: guest images by content address (`CVM_IMAGE_DIR`).

`build` assembles the cvm guest image from Debian packages (a Debian host with apt-get),
with `--workload FILE` the renter's own app on a measured root file system;
`measure` computes the SNP launch measurement a lease of that image should expect; `push`
publishes an image to the backend, from which node agents download it (checked by its id).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.plumbing import (
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    UsageError,
    WalletOption,
    emit,
    err,
    json_output,
)
from cvm.cli.renting import open_renter

if TYPE_CHECKING:
    from cvm.images import Image, ImageStore
    from cvm.renter import Renter

app = typer.Typer(help="Guest images: build, list, measure, push.", no_args_is_help=True)

ImageArgument = Annotated[
    str, typer.Argument(help="Image id (64 hex digits, from `cvm image list`).")
]


def _store() -> ImageStore:
    from cvm.config import get_settings
    from cvm.images import ImageStore

    return ImageStore(get_settings().image_dir)


def _view(image: Image) -> dict[str, Any]:
    return {
        "image": image.image_id,
        "cmdline": image.cmdline,
        "kernel_sha256": image.kernel_sha256,
        "initrd_sha256": image.initrd_sha256,
        "format": image.format,
        "rootfs_sha256": image.rootfs_sha256,
        "size_bytes": image.size_bytes(),
        "path": str(image.directory),
        "workload": _workload_summary(image),
    }


def _workload_summary(image: Image) -> Any:
    """manifest.json's "workload" (name, ports, secrets, disk, services), None without one."""
    import json

    from cvm.images import MANIFEST

    try:
        manifest = json.loads((image.directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("workload") if isinstance(manifest, dict) else None


@app.command("build")
def build(
    workload: Annotated[
        Path | None,
        typer.Option(
            help="Workload file (TOML, docs/workloads.md): your app, packages, services, ports,"
            " secrets and disk, measured into the image.",
            dir_okay=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if nothing changed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the cvm guest image (Debian cloud kernel, busybox, python3, dropbear, the guest
    agent) and store it under its content address; unchanged inputs reuse the stored one.
    With --workload, the image also carries your app on a dm-verity root file system whose
    root hash is on the measured command line, so the measurement covers the app."""
    import time

    started = time.monotonic()
    if workload is not None:
        from cvm.images.workload import build_image, load_workload

        loaded = load_workload(workload)  # every mistake in the file before any slow work
        err().print(
            f"building the image of workload {loaded.name} from Debian packages ...",
            highlight=False,
        )
        image = build_image(loaded, _store(), force=force)
    else:
        err().print("building the guest image from Debian packages ...", highlight=False)
        image = _store().build(force=force)
    view = _view(image) | {"seconds": round(time.monotonic() - started, 1)}
    emit(
        view, f"image {image.image_id} ({view['size_bytes'] / 2**20:.1f} MiB) in {image.directory}"
    )


@app.command("list")
def list_images(as_json: JsonOption = False) -> None:
    """The stored images."""
    views = [_view(image) for image in _store().list()]

    def human() -> str:
        if not views:
            return "no images: `cvm image build`"
        return "\n".join(
            f"{v['image']}  {v['size_bytes'] / 2**20:7.1f} MiB  {v['cmdline']}" for v in views
        )

    emit(views, human)


@app.command("measure")
def measure(
    image: ImageArgument,
    vcpus: Annotated[int, typer.Option(help="vCPU count of the lease.")] = 1,
    vcpu_type: Annotated[str, typer.Option(help="vCPU type as QEMU names it.")] = "EPYC-v4",
    ovmf: Annotated[
        Path | None,
        typer.Option(
            help="AmdSev OVMF build (default: CVM_IMAGE_OVMF, the distribution's, or the reference)"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The SNP launch measurement of IMAGE booted with kernel hashes (sev-snp-measure)."""
    from cvm.config import get_settings
    from cvm.images import find_ovmf
    from cvm.images import measure as measure_image

    if vcpus < 1:
        raise UsageError("--vcpus must be at least 1")
    firmware, real = find_ovmf(ovmf or get_settings().image_ovmf)
    stored = _store().get(image)
    digest = measure_image(stored, vcpus=vcpus, vcpu_type=vcpu_type, ovmf=firmware)
    # The command line carries the dm-verity root hash of a workload image's root file
    # system, so this one measurement covers the app, its files and packages too.
    view = {
        "image": stored.image_id,
        "workload": _workload_summary(stored),
        "measurement": "0x" + digest.hex(),
        "vcpus": vcpus,
        "vcpu_type": vcpu_type,
        "ovmf": str(firmware),
        "simulated_only": not real,
    }
    note = (
        ""
        if real
        else (
            "\n(no AmdSev OVMF here: measured with the reference firmware metadata, which only the"
            " simulated AMD-SP reproduces; pass --ovmf for real SEV-SNP hosts)"
        )
    )
    emit(view, f"{view['measurement']}{note}")


def publish(renter: Renter, image: Image) -> bool:
    """Upload `image` to the renter's backend unless it has it, with a progress bar on
    stderr (none with --json); whether it was uploaded."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    if json_output():
        return renter.publish_image(image)[1]
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err(),
        transient=True,
    ) as bar:
        task = bar.add_task(f"pushing image {image.image_id[:16]}…", total=None)

        def advance(sent: int, total: int) -> None:
            bar.update(task, completed=sent, total=total)

        return renter.publish_image(image, progress=advance)[1]


@app.command("push")
def push(
    image: ImageArgument,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish IMAGE to the deployment's backend (signed in with your wallet), which serves
    it to node agents by its id; each node checks every file against the id before booting.
    Nothing is sent if the backend already has it."""
    stored = _store().get(image)
    renter = open_renter(deployment, wallet, password_file)
    uploaded = publish(renter, stored)
    size = stored.size_bytes()
    view = {
        "image": stored.image_id,
        "uploaded": uploaded,
        "size_bytes": size,
        "api_url": renter.api.base_url if renter.api is not None else None,
    }
    what = "pushed to" if uploaded else "already served by"
    emit(view, f"image {stored.image_id} ({size / 2**20:.1f} MiB) {what} {view['api_url']}")
