"""Reading the evidence of :mod:`.retire`'s checks, and running them: :func:`retire_check`.

The reads (:func:`read_flag_file`, :func:`read_last_change`, :func:`read_counters`) go
through injected boto3 clients (built on first use when not given) and never raise for
what they cannot read: the reading says why, and the check judges it an ``error``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _aws
from ..exceptions import (
    AIAgentHandlerError,
    BackfillError,
    MetricsError,
)
from ..metrics import METRICS_NAMESPACE
from ..receiver import SHADOW_METRICS
from ..settings import PHASES
from . import audit, cloudwatch, times
from .backfill_io import backfill_root, read_backfilled
from .retire import (
    DECISION_METRICS,
    NO_PHASE,
    RECEIVER_METRICS,
    Backfills,
    Counters,
    FileReading,
    LastChange,
    Report,
    judge_consistency,
    judge_decisions,
    judge_files,
    judge_quiet,
    judge_receivers,
)
from .shadow import DEFAULT_MIN_CONSISTENCY
from .status_io import read_status
from .times import Window

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_s3 import S3Client

_AUDIT_TAIL = 64 * 1024  # bytes of a JSON-lines audit log read for its newest record


def read_flag_file(source: str, *, s3_client: S3Client | None = None) -> FileReading:
    """The rollout state of the flag file at ``source`` (a path or an ``s3://`` URI), read
    as ``status`` reads it."""
    found = read_status(
        source,
        phase=None,
        origin="file",
        s3_client=s3_client,
        now=times.utcnow(),
        last_change=False,
    )
    if found.state is not None:
        state = found.state
        return FileReading(
            source, kind=state.kind, description=state.describe(), version=found.version
        )
    if found.error_kind == "missing":
        return FileReading(source, problem="no such file")
    if found.error_kind == "invalid":
        return FileReading(source, problem=f"not a valid flag file: {found.error}")
    return FileReading(source, error=found.error)


def read_last_change(
    source: str, *, s3_client: S3Client | None = None, audit_log: str | None = None
) -> LastChange:
    """When the live file at ``source`` last changed.

    A local file: its modification time (of the target, for a symlink) and the newest record
    of its JSON-lines audit log. An S3 object: its ``LastModified`` (``s3:GetObject``) and
    the newest object under ``<key>.audit/`` (``s3:ListBucket``). ``audit_log`` (a shared
    local log, ``--audit-log``) adds its records of this file. Only the last 64 KiB of a
    local log are read; an unreadable audit trail is noted, not an error.
    """
    if _aws.is_s3_uri(source):
        found = _s3_last_change(source, s3_client)
    else:
        found = _local_last_change(source)
    if audit_log is not None and found.error is None and not found.missing:
        try:
            shared = _newest_in_log(Path(audit_log), audit.names(source))
        except OSError as err:
            why = f"cannot read {audit_log}: {err.strerror or err}"
            return dataclasses.replace(found, audit_error=why)
        known = [moment for moment in (found.audited, shared) if moment is not None]
        found = dataclasses.replace(found, audited=max(known, default=None))
    return found


def _newest_in_log(log: Path, belongs: Callable[[object], bool] | None) -> datetime.datetime | None:
    return audit.newest_time(audit.read_log(log, belongs, tail=_AUDIT_TAIL))


def _local_last_change(source: str) -> LastChange:
    try:
        modified = times.from_timestamp(os.stat(source).st_mtime)
    except FileNotFoundError:
        return LastChange(source, missing=True)
    except OSError as err:
        return LastChange(source, error=f"cannot stat {source}: {err.strerror or err}")
    log = audit.log_path(source)
    try:
        audited = _newest_in_log(log, None)
    except OSError as err:
        return LastChange(source, modified, audit_error=f"cannot read {log}: {err.strerror or err}")
    return LastChange(source, modified, audited)


def _s3_last_change(source: str, client: S3Client | None) -> LastChange:
    bucket, key = _aws.parse_s3_uri(source)
    try:
        client = client or _aws.s3_client()
        head = client.head_object(Bucket=bucket, Key=key)
    except _aws.ERRORS as err:
        if _aws.error_code(err) in _aws.NOT_FOUND:
            return LastChange(source, missing=True)
        return LastChange(source, error=f"cannot read {source}: {_aws.describe(err)}")
    modified = times.utc(head["LastModified"])
    try:
        audited = audit.newest_time(audit.s3_entries(client, bucket, key))
    except _aws.ERRORS as err:
        why = f"cannot list s3://{bucket}/{key}.audit/: {_aws.describe(err)}"
        return LastChange(source, modified, audit_error=why)
    return LastChange(source, modified, audited)


def read_backfills(source: str, *, s3_client: S3Client | None = None) -> Backfills:
    """The backfills verified beside the live file at ``source`` (``<source>.backfill``,
    where ``ai-agent-rollout --file <source> backfill`` keeps them)."""
    root = backfill_root(source)
    try:
        return Backfills(root, tuple(read_backfilled(root, s3_client=s3_client)))
    except BackfillError as err:
        return Backfills(root, error=str(err))


def read_counters(
    client: CloudWatchClient | None,
    *,
    window: Window,
    namespace: str = METRICS_NAMESPACE,
    phases: Sequence[str] = (*PHASES, NO_PHASE),
    now: datetime.datetime | None = None,
) -> dict[str, Counters]:
    """The decision, receiver and shadow-read counters of each phase over ``window``.

    ``client`` None: boto3's own (:func:`ai_agent_handler._aws.cloudwatch_client`).
    CloudWatch failing for one phase fails for the rest the same way (and each failure costs
    botocore's retries), so the first error stands for every phase not read yet.
    """
    metrics = (*DECISION_METRICS, *RECEIVER_METRICS, *SHADOW_METRICS)
    found: dict[str, Counters] = {}
    try:
        reader = client or _aws.cloudwatch_client()
    except _aws.ERRORS as err:  # no region configured
        why = f"cannot create a CloudWatch client: {err}"
        return {phase: Counters(error=why) for phase in phases}
    for at, phase in enumerate(phases):
        try:
            sums = cloudwatch.counter_sums(
                reader,
                phase=phase,
                metrics=metrics,
                window=window,
                namespace=namespace,
                now=now,
            )
        except MetricsError as err:
            for rest in phases[at:]:
                found[rest] = Counters(error=str(err))
            break
        found[phase] = Counters(sums)
    return found


def retire_check(
    *,
    days: int,
    live: Mapping[str, str | None],
    shipped: Callable[[str], str],
    namespace: str = METRICS_NAMESPACE,
    audit_log: str | None = None,
    cloudwatch_client: CloudWatchClient | None = None,
    s3_client: S3Client | None = None,
    now: datetime.datetime | None = None,
    min_consistency: float = DEFAULT_MIN_CONSISTENCY,
) -> Report:
    """Run every check over the ``days`` before ``now`` (default: the current time).

    ``live`` maps a phase to its live file (a path or an ``s3://`` URI) or None (it has
    none); a phase left out was not named. ``shipped(phase)`` is the path of the phase's
    shipped file; it may raise :class:`~ai_agent_handler.StoreError` or ``OSError``.
    Clients not given are built on first use (boto3's own configuration).
    ``min_consistency`` is the lowest consistency of shadow reads (percent) that passes.
    """
    now = times.utc(now or times.utcnow())
    if s3_client is None and any(s and _aws.is_s3_uri(s) for s in live.values()):
        with contextlib.suppress(*_aws.ERRORS):  # else each S3 read says why
            s3_client = _aws.s3_client()  # one client for every S3 read

    shipped_files = {phase: _shipped_reading(shipped, phase) for phase in PHASES}
    live_files: dict[str, FileReading | None] = {}
    changes: dict[str, LastChange | None] = {}
    backfills: dict[str, Backfills] = {}
    for phase, source in live.items():
        if source is None:
            live_files[phase] = changes[phase] = None
            continue
        live_files[phase] = read_flag_file(source, s3_client=s3_client)
        changes[phase] = read_last_change(source, s3_client=s3_client, audit_log=audit_log)
        backfills[phase] = read_backfills(source, s3_client=s3_client)

    window = Window(now - datetime.timedelta(days=days), now)
    counters = read_counters(cloudwatch_client, window=window, namespace=namespace, now=now)
    return Report(
        days,
        (
            judge_files(shipped_files, live_files),
            judge_quiet(changes, days=days, now=now),
            judge_decisions(counters, days=days, window=window, namespace=namespace),
            judge_receivers(
                counters, days=days, window=window, namespace=namespace, backfills=backfills
            ),
            judge_consistency(
                counters,
                days=days,
                window=window,
                namespace=namespace,
                min_consistency=min_consistency,
            ),
        ),
    )


def _shipped_reading(shipped: Callable[[str], str], phase: str) -> FileReading:
    try:
        path = shipped(phase)
    except (AIAgentHandlerError, OSError) as err:
        return FileReading(f"flags/{phase}.flagd.json", error=str(err))
    return read_flag_file(path)
