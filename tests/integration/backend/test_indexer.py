"""The indexer against a real anvil: projections, confirmations, batches, idempotency, reorgs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from web3.exceptions import BlockNotFound

from backend.indexer import Indexer, marketplace_decoder
from backend.store import Attestation, ChainEvent, Lease, Node, Store
from cvm.chain import ChainError
from cvm.chain.sender import forget_nonces
from tests.fixtures.chain import LEASE_SPEC, MEASUREMENT, STAKE, ChainSystem

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'indexer.db'}")
    yield store
    store.close()


def _indexer(store: Store, chain: ChainSystem, confirmations: int = 0, batch: int = 3) -> Indexer:
    return Indexer(
        store,
        chain.anvil.w3,
        marketplace_decoder(chain.deployment),
        start_block=chain.deployment.start_block,
        confirmations=confirmations,
        batch_blocks=batch,
    )


def _snapshot(store: Store) -> dict[str, object]:
    """Every projected row, as plain values: what 'changes nothing' is checked against."""
    with store.session() as session:
        return {
            "nodes": sorted(
                (n.address, n.stake, n.vcpus, n.attestations_verified, n.faults)
                for n in session.scalars(select(Node))
            ),
            "leases": sorted(
                (x.id, x.status, x.node, x.deposit, x.attestation_nonce)
                for x in session.scalars(select(Lease))
            ),
            "attestations": sorted(
                (a.lease_id, a.status, a.report_hash, a.nonce)
                for a in session.scalars(select(Attestation))
            ),
            "events": session.scalar(select(func.count()).select_from(ChainEvent)),
        }


def test_indexes_a_lease_lifecycle(store: Store, chain: ChainSystem) -> None:
    report_hash = b"\xab" * 32
    lease_id = chain.attested_lease(report_hash=report_hash)
    chain.renter.leases.top_up(lease_id, 10**18)
    indexer = _indexer(store, chain, batch=2)
    result = indexer.poll()
    names = [e.name for e in result.events]
    for expected in (
        "NodeRegistered",
        "Staked",
        "LeaseCreated",
        "LeaseAccepted",
        "AttestationSubmitted",
        "AttestationVerified",
        "LeaseToppedUp",
    ):
        assert expected in names
    node_key = chain.accounts.node_key.address.lower()
    with store.session() as session:
        node = session.get(Node, node_key)
        assert node is not None and node.stake == STAKE and node.vcpus == 16
        assert node.attestations_verified == 1 and node.operator == (
            chain.accounts.operator.address.lower()
        )
        lease = session.get(Lease, lease_id)
        assert lease is not None and lease.status == "active" and lease.node == node_key
        assert lease.vcpus == LEASE_SPEC.vcpu and lease.spec_hash == "0x" + "c0" * 32
        assert lease.expected_measurement == "0x" + MEASUREMENT.hex()
        assert lease.deposit == 11 * 10**18 and lease.attestation_nonce == 1
        attestation = session.get(Attestation, lease_id)
        assert attestation is not None and attestation.status == "verified"
        assert attestation.report_hash == "0x" + report_hash.hex() and attestation.nonce == 0
        assert attestation.expires_at == attestation.submitted_at + LEASE_SPEC.reattest_interval
    on_chain = chain.client().attestations.attestation_of(lease_id)
    assert on_chain.expires_at == attestation.expires_at

    # Re-processing changes nothing: a second poll finds nothing new, and replaying the
    # blocks from scratch (cursor reset) skips every stored event.
    before = _snapshot(store)
    assert indexer.poll().events == []
    with store.session() as session:
        from backend.store import IndexerCursor

        cursor = session.get(IndexerCursor, "chain")
        assert cursor is not None
        cursor.last_block = chain.deployment.start_block - 1
    assert indexer.poll().events == []
    assert _snapshot(store) == before

    chain.renter.leases.close_lease(lease_id)
    closed = indexer.poll()
    assert [e.name for e in closed.events if e.name == "LeaseClosed"] == ["LeaseClosed"]
    with store.session() as session:
        lease = session.get(Lease, lease_id)
        assert lease is not None and lease.status == "closed" and lease.close_reason == 1


def test_confirmations_hold_back_recent_blocks(store: Store, chain: ChainSystem) -> None:
    indexer = _indexer(store, chain, confirmations=2)
    chain.staked_node()  # two transactions: register, stake
    head = chain.anvil.w3.eth.block_number
    indexer.poll()
    assert indexer.cursor() == head - 2
    with store.session() as session:
        assert session.get(Node, chain.accounts.node_key.address.lower()) is None
    chain.anvil.mine(2)
    indexer.poll()
    with store.session() as session:
        node = session.get(Node, chain.accounts.node_key.address.lower())
        assert node is not None and node.stake == STAKE


def test_restart_resumes_from_the_stored_cursor(store: Store, chain: ChainSystem) -> None:
    chain.staked_node()
    first = _indexer(store, chain)
    first.poll()
    cursor = first.cursor()
    lease_id = chain.open_lease()
    restarted = _indexer(store, chain)
    assert restarted.cursor() == cursor
    result = restarted.poll()
    assert [e.name for e in result.events] == ["LeaseCreated"]
    with store.session() as session:
        assert session.get(Lease, lease_id) is not None


def test_reorg_rolls_back_and_applies_the_new_branch(store: Store, chain: ChainSystem) -> None:
    chain.staked_node()
    lease_id = chain.open_lease()
    indexer = _indexer(store, chain)
    indexer.poll()
    before_fork = _snapshot(store)
    fork_snapshot = chain.anvil.snapshot()

    # Branch A: the node accepts, attests and is verified; a second lease appears.
    chain.node.leases.accept_lease(lease_id)
    chain.submit(lease_id, b"\x01" * 32)
    chain.verifier.attestations.confirm(lease_id, b"\x01" * 32, True)
    chain.operator.nodes.request_unstake(chain.accounts.node_key.address, 10**18)
    branch_a_lease = chain.open_lease()
    indexer.poll()
    with store.session() as session:
        lease = session.get(Lease, lease_id)
        assert lease is not None and lease.status == "active"
        assert session.get(Lease, branch_a_lease) is not None
        node = session.get(Node, chain.accounts.node_key.address.lower())
        assert node is not None and node.attestations_verified == 1 and node.stake < STAKE

    # The chain drops branch A and grows branch B: the renter closes the lease instead,
    # and a lease with other terms takes the same id as branch A's second lease.
    chain.anvil.revert(fork_snapshot)
    chain.renter.leases.close_lease(lease_id)
    branch_b_lease = chain.open_lease(spec=replace(LEASE_SPEC, vcpu=2))
    chain.anvil.mine(3)  # branch B is longer than A was
    result = indexer.poll()
    assert result.reorged_from is not None
    assert lease_id in result.rebuilt_leases and branch_a_lease in result.rebuilt_leases
    with store.session() as session:
        lease = session.get(Lease, lease_id)
        assert lease is not None and lease.status == "closed" and lease.node is None
        assert session.get(Attestation, lease_id) is None
        node = session.get(Node, chain.accounts.node_key.address.lower())
        assert node is not None and node.attestations_verified == 0 and node.stake == STAKE
        other = session.get(Lease, branch_b_lease)
        assert other is not None and other.vcpus == 2
        names = set(session.scalars(select(ChainEvent.name)))
        assert "AttestationSubmitted" not in names and "LeaseAccepted" not in names
    # The store now equals what a fresh indexer makes of the new chain.
    fresh_store = Store(f"sqlite:///{Path(str(store.engine.url.database)).with_name('f.db')}")
    _indexer(fresh_store, chain).poll()
    assert _snapshot(fresh_store) == _snapshot(store)
    fresh_store.close()
    assert before_fork != _snapshot(store)


def test_a_reorg_deeper_than_the_kept_hashes_is_refused(
    store: Store, chain: ChainSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.indexer import IndexerError
    from backend.indexer import indexer as indexer_module

    monkeypatch.setattr(indexer_module, "KEPT_BLOCK_HASHES", 2)
    indexer = _indexer(store, chain, batch=1)
    early = chain.anvil.snapshot()
    chain.staked_node()
    chain.anvil.mine(5)
    indexer.poll()
    before = _snapshot(store)
    chain.anvil.revert(early)
    chain.anvil.mine(12)  # a different, longer branch forking below every kept hash
    with pytest.raises(IndexerError, match="deeper"):
        indexer.poll()
    assert _snapshot(store) == before  # nothing half rolled back


def test_reorgs_of_depth_1_to_5_while_leases_are_created_converge(
    store: Store, chain: ChainSystem
) -> None:
    """anvil's own reorg (`anvil_reorg`, replacing blocks) and rollback (`anvil_rollback`)
    of depth 1-5 between lease creations, while the indexer follows in its own thread:
    afterwards the store equals what a fresh indexer makes of the canonical chain."""
    chain.staked_node()
    indexer = _indexer(store, chain, batch=2)
    stop = threading.Event()
    errors: list[BaseException] = []
    reorgs_seen: list[int] = []

    def follow() -> None:
        # As the backend's loop does: an RPC answer made stale by a reorg racing the poll
        # is retried on the next one; anything else is a failure.
        while not stop.is_set():
            try:
                result = indexer.poll()
            except (ChainError, BlockNotFound):
                continue
            except BaseException as exc:
                errors.append(exc)
                return
            if result.reorged_from is not None:
                reorgs_seen.append(result.reorged_from)

    follower = threading.Thread(target=follow)
    follower.start()
    rpc = chain.anvil.w3.provider.make_request  # type: ignore[union-attr]
    try:
        for depth in (1, 2, 3, 4, 5, 3, 1):
            for _ in range(depth + 1):  # enough new blocks for the reorg to cut into
                chain.open_lease()
            answer = rpc("anvil_reorg", [depth, []])  # type: ignore[arg-type]
            assert "error" not in answer, answer
            forget_nonces()  # the renter's transactions on the old branch are gone
            chain.open_lease()  # a creation on the new branch
            answer = rpc("anvil_rollback", [min(depth, 2)])  # type: ignore[arg-type]
            assert "error" not in answer, answer
            forget_nonces()
            chain.open_lease()
    finally:
        stop.set()
        follower.join(timeout=60)
    assert not follower.is_alive()  # it finished, rather than hanging past the join
    assert errors == []
    assert reorgs_seen  # the follower really met reorgs, not only their aftermath
    indexer.poll()
    fresh_store = Store(f"sqlite:///{Path(str(store.engine.url.database)).with_name('f.db')}")
    _indexer(fresh_store, chain).poll()
    converged = _snapshot(store)
    assert _snapshot(fresh_store) == converged
    # Leases were created and some survived every reorg.
    assert converged["leases"]
    fresh_store.close()
