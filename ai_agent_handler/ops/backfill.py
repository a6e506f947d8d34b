"""Copying a table's items from the legacy key to the composite key, as pure decisions.

``ai-agent-rollout backfill`` reads every item of a source table (DynamoDB's segmented
scan) and writes each under ``endpoint_id#part_id`` in a target table (the same table or
another one). This module decides what to write, and keeps the counts; :mod:`.backfill_io`
does the reading and writing.

* **Which part an item belongs to** is the receiver's knowledge, given as a mapping from the
  legacy key to ``(endpoint_id, part_id)`` (:func:`parse_map`: CSV or JSON) or as a function
  of the item (``--part-of module:function``, :func:`.backfill_io.function_rule`). An item
  no rule maps is counted and skipped, never guessed.
* **The target item** (:func:`target_item`) is the source item with the target key set to
  the composite key, and ``endpoint_id`` and ``part_id`` set to the mapped ids; every other
  attribute (the range key with it) is carried over unchanged.
* **Verification** compares each source item with the item under its composite key:
  :func:`item_digest` of what the copy writes against what is there. Per endpoint, the
  digests of all its items add up (:class:`Tally`) to one digest that does not depend on
  the scan order, so two workers' tallies merge.
* **The checkpoint** of a scan segment (:class:`Checkpoint`) holds where the scan stopped
  (DynamoDB's ``LastEvaluatedKey``) and the counts so far, written after each page.
* **The capacity limit** (:class:`Limiter`) spends the capacity units DynamoDB reports as
  consumed, and says how long to wait before the next request.

Items are in DynamoDB's wire form (``{"S": "..."}``, ``{"N": "1"}``, ``{"B": b"..."}``), as
the low-level client returns them, so nothing is lost converting numbers or binaries.
"""

from __future__ import annotations

import base64
import csv
import datetime
import hashlib
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..exceptions import BackfillError, PartitionKeyError
from ..partition_key import SEPARATOR, validate_id
from . import times

#: The attributes every target item gets next to the composite key.
ID_ATTRIBUTES = ("endpoint_id", "part_id")
#: The checkpoint's format; a checkpoint of another format is refused.
FORMAT = 1
#: Legacy keys with no rule, kept by name (each still counted when there are more).
UNMAPPED_SHOWN = 100
#: Differences (``verify``) and conflicts kept by key; all are counted.
SAMPLES_SHOWN = 20

Item = dict[str, Any]
#: ``(endpoint_id, part_id)``.
Part = tuple[str, str]


# -- the job ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a backfill copies: the tables, their key attributes and the scan's segments."""

    source_table: str
    target_table: str
    source_key: str = "endpoint_id"
    target_key: str = "partition_key"
    segments: int = 1

    def __post_init__(self) -> None:
        for name in ("source_table", "target_table", "source_key", "target_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or value != value.strip():
                raise BackfillError(f"{name.replace('_', '-')} must be a name, not {value!r}")
        if self.same_table and self.source_key != self.target_key:
            raise BackfillError(
                f"source and target are both {self.source_table}: a table has one partition "
                f"key, so --source-key ({self.source_key}) and --target-key "
                f"({self.target_key}) must be the same attribute"
            )
        if self.target_key in ID_ATTRIBUTES:
            raise BackfillError(
                f"--target-key {self.target_key} would be overwritten by the mapped "
                f"{self.target_key}: the composite key needs its own attribute (a table "
                f"keyed by {self.target_key} is copied to another table)"
            )
        if isinstance(self.segments, bool) or not 1 <= self.segments <= 1_000_000:
            raise BackfillError(f"segments must be from 1 to 1000000, not {self.segments!r}")

    @property
    def same_table(self) -> bool:
        return self.source_table == self.target_table

    @property
    def name(self) -> str:
        """The checkpoint folder of this job: the tables and keys, file-name safe."""
        raw = f"{self.source_table}.{self.source_key}--{self.target_table}.{self.target_key}"
        return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in raw)

    def to_json(self) -> dict[str, Any]:
        return times.as_json(self, own_fields=True)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Worker:
    """``--worker I/N``: worker ``index`` of ``count`` (from 0) takes every segment ``s``
    with ``s % count == index``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Worker:
        """``"1/4"`` -> worker 1 of 4."""
        index, slash, count = text.partition("/")
        try:
            worker = cls(int(index), int(count))
        except ValueError:
            worker = None
        if not slash or worker is None or not 0 <= worker.index < worker.count:
            raise BackfillError(
                f"--worker takes I/N, I from 0 to N-1 (0/2 and 1/2 for two workers): {text!r}"
            )
        return worker

    def segments(self, total: int) -> list[int]:
        """This worker's segments of ``total``."""
        if self.count > total:
            raise BackfillError(
                f"{self.count} workers need at least {self.count} segments, got {total}: "
                f"use --segments {self.count} or more"
            )
        return list(range(self.index, total, self.count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# -- which part an item belongs to ----------------------------------------------------------


def parse_map(text: str, *, source: str) -> dict[str, Part]:
    """A mapping file: legacy key -> ``(endpoint_id, part_id)``.

    JSON: ``{"legacy-key": ["endpoint_id", "part_id"], ...}``; CSV: a header
    ``legacy_key,endpoint_id,part_id`` then one row per legacy key. Every id is checked as
    the handler checks it (no ``#``, no surrounding whitespace, not empty); a legacy key
    given twice is an error. :class:`BackfillError` names the line or key.
    """
    stripped = text.lstrip("\ufeff").lstrip()
    if stripped.startswith("{"):
        return _json_map(stripped, source)
    return _csv_map(text.lstrip("\ufeff"), source)


def _json_map(text: str, source: str) -> dict[str, Part]:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as err:
        raise BackfillError(f"{source}: not a JSON mapping: {err}") from None
    mapping: dict[str, Part] = {}
    for legacy, value in data.items():
        if not (isinstance(value, list) and len(value) == 2):
            raise BackfillError(
                f"{source}: {legacy!r} must map to [endpoint_id, part_id], not {value!r}"
            )
        mapping[_legacy(legacy, f"{source}: key {legacy!r}")] = _part(
            value[0], value[1], f"{source}: {legacy!r}"
        )
    return mapping


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"{key!r} is given twice")
        seen[key] = value
    return seen


_HEADER = ["legacy_key", "endpoint_id", "part_id"]


def _csv_map(text: str, source: str) -> dict[str, Part]:
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows, None)
    except csv.Error as err:
        raise BackfillError(f"{source}: not CSV: {err}") from None
    if header is None or [cell.strip() for cell in header] != _HEADER:
        raise BackfillError(
            f"{source}: a CSV mapping starts with the header {','.join(_HEADER)}, "
            f"not {','.join(header or [])!r} (or give JSON: {{legacy_key: [endpoint_id, part_id]}})"
        )
    mapping: dict[str, Part] = {}
    try:
        for row in rows:
            where = f"{source} line {rows.line_num}"
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise BackfillError(f"{where}: 3 cells expected, got {len(row)}: {row!r}")
            legacy = _legacy(row[0], where)
            if legacy in mapping:
                raise BackfillError(f"{where}: legacy key {legacy!r} is given twice")
            mapping[legacy] = _part(row[1], row[2], where)
    except csv.Error as err:
        raise BackfillError(f"{source} line {rows.line_num}: not CSV: {err}") from None
    return mapping


def _legacy(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise BackfillError(f"{where}: a legacy key must be a non-empty string, not {value!r}")
    return value


def _part(endpoint_id: object, part_id: object, where: str) -> Part:
    try:
        endpoint = validate_id("endpoint_id", endpoint_id)
        part = validate_id("part_id", part_id)
    except PartitionKeyError as err:
        raise BackfillError(f"{where}: {err}") from None
    if not endpoint or not part:
        raise BackfillError(
            f"{where}: endpoint_id and part_id must both be set, got {endpoint_id!r}, {part_id!r}"
        )
    return endpoint, part


def checked_part(found: object, where: str) -> Part | None:
    """What a ``--part-of`` function returned, checked: None (no rule maps the item) or a
    pair of valid ids; anything else is a :class:`BackfillError`."""
    if found is None:
        return None
    if not (isinstance(found, (tuple, list)) and len(found) == 2):
        raise BackfillError(f"{where} must return (endpoint_id, part_id) or None, not {found!r}")
    return _part(found[0], found[1], where)


# -- the items --------------------------------------------------------------------------------

Kind = Literal["copy", "composite", "unmapped", "invalid"]


@dataclass(frozen=True)
class Planned:
    """What to do with one source item."""

    kind: Kind
    #: The legacy key (``copy``, ``unmapped``), or why the item is ``invalid``.
    legacy: str | None = None
    #: The composite key and the item to write under it (``copy``).
    composite: str | None = None
    item: Item | None = None


def plan_item(
    source: Mapping[str, Any],
    job: Job,
    part_of: Callable[[Mapping[str, Any], str], Part | None],
    range_key: str | None = None,
) -> Planned:
    """What the copy does with ``source`` (wire form).

    * ``composite``: the item is already under a composite key (same table): nothing to do;
    * ``invalid``: no string legacy key in ``source_key``, no ``range_key`` (the target's
      sort key, carried over), or the part rule failed;
    * ``unmapped``: no rule maps its legacy key;
    * ``copy``: :func:`target_item`.

    ``part_of(item, legacy_key)`` is the rule (see :func:`mapping_rule`).
    """
    value = source.get(job.source_key)
    legacy = value.get("S") if isinstance(value, Mapping) else None
    if not isinstance(legacy, str) or not legacy:
        return Planned("invalid", f"no string {job.source_key} attribute")
    if range_key is not None and range_key not in source:
        return Planned("invalid", f"{legacy}: no {range_key} attribute (the target's sort key)")
    if SEPARATOR in legacy:
        if job.same_table:
            return Planned("composite", legacy)
        return Planned("invalid", f"{job.source_key} {legacy!r} is not a legacy key")
    try:
        part = part_of(source, legacy)
    except BackfillError as err:
        return Planned("invalid", str(err))
    if part is None:
        return Planned("unmapped", legacy)
    composite = f"{part[0]}{SEPARATOR}{part[1]}"
    return Planned("copy", legacy, composite, target_item(source, job, part))


def target_item(source: Mapping[str, Any], job: Job, part: Part) -> Item:
    """``source`` under its composite key: the target key, ``endpoint_id`` and ``part_id``
    set; everything else carried over."""
    endpoint, part_id = part
    item = dict(source)
    item[job.target_key] = {"S": f"{endpoint}{SEPARATOR}{part_id}"}
    item["endpoint_id"] = {"S": endpoint}
    item["part_id"] = {"S": part_id}
    return item


def mapping_rule(mapping: Mapping[str, Part]) -> Callable[[Mapping[str, Any], str], Part | None]:
    """The rule of a mapping file: the item's legacy key looked up."""

    def part_of(_item: Mapping[str, Any], legacy: str) -> Part | None:
        return mapping.get(legacy)

    return part_of


def canonical(value: Any) -> Any:
    """A wire-form value as JSON: binaries in base64 (``{"B64": ...}``), sets sorted, so
    equal items give equal text."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for kind, inner in value.items():
            if kind == "B":
                out["B64"] = _b64(inner)
            elif kind == "BS":
                out["BS64"] = sorted(_b64(one) for one in inner)
            elif kind in ("SS", "NS"):
                out[kind] = sorted(inner)
            else:
                out[kind] = canonical(inner)
        return out
    if isinstance(value, list):
        return [canonical(one) for one in value]
    return value


def _b64(value: Any) -> str:
    data = value if isinstance(value, (bytes, bytearray)) else bytes(value)
    return base64.b64encode(data).decode("ascii")


def item_digest(item: Mapping[str, Any]) -> str:
    """A digest of an item's whole content (wire form; set order and binary form do not
    matter)."""
    text = json.dumps(
        {name: canonical(value) for name, value in item.items()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def key_to_json(key: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``LastEvaluatedKey`` as JSON (binaries in base64 under ``B64``)."""
    return None if key is None else {name: canonical(value) for name, value in key.items()}


def key_from_json(data: object) -> dict[str, Any] | None:
    """:func:`key_to_json`'s output back in wire form."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BackfillError(f"last_key is not an object: {data!r}")
    return {name: _wire(value) for name, value in data.items()}


def _wire(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for kind, inner in value.items():
            if kind == "B64":
                out["B"] = base64.b64decode(inner)
            elif kind == "BS64":
                out["BS"] = [base64.b64decode(one) for one in inner]
            else:
                out[kind] = _wire(inner)
        return out
    if isinstance(value, list):
        return [_wire(one) for one in value]
    return value


def size_units(item: Mapping[str, Any], unit: int) -> int:
    """Capacity units of one item of about its JSON size: ``ceil(size / unit)`` (1 KB per
    write unit, 4 KB per strongly consistent read unit), at least 1. An estimate for
    answers that report no consumed capacity (a failed conditional write)."""
    size = len(json.dumps(canonical(dict(item)), separators=(",", ":")))
    return max(1, math.ceil(size / unit))


# -- counts, tallies, checkpoints -------------------------------------------------------------


@dataclass
class Tally:
    """One endpoint's items (by composite key): how many, and the sum of their digests
    (mod 2**128) -- the same items give the same sum in any order."""

    items: int = 0
    digest: int = 0

    def add(self, digest_hex: str) -> None:
        self.items += 1
        self.digest = (self.digest + int(digest_hex[:32], 16)) % (1 << 128)

    def merge(self, other: Tally) -> None:
        self.items += other.items
        self.digest = (self.digest + other.digest) % (1 << 128)

    def to_json(self) -> dict[str, Any]:
        return {"items": self.items, "digest": f"{self.digest:032x}"}

    @classmethod
    def from_json(cls, data: Any) -> Tally:
        try:
            return cls(int(data["items"]), int(data["digest"], 16))
        except (TypeError, KeyError, ValueError):
            raise BackfillError(f"not a tally: {data!r}") from None


#: The counters of a copy (and of a verification), in the order they are shown.
COUNTERS = (
    "scanned",
    "copied",
    "already",
    "conflicts",
    "composite",
    "unmapped",
    "invalid",
    "throttled",
    "read_units",
    "write_units",
)


@dataclass
class Counts:
    """What a copy did (a segment's, a worker's or the whole job's).

    ``copied``: written now; ``already``: the composite key held exactly what the copy writes
    (written by an earlier, interrupted run); ``conflicts``: it held something else (live
    traffic wrote it: never overwritten); ``composite``: items already under a composite key;
    ``unmapped``: no rule maps their legacy key; ``invalid``: no legacy key, or the rule
    failed; ``throttled``: requests DynamoDB refused for capacity and that were sent again.
    """

    scanned: int = 0
    copied: int = 0
    already: int = 0
    conflicts: int = 0
    composite: int = 0
    unmapped: int = 0
    invalid: int = 0
    throttled: int = 0
    read_units: float = 0.0
    write_units: float = 0.0
    #: Items per endpoint (composite key) that map: what a dry run reports.
    endpoints: dict[str, int] = field(default_factory=dict)
    #: Unmapped legacy keys and their items (the first :data:`UNMAPPED_SHOWN` keys).
    unmapped_keys: dict[str, int] = field(default_factory=dict)
    #: Conflicting and invalid items, as ``"key: why"`` (the first :data:`SAMPLES_SHOWN`).
    samples: list[str] = field(default_factory=list)

    def count(self, planned: Planned) -> None:
        """One scanned item, as planned."""
        self.scanned += 1
        if planned.kind == "copy":
            assert planned.composite is not None
            self.endpoints[planned.composite] = self.endpoints.get(planned.composite, 0) + 1
        elif planned.kind == "composite":
            self.composite += 1
        elif planned.kind == "unmapped":
            self.unmapped += 1
            legacy = planned.legacy or ""
            if legacy in self.unmapped_keys or len(self.unmapped_keys) < UNMAPPED_SHOWN:
                self.unmapped_keys[legacy] = self.unmapped_keys.get(legacy, 0) + 1
        else:
            self.invalid += 1
            self.sample(f"invalid item: {planned.legacy}")

    def sample(self, text: str) -> None:
        if len(self.samples) < SAMPLES_SHOWN:
            self.samples.append(text)

    def merge(self, other: Counts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, n in other.endpoints.items():
            self.endpoints[key] = self.endpoints.get(key, 0) + n
        for key, n in other.unmapped_keys.items():
            if key in self.unmapped_keys or len(self.unmapped_keys) < UNMAPPED_SHOWN:
                self.unmapped_keys[key] = self.unmapped_keys.get(key, 0) + n
        for text in other.samples:
            self.sample(text)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        out["read_units"] = round(self.read_units, 3)
        out["write_units"] = round(self.write_units, 3)
        out["endpoints"] = dict(sorted(self.endpoints.items()))
        out["unmapped_keys"] = dict(sorted(self.unmapped_keys.items()))
        out["samples"] = list(self.samples)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Counts:
        if not isinstance(data, dict):
            raise BackfillError(f"counts are not an object: {data!r}")
        try:
            counts = cls(**{name: data[name] for name in COUNTERS})
            counts.endpoints = {str(k): int(v) for k, v in data["endpoints"].items()}
            counts.unmapped_keys = {str(k): int(v) for k, v in data["unmapped_keys"].items()}
            counts.samples = [str(s) for s in data["samples"]]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise BackfillError(f"damaged counts: {err}") from None
        for name in COUNTERS:
            value = getattr(counts, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BackfillError(f"damaged counts: {name} is {value!r}")
        return counts


@dataclass
class Checkpoint:
    """Where one scan segment stands: the key the scan stopped after (None: from the start),
    whether it is done, and the counts so far (every earlier run's included)."""

    job: Job
    segment: int
    last_key: dict[str, Any] | None = None
    done: bool = False
    counts: Counts = field(default_factory=Counts)
    updated: datetime.datetime | None = None
    #: Who wrote it last: ``host:pid``.
    by: str | None = None

    @property
    def file_name(self) -> str:
        width = len(str(self.job.segments - 1))
        return f"segment-{self.segment:0{width}d}-of-{self.job.segments}.json"

    def encode(self) -> bytes:
        data = {
            "format": FORMAT,
            "job": self.job.to_json(),
            "segment": self.segment,
            "last_key": key_to_json(self.last_key),
            "done": self.done,
            "counts": self.counts.to_json(),
            "updated": None if self.updated is None else times.iso(self.updated, ms=True),
            "by": self.by,
        }
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, raw: bytes, *, job: Job, segment: int, where: str) -> Checkpoint:
        """A checkpoint read back; :class:`BackfillError` when it is damaged or belongs to
        another job (other tables, keys or number of segments)."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise BackfillError(f"{where}: damaged checkpoint (not JSON: {err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BackfillError(f"{where}: not a checkpoint of format {FORMAT}")
        if data.get("job") != job.to_json() or data.get("segment") != segment:
            raise BackfillError(
                f"{where} belongs to another job ({data.get('job')}, segment "
                f"{data.get('segment')}): same tables, keys and --segments to resume, or "
                "another --checkpoint"
            )
        try:
            found = cls(
                job,
                segment,
                key_from_json(data.get("last_key")),
                bool(data["done"]),
                Counts.from_json(data["counts"]),
                times.parse_iso(data.get("updated")),
                data.get("by"),
            )
        except (KeyError, BackfillError, ValueError, TypeError) as err:
            raise BackfillError(f"{where}: damaged checkpoint: {err}") from None
        return found

    def advanced(self, last_key: dict[str, Any] | None, counts: Counts, **kw: Any) -> Checkpoint:
        """The checkpoint after one more page."""
        return replace(self, last_key=last_key, done=last_key is None, counts=counts, **kw)


# -- capacity ----------------------------------------------------------------------------------


_EPSILON = 1e-9


class Limiter:
    """At most ``rate`` capacity units per second, from what DynamoDB reports as consumed.

    :meth:`admit` says how long to wait before a request (0: go, and one unit is reserved
    for it, so that requests admitted together from several threads cannot all overspend);
    :meth:`spend` settles the request's consumed units once it returns. The units spent
    stay at ``rate`` per second from the first request on: the balance starts at one unit
    and never holds more than one second's worth. ``rate`` None: no limit. Pure: the time
    is given.
    """

    #: Units reserved for a request when it is admitted.
    RESERVED = 1.0

    def __init__(self, rate: float | None, now: float) -> None:
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise BackfillError(f"a capacity limit must be a positive number, not {rate!r}")
        self.rate = rate
        self._balance = self.RESERVED  # units that may be spent now
        self._at = now

    def _refill(self, now: float) -> None:
        if self.rate is None:
            return
        elapsed = max(0.0, now - self._at)
        self._balance = min(max(self.rate, self.RESERVED), self._balance + elapsed * self.rate)
        self._at = max(self._at, now)

    def admit(self, now: float) -> float:
        """Seconds to wait before the next request; 0: send it now (a unit is reserved)."""
        if self.rate is None:
            return 0.0
        self._refill(now)
        if self._balance >= self.RESERVED - _EPSILON:  # float sums of a refill: not a wait
            self._balance -= self.RESERVED
            return 0.0
        return (self.RESERVED - self._balance) / self.rate

    def spend(self, units: float, now: float) -> None:
        """An admitted request consumed ``units``."""
        if self.rate is None:
            return
        self._refill(now)
        self._balance -= units - self.RESERVED


def backoff(attempt: int, draw: float, *, base: float = 0.05, cap: float = 20.0) -> float:
    """Seconds before sending a throttled request again: "full jitter", ``draw`` (0..1) of
    ``min(cap, base * 2**attempt)``."""
    return float(draw * min(cap, base * 2.0 ** min(attempt, 30)))


# -- progress ----------------------------------------------------------------------------------


def progress_line(
    job: Job, counts: Counts, *, elapsed: float, expected: int | None, worker: Worker
) -> str:
    """``backfill a -> b (worker 0/2): 12,000 scanned (850/s), 11,900 copied, ...,
    about 3m left``; ``expected``: this worker's share of the table's item count, if known."""
    rate = counts.scanned / elapsed if elapsed > 0 else 0.0
    parts = [
        f"{counts.scanned:,} scanned ({rate:,.0f}/s)",
        f"{counts.copied:,} copied",
    ]
    for name in ("already", "conflicts", "unmapped", "invalid", "throttled"):
        value = getattr(counts, name)
        if value:
            parts.append(f"{value:,} {name}")
    if expected and rate > 0 and counts.scanned < expected:
        parts.append(f"about {times.format_duration((expected - counts.scanned) / rate)} left")
    who = "" if worker.count == 1 else f" (worker {worker})"
    return f"backfill {job.source_table} -> {job.target_table}{who}: " + ", ".join(parts)


# -- verification -------------------------------------------------------------------------------


@dataclass
class Verified:
    """What ``backfill verify`` found: per endpoint (composite key) the source's and the
    target's tallies, and the differences."""

    counts: Counts = field(default_factory=Counts)
    source: dict[str, Tally] = field(default_factory=dict)
    target: dict[str, Tally] = field(default_factory=dict)
    missing: int = 0
    different: int = 0
    #: ``"key: missing"`` / ``"key: different (attributes a, b)"``, the first few.
    differences: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every mapped source item has its target with the same content."""
        return self.missing == 0 and self.different == 0

    def compare(self, composite: str, key: str, expected: Item, found: Item | None) -> None:
        """One source item's copy (``expected``) against the item under its key."""
        digest = item_digest(expected)
        self.source.setdefault(composite, Tally()).add(digest)
        if found is None:
            self.missing += 1
            self._difference(f"{key}: missing")
            return
        found_digest = item_digest(found)
        self.target.setdefault(composite, Tally()).add(found_digest)
        if found_digest != digest:
            self.different += 1
            names = sorted(
                name
                for name in set(expected) | set(found)
                if canonical(expected.get(name)) != canonical(found.get(name))
            )
            self._difference(f"{key}: different ({', '.join(names)})")

    def _difference(self, text: str) -> None:
        if len(self.differences) < SAMPLES_SHOWN:
            self.differences.append(text)

    def merge(self, other: Verified) -> None:
        self.counts.merge(other.counts)
        for mine, theirs in ((self.source, other.source), (self.target, other.target)):
            for key, tally in theirs.items():
                mine.setdefault(key, Tally()).merge(tally)
        self.missing += other.missing
        self.different += other.different
        for text in other.differences:
            self._difference(text)

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: items, source and target digests, and whether they match."""
        out = {}
        for key in sorted(self.source):
            source = self.source[key]
            target = self.target.get(key, Tally())
            out[key] = {
                "items": source.items,
                "source_digest": source.to_json()["digest"],
                "target_digest": target.to_json()["digest"],
                "complete": source.items == target.items and source.digest == target.digest,
            }
        return out


@dataclass(frozen=True)
class Backfilled:
    """The record ``backfill verify`` leaves beside the checkpoints (``verified.json``), and
    what ``retire-check`` reads: when the job was verified, and per endpoint whether every
    item is under its composite key with the same content."""

    job: Job
    verified: datetime.datetime
    complete: bool
    items: int
    missing: int
    different: int
    unmapped: int
    endpoints: Mapping[str, Mapping[str, Any]]
    #: The segments verified (a worker verifies its own; all of them make the whole table).
    segments: tuple[int, ...] = ()

    @property
    def whole(self) -> bool:
        return set(self.segments) == set(range(self.job.segments))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "job": self.job.to_json(),
            "verified": times.iso(self.verified),
            "complete": self.complete,
            "items": self.items,
            "missing": self.missing,
            "different": self.different,
            "unmapped": self.unmapped,
            "segments": list(self.segments),
            "endpoints": dict(self.endpoints),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> Backfilled:
        try:
            if data.get("format") != FORMAT:
                raise BackfillError(f"format {data.get('format')!r}")
            job = Job(**data["job"])
            verified = times.parse_iso(data["verified"])
            if verified is None:
                raise BackfillError(f"verified is not a time: {data['verified']!r}")
            return cls(
                job,
                verified,
                bool(data["complete"]),
                int(data["items"]),
                int(data["missing"]),
                int(data["different"]),
                int(data["unmapped"]),
                dict(data["endpoints"]),
                tuple(int(s) for s in data["segments"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError, BackfillError) as err:
            raise BackfillError(f"{where}: not a backfill record: {err}") from None

    def summary(self) -> str:
        """``aace-agents -> aace-agents: 120 endpoints, 10,000 items, complete (verified T)``."""
        state = "complete" if self.complete and self.whole else "INCOMPLETE"
        problems = []
        if self.missing:
            problems.append(f"{self.missing:,} missing")
        if self.different:
            problems.append(f"{self.different:,} different")
        if not self.whole:
            problems.append(f"segments {len(self.segments)} of {self.job.segments} verified")
        why = f" ({', '.join(problems)})" if problems else ""
        return (
            f"{self.job.source_table} -> {self.job.target_table}: {len(self.endpoints):,} "
            f"endpoint(s), {self.items:,} item(s), {state}{why}, verified "
            f"{times.iso(self.verified)}"
        )


def merge_records(records: Iterable[Backfilled]) -> Backfilled | None:
    """Workers' records of one job, as one: the newest record of each segment, of the
    segmentation (``--segments``) the newest record was made with (a table verified again
    with other segments is judged on that verification alone)."""
    records = list(records)
    if not records:
        return None
    latest = max(records, key=lambda record: record.verified).job.segments
    newest: dict[int, Backfilled] = {}
    for record in (r for r in records if r.job.segments == latest):
        for segment in record.segments:
            if segment not in newest or newest[segment].verified < record.verified:
                newest[segment] = record
    chosen = list({id(r): r for r in newest.values()}.values())
    if not chosen:
        return None
    endpoints: dict[str, dict[str, Any]] = {}
    for record in chosen:
        for key, entry in record.endpoints.items():
            mine = endpoints.setdefault(key, {"items": 0, "complete": True})
            mine["items"] += int(entry.get("items", 0))
            mine["complete"] = bool(mine["complete"] and entry.get("complete", False))
    return Backfilled(
        chosen[0].job,
        min(r.verified for r in chosen),
        all(r.complete for r in chosen),
        sum(r.items for r in chosen),
        sum(r.missing for r in chosen),
        sum(r.different for r in chosen),
        sum(r.unmapped for r in chosen),
        endpoints,
        tuple(sorted(newest)),
    )
