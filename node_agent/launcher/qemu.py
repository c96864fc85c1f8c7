"""The `qemu` launcher: one real QEMU process per lease (no SEV), controlled over QMP.

For hosts without SEV-SNP. With an image (a cvm guest image by content address) the VM
boots it directly (kernel, initrd, command line) with isolated user-mode networking (SSH
forwarded from a port on 127.0.0.1, nothing on the host reachable from the guest:
`qemu_args`), and a virtio-serial channel to the guest agent, which the node binds to the
lease and its renter before the first report and which binds its own key into each report.
No hardware measures this guest, so the simulated AMD-SP signs with the measurement of the
image actually booted, computed as `cvm image measure` does (a node that boots another
image than the lease expects is rejected, as real hardware would have it), and with the
HOST_DATA of the launch's binding. Without an image QEMU's SeaBIOS is the guest (reports
then carry the lease's expected measurement, the launch's HOST_DATA and a key made at
launch). Guests outlive the agent (QEMU daemonizes) and are found again by their directory
under the run directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cvm.attestation.binding import build_report_data
from cvm.images import Image, ImageError, ImageStore, measure
from node_agent.errors import LauncherError
from node_agent.guest_channel import GuestChannel
from node_agent.launcher.base import (
    GuestInfo,
    GuestReport,
    GuestSpec,
    GuestState,
    HostBinding,
    Launcher,
)
from node_agent.launcher.qemu_args import (
    CONSOLE_DEVICE,
    CONSOLE_RING_BYTES,
    console_args,
    image_args,
    service_ports,
    supports_direct_io,
    volume_args,
)
from node_agent.launcher.qmp import qmp_session
from node_agent.launcher.signer import ReportSigner, simulated_guest_key
from node_agent.volumes import VolumeFiles

log = logging.getLogger(__name__)

_GUEST_DIR_PREFIX = "lease-"
_STOP_TIMEOUT_S = 10.0
_PROBE_TIMEOUT_S = 5.0


def probe_accel(qemu_binary: str, kernel: Path | None) -> str:
    """ "kvm" when a guest really runs under KVM here, else "tcg".

    /dev/kvm can exist and still fail: on some hosts QEMU aborts setting an MSR, on others
    the guest hangs silently. So a probe boots the guest kernel (or SeaBIOS) under KVM and
    waits a few seconds for its first words on the console."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    with tempfile.TemporaryDirectory() as work:
        output = Path(work) / "console"
        if kernel is not None:
            boot = ["-kernel", str(kernel), "-append", "console=ttyS0", "-serial"]
            boot.append(f"file:{output}")
            marker = b"Linux version"
        else:
            boot = ["-chardev", f"file,id=probe,path={output}", "-device"]
            boot.append("isa-debugcon,iobase=0x402,chardev=probe")
            marker = b"SeaBIOS"
        args = [qemu_binary, "-accel", "kvm", "-machine", "q35", "-m", "128M", "-nodefaults"]
        args += ["-display", "none", "-no-reboot", *boot]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + _PROBE_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if output.exists() and marker in output.read_bytes():
                    return "kvm"
                time.sleep(0.1)
        finally:
            process.kill()
            process.wait()
    return "tcg"


def free_local_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nobody listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def guest_name(lease_id: int) -> str:
    """The `-name` QEMU is given, so that a process can be told apart by its command line."""
    return f"cvm-lease-{lease_id}"


def process_alive(pid: int) -> bool:
    """True while `pid` runs and is not a zombie (a daemonized QEMU may be reaped late)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            # The state field follows the parenthesised command name.
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _process_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except FileNotFoundError:
        return []


class QemuLauncher(Launcher):
    """A real QEMU guest per lease, under `run_dir/lease-<id>/` (QMP socket, pid file, log)."""

    kind = "qemu"
    # The vCPU type measurements assume: what the simulated AMD-SP signs for here, and the
    # `-cpu` an SEV-SNP guest gets (its VMSAs, hence its measurement, depend on it).
    vcpu_type = "EPYC-v4"

    def __init__(
        self,
        run_dir: Path,
        signer: ReportSigner,
        *,
        qemu_binary: str = "qemu-system-x86_64",
        accel: str = "auto",
        images: ImageStore | None = None,
        default_image: str | None = None,
        ovmf: Path | None = None,
        boot_timeout_s: float = 60.0,
        guest_outbound: bool = False,
        public_host: str = "127.0.0.1",
        volume_dir: Path | None = None,
    ) -> None:
        self.run_dir = run_dir
        # SSH and the workload's ports are forwarded from this address (CVM_NODE_PUBLIC_HOST).
        self.public_host = public_host
        # Each lease's data volume (disk_gib > 0, cvm images only): kept across relaunches.
        self.volumes = VolumeFiles(volume_dir or run_dir / "volumes")
        self.signer = signer
        ark = getattr(signer, "ark", None)
        self.trusted_roots = [ark] if ark is not None else None
        # Off by default: see `qemu_args` for what turning it on exposes.
        self.guest_outbound = guest_outbound
        if guest_outbound:
            log.warning(
                "guest outbound networking is ON: guests reach the internet and also this"
                " host's 127.0.0.1 (as 10.0.2.2) and private networks; nothing on this host"
                " may trust loopback"
            )
        self.qemu_binary = qemu_binary
        self.accel = accel
        self.images = images
        self.default_image = default_image
        self.ovmf = ovmf
        self._measured: dict[tuple[str, int], bytes] = {}  # (image, vCPUs) -> measurement
        self.boot_timeout_s = boot_timeout_s
        run_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths must fit in 108 bytes, which a deep data directory does not;
        # sockets go to a short private directory named after the run directory instead.
        digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.socket_dir = Path(tempfile.gettempdir()) / f"cvm-{digest}"
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)

    # --- paths -----------------------------------------------------------------------
    def guest_dir(self, lease_id: int) -> Path:
        return self.run_dir / f"{_GUEST_DIR_PREFIX}{lease_id}"

    def qmp_socket(self, lease_id: int) -> Path:
        return self.socket_dir / f"{lease_id}.qmp"

    def agent_socket(self, lease_id: int) -> Path:
        return self.socket_dir / f"{lease_id}.agent"

    def _resolve_accel(self, kernel: Path | None) -> str:
        if self.accel != "auto":
            return self.accel
        chosen = probe_accel(self.qemu_binary, kernel)
        if chosen == "tcg":
            log.warning("KVM is unusable here (a probe guest did not run): using TCG")
        self.accel = chosen
        return chosen

    def image_measurement(self, image_id: str, vcpu: int) -> bytes | None:
        if not image_id or self.images is None:
            return None
        key = (image_id, vcpu)
        if key not in self._measured:
            try:
                # Manifest only: measuring reads (hashes) the files anyway, and the launch
                # hashes them once more right before boot.
                self._measured[key] = measure(
                    self.images.get(image_id, deep=False),
                    vcpus=vcpu,
                    vcpu_type=self.vcpu_type,
                    ovmf=self.ovmf,
                )
            except ImageError:
                return None  # not an image this node has: the lease is refused, not failed
        return self._measured[key]

    def _image(self, spec: GuestSpec) -> Image | None:
        wanted = spec.image or self.default_image
        if not wanted:
            return None
        if self.images is None:
            raise LauncherError(f"lease {spec.lease_id} names image {wanted} but no image store")
        try:
            return self.images.get(wanted)
        except ImageError as exc:
            raise LauncherError(f"lease {spec.lease_id}: {exc}") from exc

    def _pid(self, lease_id: int) -> int | None:
        try:
            pid = int((self.guest_dir(lease_id) / "qemu.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A recycled pid must not be mistaken for our guest.
        if guest_name(lease_id) not in _process_cmdline(pid):
            return None
        return pid if process_alive(pid) else None

    def command_line(
        self,
        spec: GuestSpec,
        image: Image | None = None,
        ssh_port: int = 0,
        forwards: Sequence[tuple[int, int]] = (),
    ) -> list[str]:
        """The QEMU invocation for a lease's guest (daemonized, no display, QMP socket)."""
        directory = self.guest_dir(spec.lease_id)
        accel_args: list[str] = []
        for accel in self._resolve_accel(image.kernel if image else None).split(":"):
            accel_args += ["-accel", accel]
        boot: list[str] = []
        if image is not None:
            boot = image_args(
                image, ssh_port, self.agent_socket(spec.lease_id), outbound=self.guest_outbound,
                host=self.public_host, forwards=forwards,
            )  # fmt: skip
            boot += self.data_volume_args(spec)
        return [
            self.qemu_binary,
            "-name",
            guest_name(spec.lease_id),
            "-machine",
            "q35" if image is not None else "pc",
            *accel_args,
            "-smp",
            str(spec.vcpu),
            "-m",
            f"{spec.memory_mib}M",
            *console_args(),
            *boot,
            *self.control_args(spec.lease_id, directory),
        ]

    def data_volume_args(self, spec: GuestSpec, virtio: str = "") -> list[str]:
        """The lease's data volume, made at its first launch, when it has a disk."""
        if spec.disk_gib <= 0:
            return []
        path = self.volumes.ensure(spec.lease_id, spec.disk_gib)
        return volume_args(path, virtio, direct=supports_direct_io(path))

    def volume_refusal(self, lease_id: int, disk_gib: int, active: Mapping[int, int]) -> str | None:
        return self.volumes.refusal(lease_id, disk_gib, active)

    def discard(self, lease_id: int) -> None:
        if self.volumes.remove(lease_id):
            log.info("lease %s: its data volume is deleted", lease_id)

    def control_args(self, lease_id: int, directory: Path) -> list[str]:
        """The QMP socket, pid file and daemon mode every guest of ours is started with."""
        return [
            "-qmp",
            f"unix:{self.qmp_socket(lease_id)},server=on,wait=off",
            "-pidfile",
            str(directory / "qemu.pid"),
            "-daemonize",
        ]

    # --- Launcher ----------------------------------------------------------------------
    def launch(self, spec: GuestSpec) -> GuestInfo:
        current = self.status(spec.lease_id)
        if current.state == GuestState.RUNNING:
            return current
        binding = spec.host_binding()
        if shutil.which(self.qemu_binary) is None:
            raise LauncherError(f"{self.qemu_binary} is not installed")
        image = self._image(spec)
        directory = self.guest_dir(spec.lease_id)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        record: dict[str, Any] = {
            "lease_id": spec.lease_id,
            "vcpu": spec.vcpu,
            "memory_mib": spec.memory_mib,
            "disk_gib": spec.disk_gib,
            "expected_measurement": spec.expected_measurement.hex(),
            "binding": binding.to_json(),
        }
        ssh_port = 0
        forwards: list[tuple[int, int]] = []
        if image is not None:
            try:
                ports = service_ports(image)
            except ValueError as exc:
                raise LauncherError(
                    f"lease {spec.lease_id}: image {image.image_id}: {exc}"
                ) from exc
            ssh_port = free_local_port(self.public_host)
            forwards = [(port, free_local_port(self.public_host)) for port in ports]
            record["image"] = image.image_id
            record["public_host"] = self.public_host
            record["ports"] = [list(forward) for forward in forwards]
            booted = self.booted_measurement(spec, image)
            if booted is not None:
                record["booted_measurement"] = booted.hex()
            record["ssh_port"] = ssh_port
        else:
            record["guest_key"] = simulated_guest_key().hex()  # no agent in SeaBIOS to make one
        (directory / "spec.json").write_text(json.dumps(record))
        # -daemonize returns once QEMU is initialised, so the QMP socket exists afterwards.
        result = subprocess.run(
            self.command_line(spec, image, ssh_port, forwards),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise LauncherError(
                f"QEMU for lease {spec.lease_id} failed ({result.returncode}): "
                f"{result.stderr.strip()[-500:]}"
            )
        info = self.status(spec.lease_id)
        if info.state != GuestState.RUNNING:
            raise LauncherError(f"QEMU for lease {spec.lease_id} started but is {info.state}")
        return info

    def booted_measurement(self, spec: GuestSpec, image: Image) -> bytes | None:
        """What the simulated AMD-SP will sign: the booted image's measurement, never the
        lease's expectation (cached: the servability check computed it already)."""
        booted = self.image_measurement(image.image_id, spec.vcpu)
        if booted is None:
            raise LauncherError(f"lease {spec.lease_id}: image {image.image_id} cannot be measured")
        return booted

    def status(self, lease_id: int) -> GuestInfo:
        directory = self.guest_dir(lease_id)
        if not directory.is_dir():
            return GuestInfo(lease_id, GuestState.MISSING)
        pid = self._pid(lease_id)
        if pid is None:
            return GuestInfo(lease_id, GuestState.STOPPED)
        with qmp_session(self.qmp_socket(lease_id)) as qmp:
            status = qmp.execute("query-status")
        running = bool(status.get("running")) and status.get("status") == "running"
        return GuestInfo(lease_id, GuestState.RUNNING if running else GuestState.STOPPED, str(pid))

    def stop(self, lease_id: int) -> None:
        directory = self.guest_dir(lease_id)
        pid = self._pid(lease_id)
        if pid is not None:
            try:
                with qmp_session(self.qmp_socket(lease_id)) as qmp:
                    qmp.execute("quit")
            except (LauncherError, RuntimeError, OSError):
                os.kill(pid, signal.SIGTERM)  # no monitor: QEMU also exits cleanly on TERM
            deadline = time.monotonic() + _STOP_TIMEOUT_S
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        for socket_path in self.socket_dir.glob(f"{lease_id}.*"):
            socket_path.unlink(missing_ok=True)

    def running(self) -> list[GuestInfo]:
        found: list[GuestInfo] = []
        for directory in sorted(self.run_dir.glob(f"{_GUEST_DIR_PREFIX}*")):
            suffix = directory.name.removeprefix(_GUEST_DIR_PREFIX)
            if not suffix.isdigit():
                continue
            lease_id = int(suffix)
            try:
                info = self.status(lease_id)
            except LauncherError:
                # The monitor does not answer but the process lives: count it as running,
                # so that nobody starts a second guest beside it.
                pid = self._pid(lease_id)
                if pid is None:
                    continue
                info = GuestInfo(lease_id, GuestState.RUNNING, str(pid))
            if info.state == GuestState.RUNNING:
                found.append(info)
        return found

    def images_in_use(self) -> set[str]:
        """The images of this launcher's guests (running or starting) and its default."""
        found = {self.default_image} if self.default_image else set()
        for spec in self.run_dir.glob(f"{_GUEST_DIR_PREFIX}*/spec.json"):
            try:
                image = json.loads(spec.read_text()).get("image")
            except (OSError, ValueError):
                continue
            if image:
                found.add(str(image))
        return found

    def _record(self, lease_id: int) -> dict[str, Any]:
        try:
            return dict(json.loads((self.guest_dir(lease_id) / "spec.json").read_text()))
        except (FileNotFoundError, ValueError):
            raise LauncherError(f"lease {lease_id} has no guest") from None

    def channel(self, lease_id: int) -> GuestChannel:
        """The guest agent's channel; LauncherError for a guest without one (no image)."""
        if "image" not in self._record(lease_id):
            raise LauncherError(f"lease {lease_id} runs no cvm image, so has no guest agent")
        return GuestChannel(self.agent_socket(lease_id))

    def read_console(self, lease_id: int, max_bytes: int = CONSOLE_RING_BYTES) -> bytes:
        """Take what the guest wrote to its serial console since the last call (at most
        `max_bytes`) out of QEMU's ring buffer; what a flood overwrote there is gone."""
        taken: list[bytes] = []
        left = max_bytes
        with qmp_session(self.qmp_socket(lease_id)) as qmp:
            while left > 0:
                encoded = qmp.execute(
                    "ringbuf-read", device=CONSOLE_DEVICE, size=min(left, 1 << 16), format="base64"
                )
                try:
                    chunk = base64.b64decode(str(encoded), validate=True)
                except ValueError as exc:
                    raise LauncherError(f"lease {lease_id}: ringbuf-read returned {exc}") from exc
                if not chunk:
                    break
                taken.append(chunk[:left])
                left -= len(chunk)
        return b"".join(taken)

    def port_forwards(self, lease_id: int) -> list[tuple[int, int]]:
        """(guest port, host port on `public_host`) of each service port of the guest."""
        return [(int(guest), int(host)) for guest, host in self._record(lease_id).get("ports", [])]

    def ssh_port(self, lease_id: int) -> int:
        """The port on `public_host` forwarded to the guest's SSH server."""
        port = self._record(lease_id).get("ssh_port")
        if not port:
            raise LauncherError(f"lease {lease_id} runs no cvm image, so has no SSH")
        return int(port)

    def booted(self, lease_id: int, timeout_s: float) -> bool:
        """Whether the guest agent answers `hello` within `timeout_s` (a guest without an
        agent, or none at all, has nothing to wait for: its report request decides)."""
        try:
            record = self._record(lease_id)
        except LauncherError:
            return True
        if "image" not in record:
            return True
        try:
            self.channel(lease_id).wait_ready(timeout_s)
        except LauncherError:
            return False
        return True

    def wait_ready(self, lease_id: int) -> dict[str, Any]:
        """Block until the guest agent answers (boot done); its hello answer."""
        return self.channel(lease_id).wait_ready(self.boot_timeout_s)

    def deliver_secrets(self, lease_id: int, sealed: dict[str, Any]) -> list[str]:
        """Hand a sealed message (report_data, enc, ciphertext, signature in hex; seq) to the
        guest agent. The guest checks the renter's signature and the seq; the node cannot."""
        fields = ("report_data", "enc", "ciphertext", "seq", "signature")
        message = {"op": "secrets", **{k: sealed[k] for k in fields}}
        answer = self.channel(lease_id).request(message)
        return answer.texts("installed")  # checked: a guest's `"installed": 5` is an error

    def binding(self, lease_id: int) -> HostBinding:
        """The lease binding the guest was launched with (LauncherError for a guest from
        before launches were bound: it cannot attest and is relaunched)."""
        try:
            return HostBinding.from_json(self._record(lease_id)["binding"])
        except (KeyError, ValueError, TypeError) as exc:
            raise LauncherError(f"lease {lease_id}: the guest was launched unbound") from exc

    def bound_channel(self, lease_id: int) -> GuestChannel:
        """The guest agent's channel, the guest bound to its launch binding (idempotent)."""
        binding = self.binding(lease_id)
        channel = self.channel(lease_id)
        channel.bind(binding.chain_id, binding.registry, lease_id, binding.renter,
                     ready_timeout_s=self.boot_timeout_s)  # fmt: skip
        return channel

    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        if self.status(lease_id).state != GuestState.RUNNING:
            raise LauncherError(f"lease {lease_id} has no running guest to attest")
        record = self._record(lease_id)
        binding = self.binding(lease_id)
        host_data = binding.host_data(lease_id)
        if "image" not in record:
            guest_key = bytes.fromhex(record["guest_key"])
            report_data = build_report_data(
                binding.chain_id, binding.registry, lease_id, nonce, guest_key
            )
            signed = self.signer.sign_report(
                bytes.fromhex(record["expected_measurement"]), report_data, host_data
            )
            return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, guest_key)
        answer, guest_key, bound = self.bound_channel(lease_id).attest(lease_id, nonce)
        if answer.get("report"):
            raise LauncherError(f"lease {lease_id}: a hardware report from a non-SNP launcher")
        signed = self.signer.sign_report(
            bytes.fromhex(record["booted_measurement"]), bound, host_data
        )
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, guest_key)
