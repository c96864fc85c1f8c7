"""sim: the simulated AMD-SP's reports pass the real verifier only when its root is passed."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cvm.attestation import (
    Product,
    Reason,
    SigningKey,
    SimulatedSecureProcessor,
    TcbVersion,
    VerificationError,
    load_endorsement_key,
    parse,
    verify_report,
)
from cvm.attestation.endorsement import load_certificates
from cvm.attestation.sim import SimulatedAmd, process_amd
from cvm.attestation.verify import verify_amd_signature

MEASUREMENT = bytes(range(48))
REPORT_DATA = bytes(range(64, 128))


@pytest.mark.parametrize("product", list(Product))
@pytest.mark.parametrize("signer", [SigningKey.VCEK, SigningKey.VLEK])
def test_sim_reports_verify_with_the_sim_root_only(product: Product, signer: SigningKey) -> None:
    sp = SimulatedSecureProcessor(product, signer=signer)
    report, vcek, chain = sp.attest(measurement=MEASUREMENT, report_data=REPORT_DATA)
    verified = verify_report(report, vcek, chain=chain, trusted_roots=[sp.ark])
    assert verified.product is product and verified.signer is signer
    assert verified.report.measurement == MEASUREMENT
    assert verified.report.report_data == REPORT_DATA
    assert verified.reported_tcb == sp.tcb
    with pytest.raises(VerificationError) as with_chain:
        verify_report(report, vcek, chain=chain)
    assert with_chain.value.reason is Reason.UNTRUSTED_ROOT
    with pytest.raises(VerificationError) as bare:
        verify_report(report, vcek)
    assert bare.value.reason is Reason.CHAIN_INVALID


def test_sim_certificates_look_like_amds(sim_turin: SimulatedSecureProcessor) -> None:
    ek = load_endorsement_key(sim_turin.vcek_der)
    assert ek.product is Product.TURIN and ek.tcb.fmc is not None
    assert ek.hwid == sim_turin.hwid and len(ek.hwid) == 8
    ask, ark = load_certificates(sim_turin.chain_pem)
    assert ark.public_key().key_size == 4096  # type: ignore[union-attr]
    assert verify_amd_signature(ark, ark) and verify_amd_signature(ask, ark)
    assert verify_amd_signature(sim_turin.vcek, ask)


def test_turin_chip_id_is_eight_bytes_then_zero(sim_turin: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_turin.attest()
    parsed = parse(report)
    assert parsed.chip_id[:8] == sim_turin.hwid and not any(parsed.chip_id[8:])
    verify_report(report, vcek, chain=chain, trusted_roots=[sim_turin.ark])
    forged = replace(parsed, chip_id=parsed.chip_id[:8] + b"\x01" + bytes(55))
    with pytest.raises(VerificationError) as info:
        verify_report(
            sim_turin.sign_report(forged), vcek, chain=chain, trusted_roots=[sim_turin.ark]
        )
    assert info.value.reason is Reason.CHIP_ID_MISMATCH


def test_vlek_report_with_masked_chip_id(sim_genoa_vlek: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_genoa_vlek.attest(mask_chip_id=True, version=5)
    verified = verify_report(report, vcek, chain=chain, trusted_roots=[sim_genoa_vlek.ark])
    assert verified.endorsement.csp_id == "cvm-simulated-csp"
    assert not any(verified.report.chip_id)


def test_vcek_report_with_masked_chip_id_verifies(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest(mask_chip_id=True)
    verified = verify_report(report, vcek, chain=chain, trusted_roots=[sim_milan.ark])
    assert not any(verified.report.chip_id)


def test_reported_tcb_must_equal_the_vcek_spls(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest()
    higher = TcbVersion(bl=sim_milan.tcb.bl, tee=0, snp=sim_milan.tcb.snp + 1, ucode=0)
    forged = replace(parse(report), reported_tcb=higher.to_int(Product.MILAN))
    with pytest.raises(VerificationError) as info:
        verify_report(
            sim_milan.sign_report(forged), vcek, chain=chain, trusted_roots=[sim_milan.ark]
        )
    assert info.value.reason is Reason.TCB_MISMATCH


def test_chip_id_must_equal_the_hwid(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest()
    forged = replace(parse(report), chip_id=bytes(reversed(parse(report).chip_id)))
    with pytest.raises(VerificationError) as info:
        verify_report(
            sim_milan.sign_report(forged), vcek, chain=chain, trusted_roots=[sim_milan.ark]
        )
    assert info.value.reason is Reason.CHIP_ID_MISMATCH


def test_mask_chip_key_means_the_vcek_did_not_sign(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest()
    parsed = parse(report)
    masked = replace(parsed, signer_info=replace(parsed.signer_info, mask_chip_key=True))
    # Whatever the signature field holds (the firmware writes zeros), the report is refused.
    for raw in (replace(masked, signature_r=bytes(72), signature_s=bytes(72)).to_bytes(),
                sim_milan.sign_report(masked)):  # fmt: skip
        with pytest.raises(VerificationError) as info:
            verify_report(raw, vcek, chain=chain, trusted_roots=[sim_milan.ark])
        assert info.value.reason is Reason.UNSIGNED_REPORT


def test_signer_kind_must_match_the_certificate(
    sim_milan: SimulatedSecureProcessor, sim_genoa_vlek: SimulatedSecureProcessor
) -> None:
    report, vcek, chain = sim_milan.attest()
    parsed = parse(report)
    as_vlek = replace(parsed, signer_info=replace(parsed.signer_info, signing_key=SigningKey.VLEK))
    with pytest.raises(VerificationError) as info:
        verify_report(sim_milan.sign_report(as_vlek), vcek, trusted_roots=[sim_milan.ark])
    assert info.value.reason is Reason.SIGNER_MISMATCH
    unsigned = replace(parsed, signer_info=replace(parsed.signer_info, signing_key=SigningKey.NONE))
    with pytest.raises(VerificationError) as none:
        verify_report(unsigned.to_bytes(), vcek, chain=chain, trusted_roots=[sim_milan.ark])
    assert none.value.reason is Reason.UNSIGNED_REPORT


def test_cpuid_product_must_match_the_certificate(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest(version=3)
    forged = replace(parse(report), cpuid_mod_id=0x11)  # Genoa's model
    with pytest.raises(VerificationError) as info:
        verify_report(
            sim_milan.sign_report(forged), vcek, chain=chain, trusted_roots=[sim_milan.ark]
        )
    assert info.value.reason is Reason.PRODUCT_MISMATCH


def test_another_sims_root_does_not_vouch(sim_milan: SimulatedSecureProcessor) -> None:
    # Same process, shared RSA keys, but a different chip: its VCEK is not this chip's.
    other = SimulatedSecureProcessor(Product.MILAN)
    report, _, chain = sim_milan.attest()
    with pytest.raises(VerificationError) as info:
        verify_report(report, other.vcek_der, chain=chain, trusted_roots=[sim_milan.ark])
    assert info.value.reason in {Reason.CHAIN_INVALID, Reason.SIGNATURE_INVALID}


def test_a_persisted_simulated_amd_is_shared_across_instances(tmp_path: Path) -> None:
    first = SimulatedAmd(tmp_path / "amd")
    chip = SimulatedSecureProcessor(Product.GENOA, amd=first)
    report, vcek, chain = chip.attest()
    # A second process would build its own SimulatedAmd from the same directory.
    second = SimulatedAmd(tmp_path / "amd")
    root = second.ark(Product.GENOA)
    assert root.fingerprint(hashes.SHA256()) == chip.ark.fingerprint(hashes.SHA256())
    verify_report(report, vcek, chain=chain, trusted_roots=[root])
    for key_file in (tmp_path / "amd").glob("*.key.pem"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A different simulated AMD is a different root.
    with pytest.raises(VerificationError) as info:
        verify_report(report, vcek, chain=chain, trusted_roots=[process_amd().ark(Product.GENOA)])
    assert info.value.reason is Reason.UNTRUSTED_ROOT


def test_a_chip_key_can_be_kept(sim_milan: SimulatedSecureProcessor) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    chip = SimulatedSecureProcessor(Product.MILAN, chip_key=key, chip_id=sim_milan.hwid)
    again = SimulatedSecureProcessor(Product.MILAN, chip_key=key, chip_id=sim_milan.hwid)
    report, _, chain = chip.attest()
    verify_report(report, again.vcek_der, chain=chain, trusted_roots=[chip.ark])


def test_reserved_tcb_bytes_must_match_too(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest()
    parsed = parse(report)
    forged = replace(parsed, reported_tcb=parsed.reported_tcb | (1 << 16))  # SPL 4 (reserved)
    assert TcbVersion.from_int(forged.reported_tcb, Product.MILAN) == sim_milan.tcb
    with pytest.raises(VerificationError) as info:
        verify_report(
            sim_milan.sign_report(forged), vcek, chain=chain, trusted_roots=[sim_milan.ark]
        )
    assert info.value.reason is Reason.TCB_MISMATCH
