"""The guest's TLS front: each workload port reached from outside over TLS with the attested key.

For every port P the workload declares (/etc/cvm/workload.json "ports"), the front listens on
the guest's own network address (eth0, 10.0.2.15) port P, terminates TLS with the key the
guest made at boot (its SPKI hash is in the attested guest key, so a client that checks it
knows it reached this guest and nothing else) and relays the plain bytes to the app on
127.0.0.1:P, where the app listens only. The host forwards its public port to guest port P.

Bounds: at most MAX_CONNECTIONS at once, counted from the TCP accept (handshakes included:
a peer opening sockets it never finishes must not use up the agent's file descriptors; more
are closed at once), a handshake must finish within
HANDSHAKE_TIMEOUT_S, a connection idle both ways for IDLE_TIMEOUT_S is closed, and a
port whose app is not up yet closes the connection. TLS 1.2 at least, 1.3 preferred.

Standard library only (asyncio's TLS uses memory BIOs, so one thread serves every
connection without sharing an SSL object across threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

WORKLOAD_FILE = Path("/etc/cvm/workload.json")
GUEST_ADDRESS = "10.0.2.15"  # eth0, as /init sets it (QEMU user networking)
UPSTREAM_HOST = "127.0.0.1"
MAX_PORTS = 32
MAX_CONNECTIONS = 256
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 300.0
CHUNK = 64 * 1024
RESERVED_PORTS = frozenset({22})  # dropbear serves SSH on every address
# TLS 1.2 only with forward secrecy and AEAD; TLS 1.3's suites are all of that already.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class FrontError(Exception):
    """The front cannot start as asked (bad port list, unusable key)."""


@dataclass(frozen=True)
class Route:
    """Listen with TLS on (listen_host, listen_port), relay to (upstream_host, upstream_port)."""

    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int


def workload_ports(path: Path = WORKLOAD_FILE) -> list[int]:
    """The ports the workload declares, or [] when the image has no workload. A malformed
    list raises FrontError: the image is measured, so it is the renter's own mistake."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise FrontError(f"{path} is not readable JSON: {exc}") from exc
    entries = document.get("ports", []) if isinstance(document, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_PORTS:
        raise FrontError(f"{path}: ports must be a list of at most {MAX_PORTS}")
    ports: list[int] = []
    for entry in entries:
        port = entry.get("port") if isinstance(entry, dict) else entry
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise FrontError(f"{path}: a port must be an integer in [1, 65535], got {port!r}")
        if port in RESERVED_PORTS:
            raise FrontError(f"{path}: port {port} is the guest's SSH port")
        if port not in ports:
            ports.append(port)
    return ports


def server_context(certificate_pem: bytes, private_key_pem: bytes, key_dir: Path) -> ssl.SSLContext:
    """A server context presenting this certificate. `ssl` loads keys from files only: the
    key goes to a file readable by root alone in `key_dir` (a tmpfs) and is removed at once."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=key_dir, prefix="tls-", suffix=".pem")  # 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(certificate_pem + private_key_pem)
        context.load_cert_chain(name)
    except (OSError, ssl.SSLError) as exc:
        raise FrontError(f"the TLS key does not load: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return context


class TlsFront:
    """Serves `routes` with `context` on its own event loop (`start` runs it in a thread)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        routes: Iterable[Route],
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        log: Callable[[str], None] = print,
    ) -> None:
        self.context = context
        self.routes = list(routes)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.log = log
        self.active = 0
        self.listening: list[tuple[str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> list[tuple[str, int]]:
        """Listen on every route (those that cannot bind are logged and skipped) and serve
        in a daemon thread; the (host, port) pairs listened on."""
        self._thread = threading.Thread(target=self._run, name="cvm-tls-front", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        return list(self.listening)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        finally:
            self._ready.set()
        try:
            loop.run_forever()
        finally:
            for server in self._servers:
                server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _listen(self) -> None:
        for route in self.routes:
            try:
                server = await asyncio.start_server(
                    functools.partial(self._serve, route),
                    route.listen_host,
                    route.listen_port,
                    backlog=64,
                    limit=CHUNK,
                )
            except OSError as exc:
                self.log(f"TLS port {route.listen_port} not served: {exc}")
                continue
            self._servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            self.listening.append((str(host), int(port)))
            self.log(f"TLS on {host}:{port} -> {route.upstream_host}:{route.upstream_port}")

    # -- one connection --------------------------------------------------------------------
    async def _serve(
        self, route: Route, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        if self.active >= self.max_connections:
            client_w.close()
            return
        self.active += 1
        upstream_w: asyncio.StreamWriter | None = None
        try:
            try:  # TLS after the count: a handshake holds a slot too
                await client_w.start_tls(
                    self.context, ssl_handshake_timeout=self.handshake_timeout_s
                )
            except (TimeoutError, OSError, ssl.SSLError):
                return
            try:
                upstream_r, upstream = await asyncio.wait_for(
                    asyncio.open_connection(route.upstream_host, route.upstream_port),
                    CONNECT_TIMEOUT_S,
                )
            except (TimeoutError, OSError):
                return  # the app is not up (yet): the client sees the connection close
            upstream_w = upstream
            await self._relay(client_r, client_w, upstream_r, upstream)
        finally:
            self.active -= 1
            for writer in (upstream_w, client_w):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer.wait_closed(), 5)

    async def _relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways until both ends finished or the connection idled too long."""
        last = [asyncio.get_running_loop().time()]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while True:
                    chunk = await source.read(CHUNK)
                    if not chunk:
                        break
                    last[0] = asyncio.get_running_loop().time()
                    sink.write(chunk)
                    await sink.drain()
                if sink.can_write_eof():  # plain TCP upstream: half-close; TLS cannot
                    sink.write_eof()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                pass

        tasks = [
            asyncio.ensure_future(pump(client_r, upstream_w)),
            asyncio.ensure_future(pump(upstream_r, client_w)),
        ]
        try:
            # Done when the app closed its side (it answered all it will), or when the client
            # closed and the app then did too, or when nothing moved for idle_timeout_s.
            while not tasks[1].done():
                pending = [task for task in tasks if not task.done()]
                await asyncio.wait(
                    pending,
                    timeout=min(self.idle_timeout_s, 30.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if asyncio.get_running_loop().time() - last[0] >= self.idle_timeout_s:
                    return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def start(
    certificate_pem: bytes,
    private_key_pem: bytes,
    *,
    workload: Path = WORKLOAD_FILE,
    listen_host: str = GUEST_ADDRESS,
    key_dir: Path = Path("/run/cvm/tls"),
    log: Callable[[str], None] = print,
) -> TlsFront | None:
    """The guest's front for its workload's ports (None when it declares none)."""
    ports = workload_ports(workload)
    if not ports:
        return None
    context = server_context(certificate_pem, private_key_pem, key_dir)
    front = TlsFront(
        context, [Route(listen_host, port, UPSTREAM_HOST, port) for port in ports], log=log
    )
    front.start()
    return front
