"""What a holder asks the backend, behind one small interface (`HolderBackend`), so the
holder's checks can be tested without HTTP. `ApiBackend` is the real one (cvm.api_client,
every request signed by the holder's Ethereum key, domain tag `cvm.holder-read.v1`).

Nothing the backend answers is trusted: it only carries ciphertext and evidence that the
holder checks against the chain and its own keys.
"""

from __future__ import annotations

from typing import Any, Protocol

from cvm.api_client import ApiClient
from cvm.eip712 import Domain


class HolderBackend(Protocol):
    def shares(self, after: int) -> Any:
        """Deposits addressed to this holder after cursor `after`."""
        ...

    def epochs(self, after: int) -> Any:
        """Epoch records of its leases after cursor `after`."""
        ...

    def evidence(self, report_hash: bytes) -> bytes: ...

    def post_release(self, lease_id: int, release: dict[str, Any]) -> None: ...


class ApiBackend:
    """`HolderBackend` over the backend's HTTP API."""

    def __init__(self, api: ApiClient, holder_key: bytes, address: str, domain: Domain) -> None:
        self.api = api
        self._key = holder_key
        self.address = address
        self.domain = domain

    def shares(self, after: int) -> Any:
        return self.api.holder_shares(
            self.address, after=after, holder_key=self._key, domain=self.domain
        )

    def epochs(self, after: int) -> Any:
        return self.api.holder_epochs(
            self.address, after=after, holder_key=self._key, domain=self.domain
        )

    def evidence(self, report_hash: bytes) -> bytes:
        return self.api.get_evidence("0x" + report_hash.hex())

    def post_release(self, lease_id: int, release: dict[str, Any]) -> None:
        self.api.post_key_release(lease_id, release, holder_key=self._key, domain=self.domain)
