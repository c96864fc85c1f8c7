"""The host's end of the virtio-serial channel to a guest's agent (guest/agent.py).

One JSON object per line, the host asks and the guest answers. The guest is untrusted by
the host and the host by the guest: what crosses here is either checked by a verifier (a
report) or sealed to the guest's attested key (secrets), so the channel needs no security
of its own. QEMU exposes the port as a Unix socket the launcher connects to.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from node_agent.errors import GuestRefused, LauncherError

MAX_ANSWER = 1 << 20


class GuestChannel:
    """Requests to one guest's agent over QEMU's Unix socket for the port."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def request(self, message: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        """Send `message`, return the agent's answer; LauncherError if it refuses or is silent."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        answer = self._exchange(message, deadline)
        if not answer.get("ok"):
            error = f"guest agent refused {message.get('op')}: {answer.get('error')}"
            # `retry`: the agent failed (I/O), it did not refuse; worth asking again.
            raise LauncherError(error) if answer.get("retry") else GuestRefused(error)
        return answer

    def attest(
        self, lease_id: int, report_data: bytes, ready_timeout_s: float
    ) -> tuple[dict[str, Any], bytes, bytes]:
        """Ask the guest agent for a report on this lease's REPORT_DATA binding: its answer,
        its public key and the REPORT_DATA it bound (binding ‖ sha256(key), checked here)."""
        self.wait_ready(ready_timeout_s)
        answer = self.request({"op": "attest", "lease_digest": report_data[:32].hex()})
        try:
            guest_key = bytes.fromhex(answer["guest_key"])
            bound = bytes.fromhex(answer["report_data"])
        except (KeyError, ValueError, TypeError) as exc:
            raise LauncherError(f"lease {lease_id}: the guest agent's answer is malformed") from exc
        if bound[:32] != report_data[:32] or hashlib.sha256(guest_key).digest() != bound[32:]:
            raise LauncherError(f"lease {lease_id}: the guest bound another REPORT_DATA")
        return answer, guest_key, bound

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Ask `hello` until the guest agent answers (it starts a few seconds after boot)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self._exchange({"op": "hello"}, min(deadline, time.monotonic() + 3.0))
            except LauncherError as exc:
                last = exc
                time.sleep(0.2)
        raise LauncherError(f"the guest agent did not answer within {timeout_s:.0f} s ({last})")

    def _exchange(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        # An id per request: an answer to an earlier, abandoned request may still be queued.
        request_id = secrets.token_hex(8)
        message = {**message, "id": request_id}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                conn.connect(str(self.socket_path))
                conn.sendall(json.dumps(message).encode() + b"\n")
                buffer = b""
                while True:
                    while b"\n" not in buffer:
                        conn.settimeout(max(0.1, deadline - time.monotonic()))
                        chunk = conn.recv(65536)
                        if not chunk:
                            raise LauncherError("the guest channel closed")
                        buffer += chunk
                        if len(buffer) > MAX_ANSWER:
                            raise LauncherError("the guest agent's answer is too large")
                    line, buffer = buffer.split(b"\n", 1)
                    answer = _parse(line)
                    if answer.get("id") == request_id:
                        return answer
        except (OSError, TimeoutError) as exc:
            raise LauncherError(f"no answer on the guest channel: {exc}") from exc


def _parse(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise LauncherError("the guest agent answered something that is not JSON") from exc
    if not isinstance(answer, dict):
        raise LauncherError("the guest agent's answer is not an object")
    return answer
