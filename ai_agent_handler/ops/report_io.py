"""What the approvers' page shows, read from where it lives (:mod:`.report` renders it).

For each phase's file: its status (:mod:`.status_io`), its whole audit trail
(:mod:`.history_io`), the composite share over the window from CloudWatch (``KeyDecisions``
per key scheme, ``FlagEvaluationErrors``, the receivers' ``LegacyFallbackHits``), and the
retire-check checklist over the same days. Nothing it cannot read stops the page: metrics
that cannot be read make the page say so, an unreadable audit trail is a note, damaged
records are counted. :func:`write` puts the page in place atomically.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _aws
from ..exceptions import MetricsError, StoreError
from ..metrics import METRICS_NAMESPACE
from ..receiver import LEGACY_FALLBACK_HITS
from . import cloudwatch, history_io, report, times
from .explain import composite_threshold
from .retire_io import retire_check
from .status import FileStatus
from .status_io import read_status
from .times import Window

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_s3 import S3Client

#: The counters the share chart draws.
SHARE_METRICS = ("KeyDecisions", "FlagEvaluationErrors", LEGACY_FALLBACK_HITS)


@dataclass(frozen=True)
class Source:
    """One file the page covers: its phase, where it is, what it is (the CLI's target)."""

    phase: str | None
    source: str
    origin: str
    named_by: str | None = None


def gather(
    files: Sequence[Source],
    *,
    days: int,
    live: Mapping[str, str | None],
    shipped: Callable[[str], str],
    endpoints: Sequence[str] = (),
    namespace: str = METRICS_NAMESPACE,
    audit_log: str | None = None,
    s3_client: S3Client | None = None,
    cloudwatch_client: CloudWatchClient | None = None,
    now: datetime.datetime | None = None,
    progress: Callable[[str], history_io.Progress | None] = lambda source: None,
) -> report.Page:
    """The page for ``files`` over the last ``days`` (metrics and the retire checklist; the
    timeline is the whole audit trail). ``live`` and ``shipped`` are retire-check's;
    ``endpoints`` are shown with the key each gets and why; ``progress(source)`` may give a
    callback for reading that file's audit records (``history``'s progress line)."""
    now = times.utc(now or times.utcnow())
    views, events, notes, phases = [], [], [], []
    damaged = 0
    for item in files:
        found = read_status(
            item.source,
            phase=item.phase,
            origin=item.origin,
            named_by=item.named_by,
            audit_log=audit_log,
            s3_client=s3_client,
            now=now,
        )
        phase = found.phase or "?"
        phases.append(phase)
        rows = [_endpoint_row(found, phase, endpoint) for endpoint in endpoints]
        views.append(report.phase_view(found, now, rows))
        try:
            trail = history_io.read_trail(
                item.source,
                audit_log=audit_log,
                s3_client=s3_client,
                progress=progress(item.source),
            )
        except StoreError as err:
            notes.append(f"{phase}: the audit trail cannot be read: {err}")
            continue
        damaged += len(trail.damaged)
        events += [report.event_of(record, phase) for record in trail.records]
    window = Window(now - datetime.timedelta(days=days), now)
    shares = _shares(phases, window, namespace, cloudwatch_client, now)
    checklist: tuple[report.CheckRow, ...] = ()
    checklist_error = None
    try:
        checked = retire_check(
            days=days,
            live=live,
            shipped=shipped,
            namespace=namespace,
            audit_log=audit_log,
            cloudwatch_client=cloudwatch_client,
            s3_client=s3_client,
            now=now,
        )
        checklist = report.check_rows(checked)
    except (StoreError, MetricsError, OSError) as err:
        checklist_error = str(err)
    return report.Page(
        title="Composite partition key rollout",
        generated=now,
        phases=tuple(views),
        events=tuple(events),
        shares=shares,
        checklist=checklist,
        checklist_error=checklist_error,
        damaged=damaged,
        notes=(f"metrics and checks over the last {days} day(s), namespace {namespace}", *notes),
    )


def _shares(
    phases: Sequence[str],
    window: Window,
    namespace: str,
    client: CloudWatchClient | None,
    now: datetime.datetime,
) -> tuple[report.Share, ...]:
    """Each phase's composite share; once CloudWatch fails, every phase says why."""
    shares: list[report.Share] = []
    try:
        reader = client or _aws.cloudwatch_client()
    except _aws.ERRORS as err:
        return tuple(
            report.Share(p, error=f"cannot create a CloudWatch client: {err}") for p in phases
        )
    for at, phase in enumerate(phases):
        try:
            series = cloudwatch.counter_series(
                reader,
                phase=phase,
                metrics=SHARE_METRICS,
                window=window,
                namespace=namespace,
                now=now,
            )
        except MetricsError as err:
            shares += [report.Share(rest, error=str(err)) for rest in phases[at:]]
            break
        shares.append(report.share_of(phase, series))
    return tuple(shares)


def _endpoint_row(found: FileStatus, phase: str, endpoint: str) -> report.EndpointRow:
    """The key ``endpoint`` gets from the file as read, and which rule decides it."""
    doc, state = found.doc, found.state
    if doc is None or state is None:
        return report.EndpointRow(endpoint, "?", f"the file cannot be read: {found.error}")
    if state.kind == "composite-everywhere":
        return report.EndpointRow(endpoint, "composite", "all: composite everywhere")
    if state.kind in ("legacy-everywhere", "disabled", "missing"):
        return report.EndpointRow(endpoint, "legacy", f"none: {state.describe()}")
    if endpoint in state.allowed:
        return report.EndpointRow(endpoint, "composite", "listed (allow-list)")
    threshold = composite_threshold(dict(doc), endpoint, phase)
    if threshold is None:
        return report.EndpointRow(endpoint, "?", "custom targeting: `explain` tells")
    percent = state.percent or 0
    key = "composite" if percent >= threshold else "legacy"
    return report.EndpointRow(
        endpoint, key, f"percentage: {percent} %, this endpoint turns composite at {threshold} %"
    )


def write(path: Path, page: str) -> None:
    """``page`` written to ``path`` whole (a temporary file beside it, renamed over it)."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(page)
            out.flush()
            os.fsync(out.fileno())
        mask = os.umask(0)  # a report is read by others: the umask's mode, not mkstemp's
        os.umask(mask)
        os.chmod(temp, 0o666 & ~mask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
