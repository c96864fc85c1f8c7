"""Calldata for the EVM's report check: which transactions a report still needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_utils import keccak

from cvm.attestation.errors import Reason
from cvm.attestation.onchain import (
    ONCHAIN_REASON,
    SnpReason,
    ark_certificates,
    cert_hash,
    prepare_report_call,
    rsa_key_hash,
)
from cvm.attestation.trust import amd_roots

SNP_DATA = Path(__file__).resolve().parents[2] / "data" / "snp"
REPORT = (SNP_DATA / "reports" / "milan_virtee_sev.bin").read_bytes()
VCEK = (SNP_DATA / "vcek" / "milan_virtee_sev.der").read_bytes()


def test_nothing_cached_takes_ask_then_vcek_then_the_report() -> None:
    call = prepare_report_call(REPORT, VCEK)
    assert [step.function for step in call.steps] == [
        "verifyCertificate",
        "verifyCertificate",
        "verifyReport",
    ]
    ask, ark = call.steps[0].args
    assert ask == call.issuer_der and ark == call.ark_key_hash
    assert call.steps[1].args == (VCEK, keccak(call.issuer_der))
    assert call.certs == [keccak(VCEK), keccak(call.issuer_der)]
    milan_ark = next(r for r in amd_roots() if "Milan" in r.subject.rfc4514_string())
    assert call.ark_key_hash == rsa_key_hash(milan_ark)


def test_a_known_ask_or_chip_skips_its_steps() -> None:
    issuer = prepare_report_call(REPORT, VCEK).issuer_der
    known_ask = prepare_report_call(REPORT, VCEK, is_cached=lambda h: h == cert_hash(issuer))
    assert [s.function for s in known_ask.steps] == ["verifyCertificate", "verifyReport"]
    known_chip = prepare_report_call(REPORT, VCEK, is_cached=lambda h: h == cert_hash(VCEK))
    assert [s.function for s in known_chip.steps] == ["verifyReport"]


def test_one_call_puts_the_certificates_in_as_der() -> None:
    call = prepare_report_call(REPORT, VCEK, split=False)
    assert call.certs == [VCEK, call.issuer_der]
    assert [s.function for s in call.steps] == ["verifyReport"]


def test_an_intermediate_under_no_pinned_root_gets_a_zero_ark_hash() -> None:
    assert prepare_report_call(REPORT, VCEK, roots=[]).ark_key_hash == bytes(32)


def test_a_report_of_the_wrong_size_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="1184 bytes"):
        prepare_report_call(REPORT[:-1], VCEK)


def test_the_deployment_pins_amds_three_arks_and_every_reason_maps() -> None:
    assert len(ark_certificates()) == 3
    for reason in (Reason.SIGNATURE_INVALID, Reason.CHAIN_INVALID, Reason.UNTRUSTED_ROOT):
        assert ONCHAIN_REASON[reason] in SnpReason
    assert SnpReason.OK == 0 and SnpReason.DEBUG_POLICY == 10
