"""The three DER primitives AMD's certificate extensions use (INTEGER, IA5String, OCTET STRING).

`cryptography` hands these extensions over as raw DER (`UnrecognizedExtension`); decoding is
strict (definite short or long lengths, no trailing bytes) so a hostile certificate cannot
smuggle a second value past the check.
"""

from __future__ import annotations

INTEGER = 0x02
OCTET_STRING = 0x04
IA5_STRING = 0x16


class DerError(ValueError):
    """The bytes are not the single DER value that was expected."""


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _encode_length(len(content)) + content


def encode_integer(value: int) -> bytes:
    if value < 0:
        raise DerError("only non-negative integers are used in AMD extensions")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return encode(INTEGER, body)


def decode(tag: int, data: bytes) -> bytes:
    """Content of the single DER value of type `tag` that makes up all of `data`."""
    if len(data) < 2 or data[0] != tag:
        raise DerError(f"expected DER tag {tag:#x}")
    first = data[1]
    if first < 0x80:
        length, start = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise DerError("bad DER length")
        length = int.from_bytes(data[2 : 2 + count], "big")
        start = 2 + count
        if length < 0x80 or data[2] == 0:
            raise DerError("non-minimal DER length")
    if len(data) != start + length:
        raise DerError("DER value length does not match its content")
    return data[start:]


def decode_integer(data: bytes) -> int:
    body = decode(INTEGER, data)
    if not body or (len(body) > 1 and body[0] == 0 and body[1] < 0x80):
        raise DerError("non-minimal DER INTEGER")
    if body[0] & 0x80:
        raise DerError("negative DER INTEGER")
    return int.from_bytes(body, "big")


def decode_ia5(data: bytes) -> str:
    body = decode(IA5_STRING, data)
    try:
        return body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DerError("IA5String is not ASCII") from exc
