"""The dApp SDK: ask the chain whether a lease runs the code you expect on real AMD hardware.

    from cvm.sdk import AttestationClient
    client = AttestationClient("http://127.0.0.1:8545", "0xAttestationRegistry...")
    status = client.status(lease_id)
    status.verified, status.measurement.hex(), status.verified_at
    client.is_attested(lease_id, expected_measurement)   # the same answer a contract gets
    client.verify_result(lease_id, request, result, signature)  # signed inside the guest?

A guest's service ports over TLS pinned to the key its attestation binds:

    from cvm.sdk import attested_client
    with attested_client(lease_id, 8080, renter=renter) as http:   # an httpx.Client
        http.get("/health")

Every failure of `AttestationClient` is an `AttestationClientError`: `ChainUnavailable`
(the RPC does not answer), `NotARegistry` (the address is not an AttestationRegistry on
that chain) or `InvalidArgument` (a malformed address, lease id or measurement).
`AttestationStatus` is the registry's `Status` enum (None, Pending, Verified, Rejected,
Expired).

It reads only the `IAttestationRegistry` interface (stable), so it works against any
deployment without the rest of cvm's contracts or its backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from web3 import Web3

from cvm.attested_tls import AttestedTlsError, PinMismatch
from cvm.chain import (
    Attestation,
    AttestationRegistryClient,
    AttestationStatus,
    EventDecoder,
    open_web3,
    recover_guest_result,
)
from cvm.config import MEASUREMENT_BYTES
from cvm.renter import attestation_dict

if TYPE_CHECKING:
    import httpx
    from cryptography import x509

    from cvm.renter import Renter

__all__ = [
    "AttestationClient",
    "AttestationClientError",
    "AttestationStatus",
    "AttestedTlsError",
    "ChainUnavailable",
    "InvalidArgument",
    "LeaseAttestation",
    "NotARegistry",
    "PinMismatch",
    "attested_client",
]

_T = TypeVar("_T")


def attested_client(
    lease_id: int,
    port: int,
    *,
    renter: Renter,
    roots: Sequence[x509.Certificate] | None = None,
    trust_simulated: bool = False,
    timeout: float = 30.0,
    **client_options: Any,
) -> httpx.Client:
    """An `httpx.Client` (base URL set) for guest port `port` of the renter's lease
    `lease_id`, that talks only to the key the lease's attestation binds.

    The lease's latest Verified report is checked here first (AMD's chain, or `roots`; with
    `trust_simulated`, also the local stack's simulated AMD-SP from the settings; the lease's
    expected measurement; REPORT_DATA and HOST_DATA bound to this lease and renter), the
    port's address comes from the node's announcement, and every TLS connection must present
    the attested key (`cvm.attested_tls.pinned_context`). Raises `AttestedTlsError`
    (`PinMismatch` for a server with any other key), `ReleaseRefused` when the evidence does
    not hold, `ApiError` when the backend cannot be asked."""
    from cvm.attested_tls import attested_port, pinned_client

    if roots is None and trust_simulated:
        from cvm.config import get_settings
        from cvm.secret_release import trusted_roots

        roots = trusted_roots(True, get_settings().sim_amd_dir)
    target = attested_port(renter.chain, renter.signed_in_api(), lease_id, port, roots=roots)
    return pinned_client(
        target.host, target.host_port, target.spki_sha256, timeout=timeout, **client_options
    )


class AttestationClientError(Exception):
    """Base of every error `AttestationClient` raises."""


class ChainUnavailable(AttestationClientError):
    """The JSON-RPC endpoint did not answer."""


class NotARegistry(AttestationClientError):
    """The address does not answer as an AttestationRegistry on this chain."""


class InvalidArgument(AttestationClientError, ValueError):
    """A malformed registry address, lease id or measurement."""


@dataclass(frozen=True)
class LeaseAttestation(Attestation):
    """The latest attestation of a lease, as the registry records it (`node` None if none)."""

    @property
    def verified(self) -> bool:
        """Verified by the verifiers' quorum (expiry is judged by the chain: see `status`)."""
        return self.status == AttestationStatus.VERIFIED

    def as_dict(self) -> dict[str, Any]:
        return {"lease_id": self.lease_id, **attestation_dict(self)}


class AttestationClient:
    """Read-only client of one `AttestationRegistry` over JSON-RPC (the typed chain client)."""

    def __init__(self, rpc: str | Web3, registry: str) -> None:
        if not Web3.is_address(registry):
            raise InvalidArgument(f"not an address: {registry!r}")
        self.w3 = rpc if isinstance(rpc, Web3) else open_web3(rpc)
        self.registry = Web3.to_checksum_address(registry)
        self._registry = AttestationRegistryClient(self.w3, self.registry, EventDecoder({}))
        # Whether code was found at `registry`: checked once (a deployed contract stays),
        # not one extra eth_getCode round trip per read.
        self._has_code = False
        self._chain_id: int | None = None

    def status(self, lease_id: int) -> LeaseAttestation:
        """The lease's latest attestation (status NONE if it was never attested)."""
        _check_lease_id(lease_id)
        record = self._call(lambda: self._registry.attestation_of(lease_id))
        fields = {**record.__dict__, "node": None if int(record.node, 16) == 0 else record.node}
        return LeaseAttestation(**fields)

    def is_attested(self, lease_id: int, expected_measurement: bytes) -> bool:
        """True only while the attestation is Verified, unexpired and of this measurement."""
        _check_lease_id(lease_id)
        if len(expected_measurement) != MEASUREMENT_BYTES:
            raise InvalidArgument(
                f"a measurement is {MEASUREMENT_BYTES} bytes, got {len(expected_measurement)}"
            )
        return self._call(lambda: self._registry.is_attested(lease_id, expected_measurement))

    def is_attested_final(self, lease_id: int, expected_measurement: bytes) -> bool:
        """`isAttestedFinal`: attested, and the verdict can no longer be overturned (its
        dispute window passed undisputed, a dispute upheld it, or the report was checked in
        the EVM). False while a challenge of it is open."""
        _check_lease_id(lease_id)
        if len(expected_measurement) != MEASUREMENT_BYTES:
            raise InvalidArgument(
                f"a measurement is {MEASUREMENT_BYTES} bytes, got {len(expected_measurement)}"
            )
        return self._call(lambda: self._registry.is_attested_final(lease_id, expected_measurement))

    def attested_signer(self, lease_id: int) -> str | None:
        """The guest's own signing address that the current attestation vouches for (the
        stable `attestedSignerOf`), or None while nothing is attested. A dApp accepts results
        signed by this key only, never by the node key (see `cvm.chain.sign_guest_result`)."""
        _check_lease_id(lease_id)
        signer = self._call(lambda: self._registry.attested_signer_of(lease_id))
        return None if int(signer, 16) == 0 else signer

    def verify_result(
        self,
        lease_id: int,
        request: bytes,
        result: bytes,
        signature: bytes,
        *,
        expected_measurement: bytes | None = None,
    ) -> bool:
        """What `AttestedService.postResult` checks, off chain: True only if `signature` is the
        EIP-712 `GuestResult` of `result` to `request` signed inside the guest by the key the
        lease's current attestation vouches for (`attested_signer`); given
        `expected_measurement`, only while attested with it. False for the node key's
        signature, another lease's, an unattested lease or a malformed signature."""
        _check_lease_id(lease_id)
        if not isinstance(request, bytes) or len(request) != 32:
            raise InvalidArgument("a request id is 32 bytes")
        if not isinstance(result, bytes) or not isinstance(signature, bytes):
            raise InvalidArgument("result and signature are bytes")
        if expected_measurement is not None and not self.is_attested(
            lease_id, expected_measurement
        ):
            return False
        signer = self.attested_signer(lease_id)
        if signer is None:
            return False
        if self._chain_id is None:
            self._chain_id = self._call(lambda: int(self.w3.eth.chain_id))
        recovered = recover_guest_result(
            lease_id, request, result, signature, self._chain_id, self.registry
        )
        return recovered is not None and recovered.lower() == signer.lower()

    def _call(self, read: Callable[[], _T]) -> _T:
        """Run a registry read, turning each way it can fail into this module's errors."""
        try:
            if not self._has_code:
                if not self.w3.eth.get_code(self.registry):
                    raise NotARegistry(f"no contract at {self.registry}")
                self._has_code = True
            return read()
        except AttestationClientError:
            raise
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise ChainUnavailable(f"the chain does not answer: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3", "aiohttp")):
                raise ChainUnavailable(f"the chain does not answer: {exc}") from exc
            raise NotARegistry(
                f"{self.registry} does not answer as an AttestationRegistry: {exc}"
            ) from exc


def _check_lease_id(lease_id: int) -> None:
    if isinstance(lease_id, bool) or not isinstance(lease_id, int) or not 0 <= lease_id < 2**256:
        raise InvalidArgument(f"a lease id is an unsigned 256-bit integer, got {lease_id!r}")
