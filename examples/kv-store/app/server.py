"""A small key-value store over HTTP, on SQLite, for a cvm confidential VM.

    PUT    /kv/<key>   body = the value (at most 1 MiB)   -> {"key", "size"}
    GET    /kv/<key>   -> the value (application/octet-stream), 404 if absent
    DELETE /kv/<key>   -> {"key", "deleted"}
    GET    /kv         -> {"keys": [...]} (at most 1000, sorted)
    GET    /health     -> {"ok": true} (no token needed)

Every /kv request needs `Authorization: Bearer <KV_TOKEN>`, the secret the renter releases to
the attested guest (the supervisor gives it as the KV_TOKEN environment variable, and as the
file /run/cvm/secrets/KV_TOKEN). The database lives on the lease's encrypted, integrity-checked
disk (KV_DATABASE, /data by default): each write is committed with a full sync before the
answer, so it survives a guest restart. Standard library only (python3's sqlite3 module).
"""

from __future__ import annotations

import hmac
import json
import os
import re
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"  # the guest's TLS front forwards the declared port here
PORT = int(os.environ.get("KV_PORT", "8080"))
DATABASE = Path(os.environ.get("KV_DATABASE", "/data/kv.sqlite3"))
SECRET_FILE = Path("/run/cvm/secrets/KV_TOKEN")
KEY = re.compile(r"^[A-Za-z0-9._-]{1,256}$")
MAX_VALUE = 1 << 20
MAX_LIST = 1000


def token() -> bytes:
    value = os.environ.get("KV_TOKEN", "").strip()  # as the file's: a trailing newline is no part
    if value:
        return value.encode()
    try:
        return SECRET_FILE.read_bytes().strip()
    except OSError:
        return b""


class Store:
    """One SQLite connection, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=DELETE")
        # EXTRA, not FULL: in DELETE mode a transaction commits when its rollback journal is
        # unlinked, and only EXTRA syncs the directory after that. With FULL, a guest killed
        # a few seconds after an answered PUT came back with the journal still there, and
        # SQLite rolled the acknowledged write back (seen in `make demo-service`).
        self.db.execute("PRAGMA synchronous=EXTRA")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def put(self, key: str, value: bytes) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def get(self, key: str) -> bytes | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete(self, key: str) -> bool:
        with self.lock:
            return self.db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount > 0

    def keys(self) -> list[str]:
        with self.lock:
            rows = self.db.execute("SELECT key FROM kv ORDER BY key LIMIT ?", (MAX_LIST,))
            return [row[0] for row in rows]


class Handler(BaseHTTPRequestHandler):
    server_version = "cvm-kv-store/1"
    store: Store

    def _json(self, status: int, body: dict[str, object]) -> None:
        self._raw(status, json.dumps(body, sort_keys=True).encode() + b"\n", "application/json")

    def _raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _key(self) -> str | None:
        """The key of a /kv/<key> path ("" for /kv), None (answered) when refused."""
        path = urlsplit(self.path).path
        if path == "/health" and self.command == "GET":
            self._json(200, {"ok": True})
            return None
        if path != "/kv" and not path.startswith("/kv/"):
            self._json(404, {"error": "use /kv/<key> or /health"})
            return None
        expected = token()
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not expected or not hmac.compare_digest(given, expected):
            self._json(401, {"error": "missing or wrong bearer token (the KV_TOKEN secret)"})
            return None
        key = unquote(path.removeprefix("/kv").removeprefix("/"))
        if key and not KEY.match(key):
            self._json(400, {"error": "a key is 1 to 256 characters of A-Z a-z 0-9 . _ -"})
            return None
        return key

    def do_GET(self) -> None:
        key = self._key()
        if key is None:
            return
        if not key:
            self._json(200, {"keys": self.store.keys()})
            return
        value = self.store.get(key)
        if value is None:
            self._json(404, {"error": f"no key {key}"})
        else:
            self._raw(200, value, "application/octet-stream")

    def do_PUT(self) -> None:
        key = self._key()
        if not key:
            if key == "":
                self._json(400, {"error": "PUT /kv/<key>"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(411, {"error": "Content-Length is required"})
            return
        if not 0 <= length <= MAX_VALUE:
            self._json(413, {"error": f"a value is at most {MAX_VALUE} bytes"})
            return
        value = self.rfile.read(length)
        self.store.put(key, value)
        self._json(200, {"key": key, "size": len(value)})

    def do_DELETE(self) -> None:
        key = self._key()
        if not key:
            if key == "":
                self._json(400, {"error": "DELETE /kv/<key>"})
            return
        self._json(200, {"key": key, "deleted": self.store.delete(key)})

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write("kv-store: " + (format % args) + "\n")
        sys.stdout.flush()


def main() -> None:
    Handler.store = Store(DATABASE)
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    print(f"kv-store: {DATABASE} on {HOST}:{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
