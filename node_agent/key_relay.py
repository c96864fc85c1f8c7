"""The node's side of the threshold key: carry the lease's key manifest, sealed secret bundle
and the key holders' releases from the backend to the guest agent (`{"op": "keys"}`).

Everything carried is the renter's signed manifest and ciphertext: each holder sealed its
share (HPKE auth mode) to a report this guest made, the bundle is sealed under a key derived
from the root key, and the guest checks the renter's signature, the senders against the
manifest and the combined key against its commitment. The node cannot forge, open or
replay any of it to another guest; it can only withhold it (the guest then waits).

Per running guest (its directory's inode, as the secret relay does) the set of releases
handed over is remembered, so each pass costs one backend read and a guest request only when
something new arrived or the key is not installed yet. A lease without a key deposit (404)
has nothing to carry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient, ApiError
from node_agent.errors import GuestRefused, LauncherError
from node_agent.launcher.qemu import QemuLauncher

log = logging.getLogger(__name__)

# The newest releases handed over per request (the guest takes at most 64; a lease's holders
# are at most 16, each with a release per report of its guests).
MAX_RELEASES = 48


class KeyRelay:
    """Per running lease: the threshold key's pieces, handed to the guest until it installs."""

    def __init__(
        self,
        api: ApiClient,
        node_key: LocalAccount,
        launcher: QemuLauncher,
        state_dir: Path,
    ) -> None:
        self.api = api
        self.node_key = node_key
        self.launcher = launcher
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

    def _state_path(self, lease_id: int) -> Path:
        return self.state_dir / f"lease-{lease_id}.json"

    def _state(self, lease_id: int) -> dict[str, object]:
        try:
            return dict(json.loads(self._state_path(lease_id).read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, lease_id: int, state: dict[str, object]) -> None:
        path = self._state_path(lease_id)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, path)

    def forget(self, lease_id: int) -> None:
        """The lease left this node: its record goes."""
        self._state_path(lease_id).unlink(missing_ok=True)

    def sync(self, lease_id: int) -> bool:
        """Hand the key's pieces to the guest if anything new came; True once the guest says
        its key is installed. Errors are logged and retried on the next pass."""
        try:
            guest = self.launcher.guest_dir(lease_id).stat().st_ino
            channel = self.launcher.channel(lease_id)
        except (LauncherError, OSError):
            return False  # no cvm image (no agent), or the guest is gone
        state = self._state(lease_id)
        if state.get("guest") != guest:
            state = {"guest": guest}
        try:
            keys = self.api.get_guest_keys(lease_id, node_key=self.node_key.key)
        except ApiError as exc:
            if exc.status_code != 404:  # 404: no key deposit, nothing to carry
                log.warning("lease %s: key relay: %s", lease_id, exc)
            return False
        releases = sorted(keys.releases, key=lambda r: r.created_at)[-MAX_RELEASES:]
        digest = hashlib.sha256(
            json.dumps(
                [keys.key_version, keys.signature, [(r.holder, r.report_hash) for r in releases]]
            ).encode()
        ).hexdigest()
        if state.get("installed") == keys.key_version and state.get("handed") == digest:
            return True
        if state.get("handed") == digest:
            return False  # the guest has all there is; it waits for more holders
        request = {
            "op": "keys",
            "manifest": keys.manifest.model_dump(mode="json"),
            "signature": keys.signature,
            "bundle": keys.bundle,
            "releases": [
                {"enc": r.enc, "ciphertext": r.ciphertext, "sender": r.sender} for r in releases
            ],
        }
        try:
            answer = channel.request(request)
            installed = answer.flag("installed")
            shares = answer.integer("shares", minimum=0, maximum=64)
        except GuestRefused as exc:
            # Refused (e.g. a manifest of another renter, an older key version): the same
            # pieces are not handed again, only new ones.
            log.warning("lease %s: the guest refused the key: %s", lease_id, exc)
            state["handed"] = digest
            self._save(lease_id, state)
            return False
        except LauncherError as exc:  # not answering yet: the next pass hands it again
            log.info("lease %s: keys not handed yet: %s", lease_id, exc)
            return False
        state["handed"] = digest
        if installed:
            state["installed"] = keys.key_version
        self._save(lease_id, state)
        log.info("lease %s: key version %s handed to the guest: %s share(s), installed %s",
                 lease_id, keys.key_version, shares, installed)  # fmt: skip
        return installed
