"""The `qemu-snp` launcher against recorded expectations: command line (HOST_DATA binding
the lease and its renter, isolated network), QMP, the guest channel (protocol v2: bind,
then attest on a nonce, against a fake guest agent on the Unix socket), and a clear
refusal on hosts without SEV-SNP (such as this one)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from eth_utils import to_checksum_address

from cvm.attestation import Product, SimulatedSecureProcessor, parse, verify_report
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.kds import CachingKds, cert_chain_url, vcek_url
from cvm.images import REFERENCE_OVMF, Image, ImageStore, measure
from node_agent.errors import GuestRefused, HostUnsupported, LauncherError
from node_agent.launcher.base import GuestReport, GuestSpec, GuestState, HostBinding
from node_agent.launcher.qemu import QemuLauncher, process_alive
from node_agent.launcher.qemu_args import SNP_VIRTIO, supports_direct_io
from node_agent.launcher.qemu_snp import (
    QemuSnpLauncher,
    SnpConfig,
    SnpHost,
    appraise_guest_report,
    snp_host_problems,
    snp_ovmf,
)
from node_agent.launcher.signer import SimulatedAmdSp, simulated_guest_key
from tests.unit.node_agent.fake_qmp import RecordedQmp

DATA = Path(__file__).with_name("data")
SNP_DATA = Path(__file__).resolve().parents[2] / "data" / "snp"
QMP = json.loads((DATA / "qemu_snp_qmp.json").read_text())
CONFIG = SnpConfig(ovmf=Path("firmware/OVMF.amdsev.fd"))
IMAGE = Image(
    image_id="ab" * 32,
    directory=Path("images") / ("ab" * 32),
    cmdline="console=ttyS0 rdinit=/init quiet",
    kernel_sha256="11" * 32,
    initrd_sha256="22" * 32,
)
CHAIN_ID, REGISTRY, RENTER = 31337, "0x" + "5a" * 20, "0x" + "7e" * 20
BINDING = HostBinding(CHAIN_ID, REGISTRY, RENTER)
HOST_DATA = host_data(CHAIN_ID, REGISTRY, 7, RENTER)
SPEC = GuestSpec(lease_id=7, vcpu=2, memory_mib=2048, disk_gib=20, expected_measurement=bytes(48),
                 binding=BINDING)  # fmt: skip


@pytest.fixture
def launcher(tmp_path: Path) -> QemuSnpLauncher:
    return QemuSnpLauncher(
        tmp_path / "run", CONFIG, images=ImageStore(tmp_path / "images"), check_host=False
    )


@pytest.fixture
def fake_guest(launcher: QemuSnpLauncher) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names lease 7, with a pid file, as QEMU would leave."""
    directory = launcher.guest_dir(7)
    directory.mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-name", "cvm-lease-7"]
    )
    (directory / "qemu.pid").write_text(str(process.pid))
    yield process
    process.kill()
    process.wait()


def test_command_line_matches_the_recording(launcher: QemuSnpLauncher) -> None:
    recorded = json.loads((DATA / "qemu_snp_cmdline.json").read_text())["argv"]
    argv = launcher.command_line(SPEC, IMAGE, 2222)  # makes the volume file: a 20 GiB hole
    volume = launcher.volumes.path(7)
    places = {
        "{dir}": str(launcher.guest_dir(7)),
        "{sockets}": str(launcher.socket_dir),
        "{image}": str(IMAGE.directory),
        "{volumes}": str(launcher.volumes.directory),
        "{cache}": "none" if supports_direct_io(volume) else "writeback",
    }
    expected = []
    for arg in recorded:
        for key, value in places.items():
            arg = arg.replace(key, value)
        expected.append(arg)
    assert argv == expected
    assert volume.stat().st_size == 20 * 2**30 and volume.stat().st_blocks == 0


def test_the_image_boots_as_under_the_qemu_launcher(
    launcher: QemuSnpLauncher, tmp_path: Path
) -> None:
    # The same kernel, initrd, command line, SSH forward and agent port: only the virtio
    # devices get the options SEV-SNP's private memory needs.
    plain = QemuLauncher(tmp_path / "run", SimulatedAmdSp(tmp_path / "sim"), accel="tcg")
    snp = launcher.command_line(SPEC, IMAGE, 2222)
    qemu = plain.command_line(SPEC, IMAGE, 2222)
    start = qemu.index("-kernel")
    shared = qemu[start : qemu.index("-qmp")]
    assert [arg.replace(SNP_VIRTIO, "") for arg in snp[snp.index("-kernel") :]][
        : len(shared)
    ] == shared
    assert SNP_VIRTIO not in " ".join(qemu)


def test_a_lease_without_an_image_is_refused(launcher: QemuSnpLauncher) -> None:
    with pytest.raises(LauncherError, match="names no cvm image"):
        launcher.command_line(SPEC, None, 0)
    with pytest.raises(LauncherError, match="qemu-snp boots only cvm images"):
        launcher.launch(SPEC)


def _store_image(store: ImageStore, tmp_path: Path) -> Image:
    source = tmp_path / "source"
    source.mkdir()
    (source / "vmlinuz").write_bytes(b"kernel of lease 7" * 64)
    (source / "initrd.cpio").write_bytes(b"initrd of lease 7" * 64)
    manifest = {
        "cmdline": "console=ttyS0 rdinit=/init",
        "kernel_sha256": hashlib.sha256(b"kernel of lease 7" * 64).hexdigest(),
        "initrd_sha256": hashlib.sha256(b"initrd of lease 7" * 64).hexdigest(),
    }
    (source / "manifest.json").write_text(json.dumps(manifest))
    return store.add(source)


def test_the_expected_measurement_uses_the_launchs_ovmf_and_vcpus(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    image = _store_image(store, tmp_path)
    # Any AmdSev firmware file will do for the arithmetic: the reference metadata here.
    launcher = QemuSnpLauncher(
        tmp_path / "run", SnpConfig(ovmf=REFERENCE_OVMF), images=store, check_host=False
    )
    argv = launcher.command_line(SPEC, image, 2222)
    assert argv[argv.index("-bios") + 1] == str(REFERENCE_OVMF)
    assert argv[argv.index("-cpu") + 1] == launcher.vcpu_type
    assert argv[argv.index("-smp") + 1] == "2"
    expected = launcher.image_measurement(image.image_id, 2)
    assert expected == measure(image, vcpus=2, vcpu_type=argv[argv.index("-cpu") + 1],
                               ovmf=REFERENCE_OVMF)  # fmt: skip
    # One more vCPU is one more VMSA in the measurement: the count must be the launch's.
    assert launcher.image_measurement(image.image_id, 3) != expected


def test_snp_needs_a_real_amdsev_ovmf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HostUnsupported, match="does not exist"):
        snp_ovmf(tmp_path / "missing.fd")
    firmware = tmp_path / "OVMF.amdsev.fd"
    firmware.write_bytes(b"\0" * 4096)
    assert snp_ovmf(firmware) == firmware
    monkeypatch.setattr("cvm.images.AMDSEV_OVMF_PATHS", ())  # a host without AmdSev OVMF
    # Without one the reference metadata would measure, but it is no firmware to boot.
    with pytest.raises(HostUnsupported, match="CVM_IMAGE_OVMF"):
        snp_ovmf(None)


def test_policy_never_allows_debug_by_default() -> None:
    assert CONFIG.policy & (1 << 19) == 0 and CONFIG.policy & (1 << 17)


def _serve(launcher: QemuSnpLauncher, exchanges: list[dict[str, Any]], **kw: Any) -> RecordedQmp:
    launcher.guest_dir(7).mkdir(parents=True, exist_ok=True)
    return RecordedQmp(launcher.qmp_socket(7), QMP["greeting"], exchanges, **kw)


def test_launch_check_accepts_an_snp_guest_with_our_policy(launcher: QemuSnpLauncher) -> None:
    qmp = _serve(launcher, QMP["launch_check"])
    try:
        launcher.check_sev_state(7)
    finally:
        qmp.close()
    assert [c["execute"] for c in qmp.received] == ["qmp_capabilities", "query-sev"]
    assert qmp.unexpected == [] and qmp.exchanges == []


def test_launch_check_stops_a_guest_that_is_plain_sev(
    launcher: QemuSnpLauncher, fake_guest: subprocess.Popen[bytes]
) -> None:
    qmp = _serve(launcher, QMP["launch_check_plain_sev"] + QMP["stop"], on_quit=fake_guest.kill)
    try:
        with pytest.raises(LauncherError, match="sev-type is 'sev', not 'sev-snp'"):
            launcher.check_sev_state(7)
    finally:
        qmp.close()
    fake_guest.wait(timeout=10)
    assert [c["execute"] for c in qmp.received][-1] == "quit"
    assert not launcher.guest_dir(7).exists()


def test_status_and_stop_converse_as_recorded(
    launcher: QemuSnpLauncher, fake_guest: subprocess.Popen[bytes]
) -> None:
    qmp = _serve(launcher, QMP["status"] + QMP["stop"], on_quit=fake_guest.kill)
    try:
        assert launcher.status(7).state == GuestState.RUNNING
        launcher.stop(7)
    finally:
        qmp.close()
    assert qmp.unexpected == [] and qmp.exchanges == []
    fake_guest.wait(timeout=10)
    assert not process_alive(fake_guest.pid)
    assert launcher.status(7).state == GuestState.MISSING


def test_launch_check_stops_an_snp_guest_whose_policy_allows_debugging(
    launcher: QemuSnpLauncher, fake_guest: subprocess.Popen[bytes]
) -> None:
    qmp = _serve(launcher, QMP["launch_check_debug_policy"] + QMP["stop"], on_quit=fake_guest.kill)
    try:
        with pytest.raises(LauncherError, match="policy 720896 != 0x30000"):
            launcher.check_sev_state(7)
    finally:
        qmp.close()
    fake_guest.wait(timeout=10)
    assert not launcher.guest_dir(7).exists()


class FakeGuestAgent:
    """The guest agent's end of its virtio-serial port, protocol v2 (one JSON object a line,
    answers carry the request's id): `hello` says what it is bound to, `bind` binds it once
    (HOST_DATA of the binding), `attest` is refused until bound and is answered by `answer`
    (a function of the request and the REPORT_DATA an honest guest binds)."""

    def __init__(self, path: Path, answer: Any, *, bound: dict[str, Any] | None = None,
                 bind_answer: Any = None) -> None:  # fmt: skip
        self.requests: list[dict[str, Any]] = []
        self.bound = bound
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(4)
        self._answer = answer
        self._bind_answer = bind_answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "hello":
            return {"ok": True, "guest_key": GUEST_KEY.hex(), "bound": self.bound}
        if op == "bind":
            wanted = {k: request[k] for k in ("chain_id", "registry", "lease_id", "renter")}
            if self.bound is not None and self.bound != wanted:
                return {"ok": False, "error": "bound to another lease"}
            self.bound = wanted
            if self._bind_answer is not None:
                return dict(self._bind_answer)
            return {"ok": True, "host_data": host_data(**wanted).hex()}
        if op == "attest":
            if self.bound is None:
                return {"ok": False, "error": "not bound"}
            return self._answer(request) if callable(self._answer) else self._answer
        return {"ok": False, "error": f"unknown op {op}"}

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                request = json.loads(stream.readline())
                self.requests.append(request)
                answer = self._reply(request)
                stream.write(json.dumps({**answer, "id": request["id"]}).encode() + b"\n")
                stream.flush()

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=5)


GUEST_KEY = simulated_guest_key()
NONCE = 3
REAL_REPORT = (SNP_DATA / "reports" / "milan_virtee_sev.bin").read_bytes()
REAL_VCEK = (SNP_DATA / "vcek" / "milan_virtee_sev.der").read_bytes()
MILAN_CHAIN = (SNP_DATA / "ca" / "milan_vcek_cert_chain.pem").read_bytes()
MEASUREMENT = bytes(range(48))


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    """A Milan chip under a simulated AMD: it signs reports for any REPORT_DATA (the real
    recording cannot be re-signed), and the launcher is told to trust its root."""
    return SimulatedSecureProcessor(Product.MILAN)


def _bound(request: dict[str, Any], key: bytes = GUEST_KEY) -> bytes:
    """What an honest guest bound to lease 7 binds for the request's nonce and its key."""
    return build_report_data(CHAIN_ID, REGISTRY, 7, request["nonce"], key)


def _answer(
    report: bytes, bound: bytes, certs: bytes = b"", key: bytes = GUEST_KEY
) -> dict[str, Any]:
    return {"ok": True, "source": "configfs-tsm", "report": report.hex(), "certs": certs.hex(),
            "report_data": bound.hex(), "guest_key": key.hex()}  # fmt: skip


def _hardware_answer(request: dict[str, Any], certs: bytes = b"") -> dict[str, Any]:
    """A lying guest: the real Milan report with REPORT_DATA and HOST_DATA rewritten to bind
    the lease, nonce and its key (its signature no longer holds)."""
    bound = _bound(request)
    report = REAL_REPORT[:0x50] + bound + REAL_REPORT[0x90:0xC0] + HOST_DATA + REAL_REPORT[0xE0:]
    return _answer(report, bound, certs)


def _chip_answer(
    chip: SimulatedSecureProcessor,
    certs: bytes = b"",
    measurement: bytes = MEASUREMENT,
    host: bytes = HOST_DATA,
    key: bytes = GUEST_KEY,
) -> Any:
    """What the agent answers on SNP hardware: a version-2 report (it names no product) the
    AMD-SP signed for the lease digest and the agent's key, with the launch's HOST_DATA."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        bound = _bound(request, key)
        signed = chip.attest(measurement=measurement, report_data=bound, host_data=host,
                             version=2)  # fmt: skip
        return _answer(signed.report, bound, certs, key)

    return answer


def _running_guest(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    answer: Any,
    reports: int = 1,
    **agent: Any,
) -> tuple[RecordedQmp, FakeGuestAgent]:
    record = {"image": IMAGE.image_id, "expected_measurement": MEASUREMENT.hex(),
              "binding": BINDING.to_json()}  # fmt: skip
    (launcher.guest_dir(7) / "spec.json").write_text(json.dumps(record))
    qmp = _serve(launcher, QMP["status"] * reports)  # one status check per report
    return qmp, FakeGuestAgent(launcher.agent_socket(7), answer, **agent)


def _kds_with_milan(tmp_path: Path) -> CachingKds:
    # AMD's KDS as a cache that never reaches the network: the real VCEK of the report's chip.
    kds = CachingKds(tmp_path / "kds")
    kds.store(vcek_url(parse(REAL_REPORT), Product.MILAN), REAL_VCEK)
    kds.store(cert_chain_url(Product.MILAN), MILAN_CHAIN)
    return kds


def _kds_with(tmp_path: Path, chip: SimulatedSecureProcessor) -> CachingKds:
    kds = CachingKds(tmp_path / "kds")
    sample = chip.attest(version=2).report  # the VCEK's address depends on chip and TCB only
    kds.store(vcek_url(parse(sample), Product.MILAN), chip.vcek_der)
    kds.store(cert_chain_url(Product.MILAN), chip.chain_pem)
    return kds


def _trusting(launcher: QemuSnpLauncher, chip: SimulatedSecureProcessor) -> QemuSnpLauncher:
    launcher.trusted_roots = [chip.ark]
    # A version-2 report names no product: the host's configured chip finds its VCEK.
    launcher.config = dataclasses.replace(CONFIG, product=Product.MILAN)
    return launcher


def test_the_report_comes_from_the_amd_sp_with_its_vcek_from_kds(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    chip: SimulatedSecureProcessor,
) -> None:
    _trusting(launcher, chip).kds = _kds_with(tmp_path, chip)
    qmp, agent = _running_guest(launcher, fake_guest, _chip_answer(chip))
    try:
        got = launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()
    # The guest is bound to its lease and renter first; then only the nonce goes in: the
    # guest computes the lease digest itself, so the host cannot choose another lease.
    assert [r["op"] for r in agent.requests] == ["hello", "bind", "attest"]
    bind, attest = agent.requests[1], agent.requests[2]
    assert {k: bind[k] for k in ("chain_id", "registry", "lease_id", "renter")} == {
        "chain_id": CHAIN_ID, "registry": to_checksum_address(REGISTRY), "lease_id": 7,
        "renter": to_checksum_address(RENTER)}  # fmt: skip
    assert set(attest) == {"op", "nonce", "id"} and attest["nonce"] == NONCE
    report = parse(got.report)
    assert report.report_data == _bound({"nonce": NONCE}) and got.guest_key == GUEST_KEY
    assert report.host_data == HOST_DATA
    assert got.vcek_der == chip.vcek_der and got.cert_chain_pem == chip.chain_pem
    verify_report(got.report, got.vcek_der, chain=got.cert_chain_pem, trusted_roots=[chip.ark])


def _cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    guids = {"vcek": "63da758d-e664-4564-adc5-f4b93be8accd",
             "ask": "c0b406a4-a803-4952-9743-3fb6014cd0ae",
             "ark": "4ab7b379-bbac-4fe4-a02f-05aef327c782"}  # fmt: skip
    header = 24 * (len(entries) + 1)
    table, blobs = b"", b""
    for name, der in entries:
        table += uuid.UUID(guids[name]).bytes + struct.pack("<II", header + len(blobs), len(der))
        blobs += der
    return table + bytes(24) + blobs


def test_the_hosts_certificate_table_is_used_when_given(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    chip: SimulatedSecureProcessor,
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    table = _cert_table([("vcek", chip.vcek_der), ("ask", chip.ask.public_bytes(Encoding.DER)),
                         ("ark", chip.ark.public_bytes(Encoding.DER))])  # fmt: skip
    _trusting(launcher, chip).kds = CachingKds(tmp_path / "empty-kds")  # no cache, no network
    qmp, agent = _running_guest(launcher, fake_guest, _chip_answer(chip, table))
    try:
        got = launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()
    assert got.vcek_der == chip.vcek_der
    assert x509.load_pem_x509_certificates(got.cert_chain_pem) == [chip.ask, chip.ark]


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        # No SEV-SNP interface in the guest: it is no SNP guest, nothing to sign for it.
        (lambda req: {**_hardware_answer(req), "source": "host", "report": ""},
         "not running as an SNP guest"),
        (lambda req: {**_hardware_answer(req), "report_data": (bytes(32) * 2).hex()},
         "bound another REPORT_DATA"),
        (lambda req: {**_hardware_answer(req), "report": REAL_REPORT.hex()},
         "not for its REPORT_DATA"),
        (lambda req: {"ok": True, "source": "configfs-tsm"}, "malformed"),
        # A report whose bytes were changed after the AMD-SP signed them: the verifiers
        # reject it, so the node never submits it.
        (_hardware_answer, "would be rejected: .*signature"),
    ],
)  # fmt: skip
def test_a_report_the_launcher_cannot_stand_behind_is_refused(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    answer: Any,
    match: str,
) -> None:
    launcher.kds = _kds_with_milan(tmp_path)
    launcher.config = dataclasses.replace(CONFIG, product=Product.MILAN)
    qmp, agent = _running_guest(launcher, fake_guest, answer)
    try:
        with pytest.raises(LauncherError, match=match):
            launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()


@pytest.mark.parametrize("lie", ["another chip's VCEK", "another measurement", "untrusted root"])
def test_a_signed_report_the_verifiers_would_reject_is_refused(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    chip: SimulatedSecureProcessor,
    lie: str,
) -> None:
    _trusting(launcher, chip).kds = _kds_with(tmp_path, chip)
    answer = _chip_answer(chip)
    if lie == "another chip's VCEK":
        other = SimulatedSecureProcessor(Product.MILAN, amd=chip.amd, chip_id=chip.hwid)
        answer = _chip_answer(other)  # same chip id and TCB: the KDS hands out chip's VCEK
    elif lie == "another measurement":
        answer = _chip_answer(chip, measurement=bytes(48))
    else:
        launcher.trusted_roots = None  # AMD's pinned roots, which never signed this chip
    qmp, agent = _running_guest(launcher, fake_guest, answer)
    try:
        with pytest.raises(LauncherError, match="would be rejected"):
            launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()


def _reasons(verdict: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in verdict}


def test_the_appraisal_binds_lease_nonce_key_and_renter(chip: SimulatedSecureProcessor) -> None:
    """The node appraises with exactly the verifiers' binding: a report for another lease,
    nonce or renter, or with a malformed guest key, is never submitted."""

    def got(answer: dict[str, Any]) -> GuestReport:
        return GuestReport(bytes.fromhex(answer["report"]), chip.vcek_der, chip.chain_pem,
                           bytes.fromhex(answer["guest_key"]))  # fmt: skip

    honest = got(_chip_answer(chip)({"nonce": NONCE}))
    roots = [chip.ark]
    assert appraise_guest_report(honest, 7, NONCE, BINDING, MEASUREMENT, roots) == []
    other_renter = HostBinding(CHAIN_ID, REGISTRY, "0x" + "11" * 20)
    assert _reasons(appraise_guest_report(honest, 7, NONCE, other_renter, MEASUREMENT, roots)) == {
        "HOST_DATA_MISMATCH"}  # fmt: skip
    assert _reasons(appraise_guest_report(honest, 8, NONCE, BINDING, MEASUREMENT, roots)) == {
        "BINDING_MISMATCH", "HOST_DATA_MISMATCH"}  # fmt: skip
    assert _reasons(appraise_guest_report(honest, 7, NONCE + 1, BINDING, MEASUREMENT, roots)) == {
        "BINDING_MISMATCH"}  # fmt: skip
    # The old check compared sha256(b"") with what an empty key bound, and let it through.
    for bad_key in (b"", GUEST_KEY[:32], bytes(84)):
        lying = got(_chip_answer(chip, key=bad_key)({"nonce": NONCE}))
        verdict = appraise_guest_report(lying, 7, NONCE, BINDING, MEASUREMENT, roots)
        assert _reasons(verdict) == {"GUEST_KEY_MALFORMED"}, bad_key


def test_the_appraisal_checks_the_genuine_recordings_signature() -> None:
    """AMD's real signature verifies (only the cvm binding, which the recording lacks,
    fails), and every tampered recording fails on more than the binding."""
    genuine = parse(REAL_REPORT)
    binding_only = {"BINDING_MISMATCH", "HOST_DATA_MISMATCH"}

    def reasons(report: bytes, vcek: bytes = REAL_VCEK) -> set[str]:
        got = GuestReport(report, vcek, MILAN_CHAIN, GUEST_KEY)
        return _reasons(appraise_guest_report(got, 7, NONCE, BINDING, genuine.measurement))

    assert reasons(REAL_REPORT) == binding_only
    for name in ("byte0x15_xor80", "measurement_bit0_flipped", "reportdata_bit0_flipped",
                 "sig_r_bit0_flipped"):  # fmt: skip
        tampered = (SNP_DATA / "negative" / f"milan_virtee_sev_report_{name}.bin").read_bytes()
        assert reasons(tampered) - binding_only, name
    bad_vcek = (SNP_DATA / "negative" / "milan_virtee_sev_vcek_byte40_xorff.der").read_bytes()
    assert reasons(REAL_REPORT, bad_vcek) - binding_only


@pytest.mark.parametrize(
    ("agent", "match"),
    [
        # Bound (for life) to another lease: the node learns it from hello and gives up.
        ({"bound": {"chain_id": CHAIN_ID, "registry": to_checksum_address(REGISTRY),
                    "lease_id": 8, "renter": to_checksum_address(RENTER)}},
         "bound to another lease"),
        # A guest that claims to have bound another HOST_DATA.
        ({"bind_answer": {"ok": True, "host_data": "00" * 32}}, "another HOST_DATA"),
        ({"bind_answer": {"ok": True}}, "bind answer is malformed"),
    ],
)  # fmt: skip
def test_a_guest_not_bound_to_this_lease_is_never_attested(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    chip: SimulatedSecureProcessor,
    agent: dict[str, Any],
    match: str,
) -> None:
    qmp, guest = _running_guest(launcher, fake_guest, _chip_answer(chip), **agent)
    try:
        with pytest.raises(LauncherError, match=match) as raised:
            launcher.get_report(7, NONCE)
    finally:
        guest.close()
        qmp.close()
    assert "attest" not in [r["op"] for r in guest.requests]
    if "bound" in agent:
        assert isinstance(raised.value, GuestRefused)


@pytest.mark.parametrize("bad_key", [b"", b"\x01" * 32, bytes(84), b"\x01" * 85])
def test_an_empty_short_or_malformed_guest_key_is_never_submitted(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    chip: SimulatedSecureProcessor,
    bad_key: bytes,
) -> None:
    """FAILED on the old code for the empty key: the channel compared sha256(b"") with what
    the guest bound, and the verifiers then rejected the report and slashed the node."""
    _trusting(launcher, chip).kds = _kds_with(tmp_path, chip)
    qmp, agent = _running_guest(launcher, fake_guest, _chip_answer(chip, key=bad_key))
    try:
        with pytest.raises(LauncherError, match="not a guest key"):
            launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()


def test_a_report_with_another_renters_host_data_is_refused(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    chip: SimulatedSecureProcessor,
) -> None:
    _trusting(launcher, chip).kds = _kds_with(tmp_path, chip)
    other = host_data(CHAIN_ID, REGISTRY, 7, "0x" + "11" * 20)
    qmp, agent = _running_guest(launcher, fake_guest, _chip_answer(chip, host=other))
    try:
        with pytest.raises(LauncherError, match="another HOST_DATA"):
            launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()


def test_a_missing_vcek_is_one_clear_error(
    launcher: QemuSnpLauncher,
    fake_guest: subprocess.Popen[bytes],
    tmp_path: Path,
    chip: SimulatedSecureProcessor,
) -> None:
    launcher.kds = CachingKds(tmp_path / "empty-kds")
    qmp, agent = _running_guest(launcher, fake_guest, _chip_answer(chip), reports=2)
    try:
        with pytest.raises(LauncherError, match=r"no VCEK for the report: .*none was given"):
            launcher.get_report(7, NONCE)
        launcher.config = dataclasses.replace(CONFIG, product=Product.MILAN)
        with pytest.raises(LauncherError, match=r"no VCEK for the report: .*not in the cache"):
            launcher.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()


OBJECT_HELP_9_1 = json.loads((DATA / "qemu_object_help.json").read_text())["output"]


def _snp_host(tmp_path: Path) -> SnpHost:
    (tmp_path / "sev").touch()
    (tmp_path / "kvm").touch()
    (tmp_path / "sev_snp").write_text("Y\n")
    return SnpHost(tmp_path / "sev", tmp_path / "sev_snp", tmp_path / "kvm")


def test_this_host_is_refused_with_every_reason(tmp_path: Path) -> None:
    host = SnpHost(
        sev_device=tmp_path / "sev",
        kvm_amd_snp_param=tmp_path / "sev_snp",
        kvm_device=tmp_path / "kvm",
    )
    with pytest.raises(HostUnsupported) as caught:
        QemuSnpLauncher(tmp_path / "run", CONFIG, images=ImageStore(tmp_path / "images"),
                        host=host, qemu_binary="no-such-qemu")  # fmt: skip
    message = str(caught.value)
    for reason in ("sev is missing", "kvm is missing", "without SEV-SNP", "not installed"):
        assert reason in message
    assert "Use the `qemu` or `simulated` launcher" in message


def test_real_host_without_snp_is_refused(tmp_path: Path) -> None:
    if Path("/dev/sev").exists():
        pytest.fail("this test expects a host without SEV-SNP; adjust it for SNP hosts")
    with pytest.raises(HostUnsupported, match="/dev/sev is missing"):
        QemuSnpLauncher(tmp_path / "run", CONFIG, images=ImageStore(tmp_path / "images"))


def test_the_installed_qemu_without_sev_snp_guest_is_refused(tmp_path: Path) -> None:
    # Debian 12's QEMU 7.2 knows sev-guest only: asked for real, it is refused by name even
    # on a host that had everything else.
    with pytest.raises(HostUnsupported) as caught:
        QemuSnpLauncher(tmp_path / "run", CONFIG, images=ImageStore(tmp_path / "images"),
                        host=_snp_host(tmp_path))  # fmt: skip
    assert str(caught.value) == (
        "this host cannot run SEV-SNP guests: this QEMU has no sev-snp-guest object type"
        " (QEMU >= 9.1 has it). Use the `qemu` or `simulated` launcher here."
    )


def test_host_checks_each_requirement(tmp_path: Path) -> None:
    host = _snp_host(tmp_path)
    assert snp_host_problems(host, OBJECT_HELP_9_1) == []
    without = OBJECT_HELP_9_1.replace("sev-snp-guest", "")
    assert snp_host_problems(host, without) == [
        "this QEMU has no sev-snp-guest object type (QEMU >= 9.1 has it)"
    ]
    (tmp_path / "sev_snp").write_text("N\n")
    assert snp_host_problems(host, OBJECT_HELP_9_1) == [
        "kvm_amd has sev_snp=N (SEV-SNP disabled in the kernel)"
    ]


@pytest.fixture
def plain_guest(tmp_path: Path) -> Iterator[tuple[QemuLauncher, SimulatedAmdSp]]:
    """A `qemu` launcher (no SEV: the simulated AMD-SP signs) with lease 7's guest running
    the cvm image, as QEMU would leave it: a process named for it, its pid file, its record."""
    sim = SimulatedAmdSp(tmp_path / "sim")
    plain = QemuLauncher(tmp_path / "plain", sim, accel="tcg")
    directory = plain.guest_dir(7)
    directory.mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-name", "cvm-lease-7"]
    )
    (directory / "qemu.pid").write_text(str(process.pid))
    record = {"image": IMAGE.image_id, "expected_measurement": MEASUREMENT.hex(),
              "booted_measurement": MEASUREMENT.hex(), "binding": BINDING.to_json()}  # fmt: skip
    (directory / "spec.json").write_text(json.dumps(record))
    yield plain, sim
    process.kill()
    process.wait()


def _software_answer(key: bytes = GUEST_KEY) -> Any:
    """What the agent answers without SNP hardware: the REPORT_DATA it binds, no report."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        bound = _bound(request, key)
        return {"ok": True, "source": "none", "report": "", "report_data": bound.hex(),
                "guest_key": key.hex()}  # fmt: skip

    return answer


def test_the_qemu_launcher_binds_its_guest_and_signs_the_launchs_host_data(
    plain_guest: tuple[QemuLauncher, SimulatedAmdSp],
) -> None:
    plain, sim = plain_guest
    qmp = RecordedQmp(plain.qmp_socket(7), QMP["greeting"], QMP["status"])
    agent = FakeGuestAgent(plain.agent_socket(7), _software_answer())
    try:
        got = plain.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()
    assert [r["op"] for r in agent.requests] == ["hello", "bind", "attest"]
    report = parse(got.report)
    assert report.host_data == HOST_DATA and report.measurement == MEASUREMENT
    assert report.report_data == _bound({"nonce": NONCE}) and got.guest_key == GUEST_KEY
    assert appraise_guest_report(got, 7, NONCE, BINDING, MEASUREMENT, [sim.ark]) == []


@pytest.mark.parametrize("bad_key", [b"", b"\x01" * 64, bytes(84)])
def test_the_qemu_launcher_never_takes_a_malformed_guest_key(
    plain_guest: tuple[QemuLauncher, SimulatedAmdSp], bad_key: bytes
) -> None:
    """FAILED on the old code for the empty key: sha256(b"") matched what the guest bound,
    the simulated AMD-SP signed it, and the verifiers rejected the node's submission."""
    plain, _ = plain_guest
    qmp = RecordedQmp(plain.qmp_socket(7), QMP["greeting"], QMP["status"])
    agent = FakeGuestAgent(plain.agent_socket(7), _software_answer(bad_key))
    try:
        with pytest.raises(LauncherError, match="not a guest key"):
            plain.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()


def test_a_guest_that_binds_another_lease_digest_is_refused(
    plain_guest: tuple[QemuLauncher, SimulatedAmdSp],
) -> None:
    """A guest that attests another lease (or nonce) than the one it was asked for."""
    plain, _ = plain_guest
    wrong = build_report_data(CHAIN_ID, REGISTRY, 8, NONCE, GUEST_KEY)
    answer = {"ok": True, "source": "none", "report": "", "report_data": wrong.hex(),
              "guest_key": GUEST_KEY.hex()}  # fmt: skip
    qmp = RecordedQmp(plain.qmp_socket(7), QMP["greeting"], QMP["status"])
    agent = FakeGuestAgent(plain.agent_socket(7), answer)
    try:
        with pytest.raises(LauncherError, match="bound another REPORT_DATA"):
            plain.get_report(7, NONCE)
    finally:
        agent.close()
        qmp.close()
