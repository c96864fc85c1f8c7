"""Column types: uint256 amounts that compare correctly in SQLite and PostgreSQL, UTC
datetimes, and statuses read back as their `StrEnum`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

_E = TypeVar("_E", bound=StrEnum)

_DIGITS = 78  # len(str(2**256 - 1))


class Uint256(TypeDecorator[int]):
    """A uint256 stored as a zero-padded 78-digit string.

    Token amounts overflow 64-bit integers and SQLite has no exact wide numeric type; the
    zero padding makes string order equal numeric order, so `>=` and ORDER BY work on both
    databases and an index serves them.
    """

    impl = String(_DIGITS)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        number = int(value)
        if not 0 <= number < 2**256:
            raise ValueError(f"not a uint256: {value!r}")
        return str(number).zfill(_DIGITS)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def uint256_literal(value: int) -> str:
    """The stored form of `value`, for comparisons written by hand (benchmarks, raw SQL)."""
    return str(int(value)).zfill(_DIGITS)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store UTC-aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StrEnumType(TypeDecorator[_E]):
    """A `StrEnum` stored as its value in a VARCHAR(16), read back as the enum member.

    Plain strings rather than a database ENUM: adding a state needs no schema change, and
    a value the enum does not know fails loudly when read.
    """

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[_E]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> _E | None:
        return None if value is None else self.enum(value)
