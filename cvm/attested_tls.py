"""TLS to a guest's service port, trusting exactly the key its attestation binds.

A guest makes its TLS key at boot and its guest key (REPORT_DATA[32:64] hashes it) carries
the SHA-256 of that key's DER SubjectPublicKeyInfo: the "attested fingerprint". The
certificate around it is self-signed and its names and dates say nothing; what a client
checks is that the server holds the attested key, and nothing else.

How a connection is pinned (`pinned_context`):
1. a first handshake with verification off only fetches the server's certificate (nothing
   is sent over it); its SPKI hash must equal the attested one, or PinMismatch;
2. that one certificate becomes the only trust anchor of a fresh context with
   CERT_REQUIRED and hostname checks off. Every later handshake must present a certificate
   that chains to it, i.e. signed by the attested key, and prove (CertificateVerify) that it
   holds the private half of the certificate's key: only the attested guest can. A server
   that rotated its certificate between the two steps is refused, never trusted.
No system CA is loaded, so no public CA can vouch for another key either.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cvm.attestation.binding import fingerprint_text, spki_sha256

if TYPE_CHECKING:
    import httpx
    from cryptography import x509

    from cvm.api_client import ApiClient
    from cvm.chain import ChainClient

CONNECT_TIMEOUT_S = 20.0


class AttestedTlsError(Exception):
    """A guest port could not be reached with its attested key (one line, for users)."""


class PinMismatch(AttestedTlsError):
    """The server presented a key other than the attested one."""


@dataclass(frozen=True)
class AttestedPort:
    """One service port of a lease's guest: where its node forwards it from, and the key
    that only the attested guest holds."""

    lease_id: int
    guest_port: int
    host: str
    host_port: int
    spki_sha256: bytes
    simulated: bool = False  # attested by the simulated AMD-SP (trusted on request only)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.host_port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def as_dict(self) -> dict[str, Any]:
        hex_form, pin = fingerprint_text(self.spki_sha256)
        return {
            "lease_id": self.lease_id,
            "guest_port": self.guest_port,
            "host": self.host,
            "host_port": self.host_port,
            "address": self.address,
            "url": self.url,
            "fingerprint_sha256": hex_form,
            "fingerprint": pin,
            "amd_root": "simulated" if self.simulated else "amd",
        }


def fetch_certificate(host: str, port: int, *, timeout: float = CONNECT_TIMEOUT_S) -> bytes:
    """The DER certificate the server at host:port presents (unverified: see the module)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.minimum_version = ssl.TLSVersion.TLSv1_2
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with probe.wrap_socket(raw) as conn:
                der = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise AttestedTlsError(f"no TLS server answers at {host}:{port}: {exc}") from exc
    if not der:
        raise AttestedTlsError(f"the server at {host}:{port} presented no certificate")
    return der


def pinned_context(
    host: str, port: int, expected_spki_sha256: bytes, *, timeout: float = CONNECT_TIMEOUT_S
) -> ssl.SSLContext:
    """An SSLContext that accepts only the attested key's server at host:port; PinMismatch
    when the server there presents another key."""
    if len(expected_spki_sha256) != 32:
        raise AttestedTlsError("an attested fingerprint is 32 bytes (SHA-256)")
    der = fetch_certificate(host, port, timeout=timeout)
    try:
        found = spki_sha256(der)
    except ValueError as exc:
        raise PinMismatch(f"the server at {host}:{port} presented no readable certificate") from exc
    if found != expected_spki_sha256:
        raise PinMismatch(
            f"the server at {host}:{port} presented key sha256/{_b64(found)}, not the attested"
            f" sha256/{_b64(expected_spki_sha256)}: refusing to connect"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the certificate's names carry no trust; the key does
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=der)  # the only trust anchor
    except ssl.SSLError as exc:
        raise PinMismatch(f"the server at {host}:{port} presented an unusable certificate") from exc
    return context


def pinned_client(
    host: str,
    port: int,
    expected_spki_sha256: bytes,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
    **client_options: Any,
) -> httpx.Client:
    """An `httpx.Client` for https://host:port that talks only to the attested key."""
    import httpx

    context = pinned_context(host, port, expected_spki_sha256, timeout=timeout)
    display = f"[{host}]" if ":" in host else host
    return httpx.Client(
        base_url=f"https://{display}:{port}",
        verify=context,
        timeout=timeout,
        trust_env=False,  # a proxy from the environment would only be refused by the pin
        **client_options,
    )


def _b64(digest: bytes) -> str:
    return fingerprint_text(digest)[1].removeprefix("sha256/")


def attested_port(
    chain: ChainClient,
    api: ApiClient,
    lease_id: int,
    guest_port: int,
    *,
    roots: Sequence[x509.Certificate] | None,
) -> AttestedPort:
    """Guest port `guest_port` of the lease: the attested key from evidence verified here
    (`cvm.secret_release.attested_guest`: AMD's chain or `roots`, the lease's measurement,
    REPORT_DATA and HOST_DATA bindings), the address as the lease's node announced it."""
    from cvm.secret_release import attested_guest

    if isinstance(guest_port, bool) or not isinstance(guest_port, int):
        raise AttestedTlsError(f"a port is an integer, got {guest_port!r}")
    if not 1 <= guest_port <= 65535:
        raise AttestedTlsError(f"a port is in [1, 65535], got {guest_port}")
    guest = attested_guest(chain, api, lease_id, roots=roots)
    access = api.guest_access(lease_id)
    forwards = {port.guest_port: port.host_port for port in access.ports}
    if guest_port not in forwards:
        offered = ", ".join(str(port) for port in sorted(forwards)) or "none"
        raise AttestedTlsError(
            f"the node of lease {lease_id} forwards no guest port {guest_port}"
            f" (forwarded: {offered}); the image's workload declares its ports"
        )
    return AttestedPort(
        lease_id, guest_port, access.host, forwards[guest_port],
        guest.identity.tls_spki_sha256, simulated=guest.simulated,
    )  # fmt: skip
