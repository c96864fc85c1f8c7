"""`cvm lease show`: a lease that failed over shows each node it ran on, with when and why
its time there ended, in the table and in --json (`nodes`)."""

from __future__ import annotations

import io

from rich.console import Console

from cvm.api_models import LeaseNodeView
from cvm.chain import Attestation, AttestationStatus, CloseReason, Lease, LeaseStatus, TeeType
from cvm.cli.renter import _lease_table, node_history_text
from cvm.renter import LeaseReport

OLD = "0x" + "0A" * 20
NEW = "0x" + "0B" * 20


def report(nodes: tuple[LeaseNodeView, ...] | None) -> LeaseReport:
    lease = Lease(
        1, "0x" + "cc" * 20, 1_700_000_012, 0, CloseReason.NONE, NEW, 20, LeaseStatus.ACTIVE,
        10**18, 0, TeeType(1), 1, 512, 1, 0, 100,
    )  # fmt: skip
    attestation = Attestation(1, AttestationStatus.NONE, "0x" + "00" * 20, b"\0" * 32,
                              b"\0" * 48, 0, 0, 0, 0)  # fmt: skip
    return LeaseReport(lease, attestation, 0, 10**18, nodes=nodes, snapshot_epoch=3)


HISTORY = (
    LeaseNodeView(node=OLD, accepted_at=1_700_000_002, ended_at=1_700_000_009,
                  reason="attestation_expired"),
    LeaseNodeView(node=NEW, accepted_at=1_700_000_012),
)  # fmt: skip


def rendered(value: LeaseReport) -> str:
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(_lease_table(value, 18))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_json_carries_the_history_or_says_it_is_unknown() -> None:
    assert report(None).as_dict()["nodes"] is None
    assert report(None).as_dict()["snapshot_epoch"] == 3
    assert report(HISTORY).as_dict()["nodes"] == [
        {"node": OLD, "accepted_at": 1_700_000_002, "ended_at": 1_700_000_009,
         "reason": "attestation_expired"},
        {"node": NEW, "accepted_at": 1_700_000_012, "ended_at": None, "reason": None},
    ]  # fmt: skip


def test_the_table_lists_each_node_once_the_lease_moved() -> None:
    text = rendered(report(HISTORY))
    assert "node 1" in text and "node 2" in text
    assert "(attestation expired)" in text
    assert "snapshot epoch" in text
    assert f"{NEW} from" in text and "until now" in text
    # One node that still serves it: nothing more than the node row.
    assert "node 1" not in rendered(report(HISTORY[1:]))


def test_one_line_per_node() -> None:
    assert node_history_text(HISTORY[1]).endswith("until now")
    assert node_history_text(HISTORY[0]).endswith("(attestation expired)")
