"""Reading a flag file's audit trail back (:mod:`.history` decides what to show).

* A local file's records are the lines of its JSON-lines log (``<file>.audit.jsonl``, or the
  shared ``--audit-log`` filtered to this file's records), read whole.
* An S3 file's records are the objects under ``<key>.audit/``: listed (``s3:ListBucket``),
  then fetched with parallel GETs (:data:`WORKERS` at once), newest name first. The names
  start with the version written, zero-padded, so the listing alone orders them and
  ``--since`` skips old objects by their ``LastModified`` before any GET; with ``--limit``
  the reading goes round by round and stops once enough records are kept (the newest record,
  for ``status``, costs a GET or a few).

A line or object that is not a record is a :class:`~.history.Damaged`, counted and shown.
A log or object that cannot be read at all raises :class:`~ai_agent_handler.StoreError`:
half an audit trail shown as the whole one would mislead.
"""

from __future__ import annotations

import concurrent.futures
import datetime
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _aws
from ..exceptions import StoreError
from . import audit
from .history import Damaged, Filters, Record, from_line, newest_first, select

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: GETs of audit objects in flight at once (the S3 client keeps 32 connections).
WORKERS = 16
#: Objects fetched per round when ``--limit`` may stop the reading early.
BATCH = 256
#: How much earlier than ``--since`` an object's ``LastModified`` may be and still hold a
#: record of that time (the writer's clock against S3's).
CLOCK_MARGIN = datetime.timedelta(minutes=5)

#: ``progress(done, total)``: records read so far, of how many to read.
Progress = Callable[[int, int], None]


@dataclass
class Trail:
    """The records of one flag file, newest first, and what could not be read."""

    source: str
    #: Where the records are: the log's path or ``s3://bucket/<key>.audit/``.
    where: str
    records: list[Record] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)
    #: Records read (before the filters).
    read: int = 0


def read_trail(
    source: str,
    filters: Filters | None = None,
    *,
    audit_log: str | None = None,
    s3_client: S3Client | None = None,
    progress: Progress | None = None,
    workers: int = WORKERS,
) -> Trail:
    """The audit records of the flag file ``source`` that ``filters`` keep, newest first.

    ``audit_log`` (``--audit-log``): the records are in that shared local log instead.
    """
    filters = filters or Filters()
    if audit_log is not None:
        return _local(source, Path(audit_log), filters, audit.names(source))
    if _aws.is_s3_uri(source):
        return _s3(source, filters, s3_client, progress, workers)
    return _local(source, audit.log_path(source), filters, None)


def newest(
    source: str, *, audit_log: str | None = None, s3_client: S3Client | None = None
) -> Trail:
    """The newest record of ``source`` (one GET on S3, after the listing)."""
    return read_trail(source, Filters(limit=1), audit_log=audit_log, s3_client=s3_client)


# -- a local JSON-lines log ------------------------------------------------------------------


def _local(
    source: str, log: Path, filters: Filters, belongs: Callable[[object], bool] | None
) -> Trail:
    trail = Trail(source, str(log))
    records = []
    for record in _log_records(log, belongs):
        if isinstance(record, Damaged):
            trail.damaged.append(record)
            continue
        trail.read += 1
        records.append(record)
    trail.records = select(records, filters)
    return trail


def _log_records(log: Path, belongs: Callable[[object], bool] | None) -> Iterator[Record | Damaged]:
    """Every line of ``log`` (:func:`.audit.log_lines`) as a record or a damaged one."""
    try:
        for number, line in enumerate(audit.log_lines(log), 1):
            if not line.strip():
                continue
            found = from_line(line, f"{log}:{number}")
            if belongs is None or isinstance(found, Damaged) or belongs(found.file):
                yield found
    except OSError as err:
        raise StoreError(f"cannot read {log}: {err.strerror or err}") from err


# -- objects under <key>.audit/ ----------------------------------------------------------------


def _s3(
    source: str,
    filters: Filters,
    client: S3Client | None,
    progress: Progress | None,
    workers: int,
) -> Trail:
    bucket, key = _aws.parse_s3_uri(source)
    prefix = f"{key}.audit/"
    trail = Trail(source, f"s3://{bucket}/{prefix}")
    try:
        client = client or _aws.s3_client()
        names = _listing(client, bucket, prefix, filters.since)
    except _aws.ERRORS as err:
        raise StoreError(f"cannot list {trail.where}: {_aws.describe(err)}") from err
    # Newest name first: with a limit, the first rounds usually hold every record wanted.
    names.sort(reverse=True)
    kept: list[Record] = []
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start, end in _rounds(len(names), filters):
            chunk = names[start:end]
            bodies = pool.map(lambda n: _get(client, bucket, n), chunk)
            for name, found in zip(chunk, bodies, strict=True):
                done += 1
                if progress is not None:
                    progress(done, len(names))
                if found is None:  # deleted since the listing
                    continue
                record = from_line(found, f"s3://{bucket}/{name}")
                if isinstance(record, Damaged):
                    trail.damaged.append(record)
                    continue
                trail.read += 1
                if filters.keeps(record):
                    kept.append(record)
            if filters.limit is not None and len(kept) >= filters.limit:
                break
    trail.records = select(kept, filters)
    return trail


def _rounds(total: int, filters: Filters) -> Iterator[tuple[int, int]]:
    """The slices of the newest-first names fetched round by round: all at once without a
    limit; with one, first the limit and a margin (a record can be damaged, older than
    ``--since``) when only the limit and time filter, else :data:`BATCH` at a time."""
    if filters.limit is None:
        yield 0, total
        return
    only_time = filters.actor is None and filters.endpoint is None
    size = filters.limit + WORKERS if only_time else max(BATCH, filters.limit)
    start = 0
    while start < total:
        yield start, min(start + size, total)
        start, size = start + size, max(BATCH, filters.limit)


def _listing(
    client: S3Client, bucket: str, prefix: str, since: datetime.datetime | None
) -> list[str]:
    """The record objects' keys under ``prefix``, without those written well before
    ``since``."""
    earliest = since - CLOCK_MARGIN if since is not None else None
    names = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            modified = item.get("LastModified")
            if earliest is not None and modified is not None and modified < earliest:
                continue
            names.append(item["Key"])
    return names


def _get(client: S3Client, bucket: str, name: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=name)["Body"].read()
    except _aws.ERRORS as err:
        if _aws.error_code(err) in _aws.NOT_FOUND:
            return None
        raise StoreError(f"cannot read s3://{bucket}/{name}: {_aws.describe(err)}") from err


def merged(trails: Sequence[Trail], limit: int | None) -> list[Record]:
    """The records of several files, newest first, at most ``limit``."""
    records = newest_first(record for trail in trails for record in trail.records)
    return records if limit is None else records[:limit]
