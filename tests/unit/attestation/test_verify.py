"""verify: real AMD reports verify to AMD's pinned roots; every tampering fails for its reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.attestation import (
    AttestationError,
    Product,
    Reason,
    VerificationError,
    load_endorsement_key,
    verify_report,
)
from cvm.attestation.abi import REPORT_SIZE
from cvm.attestation.endorsement import load_certificates
from cvm.attestation.trust import PINNED_ARK_SHA256, builtin_chains, fingerprint
from cvm.attestation.verify import verify_amd_signature

from .conftest import DATA, EXPECTED, REAL, report_bytes, vcek_bytes

NAMES = sorted(REAL)
NEGATIVE = DATA / "negative"


@pytest.mark.parametrize("name", NAMES)
def test_real_report_verifies_and_matches_expected(name: str) -> None:
    exp = REAL[name]
    assert all(exp["checks"].values())
    verified = verify_report(report_bytes(name), vcek_bytes(name))
    ek = verified.endorsement
    assert verified.product is Product.from_name(exp["product"])
    assert verified.signer.name == exp["signing_key"]
    assert ek.product_name == exp["vcek_product_name"]
    assert ek.hwid is not None and ek.hwid.hex() == exp["vcek_hwID"]
    spl = exp["vcek_spl"]
    assert (ek.tcb.bl, ek.tcb.tee, ek.tcb.snp, ek.tcb.ucode) == (
        spl["blSPL"],
        spl["teeSPL"],
        spl["snpSPL"],
        spl["ucodeSPL"],
    )
    assert verified.reported_tcb.components() == exp["reported_tcb_decoded"]
    assert ek.fingerprint.hex() == exp["vcek_sha256"]
    assert hashlib.sha256(report_bytes(name)).hexdigest() == exp["report_sha256"]
    cert = ek.certificate
    assert (
        f"CN={cert.subject.rfc4514_string().split('CN=')[1].split(',')[0]}"
        == exp["vcek_subject_cn"]
    )
    assert str(cert.not_valid_after_utc) == exp["vcek_not_after"]
    assert str(cert.not_valid_before_utc) == exp["vcek_not_before"]
    chain = load_certificates((DATA / exp["chain"]).read_bytes())
    assert [fingerprint(c) for c in chain] == [
        fingerprint(verified.intermediate),
        fingerprint(verified.root),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_real_report_verifies_with_its_chain_supplied(name: str) -> None:
    chain_pem = (DATA / REAL[name]["chain"]).read_bytes()
    verified = verify_report(report_bytes(name), vcek_bytes(name), chain=chain_pem)
    assert verified.root.subject == verified.intermediate.issuer


@pytest.mark.parametrize("report_name", NAMES)
@pytest.mark.parametrize("vcek_name", NAMES)
def test_every_cross_pairing_fails(report_name: str, vcek_name: str) -> None:
    if report_name == vcek_name:
        return
    with pytest.raises(VerificationError) as info:
        verify_report(report_bytes(report_name), vcek_bytes(vcek_name))
    assert info.value.reason in {Reason.SIGNATURE_INVALID, Reason.PRODUCT_MISMATCH}


@pytest.mark.parametrize(
    "negative", sorted(n for n, e in EXPECTED["negatives"].items() if "report_sig_valid" in e)
)
def test_tampered_reports_fail_the_signature(negative: str) -> None:
    with pytest.raises(VerificationError) as info:
        verify_report((NEGATIVE / negative).read_bytes(), vcek_bytes("milan_virtee_sev"))
    assert info.value.reason is Reason.SIGNATURE_INVALID


def test_tampered_vcek_fails_the_chain_not_the_signature() -> None:
    name = "milan_virtee_sev_vcek_byte40_xorff.der"
    tampered = (NEGATIVE / name).read_bytes()
    assert EXPECTED["negatives"][name]["report_sig_valid_with_it"]
    with pytest.raises(VerificationError) as info:
        verify_report(report_bytes("milan_virtee_sev"), tampered)
    assert info.value.reason is Reason.CHAIN_INVALID
    # Its key is intact: the report signature alone would pass.
    ek = load_endorsement_key(tampered)
    from cvm.attestation.abi import parse
    from cvm.attestation.verify import verify_signature

    raw = report_bytes("milan_virtee_sev")
    verify_signature(raw, parse(raw), ek)


@pytest.mark.parametrize("name", ["synthetic_vcek_invalid_legacy_hwid.der",
                                  "synthetic_vcek_invalid_new_hwid.der"])  # fmt: skip
def test_synthetic_vceks_fail_the_chain(name: str) -> None:
    with pytest.raises(VerificationError) as info:
        verify_report(report_bytes("milan_virtee_sev"), (NEGATIVE / name).read_bytes())
    assert info.value.reason is Reason.CHAIN_INVALID


def test_new_style_hwid_is_unwrapped() -> None:
    ek = load_endorsement_key((NEGATIVE / "synthetic_vcek_invalid_new_hwid.der").read_bytes())
    assert ek.hwid is not None and len(ek.hwid) == 64


@pytest.mark.parametrize("name", NAMES)
def test_vcek_chains_only_to_its_own_product(name: str) -> None:
    own = verify_report(report_bytes(name), vcek_bytes(name)).product
    for other, chain in builtin_chains().items():
        if other is own:
            continue
        pem = (DATA / "ca" / f"{other.value.lower()}_vcek_cert_chain.pem").read_bytes()
        with pytest.raises(VerificationError) as info:
            verify_report(
                report_bytes(name), vcek_bytes(name), chain=pem, trusted_roots=[chain.ark]
            )
        assert info.value.reason in {Reason.CHAIN_INVALID, Reason.UNTRUSTED_ROOT}


def test_shipped_roots_are_amds_and_pinned() -> None:
    for product, chain in builtin_chains().items():
        p = product.value.lower()
        ark = load_certificates((DATA / "ca" / f"ark_{p}.pem").read_bytes())[0]
        ask = load_certificates((DATA / "ca" / f"ask_{p}.pem").read_bytes())[0]
        assert fingerprint(chain.ark) == fingerprint(ark)
        assert fingerprint(chain.ask) == fingerprint(ask)
        assert fingerprint(ark).hex() == PINNED_ARK_SHA256[product]
        assert verify_amd_signature(chain.ark, chain.ark)
        assert verify_amd_signature(chain.ask, chain.ark)
        assert verify_amd_signature(chain.asvk, chain.ark)


def test_cross_product_intermediates_do_not_verify() -> None:
    chains = builtin_chains()
    assert not verify_amd_signature(chains[Product.MILAN].ask, chains[Product.GENOA].ark)
    assert not verify_amd_signature(chains[Product.TURIN].asvk, chains[Product.MILAN].ark)


def test_validity_is_checked_at_the_given_time() -> None:
    raw, vcek = report_bytes("milan_virtee_sev"), vcek_bytes("milan_virtee_sev")
    not_before = datetime.fromisoformat(REAL["milan_virtee_sev"]["vcek_not_before"])
    not_after = datetime.fromisoformat(REAL["milan_virtee_sev"]["vcek_not_after"])
    verify_report(raw, vcek, at=not_before + timedelta(seconds=1))
    verify_report(raw, vcek, at=not_after - timedelta(seconds=1))
    with pytest.raises(VerificationError) as early:
        verify_report(raw, vcek, at=not_before - timedelta(seconds=1))
    assert early.value.reason is Reason.CERT_NOT_YET_VALID
    with pytest.raises(VerificationError) as late:
        verify_report(raw, vcek, at=not_after + timedelta(seconds=1))
    assert late.value.reason is Reason.CERT_EXPIRED
    # Validity is a separate check the caller may switch off (real VCEKs do expire).
    verify_report(raw, vcek, at=not_after + timedelta(days=1), check_cert_validity=False)
    # A naive time is taken as UTC.
    verify_report(raw, vcek, at=datetime(2025, 1, 1))
    assert datetime(2025, 1, 1, tzinfo=UTC) > not_before


def test_garbage_certificate_is_malformed() -> None:
    with pytest.raises(VerificationError) as info:
        verify_report(report_bytes("milan_virtee_sev"), b"not a certificate")
    assert info.value.reason is Reason.MALFORMED_CERTIFICATE


def test_an_ark_as_endorsement_key_is_malformed() -> None:
    ark = builtin_chains()[Product.MILAN].ark
    from cryptography.hazmat.primitives.serialization import Encoding

    with pytest.raises(VerificationError) as info:
        verify_report(report_bytes("milan_virtee_sev"), ark.public_bytes(Encoding.DER))
    assert info.value.reason is Reason.MALFORMED_CERTIFICATE


def test_untrusted_root_in_supplied_chain_is_refused() -> None:
    # The Genoa chain offered for a Milan VCEK while only Milan's root is trusted.
    pem = (DATA / "ca" / "genoa_vcek_cert_chain.pem").read_bytes()
    with pytest.raises(VerificationError) as info:
        verify_report(
            report_bytes("milan_virtee_sev"),
            vcek_bytes("milan_virtee_sev"),
            chain=pem,
            trusted_roots=[builtin_chains()[Product.MILAN].ark],
        )
    assert info.value.reason is Reason.UNTRUSTED_ROOT


def _mutations() -> st.SearchStrategy[list[tuple[int, int]]]:
    return st.lists(
        st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(1, 255)), min_size=1, max_size=8
    )


@settings(settings.get_profile("attestation"))
@given(st.sampled_from(NAMES), _mutations())
def test_mutated_real_reports_never_verify(name: str, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(report_bytes(name))
    for offset, xor in flips:
        raw[offset] ^= xor
    if bytes(raw) == report_bytes(name):  # two flips cancelled out
        return
    with pytest.raises(AttestationError):
        verify_report(bytes(raw), vcek_bytes(name))


@settings(settings.get_profile("attestation"))
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE), st.sampled_from(NAMES))
def test_random_reports_never_verify(raw: bytes, name: str) -> None:
    with pytest.raises(AttestationError):
        verify_report(raw, vcek_bytes(name))


@settings(settings.get_profile("attestation"))
@given(st.binary(max_size=2048))
def test_random_certificates_never_crash_the_verifier(cert: bytes) -> None:
    with pytest.raises(AttestationError):
        verify_report(report_bytes("milan_virtee_sev"), cert)


def test_the_chain_is_cached_after_first_use() -> None:
    from cvm.attestation import verify as verify_module

    raw, vcek = report_bytes("genoa_azure"), vcek_bytes("genoa_azure")
    verify_module._verified_chains.clear()
    verify_report(raw, vcek)
    assert len(verify_module._verified_chains) == 1
    cached = next(iter(verify_module._verified_chains.values()))
    assert isinstance(cached.root, x509.Certificate)
    verify_report(raw, vcek)
    assert len(verify_module._verified_chains) == 1


@settings(settings.get_profile("attestation"))
@given(_mutations())
def test_mutated_vceks_never_crash_and_only_pass_with_intact_contents(
    flips: list[tuple[int, int]],
) -> None:
    original = vcek_bytes("milan_virtee_sev")
    der = bytearray(original)
    for offset, xor in flips:
        der[offset % len(der)] ^= xor
    try:
        verified = verify_report(report_bytes("milan_virtee_sev"), bytes(der))
    except AttestationError:
        return
    # Only bytes outside the signed TBS and the signature (e.g. the unsigned outer algorithm
    # identifier) may change without failing: what AMD signed must be what was checked.
    reference = load_endorsement_key(original).certificate
    assert verified.endorsement.certificate.tbs_certificate_bytes == (
        reference.tbs_certificate_bytes
    )
    assert verified.endorsement.certificate.signature == reference.signature


@settings(settings.get_profile("attestation"))
@given(st.binary(max_size=4096))
def test_random_chains_never_crash_the_verifier(chain: bytes) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\n" + chain + b"\n-----END CERTIFICATE-----\n"
    for candidate in (chain, pem):
        try:
            verify_report(
                report_bytes("milan_virtee_sev"), vcek_bytes("milan_virtee_sev"), chain=candidate
            )
        except AttestationError:
            pass


@settings(settings.get_profile("attestation"))
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_random_bytes_of_any_length_never_verify(raw: bytes) -> None:
    with pytest.raises(AttestationError):
        verify_report(raw, vcek_bytes("genoa_azure"))


def test_wrong_input_types_raise_attestation_errors() -> None:
    with pytest.raises(AttestationError):
        verify_report("not bytes", vcek_bytes("genoa_azure"))  # type: ignore[arg-type]
    with pytest.raises(AttestationError):
        verify_report(report_bytes("genoa_azure"), "not bytes")  # type: ignore[arg-type]
