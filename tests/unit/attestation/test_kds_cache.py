"""The VCEK cache and AMD's rate limit, against a real HTTP server on a free port standing in
for the KDS host and serving real VCEKs (tests/data/snp): one request per (product, chip,
TCB), damaged cache files fetched again, non-certificates never stored, requests spaced, and
a 429's Retry-After honoured before the one retry. The clock is a parameter of the rate limit
(a fake one that moves when the client sleeps), so no test waits for real."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cvm.attestation import CachingKds, HttpKds, KdsError, KdsRateLimit, Product, parse, vcek_url
from cvm.attestation.kds import MAX_CERT_BYTES, retry_after_seconds, vcek_cache_key

from .conftest import report_bytes, vcek_bytes


@dataclass
class KdsScript:
    """What the stand-in KDS serves: a body per path, and 429s to give out first."""

    answers: dict[str, bytes] = field(default_factory=dict)
    throttle: list[str | None] = field(default_factory=list)  # Retry-After of each next 429
    requests: list[str] = field(default_factory=list)


class LocalKds:
    def __init__(self) -> None:
        self.script = KdsScript()
        script = self.script

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                script.requests.append(self.path)
                if script.throttle:
                    retry_after = script.throttle.pop(0)
                    self.send_response(429)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = script.answers.get(self.path)
                self.send_response(200 if body is not None else 404)
                payload = body if body is not None else b"not found"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, url: str, body: bytes) -> None:
        self.script.answers[url.removeprefix(self.url)] = body


@pytest.fixture
def kds_host() -> Iterator[LocalKds]:
    host = LocalKds()
    thread = threading.Thread(target=host.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.server.shutdown()
        host.server.server_close()
        thread.join()


class FakeClock:
    """Monotonic time that advances only when the client sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _client(clock: FakeClock, **kwargs: float) -> HttpKds:
    limit = KdsRateLimit(10.0, sleep=clock.sleep, clock=clock)
    return HttpKds(timeout=5, rate_limit=limit, **kwargs)  # type: ignore[arg-type]


MILAN = parse(report_bytes("milan_virtee_sev"))
GENOA = parse(report_bytes("genoa_azure"))


def test_one_request_per_chip_and_tcb(kds_host: LocalKds, tmp_path: Path) -> None:
    clock = FakeClock()
    kds = CachingKds(tmp_path / "kds", _client(clock))
    url = vcek_url(MILAN, Product.MILAN, kds_host.url)
    kds_host.serve(url, vcek_bytes("milan_virtee_sev"))
    for _ in range(3):
        assert kds.vcek_for(MILAN, Product.MILAN, kds_host.url) == vcek_bytes("milan_virtee_sev")
    assert len(kds_host.script.requests) == 1
    hwid = MILAN.chip_id.hex()
    cached = tmp_path / "kds" / "vcek" / "Milan" / hwid / "bl003-tee000-snp008-ucode115.der"
    assert kds.path_for(url) == cached and cached.read_bytes() == vcek_bytes("milan_virtee_sev")
    # A fresh client on the same directory (a restarted agent) asks the KDS nothing.
    again = CachingKds(tmp_path / "kds", _client(FakeClock()))
    assert again.vcek_for(MILAN, Product.MILAN, kds_host.url) == vcek_bytes("milan_virtee_sev")
    assert len(kds_host.script.requests) == 1
    # Another TCB of the same chip (after a firmware update) is another certificate.
    other_tcb = url.replace("snpSPL=08", "snpSPL=09")
    assert vcek_cache_key(other_tcb) == ("Milan", hwid, "bl003-tee000-snp009-ucode115")
    kds_host.serve(other_tcb, vcek_bytes("milan_virtee_sev"))
    kds.fetch(other_tcb)
    assert len(kds_host.script.requests) == 2
    assert kds.path_for(other_tcb) != cached


def test_a_damaged_cache_file_is_fetched_again(kds_host: LocalKds, tmp_path: Path) -> None:
    kds = CachingKds(tmp_path, _client(FakeClock()))
    url = vcek_url(GENOA, Product.GENOA, kds_host.url)
    kds_host.serve(url, vcek_bytes("genoa_azure"))
    kds.fetch(url)
    path = kds.path_for(url)
    path.write_bytes(vcek_bytes("genoa_azure")[:100])  # a torn or tampered file
    assert kds.cached(url) is None and not path.exists()
    assert kds.fetch(url) == vcek_bytes("genoa_azure")
    assert len(kds_host.script.requests) == 2
    assert path.read_bytes() == vcek_bytes("genoa_azure")
    assert not list(path.parent.glob("*.partial"))  # the atomic write left nothing behind


def test_an_answer_that_is_no_certificate_is_never_cached(
    kds_host: LocalKds, tmp_path: Path
) -> None:
    kds = CachingKds(tmp_path, _client(FakeClock()))
    url = vcek_url(MILAN, Product.MILAN, kds_host.url)
    kds_host.serve(url, b"<html>maintenance</html>")
    with pytest.raises(KdsError, match="did not give a certificate"):
        kds.fetch(url)
    assert not kds.path_for(url).exists()
    kds_host.serve(url, b"x" * (MAX_CERT_BYTES + 1))
    with pytest.raises(KdsError, match="larger than"):
        kds.fetch(url)
    assert not kds.path_for(url).exists()


def test_requests_are_spaced_by_the_interval(kds_host: LocalKds, tmp_path: Path) -> None:
    clock = FakeClock()
    kds = CachingKds(tmp_path, _client(clock))
    milan = vcek_url(MILAN, Product.MILAN, kds_host.url)
    genoa = vcek_url(GENOA, Product.GENOA, kds_host.url)
    kds_host.serve(milan, vcek_bytes("milan_virtee_sev"))
    kds_host.serve(genoa, vcek_bytes("genoa_azure"))
    kds.fetch(milan)
    kds.fetch(genoa)  # another chip: a request, but not before 10 s have passed
    kds.fetch(milan)  # cached: no request, no wait
    assert clock.sleeps == [10.0]
    assert len(kds_host.script.requests) == 2


def test_a_429_is_retried_after_its_retry_after(kds_host: LocalKds, tmp_path: Path) -> None:
    clock = FakeClock()
    kds = CachingKds(tmp_path, _client(clock))
    url = vcek_url(MILAN, Product.MILAN, kds_host.url)
    kds_host.serve(url, vcek_bytes("milan_virtee_sev"))
    kds_host.script.throttle = ["30"]
    assert kds.fetch(url) == vcek_bytes("milan_virtee_sev")
    assert clock.sleeps == [30.0]  # what the server asked, not the 10 s interval
    assert len(kds_host.script.requests) == 2


def test_a_429_without_retry_after_backs_off_doubling(kds_host: LocalKds, tmp_path: Path) -> None:
    clock = FakeClock()
    kds = CachingKds(tmp_path, _client(clock))
    url = vcek_url(MILAN, Product.MILAN, kds_host.url)
    kds_host.serve(url, vcek_bytes("milan_virtee_sev"))
    kds_host.script.throttle = [None, None]
    kds.fetch(url)
    assert clock.sleeps == [10.0, 20.0]
    assert len(kds_host.script.requests) == 3


def test_a_kds_that_keeps_refusing_is_not_hammered(kds_host: LocalKds, tmp_path: Path) -> None:
    clock = FakeClock()
    client = _client(clock, max_retries=2)
    kds = CachingKds(tmp_path, client)
    url = vcek_url(MILAN, Product.MILAN, kds_host.url)
    kds_host.serve(url, vcek_bytes("milan_virtee_sev"))
    kds_host.script.throttle = ["15"] * 10
    with pytest.raises(KdsError, match=r"rate limiting this host \(429, retry after 15 s\)"):
        kds.fetch(url)
    assert len(kds_host.script.requests) == 3  # the first try and two retries
    # A wait longer than the client will block for is not waited out, and no one asks
    # again before it ends: the next caller waits for the rest of it first.
    kds_host.script.throttle = ["3600"]
    with pytest.raises(KdsError, match="retry after 3600 s"):
        kds.fetch(url)
    assert len(kds_host.script.requests) == 4
    kds_host.script.throttle = []
    clock.sleeps.clear()
    assert kds.fetch(url) == vcek_bytes("milan_virtee_sev")
    assert clock.sleeps == [3600.0]


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("12", now) == 12.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:40 GMT", now) == 40.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
    assert vcek_cache_key("https://kdsintf.amd.com/vcek/v1/Milan/cert_chain") is None
    assert vcek_cache_key("https://kdsintf.amd.com/vcek/v1/Milan/../../etc?blSPL=01") is None
