"""The cvm guest agent: runs inside the confidential VM as the first program after /init.

At boot it makes an ephemeral key pair (X25519 for HPKE, Ed25519 for the SSH host key) that
never leaves the guest; its public half, `guest_key = x25519 || ed25519`, is bound into
every report (REPORT_DATA[32:64] = sha256(guest_key)). The host talks to it over a
virtio-serial port, one JSON object per line, and is untrusted: it supplies the lease half
of REPORT_DATA, which verifiers check, never this agent. Reports come from configfs-tsm or
/dev/sev-guest on SEV-SNP hardware; without them the host's simulated AMD-SP signs (and
verifiers only accept that when they explicitly trust the simulated root). Secrets arrive
HPKE-sealed (RFC 9180) to the attested key and are written to a tmpfs.

Imports only what the image carries: the standard library, Debian's python3-cryptography
and pyhpke.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PORT_NAME = "org.cvm.agent"
TSM_REPORT = Path("/sys/kernel/config/tsm/report")
SEV_GUEST = Path("/dev/sev-guest")
SECRETS_DIR = Path("/run/cvm/secrets")
ROOT_SSH = Path("/root/.ssh")
HOST_KEY = Path("/etc/dropbear/dropbear_ed25519_host_key")
HPKE_INFO = b"cvm.secrets.v1"
REPORT_SIZE = 1184
REPORT_DATA_SIZE = 64
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
MAX_LINE = 1 << 20

# linux/sev-guest.h: struct snp_guest_request_ioctl is u8 msg_version, then three u64s
# (req_data, resp_data, exitinfo2): 32 bytes; SNP_GET_REPORT = _IOWR('S', 0x0, that).
SNP_GET_REPORT = (3 << 30) | (32 << 16) | (ord("S") << 8) | 0x0
SNP_REPORT_REQ_SIZE = 96  # user_data[64], vmpl u32, reserved[28]
SNP_REPORT_RESP_SIZE = 4000  # status u32, report_size u32, reserved[24], report


class AgentError(Exception):
    """A request the agent refuses or cannot serve; the message goes back to the host."""


def log(message: str) -> None:
    print(f"cvm-guest-agent: {message}", flush=True)


# --- keys --------------------------------------------------------------------------------
class GuestKeys:
    """The ephemeral keys of this boot; the private halves never leave this process."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.hpke_private = x25519.X25519PrivateKey.generate()
        self.ssh_private = ed25519.Ed25519PrivateKey.generate()
        raw = (Encoding.Raw, PublicFormat.Raw)
        self.public = self.hpke_private.public_key().public_bytes(
            *raw
        ) + self.ssh_private.public_key().public_bytes(*raw)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.public).digest()

    def ssh_host_key_openssh(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        return self.ssh_private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())

    def open_sealed(self, enc: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

        suite = CipherSuite.new(
            KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
        )
        key = KEMKey.from_pyca_cryptography_key(self.hpke_private)
        context = suite.create_recipient_context(enc, key, info=HPKE_INFO)
        return bytes(context.open(ciphertext, aad=aad))


# --- reports -----------------------------------------------------------------------------
Ioctl = Callable[[int, int, Any, bool], Any]


def report_via_tsm(root: Path, report_data: bytes, entry_name: str = "") -> tuple[bytes, bytes]:
    """A report through configfs-tsm: (report, auxblob with the certificates, maybe empty)."""
    entry = root / (entry_name or f"cvm-{os.getpid()}")
    entry.mkdir(exist_ok=True)
    try:
        provider = (entry / "provider").read_text().strip()
        if provider != "sev_guest":
            raise AgentError(f"configfs-tsm provider is {provider!r}, not sev_guest")
        (entry / "inblob").write_bytes(report_data)
        written = (entry / "generation").read_text().strip()
        report = (entry / "outblob").read_bytes()
        aux = entry / "auxblob"
        certs = aux.read_bytes() if aux.exists() else b""
        # Another writer between our write and our reads would have bumped the generation.
        if (entry / "generation").read_text().strip() != written:
            raise AgentError("configfs-tsm entry was written concurrently; retry")
    finally:
        try:
            entry.rmdir()
        except OSError:
            pass
    if len(report) < REPORT_SIZE:
        raise AgentError(f"configfs-tsm returned {len(report)} bytes, not a report")
    if report[0x50:0x90] != report_data:
        raise AgentError("configfs-tsm returned a report for another REPORT_DATA")
    return report[:REPORT_SIZE], certs


def report_via_sev_guest(device: Path, report_data: bytes, ioctl: Ioctl = fcntl.ioctl) -> bytes:
    """A report through the /dev/sev-guest SNP_GET_REPORT ioctl (VMPL 0)."""
    request = ctypes.create_string_buffer(report_data + bytes(SNP_REPORT_REQ_SIZE - 64))
    response = ctypes.create_string_buffer(SNP_REPORT_RESP_SIZE)
    argument = bytearray(
        struct.pack("<B7xQQQ", 1, ctypes.addressof(request), ctypes.addressof(response), 0)
    )
    fd = os.open(device, os.O_RDWR)
    try:
        ioctl(fd, SNP_GET_REPORT, argument, True)
    except OSError as exc:
        _, _, _, exitinfo2 = struct.unpack("<B7xQQQ", bytes(argument))
        raise AgentError(f"SNP_GET_REPORT failed: {exc} (exitinfo2 {exitinfo2:#x})") from exc
    finally:
        os.close(fd)
    status, size = struct.unpack_from("<II", response.raw, 0)
    if status != 0 or size < REPORT_SIZE:
        raise AgentError(f"SNP_GET_REPORT answered status {status:#x}, size {size}")
    report = response.raw[32 : 32 + REPORT_SIZE]
    if report[0x50:0x90] != report_data:
        raise AgentError("SNP_GET_REPORT returned a report for another REPORT_DATA")
    return report


def request_report(
    report_data: bytes, *, tsm: Path = TSM_REPORT, device: Path = SEV_GUEST
) -> dict[str, str]:
    """A report for `report_data` from whatever SEV-SNP interface this guest has.

    Without one the answer carries no report: the host's simulated AMD-SP signs instead."""
    if tsm.is_dir():
        report, certs = report_via_tsm(tsm, report_data)
        return {"source": "configfs-tsm", "report": report.hex(), "certs": certs.hex()}
    if device.exists():
        report = report_via_sev_guest(device, report_data)
        return {"source": "sev-guest", "report": report.hex(), "certs": ""}
    return {"source": "host", "report": "", "certs": ""}


# --- the agent ---------------------------------------------------------------------------
class GuestAgent:
    """Answers the host's requests; keeps which REPORT_DATA it has had signed."""

    def __init__(
        self,
        keys: GuestKeys,
        *,
        secrets_dir: Path = SECRETS_DIR,
        ssh_dir: Path = ROOT_SSH,
        tsm: Path = TSM_REPORT,
        device: Path = SEV_GUEST,
    ) -> None:
        self.keys = keys
        self.secrets_dir = secrets_dir
        self.ssh_dir = ssh_dir
        self.tsm = tsm
        self.device = device
        self.attested: set[bytes] = set()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "hello":
                return {"ok": True, "guest_key": self.keys.public.hex()}
            if op == "attest":
                return {"ok": True, **self.attest(_hex(request, "lease_digest", 32))}
            if op == "secrets":
                return {"ok": True, "installed": self.install(request)}
            raise AgentError(f"unknown op {op!r}")
        except AgentError as exc:
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            # configfs-tsm EIO, /dev/sev-guest that will not open, a full tmpfs: this request
            # failed, the agent lives on. `retry`: nothing was refused, ask again later.
            return {"ok": False, "error": f"{op} failed: {exc}", "retry": True}

    def attest(self, lease_digest: bytes) -> dict[str, str]:
        report_data = lease_digest + self.keys.digest
        answer = request_report(report_data, tsm=self.tsm, device=self.device)
        self.attested.add(report_data)
        log(f"report requested ({answer['source']})")
        return {**answer, "report_data": report_data.hex(), "guest_key": self.keys.public.hex()}

    def install(self, request: dict[str, Any]) -> list[str]:
        report_data = _hex(request, "report_data", REPORT_DATA_SIZE)
        if report_data not in self.attested:
            raise AgentError("secrets are sealed to a report this guest never made")
        try:
            plain = self.keys.open_sealed(
                _hex(request, "enc", 32), _hex(request, "ciphertext", None), report_data
            )
        except Exception as exc:  # pyhpke raises its own errors for a bad seal
            raise AgentError("the sealed secrets do not open with this guest's key") from exc
        try:
            payload = json.loads(plain)
            ssh_keys = payload["ssh_keys"]
            secrets = {name: base64.b64decode(v) for name, v in payload["secrets"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AgentError("the sealed payload is malformed") from exc
        for name in secrets:
            if not SECRET_NAME.match(name):
                raise AgentError(f"bad secret name {name!r}")
        installed = []
        if ssh_keys:
            self.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            lines = "".join(str(key).strip() + "\n" for key in ssh_keys)
            _write_private(self.ssh_dir / "authorized_keys", lines.encode())
            installed.append("ssh_keys")
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, value in secrets.items():
            _write_private(self.secrets_dir / name, value)
            installed.append(name)
        log(f"installed {', '.join(installed) or 'nothing'}")
        return installed


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _hex(request: dict[str, Any], name: str, size: int | None) -> bytes:
    value = request.get(name)
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if data is None or (size is not None and len(data) != size):
        raise AgentError(f"{name} must be {size or 'some'} bytes of hex")
    return data


# --- boot --------------------------------------------------------------------------------
def find_port(name: str = PORT_NAME) -> Path | None:
    for entry in Path("/sys/class/virtio-ports").glob("*"):
        try:
            if (entry / "name").read_text().strip() == name:
                return Path("/dev") / entry.name
        except OSError:
            continue
    return None


def start_sshd(keys: GuestKeys) -> None:
    """dropbear with the attested Ed25519 host key; key logins only."""
    HOST_KEY.parent.mkdir(parents=True, exist_ok=True)
    openssh = HOST_KEY.with_suffix(".openssh")
    _write_private(openssh, keys.ssh_host_key_openssh())
    subprocess.run(
        ["/usr/lib/dropbear/dropbearconvert", "openssh", "dropbear", str(openssh), str(HOST_KEY)],
        check=True,
        capture_output=True,
    )
    openssh.unlink()
    logfile = open("/run/cvm-dropbear.log", "ab")
    subprocess.run(
        ["/usr/sbin/dropbear", "-r", str(HOST_KEY), "-p", "22", "-s", "-E"],
        check=True,
        stdout=logfile,
        stderr=logfile,
    )
    log("sshd started (password logins off)")


def answer_line(agent: GuestAgent, line: bytes) -> dict[str, Any]:
    """The answer to one request line; never raises, since init starts the agent only once."""
    request_id = None
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("not an object")
        request_id = request.get("id")
        return {**agent.handle(request), "id": request_id}
    except ValueError as exc:
        return {"ok": False, "error": f"bad request: {exc}", "id": request_id}
    except Exception as exc:  # a bug or an error nobody foresaw: answer it, keep serving
        return {"ok": False, "error": f"request failed: {exc}", "id": request_id}


def serve(agent: GuestAgent, port: Path) -> None:
    fd = os.open(port, os.O_RDWR)
    buffer = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            time.sleep(0.1)  # no host on the other end yet
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            answer = answer_line(agent, line)
            try:
                os.write(fd, json.dumps(answer).encode() + b"\n")
            except OSError:
                pass
        if len(buffer) > MAX_LINE:
            buffer = b""


def main() -> int:
    keys = GuestKeys()
    log(f"guest key sha256 {keys.digest.hex()}")
    try:
        start_sshd(keys)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"sshd did not start: {exc}")
    port = None
    while port is None:
        port = find_port()
        if port is None:
            time.sleep(0.2)
    log(f"serving the host on {port}")
    serve(GuestAgent(keys), port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
