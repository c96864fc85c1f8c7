"""validate: every policy check fails with its own reason code and names expected vs found."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cvm.attestation import (
    LeaseBinding,
    Policy,
    Product,
    Reason,
    SigningKey,
    SimulatedSecureProcessor,
    TcbVersion,
    ValidationError,
    VerifiedReport,
    build_report_data,
    validate_report,
    verify_report,
)
from cvm.attestation.validate import (
    check_fields,
    check_freshness,
    check_guest_policy,
    check_platform,
    check_tcb,
)

from .conftest import report_bytes, vcek_bytes

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
BINDING = LeaseBinding(chain_id=31337, registry=REGISTRY, lease_id=7, nonce=2, guest_key=b"pk")
MEASUREMENT = bytes.fromhex("ab" * 48)


@pytest.fixture(scope="module")
def verified(sim_milan: SimulatedSecureProcessor) -> VerifiedReport:
    report, vcek, chain = sim_milan.attest(
        measurement=MEASUREMENT, report_data=BINDING.report_data(), host_data=b"\x05" * 32,
        guest_svn=3, vmpl=0,
    )  # fmt: skip
    return verify_report(report, vcek, chain=chain, trusted_roots=[sim_milan.ark])


def reasons(verified: VerifiedReport, policy: Policy, **kw: object) -> list[Reason]:
    return [f.reason for f in validate_report(verified, policy, **kw).failures]  # type: ignore[arg-type]


def test_a_matching_policy_passes(verified: VerifiedReport) -> None:
    policy = Policy(
        measurements=[MEASUREMENT],
        report_data=BINDING.report_data(),
        binding=BINDING,
        host_data=b"\x05" * 32,
        minimum_tcb=verified.reported_tcb,
        minimum_guest_svn=3,
        vmpl=0,
        allowed_products={Product.MILAN},
        allowed_signers=(SigningKey.VCEK,),
        max_age=timedelta(minutes=5),
    )
    now = datetime.now(UTC)
    result = validate_report(verified, policy, collected_at=now, now=now)
    assert result.ok
    result.raise_for_failures()


def test_default_policy_passes_a_production_report(verified: VerifiedReport) -> None:
    assert validate_report(verified, Policy()).ok


def test_measurement_mismatch_names_both_values(verified: VerifiedReport) -> None:
    other = bytes(48)
    result = validate_report(verified, Policy(measurements=[other]))
    assert [f.reason for f in result.failures] == [Reason.MEASUREMENT_MISMATCH]
    assert other.hex() in result.failures[0].message
    assert MEASUREMENT.hex() in result.failures[0].message
    assert validate_report(verified, Policy(measurements=[other, MEASUREMENT])).ok


def test_report_data_mismatch(verified: VerifiedReport) -> None:
    assert reasons(verified, Policy(report_data=bytes(64))) == [Reason.REPORT_DATA_MISMATCH]


@pytest.mark.parametrize(
    "field, value",
    [("chain_id", 1), ("registry", "0x" + "11" * 20), ("lease_id", 8), ("nonce", 1),
     ("guest_key", b"other"), ("guest_key", None)],
)  # fmt: skip
def test_binding_mismatch_for_any_other_lease(
    verified: VerifiedReport, field: str, value: object
) -> None:
    other = replace(BINDING, **{field: value})  # type: ignore[arg-type]
    assert reasons(verified, Policy(binding=other)) == [Reason.BINDING_MISMATCH]


def test_host_data_mismatch(verified: VerifiedReport) -> None:
    assert reasons(verified, Policy(host_data=bytes(32))) == [Reason.HOST_DATA_MISMATCH]


def test_debug_is_refused_by_default_and_allowed_on_request() -> None:
    debug = verify_report(report_bytes("milan_go_sev_guest"), vcek_bytes("milan_go_sev_guest"))
    result = validate_report(debug, Policy())
    assert [f.reason for f in result.failures] == [Reason.DEBUG_ALLOWED]
    assert "0xb0000" in result.failures[0].message
    assert validate_report(debug, Policy(allow_debug=True)).ok
    with pytest.raises(ValidationError) as info:
        result.raise_for_failures()
    assert info.value.reason is Reason.DEBUG_ALLOWED


def test_migration_agent_can_be_refused(sim_milan: SimulatedSecureProcessor) -> None:
    report, vcek, chain = sim_milan.attest(policy=0x30000 | 1 << 18)
    v = verify_report(report, vcek, chain=chain, trusted_roots=[sim_milan.ark])
    assert validate_report(v, Policy()).ok
    assert reasons(v, Policy(allow_migrate_ma=False)) == [Reason.MIGRATION_AGENT_ALLOWED]


def test_minimum_tcb_per_component(verified: VerifiedReport) -> None:
    tcb = verified.reported_tcb
    for component in ("bl", "tee", "snp", "ucode"):
        higher = TcbVersion(**{**tcb.components(), component: tcb.components()[component] + 1})
        result = validate_report(verified, Policy(minimum_tcb=higher))
        assert [f.reason for f in result.failures] == [Reason.TCB_TOO_LOW]
        assert component in result.failures[0].message


def test_minimum_tcb_on_a_real_report() -> None:
    v = verify_report(report_bytes("genoa_azure"), vcek_bytes("genoa_azure"))
    assert validate_report(v, Policy(minimum_tcb=TcbVersion(bl=10, tee=0, snp=23, ucode=84))).ok
    assert reasons(v, Policy(minimum_tcb=TcbVersion(bl=10, tee=0, snp=24, ucode=0))) == [
        Reason.TCB_TOO_LOW
    ]


def test_guest_svn(verified: VerifiedReport) -> None:
    assert reasons(verified, Policy(minimum_guest_svn=4)) == [Reason.GUEST_SVN_TOO_LOW]


def test_vmpl(verified: VerifiedReport) -> None:
    assert reasons(verified, Policy(vmpl=1)) == [Reason.VMPL_MISMATCH]
    assert validate_report(verified, Policy(vmpl=None)).ok


def test_allowed_products(verified: VerifiedReport) -> None:
    assert reasons(verified, Policy(allowed_products={Product.GENOA})) == [
        Reason.PRODUCT_NOT_ALLOWED
    ]


def test_allowed_signers(verified: VerifiedReport) -> None:
    assert reasons(verified, Policy(allowed_signers=(SigningKey.VLEK,))) == [
        Reason.SIGNER_NOT_ALLOWED
    ]


def test_maximum_age(verified: VerifiedReport) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    policy = Policy(max_age=timedelta(minutes=10))
    assert reasons(verified, policy, collected_at=now - timedelta(minutes=11), now=now) == [
        Reason.REPORT_TOO_OLD
    ]
    assert reasons(verified, policy, collected_at=now - timedelta(minutes=9), now=now) == []
    assert reasons(verified, policy) == [Reason.REPORT_AGE_UNKNOWN]


def test_all_failures_are_collected(verified: VerifiedReport) -> None:
    policy = Policy(measurements=[bytes(48)], vmpl=2, allowed_products={Product.TURIN})
    assert set(reasons(verified, policy)) == {
        Reason.MEASUREMENT_MISMATCH,
        Reason.VMPL_MISMATCH,
        Reason.PRODUCT_NOT_ALLOWED,
    }


def test_binding_helper_matches_report_data(verified: VerifiedReport) -> None:
    assert verified.report.report_data == build_report_data(31337, REGISTRY, 7, 2, b"pk")


def test_each_group_of_checks_reports_only_its_own_fields(verified: VerifiedReport) -> None:
    """Fields, guest policy, TCB, platform and freshness each check their part, in that order."""
    policy = Policy(
        measurements=[bytes(48)],
        minimum_guest_svn=4,
        vmpl=2,
        max_age=timedelta(minutes=1),
    )
    by_group = {
        "fields": check_fields(verified, policy),
        "guest_policy": check_guest_policy(verified, policy),
        "tcb": check_tcb(verified, policy),
        "platform": check_platform(verified, policy),
        "freshness": check_freshness(policy, None, None),
    }
    assert {name: [f.reason for f in found] for name, found in by_group.items()} == {
        "fields": [Reason.MEASUREMENT_MISMATCH],
        "guest_policy": [],
        "tcb": [Reason.GUEST_SVN_TOO_LOW],
        "platform": [Reason.VMPL_MISMATCH],
        "freshness": [Reason.REPORT_AGE_UNKNOWN],
    }
    assert reasons(verified, policy) == [
        Reason.MEASUREMENT_MISMATCH,
        Reason.GUEST_SVN_TOO_LOW,
        Reason.VMPL_MISMATCH,
        Reason.REPORT_AGE_UNKNOWN,
    ]
    assert "GUEST_SVN: expected >= 0x4, found 0x3" in by_group["tcb"][0].message
