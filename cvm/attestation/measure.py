"""Expected launch measurement of a guest image, computed by `sev-snp-measure`.

A renter states the measurement they expect when creating a lease; this is how it is
obtained from the image (OVMF, optional kernel, initrd and command line, vCPU count and type)
without launching anything.
"""

from __future__ import annotations

from pathlib import Path

from sevsnpmeasure import guest, vcpu_types
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType

from cvm.attestation.errors import MeasurementError

MODES = {"snp": SevMode.SEV_SNP, "sev-es": SevMode.SEV_ES, "sev": SevMode.SEV}
VMM_TYPES = {"qemu": VMMType.QEMU, "ec2": VMMType.ec2, "gce": VMMType.gce}
VCPU_TYPES = tuple(vcpu_types.CPU_SIGS)
DEFAULT_GUEST_FEATURES = 0x1  # SNPActive only


def expected_measurement(
    ovmf: Path,
    *,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    vcpus: int = 1,
    vcpu_type: str | None = "EPYC-v4",
    guest_features: int = DEFAULT_GUEST_FEATURES,
    vmm_type: str = "qemu",
    mode: str = "snp",
    ovmf_hash: bytes | None = None,
) -> bytes:
    """The launch digest (48 bytes for SNP, 32 for SEV and SEV-ES).

    `vcpu_type` None means no CPUID signature (as on GCE). `ovmf_hash` is a precomputed
    OVMF launch digest (SNP only). Raises `MeasurementError` for inconsistent inputs, e.g.
    a kernel with an OVMF that has no kernel-hashes section.
    """
    if vcpus < 1:
        raise MeasurementError(f"vcpus must be at least 1, got {vcpus}")
    try:
        sev_mode = MODES[mode]
        vmm = VMM_TYPES[vmm_type.lower()]
        vcpu_sig = vcpu_types.CPU_SIGS[vcpu_type] if vcpu_type is not None else 0
    except KeyError as exc:
        raise MeasurementError(f"unknown option {exc.args[0]!r}") from exc
    if not Path(ovmf).is_file():
        raise MeasurementError(f"OVMF file {ovmf} does not exist")
    try:
        return bytes(
            guest.calc_launch_digest(
                sev_mode,
                vcpus,
                vcpu_sig,
                str(ovmf),
                str(kernel) if kernel is not None else None,
                str(initrd) if initrd is not None else None,
                append,
                guest_features,
                ovmf_hash.hex() if ovmf_hash else "",
                vmm_type=vmm,
            )
        )
    except (RuntimeError, ValueError, AssertionError, OSError) as exc:
        raise MeasurementError(f"cannot compute the launch measurement: {exc}") from exc


def ovmf_hash(ovmf: Path) -> bytes:
    """Launch digest of the OVMF pages alone, reusable as `ovmf_hash` for many guests."""
    try:
        return bytes(guest.calc_snp_ovmf_hash(str(ovmf)))
    except (RuntimeError, ValueError, OSError) as exc:
        raise MeasurementError(f"cannot hash OVMF {ovmf}: {exc}") from exc
