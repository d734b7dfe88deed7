"""The one place a timestamp is parsed and range-checked: log records, query parameters, CLI options.

Every instant loglens accepts must be representable as a UTC calendar date in years 1-9999
(Python's `datetime`, which every reader of the store converts to). A local time near the edges
can leave that range once its offset is applied (`0001-01-01T00:00:00+14:00` is year 0 in UTC,
`9999-12-31T23:59:59-01:00` is year 10000), so the range is checked on the UTC instant, never on
the text. Anything outside is refused with a reason (422 for query parameters, dead-letter for
records) and can never be stored.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z in epoch microseconds
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
MS_THRESHOLD = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)
RANGE_TEXT = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z (in UTC)"

# RFC 3339 date-time (ISO 8601 profile): date, T, time, optional fraction, Z or ±hh:mm.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?$",
)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class TimestampError(ValueError):
    """A value is not an acceptable timestamp; the message says why and how to write it."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_range(us: int, value: object) -> int:
    if not MIN_US <= us <= MAX_US:
        raise TimestampError(f"out of range: {_short(value)} is outside {RANGE_TEXT}")
    return us


def parse_text(text: str, *, naive_utc: bool = False, allow_date: bool = False) -> int:
    """Epoch microseconds (UTC) of an RFC 3339 date-time; `naive_utc` reads a missing offset as UTC.

    Raises TimestampError saying what is wrong: no timezone, not RFC 3339, no such date, out of range.
    """
    stripped = text.strip()
    if allow_date and _DATE_ONLY.match(stripped):
        stripped += "T00:00:00Z"
    m = _RFC3339.match(stripped)
    if m is None:
        raise TimestampError(
            f"not an RFC 3339 date-time (got {_short(text)}); write e.g. 2026-11-23T14:00:00Z or "
            "2026-11-23T15:00:00+01:00"
        )
    if m.group("tz") is None and not naive_utc:
        raise TimestampError(
            f"no timezone in {_short(text)}: add Z (UTC) or an offset such as +01:00, "
            "e.g. 2026-11-23T14:00:00Z (RFC 3339)"
        )
    normalized = stripped.replace("z", "Z").replace("t", "T")
    leap = m.group(6) == "60"  # RFC 3339 leap second: read as the first instant of the next minute
    if leap:
        normalized = normalized[: m.start(6)] + "59" + normalized[m.end(6) :]
    try:
        dt = datetime.fromisoformat(normalized)
    except ValueError as exc:
        raise TimestampError(f"no such date or time: {_short(text)} ({exc})") from None
    if leap:
        dt = dt.replace(microsecond=0) + timedelta(seconds=1)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # timedelta arithmetic stays exact (and never overflows) where converting to UTC could not
    delta = dt - EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _check_range(us, text)


def parse_epoch(value: float) -> int:
    """Epoch microseconds of a Unix time number in seconds, or milliseconds above 1e11."""
    if isinstance(value, bool) or not math.isfinite(value):
        raise TimestampError(f"not a finite epoch number (got {_short(value)})")
    seconds = float(value)
    if seconds > MS_THRESHOLD:
        seconds /= 1000.0
    if seconds < 0:
        raise TimestampError(f"epoch numbers must be >= 0 (got {_short(value)}); use an RFC 3339 string before 1970")
    if seconds * 1_000_000 > MAX_US:
        raise TimestampError(f"out of range: {_short(value)} is outside {RANGE_TEXT}")
    return round(seconds * 1_000_000)


def parse_timestamp(value: object, *, naive_utc: bool = False) -> int:
    """Epoch microseconds (UTC) of a record's timestamp: RFC 3339 text or an epoch number (s or ms)."""
    if isinstance(value, str):
        return parse_text(value, naive_utc=naive_utc)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_epoch(value)
    raise TimestampError(f"must be an RFC 3339 string or an epoch number (got {_short(value)})")


def to_datetime(us: int) -> datetime:
    """The aware UTC datetime of epoch microseconds already range-checked by this module."""
    return EPOCH + timedelta(microseconds=us)


def parse_instant(value: object) -> datetime:
    """An aware UTC datetime from a query parameter or option: RFC 3339 (no offset = UTC), a date, or epoch."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        delta = dt - EPOCH
        return to_datetime(_check_range((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds, value))
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return to_datetime(parse_epoch(float(text)))
        return to_datetime(parse_text(text, naive_utc=True, allow_date=True))
    return to_datetime(parse_timestamp(value, naive_utc=True))


def _validate_instant(value: object) -> datetime:
    try:
        return parse_instant(value)
    except TimestampError as exc:
        raise ValueError(str(exc)) from None


Instant = Annotated[
    datetime,
    BeforeValidator(_validate_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A pydantic/FastAPI type for time parameters: parsed and range-checked by `parse_instant` (422 otherwise)."""
