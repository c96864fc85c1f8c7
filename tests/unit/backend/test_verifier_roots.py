"""What `python -m backend` tells its verifier to trust: AMD's roots unless a local stack
opts in to the simulated AMD-SP, whose reports the verifier then marks `simulated`."""

from __future__ import annotations

from pathlib import Path

from backend.__main__ import verifier_roots
from cvm.attestation import AmdRoot, Product, SimulatedAmd, SimulatedSecureProcessor, verify_report
from cvm.attestation.trust import amd_roots
from cvm.config import Settings


def test_by_default_only_amds_roots(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sim_amd_dir=tmp_path / "sim-amd")
    assert verifier_roots(False, settings) is None  # VerifierConfig: AMD's pinned ARKs
    assert not (tmp_path / "sim-amd").exists(), "nothing simulated is even created"


def test_the_opt_in_adds_the_stacks_simulated_roots(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sim_amd_dir=tmp_path / "sim-amd")
    roots = verifier_roots(True, settings)
    assert roots is not None and roots[: len(amd_roots())] == amd_roots()
    chip = SimulatedSecureProcessor(Product.TURIN, amd=SimulatedAmd(tmp_path / "sim-amd"))
    report, vcek, chain = chip.attest()
    assert verify_report(report, vcek, chain=chain, trusted_roots=roots).amd_root is (
        AmdRoot.SIMULATED
    )
