"""The node's side of `cvm lease logs`: ship the tail of each guest's serial console to the
backend, signed by the node key, a chunk at a time.

The console is read from QEMU's serial log on this host, so the renter is told it is
untrusted (the host sees and could change it). Per lease the relay remembers which guest
(its log file) it read, how far, and the stream position reached, so a restarted guest
continues the lease's stream and nothing is sent twice; output that piles up faster than
the backend keeps (`CONSOLE_TAIL_BYTES`) is skipped, leaving a gap the backend sees.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient
from cvm.api_models import CONSOLE_CHUNK_MAX_BYTES, CONSOLE_TAIL_BYTES
from cvm.eip712 import Domain

log = logging.getLogger(__name__)


class ConsoleRelay:
    """Ships new console output of running guests; state per lease under `state_dir`."""

    def __init__(self, api: ApiClient, node_key: LocalAccount, state_dir: Path) -> None:
        self.api = api
        self.node_key = node_key
        self.state_dir = state_dir
        self._chain_domain: Domain | None = None
        state_dir.mkdir(parents=True, exist_ok=True)

    def _domain(self) -> Domain:
        if self._chain_domain is None:
            self._chain_domain = self.api.domain()
        return self._chain_domain

    def _state_path(self, lease_id: int) -> Path:
        return self.state_dir / f"lease-{lease_id}.json"

    def _state(self, lease_id: int) -> dict[str, int]:
        try:
            saved = json.loads(self._state_path(lease_id).read_text())
            return {key: int(value) for key, value in saved.items()}
        except (FileNotFoundError, ValueError, AttributeError):
            return {}

    def _save(self, lease_id: int, state: dict[str, int]) -> None:
        path = self._state_path(lease_id)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, path)

    def ship(self, lease_id: int, console_log: Path) -> int:
        """Send what the guest wrote to `console_log` since the last call; the bytes sent.
        `ApiError` if the backend refuses (what was not accepted is sent again next time)."""
        try:
            status = console_log.stat()
        except FileNotFoundError:
            return 0
        state = self._state(lease_id)
        if state.get("guest") != status.st_ino or status.st_size < state.get("read", 0):
            # Another guest (relaunched) or a truncated log: read it from its start, and
            # carry on the lease's stream where it was.
            state = {"guest": status.st_ino, "read": 0, "sent": state.get("sent", 0)}
        pending = status.st_size - state["read"]
        if pending > CONSOLE_TAIL_BYTES:
            skipped = pending - CONSOLE_TAIL_BYTES
            state["read"] += skipped
            state["sent"] += skipped
            log.info("lease %s: %d console bytes skipped (more than the backend keeps)",
                     lease_id, skipped)  # fmt: skip
        shipped = 0
        with console_log.open("rb") as source:
            source.seek(state["read"])
            while state["read"] < status.st_size:
                chunk = source.read(min(CONSOLE_CHUNK_MAX_BYTES, status.st_size - state["read"]))
                if not chunk:
                    break
                # Bytes the backend already holds (this relay's state was lost while the
                # guest ran on) are recognised by their offset and not stored twice.
                key, domain = self.node_key.key, self._domain()
                self.api.upload_console(lease_id, state["sent"], chunk, node_key=key, domain=domain)
                state["read"] += len(chunk)
                state["sent"] += len(chunk)
                shipped += len(chunk)
                self._save(lease_id, state)
        if state["read"] >= CONSOLE_TAIL_BYTES and console_log.stat().st_size == state["read"]:
            # All shipped and past what the backend keeps: empty the file, or a guest writing
            # to its console in a loop fills the host's disk. QEMU appends (O_APPEND), so it
            # writes on from the new start; the next pass sees a shorter file and reads it
            # from there, the stream going on. Bytes written between the size check and the
            # truncation are lost: a rare gap in an untrusted log, as when output is skipped.
            os.truncate(console_log, 0)
            state["read"] = 0
            log.debug("lease %s: console log emptied after shipping it", lease_id)
        self._save(lease_id, state)
        return shipped

    def prune(self, keep: set[int]) -> None:
        """Drop the state of every lease not in `keep` (those still running or about to):
        a relaunched guest of a kept lease goes on with its stream."""
        for path in self.state_dir.glob("lease-*.json"):
            suffix = path.stem.removeprefix("lease-")
            if suffix.isdigit() and int(suffix) not in keep:
                path.unlink(missing_ok=True)
