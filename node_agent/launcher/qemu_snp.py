"""The `qemu-snp` launcher: the lease's cvm image as an SEV-SNP guest (QEMU `sev-snp-guest`).

The guest boots the lease's image exactly as the `qemu` launcher boots it (kernel, initrd,
command line, user-mode network with SSH forwarded, the guest agent's virtio-serial port:
`qemu_args`), under the AmdSev build of OVMF with `kernel-hashes=on`, so the kernel, initrd
and command line are part of the launch measurement. The node expects for a lease what
`cvm.images.measure` computes with the same OVMF, vCPU count and vCPU type as the launch.

The launch sets HOST_DATA (`sev-snp-guest`'s `host-data`) to the binding of the lease and
its renter, immutable for the guest's life; the guest reads it from its own report and
serves that lease only. Reports come from the AMD-SP itself: the node binds the guest
agent to the lease, asks it for a report on a nonce, and the agent computes the lease
digest and asks configfs-tsm (or /dev/sev-guest) for a report binding it and its own key.
Nothing here signs anything. The VCEK and its chain come from the certificate table the
host gave the guest, else from AMD's KDS (cached under the run directory).

The launcher refuses a host without SEV-SNP, or whose QEMU has no `sev-snp-guest` object
type (QEMU >= 9.1), and says what is missing.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cvm.attestation.appraisal import appraise_lease_evidence
from cvm.attestation.errors import AttestationError
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.kds import CachingKds, CertificateSource, HttpKds, endorsements
from cvm.attestation.product import Product
from cvm.images import Image, ImageError, ImageStore, find_ovmf
from node_agent.errors import HostUnsupported, LauncherError
from node_agent.launcher.base import GuestInfo, GuestReport, GuestSpec, GuestState, HostBinding
from node_agent.launcher.qemu import QemuLauncher, guest_name
from node_agent.launcher.qemu_args import SNP_VIRTIO, console_args, image_args
from node_agent.launcher.qmp import qmp_session

SNP_OBJECT_TYPE = "sev-snp-guest"
# Policy bits (AMD SEV-SNP ABI, POLICY): bit 16 SMT allowed, bit 17 reserved and must be 1;
# DEBUG (bit 19) and MIGRATE_MA (bit 18) stay off in production.
DEFAULT_POLICY = 0x30000
_REPORT_SIZE = 1184
# Where the agent's answer says its report came from when the AMD-SP made it.
_HARDWARE_SOURCES = ("configfs-tsm", "sev-guest")


@dataclass(frozen=True)
class SnpHost:
    """Where this host shows SEV-SNP support (paths can be pointed elsewhere in tests)."""

    sev_device: Path = Path("/dev/sev")
    kvm_amd_snp_param: Path = Path("/sys/module/kvm_amd/parameters/sev_snp")
    kvm_device: Path = Path("/dev/kvm")


@dataclass(frozen=True)
class SnpConfig:
    """What every SNP guest of this host shares; the image is the lease's."""

    ovmf: Path  # the AmdSev OVMF build (with the SEV hashes table): launched and measured
    cbitpos: int = 51
    reduced_phys_bits: int = 1
    policy: int = DEFAULT_POLICY
    # The host's chip (Milan, Genoa, Turin): finds the VCEK of a report older than version
    # 3, which does not name it. None: only reports that do can be endorsed.
    product: Product | None = None


def snp_host_problems(host: SnpHost, object_types: str | None) -> list[str]:
    """Everything that keeps this host from running SEV-SNP guests (empty when it can).

    `object_types` is what `qemu-system-x86_64 -object help` printed (None: no QEMU)."""
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
    if object_types is None:
        problems.append("QEMU is not installed")
    elif SNP_OBJECT_TYPE not in object_types.split():
        problems.append(f"this QEMU has no {SNP_OBJECT_TYPE} object type (QEMU >= 9.1 has it)")
    return problems


def snp_ovmf(explicit: Path | None) -> Path:
    """The real AmdSev OVMF to launch and measure with; HostUnsupported without one (the
    reference metadata that measures for the simulated AMD-SP is no firmware to boot)."""
    try:
        path, real = find_ovmf(explicit)
    except ImageError as exc:
        raise HostUnsupported(str(exc)) from exc
    if not real:
        raise HostUnsupported(
            "qemu-snp needs the AmdSev build of OVMF (Debian ships none): set CVM_IMAGE_OVMF"
        )
    return path


class QemuSnpLauncher(QemuLauncher):
    """An SEV-SNP guest per lease, booting its image; process handling is `qemu`'s."""

    kind = "qemu-snp"

    def __init__(
        self,
        run_dir: Path,
        config: SnpConfig,
        *,
        images: ImageStore,
        default_image: str | None = None,
        qemu_binary: str = "qemu-system-x86_64",
        host: SnpHost | None = None,
        kds: CertificateSource | None = None,
        check_host: bool = True,
        trusted_roots: Sequence[x509.Certificate] | None = None,
        guest_outbound: bool = False,
        public_host: str = "127.0.0.1",
        volume_dir: Path | None = None,
    ) -> None:
        self.config = config
        # The roots a report must chain to before it is submitted: AMD's pinned ARKs (None),
        # as the verifiers'; tests pass a simulated AMD's.
        self.trusted_roots = trusted_roots
        self.host = host or SnpHost()
        super().__init__(
            run_dir,
            signer=_NoSimulatedSigner(),
            qemu_binary=qemu_binary,
            accel="kvm",
            images=images,
            default_image=default_image,
            ovmf=config.ovmf,
            guest_outbound=guest_outbound,
            public_host=public_host,
            volume_dir=volume_dir,
        )
        self.trusted_roots = trusted_roots  # not a simulated signer's
        self.kds = kds or CachingKds(run_dir / "kds", HttpKds())
        if check_host:
            self.require_host()

    def _object_types(self) -> str | None:
        try:
            result = subprocess.run(
                [self.qemu_binary, "-object", "help"], capture_output=True, text=True, timeout=30
            )
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return None
        return result.stdout if result.returncode == 0 else None

    def require_host(self) -> None:
        """Raise `HostUnsupported` listing every missing piece of SEV-SNP support."""
        problems = snp_host_problems(self.host, self._object_types())
        if problems:
            raise HostUnsupported(
                "this host cannot run SEV-SNP guests: "
                + "; ".join(problems)
                + ". Use the `qemu` or `simulated` launcher here."
            )

    def command_line(
        self,
        spec: GuestSpec,
        image: Image | None = None,
        ssh_port: int = 0,
        forwards: Sequence[tuple[int, int]] = (),
    ) -> list[str]:
        if image is None:
            raise LauncherError(
                f"lease {spec.lease_id} names no cvm image: an SEV-SNP guest boots only a"
                " measured image (kernel, initrd, command line)"
            )
        directory = self.guest_dir(spec.lease_id)
        config = self.config
        # 32 bytes, base64 as QEMU wants them: in every report of this guest, for its life.
        host_data = base64.b64encode(spec.host_binding().host_data(spec.lease_id)).decode()
        return [
            self.qemu_binary,
            "-name", guest_name(spec.lease_id),
            "-enable-kvm",
            "-cpu", self.vcpu_type,  # the VMSAs, so the measurement, depend on it
            "-machine", "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
            "-object",
            f"memory-backend-memfd,id=ram1,size={spec.memory_mib}M,share=true,prealloc=false",
            "-object",
            f"{SNP_OBJECT_TYPE},id=sev0,cbitpos={config.cbitpos},"
            f"reduced-phys-bits={config.reduced_phys_bits},policy={config.policy:#x},"
            f"kernel-hashes=on,host-data={host_data}",
            "-smp", str(spec.vcpu),
            "-m", f"{spec.memory_mib}M",
            "-bios", str(config.ovmf),
            *console_args(),
            *image_args(image, ssh_port, self.agent_socket(spec.lease_id), SNP_VIRTIO,
                        outbound=self.guest_outbound, host=self.public_host,
                        forwards=forwards),
            *self.data_volume_args(spec, SNP_VIRTIO),
            *self.control_args(spec.lease_id, directory),
        ]  # fmt: skip

    def launch(self, spec: GuestSpec) -> GuestInfo:
        if self._image(spec) is None:
            raise LauncherError(
                f"lease {spec.lease_id} names no cvm image: qemu-snp boots only cvm images"
            )
        info = super().launch(spec)
        self.check_sev_state(spec.lease_id)
        return info

    def booted_measurement(self, spec: GuestSpec, image: Image) -> bytes | None:
        return None  # the AMD-SP measures this guest; nothing here signs for it

    def check_sev_state(self, lease_id: int) -> None:
        """Ask QEMU whether the guest really runs under SEV-SNP with our policy; stop it if not."""
        with qmp_session(self.qmp_socket(lease_id)) as qmp:
            sev = qmp.execute("query-sev")
        problems: list[str] = []
        if not sev.get("enabled"):
            problems.append("SEV is not enabled")
        if sev.get("sev-type") != "sev-snp":
            problems.append(f"sev-type is {sev.get('sev-type')!r}, not 'sev-snp'")
        if sev.get("snp-policy") != self.config.policy:
            problems.append(f"policy {sev.get('snp-policy')!r} != {self.config.policy:#x}")
        if problems:
            self.stop(lease_id)
            raise LauncherError(f"lease {lease_id} guest is not a proper SNP guest: {problems}")

    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        """A report the AMD-SP made for the guest agent's key on attestation `nonce` of the
        lease its launch bound it to."""
        if self.status(lease_id).state != GuestState.RUNNING:
            raise LauncherError(f"lease {lease_id} has no running guest to attest")
        binding = self.binding(lease_id)
        answer, guest_key, bound = self.bound_channel(lease_id).attest(lease_id, nonce)
        try:
            report = bytes.fromhex(answer.get("report") or "")
            cert_table = bytes.fromhex(answer.get("certs") or "")
        except (ValueError, TypeError) as exc:
            raise LauncherError(f"lease {lease_id}: the guest agent's answer is malformed") from exc
        if answer.get("source") not in _HARDWARE_SOURCES or not report:
            raise LauncherError(
                f"lease {lease_id}: the guest found no SEV-SNP interface (source"
                f" {answer.get('source')!r}): it is not running as an SNP guest"
            )
        if len(report) != _REPORT_SIZE or report[0x50:0x90] != bound:
            raise LauncherError(f"lease {lease_id}: the guest's report is not for its REPORT_DATA")
        if report[0xC0:0xE0] != binding.host_data(lease_id):
            raise LauncherError(f"lease {lease_id}: the guest's report has another HOST_DATA")
        try:
            vcek, chain = endorsements(report, cert_table, self.kds, self.config.product)
        except AttestationError as exc:
            raise LauncherError(f"lease {lease_id}: no VCEK for the report: {exc}") from exc
        got = GuestReport(report, vcek, chain, guest_key)
        self._appraise(lease_id, nonce, got, binding)
        return got

    def _appraise(self, lease_id: int, nonce: int, got: GuestReport, binding: HostBinding) -> None:
        """Refuse a report the verifiers would reject. The renter has root in the guest and
        can answer with anything; a report the node submits and the verifiers reject gets
        the node slashed, so a lying guest may block attestation but never make it submit."""
        expected = self._record(lease_id).get("expected_measurement")
        if not expected:
            raise LauncherError(f"lease {lease_id}: the guest's record names no measurement")
        verdict = appraise_guest_report(
            got, lease_id, nonce, binding, bytes.fromhex(expected), self.trusted_roots
        )
        if verdict:
            raise LauncherError(
                f"lease {lease_id}: the guest's report would be rejected: {'; '.join(verdict)}"
            )


def appraise_guest_report(
    got: GuestReport,
    lease_id: int,
    nonce: int,
    binding: HostBinding,
    measurement: bytes,
    trusted_roots: Sequence[x509.Certificate] | None = None,
) -> list[str]:
    """Why the verifiers would reject this report (empty: they would not), appraised as
    `backend.verifier` appraises it (`appraise_lease_evidence`): its signature and chain
    to the roots, the lease's measurement, no debug, VMPL 0, a well-formed guest key,
    REPORT_DATA bound to this lease, nonce and key, and HOST_DATA to this lease's renter."""
    try:
        bundle = EvidenceBundle(
            report=got.report, vcek=got.vcek_der, chain=got.cert_chain_pem,
            chain_id=binding.chain_id, registry=binding.registry, lease_id=lease_id,
            nonce=nonce, guest_key=got.guest_key,
        )  # fmt: skip
    except AttestationError as exc:
        return [f"{exc.reason}: {exc.message}"]
    appraisal = appraise_lease_evidence(
        bundle, measurement=measurement, renter=binding.renter, trusted_roots=trusted_roots
    )
    return [f"{failure.reason}: {failure.message}" for failure in appraisal.failures]


class _NoSimulatedSigner:
    """SNP guests are attested by the real AMD-SP; nothing may sign for them here."""

    def sign_report(self, measurement: bytes, report_data: bytes, host_data: bytes) -> GuestReport:
        raise LauncherError("the qemu-snp launcher never uses a simulated AMD-SP")
