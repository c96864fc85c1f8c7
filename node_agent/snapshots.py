"""The node's side of rollback-proof snapshots (guest/snapshot.py does the sealing).

For each running lease whose guest has its snapshot keys (its `status` shows an `epoch`):
every `interval_s` (CVM_SNAPSHOT_INTERVAL_S, default 60) and on demand, ask the guest for
a snapshot, upload the chunk objects the backend does not hold yet (those of the lease's
previous snapshot are known to be there), then the sealed manifest, then the guest's epoch
record, which the key holders remember. When the guest's `status` says `restore_needed`
(a new guest after a failover, or a volume older than the holders' epoch), fetch the
latest snapshot from the backend and feed it to the guest: manifest, the chunks it asks
for, finish. The guest is the judge of what it accepts (lease, epoch, authenticity).

The node only ever handles ciphertext. Logs say how far it got, never what it carries.
Everything here is bounded: the number and size of chunks, the time each guest request
may take, retries of one upload, and how often a failing restore is tried again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import EpochRecordIn
from node_agent.errors import GuestRefused, LauncherError
from node_agent.guest_channel import GuestAnswer
from node_agent.launcher.qemu import QemuLauncher

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
CHUNK_SIZE = 512 * 1024  # as guest/snapshot.py
MAX_CHUNK_OBJECT = CHUNK_SIZE + 28  # nonce and tag
MAX_CHUNKS = 1024  # a 256 MiB snapshot in 512 KiB chunks (guest/snapshot.py's bound), twice
MAX_MANIFEST_BYTES = 256 * 1024
SNAPSHOT_TIMEOUT_S = 600.0  # freezing and reading the whole disk under emulation
CHUNK_TIMEOUT_S = 60.0
UPLOAD_ATTEMPTS = 3
RETRY_FIRST_S = 1.0
MAX_BACKOFF_S = 300.0
PROGRESS_EVERY = 32  # chunks between progress lines
_ID = re.compile(r"[0-9a-f]{64}")


class SnapshotFailed(Exception):
    """A snapshot or restore that did not complete; the message says where it stopped."""


class SnapshotRelay:
    """Per running lease: periodic snapshots uploaded, restores fed; state per lease is the
    set of chunk ids the backend is known to hold (those of the last uploaded snapshot)."""

    def __init__(
        self,
        api: ApiClient,
        node_key: LocalAccount,
        launcher: QemuLauncher,
        state_dir: Path,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.node_key = node_key
        self.launcher = launcher
        self.state_dir = state_dir
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self._next: dict[int, float] = {}  # lease -> when its next snapshot/restore is due
        self._failures: dict[int, int] = {}
        state_dir.mkdir(parents=True, exist_ok=True)

    # -- what to do -----------------------------------------------------------------------
    def sync(self, lease_id: int) -> str:
        """One pass for a running lease: "restored", "snapshot", or "" (nothing due or
        possible). Failures are logged and tried again later (backing off)."""
        if self.clock() < self._next.get(lease_id, 0.0):
            return ""
        status = self.guest_state(lease_id)
        if status is None:
            return ""
        restore_needed, required, epoch = status
        try:
            if restore_needed:
                self.restore(lease_id, required)
                self._succeeded(lease_id)
                return "restored"
            if epoch is not None and required is not None:
                self.snapshot(lease_id)
                self._succeeded(lease_id)
                return "snapshot"
        except (SnapshotFailed, LauncherError, ApiError) as exc:
            self._failed(lease_id, "restore" if restore_needed else "snapshot", exc)
        return ""

    def guest_state(self, lease_id: int) -> tuple[bool, int | None, int | None] | None:
        """(restore_needed, required_epoch, epoch) from the guest; None when it does not
        answer yet (not booted, or an agent without snapshots)."""
        try:
            # Not `status`: that one has the guest sign (slow under emulation), every pass.
            answer = self.launcher.channel(lease_id).request({"op": "snapshot_status"})
            restore_needed = answer.flag("restore_needed", default=False)
            required = _optional_int(answer, "required_epoch")
            epoch = _optional_int(answer, "epoch")
        except LauncherError as exc:
            log.debug("lease %s: no guest status for snapshots: %s", lease_id, exc)
            return None
        return restore_needed, required, epoch

    def _succeeded(self, lease_id: int) -> None:
        self._failures.pop(lease_id, None)
        self._next[lease_id] = self.clock() + self.interval_s

    def _failed(self, lease_id: int, what: str, exc: Exception) -> None:
        failures = self._failures.get(lease_id, 0) + 1
        self._failures[lease_id] = failures
        # Sooner at first, then less and less often (a backend or guest that stays down is
        # not hammered); a failed snapshot is tried again no later than the next one is due.
        delay = min(MAX_BACKOFF_S, RETRY_FIRST_S * 2 ** min(failures, 16))
        if what == "snapshot":
            delay = min(delay, self.interval_s)
        self._next[lease_id] = self.clock() + delay
        log.warning(
            "lease %s: %s failed (attempt %s, next in %.0f s): %s",
            lease_id,
            what,
            failures,
            delay,
            exc,
        )

    def forget(self, lease_id: int) -> None:
        """The lease is over here: its schedule and record go."""
        self._next.pop(lease_id, None)
        self._failures.pop(lease_id, None)
        self._state_path(lease_id).unlink(missing_ok=True)

    def prune(self, kept: set[int]) -> None:
        """Forget every lease not in `kept` (those this node no longer holds)."""
        known = set(self._next) | set(self._failures)
        for path in self.state_dir.glob("lease-*.json"):
            number = path.stem.removeprefix("lease-")
            if number.isdigit():
                known.add(int(number))
        for lease_id in known - kept:
            self.forget(lease_id)

    # -- snapshot -------------------------------------------------------------------------
    def snapshot(self, lease_id: int) -> int:
        """Take one snapshot now and upload what the backend lacks; its epoch."""
        channel = self.launcher.channel(lease_id)
        started = self.clock()
        taken = channel.request({"op": "snapshot"}, timeout_s=SNAPSHOT_TIMEOUT_S)
        epoch = taken.integer("epoch", minimum=1)
        manifest_id = taken.hex_bytes("manifest_id", size=32).hex()
        chunks = taken.texts("chunks", max_items=MAX_CHUNKS, max_chars=64)
        if not all(_ID.fullmatch(c) for c in chunks) or len(set(chunks)) != len(chunks):
            raise SnapshotFailed(f"lease {lease_id}: the guest's chunk ids are malformed")
        record = _record(taken, epoch, manifest_id)
        held = self._held(lease_id)
        missing = [c for c in chunks if c not in held]
        sent_bytes = 0
        try:
            for index, chunk_id in enumerate(missing, 1):
                got = channel.request(
                    {"op": "snapshot_chunk", "chunk": chunk_id}, timeout_s=CHUNK_TIMEOUT_S
                )
                data = _b64(got, "data", MAX_CHUNK_OBJECT)
                if hashlib.sha256(data).hexdigest() != chunk_id:
                    raise SnapshotFailed(f"lease {lease_id}: chunk {chunk_id[:12]} is not its id")
                self._retry(
                    f"chunk {chunk_id[:12]}",
                    lambda d=data: self.api.put_chunk(  # type: ignore[misc]
                        lease_id, d, node_key=self.node_key.key
                    ),
                )
                held.add(chunk_id)
                sent_bytes += len(data)
                if index % PROGRESS_EVERY == 0:
                    log.info(
                        "lease %s: snapshot epoch %s: %s of %s new chunks uploaded",
                        lease_id,
                        epoch,
                        index,
                        len(missing),
                    )
        finally:
            # What made it is kept even when a later upload failed (a rate limit, a quota):
            # the next snapshot, mostly the same chunks, resumes instead of starting over.
            self._save_held(lease_id, held)
        got = channel.request({"op": "snapshot_manifest", "epoch": epoch})
        manifest = _b64(got, "data", MAX_MANIFEST_BYTES)
        if hashlib.sha256(manifest).hexdigest() != manifest_id:
            raise SnapshotFailed(f"lease {lease_id}: the manifest is not the one announced")
        self._retry(
            "manifest",
            lambda: self.api.put_manifest(lease_id, epoch, manifest, node_key=self.node_key.key),
        )
        try:
            self._retry(
                "epoch record",
                lambda: self.api.post_epoch(lease_id, record, node_key=self.node_key.key),
            )
        except SnapshotFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError) and cause.status_code == 409:
                # The backend keeps a record only once every chunk its manifest lists is
                # stored: it lacks some this node took as held (lost, or removed). Forget
                # what is held, so the next snapshot uploads every chunk again.
                self._save_held(lease_id, set())
            raise
        self._save_held(lease_id, set(chunks))  # the backend holds these now
        log.info(
            "lease %s: snapshot epoch %s stored: %s chunks, %s uploaded (%s bytes), %.1f s",
            lease_id,
            epoch,
            len(chunks),
            len(missing),
            sent_bytes,
            self.clock() - started,
        )
        return epoch

    def _retry(self, what: str, call: Callable[[], object]) -> None:
        """`call` up to UPLOAD_ATTEMPTS times on a backend that did not answer or failed
        (5xx); a refusal (4xx) is final."""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                call()
                return
            except ApiError as exc:
                retryable = exc.status_code == 0 or exc.status_code >= 500
                if not retryable or attempt == UPLOAD_ATTEMPTS:
                    raise SnapshotFailed(f"{what} not stored: {exc}") from exc
                self.sleep(RETRY_FIRST_S * 2 ** (attempt - 1))

    # -- restore --------------------------------------------------------------------------
    def restore(self, lease_id: int, required: int | None) -> int:
        """Feed the lease's latest snapshot to its guest; the epoch restored."""
        channel = self.launcher.channel(lease_id)
        started = self.clock()
        try:
            latest = self.api.latest_snapshot(lease_id, node_key=self.node_key.key)
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            raise SnapshotFailed(
                f"lease {lease_id}: the guest needs a snapshot of epoch >= {required},"
                " the backend has none"
            ) from None
        epoch, manifest_id = latest.epoch, latest.manifest_id.removeprefix("0x").lower()
        if required is not None and epoch < required:
            # Fed anyway: the guest refuses it and says so on its console.
            log.warning(
                "lease %s: the latest snapshot (epoch %s) is older than the guest requires (%s)",
                lease_id,
                epoch,
                required,
            )
        manifest = self.api.get_manifest(lease_id, epoch, node_key=self.node_key.key)
        if len(manifest) > MAX_MANIFEST_BYTES or hashlib.sha256(manifest).hexdigest() != (
            manifest_id
        ):
            raise SnapshotFailed(f"lease {lease_id}: the backend's manifest {epoch} is not its id")
        try:
            answer = channel.request(
                {
                    "op": "restore_manifest",
                    "epoch": epoch,
                    "data": base64.b64encode(manifest).decode(),
                }
            )
        except GuestRefused as exc:
            raise SnapshotFailed(
                f"lease {lease_id}: snapshot epoch {epoch} refused: {exc}"
            ) from exc
        need = answer.texts("need", max_items=MAX_CHUNKS, max_chars=64)
        if not all(_ID.fullmatch(c) for c in need):
            raise SnapshotFailed(f"lease {lease_id}: the guest asks for malformed chunk ids")
        log.info("lease %s: restoring snapshot epoch %s: %s chunks", lease_id, epoch, len(need))
        for index, chunk_id in enumerate(need, 1):
            data = self.api.get_chunk(lease_id, chunk_id, node_key=self.node_key.key)
            if len(data) > MAX_CHUNK_OBJECT or hashlib.sha256(data).hexdigest() != chunk_id:
                raise SnapshotFailed(
                    f"lease {lease_id}: the backend's chunk {chunk_id[:12]} is bad"
                )
            channel.request(
                {"op": "restore_chunk", "chunk": chunk_id, "data": base64.b64encode(data).decode()},
                timeout_s=CHUNK_TIMEOUT_S,
            )
            if index % PROGRESS_EVERY == 0:
                log.info("lease %s: restore: %s of %s chunks fed", lease_id, index, len(need))
        done = channel.request({"op": "restore_finish"}, timeout_s=SNAPSHOT_TIMEOUT_S)
        restored = done.integer("epoch")
        self._save_held(lease_id, set(need))  # these are on the backend
        log.info(
            "lease %s: restored snapshot epoch %s (%s chunks) in %.1f s",
            lease_id,
            restored,
            len(need),
            self.clock() - started,
        )
        return restored

    # -- the per-lease record -------------------------------------------------------------
    def _state_path(self, lease_id: int) -> Path:
        return self.state_dir / f"lease-{lease_id}.json"

    def _held(self, lease_id: int) -> set[str]:
        try:
            held = json.loads(self._state_path(lease_id).read_text()).get("held", [])
        except (OSError, ValueError, AttributeError):
            return set()
        if not isinstance(held, list):
            return set()
        return {c for c in held[: 2 * MAX_CHUNKS] if isinstance(c, str) and _ID.fullmatch(c)}

    def _save_held(self, lease_id: int, chunks: set[str]) -> None:
        path = self._state_path(lease_id)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"held": sorted(chunks)[: 2 * MAX_CHUNKS]}))
        os.replace(temporary, path)


def _optional_int(answer: GuestAnswer, name: str) -> int | None:
    if answer.get(name) is None:
        return None
    return answer.integer(name)


def _b64(answer: GuestAnswer, name: str, max_bytes: int) -> bytes:
    text = answer.text(name, max_chars=4 * (max_bytes // 3 + 1))
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise SnapshotFailed(f"the guest's {answer.op} answer: {name} is not base64") from exc


def _record(answer: GuestAnswer, epoch: int, manifest_id: str) -> EpochRecordIn:
    """The epoch record as the backend takes it, its fields checked against the snapshot."""
    record = answer.record("record")
    if record is None:
        raise SnapshotFailed("the guest's snapshot has no epoch record")
    signature = record.text("signature", max_chars=128)
    snapshot = record.hex_bytes("snapshot", size=32).hex()
    key_version = record.integer("key_version", maximum=2**32 - 1)
    if record.integer("epoch") != epoch or snapshot != manifest_id:
        raise SnapshotFailed("the guest's epoch record names another snapshot")
    try:
        return EpochRecordIn(
            epoch=epoch, snapshot=snapshot, key_version=key_version, signature=signature
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        raise SnapshotFailed(f"the guest's epoch record is malformed: {exc}") from None
