"""An image upload's tar, unpacked as it streams in, one raw 512-byte header at a time.

Written by hand rather than with `tarfile`, because `tarfile` cannot be told what not to do:
it reads a PAX header of any size into memory before anyone can look at it (a 25 MiB header
cost about 270 MiB), and it unpacks sparse members, whose declared size says nothing of what
they write (10 KiB declaring hundreds of MiB). Here every header is checked from its raw
bytes before anything it announces is read or written:

- members are plain regular files only (types `0` and NUL), named exactly as an image's
  files (v1: kernel, initrd, manifest; v2: and rootfs.img), each once, the manifest at most
  `MANIFEST_MAX_BYTES`; links, devices, directories, FIFOs, sparse members, global or GNU
  long-name headers are refused;
- a per-file PAX header (`x`) is accepted up to `PAX_MAX_BYTES`, for the `path` and `size`
  records tar tools may write; a larger one is refused from its header alone, and a
  `GNU.sparse.*` record is refused;
- each file's declared size is handed to `reserve` before a byte of it is written (the
  caller counts it against the image, store and renter limits and refuses there), and no
  file receives more than its declared size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from backend.domain.errors import InvalidInput, TooLarge
from cvm.images import (
    ALL_IMAGE_FILES,
    IMAGE_FILES,
    IMAGE_FILES_V2,
    MANIFEST,
    MANIFEST_MAX_BYTES,
    ROOTFS,
)

BLOCK = 512
# Room for what tar tools put in a per-file PAX header (times, ids, names, a few xattrs).
PAX_MAX_BYTES = 8192

_REGULAR = (b"0", b"\x00")
_PAX = b"x"
_KINDS = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"g": "a global PAX header",
    b"L": "a GNU long name",
    b"K": "a GNU long link name",
    b"S": "a GNU sparse file",
    b"M": "a GNU multi-volume part",
    b"V": "a volume label",
}


class ArchiveRefused(InvalidInput):
    """The upload is not an image tar of an image's plain files (422)."""


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        # Base-256: only for values past the octal field (8 GiB sizes): never an image's.
        raise TooLarge(f"the image archive declares an impossible {what} (base-256 field)")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if any(c not in b"01234567" for c in text):
        raise ArchiveRefused(f"not an image archive (an uncompressed tar): bad {what} field")
    return int(text, 8)


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156], "checksum")
    blanked = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(blanked)
    signed = sum(b - 256 if b > 127 else b for b in blanked)  # old writers summed signed bytes
    return stored in (unsigned, signed)


def _name(header: bytes) -> str:
    name = header[:100].split(b"\x00", 1)[0]
    if header[257:263] == b"ustar\x00":  # POSIX: a prefix may hold the leading directories
        prefix = header[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _pax_records(data: bytes) -> dict[str, str]:
    """`LENGTH KEY=VALUE\\n` records (POSIX pax); ArchiveRefused for anything else."""
    records: dict[str, str] = {}
    rest = data
    while rest and rest.strip(b"\x00"):
        space = rest.find(b" ")
        # A record is never longer than the body (at most PAX_MAX_BYTES): more digits are
        # junk, and past 4,300 digits int() itself refuses them (a ValueError, a 500).
        if not 0 < space <= len(str(PAX_MAX_BYTES)) or not rest[:space].isdigit():
            raise ArchiveRefused("not an image archive: a malformed PAX header")
        length = int(rest[:space])
        record = rest[:length]
        if length <= space + 1 or len(record) != length or not record.endswith(b"\n"):
            raise ArchiveRefused("not an image archive: a malformed PAX header")
        key, sep, value = record[space + 1 : -1].partition(b"=")
        if not sep:
            raise ArchiveRefused("not an image archive: a malformed PAX header")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        rest = rest[length:]
    return records


class ImageArchiveReader:
    """Feed it the upload's bytes in any chunks; it writes the image's files into `staging`.

    `reserve(size)` is called with each file's declared size before the file is opened, and
    raises to refuse it. `finish()` checks that the archive ended cleanly with all three."""

    def __init__(self, staging: Path, reserve: Callable[[int], None]) -> None:
        self.staging = staging
        self.reserve = reserve
        self.seen: list[str] = []
        self._buffer = bytearray()  # a header block, or a PAX header's body (bounded)
        self._state = "header"  # header | pax | data | padding | end
        self._need = BLOCK  # bytes still wanted in the current state
        self._pax: dict[str, str] | None = None
        self._padding = 0  # zeros after the current PAX body or file, to the next block
        self._sink: BinaryIO | None = None

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._state == "end":
                # After the end-of-archive block only zero padding may follow.
                if any(view):
                    raise ArchiveRefused("data after the end of the image archive")
                return
            take = min(self._need, len(view))
            chunk, view = view[:take], view[take:]
            self._need -= take
            if self._state == "data":
                assert self._sink is not None
                self._sink.write(chunk)
            elif self._state != "padding":
                self._buffer += chunk
            if self._need == 0:
                self._advance()

    def _advance(self) -> None:
        """The current state's bytes are all in: on to the next."""
        if self._state == "header":
            header = bytes(self._buffer)
            self._buffer.clear()
            self._header(header)
        elif self._state == "pax":
            self._pax = _pax_records(bytes(self._buffer))
            self._buffer.clear()
            self._go("padding", self._padding)
        elif self._state == "data":
            assert self._sink is not None
            self._sink.close()
            self._sink = None
            self._go("padding", self._padding)
        else:  # padding
            self._go("header", BLOCK)

    def _go(self, state: str, need: int) -> None:
        if need == 0 and state == "padding":
            state, need = "header", BLOCK
        self._state, self._need = state, need

    def _header(self, header: bytes) -> None:
        if not any(header):
            if self._pax is not None:
                raise ArchiveRefused("the image archive ends after a PAX header")
            self._state = "end"
            return
        if not _checksum_ok(header):
            raise ArchiveRefused("not an image archive (an uncompressed tar): bad header checksum")
        kind = header[156:157]
        size = _octal(header[124:136], "size")
        if kind == _PAX:
            if self._pax is not None:
                raise ArchiveRefused("two PAX headers in a row in the image archive")
            if size > PAX_MAX_BYTES:
                # Refused from the 512-byte header: the PAX body itself is never read.
                raise TooLarge(
                    f"the image archive has a {size}-byte PAX header (at most {PAX_MAX_BYTES})"
                )
            self._padding = -size % BLOCK
            if size == 0:
                self._pax = {}
                self._go("header", BLOCK)
            else:
                self._go("pax", size)
            return
        if kind not in _REGULAR:
            what = _KINDS.get(kind, f"a member of type {kind!r}")
            raise ArchiveRefused(
                f"the image archive holds {what}: only the regular files"
                f" {', '.join(ALL_IMAGE_FILES)}"
            )
        pax, self._pax = self._pax or {}, None
        if any(key.startswith("GNU.sparse") for key in pax):
            raise ArchiveRefused("the image archive holds a sparse file (PAX GNU.sparse records)")
        name = pax.get("path", _name(header))
        if "size" in pax:
            if not re.fullmatch(r"[0-9]{1,20}", pax["size"]):
                raise ArchiveRefused("not an image archive: a malformed PAX size")
            size = int(pax["size"])
        if name not in ALL_IMAGE_FILES:
            raise ArchiveRefused(
                f"unexpected {name!r} in the image archive (only regular files"
                f" {', '.join(ALL_IMAGE_FILES)})"
            )
        if name in self.seen:
            raise ArchiveRefused(f"{name} appears twice in the image archive")
        if name == MANIFEST and size > MANIFEST_MAX_BYTES:
            raise TooLarge(f"the image's manifest declares {size} bytes (at most"
                           f" {MANIFEST_MAX_BYTES})")  # fmt: skip
        self.reserve(size)  # may refuse: before the file exists
        self.seen.append(name)
        # Exclusive create in a fresh directory of ours: nothing to follow or overwrite.
        self._sink = (self.staging / name).open("xb")
        # Sized to its declaration at once (sparse: no blocks yet), so that other replicas
        # sharing the store count it in full from now on, not as far as it has arrived.
        self._sink.truncate(size)
        self._padding = -size % BLOCK
        if size == 0:
            self._sink.close()
            self._sink = None
            self._go("header", BLOCK)
        else:
            self._go("data", size)

    def finish(self) -> None:
        """The upload is complete: the archive ended at a member boundary with every file of
        a v1 image, or of a v2 one (with rootfs.img)."""
        if self._state not in ("header", "end") or self._buffer:
            raise ArchiveRefused("the image archive is truncated")
        if self._pax is not None:
            raise ArchiveRefused("the image archive ends after a PAX header")
        wanted = IMAGE_FILES_V2 if ROOTFS in self.seen else IMAGE_FILES
        missing = [name for name in wanted if name not in self.seen]
        if missing:
            raise ArchiveRefused(f"the image archive lacks {', '.join(missing)}")

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
