"""The host's end of the virtio-serial channel to a guest's agent (guest/agent.py).

One JSON object per line, the host asks and the guest answers. The guest is untrusted by
the host and the host by the guest: what crosses here is either checked by a verifier (a
report) or sealed to the guest's attested key (secrets), so the channel needs no security
of its own. QEMU exposes the port as a Unix socket the launcher connects to.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from cvm.attestation.binding import GuestKey, GuestKeyError, build_report_data, host_data
from node_agent.errors import GuestRefused, LauncherError

MAX_ANSWER = 1 << 20


class GuestChannel:
    """Requests to one guest's agent over QEMU's Unix socket for the port."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._bound: dict[str, Any] | None = None  # what `bind` bound the guest to

    def request(self, message: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        """Send `message`, return the agent's answer; LauncherError if it refuses or is silent."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        answer = self._exchange(message, deadline)
        if not answer.get("ok"):
            error = f"guest agent refused {message.get('op')}: {answer.get('error')}"
            # `retry`: the agent failed (I/O), it did not refuse; worth asking again.
            raise LauncherError(error) if answer.get("retry") else GuestRefused(error)
        return answer

    def bind(
        self,
        chain_id: int,
        registry: str,
        lease_id: int,
        renter: str,
        *,
        ready_timeout_s: float | None = None,
    ) -> bytes:
        """Bind the guest to one lease of one renter (protocol v2 `bind`), before its first
        report; the HOST_DATA both sides computed. With `ready_timeout_s`, waits for the
        agent first. GuestRefused when the guest is bound to anything else (it stays bound
        to its first lease for life); the same binding again is fine (idempotent)."""
        expected = host_data(chain_id, registry, lease_id, renter)  # ValueError: not a binding
        wanted = {
            "chain_id": chain_id,
            "registry": to_checksum_address(registry),
            "lease_id": lease_id,
            "renter": to_checksum_address(renter),
        }
        if ready_timeout_s is not None:
            hello = self.wait_ready(ready_timeout_s)
            bound = hello.get("bound")
            if bound is not None and self._binding_of(bound) != wanted:
                raise GuestRefused(f"lease {lease_id}: the guest is bound to another lease")
        answer = self.request({"op": "bind", **wanted})
        try:
            confirmed = bytes.fromhex(answer["host_data"])
        except (KeyError, ValueError, TypeError) as exc:
            raise LauncherError(f"lease {lease_id}: the guest's bind answer is malformed") from exc
        if confirmed != expected:
            raise LauncherError(f"lease {lease_id}: the guest bound another HOST_DATA")
        self._bound = wanted
        return expected

    def attest(self, lease_id: int, nonce: int) -> tuple[dict[str, Any], bytes, bytes]:
        """Ask the bound guest for a report on attestation `nonce` of its lease (protocol
        v2: the guest computes the lease digest itself). Its answer, its guest key (well
        formed, or LauncherError) and the REPORT_DATA it bound, checked to be exactly
        build_report_data(chain, registry, lease, nonce, guest key)."""
        bound = self._bound
        if bound is None or bound["lease_id"] != lease_id:
            raise LauncherError(f"lease {lease_id}: bind the guest before asking for a report")
        answer = self.request({"op": "attest", "nonce": nonce})
        try:
            guest_key = bytes.fromhex(answer["guest_key"])
            report_data = bytes.fromhex(answer["report_data"])
        except (KeyError, ValueError, TypeError) as exc:
            raise LauncherError(f"lease {lease_id}: the guest agent's answer is malformed") from exc
        try:
            # An empty or malformed key would be bound as sha256(b"...") and then rejected by
            # every verifier, with the node's bond: never taken from a guest.
            GuestKey.parse(guest_key)
        except GuestKeyError as exc:
            raise LauncherError(
                f"lease {lease_id}: the guest's key is not a guest key: {exc}"
            ) from exc
        expected = build_report_data(
            bound["chain_id"], bound["registry"], lease_id, nonce, guest_key
        )
        if report_data != expected:
            raise LauncherError(f"lease {lease_id}: the guest bound another REPORT_DATA")
        return answer, guest_key, report_data

    @staticmethod
    def _binding_of(bound: Any) -> dict[str, Any] | None:
        """A `hello` answer's `bound` in the form `bind` sends, or None when it is not one."""
        if not isinstance(bound, dict):
            return None
        chain_id, lease_id = bound.get("chain_id"), bound.get("lease_id")
        registry, renter = bound.get("registry"), bound.get("renter")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (chain_id, lease_id)):
            return None
        if not all(isinstance(v, str) and is_address(v) for v in (registry, renter)):
            return None
        return {
            "chain_id": chain_id,
            "registry": to_checksum_address(str(registry)),
            "lease_id": lease_id,
            "renter": to_checksum_address(str(renter)),
        }

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
