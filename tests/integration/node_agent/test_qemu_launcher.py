"""The `qemu` launcher really starts, finds, and stops QEMU guests over QMP."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.attestation.binding import GuestKey, build_report_data, host_data
from node_agent.errors import LauncherError
from node_agent.launcher.base import GuestReport, GuestSpec, GuestState, HostBinding
from node_agent.launcher.qemu import QemuLauncher, process_alive
from node_agent.launcher.qmp import qmp_session
from tests.integration.node_agent.qemu import ensure_qemu

pytestmark = [pytest.mark.integration, pytest.mark.guests]


class RecordingSigner:
    """Stands in for the AMD-SP: remembers what it was asked to sign."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, bytes]] = []

    def sign_report(self, measurement: bytes, report_data: bytes, host_data: bytes) -> GuestReport:
        self.calls.append((measurement, report_data, host_data))
        return GuestReport(report=bytes(1184), vcek_der=b"vcek", cert_chain_pem=b"chain")


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[QemuLauncher]:
    # A deep directory: sockets must not inherit its length (unix paths stop at 108 bytes).
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    qemu = QemuLauncher(deep / "run", RecordingSigner(), qemu_binary=ensure_qemu())
    yield qemu
    for lease_id in range(1, 10):
        qemu.stop(lease_id)  # no QEMU outlives the test


BINDING = HostBinding(31337, "0x" + "5a" * 20, "0x" + "7e" * 20)


def _spec(lease_id: int, vcpu: int = 1) -> GuestSpec:
    return GuestSpec(lease_id, vcpu, 64, 1, bytes([lease_id]) * 48, binding=BINDING)


def test_launch_runs_a_real_guest_and_is_idempotent(launcher: QemuLauncher) -> None:
    info = launcher.launch(_spec(1, vcpu=2))
    assert info.state == GuestState.RUNNING
    pid = int(info.guest_id)
    assert process_alive(pid)
    with qmp_session(launcher.qmp_socket(1)) as qmp:
        cpus = qmp.execute("query-cpus-fast")
        assert qmp.execute("query-name") == {"name": "cvm-lease-1"}
    assert len(cpus) == 2
    again = launcher.launch(_spec(1, vcpu=2))
    assert again.guest_id == info.guest_id  # never a second guest for one lease
    assert [g.lease_id for g in launcher.running()] == [1]


def test_stop_ends_the_process(launcher: QemuLauncher) -> None:
    pid = int(launcher.launch(_spec(2)).guest_id)
    launcher.stop(2)
    assert not process_alive(pid)
    assert launcher.status(2).state == GuestState.MISSING
    launcher.stop(2)  # stopping twice is harmless


def test_a_guest_that_died_is_seen_as_stopped_and_relaunched(launcher: QemuLauncher) -> None:
    pid = int(launcher.launch(_spec(3)).guest_id)
    os.kill(pid, signal.SIGKILL)
    while process_alive(pid):
        pass
    assert launcher.status(3).state == GuestState.STOPPED
    assert launcher.running() == []
    relaunched = launcher.launch(_spec(3))
    assert relaunched.state == GuestState.RUNNING and int(relaunched.guest_id) != pid


def test_a_new_launcher_finds_running_guests(launcher: QemuLauncher) -> None:
    launcher.launch(_spec(4))
    launcher.launch(_spec(5))
    restarted = QemuLauncher(launcher.run_dir, RecordingSigner(), qemu_binary=ensure_qemu())
    assert [g.lease_id for g in restarted.running()] == [4, 5]


def test_report_needs_a_running_guest_and_carries_the_lease_measurement(
    launcher: QemuLauncher,
) -> None:
    with pytest.raises(LauncherError, match="no running guest"):
        launcher.get_report(6, 2)
    launcher.launch(_spec(6))
    got = launcher.get_report(6, 2)
    GuestKey.parse(got.guest_key)  # made at launch: SeaBIOS has no agent to make one
    report_data = build_report_data(31337, BINDING.registry, 6, 2, got.guest_key)
    bound = host_data(31337, BINDING.registry, 6, BINDING.renter)
    assert launcher.signer.calls == [(bytes([6]) * 48, report_data, bound)]  # type: ignore[attr-defined]


def test_no_guest_is_launched_unbound(launcher: QemuLauncher) -> None:
    with pytest.raises(LauncherError, match="no host binding"):
        launcher.launch(GuestSpec(7, 1, 64, 1, bytes(48)))
    assert launcher.status(7).state == GuestState.MISSING


def test_qemu_failure_is_reported(tmp_path: Path) -> None:
    broken = QemuLauncher(tmp_path / "run", RecordingSigner(), qemu_binary=ensure_qemu())
    with pytest.raises(LauncherError, match="QEMU for lease 1 failed"):
        broken.launch(GuestSpec(1, 1, 1 << 40, 1, bytes(48), binding=BINDING))  # a terabyte of RAM


def test_a_guest_whose_monitor_is_gone_is_never_doubled(launcher: QemuLauncher) -> None:
    pid = int(launcher.launch(_spec(7)).guest_id)
    launcher.qmp_socket(7).unlink()  # QEMU lives on, its monitor cannot be reached
    assert [g.lease_id for g in launcher.running()] == [7]
    with pytest.raises(LauncherError, match="cannot open QMP"):
        launcher.launch(_spec(7))
    launcher.stop(7)  # falls back to a signal
    assert not process_alive(pid)
