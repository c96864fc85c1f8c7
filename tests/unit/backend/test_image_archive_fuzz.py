"""Malformed image tars against the streaming reader (`backend.domain.image_archive`): every
input ends in a refusal the API answers with a 4xx (a `DomainError`), never another exception
(a 500); nothing lands in the staging directory but the image's own files, and no file gets
more bytes than the size that was reserved for it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backend.domain.errors import DomainError
from backend.domain.image_archive import PAX_MAX_BYTES, ImageArchiveReader
from cvm.images import IMAGE_FILES
from tests.fixtures.images import tar_header

NAMES = [*IMAGE_FILES, "../vmlinuz", "/vmlinuz", "./vmlinuz", "vmlinuz/", "vm\x00linuz", "x" * 99]
KINDS = [b"0", b"\x00", b"x", b"g", b"1", b"2", b"5", b"S", b"L", b"7", b"Z"]


def _pax_record(key: bytes, value: bytes, skew: int) -> bytes:
    line = b" " + key + b"=" + value + b"\n"
    length = len(line) + len(str(len(line)))
    if len(str(length)) > len(str(len(line))):
        length += 1
    return str(max(length + skew, 0)).encode() + line


@st.composite
def _pax_body(draw: st.DrawFn) -> bytes:
    records = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"path", b"size", b"GNU.sparse.size", b"mtime", b"comment"]),
                st.one_of(
                    st.sampled_from([n.encode() for n in NAMES]),
                    st.integers(-5, 2**70).map(lambda n: str(n).encode()),
                    st.binary(max_size=40),
                ),
                st.sampled_from([0, 0, 0, -1, 1, -1000, 10**6]),
            ),
            max_size=4,
        )
    )
    body = b"".join(_pax_record(k, v, s) for k, v, s in records)
    return body + draw(st.sampled_from([b"", b"\x00" * 3, b"junk", b"9" * 5000 + b" a=b\n"]))


@st.composite
def _size_field(draw: st.DrawFn, size: int) -> bytes:
    right = f"{size:011o}\x00".encode()
    if draw(st.integers(0, 3)):  # mostly right, to reach what follows a header
        return right
    return draw(
        st.sampled_from(
            [
                right,
                f"{size:012o}".encode()[-12:],
                b"\x80" + size.to_bytes(11, "big", signed=False)[-11:],
                b"\xff" * 12,
                b"-0000000001\x00",
                b"77777777777\x00",
                b"  12 34    \x00",
                b"\x00" * 12,
                b"8\x00" + b"\x00" * 10,
            ]
        )
    )


@st.composite
def _member(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([b"0", b"0", b"x", *KINDS]))
    if kind == b"x":
        body = draw(_pax_body())
        size = draw(st.sampled_from([len(body), len(body), 0, len(body) + 700, PAX_MAX_BYTES + 1]))
    else:
        body = draw(st.binary(max_size=1200))
        size = draw(
            st.sampled_from([len(body), len(body), 0, len(body) + 1, max(len(body) - 1, 0)])
        )
    name = draw(st.sampled_from([*IMAGE_FILES, *IMAGE_FILES, *NAMES]))
    patch = {124: draw(_size_field(size))}
    if not draw(st.integers(0, 5)):
        patch[345] = draw(st.sampled_from([b"..", b"/", b"a", b"\x00"]))
    block = bytearray(tar_header(name.replace("\x00", "@"), 0, kind, patch=patch))
    if "\x00" in name:
        block[0:100] = name.encode().ljust(100, b"\x00")[:100]
    if not draw(st.integers(0, 5)) or "\x00" in name:
        # The checksum is of the block as sent (kept right, or spoiled on purpose).
        block[148:156] = b" " * 8
        block[148:156] = f"{sum(block) + draw(st.sampled_from([0, 0, 1])):06o}\x00 ".encode()
    return bytes(block) + body + b"\x00" * (-len(body) % 512)


@st.composite
def _archive(draw: st.DrawFn) -> bytes:
    data = b"".join(draw(st.lists(_member(), max_size=7)))
    data += draw(st.sampled_from([b"", b"\x00" * 512, b"\x00" * 1024, b"\x00" * 1024 + b"junk"]))
    cut = draw(st.integers(0, 600))
    return data[: len(data) - cut] if draw(st.booleans()) else data


def _feed(data: bytes, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        staging = Path(directory) / "staging"
        staging.mkdir()
        reserved: list[int] = []
        reader = ImageArchiveReader(staging, reserved.append)
        try:
            for start in range(0, len(data), chunk):
                reader.feed(data[start : start + chunk])
            reader.finish()
        except DomainError:
            pass  # a 4xx: the only way to refuse
        finally:
            reader.close()
        written = sorted(Path(directory).rglob("*"))
        assert all(p.parent == staging and p.name in IMAGE_FILES for p in written[1:]), written
        sizes = [p.stat().st_size for p in written[1:]]
        assert sum(sizes) <= sum(reserved)
        assert all(s <= max(reserved, default=0) for s in sizes)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_archive(), chunk=st.sampled_from([1, 7, 512, 513, 1 << 16]))
@example(
    # A PAX record whose length has more digits than int() converts: a ValueError (500).
    data=tar_header("PaxHeader", 5014, b"x")
    + (b"9" * 5000 + b" path=vmlinuz\n").ljust(5120, b"\0"),
    chunk=1 << 16,
)
def test_every_malformed_archive_is_a_clean_refusal(data: bytes, chunk: int) -> None:
    """Fails on the code as merged: a PAX length of more than 4,300 digits raised ValueError
    (Python's int-conversion limit), which the API answers 500."""
    _feed(data, chunk)


@pytest.mark.parametrize("digits", [4301, 8000])
def test_a_pax_length_too_long_to_convert_is_refused(digits: int) -> None:
    """Fails on the code as merged (ValueError, a 500)."""
    body = b"9" * digits + b" path=vmlinuz\n"
    data = tar_header("PaxHeader", len(body), b"x") + body.ljust(-(-len(body) // 512) * 512, b"\0")
    with tempfile.TemporaryDirectory() as directory:
        reader = ImageArchiveReader(Path(directory), lambda _: None)
        with pytest.raises(DomainError, match="malformed PAX"):
            reader.feed(data)
