"""The `simulated` launcher: guests as files, reports signed by the simulated AMD-SP that
verify against its root (and only its root)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cvm.attestation.abi import parse
from cvm.attestation.binding import GuestKey
from cvm.attestation.errors import VerificationError
from cvm.attestation.verify import verify_report
from node_agent.errors import LauncherError
from node_agent.launcher.base import GuestSpec, GuestState
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher

MEASUREMENT = bytes(range(48))


@pytest.fixture(scope="module")
def amd_sp(tmp_path_factory: pytest.TempPathFactory) -> SimulatedAmdSp:
    return SimulatedAmdSp(tmp_path_factory.mktemp("amd"))


def test_guest_lifecycle_survives_a_new_launcher(tmp_path: Path, amd_sp: SimulatedAmdSp) -> None:
    launcher = SimulatedLauncher(tmp_path, amd_sp)
    assert launcher.status(1).state == GuestState.MISSING
    launcher.launch(GuestSpec(1, 2, 1024, 10, MEASUREMENT))
    launcher.launch(GuestSpec(1, 2, 1024, 10, MEASUREMENT))  # idempotent
    launcher.launch(GuestSpec(2, 2, 1024, 10, MEASUREMENT))
    assert [g.lease_id for g in SimulatedLauncher(tmp_path, amd_sp).running()] == [1, 2]
    launcher.stop(1)
    launcher.stop(1)
    assert launcher.status(1).state == GuestState.MISSING
    assert [g.lease_id for g in launcher.running()] == [2]


def test_report_binds_report_data_and_verifies_against_the_simulated_root(
    tmp_path: Path, amd_sp: SimulatedAmdSp
) -> None:
    launcher = SimulatedLauncher(tmp_path, amd_sp)
    launcher.launch(GuestSpec(3, 1, 512, 1, MEASUREMENT))
    got = launcher.get_report(3, b"\x42" * 64)
    report = parse(got.report)
    # Like a real guest it binds its own 84-byte key (with its attested signer), not the host's.
    key = GuestKey.parse(got.guest_key)
    assert report.report_data == b"\x42" * 32 + hashlib.sha256(got.guest_key).digest()
    assert report.measurement == MEASUREMENT and int(key.signer, 16) != 0
    assert launcher.get_report(3, b"\x42" * 64).guest_key == got.guest_key  # one key per guest
    verify_report(got.report, got.vcek_der, chain=got.cert_chain_pem, trusted_roots=[amd_sp.ark])
    with pytest.raises(VerificationError, match="not a trusted root"):
        verify_report(got.report, got.vcek_der, chain=got.cert_chain_pem)  # AMD's roots only


def test_no_report_without_a_guest(tmp_path: Path, amd_sp: SimulatedAmdSp) -> None:
    with pytest.raises(LauncherError, match="no running guest"):
        SimulatedLauncher(tmp_path, amd_sp).get_report(9, bytes(64))
