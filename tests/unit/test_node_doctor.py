"""`cvm node doctor`: each SEV-SNP requirement checked against a fake host tree (sysfs, /dev,
kernel log, a QEMU that prints a real QEMU 9.1 `-object help`), and one real run on this
host, which has no SEV-SNP: every missing piece is named with its fix, exit 1, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvm.node_doctor import (
    HostView,
    check_disk,
    check_firmware,
    check_kvm_amd,
    check_ovmf,
    check_qemu,
    check_sev_device,
    check_sev_snp_param,
    diagnose,
    ready_for_snp,
)

REPO = Path(__file__).resolve().parents[2]
OBJECT_HELP_9_1 = json.loads(
    (REPO / "tests" / "unit" / "node_agent" / "data" / "qemu_object_help.json").read_text()
)["output"]
SNP_LOG = "[    4.1] ccp 0000:22:00.1: SEV firmware update successful\n" \
    "[    4.2] ccp 0000:22:00.1: SEV API:1.55 build:21\n" \
    "[    4.2] ccp 0000:22:00.1: SEV-SNP API:1.55 build:21\n"  # fmt: skip


def _fake_qemu(where: Path, object_help: str) -> str:
    """An executable that answers `-object help` as the given QEMU did."""
    (where / "help.txt").write_text(object_help)
    script = where / "qemu-system-x86_64"
    script.write_text(f'#!/bin/sh\n[ "$1 $2" = "-object help" ] && exec cat {where / "help.txt"}\n')
    script.chmod(0o755)
    return str(script)


def snp_host(tmp_path: Path, *, object_help: str = OBJECT_HELP_9_1) -> HostView:
    """A tree with everything real SEV-SNP needs."""
    params = tmp_path / "sys" / "module" / "kvm_amd" / "parameters"
    params.mkdir(parents=True)
    (params / "sev_snp").write_text("Y\n")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "sev").touch()
    (dev / "kvm").touch()
    ovmf = tmp_path / "OVMF.amdsev.fd"
    ovmf.write_bytes(b"\0" * 4096)
    (tmp_path / "bin").mkdir()
    return HostView(
        sys_root=tmp_path / "sys",
        dev_root=dev,
        qemu_binary=_fake_qemu(tmp_path / "bin", object_help),
        ovmf=None,
        ovmf_candidates=(tmp_path / "absent.fd", ovmf),
        data_dir=tmp_path / "data",
        disk_capacity_gib=1,
        kernel_log=lambda: SNP_LOG,
    )


def test_a_host_with_everything_is_ready(tmp_path: Path) -> None:
    checks = diagnose(snp_host(tmp_path))
    assert [check.status for check in checks] == ["ok"] * 8, checks
    assert ready_for_snp(checks)
    assert checks[4].found == "SEV-SNP firmware API 1.55 build 21"
    assert checks[6].found == str(tmp_path / "OVMF.amdsev.fd")


def test_kvm_amd_not_loaded_and_snp_off(tmp_path: Path) -> None:
    view = snp_host(tmp_path)
    (view.sys_root / "module" / "kvm_amd" / "parameters" / "sev_snp").write_text("N\n")
    off = check_sev_snp_param(view)
    assert (off.status, off.found) == ("fail", "kvm_amd sev_snp=N")
    assert "kvm_amd.sev_snp=1" in off.fix
    gone = HostView(sys_root=tmp_path / "nothing", dev_root=view.dev_root)
    assert check_kvm_amd(gone).status == "fail"
    assert "modprobe kvm_amd" in check_kvm_amd(gone).fix
    missing = check_sev_snp_param(gone)
    assert missing.status == "fail" and "is missing" in missing.found


def test_sev_device_missing_or_not_accessible(tmp_path: Path) -> None:
    view = snp_host(tmp_path)
    (view.dev_root / "sev").unlink()
    missing = check_sev_device(view)
    assert missing.status == "fail" and missing.found.endswith("sev is missing")
    assert "modprobe ccp" in missing.fix
    (view.dev_root / "sev").touch()
    (view.dev_root / "sev").chmod(0o000)
    if os.getuid() == 0:  # root reads anything: the mode check cannot fail for it
        assert check_sev_device(view).status == "ok"
    else:
        locked = check_sev_device(view)
        assert locked.status == "fail" and "not readable and writable" in locked.found


def test_firmware_from_the_kernel_log(tmp_path: Path) -> None:
    view = snp_host(tmp_path)
    unreadable = check_firmware(HostView(kernel_log=lambda: None))
    assert unreadable.status == "warn" and unreadable.found.startswith("unknown")
    none = check_firmware(HostView(kernel_log=lambda: "[0.0] ccp: SEV API:1.49 build:3\n"))
    assert none.status == "fail" and "no SEV-SNP firmware" in none.found
    old = check_firmware(HostView(kernel_log=lambda: "ccp: SEV-SNP API:1.49 build:3\n"))
    assert old.status == "fail" and "1.49 build 3 is older than 1.51" in old.found
    assert check_firmware(view).status == "ok"
    # The last line wins: a firmware updated at runtime logs a second, newer line.
    updated = check_firmware(
        HostView(kernel_log=lambda: "SEV-SNP API:1.49 build:3\nSEV-SNP API:1.57 build:2\n")
    )
    assert updated.found == "SEV-SNP firmware API 1.57 build 2"


def test_qemu_without_sev_snp_guest_or_absent(tmp_path: Path) -> None:
    view = snp_host(tmp_path, object_help=OBJECT_HELP_9_1.replace("sev-snp-guest", "sev-guest"))
    old = check_qemu(view)
    assert old.status == "fail" and "has no sev-snp-guest" in old.found
    assert "QEMU >= 9.1" in old.fix
    absent = check_qemu(HostView(qemu_binary=str(tmp_path / "no-qemu")))
    assert absent.status == "fail" and "is not installed" in absent.found


def test_ovmf_explicit_missing_or_none_found(tmp_path: Path) -> None:
    explicit = check_ovmf(HostView(ovmf=tmp_path / "gone.fd"))
    assert explicit.status == "fail" and "CVM_IMAGE_OVMF" in explicit.found
    none = check_ovmf(HostView(ovmf_candidates=(tmp_path / "a.fd",)))
    assert none.status == "fail" and str(tmp_path / "a.fd") in none.found
    assert "AmdSev" in none.fix


def test_disk_space_against_the_declared_capacity(tmp_path: Path) -> None:
    too_much = check_disk(HostView(data_dir=tmp_path / "not" / "yet", disk_capacity_gib=10**9))
    assert too_much.status == "fail" and "less than the 1000000000 GiB" in too_much.found
    assert "CVM_NODE_CAPACITY_DISK_GIB" in too_much.fix
    undeclared = check_disk(HostView(data_dir=tmp_path, disk_capacity_gib=None))
    assert undeclared.status == "warn"
    assert check_disk(HostView(data_dir=tmp_path, disk_capacity_gib=1)).status == "ok"


def test_a_warning_alone_keeps_the_host_ready(tmp_path: Path) -> None:
    view = snp_host(tmp_path)
    checks = diagnose(
        HostView(**{**view.__dict__, "kernel_log": lambda: None, "disk_capacity_gib": None})
    )
    assert sorted(check.status for check in checks).count("warn") == 2
    assert ready_for_snp(checks)


def _doctor(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CVM_")  # this host as it is, not the caller's settings
    }
    env["CVM_DATA_DIR"] = str(tmp_path / "cvm")
    env["CVM_SETTINGS_FILE"] = str(tmp_path / "none.env")
    return subprocess.run(
        [sys.executable, "-m", "cvm", "node", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_this_host_without_sev_snp_is_told_what_to_fix(tmp_path: Path) -> None:
    if Path("/dev/sev").exists():
        pytest.fail("this test expects a host without SEV-SNP; adjust it for SNP hosts")
    text = _doctor("--disk-gib", "1", tmp_path=tmp_path)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "Traceback" not in text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 9  # one per check, then the verdict
    assert any(
        line.startswith("FAIL /dev/sev: /dev/sev is missing; fix: load the ccp driver")
        for line in lines
    ), lines
    assert "cannot run real SEV-SNP guests yet" in text.stdout
    as_json = _doctor("--json", "--disk-gib", "1", tmp_path=tmp_path)
    assert as_json.returncode == 1 and "Traceback" not in as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ready"] is False
    by_name = {check["name"]: check for check in report["checks"]}
    assert set(by_name) == {
        "kvm_amd",
        "kvm_amd sev_snp",
        "/dev/kvm",
        "/dev/sev",
        "SEV firmware",
        "QEMU",
        "AmdSev OVMF",
        "disk space",
    }
    assert by_name["/dev/sev"]["status"] == "fail" and by_name["/dev/sev"]["fix"]
    assert by_name["kvm_amd sev_snp"]["status"] == "fail"
    for check in report["checks"]:
        assert check["status"] in ("ok", "warn", "fail")
        assert check["status"] == "ok" or check["fix"], check
