"""The tail of each lease's guest console: shipped by the lease's node, read by its renter.

The console is what the guest wrote to its serial port, as the host read it: the host sees
every byte and could change any, so this is a convenience for debugging, never evidence.
Access is still checked. The node signs each upload (EIP-712 `ConsoleUpload`: this lease,
these bytes at this stream offset, a fresh timestamp and a single-use nonce, so a captured
upload cannot be replayed); only the node that accepted the lease may ship, and only the
lease's renter may read. The backend keeps the last `CONSOLE_TAIL_BYTES` per lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from eth_utils import keccak
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.domain.addresses import parse_address
from backend.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from backend.domain.leases import consume_request_nonce
from backend.store import Lease
from backend.store.models import LeaseConsole
from cvm.api_models import (
    CONSOLE_CHUNK_MAX_BYTES,
    CONSOLE_TAIL_BYTES,
    NODE_HEADER,
    NONCE_HEADER,
    OFFSET_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ConsoleReceipt,
    LeaseConsoleView,
)
from cvm.eip712 import ConsoleUpload, Domain, SignatureError, check_timestamp, verify_node_message


@dataclass(frozen=True)
class SignedChunk:
    """A console upload as it arrived: the headers of a node-signed request and the bytes."""

    node: str | None
    timestamp: str | None
    nonce: str | None
    offset: str | None
    signature: str | None
    chunk: bytes


def _lease(session: Session, lease_id: int) -> Lease:
    lease = session.get(Lease, lease_id)
    if lease is None:
        raise NotFound(f"lease {lease_id}")
    return lease


def _verified(
    signed: SignedChunk, lease_id: int, domain: Domain, now: int, window_s: int
) -> ConsoleUpload:
    if None in (signed.node, signed.timestamp, signed.nonce, signed.offset, signed.signature):
        raise Unauthenticated(
            f"console uploads are signed by the lease's node: send {NODE_HEADER},"
            f" {TIMESTAMP_HEADER}, {NONCE_HEADER}, {OFFSET_HEADER} and {SIGNATURE_HEADER}"
            " (EIP-712 ConsoleUpload)"
        )
    assert signed.node is not None and signed.signature is not None
    address = parse_address(signed.node, NODE_HEADER)
    try:
        upload = ConsoleUpload(
            node=address,
            lease_id=lease_id,
            offset=int(signed.offset or ""),
            chunk_hash=bytes(keccak(signed.chunk)),
            timestamp=int(signed.timestamp or ""),
            nonce=int(signed.nonce or ""),
        )
        verify_node_message(upload, signed.signature, domain)
        check_timestamp(upload.timestamp, now, window_s)
    except (SignatureError, ValueError) as exc:
        raise Unauthenticated(f"console upload rejected: {exc}") from exc
    return upload


def append(
    session: Session,
    lease_id: int,
    signed: SignedChunk,
    *,
    domain: Domain,
    now: int,
    window_s: int,
    at: datetime,
) -> ConsoleReceipt:
    """Add a node's signed console bytes to the lease's tail (in a writing session).

    Bytes the backend already has (a retry after a lost answer) are not added twice; bytes
    past a gap (the node skipped output it could not ship in time) start the tail afresh.
    401: unsigned, badly signed or stale; 403: not the lease's node; 404: no such lease;
    409: the nonce was used before (a replay); 422: more than one chunk or no bytes.
    """
    lease = _lease(session, lease_id)
    if not signed.chunk:
        raise InvalidInput("empty console upload")
    if len(signed.chunk) > CONSOLE_CHUNK_MAX_BYTES:
        raise InvalidInput(f"a console upload carries at most {CONSOLE_CHUNK_MAX_BYTES} bytes")
    upload = _verified(signed, lease_id, domain, now, window_s)
    node = upload.node.lower()
    if lease.node != node:
        raise Forbidden(f"only the node that accepted lease {lease_id} ships its console")
    consume_request_nonce(session, node, upload.nonce, upload.timestamp, now=now, window_s=window_s)
    row = session.scalar(
        select(LeaseConsole).where(LeaseConsole.lease_id == lease_id).with_for_update()
    )
    if row is None:
        row = LeaseConsole(
            lease_id=lease_id, node=node, start_offset=upload.offset, end_offset=upload.offset,
            content=b"", updated_at=at,
        )  # fmt: skip
        session.add(row)
    if row.node != node or upload.offset > row.end_offset:
        # Another node's guest now (the lease moved), or a gap: the old tail does not join on.
        row.node, row.content = node, b""
        row.start_offset = row.end_offset = upload.offset
    fresh = signed.chunk[max(0, row.end_offset - upload.offset) :]
    if fresh:
        content = (row.content + fresh)[-CONSOLE_TAIL_BYTES:]
        row.end_offset += len(fresh)
        row.start_offset = row.end_offset - len(content)
        row.content = content
        row.updated_at = at
    session.flush()
    return ConsoleReceipt(lease_id=lease_id, start=row.start_offset, end=row.end_offset)


def read(session: Session, lease_id: int, renter: str, since: int = 0) -> LeaseConsoleView:
    """The lease's console tail from stream position `since` (or from the oldest byte
    kept), for its renter only (403 for anyone else)."""
    lease = _lease(session, lease_id)
    if lease.renter != renter:
        raise Forbidden("only the lease's renter reads its console")
    row = session.get(LeaseConsole, lease_id)
    if row is None:
        return LeaseConsoleView(
            lease_id=lease_id, node=lease.node, start=0, end=0, text="", updated_at=None
        )
    start = min(max(since, row.start_offset), row.end_offset)
    data = _whole_characters(row.content[start - row.start_offset :])
    return LeaseConsoleView(
        lease_id=lease_id,
        node=row.node,
        start=start,
        end=start + len(data),
        text=data.decode("utf-8", errors="replace"),
        updated_at=row.updated_at,
    )


def _whole_characters(data: bytes) -> bytes:
    """`data` without a UTF-8 sequence cut off at its end (it comes whole with the next
    read, which starts at the returned end), so a follower never sees a split character."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        needed = {0xC0: 2, 0xD0: 2, 0xE0: 3, 0xF0: 4}.get(byte & 0xF0, 0)
        if byte >= 0xF8:
            needed = 0  # not a lead byte of any UTF-8 sequence
        return data[:-back] if needed > back else data
    return data
