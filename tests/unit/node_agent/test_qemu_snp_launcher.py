"""The `qemu-snp` launcher against recorded expectations: command line, QMP, guest channel,
and a clear refusal on hosts without SEV-SNP (such as this one)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.errors import HostUnsupported, LauncherError
from node_agent.launcher.base import GuestSpec, GuestState
from node_agent.launcher.qemu import process_alive
from node_agent.launcher.qemu_snp import (
    QemuSnpLauncher,
    SnpHost,
    SnpImage,
    parse_qemu_version,
    request_guest_report,
    snp_host_problems,
)
from tests.unit.node_agent.fake_qmp import RecordedQmp

DATA = Path(__file__).with_name("data")
QMP = json.loads((DATA / "qemu_snp_qmp.json").read_text())
IMAGE = SnpImage(
    ovmf=Path("images/OVMF.amdsev.fd"),
    kernel=Path("images/vmlinuz"),
    initrd=Path("images/initrd.img"),
    cmdline="console=ttyS0 root=/dev/vda",
)
SPEC = GuestSpec(lease_id=7, vcpu=2, memory_mib=2048, disk_gib=20, expected_measurement=bytes(48))


@pytest.fixture
def launcher(tmp_path: Path) -> QemuSnpLauncher:
    return QemuSnpLauncher(tmp_path / "run", IMAGE, check_host=False)


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
    directory, sockets = str(launcher.guest_dir(7)), str(launcher.socket_dir)
    expected = [arg.replace("{dir}", directory).replace("{sockets}", sockets) for arg in recorded]
    assert launcher.command_line(SPEC) == expected


def test_policy_never_allows_debug_by_default() -> None:
    assert IMAGE.policy & (1 << 19) == 0 and IMAGE.policy & (1 << 17)


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


class FakeGuestAgent:
    """The guest side of the `cvm.attest` channel, answering with a canned report."""

    def __init__(self, path: Path, answer: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._answer = answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn, conn.makefile("rwb") as stream:
            request = json.loads(stream.readline())
            self.requests.append(request)
            answer = self._answer(request) if callable(self._answer) else self._answer
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=5)


def _report_with(report_data: bytes) -> bytes:
    report = bytearray(1184)
    report[0x50:0x90] = report_data
    return bytes(report)


def test_guest_channel_returns_the_report_for_our_report_data(tmp_path: Path) -> None:
    report_data = bytes(range(64))
    agent = FakeGuestAgent(
        tmp_path / "attest.sock",
        lambda req: {
            "report": _report_with(bytes.fromhex(req["report_data"])).hex(),
            "vcek": "3082",
            "cert_chain": "-----BEGIN CERTIFICATE-----",
        },
    )
    try:
        got = request_guest_report(tmp_path / "attest.sock", report_data)
    finally:
        agent.close()
    assert agent.requests == [{"request": "snp-report", "report_data": report_data.hex()}]
    assert got.report[0x50:0x90] == report_data and got.vcek_der == b"\x30\x82"


def test_guest_channel_rejects_a_report_for_other_report_data(tmp_path: Path) -> None:
    stale = {"report": _report_with(bytes(64)).hex(), "vcek": "", "cert_chain": ""}
    agent = FakeGuestAgent(tmp_path / "attest.sock", stale)
    try:
        with pytest.raises(LauncherError, match="does not carry the REPORT_DATA"):
            request_guest_report(tmp_path / "attest.sock", b"\x01" * 64)
    finally:
        agent.close()


def test_this_host_is_refused_with_every_reason(tmp_path: Path) -> None:
    host = SnpHost(
        sev_device=tmp_path / "sev",
        kvm_amd_snp_param=tmp_path / "sev_snp",
        kvm_device=tmp_path / "kvm",
    )
    with pytest.raises(HostUnsupported) as caught:
        QemuSnpLauncher(tmp_path / "run", IMAGE, host=host, qemu_binary="no-such-qemu")
    message = str(caught.value)
    for reason in ("sev is missing", "kvm is missing", "without SEV-SNP", "not installed"):
        assert reason in message
    assert "Use the `qemu` or `simulated` launcher" in message


def test_real_host_without_snp_is_refused(tmp_path: Path) -> None:
    if Path("/dev/sev").exists():
        pytest.fail("this test expects a host without SEV-SNP; adjust it for SNP hosts")
    with pytest.raises(HostUnsupported, match="/dev/sev is missing"):
        QemuSnpLauncher(tmp_path / "run", IMAGE)


def test_host_checks_each_requirement(tmp_path: Path) -> None:
    (tmp_path / "sev").touch()
    (tmp_path / "kvm").touch()
    (tmp_path / "sev_snp").write_text("Y\n")
    host = SnpHost(tmp_path / "sev", tmp_path / "sev_snp", tmp_path / "kvm")
    assert snp_host_problems(host, "QEMU emulator version 9.1.0\n") == []
    assert snp_host_problems(host, "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg)") == [
        "QEMU 7.2.22 is older than 9.1 (no sev-snp-guest)"
    ]
    (tmp_path / "sev_snp").write_text("N\n")
    assert snp_host_problems(host, "QEMU emulator version 10.0.2") == [
        "kvm_amd has sev_snp=N (SEV-SNP disabled in the kernel)"
    ]


def test_qemu_version_parsing() -> None:
    assert parse_qemu_version("QEMU emulator version 9.1.0 (v9.1.0)") == (9, 1, 0)
    assert parse_qemu_version("QEMU emulator version 10.0") == (10, 0, 0)
    with pytest.raises(HostUnsupported):
        parse_qemu_version("bash: qemu: not found")
