"""`NODE_RESCORING_EVENTS` is exactly the set of events that change a node's projection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

from backend.indexer import NODE_RESCORING_EVENTS
from backend.indexer.projections import apply_node_side
from backend.store import Attestation, ChainEvent, Node, Store
from tests.unit.backend.factories import add_node

NODE = "0x" + "0c" * 20
SPEC = {
    "teeType": 1,
    "vcpu": 32,
    "memoryMiB": 131072,
    "diskGiB": 900,
    "region": 1,
    "pricePerSecondPerUnit": 3,
}
# One example of every event with a node-side meaning, with the arguments it carries.
EXAMPLES: dict[str, dict[str, Any]] = {
    "NodeRegistered": {
        "nodeKey": NODE,
        "operator": "0x" + "bb" * 20,
        "spec": SPEC,
        "endpoint": "x",
    },
    "NodeUpdated": {"nodeKey": NODE, "spec": SPEC, "endpoint": "https://new"},
    "Staked": {"nodeKey": NODE, "operator": NODE, "amount": 5, "stake": 1005},
    "UnstakeRequested": {"nodeKey": NODE, "amount": 5, "unbonding": 5, "unlocksAt": 9},
    "Unstaked": {"nodeKey": NODE, "operator": NODE, "amount": 5},
    "Slashed": {"nodeKey": NODE, "amount": 5, "fromStake": 5, "fromUnbonding": 0},
    "MissedAttestationRecorded": {"nodeKey": NODE, "missedAttestations": 1},
    "LeaseAccepted": {"leaseId": 1, "nodeKey": NODE, "ratePerSecond": 10},
    "AttestationVerified": {"leaseId": 1, "reportHash": "0x" + "01" * 32},
    "AttestationRejected": {"leaseId": 1, "reportHash": "0x" + "01" * 32},
}


def _snapshot(node: Node) -> dict[str, Any]:
    return {column.key: getattr(node, column.key) for column in inspect(Node).columns}


def test_the_rescoring_events_are_those_that_change_the_node(store: Store) -> None:
    add_node(store, NODE)
    changed = set()
    for name, args in EXAMPLES.items():
        with store.session() as session:
            before = _snapshot(session.get(Node, NODE))  # type: ignore[arg-type]
            event = ChainEvent(name=name, args=args, node=NODE, block_number=7, log_index=0)
            apply_node_side(session, event)
            session.flush()
            after = _snapshot(session.get(Node, NODE))  # type: ignore[arg-type]
            session.rollback()
        if after != before:
            changed.add(name)
    assert changed == NODE_RESCORING_EVENTS
    assert NODE_RESCORING_EVENTS >= {"AttestationVerified", "Slashed", "NodeUpdated"}
    assert "Unstaked" not in NODE_RESCORING_EVENTS  # its stake left at UnstakeRequested


def test_no_attestation_row_is_needed_for_the_node_side(store: Store) -> None:
    # The node side of an attestation decision counts toward the node the event names.
    add_node(store, NODE)
    with store.session() as session:
        assert session.get(Attestation, 1) is None
        event = ChainEvent(name="AttestationVerified", args={"leaseId": 1}, node=NODE)
        apply_node_side(session, event)
        assert session.get(Node, NODE).attestations_verified == 1  # type: ignore[union-attr]
