"""The one interface every launcher implements: launch, status, stop, running, report."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509

from cvm.attestation.binding import host_data
from node_agent.errors import LauncherError


class GuestState(StrEnum):
    """What a launcher sees of a lease's guest."""

    RUNNING = "running"
    STOPPED = "stopped"  # it existed and has ended (or was stopped)
    MISSING = "missing"  # the launcher knows nothing of it


@dataclass(frozen=True)
class HostBinding:
    """Whom a guest is launched for: its deployment and its lease's renter (from the chain).

    The launch sets HOST_DATA = `host_data(chain_id, registry, lease_id, renter)`, fixed for
    the guest's life, so the guest serves that one lease and obeys that one renter."""

    chain_id: int
    registry: str  # AttestationRegistry address
    renter: str

    def host_data(self, lease_id: int) -> bytes:
        return host_data(self.chain_id, self.registry, lease_id, self.renter)

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "registry": self.registry, "renter": self.renter}

    @classmethod
    def from_json(cls, value: Any) -> HostBinding:
        if not isinstance(value, dict):
            raise ValueError("a host binding is an object")
        binding = cls(int(value["chain_id"]), str(value["registry"]), str(value["renter"]))
        binding.host_data(0)  # raises ValueError for anything that is not a binding
        return binding


@dataclass(frozen=True)
class GuestSpec:
    """What to launch for a lease: the public spec from the chain."""

    lease_id: int
    vcpu: int
    memory_mib: int
    disk_gib: int
    expected_measurement: bytes  # 48 bytes: what the renter expects the guest to measure as
    image: str = ""  # image id (content address) to boot; "" for the launcher's default
    # Required by every launcher: a guest is never launched for nobody in particular.
    binding: HostBinding | None = None

    def host_binding(self) -> HostBinding:
        """The binding; LauncherError when the spec has none."""
        if self.binding is None:
            raise LauncherError(f"lease {self.lease_id}: no host binding (renter) to launch with")
        return self.binding


@dataclass(frozen=True)
class GuestInfo:
    """A guest as its launcher reports it."""

    lease_id: int
    state: GuestState
    guest_id: str = ""  # launcher-specific handle (a process id, a file name)


@dataclass(frozen=True)
class GuestReport:
    """An attestation report obtained for a guest, with what a verifier needs beside it."""

    report: bytes  # the raw 1184-byte SEV-SNP report
    vcek_der: bytes  # the certificate of the key that signed it
    cert_chain_pem: bytes  # ASK then ARK, PEM
    guest_key: bytes = b""  # the guest's public keys (GuestKey) that REPORT_DATA[32:64] binds


class Launcher(ABC):
    """Starts and stops one guest per lease, and gets attestation reports from them.

    Every method is idempotent: launching a running lease returns the running guest,
    stopping a stopped one does nothing. Guests outlive the agent process, so a restarted
    agent finds them through `running()`.
    """

    kind: str

    @abstractmethod
    def launch(self, spec: GuestSpec) -> GuestInfo:
        """Start the lease's guest unless it already runs."""

    @abstractmethod
    def status(self, lease_id: int) -> GuestInfo:
        """The guest's state now."""

    @abstractmethod
    def stop(self, lease_id: int) -> None:
        """Stop the guest and forget it; nothing happens if there is none."""

    def volume_refusal(self, lease_id: int, disk_gib: int, active: Mapping[int, int]) -> str | None:
        """Why this host cannot store the lease's `disk_gib` GiB data volume beside those of
        its `active` leases (lease id -> disk_gib), None if it can (or keeps no volumes)."""
        del lease_id, disk_gib, active
        return None

    def discard(self, lease_id: int) -> None:
        """Forget what outlives a guest of the lease (its data volume), once the lease is
        over for good: after `stop`, never on a relaunch. Nothing by default."""
        del lease_id

    def booted(self, lease_id: int, timeout_s: float) -> bool:
        """Whether the lease's guest has booted (its agent answers), waiting `timeout_s` at
        most; it is never asked for a report here. True by default: nothing to wait for."""
        del lease_id, timeout_s
        return True

    @abstractmethod
    def running(self) -> list[GuestInfo]:
        """Every guest of this launcher that runs now."""

    # The roots this launcher's reports chain to, for the node's own appraisal before it
    # submits: None for AMD's pinned roots (what the verifiers trust by default).
    trusted_roots: Sequence[x509.Certificate] | None = None

    @abstractmethod
    def get_report(self, lease_id: int, nonce: int) -> GuestReport:
        """A report from the guest's (real or simulated) AMD-SP for attestation `nonce` of
        the lease the guest was launched for: REPORT_DATA = build_report_data(chain, registry,
        lease, nonce, guest key), HOST_DATA = its launch binding."""

    def image_measurement(self, image_id: str, vcpu: int) -> bytes | None:
        """The launch measurement booting `image_id` with `vcpu` vCPUs gives on this host, or
        None when this launcher does not boot renters' images (or has no such image)."""
        del image_id, vcpu
        return None
