"""AMD Key Distribution Service: where a report's VCEK and the product's chain live.

`vcek_url` follows AMD pub. 57230: `/vcek/v1/{product}/{hwID}?blSPL=..&teeSPL=..&snpSPL=..
&ucodeSPL=..`, with the 8-byte hwID and an extra fmcSPL on Turin. Fetching goes through the
`CertificateSource` interface; `CachingKds` keeps every certificate in a local directory so
tests (and air-gapped verifiers) run from the cache alone. Nothing in `verify` calls this.
`endorsements` finds a hardware report's VCEK and chain: in the certificate table the host
gave the guest, else at the KDS.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path
from typing import Protocol

import httpx

from cvm.attestation.abi import Report, SigningKey, TcbVersion
from cvm.attestation.errors import KdsError
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


class HttpKds:
    """Fetches from AMD's KDS over HTTPS (rate-limited by AMD: cache in front of it)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout

    def fetch(self, url: str) -> bytes:
        try:
            response = httpx.get(url, timeout=self._timeout, follow_redirects=False)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise KdsError(f"KDS request failed: {exc}") from exc
        if len(response.content) > MAX_CERT_BYTES:
            raise KdsError(f"KDS answer is larger than {MAX_CERT_BYTES} bytes")
        return response.content


class CachingKds:
    """A cache directory in front of another source (or none: cache only, never the network)."""

    def __init__(self, cache_dir: Path, upstream: CertificateSource | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.upstream = upstream

    def path_for(self, url: str) -> Path:
        """Where `url`'s answer is cached: named by the SHA-256 of the URL."""
        return self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()}.bin"

    def store(self, url: str, data: bytes) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        target = self.path_for(url)
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(target)  # atomic: a reader never sees half a certificate

    def fetch(self, url: str) -> bytes:
        cached = self.path_for(url)
        if cached.is_file():
            return cached.read_bytes()
        if self.upstream is None:
            raise KdsError(f"{url} is not in the cache {self.cache_dir} and no upstream is set")
        data = self.upstream.fetch(url)
        self.store(url, data)
        return data

    def vcek_for(self, report: Report, product: Product) -> bytes:
        """The VCEK (DER) for `report`, from the cache or upstream."""
        return self.fetch(vcek_url(report, product))


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
