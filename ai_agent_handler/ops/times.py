"""Time as the operators' tools write and read it (UTC, ISO 8601, durations such as
``1h30m``), and their results as JSON (:func:`as_json`)."""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import re
from collections.abc import Mapping
from typing import Any

UTC = datetime.timezone.utc


@dataclasses.dataclass(frozen=True)
class Window:
    """A span of time, ``[start, end)``, in UTC (what a counter sum covers)."""

    start: datetime.datetime
    end: datetime.datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def utc(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` in UTC; a time without a zone is taken to be UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def from_timestamp(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, UTC)


def iso(moment: datetime.datetime, *, ms: bool = False) -> str:
    """``2026-12-04T09:30:00+00:00`` (with ``ms``, ``...09:30:00.123+00:00``)."""
    return utc(moment).isoformat(timespec="milliseconds" if ms else "seconds")


def parse_iso(value: object) -> datetime.datetime | None:
    """An ISO 8601 time (``Z`` or an offset; none: UTC) in UTC; None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        return utc(datetime.datetime.fromisoformat(text))
    except ValueError:
        return None


def http_date(value: str | None) -> datetime.datetime | None:
    """An HTTP ``Date`` header in UTC; None when absent or malformed."""
    if not value:
        return None
    try:
        return utc(email.utils.parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")
_SECONDS = re.compile(r"\d+(\.\d+)?")


def parse_duration(text: str, *, plain_seconds: bool = False) -> float:
    """``"30m"``, ``"2h"``, ``"1d"``, ``"1h30m"``, ``"0s"`` -> seconds; with
    ``plain_seconds`` a bare number of seconds too (``"0.5"``). :class:`ValueError` naming
    ``text`` for anything else (``nan``, ``-1``, ``1.5h``)."""
    cleaned = text.strip().lower()
    if plain_seconds and _SECONDS.fullmatch(cleaned):
        return float(cleaned)
    if not cleaned or _PART.sub("", cleaned):
        seconds = "seconds, or " if plain_seconds else ""
        raise ValueError(
            f"not a duration: {text!r} (expected {seconds}a number and a unit s, m, h or d: "
            "30m, 2h, 1d)"
        )
    return float(sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned)))


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; ``0`` -> ``"0s"``."""
    left = max(0, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def ago(seconds: float) -> str:
    """``"less than a minute"``, ``"1 minute"``, ``"59 minutes"``, ``"3 hours"``, ``"12 days"``
    (whole units, rounded down: 59.5 minutes are not yet an hour)."""
    if seconds < 60:
        return "less than a minute"
    size, unit = next(
        (size, unit) for size, unit, below in _AGO if seconds < below or unit == "day"
    )
    count = int(seconds // size)
    return f"{count} {unit}" + ("" if count == 1 else "s")


_AGO = ((60, "minute", 3600), (3600, "hour", 48 * 3600), (86400, "day", 0))


def as_json(value: Any, *, own_fields: bool = False) -> Any:
    """``value`` as JSON values: an object with ``to_json()`` by that (unless
    ``own_fields``), a dataclass by its fields (a field's metadata ``json`` renames it,
    ``omit_none`` leaves it out while None), times in ISO 8601 UTC, tuples as lists."""
    if hasattr(value, "to_json") and not own_fields:
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if item is None and field.metadata.get("omit_none"):
                continue
            out[field.metadata.get("json", field.name)] = as_json(item)
        return out
    if isinstance(value, datetime.datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    return value
