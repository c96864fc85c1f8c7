"""What a holder asks the backend, behind one small interface (`HolderBackend`), so the
holder's checks can be tested without HTTP. `ApiBackend` is the real one: `cvm.api_client`'s
holder methods, every request signed by the holder's Ethereum key (`cvm.holder_requests`,
EIP-712 domain `cvm.holder-read.v1`; both written on branch i-backendkeys).

Nothing the backend answers is trusted: it only carries ciphertext and evidence that the
holder checks against the chain and its own keys, so answers are handed on as plain JSON and
parsed by the holder's own strict checks (keyservice.wire).
"""

from __future__ import annotations

from typing import Any, Protocol

from cvm import api_models
from cvm.api_client import ApiClient
from cvm.eip712 import Domain

PAGE = 100  # items asked per request (the backend's own bound)


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

    def __init__(self, api: ApiClient, holder_key: bytes, domain: Domain) -> None:
        # Typed loosely: the holder methods arrive with the backend's key routes.
        self.api: Any = api
        self._key = holder_key
        self.domain = domain

    def shares(self, after: int) -> Any:
        views = self.api.list_shares(
            holder_key=self._key, after=after, limit=PAGE, domain=self.domain
        )
        return [view.model_dump(mode="json") for view in views]

    def epochs(self, after: int) -> Any:
        views = self.api.list_epochs(
            holder_key=self._key, after=after, limit=PAGE, domain=self.domain
        )
        return [view.model_dump(mode="json") for view in views]

    def evidence(self, report_hash: bytes) -> bytes:
        return bytes(self.api.get_evidence("0x" + report_hash.hex()))

    def post_release(self, lease_id: int, release: dict[str, Any]) -> None:
        model: Any = getattr(api_models, "KeyReleaseIn")  # noqa: B009 - see __init__
        self.api.post_release(lease_id, model(**release), holder_key=self._key, domain=self.domain)
