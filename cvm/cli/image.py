"""`cvm image build|list|measure`: guest images by content address (`CVM_IMAGE_DIR`).

`build` assembles the cvm guest image from Debian packages (a Debian host with apt-get);
`measure` computes the SNP launch measurement a lease of that image should expect.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.plumbing import JsonOption, UsageError, emit, err

if TYPE_CHECKING:
    from cvm.images import Image, ImageStore

app = typer.Typer(help="Guest images: build, list, measure.", no_args_is_help=True)

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
        "size_bytes": image.size_bytes(),
        "path": str(image.directory),
    }


@app.command("build")
def build(
    force: Annotated[bool, typer.Option(help="Rebuild even if nothing changed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the cvm guest image (Debian cloud kernel, busybox, python3, dropbear, the guest
    agent) and store it under its content address; unchanged inputs reuse the stored one."""
    import time

    started = time.monotonic()
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
    view = {
        "image": stored.image_id,
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
