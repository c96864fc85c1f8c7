"""The guest's TLS front (guest/tls_front.py) on the host: a real TLS listener on a free port in
front of a real plain HTTP app on loopback, reached with a real TLS client."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from guest import tls_front
from guest.agent import GuestKeys
from tests.fixtures.processes import free_port


class _App(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + 6))
        self.end_headers()
        self.wfile.write(b"echo: " + body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def keys() -> GuestKeys:
    return GuestKeys()


@pytest.fixture
def app() -> Iterator[int]:
    """A plain HTTP app on 127.0.0.1 only, as a workload's service listens."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _front(keys: GuestKeys, tmp_path: Path, upstream: int, **kwargs) -> tls_front.TlsFront:
    context = tls_front.server_context(
        keys.tls_certificate_pem, keys.tls_private_key_pem(), tmp_path / "tls"
    )
    route = tls_front.Route("127.0.0.1", free_port(), "127.0.0.1", upstream)
    front = tls_front.TlsFront(context, [route], log=lambda _: None, **kwargs)
    assert front.start() == [("127.0.0.1", route.listen_port)]
    return front


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what is checked here is the key it presents
    return context


def _read_all(conn: ssl.SSLSocket) -> bytes:
    """Everything until the front closes (the app answers HTTP/1.0, then closes)."""
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


def _post(port: int, body: bytes) -> tuple[bytes, bytes, str]:
    """(answer, the server certificate's SPKI hash, TLS version) of one POST over TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with _client_context().wrap_socket(raw) as conn:
            request = (
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            conn.sendall(request)
            answer = _read_all(conn)
            der = conn.getpeercert(binary_form=True)
            version = conn.version() or ""
    spki = x509.load_der_x509_certificate(der).public_key()
    digest = hashlib.sha256(spki.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return answer, digest.digest(), version


def test_the_front_relays_tls_to_the_plain_app_with_the_attested_key(keys, app, tmp_path):
    front = _front(keys, tmp_path, app)
    try:
        body = b"x" * 200_000  # more than one read, both ways
        answer, spki, version = _post(front.listening[0][1], body)
        assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"echo: " + body)
        assert spki == keys.tls_spki_sha256 == keys.public[84:]
        assert version == "TLSv1.3"
        assert list((tmp_path / "tls").iterdir()) == []  # the key file is gone once loaded
    finally:
        front.stop()


def test_tls_1_1_and_plain_tcp_get_nothing(keys, app, tmp_path):
    front = _front(keys, tmp_path, app)
    port = front.listening[0][1]
    try:
        old = _client_context()
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, OSError)):
                old.wrap_socket(raw).do_handshake()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert b"HTTP" not in raw.recv(65536)  # never relayed in clear
    finally:
        front.stop()


def test_a_port_whose_app_is_not_up_closes_the_connection(keys, tmp_path):
    front = _front(keys, tmp_path, free_port())
    try:
        with socket.create_connection(("127.0.0.1", front.listening[0][1]), timeout=10) as raw:
            with _client_context().wrap_socket(raw) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert conn.recv(65536) == b""
    finally:
        front.stop()


def test_connections_beyond_the_bound_are_closed(keys, app, tmp_path):
    front = _front(keys, tmp_path, app, max_connections=1)
    port = front.listening[0][1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first_raw:
            with _client_context().wrap_socket(first_raw) as first:
                first.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
                # The first holds its slot (body unfinished); a second is closed at once.
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    got = b""
                    with contextlib.suppress(ssl.SSLError, OSError):  # closed before TLS
                        with _client_context().wrap_socket(raw) as second:
                            second.sendall(b"GET / HTTP/1.0\r\n\r\n")
                            got = second.recv(65536)
                    assert got == b""
                first.sendall(b"hello")
                assert _read_all(first).endswith(b"echo: hello")
    finally:
        front.stop()


def test_workload_ports_are_read_and_checked(tmp_path):
    path = tmp_path / "workload.json"
    assert tls_front.workload_ports(path) == []  # no workload: no front
    path.write_text(json.dumps({"ports": [{"name": "http", "port": 8080}, {"port": 9000}]}))
    assert tls_front.workload_ports(path) == [8080, 9000]
    for bad in ([{"port": 0}], [{"port": 70000}], [{"port": "80"}], [{"port": 22}], "80"):
        path.write_text(json.dumps({"ports": bad}))
        with pytest.raises(tls_front.FrontError):
            tls_front.workload_ports(path)
    path.write_text("{not json")
    with pytest.raises(tls_front.FrontError, match="not readable JSON"):
        tls_front.workload_ports(path)


def test_start_serves_the_workload_ports_with_the_guest_key(keys, app, tmp_path):
    workload = tmp_path / "workload.json"
    workload.write_text(json.dumps({"ports": [{"name": "http", "port": app}]}))
    assert tls_front.start(b"", b"", workload=tmp_path / "none.json") is None
    # 127.0.0.2 stands in for eth0: the app holds 127.0.0.1:P, the front the same P elsewhere.
    front = tls_front.start(
        keys.tls_certificate_pem,
        keys.tls_private_key_pem(),
        workload=workload,
        listen_host="127.0.0.2",
        key_dir=tmp_path / "tls",
        log=lambda _: None,
    )
    assert front is not None
    try:
        assert front.listening == [("127.0.0.2", app)]
        with socket.create_connection(("127.0.0.2", app), timeout=10) as raw:
            with _client_context().wrap_socket(raw) as conn:
                conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
                assert _read_all(conn).endswith(b"echo: hi")
    finally:
        front.stop()


def test_attack_sockets_that_never_handshake_count_against_the_bound(keys, app, tmp_path):
    """A network peer opens sockets and never starts TLS: beyond the bound they are closed at
    once (not after the handshake timeout), so a flood cannot use up the agent's file
    descriptors; and once they are gone a client is served again."""
    import select

    front = _front(keys, tmp_path, app, max_connections=2, handshake_timeout_s=600)
    port = front.listening[0][1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
    try:
        closed: set[int] = set()
        for _ in range(50):  # until the front closed the four beyond its bound
            readable, _, _ = select.select([s for s in idle if s.fileno() not in closed], [], [], 1)
            for sock in readable:
                if sock.recv(1) == b"":
                    closed.add(sock.fileno())
            if len(closed) >= 4:
                break
        assert len(closed) == 4
    finally:
        for sock in idle:
            sock.close()
    try:
        for _ in range(50):  # the front notices the closed sockets and frees their slots
            try:
                answer, _, _ = _post(port, b"again")
            except (OSError, ssl.SSLError):
                continue
            if answer.endswith(b"echo: again"):
                break
        assert answer.endswith(b"echo: again")
    finally:
        front.stop()
