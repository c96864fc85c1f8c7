"""The node's side of the guest relay: announce where each guest serves SSH and its service
ports (forwarded from the launcher's public host), and carry the renter's sealed secrets
from the backend to the guest agent.

The node only ever holds ciphertext: the secrets are sealed to a key that never leaves the
guest, and the guest agent refuses anything not sealed to a report it made, not signed by
the lease's renter (EIP-712, which the node cannot forge) or not above the last sequence
number it installed. The node passes `seq` and `signature` through unchanged, in seq order.
After a pass that handed anything over (and once per guest), it relays the guest's signed
`status` (the seq it installed, signed by its attested signer) to the backend, where the
renter's client checks it: a withheld message shows there, and the node cannot fake one.
What is kept here is which messages were delivered (their ids), never their content.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import MAX_SEALED_SEQ
from node_agent.errors import GuestRefused, LauncherError
from node_agent.launcher.qemu import QemuLauncher

log = logging.getLogger(__name__)
_SIGNATURE = re.compile(r"[0-9a-f]{130}")


class GuestRelay:
    """Per running lease: access (SSH and service ports) announced once per set of forwards,
    sealed secrets delivered once."""

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

    def sync(self, lease_id: int) -> list[str]:
        """Announce access if not yet done for this guest, deliver new sealed secrets; the
        names installed. Errors are logged and retried on the next pass."""
        try:
            port = self.launcher.ssh_port(lease_id)
            forwards = self.launcher.port_forwards(lease_id)
        except LauncherError:
            return []  # no cvm image, no agent: nothing to relay
        host = self.launcher.public_host
        announced = [host, port, [list(forward) for forward in forwards]]
        state = self._state(lease_id)
        if state.get("guest") != self.launcher.guest_dir(lease_id).stat().st_ino:
            state = {"guest": self.launcher.guest_dir(lease_id).stat().st_ino, "delivered": []}
        installed: list[str] = []
        try:
            if state.get("announced") != announced:
                self.api.announce_guest_access(
                    lease_id, host, port, node_key=self.node_key.key, ports=forwards
                )
                state["announced"] = announced
                self._save(lease_id, state)
            sealed = self.api.sealed_secrets_as_node(lease_id, node_key=self.node_key.key)
            delivered = list(state.get("delivered", []))  # type: ignore[call-overload]
            handed_before = len(delivered)
            # In seq order: the guest refuses a seq below one it installed.
            for message in sorted(sealed, key=lambda m: (m.seq, m.id)):
                if message.id in delivered:
                    continue
                try:
                    names = self.launcher.deliver_secrets(lease_id, message.model_dump())
                except GuestRefused as exc:
                    # Sealed to another guest (an old report, a restarted guest): never opens
                    # here, so it is not retried either.
                    log.warning(
                        "lease %s: sealed message %s refused: %s", lease_id, message.id, exc
                    )
                    names = []
                except LauncherError as exc:
                    # No answer (timeout, agent not up yet) or a failing agent: the message
                    # is not lost, the next pass delivers it again.
                    log.warning(
                        "lease %s: sealed message %s not delivered yet: %s",
                        lease_id,
                        message.id,
                        exc,
                    )
                    break
                delivered.append(message.id)
                state["delivered"] = delivered
                self._save(lease_id, state)
                installed += names
                log.info("lease %s: delivered sealed message %s", lease_id, message.id)
            if len(delivered) != handed_before or "reported_seq" not in state:
                self._relay_status(lease_id, state)
        except ApiError as exc:
            log.warning("lease %s: guest relay: %s", lease_id, exc)
        return installed

    def _relay_status(self, lease_id: int, state: dict[str, object]) -> None:
        """The guest's signed status to the backend (ApiError goes to the caller)."""
        try:
            answer = self.launcher.channel(lease_id).request({"op": "status"})
        except LauncherError as exc:  # not bound yet (no report asked for), or not up
            log.debug("lease %s: no guest status yet: %s", lease_id, exc)
            return
        seq, signature = answer.get("seq"), answer.get("signature")
        if (
            isinstance(seq, bool)
            or not isinstance(seq, int)
            or not 0 <= seq <= MAX_SEALED_SEQ
            or not isinstance(signature, str)
            or not _SIGNATURE.fullmatch(signature)
        ):
            log.warning("lease %s: the guest's status answer is malformed", lease_id)
            return
        self.api.put_guest_status(lease_id, seq, signature, node_key=self.node_key.key)
        state["reported_seq"] = seq
        self._save(lease_id, state)
