"""What a host lacks to run real SEV-SNP guests: one check per requirement, each with its fix.

`cvm node doctor` prints these. Every place the checks look (sysfs, /dev, the kernel log,
QEMU, the data directory) is a parameter, so tests run them against a fake tree; nothing
here changes the host. A check is `ok`, `warn` (something the operator should know, e.g. a
firmware version the kernel log does not show, that does not by itself stop SNP guests) or
`fail` (SEV-SNP guests cannot run here until it is fixed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["ok", "warn", "fail"]

SNP_OBJECT_TYPE = "sev-snp-guest"
# Linux refuses SEV-SNP below firmware API 1.51 (drivers/crypto/ccp/sev-dev.c, SNP_MIN_API).
MIN_SNP_FIRMWARE = (1, 51)
# The ccp driver logs "SEV-SNP API:1.55 build:21" (and "SEV API:..." for plain SEV) at probe.
_SNP_FIRMWARE_LOG = re.compile(r"SEV-SNP API:(\d+)\.(\d+) build:(\d+)")
_KERNEL_LOG_MAX_BYTES = 4 * 1024 * 1024
_GIB = 1024**3


@dataclass(frozen=True)
class Check:
    """One requirement: what was found, and what to do when it is not `ok`."""

    name: str
    status: Status
    found: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class HostView:
    """Where the checks look. The defaults are this host; tests point them at a fake tree."""

    sys_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    qemu_binary: str = "qemu-system-x86_64"
    ovmf: Path | None = None  # CVM_IMAGE_OVMF; else the distribution's AmdSev build
    ovmf_candidates: tuple[Path, ...] | None = None  # None: cvm.images.AMDSEV_OVMF_PATHS
    data_dir: Path = Path(".")
    disk_capacity_gib: int | None = (
        None  # what the node offers renters (CVM_NODE_CAPACITY_DISK_GIB)
    )
    # The kernel log's text, or None when it cannot be read (dmesg needs privileges).
    kernel_log: Callable[[], str | None] = field(default=lambda: read_kernel_log())


def read_kernel_log() -> str | None:
    """`dmesg` as this user may read it, or None (restricted dmesg, no dmesg)."""
    try:
        result = subprocess.run(
            ["dmesg"], capture_output=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout[-_KERNEL_LOG_MAX_BYTES:].decode("utf-8", "replace")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def check_kvm_amd(view: HostView) -> Check:
    module = view.sys_root / "module" / "kvm_amd"
    if not module.is_dir():
        return Check(
            "kvm_amd",
            "fail",
            "the kvm_amd module is not loaded",
            "on an AMD EPYC host: `modprobe kvm_amd` (enable SVM/virtualization in the BIOS)",
        )
    return Check("kvm_amd", "ok", "kvm_amd is loaded")


def check_sev_snp_param(view: HostView) -> Check:
    param = view.sys_root / "module" / "kvm_amd" / "parameters" / "sev_snp"
    value = _read(param)
    fix = (
        "enable SEV-SNP in the BIOS (SEV-SNP, SNP memory coverage, IOMMU), boot a kernel"
        " >= 6.11 with `mem_encrypt=on kvm_amd.sev=1 kvm_amd.sev_snp=1`, then reload kvm_amd"
    )
    if value is None:
        return Check("kvm_amd sev_snp", "fail", f"{param} is missing", fix)
    if value not in ("Y", "1"):
        return Check("kvm_amd sev_snp", "fail", f"kvm_amd sev_snp={value}", fix)
    return Check("kvm_amd sev_snp", "ok", f"kvm_amd sev_snp={value}")


def _device(view: HostView, name: str, title: str, missing_fix: str) -> Check:
    device = view.dev_root / name
    if not device.exists():
        return Check(title, "fail", f"{device} is missing", missing_fix)
    if not os.access(device, os.R_OK | os.W_OK):
        return Check(
            title,
            "fail",
            f"{device} is not readable and writable by this user (uid {os.getuid()})",
            f"run the node agent as a user with access to {device} (e.g. in group kvm, or a"
            " udev rule giving that group rw)",
        )
    return Check(title, "ok", f"{device} is present and accessible")


def check_sev_device(view: HostView) -> Check:
    return _device(
        view,
        "sev",
        "/dev/sev",
        "load the ccp driver (`modprobe ccp`) on a host with SEV enabled in the BIOS; "
        "`dmesg | grep -i sev` says why it did not initialise",
    )


def check_kvm_device(view: HostView) -> Check:
    return _device(
        view, "kvm", "/dev/kvm", "load kvm and kvm_amd (`modprobe kvm_amd`) with SVM enabled"
    )


def check_firmware(view: HostView) -> Check:
    log = view.kernel_log()
    if log is None:
        return Check(
            "SEV firmware",
            "warn",
            "unknown: the kernel log is not readable by this user",
            "run `sudo dmesg | grep 'SEV-SNP API'` to see it (SEV-SNP needs API >= "
            f"{MIN_SNP_FIRMWARE[0]}.{MIN_SNP_FIRMWARE[1]})",
        )
    found = _SNP_FIRMWARE_LOG.findall(log)
    if not found:
        return Check(
            "SEV firmware",
            "fail",
            "the kernel log shows no SEV-SNP firmware (no 'SEV-SNP API:' line from ccp)",
            "update the BIOS/AGESA to a release with SEV-SNP firmware and enable SEV-SNP",
        )
    major, minor, build = (int(part) for part in found[-1])
    version = f"{major}.{minor} build {build}"
    if (major, minor) < MIN_SNP_FIRMWARE:
        return Check(
            "SEV firmware",
            "fail",
            f"SEV-SNP firmware API {version} is older than "
            f"{MIN_SNP_FIRMWARE[0]}.{MIN_SNP_FIRMWARE[1]}",
            "update the SEV firmware (a newer BIOS/AGESA, or the amd-sev firmware file the"
            " ccp driver loads from /lib/firmware/amd)",
        )
    return Check("SEV firmware", "ok", f"SEV-SNP firmware API {version}")


def _qemu_object_types(binary: str) -> tuple[str | None, str]:
    path = shutil.which(binary)
    if path is None:
        return None, f"{binary} is not installed"
    try:
        result = subprocess.run(
            [path, "-object", "help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} -object help failed: {exc}"
    if result.returncode != 0:
        return None, f"{path} -object help exited {result.returncode}"
    return result.stdout, path


def check_qemu(view: HostView) -> Check:
    types, where = _qemu_object_types(view.qemu_binary)
    if types is None:
        return Check(
            "QEMU",
            "fail",
            where,
            "install QEMU >= 9.1 (Debian: `apt-get install qemu-system-x86` from trixie or"
            " bookworm-backports) or set CVM_NODE_QEMU_BINARY",
        )
    if SNP_OBJECT_TYPE not in types.split():
        return Check(
            "QEMU",
            "fail",
            f"{where} has no {SNP_OBJECT_TYPE} object type",
            f"install QEMU >= 9.1, whose `-object help` lists {SNP_OBJECT_TYPE}",
        )
    return Check("QEMU", "ok", f"{where} knows {SNP_OBJECT_TYPE}")


def check_ovmf(view: HostView) -> Check:
    from cvm.images import AMDSEV_OVMF_PATHS

    fix = (
        "build OVMF from edk2 OvmfPkg/AmdSev/AmdSevX64.dsc (or install a distribution's"
        " OVMF.amdsev.fd) and set CVM_IMAGE_OVMF to it"
    )
    if view.ovmf is not None:
        if view.ovmf.is_file():
            return Check("AmdSev OVMF", "ok", f"{view.ovmf} (CVM_IMAGE_OVMF)")
        return Check("AmdSev OVMF", "fail", f"CVM_IMAGE_OVMF={view.ovmf} does not exist", fix)
    candidates = view.ovmf_candidates if view.ovmf_candidates is not None else AMDSEV_OVMF_PATHS
    for path in candidates:
        if path.is_file():
            return Check("AmdSev OVMF", "ok", str(path))
    return Check(
        "AmdSev OVMF",
        "fail",
        "no AmdSev OVMF (looked in " + ", ".join(str(path) for path in candidates) + ")",
        fix,
    )


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(view: HostView) -> Check:
    where = _existing_parent(view.data_dir)
    try:
        free_gib = shutil.disk_usage(where).free / _GIB
    except OSError as exc:
        return Check("disk space", "fail", f"cannot read free space of {where}: {exc}", "")
    found = f"{free_gib:.1f} GiB free under {view.data_dir}"
    if view.disk_capacity_gib is None:
        return Check(
            "disk space",
            "warn",
            f"{found}; the node's disk capacity is not declared",
            "set CVM_NODE_CAPACITY_DISK_GIB (or pass --disk-gib) to what you offer renters",
        )
    if free_gib < view.disk_capacity_gib:
        return Check(
            "disk space",
            "fail",
            f"{found}, less than the {view.disk_capacity_gib} GiB the node offers",
            f"free space under {view.data_dir}, move CVM_DATA_DIR to a larger disk, or lower"
            f" CVM_NODE_CAPACITY_DISK_GIB to at most {int(free_gib)}",
        )
    return Check("disk space", "ok", f"{found} (offers {view.disk_capacity_gib} GiB)")


CHECKS: tuple[Callable[[HostView], Check], ...] = (
    check_kvm_amd,
    check_sev_snp_param,
    check_kvm_device,
    check_sev_device,
    check_firmware,
    check_qemu,
    check_ovmf,
    check_disk,
)


def diagnose(view: HostView) -> list[Check]:
    """Every check, in the order an operator fixes them."""
    return [check(view) for check in CHECKS]


def ready_for_snp(checks: list[Check]) -> bool:
    """Whether nothing failed (warnings do not stop SEV-SNP guests)."""
    return all(check.status != "fail" for check in checks)
