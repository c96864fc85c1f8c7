"""abi: parse/serialize the 1184-byte report; malformed input raises ReportFormatError only."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.attestation import Product, ReportFormatError, SigningKey, TcbVersion, parse
from cvm.attestation.abi import REPORT_SIZE, GuestPolicy, SignerInfo

from .conftest import REAL, report_bytes

NAMES = sorted(REAL)


@pytest.mark.parametrize("name", NAMES)
def test_real_report_fields_match_expected(name: str) -> None:
    exp = REAL[name]
    r = parse(report_bytes(name))
    product = Product.from_name(exp["vcek_product_name"])
    assert r.version == exp["version"]
    assert r.guest_svn == exp["guest_svn"]
    assert f"{r.policy.raw:#x}" == exp["policy"]
    assert r.family_id.hex() == exp["family_id"]
    assert r.image_id.hex() == exp["image_id"]
    assert r.vmpl == exp["vmpl"]
    assert r.signature_algo == exp["signature_algo"]
    assert f"{r.current_tcb:#018x}" == f"{int(exp['current_tcb'], 16):#018x}"
    assert f"{r.platform_info:#x}" == exp["platform_info"]
    assert f"{r.signer_info.to_int():#x}" == exp["signer_info_0x48"]
    assert r.signing_key.name == exp["signing_key"]
    assert r.report_data.hex() == exp["report_data"]
    assert r.measurement.hex() == exp["measurement"]
    assert r.host_data.hex() == exp["host_data"]
    assert r.id_key_digest.hex() == exp["id_key_digest"]
    assert r.author_key_digest.hex() == exp["author_key_digest"]
    assert r.report_id.hex() == exp["report_id"]
    assert r.report_id_ma.hex() == exp["report_id_ma"]
    assert r.reported_tcb == int(exp["reported_tcb"], 16)
    assert r.committed_tcb == int(exp["committed_tcb"], 16)
    assert r.launch_tcb == int(exp["launch_tcb"], 16)
    assert bytes((r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step)).hex() == exp["cpuid_fam_mod_step"]
    assert r.chip_id.hex() == exp["chip_id"]
    assert (
        f"{r.current_build}.{r.current_minor}.{r.current_major}" == exp["current_build_minor_major"]
    )
    assert (
        f"{r.committed_build}.{r.committed_minor}.{r.committed_major}"
        == exp["committed_build_minor_major"]
    )
    assert f"{r.launch_mit_vector:#x}" == exp["launch_mit_vector"]
    assert f"{r.current_mit_vector:#x}" == exp["current_mit_vector"]
    assert TcbVersion.from_int(r.reported_tcb, product).components() == exp["reported_tcb_decoded"]
    assert TcbVersion.from_int(r.current_tcb, product).components() == exp["current_tcb_decoded"]
    assert r.policy.debug is (name == "milan_go_sev_guest")


@pytest.mark.parametrize("name", NAMES)
def test_real_report_round_trips(name: str) -> None:
    raw = report_bytes(name)
    assert parse(raw).to_bytes() == raw


def test_cpuid_product_only_from_version_3() -> None:
    assert parse(report_bytes("genoa_azure")).cpuid_product is Product.GENOA
    assert parse(report_bytes("milan_virtee_sev")).cpuid_product is None


def test_turin_tcb_uses_its_own_byte_order() -> None:
    raw = bytes([1, 2, 3, 4, 0, 0, 0, 5])
    value = int.from_bytes(raw, "little")
    assert TcbVersion.from_int(value, Product.TURIN) == TcbVersion(
        fmc=1, bl=2, tee=3, snp=4, ucode=5
    )
    assert TcbVersion.from_int(value, Product.GENOA) == TcbVersion(bl=1, tee=2, snp=0, ucode=5)
    assert TcbVersion(fmc=1, bl=2, tee=3, snp=4, ucode=5).to_int(Product.TURIN) == value
    with pytest.raises(ValueError):
        TcbVersion(fmc=1, bl=2, tee=3, snp=4, ucode=5).to_int(Product.MILAN)


def test_policy_bits_are_typed() -> None:
    p = GuestPolicy.from_int(0xB0000 | 0x1F | (2 << 8) | (1 << 20) | (1 << 25))
    assert (p.abi_minor, p.abi_major) == (0x1F, 2)
    assert p.smt and p.debug and p.single_socket and p.page_swap_disable
    assert not p.migrate_ma and not p.cxl_allow


def test_signer_info_is_typed() -> None:
    info = SignerInfo.from_int(0b00111)
    assert info == SignerInfo(SigningKey.VLEK, mask_chip_key=True, author_key_en=True)
    assert info.to_int() == 0b00111


def _patched(offset: int, value: bytes) -> bytes:
    raw = bytearray(report_bytes("milan_virtee_sev"))
    raw[offset : offset + len(value)] = value
    return bytes(raw)


MALFORMED = {
    "empty": b"",
    "short": report_bytes("milan_virtee_sev")[:-1],
    "long": report_bytes("milan_virtee_sev") + b"\0",
    "version 1": _patched(0, struct.pack("<I", 1)),
    "version 6": _patched(0, struct.pack("<I", 6)),
    "policy bit 17 clear": _patched(8, struct.pack("<Q", 0x10000)),
    "policy bit 26 set": _patched(8, struct.pack("<Q", 0x30000 | 1 << 26)),
    "signature algorithm 2": _patched(0x34, struct.pack("<I", 2)),
    "signature algorithm 0 for a signed report": _patched(0x34, struct.pack("<I", 0)),
    "signer info bit 5": _patched(0x48, struct.pack("<I", 1 << 5)),
    "signing key 2 (reserved)": _patched(0x48, struct.pack("<I", 2 << 2)),
    "reserved 0x4C": _patched(0x4C, b"\x01"),
    "cpuid in a version 2 report": _patched(0x188, b"\x19"),
    "reserved 0x18B": _patched(0x18B, b"\x01"),
    "reserved 0x19F": _patched(0x19F, b"\x01"),
    "reserved 0x1EB": _patched(0x1EB, b"\x01"),
    "reserved 0x1EF": _patched(0x1EF, b"\x01"),
    "mitigation vector before version 5": _patched(0x1F8, b"\x01"),
    "reserved 0x208": _patched(0x208, b"\x01"),
    "reserved 0x29F": _patched(0x29F, b"\x01"),
    "signature R not zero-extended": _patched(0x2A0 + 48, b"\x01"),
    "signature S not zero-extended": _patched(0x2E8 + 71, b"\x01"),
    "signature past S": _patched(0x330, b"\x01"),
    "signature last byte": _patched(REPORT_SIZE - 1, b"\x01"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_reports_raise_one_error_type(case: str) -> None:
    with pytest.raises(ReportFormatError):
        parse(MALFORMED[case])


def test_version_5_may_carry_mitigation_vectors() -> None:
    raw = _patched(0, struct.pack("<I", 5))
    raw = raw[:0x188] + bytes([0x19, 0x01, 0x01]) + raw[0x18B:]
    raw = raw[:0x1F8] + struct.pack("<QQ", 3, 7) + raw[0x208:]
    r = parse(raw)
    assert (r.launch_mit_vector, r.current_mit_vector) == (3, 7)
    assert r.to_bytes() == raw


def test_unsigned_report_may_have_algorithm_zero() -> None:
    raw = _patched(0x34, struct.pack("<I", 0))
    raw = raw[:0x48] + struct.pack("<I", 7 << 2) + raw[0x4C:]
    assert parse(raw).signing_key is SigningKey.NONE


def test_serializing_a_bad_field_raises_format_error() -> None:
    r = parse(report_bytes("milan_virtee_sev"))
    with pytest.raises(ReportFormatError):
        replace(r, measurement=b"short").to_bytes()
    with pytest.raises(ReportFormatError):
        replace(r, vmpl=2**32).to_bytes()


@st.composite
def valid_reports(draw: st.DrawFn) -> bytes:
    """Random reports that satisfy every must-be-zero and reserved rule of the spec."""
    raw = bytearray(draw(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE)))
    version = draw(st.integers(2, 5))
    raw[0:4] = struct.pack("<I", version)
    policy = draw(st.integers(0, 2**26 - 1)) | (1 << 17)
    raw[8:16] = struct.pack("<Q", policy)
    raw[0x34:0x38] = struct.pack("<I", 1)
    key = draw(st.sampled_from([0, 1, 7]))
    raw[0x48:0x4C] = struct.pack("<I", key << 2 | draw(st.integers(0, 3)))
    raw[0x4C:0x50] = bytes(4)
    raw[0x188 if version < 3 else 0x18B : 0x1A0] = bytes(0x1A0 - (0x188 if version < 3 else 0x18B))
    raw[0x1EB] = raw[0x1EF] = 0
    raw[0x1F8 if version < 5 else 0x208 : 0x2A0] = bytes(0x2A0 - (0x1F8 if version < 5 else 0x208))
    raw[0x2A0 + 48 : 0x2A0 + 72] = bytes(24)  # R and S are zero-extended 48-byte integers
    raw[0x2E8 + 48 : 0x2E8 + 72] = bytes(24)
    raw[0x330:] = bytes(REPORT_SIZE - 0x330)
    return bytes(raw)


@settings(settings.get_profile("attestation"))
@given(valid_reports())
def test_serialize_parse_is_identity(raw: bytes) -> None:
    assert parse(raw).to_bytes() == raw


@settings(settings.get_profile("attestation"))
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_random_bytes_never_crash_the_parser(raw: bytes) -> None:
    try:
        parse(raw)
    except ReportFormatError:
        pass


@settings(settings.get_profile("attestation"))
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_random_full_size_reports_never_crash_the_parser(raw: bytes) -> None:
    try:
        parse(raw)
    except ReportFormatError:
        pass
