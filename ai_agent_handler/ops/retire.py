"""Whether the partition-key flag can be removed: the plan's phase 4 as checks.

The plan ends with "remove fallback logic after all systems migrated". Before the release that
removes the flag (``rollout.md`` section 7), five questions, one check each:

=============  ===============================================================================
check          passes when
=============  ===============================================================================
``files``      the shipped file and the live file of every phase give every endpoint the
               composite key
``quiet``      no live file changed in the last N days (its modification time, and the
               newest audit record)
``decisions``  in N days every phase's handlers reported decisions, none of them legacy, and
               no flag evaluation error (CloudWatch)
``receivers``  in N days the receivers of every phase reported reads, and no read found its
               item only under the legacy key (CloudWatch)
``code``       never blocks (``info``): where code and configuration still name the flag,
               the work of the release that removes it
=============  ===============================================================================

A check's result is ``pass``, ``fail``, ``unknown`` (the evidence cannot tell: counted as
not ready), ``error`` (a read failed) or ``info``. The flag can go when every check is
``pass`` or ``info`` (:attr:`Report.ready`).

The judgements (``judge_*``) are pure: evidence in, :class:`Check` out. The reads
(:func:`read_flag_file`, :func:`read_last_change`, :func:`read_counters`, :func:`scan_code`)
do the I/O, through injected boto3 clients; :func:`retire_check` runs both, ``now``
injectable.

The receivers' counter that decides is ``LegacyFallbackHits`` (a fallback read that found
its item under the legacy key), not ``LegacyFallbackReads``: a fallback read that finds
nothing under either key (an item new under both) does not need the legacy key, so those
reads never reach zero while items are created. Both are in the evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import _aws
from ..exceptions import (
    AIAgentHandlerError,
    FlagConfigError,
    FlagFileError,
    MetricsError,
    StoreError,
)
from ..flag_file.document import parse
from ..metrics import METRICS_NAMESPACE
from ..receiver import LEGACY_FALLBACK_HITS, LEGACY_FALLBACK_READS, RECEIVER_READS
from ..settings import FLAG_KEY, PHASES
from . import audit, cloudwatch, edits, times
from .cloudwatch import Window
from .store import open_store

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_s3 import S3Client

Result = Literal["pass", "fail", "unknown", "error", "info"]

#: The checks, in the order they are reported.
CHECKS = ("files", "quiet", "decisions", "receivers", "code")

#: CloudWatch keeps metrics for 15 months: a longer window would claim evidence it has not.
MAX_DAYS = 455

#: The ``phase`` dimension of handlers and receivers without ``ROLLOUT_PHASE``. Not a phase
#: of the rollout: judged only on what it reports (its legacy keys block, its silence not).
NO_PHASE = "none"

KEY_DECISIONS = "KeyDecisions"
FLAG_EVALUATION_ERRORS = "FlagEvaluationErrors"
DECISION_METRICS = (KEY_DECISIONS, FLAG_EVALUATION_ERRORS)
RECEIVER_METRICS = (RECEIVER_READS, LEGACY_FALLBACK_READS, LEGACY_FALLBACK_HITS)

#: What names the flag in code and configuration: its key, the settings and their variables.
CODE_PATTERNS = (
    FLAG_KEY,
    "FLAG_SOURCE",
    "ROLLOUT_PHASE",
    "PARTITION_KEY_MODE",
    "partition_key_mode",
    "flag_source",
)
#: Folders the code scan never enters outside a git work tree (version control,
#: environments, caches, build metadata); in a work tree it reads what git lists instead.
SKIPPED_FOLDERS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".tox",
        ".nox",
        ".eggs",
    }
)
_SKIPPED_SUFFIXES = (".egg-info", ".dist-info")
#: References kept in the evidence; the count says how many there are.
REFERENCES_KEPT = 200
_TEXT_SHOWN = 160  # characters of a referencing line
_LARGEST_TEXT_FILE = 5 * 1024 * 1024
_BINARY_PROBE = 8192
_AUDIT_TAIL = 64 * 1024  # bytes of a JSON-lines audit log read for its newest record

_RANK: dict[Result, int] = {"pass": 0, "info": 0, "error": 1, "unknown": 2, "fail": 3}


def _worst(results: Iterable[Result]) -> Result:
    """The result a check gets from its parts: fail, then unknown, then error, else pass."""
    worst: Result = "pass"
    for result in results:
        if _RANK[result] > _RANK[worst]:
            worst = result
    return worst


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else times.iso(moment)


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Check:
    """One check's answer: its result, one line saying why, and the evidence."""

    name: str
    result: Result
    detail: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Every check, over a window of ``days``."""

    days: int
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        """True when the flag can be removed: every check passed or only informs."""
        return all(check.result in ("pass", "info") for check in self.checks)

    @property
    def blocking(self) -> tuple[Check, ...]:
        """The checks that say no: ``fail``, and ``unknown`` (no evidence is no yes)."""
        return tuple(check for check in self.checks if check.result in ("fail", "unknown"))

    @property
    def errors(self) -> tuple[Check, ...]:
        """The checks whose evidence could not be read."""
        return tuple(check for check in self.checks if check.result == "error")

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "days": self.days, "checks": times.as_json(self.checks)}


# -- files: composite for every endpoint --------------------------------------------------------


@dataclass(frozen=True)
class FileReading:
    """A flag file as read: its rollout state, or why there is none."""

    source: str
    kind: str | None = None
    description: str | None = field(default=None, metadata={"json": "state"})
    version: int | None = None
    #: The file answered, but not with a usable flag (missing, invalid).
    problem: str | None = None
    #: The file could not be read.
    error: str | None = None


def read_flag_file(source: str, *, s3_client: S3Client | None = None) -> FileReading:
    """The rollout state of the flag file at ``source`` (a path or an ``s3://`` URI)."""
    try:
        snapshot = open_store(source, s3_client=s3_client).read()
    except (StoreError, FlagConfigError) as err:
        return FileReading(source, error=str(err))
    if snapshot.data is None:
        return FileReading(source, problem="no such file")
    try:
        doc = parse(snapshot.data, source=source)
    except FlagFileError as err:
        return FileReading(source, problem=f"not a valid flag file: {err}")
    state = edits.read_state(doc)
    return FileReading(
        source,
        kind=state.kind,
        description=state.describe(),
        version=edits.version_of(doc),
    )


def _judge_file(phase: str, role: str, reading: FileReading) -> tuple[Result, str]:
    where = f"{phase}: {role} {reading.source}"
    if reading.error is not None:
        return "error", f"{where}: {reading.error}"
    if reading.problem is not None:
        return "fail", f"{where}: {reading.problem}"
    if reading.kind == "composite-everywhere":
        return "pass", f"{where}: {reading.description}"
    if reading.kind == "custom":
        return "unknown", (
            f"{where}: custom targeting, which cannot tell whether every endpoint gets the "
            "composite key (`set composite` makes it plain)"
        )
    return "fail", f"{where}: {reading.description}"


def _not_given(phase: str) -> str:
    return f"the live file of {phase} was not named (name none if that fleet has no live file)"


def judge_files(
    shipped: Mapping[str, FileReading], live: Mapping[str, FileReading | None]
) -> Check:
    """Every phase's shipped and live file give every endpoint the composite key.

    ``live[phase]`` None: the phase has no live file (``--live PHASE=none``); a phase not in
    ``live`` was not named, which cannot tell (``unknown``).
    """
    phases: dict[str, Any] = {}
    problems: list[str] = []
    for phase in PHASES:
        parts: list[tuple[Result, str]] = [_judge_file(phase, "shipped", shipped[phase])]
        live_reading = live.get(phase)
        if phase not in live:
            parts.append(("unknown", _not_given(phase)))
        elif live_reading is not None:
            parts.append(_judge_file(phase, "live", live_reading))
        result = _worst(result for result, _ in parts)
        failing = [detail for part, detail in parts if part != "pass"]
        phases[phase] = {
            "result": result,
            "detail": "; ".join(failing) or f"{phase}: composite everywhere",
            "shipped": times.as_json(shipped[phase]),
            "live": times.as_json(live_reading),
            "live_given": phase in live,
        }
        problems += failing
    result = _worst(entry["result"] for entry in phases.values())
    if result == "pass":
        with_live = [p for p in PHASES if live.get(p) is not None]
        lives = f" and the live files of {', '.join(with_live)}" if with_live else ""
        detail = f"composite for every endpoint in the shipped files of every phase{lives}"
    else:
        detail = "; ".join(problems)
    return Check("files", result, detail, {"phases": phases})


# -- quiet: no change for N days ----------------------------------------------------------------


@dataclass(frozen=True)
class LastChange:
    """When a live file last changed: its modification time and its newest audit record."""

    source: str
    modified: datetime.datetime | None = None
    audited: datetime.datetime | None = None
    missing: bool = False
    error: str | None = None
    #: Why the audit records could not be read (they only add to the evidence).
    audit_error: str | None = None

    @property
    def last(self) -> datetime.datetime | None:
        known = [moment for moment in (self.modified, self.audited) if moment is not None]
        return max(known) if known else None


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


def judge_quiet(
    changes: Mapping[str, LastChange | None], *, days: int, now: datetime.datetime
) -> Check:
    """No live file changed within ``days`` of ``now``.

    ``changes[phase]`` None: the phase has no live file; a phase not in ``changes`` was not
    named (``unknown``).
    """
    since = now - datetime.timedelta(days=days)
    phases: dict[str, Any] = {}
    for phase in PHASES:
        if phase not in changes:
            phases[phase] = {"result": "unknown", "detail": _not_given(phase), "source": None}
            continue
        change = changes[phase]
        if change is None:
            phases[phase] = {"result": "pass", "detail": "no live file", "source": None}
            continue
        result: Result
        last = change.last
        if change.error is not None:
            result, detail = "error", change.error
        elif change.missing:
            result, detail = "unknown", f"{change.source}: no such file"
        elif last is None:  # a local file always has an mtime, an object a LastModified
            result, detail = "unknown", f"{change.source}: no time of its last change"
        elif last > since:
            result = "fail"
            detail = (
                f"{change.source} changed {times.ago((now - last).total_seconds())} ago "
                f"({_iso(last)}): quiet from {_iso(last + datetime.timedelta(days=days))}"
            )
        else:
            result, detail = "pass", f"{change.source} last changed {_iso(last)}"
        phases[phase] = {
            "result": result,
            "detail": detail,
            "source": change.source,
            "last_change": _iso(last),
            "modified": _iso(change.modified),
            "newest_audit": _iso(change.audited),
            "audit_error": change.audit_error,
        }
    result = _worst(entry["result"] for entry in phases.values())
    if result == "pass":
        lasts = [
            (change.last, phase)
            for phase, change in changes.items()
            if change is not None and change.last is not None
        ]
        if lasts:
            newest, phase = max(lasts)
            detail = f"no live file changed in {days} days (the newest: {phase}, {_iso(newest)})"
        else:
            detail = "no live file to change"
    else:
        detail = "; ".join(
            entry["detail"] if entry["source"] is None else f"{phase}: {entry['detail']}"
            for phase, entry in phases.items()
            if entry["result"] != "pass"
        )
    return Check("quiet", result, detail, {"since": _iso(since), "phases": phases})


# -- decisions and receivers: what the fleet reported --------------------------------------------


@dataclass(frozen=True)
class Counters:
    """One phase's counter sums, ``{metric: {key_scheme: sum}}``, or why there are none."""

    sums: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    error: str | None = None

    def total(self, metric: str, scheme: str | None = None) -> float:
        per_scheme = self.sums.get(metric, {})
        if scheme is not None:
            return float(per_scheme.get(scheme, 0.0))
        return float(sum(per_scheme.values()))

    def of(self, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
        return {metric: dict(self.sums.get(metric, {})) for metric in metrics}


def read_counters(
    client: CloudWatchClient | None,
    *,
    window: Window,
    namespace: str = METRICS_NAMESPACE,
    phases: Sequence[str] = (*PHASES, NO_PHASE),
    now: datetime.datetime | None = None,
) -> dict[str, Counters]:
    """The decision and receiver counters of each phase over ``window``.

    ``client`` None: boto3's own (:func:`ai_agent_handler._aws.cloudwatch_client`).
    CloudWatch failing for one phase fails for the rest the same way (and each failure costs
    botocore's retries), so the first error stands for every phase not read yet.
    """
    metrics = (*DECISION_METRICS, *RECEIVER_METRICS)
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


def judge_decisions(
    counters: Mapping[str, Counters],
    *,
    days: int,
    window: Window,
    namespace: str = METRICS_NAMESPACE,
) -> Check:
    """Every phase's handlers decided, composite only, without flag evaluation errors.

    Handlers without a phase (``none``) block with legacy decisions or errors only.
    """

    def judge(phase: str, found: Counters) -> tuple[Result, str]:
        legacy = found.total(KEY_DECISIONS, "legacy")
        errors = found.total(FLAG_EVALUATION_ERRORS)
        problems = []
        if legacy:
            why = (
                "handlers without ROLLOUT_PHASE"
                if phase == NO_PHASE
                else ("an endpoint still legacy, or runs without part_id")
            )
            problems.append(f"{_count(legacy)} legacy decision(s) ({why})")
        if errors:
            problems.append(f"{_count(errors)} flag evaluation error(s)")
        if problems:
            return "fail", "; ".join(problems)
        if not found.total(KEY_DECISIONS) and phase != NO_PHASE:
            return "unknown", (
                f"no decisions reported in {days} days: are the EMF metrics reaching CloudWatch?"
            )
        return "pass", f"{_count(found.total(KEY_DECISIONS))} composite decision(s)"

    decided = _per_phase(counters, KEY_DECISIONS)
    passed = (
        f"no legacy key and no flag evaluation error in {days} days; composite decisions: {decided}"
    )
    return _judge_counters(
        "decisions", counters, DECISION_METRICS, judge, passed, window, namespace
    )


def judge_receivers(
    counters: Mapping[str, Counters],
    *,
    days: int,
    window: Window,
    namespace: str = METRICS_NAMESPACE,
) -> Check:
    """Every phase's receivers read, and no read found its item only under the legacy key."""

    def judge(phase: str, found: Counters) -> tuple[Result, str]:
        reads, hits = found.total(RECEIVER_READS), found.total(LEGACY_FALLBACK_HITS)
        if hits:
            return "fail", f"{_count(hits)} read(s) found their item only under the legacy key"
        if not reads and phase != NO_PHASE:
            return "unknown", (
                f"no receiver reports reads ({RECEIVER_READS} is 0 in {days} days): do the "
                "receivers count them, and reach CloudWatch?"
            )
        return "pass", f"{_count(reads)} read(s)"

    missed = sum(found.total(LEGACY_FALLBACK_READS) for found in counters.values())
    also = f"; {_count(missed)} fallback read(s) found nothing under either key (new items)"
    passed = (
        f"no read needed the legacy key in {days} days; reads: "
        f"{_per_phase(counters, RECEIVER_READS)}{also if missed else ''}"
    )
    return _judge_counters(
        "receivers", counters, RECEIVER_METRICS, judge, passed, window, namespace
    )


def _per_phase(counters: Mapping[str, Counters], metric: str) -> str:
    """``dev 5, staging 7``: a counter's sum in each phase (not handlers without a phase)."""
    return ", ".join(
        f"{phase} {_count(found.total(metric))}"
        for phase, found in counters.items()
        if phase != NO_PHASE
    )


def _judge_counters(
    name: str,
    counters: Mapping[str, Counters],
    metrics: Sequence[str],
    judge: Callable[[str, Counters], tuple[Result, str]],
    passed: str,
    window: Window,
    namespace: str,
) -> Check:
    """A check of counters: each phase judged (an unread phase is an error), ``passed``
    when all pass, else the phases that did not."""
    phases: dict[str, Any] = {}
    for phase, found in counters.items():
        result, detail = ("error", found.error) if found.error is not None else judge(phase, found)
        phases[phase] = {**found.of(metrics), "result": result, "detail": detail}
    result = _worst(entry["result"] for entry in phases.values())
    detail = passed if result == "pass" else _problems(phases)
    evidence = {"namespace": namespace, "window": times.as_json(window), "phases": phases}
    return Check(name, result, detail, evidence)


def _problems(phases: Mapping[str, Mapping[str, Any]]) -> str:
    """The phases that did not pass, those with the same reason together
    (``dev, production: no decisions ...``); a CloudWatch error, which names its phase
    and stands for the rest, once."""
    grouped: dict[str, list[str]] = {}
    for phase, entry in phases.items():
        if entry["result"] == "error":
            grouped.setdefault(entry["detail"], [])
        elif entry["result"] != "pass":
            grouped.setdefault(entry["detail"], []).append(phase)
    return "; ".join(
        f"{', '.join(named)}: {detail}" if named else detail for detail, named in grouped.items()
    )


# -- code: the removal work ----------------------------------------------------------------------


@dataclass(frozen=True)
class CodeScan:
    """Where the given paths name the flag (``path:line: text``, in path order)."""

    paths: tuple[str, ...]
    references: tuple[str, ...] = ()
    files: int = 0
    scanned: int = 0
    missing: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    skipped: int = 0
    #: How folders were listed: ``"git"`` (``git ls-files``: tracked files and untracked
    #: ones ``.gitignore`` does not exclude) for every folder in a git work tree, else
    #: ``"walk"`` (every file, minus :data:`SKIPPED_FOLDERS`), or ``"git, walk"``.
    listing: str = ""


def scan_code(paths: Sequence[str], patterns: Sequence[str] = CODE_PATTERNS) -> CodeScan:
    """Every line of the text files under ``paths`` (files or folders, recursively) that
    names one of ``patterns``.

    A folder in a git work tree is read as git lists it (``git ls-files``: tracked files
    and untracked ones that ``.gitignore`` does not exclude); elsewhere every file under it
    except in :data:`SKIPPED_FOLDERS` and ``*.egg-info`` folders, not following symlinked
    folders. Binary files (a NUL byte near the start) and files over 5 MiB are skipped.
    """
    references: list[str] = []
    missing: list[str] = []
    unreadable: list[str] = []
    listings: set[str] = set()
    files = scanned = skipped = 0
    for given in paths:
        if not os.path.lexists(given):
            missing.append(given)
            continue
        listing, under = _files_under(given)
        listings.add(listing)
        for path in under:
            try:
                found = _references(path, patterns)
            except OSError:
                unreadable.append(path)
                continue
            if found is None:
                skipped += 1
                continue
            scanned += 1
            if found:
                files += 1
                references += found
    return CodeScan(
        tuple(paths),
        tuple(references),
        files,
        scanned,
        tuple(missing),
        tuple(unreadable),
        skipped,
        ", ".join(sorted(listings - {"file"})),
    )


def _files_under(given: str) -> tuple[str, list[str]]:
    """How the files under ``given`` were listed, and the files to read, in path order."""
    if not os.path.isdir(given):
        return "file", [os.path.normpath(given)]
    listed = _git_files(given)
    if listed:
        return "git", listed
    found = []
    for folder, folders, names in os.walk(given):
        folders[:] = [
            name
            for name in folders
            if name not in SKIPPED_FOLDERS and not name.endswith(_SKIPPED_SUFFIXES)
        ]
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):  # no sockets, pipes or dangling links
                found.append(os.path.normpath(path))
    return "walk", sorted(found)


def _git_files(folder: str) -> list[str] | None:
    """The files git lists under ``folder`` (tracked, and untracked but not ignored); None
    when ``folder`` is in no git work tree, git is not installed, or it lists nothing."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        listed = subprocess.run(
            [git, "-C", folder, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    names = {os.fsdecode(name) for name in listed.stdout.split(b"\0") if name}
    paths = [os.path.normpath(os.path.join(folder, name)) for name in names]
    # Deleted but not yet committed, a submodule's folder, a link to a folder: not files.
    found = sorted(path for path in paths if os.path.isfile(path) and not os.path.islink(path))
    return found or None


def _references(path: str, patterns: Sequence[str]) -> list[str] | None:
    """The referencing lines of one file; None when it is skipped (binary or too large)."""
    if os.path.getsize(path) > _LARGEST_TEXT_FILE:
        return None
    with open(path, "rb") as handle:
        data = handle.read()
    if b"\x00" in data[:_BINARY_PROBE]:
        return None
    found = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if any(pattern in line for pattern in patterns):
            text = line.strip()
            if len(text) > _TEXT_SHOWN:
                text = text[: _TEXT_SHOWN - 3] + "..."
            found.append(f"{path}:{number}: {text}")
    return found


def judge_code(scan: CodeScan | None) -> Check:
    """The removal work: ``info``, never blocking; ``error`` when a given path is missing."""
    if scan is None or not scan.paths:
        return Check("code", "info", "no --code paths given", {"paths": []})
    count = len(scan.references)
    evidence = {
        "paths": list(scan.paths),
        "count": count,
        "files": scan.files,
        "scanned": scan.scanned,
        "skipped": scan.skipped,
        "listing": scan.listing,
        "references": list(scan.references[:REFERENCES_KEPT]),
        "missing": list(scan.missing),
        "unreadable": list(scan.unreadable),
    }
    if scan.missing:
        return Check(
            "code", "error", f"no such file or folder: {', '.join(scan.missing)}", evidence
        )
    unread = f"; {len(scan.unreadable)} file(s) could not be read" if scan.unreadable else ""
    listed = " (the files git lists)" if scan.listing == "git" else ""
    if not count:
        detail = f"no reference to the flag in {scan.scanned} file(s){listed}{unread}"
    else:
        detail = (
            f"{count} reference(s) in {scan.files} file(s){listed} name the flag: remove them"
            f" with the release that removes it{unread}"
        )
    return Check("code", "info", detail, evidence)


# -- all of it -----------------------------------------------------------------------------------


def retire_check(
    *,
    days: int,
    live: Mapping[str, str | None],
    shipped: Callable[[str], str],
    code: Sequence[str] = (),
    namespace: str = METRICS_NAMESPACE,
    audit_log: str | None = None,
    cloudwatch_client: CloudWatchClient | None = None,
    s3_client: S3Client | None = None,
    now: datetime.datetime | None = None,
) -> Report:
    """Run every check over the ``days`` before ``now`` (default: the current time).

    ``live`` maps a phase to its live file (a path or an ``s3://`` URI) or None (it has
    none); a phase left out was not named. ``shipped(phase)`` is the path of the phase's
    shipped file; it may raise :class:`~ai_agent_handler.StoreError` or ``OSError``.
    Clients not given are built on first use (boto3's own configuration).
    """
    now = times.utc(now or times.utcnow())
    if s3_client is None and any(s and _aws.is_s3_uri(s) for s in live.values()):
        with contextlib.suppress(*_aws.ERRORS):  # else each S3 read says why
            s3_client = _aws.s3_client()  # one client for every S3 read

    shipped_files = {phase: _shipped_reading(shipped, phase) for phase in PHASES}
    live_files: dict[str, FileReading | None] = {}
    changes: dict[str, LastChange | None] = {}
    for phase, source in live.items():
        if source is None:
            live_files[phase] = changes[phase] = None
            continue
        live_files[phase] = read_flag_file(source, s3_client=s3_client)
        changes[phase] = read_last_change(source, s3_client=s3_client, audit_log=audit_log)

    window = Window(now - datetime.timedelta(days=days), now)
    counters = read_counters(cloudwatch_client, window=window, namespace=namespace, now=now)
    return Report(
        days,
        (
            judge_files(shipped_files, live_files),
            judge_quiet(changes, days=days, now=now),
            judge_decisions(counters, days=days, window=window, namespace=namespace),
            judge_receivers(counters, days=days, window=window, namespace=namespace),
            judge_code(scan_code(code) if code else None),
        ),
    )


def _shipped_reading(shipped: Callable[[str], str], phase: str) -> FileReading:
    try:
        path = shipped(phase)
    except (AIAgentHandlerError, OSError) as err:
        return FileReading(f"flags/{phase}.flagd.json", error=str(err))
    return read_flag_file(path)
