"""The `simulated` launcher: no VM, a guest is a record on disk; reports from the simulated AMD-SP.

The default where there is no SEV hardware. A "guest" is a small JSON file per lease, so
it outlives the agent like a real VM would, and the reconciler treats it the same way.
The report carries the lease's expected measurement: the simulated guest runs exactly
the image the renter asked for. Like a real guest, it makes its keys at launch (an 84-byte
guest key: X25519 || Ed25519 || the address of its own secp256k1 "attested signer") and
binds SHA-256 of that key into REPORT_DATA[32:64] itself. Its private keys sit in the record
file: nothing about a simulated guest is confidential.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from eth_account import Account

from node_agent.errors import LauncherError
from node_agent.launcher.base import GuestInfo, GuestReport, GuestSpec, GuestState, Launcher
from node_agent.launcher.signer import ReportSigner

_PREFIX = "lease-"


class SimulatedLauncher(Launcher):
    """Guests as files under `state_dir/lease-<id>.json`."""

    kind = "simulated"

    def __init__(self, state_dir: Path, signer: ReportSigner) -> None:
        self.state_dir = state_dir
        self.signer = signer
        state_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, lease_id: int) -> Path:
        return self.state_dir / f"{_PREFIX}{lease_id}.json"

    def launch(self, spec: GuestSpec) -> GuestInfo:
        path = self._path(spec.lease_id)
        if path.exists():
            return self.status(spec.lease_id)
        record = {
            "lease_id": spec.lease_id,
            "vcpu": spec.vcpu,
            "memory_mib": spec.memory_mib,
            "disk_gib": spec.disk_gib,
            "expected_measurement": spec.expected_measurement.hex(),
            **_guest_keys(),
        }
        # Written whole then renamed: a crash never leaves half a guest behind.
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)
        return GuestInfo(spec.lease_id, GuestState.RUNNING, path.name)

    def status(self, lease_id: int) -> GuestInfo:
        path = self._path(lease_id)
        if not path.exists():
            return GuestInfo(lease_id, GuestState.MISSING)
        return GuestInfo(lease_id, GuestState.RUNNING, path.name)

    def stop(self, lease_id: int) -> None:
        self._path(lease_id).unlink(missing_ok=True)

    def running(self) -> list[GuestInfo]:
        found = []
        for path in sorted(self.state_dir.glob(f"{_PREFIX}*.json")):
            suffix = path.stem.removeprefix(_PREFIX)
            if suffix.isdigit():
                found.append(GuestInfo(int(suffix), GuestState.RUNNING, path.name))
        return found

    def get_report(self, lease_id: int, report_data: bytes) -> GuestReport:
        try:
            record = json.loads(self._path(lease_id).read_text())
        except FileNotFoundError:
            raise LauncherError(f"lease {lease_id} has no running guest to attest") from None
        guest_key = bytes.fromhex(record.get("guest_key", ""))
        if not guest_key:
            raise LauncherError(f"lease {lease_id}: the simulated guest has no guest key")
        # The guest, not the host, binds its key: REPORT_DATA[32:64] = SHA-256(guest key).
        bound = report_data[:32] + hashlib.sha256(guest_key).digest()
        signed = self.signer.sign_report(bytes.fromhex(record["expected_measurement"]), bound)
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, guest_key)


def _guest_keys() -> dict[str, str]:
    """A fresh 84-byte guest key and the signer's private key, as a simulated guest makes them."""
    raw = serialization.Encoding.Raw
    public = serialization.PublicFormat.Raw
    hpke = x25519.X25519PrivateKey.generate().public_key().public_bytes(raw, public)
    ssh = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(raw, public)
    signer = Account.create()
    guest_key = hpke + ssh + bytes.fromhex(signer.address[2:])
    return {"guest_key": guest_key.hex(), "signer_key": signer.key.hex()}
