"""`cvm attestation verify|show|measure`: exit codes 0/1/2 and the stable JSON fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cvm.attestation import SimulatedSecureProcessor
from cvm.cli import app

from .conftest import DATA, REAL

runner = CliRunner()
STABLE_FIELDS = {"valid", "product", "signer", "version", "policy", "measurement",
                 "report_data", "chip_id", "reported_tcb", "errors"}  # fmt: skip


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["attestation", *args])
    return result.exit_code, result.stdout


def verify_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out = run("verify", *args, "--json")
    return code, json.loads(out)


def paths(name: str) -> tuple[str, str]:
    return str(DATA / REAL[name]["report"]), str(DATA / REAL[name]["vcek"])


@pytest.mark.parametrize("name", ["milan_virtee_sev", "genoa_azure"])
def test_valid_real_report(name: str) -> None:
    report, vcek = paths(name)
    code, out = verify_json(report, "--vcek", vcek)
    exp = REAL[name]
    assert code == 0
    assert STABLE_FIELDS <= set(out)
    assert out["valid"] is True and out["errors"] == [] and out["amd_root"] == "amd"
    assert out["product"] == exp["product"].capitalize()
    assert out["signer"] == "VCEK" and out["version"] == exp["version"]
    assert out["policy"]["raw"] == exp["policy"] and out["policy"]["debug"] is False
    assert out["measurement"] == exp["measurement"]
    assert out["report_data"] == exp["report_data"]
    assert out["chip_id"] == exp["chip_id"]
    assert out["reported_tcb"] == exp["reported_tcb_decoded"]


def test_debug_report_is_invalid_unless_allowed() -> None:
    report, vcek = paths("milan_go_sev_guest")
    code, out = verify_json(report, "--vcek", vcek)
    assert code == 1 and out["valid"] is False
    assert [e["code"] for e in out["errors"]] == ["DEBUG_ALLOWED"]
    code, out = verify_json(report, "--vcek", vcek, "--allow-debug")
    assert code == 0 and out["valid"] is True


def test_expected_measurement() -> None:
    report, vcek = paths("milan_virtee_sev")
    code, _ = verify_json(report, "--vcek", vcek, "--expect-measurement",
                          REAL["milan_virtee_sev"]["measurement"])  # fmt: skip
    assert code == 0
    code, out = verify_json(report, "--vcek", vcek, "--expect-measurement", "00" * 48)
    assert code == 1 and [e["code"] for e in out["errors"]] == ["MEASUREMENT_MISMATCH"]


def test_at_and_chain_options() -> None:
    report, vcek = paths("milan_virtee_sev")
    chain = str(DATA / "ca" / "milan_vcek_cert_chain.pem")
    code, out = verify_json(
        report, "--vcek", vcek, "--chain", chain, "--at", "2024-06-01T00:00:00Z"
    )
    assert code == 0 and out["checked_at"].startswith("2024-06-01")
    code, out = verify_json(report, "--vcek", vcek, "--at", "2031-01-01")
    assert code == 1 and [e["code"] for e in out["errors"]] == ["CERT_EXPIRED"]
    wrong = str(DATA / "ca" / "genoa_vcek_cert_chain.pem")
    code, out = verify_json(report, "--vcek", vcek, "--chain", wrong)
    assert code == 1 and out["errors"][0]["code"] in {"CHAIN_INVALID", "UNTRUSTED_ROOT"}


@pytest.mark.parametrize(
    "negative, reason",
    [("milan_virtee_sev_report_measurement_bit0_flipped.bin", "SIGNATURE_INVALID"),
     ("milan_virtee_sev_vcek_byte40_xorff.der", "CHAIN_INVALID")],
)  # fmt: skip
def test_negative_files(negative: str, reason: str) -> None:
    report, vcek = paths("milan_virtee_sev")
    target = str(DATA / "negative" / negative)
    args = (target, "--vcek", vcek) if negative.endswith(".bin") else (report, "--vcek", target)
    code, out = verify_json(*args)
    assert code == 1 and out["valid"] is False
    assert [e["code"] for e in out["errors"]] == [reason]


def test_sim_report_needs_its_chain_passed_explicitly(
    sim_milan: SimulatedSecureProcessor, tmp_path: Path
) -> None:
    report, vcek, chain = sim_milan.attest()
    (tmp_path / "r.bin").write_bytes(report)
    (tmp_path / "v.der").write_bytes(vcek)
    (tmp_path / "c.pem").write_bytes(chain)
    base = (str(tmp_path / "r.bin"), "--vcek", str(tmp_path / "v.der"))
    code, out = verify_json(*base)
    assert code == 1 and out["errors"][0]["code"] == "CHAIN_INVALID"
    code, out = verify_json(*base, "--chain", str(tmp_path / "c.pem"))
    assert code == 0 and out["valid"] is True and out["version"] == 3
    # Valid against the chain it was given, and said not to be AMD's.
    assert out["amd_root"] == "simulated"
    code, human = run("verify", *base, "--chain", str(tmp_path / "c.pem"))
    assert code == 0 and "NOT AMD's root" in human


def test_malformed_report_is_invalid_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "bad.bin").write_bytes(b"\0" * 100)
    _, vcek = paths("milan_virtee_sev")
    code, out = verify_json(str(tmp_path / "bad.bin"), "--vcek", vcek)
    assert code == 1 and [e["code"] for e in out["errors"]] == ["MALFORMED_REPORT"]
    assert out["measurement"] is None


@pytest.mark.parametrize(
    "args",
    [("missing.bin", "--vcek", "missing.der"),
     ("REPORT",),
     ("REPORT", "--vcek", "VCEK", "--at", "yesterday"),
     ("REPORT", "--vcek", "VCEK", "--expect-measurement", "abcd"),
     ("REPORT", "--vcek", "VCEK", "--chain", "missing.pem"),
     ("REPORT", "--vcek", "missing.der")],
)  # fmt: skip
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    report, vcek = paths("milan_virtee_sev")
    real = [report if a == "REPORT" else vcek if a == "VCEK" else a for a in args]
    code, _ = run("verify", *real)
    assert code == 2


def test_human_output() -> None:
    report, vcek = paths("milan_virtee_sev")
    code, out = run("verify", report, "--vcek", vcek)
    assert (
        code == 0
        and "VALID" in out
        and REAL["milan_virtee_sev"]["measurement"] in out.replace("\n", "").replace(" ", "")
    )


def test_show() -> None:
    report, _ = paths("genoa_azure")
    code, out = run("show", report, "--json")
    fields = json.loads(out)
    assert code == 0
    assert fields["product"] == "Genoa" and fields["guest_svn"] == REAL["genoa_azure"]["guest_svn"]
    assert fields["id_key_digest"] == REAL["genoa_azure"]["id_key_digest"]
    code, out = run("show", report)
    assert code == 0 and "SEV-SNP attestation report" in out
    code, _ = run("show", str(DATA / "expected.json"))
    assert code == 1


def test_measure() -> None:
    ovmf = str(DATA / "measurement" / "ovmf_AmdSev_suffix.bin")
    vector = next(
        v for v in json.loads((DATA / "measurement" / "vectors.json").read_text())["vectors"]
        if v["name"] == "snp_without_kernel_feature_snp_only"
    )  # fmt: skip
    code, out = run("measure", "--ovmf", ovmf)
    assert code == 0 and out.strip() == vector["expected_launch_digest"]
    code, out = run("measure", "--ovmf", ovmf, "--json", "--vcpus", "4", "--guest-features", "0x21")
    assert code == 0 and len(bytes.fromhex(json.loads(out)["measurement"])) == 48
    code, _ = run("measure", "--ovmf", "missing.fd")
    assert code == 2


def test_chain_without_root_keeps_amds_roots(tmp_path: Path) -> None:
    report, vcek = paths("milan_virtee_sev")
    ask_only = tmp_path / "ask.pem"
    ask_only.write_bytes((DATA / "ca" / "ask_milan.pem").read_bytes())
    code, out = verify_json(report, "--vcek", vcek, "--chain", str(ask_only))
    assert code == 0 and out["valid"] is True
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a pem")
    code, out = verify_json(report, "--vcek", vcek, "--chain", str(garbage))
    assert code == 1 and [e["code"] for e in out["errors"]] == ["MALFORMED_CERTIFICATE"]
