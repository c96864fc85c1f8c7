"""AMD Key Distribution Service: where a report's VCEK and the product's chain live.

`vcek_url` follows AMD pub. 57230: `/vcek/v1/{product}/{hwID}?blSPL=..&teeSPL=..&snpSPL=..
&ucodeSPL=..`, with the 8-byte hwID and an extra fmcSPL on Turin. Fetching goes through the
`CertificateSource` interface; `CachingKds` keeps every certificate in a local directory (a
VCEK per chip and TCB, checked to parse before each use) so tests and air-gapped verifiers run
from the cache alone; `HttpKds` keeps within AMD's rate limit (about one request per 10 s per
IP) and honours a 429's Retry-After. Nothing in `verify` calls this.
`endorsements` finds a hardware report's VCEK and chain: in the certificate table the host
gave the guest, else at the KDS.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from cvm.attestation.abi import Report, SigningKey, TcbVersion
from cvm.attestation.errors import KdsError, KdsNotFound
from cvm.attestation.product import Product

KDS_BASE_URL = "https://kdsintf.amd.com"
MAX_CERT_BYTES = 16 * 1024


def vcek_url(report: Report, product: Product, base_url: str = KDS_BASE_URL) -> str:
    """URL of the VCEK that signed `report` on a chip of `product`."""
    if report.signing_key is not SigningKey.VCEK:
        raise KdsError(f"KDS serves VCEKs only; this report is signed by {report.signing_key.name}")
    if not any(report.chip_id):
        raise KdsError("CHIP_ID is masked (zero): the VCEK cannot be located from the report")
    size = product.hwid_size
    if any(report.chip_id[size:]):
        raise KdsError(f"CHIP_ID has non-zero bytes past the {size}-byte {product} hwID")
    hwid = report.chip_id[:size].hex()
    tcb = TcbVersion.from_int(report.reported_tcb, product)
    query = f"blSPL={tcb.bl:02d}&teeSPL={tcb.tee:02d}&snpSPL={tcb.snp:02d}&ucodeSPL={tcb.ucode:02d}"
    if product.has_fmc:
        query = f"fmcSPL={tcb.fmc or 0:02d}&{query}"
    return f"{base_url}/vcek/v1/{product.value}/{hwid}?{query}"


def cert_chain_url(
    product: Product, signer: SigningKey = SigningKey.VCEK, base_url: str = KDS_BASE_URL
) -> str:
    """URL of the ASK+ARK (VCEK) or ASVK+ARK (VLEK) chain of `product`."""
    kind = {SigningKey.VCEK: "vcek", SigningKey.VLEK: "vlek"}.get(signer)
    if kind is None:
        raise KdsError("an unsigned report has no certificate chain")
    return f"{base_url}/{kind}/v1/{product.value}/cert_chain"


class CertificateSource(Protocol):
    """Anything that returns the bytes served at a KDS URL."""

    def fetch(self, url: str) -> bytes: ...


# AMD's KDS answers 429 beyond about one request per 10 s per IP (pub. 57230, "rate limiting").
KDS_MIN_INTERVAL_S = 10.0
# A 429 is retried this many times, never sooner than its Retry-After; a Retry-After above
# the longest wait is not waited out: the caller gets a KdsError that says when to come back.
KDS_MAX_RETRIES = 3
KDS_MAX_WAIT_S = 120.0


class KdsRateLimit:
    """At most one request per `min_interval_s`, shared by every `HttpKds` that holds it.

    Every thread of a process goes through the one default instance (`KDS_RATE_LIMIT`), since
    AMD counts requests per IP address; `sleep` and `clock` are parameters for tests."""

    def __init__(
        self,
        min_interval_s: float = KDS_MIN_INTERVAL_S,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = min_interval_s
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = 0.0  # the clock's time before which no request may start

    def wait_turn(self) -> None:
        """Block until a request may go out, and take that slot."""
        with self._lock:
            now = self._clock()
            if now < self._next_at:
                self._sleep(self._next_at - now)
                now = self._next_at
            self._next_at = now + self.min_interval_s

    def hold_off(self, seconds: float) -> None:
        """No request before `seconds` from now (the server said so)."""
        with self._lock:
            self._next_at = max(self._next_at, self._clock() + seconds)


KDS_RATE_LIMIT = KdsRateLimit()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date, RFC 9110) in seconds; None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpKds:
    """Fetches from AMD's KDS over HTTPS, within AMD's rate limit (put a cache in front).

    Requests are spaced by `rate_limit` (one per 10 s by default, for the whole process);
    a 429 is retried after its Retry-After (else after a doubling backoff from the
    interval), at most `max_retries` times, and never when the wait would pass `max_wait_s`."""

    def __init__(
        self,
        timeout: float = 10.0,
        *,
        rate_limit: KdsRateLimit | None = None,
        max_retries: int = KDS_MAX_RETRIES,
        max_wait_s: float = KDS_MAX_WAIT_S,
    ) -> None:
        self._timeout = timeout
        self.rate_limit = rate_limit or KDS_RATE_LIMIT
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s

    def fetch(self, url: str) -> bytes:
        backoff = max(self.rate_limit.min_interval_s, 1.0)
        for attempt in range(self.max_retries + 1):
            self.rate_limit.wait_turn()
            try:
                with httpx.stream("GET", url, timeout=self._timeout, follow_redirects=False) as r:
                    if r.status_code == 429:
                        asked = retry_after_seconds(r.headers.get("retry-after"))
                        wait = backoff if asked is None else max(asked, 0.0)
                        backoff *= 2
                        self.rate_limit.hold_off(wait)  # for every caller, not just this one
                        if attempt == self.max_retries or wait > self.max_wait_s:
                            raise KdsError(
                                f"KDS is rate limiting this host (429, retry after {wait:.0f} s):"
                                " try again later"
                            )
                        continue
                    if r.status_code == 404:
                        # An answer, not an outage: AMD certified no such chip (or TCB).
                        raise KdsNotFound(f"KDS has no certificate at {url} (HTTP 404)")
                    r.raise_for_status()
                    body = _read_bounded(r)
            except httpx.HTTPError as exc:
                raise KdsError(f"KDS request failed: {exc}") from exc
            return body
        raise AssertionError("unreachable")  # the loop returns or raises


def _read_bounded(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CERT_BYTES:
        raise KdsError(f"KDS answer is larger than {MAX_CERT_BYTES} bytes")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_CERT_BYTES:
            raise KdsError(f"KDS answer is larger than {MAX_CERT_BYTES} bytes")
    return bytes(body)


# /vcek/v1/{product}/{hwid}?[fmcSPL=..&]blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..: the VCEK of
# one chip at one TCB. Anything else (a cert_chain) is cached under the URL's hash.
_VCEK_PATH = re.compile(
    r"/vcek/v1/(?P<product>[A-Za-z]{1,16})/(?P<hwid>[0-9a-f]{16}|[0-9a-f]{128})"
    r"\?(?:fmcSPL=(?P<fmc>\d{2,3})&)?blSPL=(?P<bl>\d{2,3})&teeSPL=(?P<tee>\d{2,3})"
    r"&snpSPL=(?P<snp>\d{2,3})&ucodeSPL=(?P<ucode>\d{2,3})"
)


def vcek_cache_key(url: str) -> tuple[str, str, str] | None:
    """(product, chip hwID, TCB) of a KDS VCEK URL; None for any other URL."""
    parts = urlsplit(url)
    match = _VCEK_PATH.fullmatch(f"{parts.path}?{parts.query}")
    if match is None:
        return None
    spl = match.groupdict()
    tcb = "-".join(
        f"{name}{int(spl[name]):03d}"
        for name in ("fmc", "bl", "tee", "snp", "ucode")
        if spl[name] is not None
    )
    return match["product"], match["hwid"], tcb


def _check_certificates(url: str, data: bytes) -> None:
    """Raise KdsError unless `data` is what `url` serves: one DER certificate for a VCEK,
    PEM certificates for a chain."""
    from cryptography import x509

    try:
        if vcek_cache_key(url) is not None:
            x509.load_der_x509_certificate(data)
        elif not x509.load_pem_x509_certificates(data):
            raise ValueError("no certificate")
    except ValueError as exc:
        raise KdsError(f"{url} did not give a certificate: {exc}") from exc


class CachingKds:
    """A cache directory in front of another source (or none: cache only, never the network).

    VCEKs are kept per (product, chip, TCB) as `vcek/<product>/<hwID>/<TCB>.der`, so a chip
    asks the KDS once per TCB it reports; chains under the SHA-256 of their URL. Every answer
    is checked to be certificates before it is stored (atomically) and again before a cached
    one is used: a damaged file is dropped and fetched again, never handed out."""

    def __init__(self, cache_dir: Path, upstream: CertificateSource | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.upstream = upstream

    def path_for(self, url: str) -> Path:
        """Where `url`'s answer is cached."""
        key = vcek_cache_key(url)
        if key is not None:
            product, hwid, tcb = key
            return self.cache_dir / "vcek" / product / hwid / f"{tcb}.der"
        return self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()}.bin"

    def store(self, url: str, data: bytes) -> None:
        """Keep `data` as `url`'s answer: written to a unique temporary file, flushed and
        renamed into place, so a reader (another thread or process) never sees half of it."""
        target = self.path_for(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".partial")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def cached(self, url: str) -> bytes | None:
        """`url`'s cached answer if there is one and it parses; a damaged one is removed."""
        path = self.path_for(url)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            _check_certificates(url, data)
        except KdsError:
            path.unlink(missing_ok=True)
            return None
        return data

    def fetch(self, url: str) -> bytes:
        data = self.cached(url)
        if data is not None:
            return data
        if self.upstream is None:
            raise KdsError(f"{url} is not in the cache {self.cache_dir} and no upstream is set")
        data = self.upstream.fetch(url)
        _check_certificates(url, data)
        self.store(url, data)
        return data

    def vcek_for(self, report: Report, product: Product, base_url: str = KDS_BASE_URL) -> bytes:
        """The VCEK (DER) for `report`, from the cache or upstream."""
        return self.fetch(vcek_url(report, product, base_url))


# --- a report's endorsements, as an SEV-SNP guest gets them -------------------------------

# The GUIDs of the certificate table the host may hand a guest with its report (GHCB spec,
# SNP extended guest request; configfs-tsm's `auxblob`), in RFC 4122 byte order.
CERT_TABLE_GUIDS: dict[uuid.UUID, str] = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ask",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ark",
}
_CERT_ENTRY = struct.Struct("<16sII")  # GUID, offset from the table's start, length


def parse_cert_table(blob: bytes) -> dict[str, bytes]:
    """The DER certificates of a certificate table by name (vcek, vlek, ask, ark).

    Entries run until an all-zero one; unknown GUIDs are skipped. Empty for an empty blob
    (a host that supplies no certificates)."""
    found: dict[str, bytes] = {}
    for start in range(0, len(blob), _CERT_ENTRY.size):
        if start + _CERT_ENTRY.size > len(blob):
            raise KdsError("the certificate table ends inside an entry")
        guid, offset, length = _CERT_ENTRY.unpack_from(blob, start)
        if not any(guid) and offset == 0 and length == 0:
            return found
        if offset + length > len(blob) or length == 0:
            raise KdsError(f"certificate table entry {uuid.UUID(bytes=guid)} points outside it")
        name = CERT_TABLE_GUIDS.get(uuid.UUID(bytes=guid))
        if name is not None:
            found[name] = blob[offset : offset + length]
    if blob:
        raise KdsError("the certificate table has no terminating entry")
    return found


def endorsements(
    raw_report: bytes,
    cert_table: bytes,
    kds: CertificateSource,
    product: Product | None = None,
) -> tuple[bytes, bytes]:
    """(VCEK or VLEK in DER, its chain in PEM: ASK or ASVK then ARK) for a hardware report.

    From the host-supplied certificate table when it has them, else from AMD's KDS
    (through `kds`, normally a `CachingKds`); `product` names the chip for reports older
    than version 3, which do not say it. Nothing here is trusted: the verifier checks the
    chain up to AMD's pinned root."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from cvm.attestation.abi import parse

    report = parse(raw_report)
    table = parse_cert_table(cert_table)
    product = report.cpuid_product or product
    endorsement = table.get("vlek") if report.signing_key is SigningKey.VLEK else table.get("vcek")
    if endorsement is None:
        if product is None:
            raise KdsError(
                "the report names no product (version < 3) and none was given:"
                " its VCEK cannot be found"
            )
        endorsement = kds.fetch(vcek_url(report, product))
    if "ask" in table and "ark" in table:
        try:
            chain = b"".join(
                x509.load_der_x509_certificate(table[name]).public_bytes(Encoding.PEM)
                for name in ("ask", "ark")
            )
        except ValueError as exc:
            # The table comes from the host through the guest: bad bytes are a KdsError
            # like any other unusable endorsement, not a crash of the caller.
            raise KdsError(
                f"the certificate table's ASK or ARK is not a certificate: {exc}"
            ) from exc
    else:
        if product is None:
            raise KdsError(
                "the report names no product (version < 3) and none was given:"
                " its chain cannot be found"
            )
        chain = kds.fetch(cert_chain_url(product, report.signing_key))
    return endorsement, chain
