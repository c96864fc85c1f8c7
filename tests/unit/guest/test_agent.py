"""The guest agent (guest/agent.py) off the VM, driven as the host and the renter would:
its report requests replayed against recordings of the kernel's interfaces, its binding to
one lease and one renter, whom it takes sealed messages from, and what it signs for whom.

Tests named `..._refused`/`..._never_...` are attacks that succeeded on the agent before
issue 17 (it had no `bind`, attested any digest the host sent, opened any HPKE seal for a
REPORT_DATA it attested, had no sequence numbers and no signer)."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from eth_account import Account

from cvm import guest_eip712
from cvm.attestation import binding as cvm_binding
from cvm.attestation.release import GuestIdentity, SealedSecrets, seal, verify_status
from cvm.attestation.sim import SimulatedSecureProcessor
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


CHAIN_ID = 31337
REGISTRY = "0x" + "5a" * 20
LEASE = 7
RENTER = Account.create()
OTHER_RENTER = Account.create()
NODE_KEY = Account.create()  # the host's own key: it seals too, but it is not the renter
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample renter"
HOST_SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost node-operator"


def bind_request(**overrides) -> dict:
    return {"op": "bind", "chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE,
            "renter": RENTER.address} | overrides  # fmt: skip


@pytest.fixture
def agent(tmp_path: Path) -> guest_agent.GuestAgent:
    return guest_agent.GuestAgent(
        guest_agent.GuestKeys(),
        secrets_dir=tmp_path / "secrets",
        ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no-tsm",
        device=tmp_path / "no-device",
    )


@pytest.fixture
def bound(agent: guest_agent.GuestAgent) -> guest_agent.GuestAgent:
    assert agent.handle(bind_request())["ok"]
    return agent


def attest(agent: guest_agent.GuestAgent, nonce: int = 0) -> bytes:
    answer = agent.handle({"op": "attest", "nonce": nonce})
    assert answer["ok"], answer
    return bytes.fromhex(answer["report_data"])


def identity(agent: guest_agent.GuestAgent, report_data: bytes, **overrides) -> GuestIdentity:
    fields = {"chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE,
              "renter": RENTER.address} | overrides  # fmt: skip
    return GuestIdentity.from_guest_key(agent.keys.public, report_data, bytes(48), **fields)


def deliver(agent: guest_agent.GuestAgent, sealed: SealedSecrets, **overrides) -> dict:
    return agent.handle({"op": "secrets", **sealed.to_json_dict(), **overrides})


# --- keys, bind, attest ------------------------------------------------------------------
def test_the_guest_key_is_116_bytes_and_parses_as_a_cvm_guest_key(agent):
    answer = agent.handle({"op": "hello"})
    assert answer["ok"] and answer["bound"] is None
    raw = bytes.fromhex(answer["guest_key"])
    parsed = cvm_binding.GuestKey.parse(raw)
    assert len(raw) == cvm_binding.GUEST_KEY_SIZE == 116
    assert parsed.signer.lower() == "0x" + agent.keys.signer.address.hex()
    # The TLS part is the SPKI hash of the certificate the TLS front presents.
    certificate = x509.load_pem_x509_certificate(agent.keys.tls_certificate_pem)
    assert parsed.tls_spki_sha256 == cvm_binding.spki_sha256(
        certificate.public_bytes(serialization.Encoding.DER)
    )
    key = serialization.load_pem_private_key(agent.keys.tls_private_key_pem(), None)
    assert key.public_key() == certificate.public_key()


def test_host_data_lease_digest_and_eip712_digests_match_the_sdk_and_eth_account():
    registry, renter = bytes.fromhex(REGISTRY[2:]), bytes.fromhex(RENTER.address[2:])
    assert guest_agent.host_data(CHAIN_ID, registry, LEASE, renter) == cvm_binding.host_data(
        CHAIN_ID, REGISTRY, LEASE, RENTER.address
    )
    for nonce in (0, 1, 2**256 - 1):
        assert guest_agent.lease_digest(CHAIN_ID, registry, LEASE, nonce) == (
            cvm_binding.lease_digest(CHAIN_ID, REGISTRY, LEASE, nonce)
        )
    domain = guest_agent.domain_separator(CHAIN_ID, registry)
    report_data, enc, ciphertext = b"\x01" * 64, b"\x02" * 32, b"\x03" * 300
    assert guest_agent.typed_digest(
        domain, guest_agent.sealed_struct_hash(LEASE, 9, report_data, enc, ciphertext)
    ) == guest_eip712.digest(guest_eip712.sealed_secrets_message(
        CHAIN_ID, REGISTRY, LEASE, 9, report_data, enc, ciphertext))  # fmt: skip
    challenge = bytes(range(32))
    assert guest_agent.typed_digest(
        domain, guest_agent.status_struct_hash(LEASE, 2**64 - 1, challenge)
    ) == guest_eip712.digest(
        guest_eip712.guest_status_message(CHAIN_ID, REGISTRY, LEASE, 2**64 - 1, challenge)
    )
    request = b"\x07" * 32
    assert guest_agent.typed_digest(
        domain, guest_agent.result_struct_hash(LEASE, request, guest_agent.keccak256(b"42"))
    ) == guest_eip712.digest(
        guest_eip712.guest_result_message(CHAIN_ID, REGISTRY, LEASE, request, b"42")
    )


def test_the_guests_signatures_recover_to_its_address_with_eth_account(agent):
    digest = hashlib.sha256(b"anything").digest()
    for _ in range(8):  # both parities of R, both halves of s before normalising
        digest = hashlib.sha256(digest).digest()
        signature = agent.keys.signer.sign(digest)
        assert int.from_bytes(signature[32:64], "big") <= guest_agent._curve().order // 2
        recovered = Account._recover_hash(digest, signature=signature)
        assert recovered.lower() == "0x" + agent.keys.signer.address.hex()
        assert guest_agent.recover_address(digest, signature) == agent.keys.signer.address


def test_attest_before_bind_is_refused(agent):
    """Before issue 17 the guest attested any lease digest the host sent."""
    answer = agent.handle({"op": "attest", "nonce": 0})
    assert answer["ok"] is False and "bind first" in answer["error"]
    legacy = agent.handle({"op": "attest", "lease_digest": "ab" * 32})
    assert legacy["ok"] is False


def test_attest_computes_the_lease_digest_of_its_bound_lease_itself(bound):
    # A `lease_digest` the host adds (the old protocol) is ignored: the host cannot choose.
    answer = bound.handle({"op": "attest", "nonce": 3, "lease_digest": "ab" * 32})
    assert answer["ok"] and answer["source"] == "host"
    guest_key = bytes.fromhex(answer["guest_key"])
    assert bytes.fromhex(answer["report_data"]) == cvm_binding.build_report_data(
        CHAIN_ID, REGISTRY, LEASE, 3, guest_key
    )


@pytest.mark.parametrize(
    "other",
    [{"lease_id": LEASE + 1}, {"renter": OTHER_RENTER.address}, {"chain_id": 1},
     {"registry": "0x" + "5b" * 20}],
)  # fmt: skip
def test_a_second_lease_is_refused_for_the_guests_life(bound, other):
    """One guest, many leases: before issue 17 the same guest attested lease B's digest with
    lease A's key. Now a bind with any other value is refused, and attest stays lease A's."""
    refused = bound.handle(bind_request(**other))
    assert refused["ok"] is False and "bound to lease 7" in refused["error"]
    assert bound.handle(bind_request())["ok"]  # the same values again: idempotent
    assert bound.handle({"op": "hello"})["bound"] == {
        "chain_id": CHAIN_ID, "registry": REGISTRY.lower(), "lease_id": LEASE,
        "renter": RENTER.address.lower()}  # fmt: skip
    report_data = attest(bound, 1)
    assert report_data[:32] == cvm_binding.lease_digest(CHAIN_ID, REGISTRY, LEASE, 1)


@pytest.mark.parametrize(
    "bad",
    [{"lease_id": -1}, {"lease_id": True}, {"lease_id": "7"}, {"chain_id": 2**256},
     {"registry": "0x12"}, {"renter": "0x" + "00" * 20}, {"renter": None}],
)  # fmt: skip
def test_a_malformed_bind_is_refused_and_binds_nothing(agent, bad):
    assert agent.handle(bind_request(**bad))["ok"] is False
    assert agent.binding is None


def _snp_report(host_data: bytes) -> dict[str, str]:
    chip = SimulatedSecureProcessor("Milan")
    signed = chip.attest(report_data=bytes(64), host_data=host_data)
    return {"source": "sev-guest", "report": signed.report.hex(), "certs": ""}


def test_on_snp_bind_checks_the_launchs_host_data_from_a_report_of_its_own(agent, monkeypatch):
    """On SEV-SNP the host's word is not taken: HOST_DATA is in the guest's own report."""
    other = cvm_binding.host_data(CHAIN_ID, REGISTRY, LEASE + 1, RENTER.address)
    monkeypatch.setattr(guest_agent, "request_report", lambda *a, **k: _snp_report(other))
    refused = agent.handle(bind_request())
    assert refused["ok"] is False and "HOST_DATA of this launch" in refused["error"]
    assert agent.binding is None
    right = cvm_binding.host_data(CHAIN_ID, REGISTRY, LEASE, RENTER.address)
    monkeypatch.setattr(guest_agent, "request_report", lambda *a, **k: _snp_report(right))
    assert agent.handle(bind_request()) == {"ok": True, "host_data": right.hex()}


# --- sealed messages ---------------------------------------------------------------------
def test_renter_sealed_secrets_for_an_attested_report_are_installed_privately(bound, tmp_path):
    report_data = attest(bound)
    sealed = seal(identity(bound, report_data), RENTER, seq=1, ssh_keys=[SSH_KEY],
                  secrets={"db.password": b"s3cret\n"})  # fmt: skip
    assert deliver(bound, sealed) == {"ok": True, "installed": ["ssh_keys", "db.password"],
                                      "seq": 1}  # fmt: skip
    secret = tmp_path / "secrets" / "db.password"
    assert secret.read_bytes() == b"s3cret\n"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ssh" / "authorized_keys").read_text() == SSH_KEY + "\n"


def _sign_as(account, agent, report_data: bytes, sealed: SealedSecrets, **fields) -> bytes:
    values: dict[str, Any] = {"chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE}
    values |= fields
    message = guest_eip712.sealed_secrets_message(
        values["chain_id"], values["registry"], values["lease_id"], sealed.seq, report_data,
        sealed.enc, sealed.ciphertext,
    )  # fmt: skip
    return guest_eip712.sign(message, account)


@pytest.mark.parametrize(
    "forger",
    ["node key", "random key", "renter of another lease", "renter, for another lease",
     "renter, on another chain", "no signature", "zero signature", "high s"],
)  # fmt: skip
def test_a_payload_sealed_by_anyone_but_the_renter_is_refused(bound, tmp_path, forger):
    """The host gets root: before issue 17 the node sealed its own SSH key with a valid HPKE
    seal and the guest installed it. Now only the renter's EIP-712 signature over this lease,
    this seq and these bytes opens the door."""
    report_data = attest(bound)
    # A valid seal to the attested key: what the node (or anyone) can make from the evidence.
    sealed = seal(identity(bound, report_data), RENTER, seq=1, ssh_keys=[HOST_SSH_KEY])
    signature = {
        "node key": lambda: _sign_as(NODE_KEY, bound, report_data, sealed),
        "random key": lambda: _sign_as(Account.create(), bound, report_data, sealed),
        "renter of another lease": lambda: _sign_as(
            OTHER_RENTER, bound, report_data, sealed, lease_id=LEASE + 1
        ),
        "renter, for another lease": lambda: _sign_as(
            RENTER, bound, report_data, sealed, lease_id=LEASE + 1
        ),
        "renter, on another chain": lambda: _sign_as(
            RENTER, bound, report_data, sealed, chain_id=1
        ),
        "no signature": lambda: b"",
        "zero signature": lambda: bytes(65),
        "high s": lambda: _high_s(sealed.signature),
    }[forger]()
    answer = deliver(bound, sealed, signature=signature.hex())
    assert answer["ok"] is False
    assert not (tmp_path / "ssh" / "authorized_keys").exists()
    assert bound.seq == 0


def _high_s(signature: bytes) -> bytes:
    """The same signature with s' = n - s and v flipped: valid ECDSA, malleated."""
    order = guest_agent._curve().order
    s = order - int.from_bytes(signature[32:64], "big")
    return signature[:32] + s.to_bytes(32, "big") + bytes([55 - signature[64]])


def test_the_renters_signature_does_not_carry_over_to_other_bytes(bound, tmp_path):
    report_data = attest(bound)
    good = seal(identity(bound, report_data), RENTER, seq=1, secrets={"a": b"renter's"})
    evil = seal(identity(bound, report_data), RENTER, seq=1, ssh_keys=[HOST_SSH_KEY])
    # The host swaps in its own ciphertext (or enc) under the renter's signature.
    for swap in ({"ciphertext": evil.ciphertext.hex(), "enc": evil.enc.hex()},
                 {"seq": 2}):  # fmt: skip
        answer = deliver(bound, good, **swap)
        assert answer["ok"] is False and "not by the lease's renter" in answer["error"]
    assert not (tmp_path / "ssh").exists()


def test_a_replayed_or_older_message_is_refused(bound, tmp_path):
    """Replays: before issue 17 a node could replay an old message to bring back a revoked
    SSH key or a rotated secret. Now seq must be above the last one installed."""
    report_data = attest(bound)
    guest = identity(bound, report_data)
    first = seal(guest, RENTER, seq=1, ssh_keys=[SSH_KEY], secrets={"token": b"old"})
    assert deliver(bound, first)["ok"]
    rotated = seal(guest, RENTER, seq=5, ssh_keys=[], secrets={"token": b"new"})
    assert deliver(bound, rotated)["seq"] == 5
    for replay in (first, rotated, seal(guest, RENTER, seq=4, secrets={"token": b"older"})):
        answer = deliver(bound, replay)
        assert answer["ok"] is False and "not above the installed 5" in answer["error"]
    assert (tmp_path / "secrets" / "token").read_bytes() == b"new"
    assert deliver(bound, seal(guest, RENTER, seq=6, secrets={"token": b"newer"}))["ok"]


def test_secrets_before_bind_or_for_a_report_this_guest_never_made_are_refused(agent, tmp_path):
    sealed = seal(identity(agent, bytes(64)), RENTER, seq=1, secrets={"x": b"1"})
    assert "bind first" in deliver(agent, sealed)["error"]
    agent.handle(bind_request())
    answer = deliver(agent, sealed)
    assert answer["ok"] is False and "never made" in answer["error"]
    assert not (tmp_path / "secrets").exists()


def test_secrets_sealed_to_another_guest_key_do_not_open(bound, tmp_path):
    report_data = attest(bound)
    other = guest_agent.GuestKeys()  # what a replayed report would carry: someone else's key
    fields = {
        "chain_id": CHAIN_ID,
        "registry": REGISTRY,
        "lease_id": LEASE,
        "renter": RENTER.address,
    }
    guest = GuestIdentity.from_guest_key(other.public, report_data, bytes(48), **fields)
    answer = deliver(bound, seal(guest, RENTER, seq=1, secrets={"x": b"1"}))
    assert answer["ok"] is False and "do not open" in answer["error"]
    assert not (tmp_path / "secrets").exists() and bound.seq == 0


class KeyHolders:
    """A second sender policy (the key holders of a later issue): a fixed set of addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = {bytes.fromhex(a[2:].lower()) for a in addresses}

    def authorize(self, binding, message) -> str:
        signer = guest_agent.recover_address(message.digest(binding), message.signature)
        if signer not in self.addresses:
            raise guest_agent.AgentError("not a key holder")
        return "key holder"


def test_sender_authentication_is_pluggable(tmp_path):
    holder = Account.create()
    agent = guest_agent.GuestAgent(
        guest_agent.GuestKeys(), secrets_dir=tmp_path / "s", ssh_dir=tmp_path / "ssh",
        tsm=tmp_path / "no", device=tmp_path / "no",
        senders=(guest_agent.RenterSignature(), KeyHolders(holder.address)),
    )  # fmt: skip
    agent.handle(bind_request())
    report_data = attest(agent)
    sealed = seal(identity(agent, report_data), RENTER, seq=1, secrets={"k": b"1"})
    by_holder = _sign_as(holder, agent, report_data, sealed)
    assert deliver(agent, sealed, signature=by_holder.hex())["ok"]
    by_node = _sign_as(NODE_KEY, agent, report_data, sealed)
    refused = deliver(agent, sealed, seq=2, signature=by_node.hex())
    assert (
        "not by the lease's renter" in refused["error"] and "not a key holder" in refused["error"]
    )


@pytest.mark.parametrize(
    "bad",
    [{"seq": 0}, {"seq": -1}, {"seq": 2**64}, {"seq": True}, {"seq": "1"}, {"signature": "00"},
     {"signature": "zz" * 65}, {"enc": "00"}, {"report_data": "00"}],
)  # fmt: skip
def test_malformed_sealed_fields_are_refused(bound, bad):
    report_data = attest(bound)
    sealed = seal(identity(bound, report_data), RENTER, seq=1, secrets={"x": b"1"})
    assert deliver(bound, sealed, **bad)["ok"] is False
    assert bound.seq == 0


@pytest.mark.parametrize(
    "request_",
    [{"op": "nope"}, {"op": "attest", "nonce": "zz"}, {"op": "attest"}, {"op": "bind"},
     {"op": "secrets", "report_data": "00"}, {"op": "status", "challenge": "00"}],
)  # fmt: skip
def test_bad_requests_get_an_error_answer_not_a_crash(bound, request_):
    answer = bound.handle(request_)
    assert answer["ok"] is False and answer["error"]


def test_an_os_error_is_an_error_answer_to_retry_not_the_agents_end(bound, tmp_path):
    # configfs-tsm present but failing (EIO, an entry without its files): the request fails,
    # the agent answers with the usual keys and stays up for the next request.
    bound.tsm = tmp_path / "tsm"
    bound.tsm.mkdir()
    answer = bound.handle({"op": "attest", "nonce": 0})
    assert answer["ok"] is False and answer["retry"] is True and "attest failed" in answer["error"]
    # Secrets that cannot be written (a full or broken tmpfs): an answer to retry, and the
    # seq stays where it was, so the same message is accepted when it comes again.
    bound.tsm = tmp_path / "no-tsm"
    report_data = attest(bound)
    (tmp_path / "secrets").write_text("not a directory")
    sealed = seal(identity(bound, report_data), RENTER, seq=1, secrets={"x": b"1"})
    answer = deliver(bound, sealed)
    assert answer["ok"] is False and answer["retry"] is True and bound.seq == 0
    (tmp_path / "secrets").unlink()
    assert deliver(bound, sealed)["ok"]


def test_any_error_of_one_request_line_is_answered_with_its_id(agent, monkeypatch):
    def broken(request):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(agent, "handle", broken)
    answer = guest_agent.answer_line(agent, json.dumps({"op": "hello", "id": "7"}).encode())
    assert answer == {"ok": False, "error": "request failed: unforeseen", "id": "7"}
    assert guest_agent.answer_line(agent, b"[1]")["ok"] is False
    assert guest_agent.answer_line(agent, b"{")["ok"] is False
    assert guest_agent.answer_line(agent, b"[" * 100_000)["ok"] is False


# --- status and signatures ---------------------------------------------------------------
def test_status_is_the_installed_seq_signed_by_the_attested_signer(bound):
    report_data = attest(bound)
    guest = identity(bound, report_data)
    challenge = os.urandom(32)
    status = bound.handle({"op": "status", "challenge": challenge.hex()})
    assert verify_status(guest, status, challenge) == 0
    assert deliver(bound, seal(guest, RENTER, seq=3, secrets={"x": b"1"}))["ok"]
    status = bound.handle({"op": "status", "challenge": challenge.hex()})
    assert verify_status(guest, status, challenge) == 3
    # A status the host made up (or an old one for another challenge) does not verify.
    from cvm.attestation.release import StatusRefused

    with pytest.raises(StatusRefused):
        verify_status(guest, {**status, "seq": 4}, challenge)
    with pytest.raises(StatusRefused):
        verify_status(guest, status, os.urandom(32))


ALL_HOST_OPS = ["hello", "bind", "attest", "secrets", "status", "sign_result", "sign",
                "result", "sign_message"]  # fmt: skip


def test_the_hosts_channel_cannot_get_a_result_signed_by_the_attested_signer(bound):
    """An operator that rents its own node must not make the guest vouch for data it chose:
    no op of the host's channel signs a GuestResult, whatever the host sends."""
    request_id, result = b"\x11" * 32, b"the operator's chosen result"
    fields = {"request": request_id.hex(), "result": result.hex(),
              "result_hash": guest_agent.keccak256(result).hex(), "challenge": request_id.hex(),
              "nonce": 0}  # fmt: skip
    wanted = guest_eip712.guest_result_message(CHAIN_ID, REGISTRY, LEASE, request_id, result)
    signer = "0x" + bound.keys.signer.address.hex()
    for op in ALL_HOST_OPS:
        answer = bound.handle({"op": op, **fields})
        for value in answer.values():
            if isinstance(value, str) and len(value) == 130:
                recovered = guest_eip712.recover(wanted, bytes.fromhex(value))
                assert recovered.lower() != signer, op
        assert op != "sign_result" or answer["ok"] is False
    # Inside the guest the same request is served.
    local = bound.handle_local({"op": "sign_result", **fields})
    assert guest_eip712.recover(wanted, bytes.fromhex(local["signature"])).lower() == signer


def test_results_are_signed_only_once_bound_and_with_the_hash_of_the_result(agent):
    request_id = b"\x22" * 32
    refused = agent.handle_local({"op": "sign_result", "request": request_id.hex(),
                                  "result": "00"})  # fmt: skip
    assert refused["ok"] is False and "bind first" in refused["error"]
    agent.handle(bind_request())
    answer = agent.handle_local({"op": "sign_result", "request": request_id.hex(),
                                 "result_hash": guest_agent.keccak256(b"").hex()})  # fmt: skip
    empty = agent.handle_local({"op": "sign_result", "request": request_id.hex(), "result": ""})
    assert answer["signature"] == empty["signature"]
    message = guest_eip712.guest_result_message(CHAIN_ID, REGISTRY, LEASE, request_id, b"")
    assert guest_eip712.recover(message, answer["signature"]).lower() == answer["signer"]


def test_the_signer_socket_is_root_only_and_answers_processes_in_the_guest(bound, tmp_path):
    path = tmp_path / "run" / "signer.sock"
    server = guest_agent.listen_local(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        def one(root_uid: int) -> None:
            conn, _ = server.accept()
            guest_agent.serve_local_connection(bound, conn, root_uid=root_uid)

        # The test's own uid plays root; any other uid is refused.
        for root_uid, expect_ok in ((os.getuid(), True), (os.getuid() + 1, False)):
            thread = threading.Thread(target=one, args=(root_uid,))
            thread.start()
            answer = guest_agent.ask_local({"op": "status"}, path)
            thread.join(timeout=30)
            assert answer["ok"] is expect_ok, answer
            assert expect_ok or answer["error"] == "root only"
    finally:
        server.close()


def test_the_agents_own_command_line_asks_the_socket(bound, tmp_path, monkeypatch, capsys):
    path = tmp_path / "signer.sock"
    server = guest_agent.listen_local(path)
    monkeypatch.setattr(guest_agent, "SIGNER_SOCKET", path)

    def one() -> None:
        conn, _ = server.accept()
        guest_agent.serve_local_connection(bound, conn, root_uid=os.getuid())

    try:
        thread = threading.Thread(target=one)
        thread.start()
        assert guest_agent.main(["status", "ab" * 32]) == 0
        thread.join(timeout=30)
        answer = json.loads(capsys.readouterr().out)
        assert answer["ok"] and answer["seq"] == 0 and answer["challenge"] == "ab" * 32
        assert guest_agent.main(["bogus"]) == 2
    finally:
        server.close()
