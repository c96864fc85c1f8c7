"""The node's side of `cvm lease logs`: ship the tail of each guest's serial console to the
backend, signed by the node key, a chunk at a time.

The console never touches the host's disk: QEMU keeps it in a ring buffer of its own
(`qemu_args.CONSOLE_RING_BYTES`), the agent takes it out on each pass and holds what the
backend has not accepted yet in a bounded buffer per lease (`budget_bytes`, what the backend
keeps anyway). A guest that floods its console (about 32 GB a day under TCG) only ever
costs the host those two buffers: older output is dropped, leaving a gap in the lease's
stream that the backend sees. The console is read on this host, so the renter is told it
is untrusted (the host sees and could change it). Per lease the relay remembers the stream
position reached, so a restarted guest continues the lease's stream and nothing is sent twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient
from cvm.api_models import CONSOLE_CHUNK_MAX_BYTES, CONSOLE_TAIL_BYTES
from cvm.eip712 import Domain

log = logging.getLogger(__name__)


class ConsoleRelay:
    """Ships new console output of running guests; its stream position per lease under
    `state_dir`, what is not shipped yet in memory (at most `budget_bytes` per lease)."""

    def __init__(
        self,
        api: ApiClient,
        node_key: LocalAccount,
        state_dir: Path,
        *,
        budget_bytes: int = CONSOLE_TAIL_BYTES,
    ) -> None:
        self.api = api
        self.node_key = node_key
        self.state_dir = state_dir
        self.budget_bytes = budget_bytes
        self._chain_domain: Domain | None = None
        self._pending: dict[int, bytearray] = {}
        # One lock per lease: the pass and a stopping lease (its last output) may ship at once.
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True)

    def _domain(self) -> Domain:
        if self._chain_domain is None:
            self._chain_domain = self.api.domain()
        return self._chain_domain

    def _lock(self, lease_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(lease_id, threading.Lock())

    def _state_path(self, lease_id: int) -> Path:
        return self.state_dir / f"lease-{lease_id}.json"

    def _offset(self, lease_id: int) -> int:
        """Where the lease's stream is: the offset of the first byte not shipped."""
        try:
            saved = json.loads(self._state_path(lease_id).read_text())
            # "sent": the stream position as agents before the ring buffer recorded it.
            return max(0, int(saved.get("offset", saved.get("sent", 0))))
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            return 0

    def _save(self, lease_id: int, offset: int) -> None:
        path = self._state_path(lease_id)
        temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps({"offset": offset}))
        os.replace(temporary, path)

    def pending(self, lease_id: int) -> int:
        """Bytes of the lease's console held here, not shipped yet (never over the budget)."""
        with self._lock(lease_id):
            return len(self._pending.get(lease_id, b""))

    def ship(self, lease_id: int, output: bytes = b"") -> int:
        """Add `output` (what the guest wrote since the last call) to what is pending and send
        it all; the bytes sent. `ApiError` if the backend refuses: what it did not accept
        stays pending (within the budget) and goes next time."""
        with self._lock(lease_id):
            pending = self._pending.setdefault(lease_id, bytearray())
            pending += output
            offset = self._offset(lease_id)
            if len(pending) > self.budget_bytes:
                # More than the backend keeps, or the backend was away: the oldest goes, and the
                # stream jumps over it (a gap the backend sees).
                skipped = len(pending) - self.budget_bytes
                del pending[:skipped]
                offset += skipped
                self._save(lease_id, offset)
                log.info("lease %s: %d console bytes skipped (more than the backend keeps)",
                         lease_id, skipped)  # fmt: skip
            shipped = 0
            while pending:
                chunk = bytes(pending[:CONSOLE_CHUNK_MAX_BYTES])
                # Bytes the backend already holds (this relay's state was lost while the
                # guest ran on) are recognised by their offset and not stored twice.
                key, domain = self.node_key.key, self._domain()
                self.api.upload_console(lease_id, offset, chunk, node_key=key, domain=domain)
                del pending[: len(chunk)]
                offset += len(chunk)
                shipped += len(chunk)
                self._save(lease_id, offset)
            return shipped

    def prune(self, keep: set[int]) -> None:
        """Drop the state of every lease not in `keep` (those still running or about to):
        a relaunched guest of a kept lease goes on with its stream."""
        for path in self.state_dir.glob("lease-*.json"):
            suffix = path.stem.removeprefix("lease-")
            if suffix.isdigit() and int(suffix) not in keep:
                path.unlink(missing_ok=True)
        with self._locks_guard:
            for lease_id in set(self._pending) - keep:
                self._pending.pop(lease_id, None)
