"""Which root a verified report chains to: AMD's pinned ARKs say `amd`; a simulated AMD-SP's
root, even when a caller chose to trust it, says `simulated`; an untrusted simulated root is
refused with a message that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.attestation import AmdRoot, Product, Reason, VerificationError, verify_report
from cvm.attestation.binding import build_report_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import verify_guest
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor, roots_trusting_simulated
from cvm.attestation.trust import amd_roots, builtin_chains, is_simulated, root_kind

from .conftest import REAL, report_bytes, vcek_bytes


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_real_report_chains_to_amd(name: str) -> None:
    assert verify_report(report_bytes(name), vcek_bytes(name)).amd_root is AmdRoot.AMD


def test_every_pinned_ark_is_amd_and_nothing_else_is(sim_milan: SimulatedSecureProcessor) -> None:
    assert {root_kind(chain.ark) for chain in builtin_chains().values()} == {AmdRoot.AMD}
    # The simulated ARK carries AMD's common name ("ARK-Milan"): only the pin decides.
    assert root_kind(sim_milan.ark) is AmdRoot.SIMULATED
    assert is_simulated(sim_milan.ark) and not any(is_simulated(r) for r in amd_roots())


def test_a_trusted_simulated_root_still_reads_simulated(tmp_path: Path) -> None:
    # What a local stack's verifier trusts: AMD's roots plus the persisted simulated ones.
    roots = roots_trusting_simulated(tmp_path / "sim-amd")
    assert len(roots) == len(amd_roots()) + len(Product)
    chip = SimulatedSecureProcessor(Product.GENOA, amd=SimulatedAmd(tmp_path / "sim-amd"))
    report, vcek, chain = chip.attest()
    verified = verify_report(report, vcek, chain=chain, trusted_roots=roots)
    assert verified.amd_root is AmdRoot.SIMULATED


def test_an_untrusted_simulated_root_is_refused_by_name(
    sim_milan: SimulatedSecureProcessor,
) -> None:
    report, vcek, chain = sim_milan.attest()
    with pytest.raises(VerificationError) as info:
        verify_report(report, vcek, chain=chain)  # AMD's roots only: every default
    assert info.value.reason is Reason.UNTRUSTED_ROOT
    assert "simulated AMD-SP" in info.value.message and "does not trust" in info.value.message


def test_an_untrusted_real_root_is_not_called_simulated(
    sim_milan: SimulatedSecureProcessor,
) -> None:
    name = sorted(REAL)[0]
    with pytest.raises(VerificationError) as info:
        verify_report(report_bytes(name), vcek_bytes(name), trusted_roots=[sim_milan.ark])
    assert info.value.reason is Reason.UNTRUSTED_ROOT
    assert "simulated" not in info.value.message


def test_the_renters_own_check_reports_the_root(sim_milan: SimulatedSecureProcessor) -> None:
    from cvm.attestation.binding import host_data
    from guest.agent import GuestKeys

    guest_key, renter = GuestKeys().public, "0x" + "34" * 20
    data = build_report_data(31337, "0x" + "12" * 20, 5, 3, guest_key)
    signed = sim_milan.attest(measurement=b"\x07" * 48, report_data=data,
                              host_data=host_data(31337, "0x" + "12" * 20, 5, renter))  # fmt: skip
    bundle = EvidenceBundle(
        report=signed.report, vcek=signed.vcek_der, chain=signed.chain_pem, chain_id=31337,
        registry="0x" + "12" * 20, lease_id=5, nonce=3, guest_key=guest_key,
    )  # fmt: skip
    guest = verify_guest(bundle, chain_id=31337, registry="0x" + "12" * 20, lease_id=5, nonce=3,
                         renter=renter, expected_measurement=b"\x07" * 48,
                         trusted_roots=[*amd_roots(), sim_milan.ark])  # fmt: skip
    assert guest.amd_root is AmdRoot.SIMULATED
