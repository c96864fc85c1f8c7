"""The host's end of the virtio-serial channel to a guest's agent (guest/agent.py).

One JSON object per line, the host asks and the guest answers. The guest is untrusted by
the host and the host by the guest: what crosses here is either checked by a verifier (a
report) or sealed to the guest's attested key (secrets), so the channel needs no security
of its own. QEMU exposes the port as a Unix socket the launcher connects to.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from cvm.attestation.binding import GuestKey, GuestKeyError, build_report_data, host_data
from node_agent.errors import GuestRefused, LauncherError

MAX_ANSWER = 1 << 20  # bytes in the one line that answers us
# While looking for our answer (the channel may hold answers to abandoned requests, or a
# hostile guest's chatter): at most this many lines and bytes, then the exchange fails.
MAX_EXCHANGE_LINES = 64
MAX_EXCHANGE_BYTES = 4 * MAX_ANSWER
MAX_JSON_DEPTH = 16  # the protocol nests two or three levels
HELLO_ATTEMPT_S = 3.0
MAX_ERROR_CHARS = 300  # of a refusal's reason, kept in the node's logs
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_PAST_DEADLINE = "no answer on the guest channel before the deadline"
_REQUIRED: Any = object()  # an accessor's default when the field must be there


class GuestChannel:
    """Requests to one guest's agent over QEMU's Unix socket for the port."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._bound: dict[str, Any] | None = None  # what `bind` bound the guest to

    def request(self, message: dict[str, Any], *, timeout_s: float | None = None) -> GuestAnswer:
        """Send `message`, return the agent's answer; LauncherError if it is silent, slow or
        malformed, GuestRefused if it refuses (`"ok": false` without `"retry": true`)."""
        op = str(message.get("op"))
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        answer = GuestAnswer(op, self._exchange(message, deadline))
        if not answer.flag("ok"):
            reason = answer.text("error", default="no reason given", max_chars=MAX_ERROR_CHARS)
            # Quoted: the text is the guest's, and goes into the node's logs.
            error = f"guest agent refused {op}: {reason!r}"
            # `retry`: the agent failed (I/O), it did not refuse; worth asking again.
            raise (
                LauncherError(error) if answer.flag("retry", default=False) else GuestRefused(error)
            )
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

    def wait_ready(self, timeout_s: float) -> GuestAnswer:
        """Ask `hello` until the guest agent answers (it starts a few seconds after boot);
        its answer. LauncherError once `timeout_s` passed, however the guest behaved."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            # A few seconds per attempt: QEMU accepts the connection before the agent runs,
            # and a hello sent then may never be read; a new one (new id) is.
            attempt = min(deadline, time.monotonic() + HELLO_ATTEMPT_S)
            try:
                return GuestAnswer("hello", self._exchange({"op": "hello"}, attempt))
            except LauncherError as exc:
                last = exc
                # A guest still booting refuses the connection at once: ask again soon, but
                # never past the deadline.
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise LauncherError(f"the guest agent did not answer within {timeout_s:.0f} s ({last})")

    def _exchange(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        """One request and its answer before `deadline` (time.monotonic()), whatever the guest
        does: the deadline is absolute, so a guest that trickles a byte at a time cannot
        stretch it, and only so many lines and bytes are read while looking for the answer."""
        # An id per request: an answer to an earlier, abandoned request may still be queued.
        request_id = secrets.token_hex(8)
        message = {**message, "id": request_id}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(_left(deadline))
                conn.connect(str(self.socket_path))
                conn.settimeout(_left(deadline))
                conn.sendall(json.dumps(message).encode() + b"\n")  # sendall: one total timeout
                buffer = b""
                received = lines = 0
                while True:
                    while b"\n" not in buffer:
                        if len(buffer) > MAX_ANSWER:
                            raise LauncherError("the guest agent's answer is too large")
                        conn.settimeout(_left(deadline))
                        chunk = conn.recv(65536)
                        if not chunk:
                            raise LauncherError("the guest channel closed")
                        received += len(chunk)
                        if received > MAX_EXCHANGE_BYTES:
                            raise LauncherError(
                                f"the guest agent sent over {MAX_EXCHANGE_BYTES} bytes"
                                " without answering"
                            )
                        buffer += chunk
                    line, buffer = buffer.split(b"\n", 1)
                    if len(line) > MAX_ANSWER:
                        raise LauncherError("the guest agent's answer is too large")
                    lines += 1
                    answer = _parse(line)
                    if answer.get("id") == request_id:
                        return answer
                    if lines >= MAX_EXCHANGE_LINES:
                        raise LauncherError(f"the guest agent sent {lines} lines without answering")
        except TimeoutError as exc:
            raise LauncherError(_PAST_DEADLINE) from exc
        except OSError as exc:
            raise LauncherError(f"no answer on the guest channel: {exc}") from exc


def _left(deadline: float) -> float:
    """The time left before `deadline`; LauncherError once it has passed (a timeout of 0
    would make the socket non-blocking, not fail)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise LauncherError(_PAST_DEADLINE)
    return left


# A string literal of JSON (escapes included) and the brackets that open or close a level.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def _parse(line: bytes) -> dict[str, Any]:
    """One line of the guest as a JSON object, its nesting checked before the parser sees it
    (json.loads recurses per level: 100,000 brackets would raise RecursionError)."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', line)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise LauncherError(
                f"the guest agent's answer nests deeper than {MAX_JSON_DEPTH} levels"
            )
    try:
        answer = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise LauncherError("the guest agent answered something that is not JSON") from exc
    if not isinstance(answer, dict):
        raise LauncherError("the guest agent's answer is not an object")
    return answer


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python accepts them, JSON does not


class GuestAnswer(dict[str, Any]):
    """An answer of the guest agent with typed accessors: each checks its field's type and
    bounds and raises LauncherError naming the request and the field, so that a guest's
    `"installed": 5` or `"ok": "yes"` is a clean error, never a TypeError far away.

    Still a dict (the protocol methods may read it as one), but callers should read what
    they use through these accessors.
    """

    def __init__(self, op: str, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.op = op

    def _malformed(self, name: str, wanted: str) -> LauncherError:
        return LauncherError(f"the guest agent's answer to {self.op}: {name} is not {wanted}")

    def _field(self, name: str, default: Any) -> Any:
        if name in self:
            return self[name]
        if default is _REQUIRED:
            raise LauncherError(f"the guest agent's answer to {self.op} has no {name}")
        return default

    def flag(self, name: str, default: Any = _REQUIRED) -> bool:
        """A boolean: true or false exactly (never "yes", 1 or null)."""
        value = self._field(name, default)
        if not isinstance(value, bool):
            raise self._malformed(name, "true or false")
        return value

    def integer(
        self, name: str, *, minimum: int = 0, maximum: int = 2**64 - 1, default: Any = _REQUIRED
    ) -> int:
        """An integer within [minimum, maximum] (a boolean is not one)."""
        value = self._field(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._malformed(name, "an integer")
        if not minimum <= value <= maximum:
            raise self._malformed(name, f"between {minimum} and {maximum}")
        return value

    def text(self, name: str, *, max_chars: int = 1024, default: Any = _REQUIRED) -> str:
        """A string of at most `max_chars` characters."""
        value = self._field(name, default)
        if not isinstance(value, str):
            raise self._malformed(name, "a string")
        if len(value) > max_chars:
            raise self._malformed(name, f"at most {max_chars} characters long")
        return value

    def hex_bytes(
        self, name: str, *, size: int | None = None, max_size: int = MAX_ANSWER // 2
    ) -> bytes:
        """Bytes written in hex: exactly `size` of them if given, else at most `max_size`."""
        value = self._field(name, _REQUIRED)
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise self._malformed(name, "hex")
        raw = bytes.fromhex(value)
        if size is not None and len(raw) != size:
            raise self._malformed(name, f"{size} bytes (it has {len(raw)})")
        if len(raw) > max_size:
            raise self._malformed(name, f"at most {max_size} bytes")
        return raw

    def texts(
        self, name: str, *, max_items: int = 256, max_chars: int = 1024, default: Any = _REQUIRED
    ) -> list[str]:
        """A list of at most `max_items` strings, each of at most `max_chars` characters."""
        value = self._field(name, default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._malformed(name, "a list of strings")
        if len(value) > max_items or any(len(item) > max_chars for item in value):
            raise self._malformed(name, f"at most {max_items} strings of {max_chars} characters")
        return list(value)

    def record(self, name: str, default: Any = _REQUIRED) -> GuestAnswer | None:
        """A nested object, read with the same accessors; `None` if the guest sent null."""
        value = self._field(name, default)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._malformed(name, "an object")
        return GuestAnswer(f"{self.op}.{name}", value)
