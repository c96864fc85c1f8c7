"""Dispatch at the head on a real anvil: with an indexer three blocks behind the head, a new
lease is matched and dispatched in the first pass after its create is mined, its matched node
reads the private spec through the chain before the store has the lease, and a reorg that
drops the create (anvil's snapshot and revert) leaves only a reservation that expires."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from backend.domain import leases
from backend.service import BackendService
from backend.store import Lease, Match
from cvm.api_client import ApiClient, ApiError
from cvm.api_models import LeaseIntent
from cvm.config import Settings
from cvm.eip712 import Heartbeat, sign_heartbeat
from tests.fixtures.chain import LEASE_SPEC, ChainSystem
from tests.fixtures.processes import serving
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration

CONFIRMATIONS = 3
ACCEPT_TIMEOUT_S = 30


@dataclass
class Backend:
    service: BackendService
    api: ApiClient
    clock: Clock
    dispatched: list[tuple[int, str]]

    def heartbeat(self, node: LocalAccount) -> None:
        fields = Heartbeat(
            node=node.address,
            free_vcpus=16,
            free_memory_mib=65_536,
            free_disk_gib=500,
            running_leases=0,
            timestamp=int(self.clock.now),
        )
        self.api.send_heartbeat(sign_heartbeat(fields, self.api.domain(), node.key))

    def indexed(self, lease_id: int) -> bool:
        with self.service.store.session() as session:
            return session.get(Lease, lease_id) is not None

    def matches(self, lease_id: int) -> dict[str, str]:
        with self.service.store.session() as session:
            rows = session.query(Match).filter(Match.lease_id == lease_id).all()
            return {row.node: str(row.status) for row in rows}


@pytest.fixture
def backend(chain: ChainSystem, tmp_path: Path) -> Iterator[Backend]:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'backend.db'}",
        broker_url="memory://",
        rpc_url=chain.anvil.rpc_url,
        indexer_confirmations=CONFIRMATIONS,
        match_accept_timeout_s=ACCEPT_TIMEOUT_S,
        image_dir=tmp_path / "images",
    )
    dispatched: list[tuple[int, str]] = []
    clock = Clock(time.time())
    service = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda lease_id, node: dispatched.append((lease_id, node.lower())),
        clock=clock,
    )
    try:
        with serving(service.app) as url:
            yield Backend(service, ApiClient(url), clock, dispatched)
    finally:
        service.close()


def _node_ready(chain: ChainSystem, backend: Backend) -> LocalAccount:
    """The chain fixture's staked node, indexed (its events buried) and heartbeating."""
    chain.staked_node()
    chain.anvil.mine(CONFIRMATIONS)
    backend.service.step()
    backend.heartbeat(chain.accounts.node_key)
    return chain.accounts.node_key


def _lease_with_private_spec(chain: ChainSystem, backend: Backend) -> tuple[int, str]:
    """A lease whose private spec the renter stored first (as `cvm rent` does)."""
    renter = chain.accounts.renter.address.lower()
    with backend.service.store.session() as session:
        spec = leases.store_private_spec(
            session, renter, LeaseIntent(image="sha256:" + "ab" * 32), datetime.now(UTC)
        )
    spec_hash = bytes.fromhex(spec.spec_hash.removeprefix("0x"))
    return chain.open_lease(spec=replace(LEASE_SPEC, spec_hash=spec_hash)), spec.image


def test_a_new_lease_is_dispatched_before_its_confirmations(
    chain: ChainSystem, backend: Backend
) -> None:
    node = _node_ready(chain, backend)
    lease_id, image = _lease_with_private_spec(chain, backend)
    backend.service.step()
    # Dispatched in the pass right after its block, three blocks before the indexer has it.
    assert backend.dispatched == [(lease_id, node.address.lower())]
    assert not backend.indexed(lease_id)
    # The matched node reads the private spec before the store has the lease...
    spec = backend.api.lease_spec_as_node(lease_id, node_key=node.key)
    assert spec.image == image
    # ...and nobody else does.
    stranger = chain.anvil.new_account()
    with pytest.raises(ApiError) as refused:
        backend.api.lease_spec_as_node(lease_id, node_key=stranger.key)
    assert refused.value.status_code == 404
    # Later passes do not send it again; once the create is buried the indexer takes over.
    backend.service.step()
    chain.anvil.mine(CONFIRMATIONS)
    backend.service.step()
    assert backend.indexed(lease_id)
    assert backend.dispatched == [(lease_id, node.address.lower())]
    assert backend.matches(lease_id) == {node.address.lower(): "reserved"}


def test_a_reorg_that_drops_the_create_leaves_a_reservation_that_expires(
    chain: ChainSystem, backend: Backend
) -> None:
    node = _node_ready(chain, backend)
    before_create = chain.anvil.snapshot()
    lease_id, _image = _lease_with_private_spec(chain, backend)
    backend.service.step()
    assert backend.dispatched == [(lease_id, node.address.lower())]
    chain.anvil.revert(before_create)  # the create's block leaves the chain
    chain.anvil.mine(CONFIRMATIONS + 1)  # the new branch, longer, without it
    backend.service.step()
    assert not backend.indexed(lease_id)
    # The chain has no such lease: the node's spec read finds none either.
    with pytest.raises(ApiError) as missing:
        backend.api.lease_spec_as_node(lease_id, node_key=node.key)
    assert missing.value.status_code == 404
    # Its reservation is forgotten at its deadline, without a dispatch to anyone.
    backend.clock.advance(ACCEPT_TIMEOUT_S + 1)
    backend.heartbeat(node)
    backend.service.step()
    assert backend.matches(lease_id) == {}
    assert backend.dispatched == [(lease_id, node.address.lower())]
    # The next create on the new branch gets the same id: a new lease, which the node (not
    # counted as having been tried for it) is dispatched at the head, its capacity free again.
    next_lease, _ = _lease_with_private_spec(chain, backend)
    assert next_lease == lease_id
    backend.service.step()
    assert backend.dispatched == [(lease_id, node.address.lower())] * 2
    assert backend.matches(lease_id) == {node.address.lower(): "reserved"}


def test_with_dispatch_at_the_head_off_a_lease_waits_for_the_indexer(
    chain: ChainSystem, backend: Backend
) -> None:
    backend.service.head_dispatch = None
    node = _node_ready(chain, backend)
    lease_id, _image = _lease_with_private_spec(chain, backend)
    backend.service.step()
    assert backend.dispatched == []
    chain.anvil.mine(CONFIRMATIONS)
    backend.service.step()
    assert backend.dispatched == [(lease_id, node.address.lower())]
