"""The `simulated` launcher: guests as files, reports signed by the simulated AMD-SP that
verify against its root (and only its root), bound at launch to one lease and one renter."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.attestation.abi import parse
from cvm.attestation.binding import GuestKey, build_report_data, host_data
from cvm.attestation.errors import VerificationError
from cvm.attestation.verify import verify_report
from node_agent.errors import LauncherError
from node_agent.launcher.base import GuestSpec, GuestState, HostBinding
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher

MEASUREMENT = bytes(range(48))
BINDING = HostBinding(31337, "0x" + "5a" * 20, "0x" + "7e" * 20)


@pytest.fixture(scope="module")
def amd_sp(tmp_path_factory: pytest.TempPathFactory) -> SimulatedAmdSp:
    return SimulatedAmdSp(tmp_path_factory.mktemp("amd"))


def test_guest_lifecycle_survives_a_new_launcher(tmp_path: Path, amd_sp: SimulatedAmdSp) -> None:
    launcher = SimulatedLauncher(tmp_path, amd_sp)
    assert launcher.status(1).state == GuestState.MISSING
    launcher.launch(GuestSpec(1, 2, 1024, 10, MEASUREMENT, binding=BINDING))
    launcher.launch(GuestSpec(1, 2, 1024, 10, MEASUREMENT, binding=BINDING))  # idempotent
    launcher.launch(GuestSpec(2, 2, 1024, 10, MEASUREMENT, binding=BINDING))
    assert [g.lease_id for g in SimulatedLauncher(tmp_path, amd_sp).running()] == [1, 2]
    launcher.stop(1)
    launcher.stop(1)
    assert launcher.status(1).state == GuestState.MISSING
    assert [g.lease_id for g in launcher.running()] == [2]


def test_report_binds_report_data_and_verifies_against_the_simulated_root(
    tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    launcher = SimulatedLauncher(tmp_path, amd_sp)
    launcher.launch(GuestSpec(3, 1, 512, 1, MEASUREMENT, binding=BINDING))
    got = launcher.get_report(3, 5)
    report = parse(got.report)
    GuestKey.parse(got.guest_key)  # a well-formed key, made at launch
    assert report.report_data == build_report_data(31337, BINDING.registry, 3, 5, got.guest_key)
    assert report.measurement == MEASUREMENT
    assert report.host_data == host_data(31337, BINDING.registry, 3, BINDING.renter)
    # The same guest keeps its key across reports.
    assert launcher.get_report(3, 6).guest_key == got.guest_key
    verify_report(got.report, got.vcek_der, chain=got.cert_chain_pem, trusted_roots=[amd_sp.ark])
    with pytest.raises(VerificationError, match="not a trusted root"):
        verify_report(got.report, got.vcek_der, chain=got.cert_chain_pem)  # AMD's roots only


def test_no_report_without_a_guest(tmp_path: Path, amd_sp: SimulatedAmdSp) -> None:
    with pytest.raises(LauncherError, match="no running guest"):
        SimulatedLauncher(tmp_path, amd_sp).get_report(9, 0)


def test_no_guest_is_launched_unbound(tmp_path: Path, amd_sp: SimulatedAmdSp) -> None:
    """Every report of a guest carries the HOST_DATA of its lease and renter: a launch that
    names no renter is refused rather than signed with zeros."""
    with pytest.raises(LauncherError, match="no host binding"):
        SimulatedLauncher(tmp_path, amd_sp).launch(GuestSpec(4, 1, 512, 1, MEASUREMENT))
