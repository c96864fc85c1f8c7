"""A real backend (API, indexer, matcher) on the session's anvil, served by uvicorn on a
free port, for the tests of images and guest consoles that need leases indexed from chain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from backend.service import BackendService
from backend.store import Lease
from cvm.config import Settings
from tests.fixtures.chain import ChainSystem
from tests.fixtures.processes import serving, wait_for

# Small enough that an oversized upload is still read and answered 413 (see limits.py).
IMAGE_LIMIT_BYTES = 512 * 1024


@dataclass
class LiveBackend:
    service: BackendService
    url: str
    deployment_file: Path  # the chain's deployment record, naming this backend's URL

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def wait_indexed(self, lease_id: int, node: str | None = None) -> None:
        """Until the backend has the lease (accepted by `node`, if given)."""

        def indexed() -> bool:
            with self.service.store.session() as session:
                lease = session.get(Lease, lease_id)
                return lease is not None and (node is None or lease.node == node.lower())

        wait_for(indexed, timeout=30, what=f"lease {lease_id} indexed")


@pytest.fixture
def live_backend(
    request: pytest.FixtureRequest, chain: ChainSystem, tmp_path: Path
) -> Iterator[LiveBackend]:
    """SQLite unless a test asks for "postgresql" (`indirect` parametrization)."""
    database_url = f"sqlite:///{tmp_path / 'backend.db'}"
    if getattr(request, "param", "sqlite") == "postgresql":
        database_url = request.getfixturevalue("postgresql_database_url")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        broker_url="memory://",  # nothing is dispatched; rate-limit counters stay in process
        rpc_url=chain.anvil.rpc_url,
        indexer_confirmations=0,
        indexer_poll_s=0.05,
        image_dir=tmp_path / "backend-images",
        image_max_bytes=IMAGE_LIMIT_BYTES,
    )
    service = BackendService(
        settings, chain.deployment, chain.anvil.w3, dispatch=lambda _lease, _node: None
    )
    service.start()
    try:
        with serving(service.app) as url:
            record = tmp_path / "deployment.json"
            replace(chain.deployment, api_url=url).save(record)
            yield LiveBackend(service, url, record)
    finally:
        service.close()
