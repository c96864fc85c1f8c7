"""`cvm attestation verify REPORT --vcek FILE --onchain`: the EVM's check (SnpVerifier on a
throwaway local anvil) gives the same verdict, the same reason and the same fields as the
off-chain check, on every real report and every tampered file in tests/data/snp, with the
gas of each step; its error paths are one line each, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cvm.cli import app
from tests.fixtures.chain import ChainSystem

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "snp"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
REAL = {entry["name"]: entry for entry in EXPECTED["reports"]}
TX_GAS_CAP = 16_777_216
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No deployment configured: --onchain runs on a throwaway local chain."""
    monkeypatch.setenv("CVM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CVM_DEPLOYMENT_FILE", raising=False)


def verify(report: Path | str, vcek: Path | str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(
        app,
        ["attestation", "verify", str(report), "--vcek", str(vcek), "--onchain", "--json", *extra],
    )
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def assert_same_verdict(out: dict[str, Any]) -> dict[str, Any]:
    """The on-chain verdict equals the off-chain one: validity, reasons, every field."""
    onchain = out["onchain"]
    assert onchain["comparable"] is True
    assert onchain["agrees"] is True, onchain["mismatches"]
    assert onchain["valid"] == out["valid"]
    return onchain


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_real_report_gets_the_same_verdict_and_fields(name: str) -> None:
    code, out = verify(DATA / REAL[name]["report"], DATA / REAL[name]["vcek"])
    onchain = assert_same_verdict(out)
    assert onchain["ok"] is True and onchain["reason"] == "OK"
    fields = onchain["fields"]
    # Field for field what the off-chain check parsed (and AMD's published values).
    assert fields["measurement"] == "0x" + out["measurement"]
    assert fields["chip_id"] == "0x" + out["chip_id"] == "0x" + REAL[name]["chip_id"]
    assert fields["report_data0"] + fields["report_data1"][2:] == "0x" + out["report_data"]
    assert fields["host_data"] == "0x" + out["host_data"]
    assert fields["version"] == out["version"]
    assert fields["policy"] == int(out["policy"]["raw"], 16)
    assert fields["reported_tcb"] == int(out["reported_tcb_raw"], 16)
    assert fields["signing_key"] == 0  # all three are VCEK-signed
    # The cold check, one transaction per step, each under EIP-7825's cap.
    steps = [step["step"] for step in onchain["steps"]]
    assert steps == [
        "verifyCertificate(ASK/ASVK)",
        "verifyCertificate(VCEK/VLEK)",
        "verifyReport",
    ]
    assert all(step["gas_used"] > 21_000 and step["under_cap"] for step in onchain["steps"])
    assert onchain["gas_total"] == sum(step["gas_used"] for step in onchain["steps"])
    assert onchain["tx_gas_cap"] == TX_GAS_CAP
    if REAL[name]["policy"] == "0xb0000":
        # DEBUG allowed: invalid by policy both ways (the contract returns the bit; the
        # policy is the caller's, as the registry's dispute applies it).
        assert code == 1 and out["onchain"]["errors"] == ["DEBUG_ALLOWED"]
    else:
        assert code == 0


BAD_SIGNATURE = ("SIGNATURE_INVALID", "BAD_SIGNATURE")
CHAIN = ("CHAIN_INVALID", "CERT_CHAIN")


@pytest.mark.parametrize(
    ("report", "vcek", "reasons"),
    [
        ("negative/milan_virtee_sev_report_byte0x15_xor80.bin", None, BAD_SIGNATURE),
        ("negative/milan_virtee_sev_report_measurement_bit0_flipped.bin", None, BAD_SIGNATURE),
        ("negative/milan_virtee_sev_report_reportdata_bit0_flipped.bin", None, BAD_SIGNATURE),
        ("negative/milan_virtee_sev_report_sig_r_bit0_flipped.bin", None, BAD_SIGNATURE),
        (None, "negative/milan_virtee_sev_vcek_byte40_xorff.der", CHAIN),
        (None, "negative/synthetic_vcek_invalid_legacy_hwid.der", CHAIN),
        (None, "negative/synthetic_vcek_invalid_new_hwid.der", CHAIN),
        (None, "vcek/milan_go_sev_guest.der", BAD_SIGNATURE),  # another chip's VCEK
        ("reports/genoa_azure.bin", None, ("PRODUCT_MISMATCH", "PRODUCT_MISMATCH")),
    ],
)
def test_every_tampered_file_is_refused_for_the_same_reason(
    report: str | None, vcek: str | None, reasons: tuple[str, str]
) -> None:
    reason, onchain_reason = reasons
    code, out = verify(
        DATA / (report or "reports/milan_virtee_sev.bin"),
        DATA / (vcek or "vcek/milan_virtee_sev.der"),
    )
    assert code == 1
    assert [error["code"] for error in out["errors"]] == [reason]
    onchain = assert_same_verdict(out)
    assert onchain["ok"] is False and onchain["reason"] == onchain_reason
    assert onchain["fields"] is None


def test_not_a_report_is_malformed_both_ways(tmp_path: Path) -> None:
    for name, content in (("short.bin", b"hi"), ("random.bin", bytes(range(256)) * 4 + bytes(160))):
        path = tmp_path / name
        path.write_bytes(content)
        code, out = verify(path, DATA / "vcek/milan_virtee_sev.der")
        assert code == 1
        assert [error["code"] for error in out["errors"]] == ["MALFORMED_REPORT"]
        onchain = assert_same_verdict(out)
        assert onchain["reason"] == "MALFORMED"


def test_not_a_certificate_is_malformed_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "vcek.der"
    path.write_bytes(b"not a certificate")
    code, out = verify(DATA / "reports/milan_virtee_sev.bin", path)
    assert code == 1
    assert [error["code"] for error in out["errors"]] == ["MALFORMED_CERTIFICATE"]
    assert assert_same_verdict(out)["reason"] == "MALFORMED"


@pytest.mark.parametrize("missing", ["report", "vcek"])
def test_a_missing_file_is_a_usage_error_without_traceback(tmp_path: Path, missing: str) -> None:
    report = tmp_path / "nope.bin" if missing == "report" else DATA / "reports/milan_virtee_sev.bin"
    vcek = tmp_path / "nope.der" if missing == "vcek" else DATA / "vcek/milan_virtee_sev.der"
    result = runner.invoke(
        app, ["attestation", "verify", str(report), "--vcek", str(vcek), "--onchain"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "cannot read" in result.output


def test_human_output_names_each_step_and_the_cap() -> None:
    result = runner.invoke(
        app,
        [
            "attestation", "verify", str(DATA / "reports/milan_virtee_sev.bin"),
            "--vcek", str(DATA / "vcek/milan_virtee_sev.der"), "--onchain",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "verifyCertificate(ASK/ASVK)" in result.output
    assert "16,777,216" in result.output
    assert "agrees with the off-chain one" in result.output


def test_against_a_deployment_s_verifier_read_only(chain: ChainSystem, tmp_path: Path) -> None:
    """With a deployment, its own SnpVerifier answers (eth_call), nothing is sent, the gas
    is estimated; the verdict is the same."""
    record = tmp_path / "deployment.json"
    chain.deployment.save(record)
    block = chain.anvil.w3.eth.block_number
    name = "milan_virtee_sev"
    code, out = verify(
        DATA / REAL[name]["report"], DATA / REAL[name]["vcek"], "--deployment", str(record)
    )
    assert code == 0, out
    onchain = assert_same_verdict(out)
    assert onchain["verifier"] == chain.deployment.snp_verifier
    assert onchain["gas_estimated"] is True and len(onchain["steps"]) == 1
    assert onchain["steps"][0]["step"] == "checkReport (cold)"
    assert chain.anvil.w3.eth.block_number == block  # nothing was sent
    code, out = verify(
        DATA / "negative/milan_virtee_sev_report_sig_r_bit0_flipped.bin",
        DATA / REAL[name]["vcek"],
        "--deployment",
        str(record),
    )
    assert code == 1 and assert_same_verdict(out)["reason"] == "BAD_SIGNATURE"
