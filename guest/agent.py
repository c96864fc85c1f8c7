"""The cvm guest agent: runs inside the confidential VM as the first program after /init.

At boot it makes its keys, which never leave the guest: X25519 (HPKE), Ed25519 (the SSH host
key), secp256k1 (the "attested signer", an Ethereum key for dApps) and ECDSA P-256 (the TLS
key its service ports terminate TLS with, in a self-signed certificate). Their public halves,
`guest_key = x25519 || ed25519 || signer address || sha256(TLS SubjectPublicKeyInfo DER)`
(116 bytes), are bound into every report (REPORT_DATA[32:64] = sha256(guest_key)).

The host talks to it over a virtio-serial port, one JSON object per line (protocol v2, see
docs/guest-agent.md), and is untrusted:
- `bind` names the lease and renter once for the guest's life. On SEV-SNP the guest checks
  them against the HOST_DATA the launch set (from a report of its own); a bind with other
  values is refused, so one guest serves one lease.
- `attest` takes only the nonce: the guest computes the lease digest of its bound lease.
- `secrets` opens HPKE-sealed messages only when the renter bound by HOST_DATA signed them
  (EIP-712) and their `seq` is above the last one installed (no replay, no rollback).
- `status` reports the installed seq, signed by the attested signer (a `GuestStatus`).
Results for dApps are signed (EIP-712 `GuestResult`) only on request of a process inside
the guest, over a root-only Unix socket: the host can never make the guest vouch for data
it chose.

Imports only what the image carries: the standard library, Debian's python3-cryptography,
python3-pycryptodome (keccak-256), python3-ecdsa (secp256k1) and pyhpke.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

try:  # in the guest: a sibling in /usr/lib/cvm; on the host (tests): the guest package
    import workload_runner  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from guest import workload_runner  # type: ignore[no-redef,unused-ignore]
try:  # the threshold key (issue 20): guest/keyshares.py, a sibling in the guest too
    from guest import keyshares
except ImportError:
    import keyshares  # type: ignore[no-redef]
try:  # the host's tests import the agent as part of the `guest` package
    from guest import volume as data_volume
except ImportError:  # in the guest: /usr/lib/cvm/volume.py, beside this file
    import volume as data_volume  # type: ignore[no-redef]
try:
    from guest import snapshot as guest_snapshot
except ImportError:  # in the guest: /usr/lib/cvm/snapshot.py
    import snapshot as guest_snapshot  # type: ignore[no-redef]

PORT_NAME = "org.cvm.agent"
TSM_REPORT = Path("/sys/kernel/config/tsm/report")
SEV_GUEST = Path("/dev/sev-guest")
SECRETS_DIR = Path("/run/cvm/secrets")
SIGNER_SOCKET = Path("/run/cvm/signer.sock")
ROOT_SSH = Path("/root/.ssh")
HOST_KEY = Path("/etc/dropbear/dropbear_ed25519_host_key")
HPKE_INFO = b"cvm.secrets.v1"
REPORT_SIZE = 1184
REPORT_DATA_SIZE = 64
HOST_DATA_OFFSET = 0xC0  # SEV-SNP ATTESTATION_REPORT.HOST_DATA, 32 bytes
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
MAX_LINE = 1 << 20
# The sealed secret that opens the encrypted data volume (32 random bytes from the renter's
# client); the guest takes it out of /run/cvm/secrets once read: the workload never sees it.
DISK_KEY = "cvm.disk_key"
MAX_ATTESTED = 64  # REPORT_DATA values remembered for sealed messages (the newest)
UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1

# linux/sev-guest.h: struct snp_guest_request_ioctl is u8 msg_version, then three u64s
# (req_data, resp_data, exitinfo2): 32 bytes; SNP_GET_REPORT = _IOWR('S', 0x0, that).
SNP_GET_REPORT = (3 << 30) | (32 << 16) | (ord("S") << 8) | 0x0
SNP_REPORT_REQ_SIZE = 96  # user_data[64], vmpl u32, reserved[28]
SNP_REPORT_RESP_SIZE = 4000  # status u32, report_size u32, reserved[24], report


class AgentError(Exception):
    """A request the agent refuses or cannot serve; the message goes back to the host."""


def log(message: str) -> None:
    print(f"cvm-guest-agent: {message}", flush=True)


# --- Ethereum primitives (the same encodings as cvm.attestation.binding and eth_account,
# written out here because the guest carries neither eth_abi nor eth_account) -------------
def keccak256(data: bytes) -> bytes:
    try:  # Debian's python3-pycryptodome installs the Cryptodome namespace
        from Cryptodome.Hash import keccak
    except ImportError:  # the PyPI wheel (the host's tests) installs Crypto
        from Crypto.Hash import keccak  # type: ignore[no-redef,unused-ignore]
    return bytes(keccak.new(digest_bits=256, data=data).digest())


def _uint(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: bytes) -> bytes:
    return bytes(12) + address


def _abi_string_tail(text: str) -> bytes:
    data = text.encode()
    return _uint(len(data)) + data + bytes(-len(data) % 32)


def _abi_encode_domain_tuple(domain: str, *words: bytes) -> bytes:
    """abi.encode(string, <static words>): the head's first word is the string's offset."""
    offset = 32 * (1 + len(words))
    return _uint(offset) + b"".join(words) + _abi_string_tail(domain)


def host_data(chain_id: int, registry: bytes, lease_id: int, renter: bytes) -> bytes:
    """keccak256(abi.encode("cvm.host.v1", chainId, registry, leaseId, renter))."""
    return keccak256(_abi_encode_domain_tuple(
        "cvm.host.v1", _uint(chain_id), _address_word(registry), _uint(lease_id),
        _address_word(renter)))  # fmt: skip


def lease_digest(chain_id: int, registry: bytes, lease_id: int, nonce: int) -> bytes:
    """keccak256(abi.encode("cvm.attest.v1", chainId, registry, leaseId, nonce))."""
    return keccak256(_abi_encode_domain_tuple(
        "cvm.attest.v1", _uint(chain_id), _address_word(registry), _uint(lease_id),
        _uint(nonce)))  # fmt: skip


# EIP-712 (domain "cvm.guest" v1 on the deployment's AttestationRegistry). Three structs, each
# with its own type hash, so a signature for one can never pass as another:
#   SealedSecrets: the renter authorises one sealed message to this lease's guest;
#   GuestStatus:   the guest vouches for the sequence number it has installed;
#   GuestResult:   the guest vouches for a result a process inside it asked it to sign.
DOMAIN_NAME = "cvm.guest"
DOMAIN_VERSION = "1"
_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
SEALED_TYPE = (
    b"SealedSecrets(uint256 leaseId,uint64 seq,bytes reportData,bytes enc,bytes ciphertext)"
)
STATUS_TYPE = b"GuestStatus(uint256 leaseId,uint64 seq,bytes32 challenge)"
RESULT_TYPE = b"GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)"


def domain_separator(chain_id: int, registry: bytes) -> bytes:
    return keccak256(
        keccak256(_DOMAIN_TYPE) + keccak256(DOMAIN_NAME.encode())
        + keccak256(DOMAIN_VERSION.encode()) + _uint(chain_id) + _address_word(registry)
    )  # fmt: skip


def typed_digest(separator: bytes, struct_hash: bytes) -> bytes:
    return keccak256(b"\x19\x01" + separator + struct_hash)


def sealed_struct_hash(
    lease_id: int, seq: int, report_data: bytes, enc: bytes, ciphertext: bytes
) -> bytes:
    return keccak256(
        keccak256(SEALED_TYPE) + _uint(lease_id) + _uint(seq) + keccak256(report_data)
        + keccak256(enc) + keccak256(ciphertext)
    )  # fmt: skip


def status_struct_hash(lease_id: int, seq: int, challenge: bytes) -> bytes:
    return keccak256(keccak256(STATUS_TYPE) + _uint(lease_id) + _uint(seq) + challenge)


def result_struct_hash(lease_id: int, request: bytes, result_hash: bytes) -> bytes:
    return keccak256(keccak256(RESULT_TYPE) + _uint(lease_id) + request + result_hash)


def _curve() -> Any:
    from ecdsa import SECP256k1

    return SECP256k1


def _address_of(verifying_key: Any) -> bytes:
    return keccak256(verifying_key.to_string("raw"))[12:]


def recover_address(digest: bytes, signature: bytes) -> bytes:
    """The address whose key made the 65-byte Ethereum signature (r || s || v) over `digest`;
    AgentError for a malformed one. Low s only (EIP-2), as ecrecover-based checks expect."""
    from ecdsa import VerifyingKey
    from ecdsa.util import sigdecode_string

    curve = _curve()
    if len(signature) != 65:
        raise AgentError("a signature is 65 bytes (r, s, v)")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    if v not in (0, 1) or not 0 < r < curve.order or not 0 < s <= curve.order // 2:
        raise AgentError("the signature is malformed (r, s out of range, high s, or bad v)")
    try:
        # ecdsa lists the key of the even R point first, the odd one second: v picks it.
        keys = VerifyingKey.from_public_key_recovery_with_digest(
            signature[:64], digest, curve, sigdecode=sigdecode_string
        )
        return _address_of(keys[v])
    except Exception as exc:  # ecdsa raises several types for points that do not exist
        raise AgentError("the signature does not recover to a key") from exc


class Signer:
    """The attested signer: a secp256k1 key made at boot that signs Ethereum-style."""

    def __init__(self) -> None:
        from ecdsa import SigningKey

        self._key = SigningKey.generate(curve=_curve())
        self.address = _address_of(self._key.get_verifying_key())

    def sign(self, digest: bytes) -> bytes:
        """r || s || v (v 27 or 28), deterministic (RFC 6979), low s."""
        from ecdsa.util import sigencode_strings

        order = _curve().order
        r_raw, s_raw = self._key.sign_digest_deterministic(
            digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
        )
        s = int.from_bytes(s_raw, "big")
        if s > order // 2:
            s = order - s
        body = r_raw + s.to_bytes(32, "big")
        for v in (27, 28):
            try:
                if recover_address(digest, body + bytes([v])) == self.address:
                    return body + bytes([v])
            except AgentError:
                continue
        raise AgentError("could not sign")  # not reachable for a valid key


# --- keys --------------------------------------------------------------------------------
class GuestKeys:
    """The keys of this boot; the private halves never leave this process."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.hpke_private = x25519.X25519PrivateKey.generate()
        self.ssh_private = ed25519.Ed25519PrivateKey.generate()
        self.signer = Signer()
        self.tls_private, self.tls_certificate_pem = _tls_key_and_certificate()
        spki = self.tls_private.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self.tls_spki_sha256 = hashlib.sha256(spki).digest()
        raw = (Encoding.Raw, PublicFormat.Raw)
        self.public = (
            self.hpke_private.public_key().public_bytes(*raw)
            + self.ssh_private.public_key().public_bytes(*raw)
            + self.signer.address
            + self.tls_spki_sha256
        )

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.public).digest()

    def tls_private_key_pem(self) -> bytes:
        """For the TLS front's SSLContext only (written to a root-only tmpfs file, then gone)."""
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        return self.tls_private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())

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


def _tls_key_and_certificate() -> tuple[Any, bytes]:
    """A P-256 key and a self-signed certificate for it. The certificate's names and dates
    carry no trust: clients pin the key (its SPKI hash is in the attested guest key), so the
    certificate is only the envelope TLS needs to present that key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cvm guest")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 30))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(Encoding.PEM)


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


# --- binding and who may send ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Binding:
    """The one lease this guest serves, as `bind` named it (and HOST_DATA confirmed on SNP)."""

    chain_id: int
    registry: bytes  # AttestationRegistry, 20 bytes
    lease_id: int
    renter: bytes  # 20 bytes

    @property
    def host_data(self) -> bytes:
        return host_data(self.chain_id, self.registry, self.lease_id, self.renter)

    @property
    def domain(self) -> bytes:
        return domain_separator(self.chain_id, self.registry)

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "registry": "0x" + self.registry.hex(),
            "lease_id": self.lease_id,
            "renter": "0x" + self.renter.hex(),
        }


@dataclass(frozen=True, slots=True)
class SealedMessage:
    """One sealed message as the host delivered it (nothing checked yet)."""

    report_data: bytes
    enc: bytes
    ciphertext: bytes
    seq: int
    signature: bytes

    def digest(self, binding: Binding) -> bytes:
        """What its sender signed: EIP-712 SealedSecrets on the bound lease's domain."""
        return typed_digest(
            binding.domain,
            sealed_struct_hash(
                binding.lease_id, self.seq, self.report_data, self.enc, self.ciphertext
            ),
        )


class SenderPolicy(Protocol):
    """Who may send sealed messages to this lease. `authorize` returns a name for the log
    when the message's signature is one this policy accepts, else raises AgentError."""

    def authorize(self, binding: Binding, message: SealedMessage) -> str: ...


class RenterSignature:
    """The renter bound by HOST_DATA, and nobody else: its EIP-712 signature is required.

    HPKE base mode authenticates nobody (anyone can seal to the guest's public key, the host
    first of all), so the signature is what makes a message the renter's."""

    def authorize(self, binding: Binding, message: SealedMessage) -> str:
        signer = recover_address(message.digest(binding), message.signature)
        if signer != binding.renter:
            raise AgentError(
                f"sealed message signed by 0x{signer.hex()}, not by the lease's renter"
                f" 0x{binding.renter.hex()}"
            )
        return "renter"


# --- the threshold key: the `keys` op (issue 20; guest/keyshares.py does the crypto) -----
class KeyServiceOps:
    """The `keys` op of GuestAgent: the renter-signed KeyManifest, the holders' releases,
    the renter's sealed bundle. Once t shares make the key its manifest commits to: the
    bundle's secrets go to /run/cvm/secrets like released ones, the disk key opens the data
    volume (`install_volume`: the snapshot restore hooks in there), the services start.

    State lives in `self.key_shares`; what installed is `self.key_shares.installed`
    (`keys`: the derived keys; `required_epoch`: what the holders have seen;
    `previous`: the derived keys of earlier key versions, for state sealed under them)."""

    binding: Binding | None
    keys: GuestKeys
    attested: OrderedDict[bytes, None]
    secrets_dir: Path
    runner: workload_runner.WorkloadRunner | None
    volume: data_volume.Volume
    find_volume: Callable[[], Path | None]
    workload_file: Path

    _bound: Callable[[str], Binding]  # GuestAgent's

    @property
    def key_shares(self) -> keyshares.KeyShares:
        shares = getattr(self, "_key_shares", None)
        if shares is None:
            shares = keyshares.KeyShares()
            self._key_shares = shares
        return shares

    def keys_op(self, request: dict[str, Any]) -> dict[str, Any]:
        binding = self._bound("keys")
        try:
            manifest = keyshares.Manifest.parse(request.get("manifest"))
        except keyshares.KeyShareError as exc:
            raise AgentError(str(exc)) from None
        if manifest.lease_id != binding.lease_id:
            raise AgentError(
                f"the key manifest is for lease {manifest.lease_id}, this guest serves"
                f" lease {binding.lease_id}"
            )
        signature = _hex({"s": str(request.get("signature", "")).removeprefix("0x")}, "s", 65)
        signer = recover_address(typed_digest(binding.domain, manifest.struct_hash()), signature)
        if signer != binding.renter:
            raise AgentError(
                f"key manifest signed by 0x{signer.hex()}, not by the lease's renter"
                f" 0x{binding.renter.hex()}"
            )
        bundle = None
        if request.get("bundle") is not None:
            try:
                bundle = keyshares._b64(request["bundle"], "bundle", keyshares.MAX_BUNDLE)
            except keyshares.KeyShareError as exc:
                raise AgentError(str(exc)) from None
        releases = request.get("releases", [])
        if not isinstance(releases, list):
            raise AgentError("releases must be a list")
        before = self.key_shares.installed
        had_bundle = before is not None and before.bundle is not None
        try:
            installed = self.key_shares.offer(
                manifest,
                releases,
                bundle,
                list(self.attested),
                keyshares.hpke_auth_opener(self.keys.hpke_private),
                (binding.chain_id, binding.registry),
                log=log,
            )
        except keyshares.KeyShareError as exc:
            raise AgentError(str(exc)) from None
        if installed is not None and installed is not before:
            if before is not None and before.manifest.key_version < manifest.key_version:
                # A rekey while running: this guest holds the old key itself; what was
                # sealed under it (the volume's keyslot, snapshots) stays readable.
                installed.previous.setdefault(before.manifest.key_version, before.keys)
                installed.previous.update(before.previous)
            self.install_keys(installed)
        elif installed is not None and not had_bundle and installed.bundle is not None:
            self._install_bundle(installed)  # the bundle came after the key
            if self.runner is not None:
                self.runner.wake()
        return {
            "shares": len(self.key_shares.shares),
            "threshold": manifest.threshold,
            "key_version": manifest.key_version,
            "installed": installed is not None,
            "required_epoch": installed.required_epoch if installed is not None else None,
        }

    def _install_bundle(self, installed: keyshares.Installed) -> list[str]:
        names = []
        if installed.bundle is not None and installed.bundle.secrets:
            self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name, value in installed.bundle.secrets.items():
                _write_private(self.secrets_dir / name, value)
                names.append(name)
        return names

    def install_keys(self, installed: keyshares.Installed) -> None:
        version = installed.manifest.key_version
        names = self._install_bundle(installed)
        log(
            f"key version {version} rebuilt from {len(self.key_shares.shares)} share(s)"
            f" (threshold {installed.manifest.threshold}); required epoch"
            f" {installed.required_epoch}; installed {', '.join(names) or 'no secrets'}"
        )
        self.install_volume(installed)
        if self.runner is not None:
            self.runner.wake()

    def install_volume(self, installed: keyshares.Installed) -> threading.Thread | None:
        """Open the data volume with the key's disk key (in a thread, as `open_disk`), then
        hand the snapshot keys and the required epoch to the snapshot code (guest/snapshot.py,
        when this agent has it: `hold_state` first, so services wait for the epoch check,
        `install_snapshot_keys` once the volume is mounted: use it, or restore)."""
        device = self.find_volume()
        if device is None:
            log("key installed but this guest has no data volume (serial cvm-data)")
            return None
        hold = getattr(self, "hold_state", None)
        if callable(hold):
            hold()
        mountpoint = data_volume.workload_mount(self.workload_file)
        previous = [k.disk for _v, k in sorted(installed.previous.items(), reverse=True)]
        worker = threading.Thread(
            target=self._open_keyed_disk,
            args=(installed, previous, device, mountpoint),
            name="cvm-volume",
            daemon=True,
        )
        worker.start()
        return worker

    def _open_keyed_disk(
        self,
        installed: keyshares.Installed,
        previous: list[bytes],
        device: Path,
        mountpoint: Path,
    ) -> None:
        key = installed.keys.disk
        try:
            try:
                outcome = self.volume.open(key, device, mountpoint)
            except data_volume.VolumeError:
                if not previous:
                    raise
                outcome = self._rekey_volume(key, previous, device, mountpoint)
        except data_volume.VolumeError as exc:
            log(f"data volume not opened: {exc}")
            return
        log(f"data volume {outcome} and mounted at {mountpoint}")
        self._install_snapshot_keys(installed)
        if self.runner is not None:
            self.runner.wake()

    def _install_snapshot_keys(self, installed: keyshares.Installed) -> None:
        install = getattr(self, "install_snapshot_keys", None)
        snapshot_module = globals().get("guest_snapshot")  # the snapshot code's, once merged
        if not callable(install) or snapshot_module is None or self.binding is None:
            return
        binding, keys = self.binding, installed.keys
        try:
            state = install(
                snapshot_module.SnapshotKeys(
                    binding.chain_id,
                    binding.registry,
                    binding.lease_id,
                    installed.manifest.key_version,
                    keys.snapshot,
                    keys.snapshot_nonce,
                    keys.epoch_seed,
                    installed.required_epoch,
                    number_above=installed.epoch_seen,
                )
            )
        except Exception as exc:  # the snapshot code's own errors: logged, the agent lives on
            log(f"snapshot keys not installed: {exc}")
            return
        log(f"snapshot state: {state}")

    def _rekey_volume(
        self, key: bytes, previous: list[bytes], device: Path, mountpoint: Path
    ) -> str:
        """The volume was sealed under an earlier key version: open it with that one, then
        give it a keyslot of the new disk key and drop the old one (the LUKS volume key
        stays; the key a holder set could rebuild before the rekey no longer opens it)."""
        for old in previous:
            try:
                outcome = self.volume.open(old, device, mountpoint)
            except data_volume.VolumeError:
                continue
            rekey_keyslot(self.volume, device, old, key)
            log("data volume re-keyed to the new key version")
            return outcome
        raise data_volume.VolumeError(
            "neither this key version's disk key nor an earlier one opens the volume"
        )


def rekey_keyslot(volume: data_volume.Volume, device: Path, old: bytes, new: bytes) -> None:
    """luksAddKey the new disk key (authorised by the old one), then luksRemoveKey the old.
    The new key goes through a root-only file on the guest's tmpfs (cryptsetup reads one key
    from standard input only), removed at once; keys never appear on a command line."""
    keyfile = Path("/run/cvm") / ".new-disk-key"
    keyfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        _write_private(keyfile, new)
        added = volume.runner(rekey_add_args(device, keyfile), old, data_volume.TIMEOUT_S)
    finally:
        keyfile.unlink(missing_ok=True)
    if added.returncode != 0:
        raise data_volume.VolumeError(
            f"adding the new key version's keyslot failed ({added.returncode})"
        )
    removed = volume.runner(rekey_remove_args(device), old, data_volume.TIMEOUT_S)
    if removed.returncode != 0:
        log(f"the old key version's keyslot was not removed ({removed.returncode})")


def rekey_add_args(device: Path, new_keyfile: Path) -> list[str]:
    return ["cryptsetup", "luksAddKey", "--batch-mode", "--type", "luks2",
            "--key-file", "-", "--keyfile-size", str(data_volume.KEY_SIZE),
            "--new-keyfile-size", str(data_volume.KEY_SIZE),
            "--pbkdf", "pbkdf2", "--hash", "sha256",
            "--pbkdf-force-iterations", str(data_volume.PBKDF_ITERATIONS),
            str(device), str(new_keyfile)]  # fmt: skip


def rekey_remove_args(device: Path) -> list[str]:
    return ["cryptsetup", "luksRemoveKey", "--batch-mode", "--type", "luks2", "--key-file",
            "-", "--keyfile-size", str(data_volume.KEY_SIZE), str(device)]  # fmt: skip


# --- end of the threshold key block -------------------------------------------------------


# --- the agent ---------------------------------------------------------------------------
class GuestAgent(KeyServiceOps):
    """Answers the host's requests (`handle`) and the guest's own processes' (`handle_local`).

    State: the binding (once), the REPORT_DATA values it has had signed, and the last
    installed sequence number. One lock: the host's channel and the signer socket are
    served by different threads."""

    def __init__(
        self,
        keys: GuestKeys,
        *,
        secrets_dir: Path = SECRETS_DIR,
        ssh_dir: Path = ROOT_SSH,
        tsm: Path = TSM_REPORT,
        device: Path = SEV_GUEST,
        senders: Sequence[SenderPolicy] = (RenterSignature(),),
        runner: workload_runner.WorkloadRunner | None = None,
        volume: data_volume.Volume | None = None,
        find_volume: Callable[[], Path | None] = data_volume.find_device,
        workload_file: Path = data_volume.WORKLOAD_FILE,
        snapshots: guest_snapshot.SnapshotManager | None = None,
    ) -> None:
        self.keys = keys
        self.secrets_dir = secrets_dir
        self.ssh_dir = ssh_dir
        self.tsm = tsm
        self.device = device
        self.senders = tuple(senders)
        self.runner = runner  # the workload's supervisor (an image with a workload only)
        self.volume = volume if volume is not None else data_volume.default_volume()
        self.find_volume = find_volume
        self.workload_file = workload_file
        self.binding: Binding | None = None
        self.attested: OrderedDict[bytes, None] = OrderedDict()
        self.seq = 0  # the last installed sequence number; 0: nothing yet
        self.lock = threading.Lock()
        self._init_snapshots(snapshots)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The host's channel. Nothing here signs with the attested signer but `status`,
        whose struct only states this guest's own sequence number."""
        op = request.get("op")
        if op in SNAPSHOT_OPS:
            return self.handle_snapshot(request)  # its own lock: a long snapshot holds no other op
        try:
            with self.lock:
                if op == "hello":
                    bound = self.binding.to_json() if self.binding else None
                    return {"ok": True, "guest_key": self.keys.public.hex(), "bound": bound}
                if op == "bind":
                    return {"ok": True, "host_data": self.bind(request).hex()}
                if op == "attest":
                    return {"ok": True, **self.attest(_uint_field(request, "nonce", UINT256_MAX))}
                if op == "secrets":
                    installed = self.install(request)
                    self.after_install(installed)
                    return {"ok": True, "installed": installed, "seq": self.seq}
                if op == "keys":  # the threshold key (KeyServiceOps)
                    return {"ok": True, **self.keys_op(request)}
                if op == "status":
                    return {
                        "ok": True,
                        **self.status(request),
                        "services": self.services(),
                        **self.snapshots.status(),
                    }
            raise AgentError(f"unknown op {op!r}")
        except AgentError as exc:
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            # configfs-tsm EIO, /dev/sev-guest that will not open, a full tmpfs: this request
            # failed, the agent lives on. `retry`: nothing was refused, ask again later.
            return {"ok": False, "error": f"{op} failed: {exc}", "retry": True}

    def handle_local(self, request: dict[str, Any]) -> dict[str, Any]:
        """A process inside the guest (root, over SIGNER_SOCKET): results to sign, status."""
        op = request.get("op")
        try:
            with self.lock:
                if op == "sign_result":
                    return {"ok": True, **self.sign_result(request)}
                if op == "status":
                    return {"ok": True, **self.status(request), "services": self.services()}
                if op == "hello":
                    bound = self.binding.to_json() if self.binding else None
                    return {"ok": True, "guest_key": self.keys.public.hex(), "bound": bound}
            raise AgentError(f"unknown op {op!r}")
        except AgentError as exc:
            return {"ok": False, "error": str(exc)}

    # -- bind and attest ---------------------------------------------------------------
    def bind(self, request: dict[str, Any]) -> bytes:
        wanted = Binding(
            _uint_field(request, "chain_id", UINT256_MAX),
            _address_field(request, "registry"),
            _uint_field(request, "lease_id", UINT256_MAX),
            _address_field(request, "renter"),
        )
        if self.binding is not None:
            if wanted != self.binding:
                # One guest, one lease: its keys, reports and secrets belong to that lease.
                raise AgentError(
                    f"this guest is bound to lease {self.binding.lease_id} of renter"
                    f" 0x{self.binding.renter.hex()} for its life"
                )
            return self.binding.host_data
        if not any(wanted.renter):
            raise AgentError("renter must not be the zero address")
        expected = wanted.host_data
        launched = self.launch_host_data()
        if launched is not None and launched != expected:
            raise AgentError(
                f"HOST_DATA of this launch is {launched.hex()}, not {expected.hex()} for"
                f" lease {wanted.lease_id} of 0x{wanted.renter.hex()}"
            )
        self.binding = wanted
        log(
            f"bound to lease {wanted.lease_id} (HOST_DATA {'checked' if launched else 'unchecked'})"
        )
        return expected

    def launch_host_data(self) -> bytes | None:
        """HOST_DATA from a report of this guest's own, or None without SEV-SNP (the host's
        simulated AMD-SP signs then, and nothing in such a guest is confidential anyway)."""
        answer = request_report(bytes(REPORT_DATA_SIZE), tsm=self.tsm, device=self.device)
        if not answer["report"]:
            return None
        report = bytes.fromhex(answer["report"])
        return report[HOST_DATA_OFFSET : HOST_DATA_OFFSET + 32]

    def _bound(self, what: str) -> Binding:
        if self.binding is None:
            raise AgentError(f"{what} needs a bound lease: bind first")
        return self.binding

    def attest(self, nonce: int) -> dict[str, str]:
        binding = self._bound("attest")
        digest = lease_digest(binding.chain_id, binding.registry, binding.lease_id, nonce)
        report_data = digest + self.keys.digest
        answer = request_report(report_data, tsm=self.tsm, device=self.device)
        self.attested[report_data] = None
        self.attested.move_to_end(report_data)
        while len(self.attested) > MAX_ATTESTED:
            self.attested.popitem(last=False)
        log(f"report requested for lease {binding.lease_id} nonce {nonce} ({answer['source']})")
        return {**answer, "report_data": report_data.hex(), "guest_key": self.keys.public.hex()}

    # -- sealed messages ---------------------------------------------------------------
    def install(self, request: dict[str, Any]) -> list[str]:
        binding = self._bound("secrets")
        message = SealedMessage(
            report_data=_hex(request, "report_data", REPORT_DATA_SIZE),
            enc=_hex(request, "enc", 32),
            ciphertext=_hex(request, "ciphertext", None),
            seq=_uint_field(request, "seq", UINT64_MAX),
            signature=_hex(request, "signature", 65),
        )
        if message.report_data not in self.attested:
            raise AgentError("secrets are sealed to a report this guest never made")
        if message.seq <= self.seq:
            # A replay would bring back a revoked SSH key or a rotated secret.
            raise AgentError(
                f"sealed message seq {message.seq} is not above the installed {self.seq}:"
                " a replay or an older message"
            )
        sender = self.authorize(binding, message)
        try:
            plain = self.keys.open_sealed(message.enc, message.ciphertext, message.report_data)
        except Exception as exc:  # pyhpke raises its own errors for a bad seal
            raise AgentError("the sealed secrets do not open with this guest's key") from exc
        ssh_keys, secrets = _payload(plain)
        installed = []
        if ssh_keys:
            self.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            lines = "".join(key + "\n" for key in ssh_keys)
            _write_private(self.ssh_dir / "authorized_keys", lines.encode())
            installed.append("ssh_keys")
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, value in secrets.items():
            _write_private(self.secrets_dir / name, value)
            installed.append(name)
        # Only once everything is written: a failed write is retried with the same seq.
        self.seq = message.seq
        log(f"seq {message.seq} from the {sender}: installed {', '.join(installed) or 'nothing'}")
        return installed

    def after_install(self, installed: list[str]) -> None:
        """What newly installed secrets unlock: first the encrypted volume (its key is a
        secret; it opens in a thread and wakes the services when mounted), then the
        workload's services that waited for secrets only."""
        if DISK_KEY in installed:
            self.open_disk()
        if self.runner is not None:
            self.runner.wake()

    def services(self) -> dict[str, dict[str, Any]]:
        """The workload's services: {name: {"state", "restarts", ...}}; {} without one."""
        return self.runner.status() if self.runner is not None else {}

    def open_disk(self, *, wait: bool = False) -> threading.Thread | None:
        """Open and mount the data volume with the installed disk key, in a thread (a first
        format takes a while under emulation; the host's channel does not wait for it). The
        key file is removed first: the key lives on only in the kernel's dm-crypt table."""
        path = self.secrets_dir / DISK_KEY
        try:
            key = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        device = self.find_volume()
        if device is None:
            log(f"{DISK_KEY} installed but this guest has no data volume (serial cvm-data)")
            return None
        mountpoint = data_volume.workload_mount(self.workload_file)
        worker = threading.Thread(
            target=self._open_disk, args=(key, device, mountpoint), name="cvm-volume", daemon=True
        )
        worker.start()
        if wait:
            worker.join()
        return worker

    def _open_disk(self, key: bytes, device: Path, mountpoint: Path) -> None:
        try:
            outcome = self.volume.open(key, device, mountpoint)
        except data_volume.VolumeError as exc:
            log(f"data volume not opened: {exc}")
            return
        log(f"data volume {outcome} and mounted at {mountpoint}")
        if self.runner is not None:
            self.runner.wake()  # services that waited for the disk

    def authorize(self, binding: Binding, message: SealedMessage) -> str:
        refusals = []
        for policy in self.senders:
            try:
                return policy.authorize(binding, message)
            except AgentError as exc:
                refusals.append(str(exc))
        raise AgentError("; ".join(refusals) or "no sender may send sealed messages")

    # -- signatures by the attested signer ----------------------------------------------
    def status(self, request: dict[str, Any]) -> dict[str, Any]:
        """The installed seq, signed (EIP-712 GuestStatus) so the renter's client can tell
        an update that never arrived. `challenge` (32 bytes) lets the asker check freshness."""
        binding = self._bound("status")
        challenge = _hex(request, "challenge", 32) if "challenge" in request else bytes(32)
        digest = typed_digest(
            binding.domain, status_struct_hash(binding.lease_id, self.seq, challenge)
        )
        return {
            "lease_id": binding.lease_id,
            "seq": self.seq,
            "challenge": challenge.hex(),
            "signer": "0x" + self.keys.signer.address.hex(),
            "signature": self.keys.signer.sign(digest).hex(),
            # Not covered by the signature (GuestStatus signs the seq only): the guest's word
            # over the attested SSH channel, the node's relay otherwise.
            "volume": self.volume.status(),
        }

    def sign_result(self, request: dict[str, Any]) -> dict[str, Any]:
        """EIP-712 GuestResult(leaseId, request, keccak256(result)) for a process in the guest."""
        binding = self._bound("sign_result")
        request_id = _hex(request, "request", 32)
        if "result" in request:
            result_hash = keccak256(_hex(request, "result", None, allow_empty=True))
        else:
            result_hash = _hex(request, "result_hash", 32)
        digest = typed_digest(
            binding.domain, result_struct_hash(binding.lease_id, request_id, result_hash)
        )
        return {
            "lease_id": binding.lease_id,
            "request": request_id.hex(),
            "result_hash": result_hash.hex(),
            "signer": "0x" + self.keys.signer.address.hex(),
            "signature": self.keys.signer.sign(digest).hex(),
        }

    # --- snapshots (i-snapshots) ---------------------------------------------------------
    # Rollback-proof snapshots of the workload's declared disk (guest/snapshot.py). The
    # `keys` op meets them here: `hold_state()` before it opens the volume with the
    # threshold-derived disk key (services wait), `install_snapshot_keys(keys)` once the
    # volume is mounted (the volume's epoch against the required one: use it, or restore).
    def _init_snapshots(self, snapshots: guest_snapshot.SnapshotManager | None) -> None:
        if snapshots is None:
            disk = self.runner.workload.disk_mount if self.runner is not None else None
            snapshots = guest_snapshot.SnapshotManager(Path(disk) if disk else None)
        self.snapshots = snapshots
        if snapshots.on_ready is None:
            snapshots.on_ready = self._wake_runner
        if self.runner is not None:
            # Services wait for the disk to be mounted AND allowed (not stale, not restoring).
            mounted = self.runner.disk_mounted
            self.runner.disk_mounted = lambda path: snapshots.ready() and mounted(path)

    def _wake_runner(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def hold_state(self) -> None:
        """Services wait until `install_snapshot_keys` has checked the volume's epoch."""
        self.snapshots.hold()

    def install_snapshot_keys(self, keys: guest_snapshot.SnapshotKeys) -> dict[str, Any]:
        """The root-derived snapshot keys and required epoch, once the volume is mounted:
        {"restore_needed", "required_epoch", "epoch"}."""
        return self.snapshots.install(keys)

    def handle_snapshot(self, request: dict[str, Any]) -> dict[str, Any]:
        """snapshot, snapshot_chunk, snapshot_manifest, restore_manifest, restore_chunk,
        restore_finish (docs/guest-agent.md "Snapshots")."""
        op = request.get("op")
        snapshots = self.snapshots
        try:
            if op == "snapshot_status":  # status's three fields, without signing anything
                return {"ok": True, **snapshots.status()}
            if op == "snapshot":
                return {"ok": True, **snapshots.snapshot()}
            if op == "snapshot_chunk":
                chunk_id = _chunk_id(request)
                data = snapshots.chunk(chunk_id)
                return {"ok": True, "chunk": chunk_id, "data": base64.b64encode(data).decode()}
            if op == "snapshot_manifest":
                wanted = _uint_field(request, "epoch", UINT64_MAX) if "epoch" in request else None
                epoch, sealed = snapshots.manifest(wanted)
                return {"ok": True, "epoch": epoch, "data": base64.b64encode(sealed).decode()}
            if op == "restore_manifest":
                epoch = _uint_field(request, "epoch", UINT64_MAX)
                sealed = _b64_field(request, "data", guest_snapshot.MAX_MANIFEST_BYTES)
                return {"ok": True, "need": snapshots.restore_manifest(epoch, sealed)}
            if op == "restore_chunk":
                chunk_id = _chunk_id(request)
                data = _b64_field(request, "data", guest_snapshot.CHUNK_SIZE + 28)
                return {"ok": True, "remaining": snapshots.restore_chunk(chunk_id, data)}
            if op == "restore_finish":
                return {"ok": True, **snapshots.restore_finish()}
            raise AgentError(f"unknown op {op!r}")
        except (AgentError, guest_snapshot.SnapshotError) as exc:
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            return {"ok": False, "error": f"{op} failed: {exc}", "retry": True}


SNAPSHOT_OPS = frozenset(
    {"snapshot_status", "snapshot", "snapshot_chunk", "snapshot_manifest", "restore_manifest",
     "restore_chunk", "restore_finish"}
)  # fmt: skip


def _chunk_id(request: dict[str, Any]) -> str:
    # "chunk", not "id": every request's "id" is the channel's own (echoed in the answer).
    value = request.get("chunk")
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise AgentError("chunk must be a chunk id (64 lowercase hex digits)")
    return value


def _b64_field(request: dict[str, Any], name: str, max_bytes: int) -> bytes:
    value = request.get(name)
    if not isinstance(value, str) or len(value) > 4 * (max_bytes // 3 + 1):
        raise AgentError(f"{name} must be base64 of at most {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise AgentError(f"{name} is not base64") from None
    if not data or len(data) > max_bytes:
        raise AgentError(f"{name} must be base64 of 1 to {max_bytes} bytes")
    return data


# --- end of snapshots (i-snapshots) ------------------------------------------------------


def _payload(plain: bytes) -> tuple[list[str], dict[str, bytes]]:
    """The decrypted payload: SSH public key lines and named secrets, checked."""
    try:
        payload = json.loads(plain)
        ssh_keys = payload["ssh_keys"]
        raw = payload["secrets"]
        if not isinstance(ssh_keys, list) or not isinstance(raw, dict):
            raise TypeError("ssh_keys must be a list, secrets an object")
        secrets = {name: base64.b64decode(value, validate=True) for name, value in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AgentError("the sealed payload is malformed") from exc
    keys = []
    for key in ssh_keys:
        if not isinstance(key, str) or "\n" in key.strip() or "\r" in key:
            raise AgentError("an SSH key must be one line")
        keys.append(key.strip())
    for name in secrets:
        if not SECRET_NAME.match(name):
            raise AgentError(f"bad secret name {name!r}")
    return keys, secrets


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _hex(
    request: dict[str, Any], name: str, size: int | None, *, allow_empty: bool = False
) -> bytes:
    value = request.get(name)
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if data is None or (size is not None and len(data) != size) or (not data and not allow_empty):
        raise AgentError(f"{name} must be {size or 'some'} bytes of hex")
    return data


def _uint_field(request: dict[str, Any], name: str, maximum: int) -> int:
    value = request.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise AgentError(f"{name} must be an integer from 0 to {maximum}")
    return value


def _address_field(request: dict[str, Any], name: str) -> bytes:
    value = request.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        raise AgentError(f"{name} must be a 0x-prefixed 20-byte address")
    return bytes.fromhex(value[2:])


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


def start_tls_front(keys: GuestKeys) -> None:
    """TLS with the attested key in front of the workload's ports (guest/tls_front.py)."""
    try:
        import tls_front  # type: ignore[import-not-found,unused-ignore]  # /usr/lib/cvm sibling
    except ImportError:
        from guest import tls_front  # the host's tests run the agent as a package
    try:
        front = tls_front.start(keys.tls_certificate_pem, keys.tls_private_key_pem(), log=log)
    except (OSError, tls_front.FrontError) as exc:
        log(f"the TLS front did not start: {exc}")
        return
    if front is not None:
        log(f"TLS front on {len(front.listening)} port(s), key sha256/"
            f"{base64.b64encode(keys.tls_spki_sha256).decode()}")  # fmt: skip


def answer_line(
    agent: GuestAgent,
    line: bytes,
    handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The answer to one request line; never raises, since init starts the agent only once.
    `handler`: agent.handle (the host's channel, the default) or agent.handle_local."""
    request_id = None
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("not an object")
        request_id = request.get("id")
        return {**(handler or agent.handle)(request), "id": request_id}
    except ValueError as exc:
        return {"ok": False, "error": f"bad request: {exc}", "id": request_id}
    except Exception as exc:  # a bug or an error nobody foresaw: answer it, keep serving
        return {"ok": False, "error": f"request failed: {exc}", "id": request_id}


# --- the signer socket: for processes inside the guest only ------------------------------
def listen_local(path: Path = SIGNER_SOCKET) -> socket.socket:
    """The Unix socket processes in the guest ask for signatures on: root only (mode 0600,
    and the peer's uid is checked too). The host has no way to it: its only channel is the
    virtio-serial port, which never signs a result."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    previous = os.umask(0o177)  # created 0600: never a moment when others could connect
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
    finally:
        os.umask(previous)
    server.listen(8)
    return server


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def serve_local_connection(agent: GuestAgent, conn: socket.socket, *, root_uid: int = 0) -> None:
    """One request line from a process in the guest, one answer line."""
    with conn:
        conn.settimeout(10)
        try:
            buffer = b""
            while b"\n" not in buffer and len(buffer) <= MAX_LINE:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buffer += chunk
            if peer_uid(conn) != root_uid:
                answer: dict[str, Any] = {"ok": False, "error": "root only"}
            elif len(buffer) > MAX_LINE:
                answer = {"ok": False, "error": "request too large"}
            else:
                answer = answer_line(agent, buffer.split(b"\n", 1)[0], agent.handle_local)
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass


def serve_local(agent: GuestAgent, server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            time.sleep(0.1)
            continue
        threading.Thread(target=serve_local_connection, args=(agent, conn), daemon=True).start()


def ask_local(request: dict[str, Any], path: Path = SIGNER_SOCKET) -> dict[str, Any]:
    """A request to the agent's signer socket (for `agent.py status|sign-result` in the guest)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(120)  # pure-Python secp256k1 under emulation is slow
        conn.connect(str(path))
        conn.sendall(json.dumps(request).encode() + b"\n")
        buffer = b""
        while b"\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buffer += chunk
    answer = json.loads(buffer.split(b"\n", 1)[0])
    if not isinstance(answer, dict):
        raise AgentError("the agent's answer is not an object")
    return answer


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


USAGE = """usage (inside the guest, as root):
  agent.py                        run the agent (what /init starts)
  agent.py status [CHALLENGE]     the installed seq, signed by the attested signer (JSON)
  agent.py sign-result REQUEST    sign keccak256(stdin) as GuestResult for REQUEST (32 bytes hex)
"""


def client(argv: list[str]) -> int:
    """`agent.py status|sign-result`: ask the running agent over the signer socket."""
    command, args = argv[0], argv[1:]
    if command == "status" and len(args) <= 1:
        request: dict[str, Any] = {"op": "status"}
        if args:
            request["challenge"] = args[0].removeprefix("0x")
    elif command == "sign-result" and len(args) == 1:
        result = sys.stdin.buffer.read(MAX_LINE // 2)
        request = {
            "op": "sign_result",
            "request": args[0].removeprefix("0x"),
            "result": result.hex(),
        }
    else:
        sys.stderr.write(USAGE)
        return 2
    try:
        answer = ask_local(request, SIGNER_SOCKET)
    except (OSError, ValueError, AgentError) as exc:
        sys.stderr.write(f"cvm-guest-agent: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0 if answer.get("ok") else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        return client(argv)
    keys = GuestKeys()
    log(f"guest key sha256 {keys.digest.hex()}, signer 0x{keys.signer.address.hex()}")
    try:
        start_sshd(keys)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"sshd did not start: {exc}")
    start_tls_front(keys)
    runner = None
    try:
        runner = workload_runner.load_runner()
    except workload_runner.WorkloadError as exc:
        log(f"the workload will not run: {exc}")
    if runner is not None:
        runner.start()
        waiting = runner.missing()
        log(f"workload {runner.workload.name}: {len(runner.services)} service(s)"
            + (f", waiting for {', '.join(waiting)}" if waiting else ""))  # fmt: skip
    agent = GuestAgent(keys, runner=runner)
    try:
        server = listen_local()
        threading.Thread(target=serve_local, args=(agent, server), daemon=True).start()
        log(f"signing results for processes in the guest on {SIGNER_SOCKET}")
    except OSError as exc:
        log(f"the signer socket did not start: {exc}")
    port = None
    while port is None:
        port = find_port()
        if port is None:
            time.sleep(0.2)
    log(f"serving the host on {port}")
    serve(agent, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
