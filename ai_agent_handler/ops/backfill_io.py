"""Backfilling a table to the composite key, and verifying it: DynamoDB and the checkpoints.

:func:`run_backfill` copies, :func:`verify_backfill` compares, both over DynamoDB's
segmented scan; what to write is decided by :mod:`.backfill`. The command line is
``ai-agent-rollout backfill`` (:mod:`.cli_backfill`); this is the same as a library call::

    from ai_agent_handler.ops.backfill_io import run_backfill, verify_backfill
    from ai_agent_handler.ops.backfill import Job, Worker, mapping_rule

    job = Job("aace-agents-old", "aace-agents", source_key="endpoint_id",
              target_key="partition_key", segments=8)
    report = run_backfill(job, mapping_rule({"acme-corp-prod": ("aws-prod", "acme-corp")}),
                          checkpoint="s3://ops-flags/ai-agent/production.flagd.json.backfill",
                          worker=Worker(0, 2), max_write_units=200)

* **Writes** are one conditional ``PutItem`` per item (``attribute_not_exists`` of the target
  key): an item already under the composite key is never overwritten. When the condition
  fails, DynamoDB returns the item that is there (``ReturnValuesOnConditionCheckFailure``):
  the same content is a copy an interrupted run already made (``already``), anything else is
  live traffic's (``conflicts``). So a run killed at any point and started again writes
  every item exactly once. The writes of a scanned page go out on ``write_threads`` threads.
* **Checkpoints**: one object per scan segment in ``<checkpoint>/<job>/`` (a local folder or
  an S3 prefix), written after every page with the scan's ``LastEvaluatedKey`` and the
  counts. A local segment is locked while a worker copies it (``flock``), an S3 one is
  written with ``IfMatch``/``IfNoneMatch``, so two workers given the same segment stop
  instead of both copying.
* **Capacity**: ``max_read_units``/``max_write_units`` per second for the whole job (each
  of ``N`` workers takes ``1/N``), spent from the ``ConsumedCapacity`` DynamoDB reports.
  Throttled requests (``ProvisionedThroughputExceededException``, ``ThrottlingException``,
  ``RequestLimitExceeded``; botocore retries them first) are sent again after a jittered
  exponential backoff; after ``max_throttle_retries`` in a row the run stops with its
  checkpoint (:class:`~ai_agent_handler.BackfillError`).
* **Memory** is one scanned page and its writes, whatever the table's size; the counts per
  endpoint grow with the number of endpoints, not items.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import fcntl
import functools
import json
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _aws
from ..exceptions import BackfillError
from . import times
from .backfill import (
    Backfilled,
    Checkpoint,
    Counts,
    Item,
    Job,
    Limiter,
    Part,
    Planned,
    Verified,
    Worker,
    backoff,
    checked_part,
    item_digest,
    merge_records,
    plan_item,
    progress_line,
    size_units,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

__all__ = [
    "BackfillReport",
    "CheckpointStore",
    "VerifyReport",
    "backfill_root",
    "function_rule",
    "read_backfilled",
    "run_backfill",
    "verify_backfill",
]

#: Error codes of a request DynamoDB refused for capacity: sent again after a backoff.
THROTTLED = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
#: Items per scanned page (DynamoDB also ends a page at 1 MB).
PAGE_SIZE = 1000
#: Keys per ``BatchGetItem`` (DynamoDB's maximum).
BATCH_GET = 100
#: The default: one worker does every segment.
ONE_WORKER = Worker()
#: What the verification leaves per segment, beside the checkpoints.
VERIFIED_PREFIX = "verified-"

#: ``part_of(item, legacy_key)``: the rule of :mod:`.backfill` (``mapping_rule``,
#: ``function_rule``).
Rule = Callable[[Mapping[str, Any], str], "Part | None"]


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def function_rule(
    function: Callable[[Mapping[str, Any]], object], name: str
) -> Callable[[Mapping[str, Any], str], Part | None]:
    """The rule of a ``--part-of`` function: called with the item in Python form
    (:func:`plain`); what it returns is checked (:func:`checked_part`); an exception it
    raises makes the item ``invalid``, with its message."""

    def part_of(item: Mapping[str, Any], legacy: str) -> Part | None:
        try:
            found = function(plain(item))
        except Exception as err:  # the receiver's code: any failure is that item's
            raise BackfillError(f"{name} raised {type(err).__name__}: {err}") from None
        return checked_part(found, name)

    return part_of


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A wire-form item as boto3's resource API shows it (``Decimal`` numbers, sets)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserialize = TypeDeserializer().deserialize
    return {name: deserialize(value) for name, value in item.items()}


# -- checkpoints --------------------------------------------------------------------------------


class CheckpointStore:
    """The checkpoints and verification records of one job: files in
    ``<root>/<job.name>/`` (``root`` a folder or an ``s3://bucket/prefix``)."""

    def __init__(self, root: str, job: Job, *, s3_client: S3Client | None = None) -> None:
        self.root = root
        self.job = job
        self._s3 = s3_client
        self._etags: dict[str, str | None] = {}
        if _aws.is_s3_uri(root):
            bucket, prefix = _aws.parse_s3_uri(root)
            self._bucket: str | None = bucket
            self._prefix = f"{prefix.rstrip('/')}/{job.name}/"
            self.where = f"s3://{bucket}/{self._prefix}"
        else:
            self._bucket = None
            self._folder = Path(root) / job.name
            self.where = str(self._folder)

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            try:
                self._s3 = _aws.s3_client()
            except _aws.ERRORS as err:  # no region configured
                raise BackfillError(f"cannot create an S3 client: {err}") from err
        return self._s3

    def read(self, name: str) -> bytes | None:
        """A file's bytes; None when there is none."""
        if self._bucket is None:
            try:
                return (self._folder / name).read_bytes()
            except FileNotFoundError:
                return None
            except OSError as err:
                raise BackfillError(f"cannot read {self._folder / name}: {err.strerror}") from err
        try:
            answer = self.s3.get_object(Bucket=self._bucket, Key=self._prefix + name)
        except _aws.ERRORS as err:
            if _aws.error_code(err) in _aws.NOT_FOUND:
                self._etags[name] = None
                return None
            raise BackfillError(f"cannot read {self.where}{name}: {_aws.describe(err)}") from err
        self._etags[name] = answer["ETag"]
        return answer["Body"].read()

    def write(self, name: str, data: bytes) -> None:
        """The whole file at once: a local temp file renamed over it, or one S3 PUT made
        conditional on what this store read or wrote last (another writer of the same
        file since is a :class:`~ai_agent_handler.BackfillError`)."""
        if self._bucket is None:
            self._write_local(name, data)
            return
        condition: dict[str, Any] = {}
        if name in self._etags:
            etag = self._etags[name]
            condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            answer = self.s3.put_object(
                Bucket=self._bucket, Key=self._prefix + name, Body=data, **condition
            )
        except _aws.ERRORS as err:
            if _aws.error_code(err) in _aws.CONFLICT:
                raise BackfillError(
                    f"{self.where}{name} was written by another worker meanwhile: give each "
                    "worker its own --worker I/N"
                ) from err
            raise BackfillError(f"cannot write {self.where}{name}: {_aws.describe(err)}") from err
        self._etags[name] = answer["ETag"]

    def _write_local(self, name: str, data: bytes) -> None:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self._folder, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self._folder / name)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as err:
            raise BackfillError(f"cannot write {self._folder / name}: {err.strerror}") from err

    def names(self, prefix: str) -> list[str]:
        """The files whose names start with ``prefix``."""
        if self._bucket is None:
            try:
                return sorted(p.name for p in self._folder.glob(prefix + "*") if p.is_file())
            except OSError as err:
                raise BackfillError(f"cannot list {self._folder}: {err.strerror}") from err
        found: list[str] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix + prefix
            )
            for page in pages:
                found += [entry["Key"][len(self._prefix) :] for entry in page.get("Contents", [])]
        except _aws.ERRORS as err:
            raise BackfillError(f"cannot list {self.where}: {_aws.describe(err)}") from err
        return sorted(found)

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[None]:
        """Hold ``name`` against other workers on this machine (a local ``flock``; on S3 the
        conditional writes do it)."""
        if self._bucket is not None:
            yield
            return
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            lock = open(self._folder / f".{name}.lock", "a+b")  # noqa: SIM115
        except OSError as err:
            raise BackfillError(f"cannot lock {self._folder / name}: {err.strerror}") from err
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackfillError(
                    f"{self._folder / name} is being copied by another worker: give each "
                    "worker its own --worker I/N"
                ) from None
            yield

    def checkpoint(self, segment: int) -> Checkpoint:
        """The segment's checkpoint; a new one when there is none."""
        fresh = Checkpoint(self.job, segment)
        raw = self.read(fresh.file_name)
        if raw is None:
            return fresh
        where = f"{self.where.rstrip('/')}/{fresh.file_name}"
        return Checkpoint.decode(raw, job=self.job, segment=segment, where=where)

    def save(self, point: Checkpoint) -> None:
        self.write(point.file_name, point.encode())


# -- DynamoDB --------------------------------------------------------------------------------


@dataclass
class _Table:
    hash_key: str
    range_key: str | None
    item_count: int | None


class _Dynamo:
    """One job's DynamoDB calls: the capacity limits, the throttling backoff, the counts of
    units and throttles (thread-safe)."""

    def __init__(
        self,
        client: DynamoDBClient,
        *,
        max_read_units: float | None,
        max_write_units: float | None,
        workers: int,
        max_throttle_retries: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        draw: Callable[[], float],
    ) -> None:
        self.client = client
        self._clock, self._sleep, self._draw = clock, sleep, draw
        share = 1 / workers
        now = clock()
        self.reads = Limiter(None if max_read_units is None else max_read_units * share, now)
        self.writes = Limiter(None if max_write_units is None else max_write_units * share, now)
        self._max_retries = max_throttle_retries
        self._lock = threading.Lock()
        self.read_units = 0.0
        self.write_units = 0.0
        self.throttled = 0

    def describe(self, table: str) -> _Table:
        try:
            answer = self.client.describe_table(TableName=table)["Table"]
        except _aws.ERRORS as err:
            if _aws.error_code(err) == "ResourceNotFoundException":
                raise BackfillError(f"no table {table}") from err
            raise BackfillError(f"cannot describe {table}: {_aws.describe(err)}") from err
        keys = {entry["KeyType"]: entry["AttributeName"] for entry in answer["KeySchema"]}
        return _Table(keys["HASH"], keys.get("RANGE"), answer.get("ItemCount"))

    def call(
        self, limiter: Limiter, units_of: Callable[[Any], float], method: str, **kw: Any
    ) -> Any:
        """``client.<method>(**kw)`` within the limit and with the backoff; returns the
        answer, or the ``ClientError`` of a failed condition (not raised)."""
        attempt = 0
        while True:
            while True:
                with self._lock:
                    wait = limiter.admit(self._clock())
                if wait <= 0:
                    break
                self._sleep(wait)
            try:
                answer = getattr(self.client, method)(**kw)
            except _aws.ERRORS as err:
                code = _aws.error_code(err)
                if code == "ConditionalCheckFailedException":
                    answer = err
                elif code in THROTTLED:
                    with self._lock:
                        self.throttled += 1
                        limiter.spend(1.0, self._clock())
                    if attempt >= self._max_retries:
                        raise BackfillError(
                            f"DynamoDB refused {method} for capacity {attempt + 1} times in a "
                            f"row ({code}): lower --max-read-units/--max-write-units or raise "
                            "the table's capacity, then run the same command again (the "
                            "checkpoint holds what was done)"
                        ) from err
                    self._sleep(backoff(attempt, self._draw()))
                    attempt += 1
                    continue
                else:
                    raise BackfillError(f"{method} failed: {_aws.describe(err)}") from err
            units = units_of(answer)
            with self._lock:
                limiter.spend(units, self._clock())
                if limiter is self.reads:
                    self.read_units += units
                else:
                    self.write_units += units
            return answer


def _consumed(answer: Any, estimate: float) -> float:
    if isinstance(answer, dict):
        found = answer.get("ConsumedCapacity")
        if isinstance(found, list):
            return float(sum(entry.get("CapacityUnits", 0.0) for entry in found)) or estimate
        if isinstance(found, dict) and "CapacityUnits" in found:
            return float(found["CapacityUnits"])
    return estimate


# -- the copy ----------------------------------------------------------------------------------


@dataclass
class BackfillReport:
    """What a run did: the counts of this worker's segments (every earlier run's included),
    which segments are done, and whether this was a dry run."""

    job: Job
    worker: Worker
    counts: Counts
    segments: dict[int, bool] = field(default_factory=dict)
    dry_run: bool = False
    checkpoint: str | None = None
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        """Every segment of this worker was scanned to its end."""
        return all(self.segments.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job.to_json(),
            "worker": str(self.worker),
            "dry_run": self.dry_run,
            "done": self.done,
            "checkpoint": self.checkpoint,
            "segments": {str(s): done for s, done in sorted(self.segments.items())},
            "seconds": round(self.seconds, 3),
            **self.counts.to_json(),
        }


def run_backfill(
    job: Job,
    part_of: Rule,
    *,
    checkpoint: str | None,
    worker: Worker = ONE_WORKER,
    max_read_units: float | None = None,
    max_write_units: float | None = None,
    dry_run: bool = False,
    page_size: int = PAGE_SIZE,
    write_threads: int = 8,
    max_throttle_retries: int = 10,
    dynamodb_client: DynamoDBClient | None = None,
    s3_client: S3Client | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
    after_page: Callable[[int, Checkpoint], None] | None = None,
) -> BackfillReport:
    """Copy this worker's segments of ``job`` (see the module docstring).

    ``part_of`` is the rule (:func:`.backfill.mapping_rule`, :func:`.backfill.function_rule`).
    ``checkpoint`` is the folder or ``s3://`` prefix of the checkpoints (None only with
    ``dry_run``, which reads no checkpoint and writes nothing: it scans everything and counts
    per endpoint). ``progress(line)`` gets a line every ``progress_every`` seconds and one at
    the end. ``after_page(segment, checkpoint)`` is called after each page's checkpoint is
    written. Raises :class:`~ai_agent_handler.BackfillError` when the tables do not fit the
    job or DynamoDB fails past its retries; the checkpoints then hold what was done.
    """
    if checkpoint is None and not dry_run:
        raise BackfillError("a backfill needs a checkpoint location (only a dry run has none)")
    if isinstance(page_size, bool) or not 1 <= page_size <= 10_000:
        raise BackfillError(f"page size must be from 1 to 10000, not {page_size!r}")
    segments, dynamo, target = _open(
        job,
        worker,
        dynamodb_client,
        max_read_units=max_read_units,
        max_write_units=max_write_units,
        max_throttle_retries=max_throttle_retries,
        clock=clock,
        sleep=sleep,
        draw=draw,
    )
    source_count = dynamo.describe(job.source_table).item_count if not job.same_table else None
    expected = _share(target.item_count if job.same_table else source_count, job, segments)
    store = None if dry_run else CheckpointStore(str(checkpoint), job, s3_client=s3_client)
    report = BackfillReport(
        job, worker, Counts(), dry_run=dry_run, checkpoint=None if store is None else store.where
    )
    started = clock()
    shown = [started]
    run_counts = Counts()  # this run's scans, for the rate

    def show(final: bool = False) -> None:
        now = clock()
        if progress is None or (not final and now - shown[0] < progress_every):
            return
        shown[0] = now
        merged = _with_units(run_counts, dynamo)
        progress(
            progress_line(job, merged, elapsed=now - started, expected=expected, worker=worker)
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=write_threads) as pool:
        for segment in segments:
            fresh = Checkpoint(job, segment)
            with contextlib.nullcontext() if store is None else store.claim(fresh.file_name):
                point = fresh if store is None else store.checkpoint(segment)
                while not point.done:
                    counts = copy.deepcopy(point.counts)
                    before = (dynamo.throttled, dynamo.read_units, dynamo.write_units)
                    items, last_key = _scan_page(dynamo, job, segment, point.last_key, page_size)
                    planned = [plan_item(item, job, part_of, target.range_key) for item in items]
                    for plan in planned:
                        counts.count(plan)
                        run_counts.count(plan)
                    if not dry_run:
                        writes = [p for p in planned if p.kind == "copy"]
                        for outcome in pool.map(lambda p: _write(dynamo, job, p), writes):
                            for mine in (counts, run_counts):
                                _tally(mine, outcome)
                    _add_units(counts, dynamo, before)
                    point = point.advanced(last_key, counts, updated=times.utcnow(), by=_who())
                    if store is not None:
                        store.save(point)
                    if after_page is not None:
                        after_page(segment, point)
                    show()
            report.counts.merge(point.counts)
            report.segments[segment] = point.done
    report.seconds = clock() - started
    show(final=True)
    return report


def _open(
    job: Job,
    worker: Worker,
    client: DynamoDBClient | None,
    *,
    max_read_units: float | None,
    max_write_units: float | None,
    max_throttle_retries: int,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    draw: Callable[[], float],
) -> tuple[list[int], _Dynamo, _Table]:
    """This worker's segments, the job's DynamoDB calls, and the target table checked."""
    segments = worker.segments(job.segments)
    dynamo = _Dynamo(
        client or _dynamodb_client(),
        max_read_units=max_read_units,
        max_write_units=max_write_units,
        workers=worker.count,
        max_throttle_retries=max_throttle_retries,
        clock=clock,
        sleep=sleep,
        draw=draw,
    )
    return segments, dynamo, _check_tables(dynamo, job)


def _dynamodb_client() -> DynamoDBClient:
    import boto3

    try:
        return boto3.client("dynamodb", config=_aws.RETRY_CONFIG)
    except _aws.ERRORS as err:  # no region configured
        raise BackfillError(f"cannot create a DynamoDB client: {err}") from err


def _check_tables(dynamo: _Dynamo, job: Job) -> _Table:
    """The target table, checked against the job: its partition key is the target key."""
    target = dynamo.describe(job.target_table)
    if target.hash_key != job.target_key:
        raise BackfillError(
            f"the partition key of {job.target_table} is {target.hash_key}, not "
            f"{job.target_key}: give --target-key {target.hash_key}"
            + (" (and --source-key, the same table)" if job.same_table else "")
        )
    if not job.same_table:
        dynamo.describe(job.source_table)  # exists, and is readable
    return target


def _share(count: int | None, job: Job, segments: Sequence[int]) -> int | None:
    return None if not count else count * len(segments) // job.segments


def _scan_page(
    dynamo: _Dynamo, job: Job, segment: int, start: dict[str, Any] | None, page_size: int
) -> tuple[list[Item], dict[str, Any] | None]:
    kw: dict[str, Any] = {
        "TableName": job.source_table,
        "Segment": segment,
        "TotalSegments": job.segments,
        "Limit": page_size,
        "ReturnConsumedCapacity": "TOTAL",
    }
    if start is not None:
        kw["ExclusiveStartKey"] = start
    answer = dynamo.call(dynamo.reads, lambda a: _consumed(a, 0.5), "scan", **kw)
    return answer.get("Items", []), answer.get("LastEvaluatedKey")


def _write(dynamo: _Dynamo, job: Job, plan: Planned) -> tuple[str, str | None]:
    """One conditional write: ``("copied"|"already"|"conflicts", sample)``."""
    item = plan.item
    assert item is not None
    answer = dynamo.call(
        dynamo.writes,
        lambda a: _consumed(a, size_units(item, 1024)),
        "put_item",
        TableName=job.target_table,
        Item=item,
        ConditionExpression="attribute_not_exists(#key)",
        ExpressionAttributeNames={"#key": job.target_key},
        ReturnConsumedCapacity="TOTAL",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    if not isinstance(answer, Exception):
        return "copied", None
    there = answer.response.get("Item")  # type: ignore[attr-defined]
    if there is not None and item_digest(there) == item_digest(item):
        return "already", None
    return "conflicts", f"conflict: {plan.composite} (from {plan.legacy}) holds another item"


def _tally(counts: Counts, outcome: tuple[str, str | None]) -> None:
    kind, sample = outcome
    setattr(counts, kind, getattr(counts, kind) + 1)
    if sample is not None:
        counts.sample(sample)


def _add_units(counts: Counts, dynamo: _Dynamo, before: tuple[int, float, float]) -> None:
    with dynamo._lock:
        counts.throttled += dynamo.throttled - before[0]
        counts.read_units += dynamo.read_units - before[1]
        counts.write_units += dynamo.write_units - before[2]


def _with_units(counts: Counts, dynamo: _Dynamo) -> Counts:
    merged = copy.deepcopy(counts)
    merged.throttled, merged.read_units, merged.write_units = (
        dynamo.throttled,
        dynamo.read_units,
        dynamo.write_units,
    )
    return merged


# -- verification ------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What ``backfill verify`` found over this worker's segments, and where it recorded it."""

    job: Job
    worker: Worker
    found: Verified
    record: str | None = None

    @property
    def complete(self) -> bool:
        return self.found.complete

    def to_json(self) -> dict[str, Any]:
        found = self.found
        return {
            "job": self.job.to_json(),
            "worker": str(self.worker),
            "complete": found.complete,
            "items": sum(t.items for t in found.source.values()),
            "missing": found.missing,
            "different": found.different,
            "differences": list(found.differences),
            "samples": list(found.counts.samples),
            "unmapped": found.counts.unmapped,
            "unmapped_keys": dict(sorted(found.counts.unmapped_keys.items())),
            "invalid": found.counts.invalid,
            "composite": found.counts.composite,
            "endpoints": found.endpoints(),
            "record": self.record,
        }


def verify_backfill(
    job: Job,
    part_of: Rule,
    *,
    checkpoint: str | None,
    worker: Worker = ONE_WORKER,
    max_read_units: float | None = None,
    page_size: int = PAGE_SIZE,
    max_throttle_retries: int = 10,
    dynamodb_client: DynamoDBClient | None = None,
    s3_client: S3Client | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> VerifyReport:
    """Compare every mapped source item of this worker's segments with the item under its
    composite key: the same content as the copy writes, or a difference (missing, or which
    attributes differ). Per segment, a record (``verified-segment-...json``) goes beside the
    checkpoints (``checkpoint`` None: none is written); ``retire-check`` reads them."""
    segments, dynamo, target = _open(
        job,
        worker,
        dynamodb_client,
        max_read_units=max_read_units,
        max_write_units=None,
        max_throttle_retries=max_throttle_retries,
        clock=clock,
        sleep=sleep,
        draw=draw,
    )
    store = None if checkpoint is None else CheckpointStore(checkpoint, job, s3_client=s3_client)
    total = Verified()
    started = shown = clock()
    for segment in segments:
        found = Verified()
        start: dict[str, Any] | None = None
        while True:
            items, start = _scan_page(dynamo, job, segment, start, page_size)
            planned = [plan_item(item, job, part_of, target.range_key) for item in items]
            for plan in planned:
                found.counts.count(plan)
            copies = [p for p in planned if p.kind == "copy"]
            there = _get_targets(dynamo, job, target, copies)
            for plan in copies:
                assert plan.item is not None and plan.composite is not None
                key = _key_of(plan.item, job.target_key, target.range_key)
                found.compare(plan.composite, _shown_key(key), plan.item, there.get(_frozen(key)))
            now = clock()
            if progress is not None and now - shown >= progress_every:
                shown = now
                progress(
                    f"backfill verify {job.source_table} -> {job.target_table}: "
                    f"{total.counts.scanned + found.counts.scanned:,} scanned, "
                    f"{total.missing + found.missing:,} missing, "
                    f"{total.different + found.different:,} different"
                )
            if start is None:
                break
        if store is not None:
            _record(store, job, segment, found)
        total.merge(found)
    total.counts.read_units = dynamo.read_units
    total.counts.throttled = dynamo.throttled
    if progress is not None:
        progress(
            f"backfill verify {job.source_table} -> {job.target_table}: "
            f"{total.counts.scanned:,} scanned in {clock() - started:.1f} s, "
            f"{total.missing:,} missing, {total.different:,} different"
        )
    return VerifyReport(job, worker, total, None if store is None else store.where)


def _key_of(item: Mapping[str, Any], hash_key: str, range_key: str | None) -> dict[str, Any]:
    key = {hash_key: item[hash_key]}
    if range_key is not None:
        key[range_key] = item[range_key]
    return key


def _frozen(key: Mapping[str, Any]) -> str:
    return item_digest(key)


def _shown_key(key: Mapping[str, Any]) -> str:
    return "/".join(str(next(iter(value.values()))) for value in key.values())


def _get_targets(
    dynamo: _Dynamo, job: Job, target: _Table, copies: Sequence[Planned]
) -> dict[str, Item]:
    """The target items of ``copies``, by :func:`_frozen` key (``BatchGetItem``, strongly
    consistent, unprocessed keys asked again)."""
    keys: dict[str, dict[str, Any]] = {}
    for plan in copies:
        assert plan.item is not None
        key = _key_of(plan.item, job.target_key, target.range_key)
        keys[_frozen(key)] = key
    found: dict[str, Item] = {}
    pending = list(keys.values())
    attempt = 0
    while pending:
        batch, pending = pending[:BATCH_GET], pending[BATCH_GET:]
        answer = dynamo.call(
            dynamo.reads,
            functools.partial(_consumed, estimate=0.5 * len(batch)),
            "batch_get_item",
            RequestItems={job.target_table: {"Keys": batch, "ConsistentRead": True}},
            ReturnConsumedCapacity="TOTAL",
        )
        for item in answer.get("Responses", {}).get(job.target_table, []):
            found[_frozen(_key_of(item, job.target_key, target.range_key))] = item
        left = answer.get("UnprocessedKeys", {}).get(job.target_table, {}).get("Keys", [])
        if left:
            dynamo._sleep(backoff(attempt, dynamo._draw()))
            attempt += 1
            if attempt > dynamo._max_retries:
                raise BackfillError(
                    f"DynamoDB left {len(left)} key(s) of {job.target_table} unread "
                    f"{attempt} times: lower --max-read-units or raise the table's capacity"
                )
            pending = list(left) + pending
        else:
            attempt = 0
    return found


def _record(store: CheckpointStore, job: Job, segment: int, found: Verified) -> None:
    record = Backfilled(
        job,
        times.utcnow(),
        found.complete,
        sum(t.items for t in found.source.values()),
        found.missing,
        found.different,
        found.counts.unmapped,
        found.endpoints(),
        (segment,),
    )
    width = len(str(job.segments - 1))
    name = f"{VERIFIED_PREFIX}segment-{segment:0{width}d}-of-{job.segments}.json"
    store.write(name, (json.dumps(record.to_json(), indent=1, sort_keys=True) + "\n").encode())


# -- what retire-check reads ---------------------------------------------------------------------


def backfill_root(live: str) -> str:
    """Where the checkpoints of a live flag file's backfills are kept by default:
    ``<live>.backfill`` (a folder beside it, or the S3 prefix beside the object)."""
    return f"{live}.backfill"


def read_backfilled(root: str, *, s3_client: S3Client | None = None) -> list[Backfilled]:
    """Every job's verification records under ``root`` (:func:`backfill_root`), one merged
    record per job (its segments' newest). Raises :class:`~ai_agent_handler.BackfillError`
    when ``root`` cannot be listed or a record is damaged; no folder is no record."""
    by_job: dict[str, list[Backfilled]] = {}
    for job_name, name, raw in _records(root, s3_client):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise BackfillError(f"{root}/{job_name}/{name}: not JSON: {err}") from None
        by_job.setdefault(job_name, []).append(
            Backfilled.from_json(data, f"{root}/{job_name}/{name}")
        )
    merged = [merge_records(records) for _, records in sorted(by_job.items())]
    return [record for record in merged if record is not None]


def _records(root: str, s3_client: S3Client | None) -> Iterator[tuple[str, str, bytes]]:
    if not _aws.is_s3_uri(root):
        folder = Path(root)
        try:
            if not folder.is_dir():
                return
            for path in sorted(folder.glob(f"*/{VERIFIED_PREFIX}*.json")):
                yield path.parent.name, path.name, path.read_bytes()
        except OSError as err:
            raise BackfillError(f"cannot read {root}: {err.strerror}") from err
        return
    bucket, prefix = _aws.parse_s3_uri(root)
    prefix = prefix.rstrip("/") + "/"
    try:
        client = s3_client or _aws.s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                rest = entry["Key"][len(prefix) :]
                job_name, _, name = rest.partition("/")
                if name.startswith(VERIFIED_PREFIX) and "/" not in name:
                    body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                    yield job_name, name, body
    except _aws.ERRORS as err:
        raise BackfillError(f"cannot read {root}: {_aws.describe(err)}") from err
