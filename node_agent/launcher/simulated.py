"""The `simulated` launcher: no VM, a guest is a record on disk; reports from the simulated AMD-SP.

The default where there is no SEV hardware. A "guest" is a small JSON file per lease, so
it outlives the agent like a real VM would, and the reconciler treats it the same way.
The report carries the lease's expected measurement: the simulated guest runs exactly
the image the renter asked for, and the HOST_DATA its launch set (lease and renter). Its
guest key is made at launch and kept for the guest's life, as a real guest's would be.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cvm.attestation.binding import build_report_data
from node_agent.errors import LauncherError
from node_agent.launcher.base import (
    GuestInfo,
    GuestReport,
    GuestSpec,
    GuestState,
    HostBinding,
    Launcher,
)
from node_agent.launcher.signer import ReportSigner, simulated_guest_key

_PREFIX = "lease-"


class SimulatedLauncher(Launcher):
    """Guests as files under `state_dir/lease-<id>.json`."""

    kind = "simulated"

    def __init__(self, state_dir: Path, signer: ReportSigner) -> None:
        self.state_dir = state_dir
        self.signer = signer
        ark = getattr(signer, "ark", None)
        self.trusted_roots = [ark] if ark is not None else None
        state_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, lease_id: int) -> Path:
        return self.state_dir / f"{_PREFIX}{lease_id}.json"

    def launch(self, spec: GuestSpec) -> GuestInfo:
        path = self._path(spec.lease_id)
        if path.exists():
            return self.status(spec.lease_id)
        binding = spec.host_binding()
        record = {
            "lease_id": spec.lease_id,
            "vcpu": spec.vcpu,
            "memory_mib": spec.memory_mib,
            "disk_gib": spec.disk_gib,
            "expected_measurement": spec.expected_measurement.hex(),
            "binding": binding.to_json(),
            "guest_key": simulated_guest_key().hex(),
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

    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        try:
            record = json.loads(self._path(lease_id).read_text())
            binding = HostBinding.from_json(record["binding"])
            guest_key = bytes.fromhex(record["guest_key"])
        except FileNotFoundError:
            raise LauncherError(f"lease {lease_id} has no running guest to attest") from None
        except (KeyError, ValueError, TypeError) as exc:
            # A record from before guests were bound: relaunched with a binding instead.
            raise LauncherError(f"lease {lease_id}: the guest's record has no binding") from exc
        report_data = build_report_data(
            binding.chain_id, binding.registry, lease_id, nonce, guest_key
        )
        signed = self.signer.sign_report(
            bytes.fromhex(record["expected_measurement"]), report_data, binding.host_data(lease_id)
        )
        return GuestReport(signed.report, signed.vcek_der, signed.cert_chain_pem, guest_key)
