"""The guest agent (guest/agent.py) off the VM: its report requests replayed against
recordings of the kernel's interfaces, its key binding, and what it accepts as secrets."""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from cvm.attestation.release import GuestIdentity, seal
from guest import agent as guest_agent

DATA = Path(__file__).resolve().parents[2] / "data"
RECORDING = json.loads((DATA / "guest" / "sev_guest_get_report.json").read_text())
REAL_REPORT = (DATA / "snp" / "reports" / "milan_virtee_sev.bin").read_bytes()


class RecordedIoctl:
    """Replays the recorded SNP_GET_REPORT: checks what the agent asks, answers as recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes, int]] = []

    def __call__(self, fd: int, request: int, argument: bytearray, mutate: bool) -> int:
        assert mutate
        version, req_addr, resp_addr, _ = struct.unpack("<B7xQQQ", bytes(argument))
        assert version == RECORDING["msg_version"]
        req = ctypes.string_at(req_addr, guest_agent.SNP_REPORT_REQ_SIZE)
        (vmpl,) = struct.unpack_from("<I", req, 64)
        self.calls.append((request, req[:64], vmpl))
        resp = bytes.fromhex(RECORDING["resp"])
        ctypes.memmove(resp_addr, resp, len(resp))
        return 0


def test_sev_guest_ioctl_request_matches_the_kernel_abi_and_returns_the_report(tmp_path):
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    ioctl = RecordedIoctl()
    user_data = bytes.fromhex(RECORDING["req_user_data"])
    report = guest_agent.report_via_sev_guest(device, user_data, ioctl=ioctl)
    assert ioctl.calls == [(int(RECORDING["request"], 16), user_data, RECORDING["req_vmpl"])]
    assert report == REAL_REPORT


def test_sev_guest_report_for_other_report_data_is_refused(tmp_path):
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    with pytest.raises(guest_agent.AgentError, match="another REPORT_DATA"):
        guest_agent.report_via_sev_guest(device, bytes(64), ioctl=RecordedIoctl())


def test_sev_guest_error_status_is_an_agent_error(tmp_path):
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")

    def failing(fd: int, request: int, argument: bytearray, mutate: bool) -> int:
        _, _, resp_addr, _ = struct.unpack("<B7xQQQ", bytes(argument))
        ctypes.memmove(resp_addr, struct.pack("<II", 0x16, 0), 8)  # SEV status: invalid param
        return 0

    with pytest.raises(guest_agent.AgentError, match="status 0x16"):
        guest_agent.report_via_sev_guest(device, bytes(64), ioctl=failing)


@pytest.fixture
def tsm_tree(tmp_path: Path) -> Path:
    root = tmp_path / "report"
    shutil.copytree(DATA / "guest" / "tsm" / "report", root)
    return root


def test_configfs_tsm_request_writes_inblob_and_reads_the_report(tsm_tree):
    user_data = REAL_REPORT[0x50:0x90]
    report, certs = guest_agent.report_via_tsm(tsm_tree, user_data, entry_name="entry")
    assert (tsm_tree / "entry" / "inblob").read_bytes() == user_data
    assert report == REAL_REPORT
    assert certs == b""


def test_configfs_tsm_other_provider_is_refused(tsm_tree):
    (tsm_tree / "entry" / "provider").write_text("tdx_guest\n")
    with pytest.raises(guest_agent.AgentError, match="not sev_guest"):
        guest_agent.report_via_tsm(tsm_tree, REAL_REPORT[0x50:0x90], entry_name="entry")


def test_configfs_tsm_report_for_other_report_data_is_refused(tsm_tree):
    with pytest.raises(guest_agent.AgentError, match="another REPORT_DATA"):
        guest_agent.report_via_tsm(tsm_tree, bytes(64), entry_name="entry")


def test_without_an_snp_interface_the_report_is_left_to_the_hosts_amd_sp(tmp_path):
    answer = guest_agent.request_report(
        bytes(64), tsm=tmp_path / "none", device=tmp_path / "no-device"
    )
    assert answer == {"source": "host", "report": "", "certs": ""}


@pytest.fixture
def agent(tmp_path: Path) -> guest_agent.GuestAgent:
    return guest_agent.GuestAgent(
        guest_agent.GuestKeys(),
        secrets_dir=tmp_path / "secrets",
        ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no-tsm",
        device=tmp_path / "no-device",
    )


def test_attest_binds_the_hosts_lease_digest_and_the_guest_key(agent):
    lease_digest = bytes(range(32))
    answer = agent.handle({"op": "attest", "lease_digest": lease_digest.hex()})
    assert answer["ok"] and answer["source"] == "host"
    guest_key = bytes.fromhex(answer["guest_key"])
    assert len(guest_key) == 64
    assert bytes.fromhex(answer["report_data"]) == lease_digest + hashlib.sha256(guest_key).digest()


def _identity(agent: guest_agent.GuestAgent, report_data: bytes) -> GuestIdentity:
    return GuestIdentity.from_guest_key(agent.keys.public, report_data, bytes(48))


def test_sealed_secrets_for_an_attested_report_are_installed_privately(agent, tmp_path):
    answer = agent.handle({"op": "attest", "lease_digest": "ab" * 32})
    report_data = bytes.fromhex(answer["report_data"])
    sealed = seal(
        _identity(agent, report_data),
        ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample renter"],
        secrets={"db.password": b"s3cret\n"},
    )
    result = agent.handle({"op": "secrets", **sealed.to_json_dict()})
    assert result == {"ok": True, "installed": ["ssh_keys", "db.password"]}
    secret = tmp_path / "secrets" / "db.password"
    assert secret.read_bytes() == b"s3cret\n"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert "renter" in (tmp_path / "ssh" / "authorized_keys").read_text()


def test_secrets_for_a_report_this_guest_never_made_are_refused(agent, tmp_path):
    sealed = seal(_identity(agent, bytes(64)), secrets={"x": b"1"})
    result = agent.handle({"op": "secrets", **sealed.to_json_dict()})
    assert result["ok"] is False and "never made" in result["error"]
    assert not (tmp_path / "secrets").exists()


def test_secrets_sealed_to_another_guest_key_do_not_open(agent, tmp_path):
    answer = agent.handle({"op": "attest", "lease_digest": "cd" * 32})
    report_data = bytes.fromhex(answer["report_data"])
    other = guest_agent.GuestKeys()  # what a replayed report would carry: someone else's key
    sealed = seal(GuestIdentity.from_guest_key(other.public, report_data, bytes(48)),
                  secrets={"x": b"1"})  # fmt: skip
    result = agent.handle({"op": "secrets", **sealed.to_json_dict()})
    assert result["ok"] is False and "do not open" in result["error"]
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(
    "request_",
    [{"op": "nope"}, {"op": "attest", "lease_digest": "zz"}, {"op": "attest"},
     {"op": "secrets", "report_data": "00"}],
)  # fmt: skip
def test_bad_requests_get_an_error_answer_not_a_crash(agent, request_):
    answer = agent.handle(request_)
    assert answer["ok"] is False and answer["error"]


def test_an_os_error_is_an_error_answer_to_retry_not_the_agents_end(agent, tmp_path):
    # configfs-tsm present but failing (EIO, an entry without its files): the request fails,
    # the agent answers with the usual keys and stays up for the next request.
    agent.tsm = tmp_path / "tsm"
    agent.tsm.mkdir()
    answer = agent.handle({"op": "attest", "lease_digest": "ab" * 32})
    assert answer["ok"] is False and answer["retry"] is True and "attest failed" in answer["error"]
    # Secrets that cannot be written (a full or broken tmpfs): an answer to retry, too.
    agent.tsm = tmp_path / "no-tsm"
    report_data = bytes.fromhex(agent.handle({"op": "attest", "lease_digest": "ab" * 32})[
        "report_data"])  # fmt: skip
    (tmp_path / "secrets").write_text("not a directory")
    sealed = seal(_identity(agent, report_data), secrets={"x": b"1"})
    answer = agent.handle({"op": "secrets", **sealed.to_json_dict()})
    assert answer["ok"] is False and answer["retry"] is True


def test_any_error_of_one_request_line_is_answered_with_its_id(agent, monkeypatch):
    def broken(request):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(agent, "handle", broken)
    answer = guest_agent.answer_line(agent, json.dumps({"op": "hello", "id": "7"}).encode())
    assert answer == {"ok": False, "error": "request failed: unforeseen", "id": "7"}
    assert guest_agent.answer_line(agent, b"[1]")["ok"] is False
    assert guest_agent.answer_line(agent, b"{")["ok"] is False
