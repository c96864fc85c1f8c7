"""The one interface every launcher implements: launch, status, stop, running, report."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum


class GuestState(StrEnum):
    """What a launcher sees of a lease's guest."""

    RUNNING = "running"
    STOPPED = "stopped"  # it existed and has ended (or was stopped)
    MISSING = "missing"  # the launcher knows nothing of it


@dataclass(frozen=True)
class GuestSpec:
    """What to launch for a lease: the public spec from the chain."""

    lease_id: int
    vcpu: int
    memory_mib: int
    disk_gib: int
    expected_measurement: bytes  # 48 bytes: what the renter expects the guest to measure as
    image: str = ""  # image id (content address) to boot; "" for the launcher's default


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
    guest_key: bytes = b""  # the guest agent's public key that REPORT_DATA[32:64] binds


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

    @abstractmethod
    def running(self) -> list[GuestInfo]:
        """Every guest of this launcher that runs now."""

    @abstractmethod
    def get_report(self, lease_id: int, report_data: bytes) -> GuestReport:
        """A report from the guest's (real or simulated) AMD-SP with this REPORT_DATA."""

    def image_measurement(self, image_id: str, vcpu: int) -> bytes | None:
        """The launch measurement booting `image_id` with `vcpu` vCPUs gives on this host, or
        None when this launcher does not boot renters' images (or has no such image)."""
        del image_id, vcpu
        return None
