"""The chain indexer: follows the cvm contracts' events into the store.

Each poll reads the head, and applies blocks up to `head - confirmations` in batches of
`batch_blocks`, one database transaction per batch (events, projections, block hashes and
the cursor move together, so a crash never leaves half a batch). An event already stored at
its (block, log index) is skipped: re-processing a block changes nothing. Before applying
anything, the hash of the last applied block is compared with the chain's; if it differs,
the indexer walks back to the newest block whose hash still matches (the fork point),
deletes everything it recorded past it, rebuilds the projections those events fed, and
applies the new branch. Restarts resume from the stored cursor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hexbytes import HexBytes
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from web3 import Web3
from web3.exceptions import BlockNotFound

from backend.indexer import projections
from backend.store import ChainEvent, IndexedBlock, IndexerCursor, Store
from cvm.chain.artifacts import load_artifact
from cvm.chain.deployment import Deployment
from cvm.chain.errors import ChainError
from cvm.chain.events import ChainEvent as DecodedEvent
from cvm.chain.events import EventDecoder

log = logging.getLogger(__name__)

CURSOR = "chain"
# How far back block hashes are kept: a reorg deeper than this is reported, not repaired.
KEPT_BLOCK_HASHES = 4096
# The contracts whose events make up the marketplace (token transfers are not indexed).
INDEXED_CONTRACTS = ("NodeRegistry", "LeaseMarket", "AttestationRegistry")


def marketplace_decoder(deployment: Deployment) -> EventDecoder:
    """A decoder of the events of NodeRegistry, LeaseMarket and AttestationRegistry only."""
    addresses = deployment.contracts()
    return EventDecoder(
        {name: (addresses[name], load_artifact(name).abi) for name in INDEXED_CONTRACTS}
    )


class _ChainMoved(ChainError):
    """A reorg landed while a batch was read: nothing of it is applied; the next poll retries."""


class IndexerError(Exception):
    """The indexer cannot proceed (e.g. a reorg deeper than everything it remembers)."""


@dataclass
class BatchResult:
    """What one poll did, for the services that react to new chain facts."""

    events: list[ChainEvent] = field(default_factory=list)
    reorged_from: int | None = None  # first block rolled back, if a reorg happened
    rebuilt_leases: set[int] = field(default_factory=set)
    rebuilt_nodes: set[str] = field(default_factory=set)


class Indexer:
    """Polls a chain through web3 and records decoded events; one instance per store."""

    def __init__(
        self,
        store: Store,
        w3: Web3,
        decoder: EventDecoder,
        *,
        start_block: int,
        confirmations: int,
        batch_blocks: int,
    ) -> None:
        if batch_blocks < 1 or confirmations < 0:
            raise ValueError("batch_blocks must be >= 1 and confirmations >= 0")
        self.store = store
        self.w3 = w3
        self.decoder = decoder
        self.start_block = start_block
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self._lock = threading.Lock()

    def cursor(self) -> int:
        """The last block applied (start_block - 1 before the first batch)."""
        with self.store.session() as session:
            row = session.get(IndexerCursor, CURSOR)
            return row.last_block if row is not None else self.start_block - 1

    def poll(self, keep_going: Callable[[], bool] | None = None) -> BatchResult:
        """Catch up to the confirmed head (detecting reorgs first); returns what changed.

        `keep_going` is asked before each batch (the leader lease's checkpoint: it renews the
        lease during a long catch-up); once it says no, the poll stops after the last whole
        batch and the cursor stays there."""
        with self._lock:
            result = BatchResult()
            safe_head = -1
            try:
                self._handle_reorg(result)
                safe_head = self.w3.eth.block_number - self.confirmations
                cursor = self.cursor()
                while cursor < safe_head:
                    if keep_going is not None and not keep_going():
                        log.warning("indexer: stopping at block %s: no longer the leader", cursor)
                        break
                    to_block = min(cursor + self.batch_blocks, safe_head)
                    self._apply_range(cursor + 1, to_block, result)
                    cursor = to_block
            except _ChainMoved as exc:
                log.info("%s; following the new branch on the next poll", exc)
            except (BlockNotFound, ChainError):
                # A reorg that shortened the chain between reading the head and reading its
                # blocks: every batch is one transaction, so stop here; the next poll sees
                # the fork. Any other failure is the caller's to report.
                if self.w3.eth.block_number - self.confirmations >= safe_head:
                    raise
                log.info("the chain shrank under this poll; following it on the next one")
        return result

    # --- applying -----------------------------------------------------------------------------

    def _block_hash(self, number: int) -> str:
        """The chain's hash of block `number` ("" if the chain no longer has it: reorged)."""
        try:
            return HexBytes(self.w3.eth.get_block(number)["hash"]).to_0x_hex().lower()
        except BlockNotFound:
            return ""

    def _apply_range(self, from_block: int, to_block: int, result: BatchResult) -> None:
        # The end block's hash is read before and after the logs: a reorg between the two
        # reads would pair one branch's logs with the other's hash, and the next poll could
        # not see it. Any reorg at or below `to_block` changes that hash.
        # The end block's header, once: its hash, timestamp and (for a one-block batch, the
        # usual one at the head) parent hash; the hash commits to the other two.
        try:
            end = self.w3.eth.get_block(to_block)
        except BlockNotFound:
            raise _ChainMoved(f"blocks {from_block}..{to_block} changed while being read") from None
        end_hash = HexBytes(end["hash"]).to_0x_hex().lower()
        decoded = self.decoder.fetch(self.w3, from_block, to_block)
        if self._block_hash(to_block) != end_hash:
            raise _ChainMoved(f"blocks {from_block}..{to_block} changed while being read")
        # The batch must continue the branch applied so far: a reorg below the cursor that
        # landed after this poll's reorg check would otherwise hide behind the new end hash.
        with self.store.new_session(read_only=True) as session:
            previous = session.get(IndexedBlock, from_block - 1)
        if previous is not None:
            if from_block == to_block:
                # Read before the logs in the header whose hash was read again after them.
                parent = HexBytes(end["parentHash"]).to_0x_hex()
                moved = False
            else:
                try:
                    parent = HexBytes(self.w3.eth.get_block(from_block)["parentHash"]).to_0x_hex()
                except BlockNotFound:
                    parent = ""
                moved = self._block_hash(to_block) != end_hash
            if parent.lower() != previous.hash or moved:
                raise _ChainMoved(f"block {from_block - 1} was reorged under this poll")
        timestamps: dict[int, int] = {to_block: int(end["timestamp"])}
        for event in decoded:
            if event.block_number not in timestamps:
                timestamps[event.block_number] = int(
                    self.w3.eth.get_block(event.block_number)["timestamp"]
                )
        with self.store.session() as session:
            hashes: dict[int, str] = {to_block: end_hash}
            for event in decoded:
                hashes[event.block_number] = event.block_hash.lower()
                row = self._record(session, event, timestamps[event.block_number])
                if row is not None:
                    result.events.append(row)
            for number, block_hash in hashes.items():
                session.merge(IndexedBlock(number=number, hash=block_hash))
            cursor = session.get(IndexerCursor, CURSOR)
            if cursor is None:
                session.add(IndexerCursor(name=CURSOR, last_block=to_block))
            else:
                cursor.last_block = to_block
            # Only recent hashes can reveal a reorg; older ones would only grow the table.
            session.execute(
                delete(IndexedBlock).where(IndexedBlock.number < to_block - KEPT_BLOCK_HASHES)
            )
        log.debug("indexed blocks %d..%d: %d events", from_block, to_block, len(decoded))

    def _record(self, session: Session, event: DecodedEvent, timestamp: int) -> ChainEvent | None:
        existing = session.scalar(
            select(ChainEvent).where(
                ChainEvent.block_number == event.block_number,
                ChainEvent.log_index == event.log_index,
            )
        )
        if existing is not None:
            return None  # idempotent: this log was applied already
        args = projections.json_args(event.args)
        lease_id, node = projections.subjects(event.name, args, session)
        row = ChainEvent(
            block_number=event.block_number,
            block_hash=event.block_hash.lower(),
            block_timestamp=timestamp,
            log_index=event.log_index,
            tx_hash=event.transaction_hash.lower(),
            contract=event.contract,
            name=event.name,
            lease_id=lease_id,
            node=node,
            args=args,
        )
        session.add(row)
        session.flush()
        projections.apply(session, row)
        session.flush()
        return row

    # --- reorgs -------------------------------------------------------------------------------

    def _handle_reorg(self, result: BatchResult) -> None:
        with self.store.session() as session:
            known = session.scalars(
                select(IndexedBlock).order_by(IndexedBlock.number.desc()).limit(1)
            ).first()
            if known is None or self._block_hash(known.number) == known.hash:
                return
            fork = self._find_fork(session)
            log.warning("reorg: rolling back blocks after %d", fork)
            result.reorged_from = fork + 1
            self._rollback(session, fork, result)

    def _find_fork(self, session: Session) -> int:
        """The newest remembered block whose hash the chain still has."""
        blocks: Sequence[IndexedBlock] = session.scalars(
            select(IndexedBlock).order_by(IndexedBlock.number.desc())
        ).all()
        head = self.w3.eth.block_number
        for block in blocks:
            if block.number > head:
                continue
            if self._block_hash(block.number) == block.hash:
                return block.number
        if blocks and blocks[-1].number > self.start_block:
            raise IndexerError("reorg deeper than every remembered block; re-index from scratch")
        return self.start_block - 1

    def _rollback(self, session: Session, fork: int, result: BatchResult) -> None:
        dropped = session.scalars(select(ChainEvent).where(ChainEvent.block_number > fork)).all()
        leases = {e.lease_id for e in dropped if e.lease_id is not None}
        nodes = {e.node for e in dropped if e.node is not None}
        session.execute(delete(ChainEvent).where(ChainEvent.block_number > fork))
        session.execute(delete(IndexedBlock).where(IndexedBlock.number > fork))
        session.flush()
        for lease_id in sorted(leases):
            projections.rebuild_lease(session, lease_id)
        for node in sorted(nodes):
            projections.rebuild_node(session, node)
        cursor = session.get(IndexerCursor, CURSOR)
        if cursor is not None:
            cursor.last_block = fork
        result.rebuilt_leases |= leases
        result.rebuilt_nodes |= nodes
