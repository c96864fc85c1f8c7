"""`cvm lease curl -H`: request headers, given inline or read from a file (so that a bearer
token, like the kv-store example's KV_TOKEN, never sits on a command line), reach the attested
server as given; a malformed one is refused before anything connects, without echoing it."""

from __future__ import annotations

import http.server
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cvm.attestation.sim import SimulatedSecureProcessor
from cvm.cli import app
from cvm.cli.guest import request_headers
from cvm.cli.plumbing import UsageError
from tests.fixtures.tls import pem_pair, self_signed, spki_hash
from tests.unit.test_attested_tls import GUEST_PORT, LEASE, renter_of

TOKEN = "s3cr3t-token-0123456789abcdef"


def test_headers_inline_and_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "auth"
    file.write_text(f"# the API key\nAuthorization: Bearer {TOKEN}\r\n\nX-Trace:  a b \n")
    assert request_headers(["Accept: text/plain", f"@{file}"]) == [
        ("Accept", "text/plain"),
        ("Authorization", f"Bearer {TOKEN}"),
        ("X-Trace", "a b"),
    ]
    assert request_headers([]) == []


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("no colon here", "a header is 'Name: value'"),
        ("Bad Name: x", "a header is 'Name: value'"),
        (f"Authorization: Bearer {TOKEN}\x1b[2J", "holds control characters"),
        ("Host: elsewhere.example", "set by the client itself"),
        ("Content-Length: 5", "set by the client itself"),
        ("@/nonexistent/auth", "cannot read it"),
    ],
)
def test_a_malformed_header_is_refused_without_echoing_it(given: str, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        request_headers([given])
    assert says in refused.value.message
    assert TOKEN not in refused.value.message


def test_a_header_file_too_large_or_not_text(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"A: b\n" * 20_000)
    with pytest.raises(UsageError, match="larger than"):
        request_headers([f"@{big}"])
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        request_headers([f"@{binary}"])


class _Recorder(http.server.BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[int, bytes, list[dict[str, str]]]]:
    """An HTTPS server with its own self-signed key, recording each request's headers."""
    certificate_der, key = self_signed()
    certificate_pem, key_pem = pem_pair(certificate_der, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "server.pem"
        path.write_bytes(certificate_pem + key_pem)
        context.load_cert_chain(path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], spki_hash(key), server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_headers_reach_the_attested_server(
    recorder: tuple[int, bytes, list[dict[str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, spki, seen = recorder
    chip = SimulatedSecureProcessor("Milan")
    renter = renter_of(chip, spki, port)
    monkeypatch.setattr("cvm.cli.guest.open_renter", lambda *a, **k: renter)
    monkeypatch.setattr("cvm.cli.guest._roots", lambda trust: [chip.ark] if trust else None)
    auth = tmp_path / "kv_auth"
    auth.write_text(f"Authorization: Bearer {TOKEN}\n")
    done = CliRunner().invoke(
        app,
        ["lease", "curl", str(LEASE), str(GUEST_PORT), "/kv/greeting", "-H", f"@{auth}",
         "-H", "X-Request: 1", "--trust-simulated-amd"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert done.stdout == "ok"
    assert seen[-1]["Authorization"] == f"Bearer {TOKEN}" and seen[-1]["X-Request"] == "1"
