"""Product names and CPUID, and the strict DER reading of AMD's certificate extensions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.attestation import Product, _der


@pytest.mark.parametrize(
    "name, product",
    [("Milan-B0", Product.MILAN), ("Milan", Product.MILAN), ("Genoa", Product.GENOA),
     ("SEV-Genoa", Product.GENOA), ("SEV-VLEK-Turin", Product.TURIN), ("ARK-Turin", Product.TURIN),
     ("turin-b0", Product.TURIN)],
)  # fmt: skip
def test_product_names(name: str, product: Product) -> None:
    assert Product.from_name(name) is product


@pytest.mark.parametrize("name", ["Rome", "", "SEV-", "Milano"])
def test_unknown_product_names(name: str) -> None:
    with pytest.raises(ValueError):
        Product.from_name(name)


def test_products_from_cpuid() -> None:
    assert Product.from_cpuid(0x19, 0x01) is Product.MILAN
    assert Product.from_cpuid(0x19, 0x11) is Product.GENOA
    assert Product.from_cpuid(0x1A, 0x02) is Product.TURIN
    assert Product.from_cpuid(0x17, 0x31) is None  # Rome: no SEV-SNP
    assert Product.from_cpuid(0x19, 0xA0) is None  # not a line we can tell apart: no claim


def test_hwid_sizes() -> None:
    assert [p.hwid_size for p in Product] == [64, 64, 8]
    assert [p.has_fmc for p in Product] == [False, False, True]


@pytest.mark.parametrize(
    "raw, value",
    [(b"\x02\x01\x00", 0), (b"\x02\x01\x73", 115), (b"\x02\x02\x00\xa9", 169),
     (b"\x02\x02\x01\x00", 256)],
)  # fmt: skip
def test_integers(raw: bytes, value: int) -> None:
    assert _der.decode_integer(raw) == value
    assert _der.encode_integer(value) == raw


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x02", b"\x02\x00", b"\x02\x01", b"\x02\x01\x01\x00", b"\x02\x02\x00\x01",
     b"\x02\x01\x80", b"\x04\x01\x01", b"\x02\x81\x01\x01", b"\x02\x80\x01"],
)  # fmt: skip
def test_malformed_integers(raw: bytes) -> None:
    with pytest.raises(_der.DerError):
        _der.decode_integer(raw)


def test_long_form_length_and_strings() -> None:
    content = bytes(range(200))
    encoded = _der.encode(_der.OCTET_STRING, content)
    assert encoded[:3] == b"\x04\x81\xc8"
    assert _der.decode(_der.OCTET_STRING, encoded) == content
    assert _der.decode_ia5(_der.encode(_der.IA5_STRING, b"Milan-B0")) == "Milan-B0"
    with pytest.raises(_der.DerError):
        _der.decode_ia5(b"\x16\x01\xff")


@settings(settings.get_profile("attestation"))
@given(st.binary(max_size=16))
def test_random_bytes_never_crash_the_der_reader(raw: bytes) -> None:
    for read in (_der.decode_integer, _der.decode_ia5):
        try:
            read(raw)
        except _der.DerError:
            pass
