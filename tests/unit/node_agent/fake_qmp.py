"""A QMP server that replays a recorded QEMU conversation and fails on any deviation."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class RecordedQmp:
    """Serves `exchanges` ({"execute", "arguments"?, "return"}) in order on a unix socket.

    Every command received is kept in `received`; a command other than the next recorded
    one gets a QMP error and is kept in `unexpected`.
    """

    def __init__(
        self,
        socket_path: Path,
        greeting: dict[str, Any],
        exchanges: list[dict[str, Any]],
        on_quit: Callable[[], None] | None = None,
    ) -> None:
        self.greeting = greeting
        self.exchanges = list(exchanges)
        self.on_quit = on_quit
        self.received: list[dict[str, Any]] = []
        self.unexpected: list[dict[str, Any]] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(socket_path))
        self._server.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(json.dumps(self.greeting).encode() + b"\r\n")
                for command in _json_stream(conn):
                    if not self._answer(conn, command):
                        break

    def _answer(self, conn: socket.socket, command: dict[str, Any]) -> bool:
        """Reply to one command; False once the conversation is over (after `quit`)."""
        request_id = command.pop("id", None)
        self.received.append(command)
        expected = self.exchanges[0] if self.exchanges else None
        if (
            expected is not None
            and expected["execute"] == command.get("execute")
            # `"arguments": {}` and no arguments mean the same to QEMU.
            and (expected.get("arguments") or {}) == (command.get("arguments") or {})
        ):
            self.exchanges.pop(0)
            reply: dict[str, Any] = {"return": expected["return"]}
        else:
            self.unexpected.append(command)
            reply = {"error": {"class": "GenericError", "desc": "not in the recording"}}
        if request_id is not None:
            reply["id"] = request_id  # QMP echoes the id so clients can pair replies
        try:
            conn.sendall(json.dumps(reply).encode() + b"\r\n")
        except OSError:
            return False
        if command.get("execute") == "quit":
            if self.on_quit is not None:
                self.on_quit()
            return False
        return True


def _json_stream(conn: socket.socket) -> Iterator[dict[str, Any]]:
    """JSON objects as they arrive: QMP clients need not end them with a newline."""
    decoder = json.JSONDecoder()
    buffer = ""
    while True:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk.decode()
        while buffer.strip():
            try:
                value, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            yield value
