"""kds: VCEK URLs per AMD 57230 (Turin differs) and a cache directory in front of any source."""

from __future__ import annotations

import struct
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from cvm.attestation import (
    CachingKds,
    HttpKds,
    KdsError,
    KdsRateLimit,
    Product,
    SigningKey,
    SimulatedSecureProcessor,
    cert_chain_url,
    parse,
    vcek_url,
)
from cvm.attestation.kds import endorsements, parse_cert_table

from .conftest import DATA, REAL, report_bytes, vcek_bytes


def test_milan_vcek_url() -> None:
    url = vcek_url(parse(report_bytes("milan_virtee_sev")), Product.MILAN)
    assert url == (
        "https://kdsintf.amd.com/vcek/v1/Milan/" + REAL["milan_virtee_sev"]["chip_id"]
        + "?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    )  # fmt: skip


def test_genoa_vcek_url() -> None:
    url = vcek_url(parse(report_bytes("genoa_azure")), Product.GENOA)
    assert url.startswith("https://kdsintf.amd.com/vcek/v1/Genoa/0506ffba")
    assert url.endswith("?blSPL=10&teeSPL=00&snpSPL=23&ucodeSPL=84")


def test_turin_vcek_url_has_8_byte_hwid_and_fmc(sim_turin: SimulatedSecureProcessor) -> None:
    report = parse(sim_turin.attest().report)
    url = vcek_url(report, Product.TURIN)
    t = sim_turin.tcb
    assert url == (
        f"https://kdsintf.amd.com/vcek/v1/Turin/{sim_turin.hwid.hex()}"
        f"?fmcSPL={t.fmc:02d}&blSPL={t.bl:02d}&teeSPL={t.tee:02d}&snpSPL={t.snp:02d}"
        f"&ucodeSPL={t.ucode:02d}"
    )


def test_no_url_for_vlek_or_masked_chip_id(
    sim_genoa_vlek: SimulatedSecureProcessor, sim_milan: SimulatedSecureProcessor
) -> None:
    with pytest.raises(KdsError):
        vcek_url(parse(sim_genoa_vlek.attest().report), Product.GENOA)
    with pytest.raises(KdsError):
        vcek_url(parse(sim_milan.attest(mask_chip_id=True).report), Product.MILAN)


def test_cert_chain_urls() -> None:
    assert cert_chain_url(Product.GENOA) == "https://kdsintf.amd.com/vcek/v1/Genoa/cert_chain"
    assert (
        cert_chain_url(Product.TURIN, SigningKey.VLEK)
        == "https://kdsintf.amd.com/vlek/v1/Turin/cert_chain"
    )


class CountingSource:
    """An upstream that serves fixed answers and counts requests (no network)."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.calls = 0

    def fetch(self, url: str) -> bytes:
        self.calls += 1
        if url not in self.answers:
            raise KdsError(f"404 {url}")
        return self.answers[url]


def test_cache_only_directory(tmp_path: Path) -> None:
    report = parse(report_bytes("milan_virtee_sev"))
    kds = CachingKds(tmp_path)
    with pytest.raises(KdsError):
        kds.vcek_for(report, Product.MILAN)
    kds.store(vcek_url(report, Product.MILAN), vcek_bytes("milan_virtee_sev"))
    assert kds.vcek_for(report, Product.MILAN) == vcek_bytes("milan_virtee_sev")


def test_cache_in_front_of_an_upstream(tmp_path: Path) -> None:
    report = parse(report_bytes("genoa_azure"))
    url = vcek_url(report, Product.GENOA)
    upstream = CountingSource({url: vcek_bytes("genoa_azure")})
    kds = CachingKds(tmp_path / "kds", upstream)
    assert kds.vcek_for(report, Product.GENOA) == vcek_bytes("genoa_azure")
    assert kds.vcek_for(report, Product.GENOA) == vcek_bytes("genoa_azure")
    assert upstream.calls == 1
    assert kds.path_for(url).read_bytes() == vcek_bytes("genoa_azure")
    with pytest.raises(KdsError):
        kds.fetch("https://kdsintf.amd.com/vcek/v1/Genoa/unknown")


class _KdsHandler(BaseHTTPRequestHandler):
    """Serves one VCEK at its KDS path, 404 for anything else (a local stand-in host for KDS)."""

    answers: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.answers.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"not found")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def local_kds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KdsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_kds_behind_the_cache(local_kds: str, tmp_path: Path) -> None:
    report = parse(report_bytes("milan_go_sev_guest"))
    url = vcek_url(report, Product.MILAN, base_url=local_kds)
    _KdsHandler.answers = {url.removeprefix(local_kds): vcek_bytes("milan_go_sev_guest")}
    kds = CachingKds(tmp_path, HttpKds(timeout=5, rate_limit=KdsRateLimit(0)))
    assert kds.fetch(url) == vcek_bytes("milan_go_sev_guest")
    assert kds.path_for(url).is_file()
    with pytest.raises(KdsError):
        kds.fetch(f"{local_kds}/vcek/v1/Milan/absent")
    assert not kds.path_for(f"{local_kds}/vcek/v1/Milan/absent").exists()


# --- the certificate table a host hands its SNP guest (configfs-tsm auxblob) ------------------


def _table(entries: list[tuple[str, bytes]]) -> bytes:
    from cvm.attestation.kds import CERT_TABLE_GUIDS

    by_name = {name: guid for guid, name in CERT_TABLE_GUIDS.items()}
    header = 24 * (len(entries) + 1)
    table, blobs = b"", b""
    for name, der in entries:
        guid = by_name[name] if name in by_name else uuid.UUID(int=7)
        table += guid.bytes + struct.pack("<II", header + len(blobs), len(der))
        blobs += der
    return table + bytes(24) + blobs


def test_a_cert_table_yields_its_certificates_by_name() -> None:
    vcek = vcek_bytes("milan_virtee_sev")
    table = _table([("vcek", vcek), ("other", b"ignored"), ("ark", b"ark-der")])
    assert parse_cert_table(table) == {"vcek": vcek, "ark": b"ark-der"}
    assert parse_cert_table(b"") == {}  # the host supplied none


def test_a_broken_cert_table_is_refused() -> None:
    vcek_guid = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
    with pytest.raises(KdsError, match="no terminating entry"):
        parse_cert_table(vcek_guid.bytes + struct.pack("<II", 0, 24))
    entry = _table([("vcek", b"abc")])
    outside = entry[:16] + struct.pack("<II", 4000, 3) + entry[24:]
    with pytest.raises(KdsError, match="points outside it"):
        parse_cert_table(outside)
    with pytest.raises(KdsError, match="ends inside an entry"):
        parse_cert_table(b"\x01" * 20)


def test_endorsements_come_from_the_kds_when_the_table_has_none(tmp_path: Path) -> None:
    raw = report_bytes("milan_virtee_sev")  # version 2: names no product
    kds = CachingKds(tmp_path)
    kds.store(vcek_url(parse(raw), Product.MILAN), vcek_bytes("milan_virtee_sev"))
    chain = (DATA / "ca" / "milan_vcek_cert_chain.pem").read_bytes()
    kds.store(cert_chain_url(Product.MILAN), chain)
    with pytest.raises(KdsError, match="names no product"):
        endorsements(raw, b"", kds)
    assert endorsements(raw, b"", kds, Product.MILAN) == (vcek_bytes("milan_virtee_sev"), chain)


def test_a_cert_table_whose_ask_or_ark_is_no_certificate_is_a_kds_error(tmp_path: Path) -> None:
    # The table reaches the node from the guest: bad bytes there must be an AttestationError
    # (which the launcher turns into a refusal), never a ValueError that escapes the caller.
    raw = report_bytes("milan_virtee_sev")
    table = _table([("vcek", vcek_bytes("milan_virtee_sev")), ("ask", b"junk"), ("ark", b"junk")])
    with pytest.raises(KdsError, match="not a certificate"):
        endorsements(raw, table, CachingKds(tmp_path))
