"""A guest agent on a Unix socket that behaves as a test says: answers, refuses, trickles,
chatters. The node's real `GuestChannel` talks to it exactly as to QEMU's agent socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What the guest does with one request: write to the connection whatever it likes.
Behaviour = Callable[["FakeGuest", dict[str, Any], socket.socket], None]


class FakeGuest:
    """Serves `behave` on `path` until `close()`; every request received is kept."""

    def __init__(self, path: Path, behave: Behaviour) -> None:
        self.behave = behave
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.finished = threading.Event()  # a behaviour that ran to its end sets it
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                self.requests.append(request)
                try:
                    self.behave(self, request, conn)
                except OSError:
                    return  # the node hung up


def answering(fields: dict[str, Any]) -> Behaviour:
    """Answers every request with `fields` (and its id)."""

    def behave(guest: FakeGuest, request: dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(json.dumps({**fields, "id": request["id"]}).encode() + b"\n")

    return behave


def answering_raw(line: bytes) -> Behaviour:
    """Answers every request with `line` as it is (after its id: `{"id": ..., <line>`)."""

    def behave(guest: FakeGuest, request: dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(b'{"id": ' + json.dumps(request["id"]).encode() + b", " + line + b"\n")

    return behave


def trickling(total_bytes: int, every_s: float = 0.05) -> Behaviour:
    """Answers one byte every `every_s`, `total_bytes` of them before the line ends: each read
    of the node gets something well within any per-read timeout."""

    def behave(guest: FakeGuest, request: dict[str, Any], conn: socket.socket) -> None:
        head = b'{"id": ' + json.dumps(request["id"]).encode() + b', "ok": true, "pad": "'
        body = head + b"x" * max(0, total_bytes - len(head) - 3) + b'"}\n'
        for index in range(len(body)):
            if guest.stopping.is_set():
                return
            conn.sendall(body[index : index + 1])
            time.sleep(every_s)
        guest.finished.set()

    return behave


def chattering(guest: FakeGuest, request: dict[str, Any], conn: socket.socket) -> None:
    """Writes well-formed lines for some other request, forever, and never answers."""
    line = json.dumps({"ok": True, "id": "not-yours"}).encode() + b"\n"
    while not guest.stopping.is_set():
        conn.sendall(line * 100)
