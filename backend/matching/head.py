"""Dispatch at the head: a lease is matched and sent to a node as soon as its `LeaseCreated`
is in a block, not once the indexer's confirmation depth buried it.

The indexer still applies events `indexer_confirmations` deep (the projections, the API's
views and the verifier's votes wait for them). Dispatch alone acts at the head, because
everything it sets off is guarded by the chain itself: the node reads the lease at the head
and `acceptLease` reverts for a lease the chain does not have open, so a create that a reorg
drops can only cost a reservation, which expires at its deadline (the node's capacity comes
back) and is never re-matched (`match_lease` needs the lease indexed). A lease id that a
reorg gives to another create is the new lease for the node too: it reads the terms, the
renter and the private spec at the head, and checks the measurement before it accepts.

The matched node reads the private spec of a lease not yet indexed through the same window
(`created_at_head`), on any replica: only a node holding a live reservation for it may.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from web3 import Web3

from backend.indexer.indexer import Indexer
from backend.indexer.projections import json_args, lease_created
from backend.matching.service import Matcher
from backend.store import Lease
from cvm.chain import ChainClient

log = logging.getLogger(__name__)

# At most this many blocks above the indexer's cursor are read per pass (a far larger gap is
# a catch-up, which the indexer's own batches handle).
HEAD_WINDOW_BLOCKS = 256
# The events after which a lease created in the window is no longer open (a decline reopens it).
_TAKEN = ("LeaseAccepted", "LeaseClosed")
_REOPENED = ("LeaseDeclined",)


class HeadDispatch:
    """Matches the leases created above the indexer's confirmed cursor (on the indexer's
    leader, after each poll)."""

    def __init__(self, w3: Web3, indexer: Indexer, matcher: Matcher) -> None:
        self.w3 = w3
        self.indexer = indexer
        self.matcher = matcher

    def run(self) -> list[int]:
        """Match every lease created and still open in the blocks from the cursor to the head;
        the ids dispatched by this pass (a lease reserved before is not sent again)."""
        cursor = self.indexer.cursor()
        head = int(self.w3.eth.block_number)
        if head <= cursor:
            return []
        from_block = max(cursor + 1, head - HEAD_WINDOW_BLOCKS + 1)
        created: dict[int, Lease] = {}
        taken: set[int] = set()
        for event in self.indexer.decoder.fetch(self.w3, from_block, head):
            if event.name not in ("LeaseCreated", *_TAKEN, *_REOPENED):
                continue
            lease_id = int(event.args["leaseId"])
            if event.name == "LeaseCreated":
                created[lease_id] = lease_created(json_args(event.args), event.block_number)
            elif event.name in _TAKEN:
                taken.add(lease_id)
            else:
                taken.discard(lease_id)
        dispatched: list[int] = []
        for lease_id, lease in created.items():
            if lease_id in taken:
                continue
            before = self.matcher.live_node(lease_id)
            match = self.matcher.match_at_head(lease)
            if match is not None and before is None:
                log.info("lease %s: dispatched at the head (block %s)", lease_id, head)
                dispatched.append(lease_id)
        return dispatched


def created_at_head(
    reader: ChainClient, window_blocks: int = HEAD_WINDOW_BLOCKS
) -> Callable[[int], Lease | None]:
    """The lease a `LeaseCreated` in the last `window_blocks` blocks opened, as the store
    would keep it (never stored), or None: what the API answers a matched node from before
    the indexer has the lease."""

    def lease_at_head(lease_id: int) -> Lease | None:
        head = int(reader.w3.eth.block_number)
        start = max(reader.deployment.start_block, head - window_blocks + 1)
        event = reader.leases.created_event(lease_id, start)
        if event is None:
            return None
        return lease_created(json_args(event.args), event.block_number)

    return lease_at_head
