"""The `qemu-snp` launcher: an SEV-SNP guest under QEMU >= 9.1 (`sev-snp-guest`), OVMF, QMP.

The guest boots the AmdSev build of OVMF with `kernel-hashes=on`, so the kernel, initrd
and command line are part of the launch measurement that `sev-snp-measure` predicts.
Reports come from inside the guest over a virtio-serial guest channel (`cvm.attest`):
the host sends one JSON line `{"request": "snp-report", "report_data": "<64 bytes hex>"}`
and the guest's agent answers with one line `{"report": hex, "vcek": hex DER,
"cert_chain": PEM}` taken from its /dev/sev-guest extended report.

The launcher refuses to start on a host without SEV-SNP and says what is missing.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cvm.images import Image
from node_agent.errors import HostUnsupported, LauncherError
from node_agent.launcher.base import GuestInfo, GuestReport, GuestSpec, GuestState
from node_agent.launcher.qemu import QemuLauncher, guest_name
from node_agent.launcher.qmp import qmp_session

MINIMUM_QEMU = (9, 1)
# Policy bits (AMD SEV-SNP ABI, POLICY): bit 16 SMT allowed, bit 17 reserved and must be 1;
# DEBUG (bit 19) and MIGRATE_MA (bit 18) stay off in production.
DEFAULT_POLICY = 0x30000
GUEST_CHANNEL = "cvm.attest"
_REPORT_SIZE = 1184


@dataclass(frozen=True)
class SnpHost:
    """Where this host shows SEV-SNP support (paths can be pointed elsewhere in tests)."""

    sev_device: Path = Path("/dev/sev")
    kvm_amd_snp_param: Path = Path("/sys/module/kvm_amd/parameters/sev_snp")
    kvm_device: Path = Path("/dev/kvm")


@dataclass(frozen=True)
class SnpImage:
    """What every SNP guest of this host boots: measured by `kernel-hashes=on`."""

    ovmf: Path  # the AmdSev OVMF build (with the SEV hashes table)
    kernel: Path
    initrd: Path | None = None
    cmdline: str = "console=ttyS0"
    cpu_model: str = "EPYC-v4"
    cbitpos: int = 51
    reduced_phys_bits: int = 1
    policy: int = DEFAULT_POLICY
    extra_devices: tuple[str, ...] = field(default_factory=tuple)


def parse_qemu_version(text: str) -> tuple[int, int, int]:
    """(major, minor, micro) from `qemu-system-x86_64 --version` output."""
    match = re.search(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise HostUnsupported(f"cannot read a QEMU version from {text.strip()[:80]!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def snp_host_problems(host: SnpHost, qemu_version_text: str | None) -> list[str]:
    """Everything that keeps this host from running SEV-SNP guests (empty when it can)."""
    problems: list[str] = []
    if not host.sev_device.exists():
        problems.append(f"{host.sev_device} is missing (no SEV firmware driver, ccp)")
    if not host.kvm_device.exists():
        problems.append(f"{host.kvm_device} is missing (no KVM)")
    try:
        snp_param = host.kvm_amd_snp_param.read_text().strip()
    except OSError:
        problems.append(f"{host.kvm_amd_snp_param} is missing (kvm_amd without SEV-SNP)")
    else:
        if snp_param not in ("Y", "1"):
            problems.append(f"kvm_amd has sev_snp={snp_param} (SEV-SNP disabled in the kernel)")
    if qemu_version_text is None:
        problems.append("QEMU is not installed")
    else:
        try:
            version = parse_qemu_version(qemu_version_text)
        except HostUnsupported as exc:
            problems.append(str(exc))
        else:
            if version[:2] < MINIMUM_QEMU:
                problems.append(
                    f"QEMU {'.'.join(map(str, version))} is older than "
                    f"{'.'.join(map(str, MINIMUM_QEMU))} (no sev-snp-guest)"
                )
    return problems


class QemuSnpLauncher(QemuLauncher):
    """An SEV-SNP guest per lease; process handling is the `qemu` launcher's."""

    kind = "qemu-snp"

    def __init__(
        self,
        run_dir: Path,
        image: SnpImage,
        *,
        qemu_binary: str = "qemu-system-x86_64",
        host: SnpHost | None = None,
        check_host: bool = True,
    ) -> None:
        self.image = image
        self.host = host or SnpHost()
        super().__init__(run_dir, signer=_NoSimulatedSigner(), qemu_binary=qemu_binary)
        if check_host:
            self.require_host()

    def _qemu_version_text(self) -> str | None:
        try:
            result = subprocess.run(
                [self.qemu_binary, "--version"], capture_output=True, text=True, timeout=30
            )
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return None
        return result.stdout if result.returncode == 0 else None

    def require_host(self) -> None:
        """Raise `HostUnsupported` listing every missing piece of SEV-SNP support."""
        problems = snp_host_problems(self.host, self._qemu_version_text())
        if problems:
            raise HostUnsupported(
                "this host cannot run SEV-SNP guests: "
                + "; ".join(problems)
                + ". Use the `qemu` or `simulated` launcher here."
            )

    def attest_socket(self, lease_id: int) -> Path:
        """The host end of the guest channel (a unix socket QEMU listens on)."""
        return self.socket_dir / f"{lease_id}.attest"

    def command_line(
        self, spec: GuestSpec, image_unused: Image | None = None, ssh_port: int = 0
    ) -> list[str]:
        # The host's one SnpImage is booted whatever the lease names (see SnpImage).
        directory = self.guest_dir(spec.lease_id)
        image = self.image
        kernel_args = ["-kernel", str(image.kernel)]
        if image.initrd is not None:
            kernel_args += ["-initrd", str(image.initrd)]
        kernel_args += ["-append", image.cmdline]
        return [
            self.qemu_binary,
            "-name",
            guest_name(spec.lease_id),
            "-enable-kvm",
            "-cpu",
            image.cpu_model,
            "-machine",
            "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
            "-object",
            f"memory-backend-memfd,id=ram1,size={spec.memory_mib}M,share=true,prealloc=false",
            "-object",
            f"sev-snp-guest,id=sev0,cbitpos={image.cbitpos},"
            f"reduced-phys-bits={image.reduced_phys_bits},policy={image.policy:#x},"
            "kernel-hashes=on",
            "-smp",
            str(spec.vcpu),
            "-m",
            f"{spec.memory_mib}M",
            "-bios",
            str(image.ovmf),
            *kernel_args,
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            f"file:{directory / 'serial.log'}",
            "-device",
            "virtio-serial-pci,id=virtio-serial0",
            "-chardev",
            f"socket,id=attest0,path={self.attest_socket(spec.lease_id)},server=on,wait=off",
            "-device",
            f"virtserialport,chardev=attest0,name={GUEST_CHANNEL}",
            *image.extra_devices,
            *self.control_args(spec.lease_id, directory),
        ]

    def _image(self, spec: GuestSpec) -> Image | None:
        return None  # booted from self.image, measured by the hardware

    def launch(self, spec: GuestSpec) -> GuestInfo:
        info = super().launch(spec)
        self.check_sev_state(spec.lease_id)
        return info

    def check_sev_state(self, lease_id: int) -> None:
        """Ask QEMU whether the guest really runs under SEV-SNP with our policy; stop it if not."""
        with qmp_session(self.qmp_socket(lease_id)) as qmp:
            sev = qmp.execute("query-sev")
        problems: list[str] = []
        if not sev.get("enabled"):
            problems.append("SEV is not enabled")
        if sev.get("sev-type") != "sev-snp":
            problems.append(f"sev-type is {sev.get('sev-type')!r}, not 'sev-snp'")
        if sev.get("snp-policy") != self.image.policy:
            problems.append(f"policy {sev.get('snp-policy')!r} != {self.image.policy:#x}")
        if problems:
            self.stop(lease_id)
            raise LauncherError(f"lease {lease_id} guest is not a proper SNP guest: {problems}")

    def get_report(self, lease_id: int, report_data: bytes) -> GuestReport:
        if len(report_data) != 64:
            raise LauncherError(f"REPORT_DATA must be 64 bytes, got {len(report_data)}")
        if self.status(lease_id).state != GuestState.RUNNING:
            raise LauncherError(f"lease {lease_id} has no running guest to attest")
        return request_guest_report(self.attest_socket(lease_id), report_data)


def request_guest_report(channel: Path, report_data: bytes, timeout: float = 30.0) -> GuestReport:
    """One request/answer exchange over the guest channel's unix socket."""
    request = json.dumps({"request": "snp-report", "report_data": report_data.hex()}) + "\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(channel))
            sock.sendall(request.encode())
            with sock.makefile("rb") as reader:
                line = reader.readline(1 << 20)
    except OSError as exc:
        raise LauncherError(f"guest channel {channel} failed: {exc}") from exc
    try:
        answer = json.loads(line)
        report = bytes.fromhex(answer["report"])
        vcek = bytes.fromhex(answer["vcek"])
        chain = str(answer["cert_chain"]).encode()
    except (ValueError, KeyError, TypeError) as exc:
        raise LauncherError(f"guest channel {channel} sent a malformed answer") from exc
    if len(report) != _REPORT_SIZE:
        raise LauncherError(f"guest sent a {len(report)}-byte report, not {_REPORT_SIZE}")
    if report[0x50:0x90] != report_data:
        raise LauncherError("guest report does not carry the REPORT_DATA that was asked for")
    return GuestReport(report=report, vcek_der=vcek, cert_chain_pem=chain)


class _NoSimulatedSigner:
    """SNP guests are attested by the real AMD-SP; nothing may sign for them here."""

    def sign_report(self, measurement: bytes, report_data: bytes) -> GuestReport:
        raise LauncherError("the qemu-snp launcher never uses a simulated AMD-SP")
