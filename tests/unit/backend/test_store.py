"""The store: migrations match the models, uint256 columns order numerically, transactions."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from backend.store import Base, Node, Store, Verification
from backend.store.db import alembic_config, migrate
from cvm.attestation.amd_root import AmdRoot
from tests.unit.backend.factories import add_node


def test_migrations_create_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []
    assert set(inspect(store.engine).get_table_names()) >= set(Base.metadata.tables)


def test_migrate_is_idempotent_and_reversible(store: Store) -> None:
    from alembic import command

    migrate(store.url)  # again: nothing to do
    command.downgrade(alembic_config(store.url), "base")
    assert "nodes" not in inspect(store.engine).get_table_names()
    migrate(store.url)
    assert "nodes" in inspect(store.engine).get_table_names()


def test_uint256_amounts_compare_as_numbers(store: Store) -> None:
    stakes = [0, 9, 10, 2**64, 10**30, 2**256 - 1]
    for i, stake in enumerate(stakes):
        add_node(store, f"0x{i + 1:040x}", stake=stake)
    with store.session() as session:
        ordered = session.scalars(select(Node.stake).order_by(Node.stake)).all()
        assert ordered == stakes
        rich = session.scalars(select(Node.stake).where(Node.stake >= 10)).all()
        assert sorted(rich) == stakes[2:]
    with pytest.raises(Exception, match="uint256"), store.session() as session:
        session.add(Node(**{**_node_values(), "stake": 2**256}))


def test_a_failed_transaction_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(Node(**_node_values()))
        session.flush()
        raise RuntimeError("boom")
    with store.session() as session:
        assert session.scalars(select(Node)).all() == []


def _node_values() -> dict[str, object]:
    return {
        "address": "0x" + "ab" * 20,
        "operator": "0x" + "cd" * 20,
        "tee_type": 1,
        "vcpus": 1,
        "memory_mib": 1,
        "disk_gib": 1,
        "region": 0,
        "price_per_vcpu_second": 1,
        "endpoint": "",
        "stake": 1,
        "active": True,
        "attestations_verified": 0,
        "attestations_rejected": 0,
        "faults": 0,
        "registered_block": 1,
    }


def test_migration_0005_carries_the_simulated_marker_over(store: Store) -> None:
    # Results stored before the column said it in their detail; none may come out unmarked.
    from alembic import command

    command.downgrade(alembic_config(store.url), "0004")
    rows = [
        (1, True, {"simulated_amd": True}),
        (2, True, {"simulated_amd": False}),
        (3, False, {"errors": ["UNTRUSTED_ROOT"]}),
    ]
    with store.engine.begin() as connection:
        for lease_id, ok, detail in rows:
            connection.execute(
                text(
                    "INSERT INTO verifications (lease_id, report_hash, ok, reason_codes,"
                    " detail, checked_at) VALUES (:lease, :hash, :ok, '[]', :detail, :at)"
                ),
                {
                    "lease": lease_id,
                    "hash": "0x" + f"{lease_id:02x}" * 32,
                    "ok": ok,
                    "detail": json.dumps(detail),
                    "at": datetime.now(UTC),
                },
            )
    migrate(store.url)
    with store.session() as session:
        found = {
            row.lease_id: row.amd_root
            for row in session.scalars(select(Verification).order_by(Verification.lease_id))
        }
    assert found == {1: AmdRoot.SIMULATED, 2: AmdRoot.AMD, 3: None}
