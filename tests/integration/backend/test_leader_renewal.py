"""The backend's leader lease outlives a long pass: renewed between the indexer's batches of a
catch-up and, from a thread, while the verifier waits for its votes, so no other replica takes
the job over mid-pass (issue 18, loose end). A short lease (3 s of a settable clock) and a
pass that lasts two terms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from backend.leadership import INDEXER, Leadership, verifier_job
from backend.service import BackendService
from backend.store import LeaderLease, Verification
from cvm.config import Settings
from tests.fixtures.chain import ChainSystem
from tests.fixtures.processes import wait_for
from tests.unit.backend.factories import Clock

pytestmark = pytest.mark.integration

TTL_S = 3.0


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def service(chain: ChainSystem, tmp_path: Path, clock: Clock) -> Iterator[BackendService]:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'backend.db'}",
        broker_url="memory://",
        rpc_url=chain.anvil.rpc_url,
        indexer_confirmations=0,
        indexer_batch_blocks=1,
        leader_ttl_s=TTL_S,
    )
    backend = BackendService(
        settings,
        chain.deployment,
        chain.anvil.w3,
        dispatch=lambda _lease, _node: None,
        verifier_account=chain.accounts.verifier,
        clock=clock,
    )
    yield backend
    backend.close()


def _expires(service: BackendService, job: str) -> float:
    with service.store.session() as session:
        row = session.get(LeaderLease, job)
        assert row is not None
        return row.expires_at.replace(tzinfo=UTC).timestamp()


def test_a_long_indexer_catch_up_keeps_its_lease(
    service: BackendService, chain: ChainSystem, clock: Clock
) -> None:
    """Fails on the old code: the lease was renewed once per pass, so a catch-up of many
    batches lasting past `leader_ttl_s` let a second replica take the indexer over mid-pass
    (two indexers, two matchers). Now each batch is a checkpoint that renews it."""
    service.step()  # caught up to the deployment
    chain.anvil.w3.provider.make_request("anvil_mine", [8])  # type: ignore[arg-type]
    rival = Leadership(service.store, holder="rival", ttl_s=TTL_S, clock=clock)
    apply_range = service.indexer._apply_range
    batches: list[int] = []

    def slow_batch(from_block: int, to_block: int, result: object) -> None:
        apply_range(from_block, to_block, result)  # type: ignore[arg-type]
        batches.append(to_block)
        clock.advance(TTL_S / 2)  # each batch takes half a term: 8 take four terms
        assert not rival.acquire(INDEXER), f"the indexer lost its lease after {len(batches)}"

    service.indexer._apply_range = slow_batch  # type: ignore[method-assign]
    report = service.step()
    assert report.leader and len(batches) == 8
    assert service.indexer.cursor() == chain.anvil.w3.eth.block_number
    assert _expires(service, INDEXER) > clock.now


def test_a_long_verifier_pass_keeps_its_lease(
    service: BackendService, chain: ChainSystem, clock: Clock
) -> None:
    """Fails on the old code: nothing renewed the verifier's lease while its pass waited (for
    receipts), so after `leader_ttl_s` another replica took the key over and voted too. Now a
    thread renews it every quarter term while the pass runs."""
    job = service.verifier_job
    assert job == verifier_job(chain.accounts.verifier.address) and service.verifier is not None
    rival = Leadership(service.store, holder="rival", ttl_s=TTL_S, clock=clock)
    rounds: list[float] = []

    def slow_pass() -> list[Verification]:
        for _ in range(3):  # three times two thirds of a term: twice the term
            clock.advance(TTL_S * 2 / 3)
            wait_for(
                lambda: _expires(service, job) >= clock.now + TTL_S - 0.01,
                timeout=10,
                what="the verifier's lease renewed during its pass",
            )
            rounds.append(clock.now)
            assert not rival.acquire(job)
        return []

    service.verifier.run_pending = slow_pass  # type: ignore[method-assign]
    service.step()
    assert len(rounds) == 3
    assert service.leadership.holds(job)
    # Once the pass is over nothing renews it: a dead replica's lease still lapses.
    clock.advance(TTL_S + 1)
    assert rival.acquire(job)
