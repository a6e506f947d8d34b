"""Whether the partition-key flag can be removed: the plan's phase 4 as five checks.

The plan ends with "remove fallback logic after all systems migrated". Before the release that
removes the flag (``rollout.md`` section 7), five questions, one check each:

===============  =============================================================================
check            passes when
===============  =============================================================================
``files``        the shipped file and the live file of every phase give every endpoint the
                 composite key
``quiet``        no live file changed in the last N days (its modification time, and the
                 newest audit record)
``decisions``    in N days every phase's handlers reported decisions, none of them legacy, and
                 no flag evaluation error (CloudWatch)
``receivers``    in N days the receivers of every phase reported reads, and no read found its
                 item only under the legacy key (CloudWatch)
``consistency``  in N days the receivers of every phase sampled shadow reads, none of them
                 found its item only under the legacy key, and the copies under both keys
                 agreed often enough (:func:`.shadow.consistency`; CloudWatch)
===============  =============================================================================

A check's result is ``pass``, ``fail``, ``unknown`` (the evidence cannot tell: counted as
not ready) or ``error`` (a read failed). The flag can go when every check is ``pass``
(:attr:`Report.ready`); where code still names it, the work of the release that removes it,
is what :func:`code_search` lists.

This module judges (``judge_*``: evidence in, :class:`Check` out, no I/O); the evidence is
read by :mod:`.retire_io`.

The receivers' counter that decides is ``LegacyFallbackHits`` (a fallback read that found
its item under the legacy key), not ``LegacyFallbackReads``: a fallback read that finds
nothing under either key (an item new under both) does not need the legacy key, so those
reads never reach zero while items are created. Both are in the evidence.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..metrics import METRICS_NAMESPACE
from ..receiver import LEGACY_FALLBACK_HITS, LEGACY_FALLBACK_READS, RECEIVER_READS, SHADOW_METRICS
from ..settings import FLAG_KEY, PHASES
from . import times
from .backfill import Backfilled
from .shadow import DEFAULT_MIN_CONSISTENCY, ShadowCounts, percent_text
from .times import Window

Result = Literal["pass", "fail", "unknown", "error"]

#: The checks, in the order they are reported.
CHECKS = ("files", "quiet", "decisions", "receivers", "consistency")

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


def code_search() -> list[str]:
    """The command that lists every line of a git work tree naming the flag
    (:data:`CODE_PATTERNS`): ``git grep`` reads what git tracks and skips binary files; add
    ``--untracked`` for files not added yet, ``--no-index`` outside a work tree."""
    return ["git", "grep", "-n", "-I", "-F", *(a for p in CODE_PATTERNS for a in ("-e", p))]


_RANK: dict[Result, int] = {"pass": 0, "error": 1, "unknown": 2, "fail": 3}


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
        """True when the flag can be removed: every check passed."""
        return all(check.result == "pass" for check in self.checks)

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


@dataclass(frozen=True)
class Backfills:
    """What ``backfill verify`` recorded beside a phase's live file (``<live>.backfill``):
    one record per table, or why they could not be read."""

    source: str
    records: tuple[Backfilled, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tables": [record.summary() for record in self.records],
            "complete": all(r.complete and r.whole for r in self.records),
            "error": self.error,
        }


def _backfill_note(backfills: Backfills | None, failing: bool) -> str:
    """What the phase's backfill records add to its receivers line."""
    if backfills is None:
        return ""
    if backfills.error is not None:
        return f"; backfill records unreadable: {backfills.error}"
    if backfills.records:
        return "; backfilled: " + "; ".join(record.summary() for record in backfills.records)
    if failing:
        return (
            f"; no backfill is recorded beside {backfills.source}: copy the legacy items "
            "(ai-agent-rollout backfill, then backfill verify)"
        )
    return ""


def judge_receivers(
    counters: Mapping[str, Counters],
    *,
    days: int,
    window: Window,
    namespace: str = METRICS_NAMESPACE,
    backfills: Mapping[str, Backfills] | None = None,
) -> Check:
    """Every phase's receivers read, and no read found its item only under the legacy key.

    ``backfills[phase]``: the backfills verified beside the phase's live file, named in the
    phase's line (a table backfilled and verified complete, yet fallback hits: items written
    under the legacy key since, or a table not backfilled)."""
    backfills = backfills or {}

    def judge(phase: str, found: Counters) -> tuple[Result, str]:
        reads, hits = found.total(RECEIVER_READS), found.total(LEGACY_FALLBACK_HITS)
        note = _backfill_note(backfills.get(phase), failing=bool(hits))
        if hits:
            done = backfills.get(phase)
            if done is not None and done.records and all(r.complete for r in done.records):
                return "fail", (
                    f"fallback hits {_count(hits)} although backfilled (items written under "
                    f"the legacy key since, or a table not backfilled){note}"
                )
            return "fail", (
                f"{_count(hits)} read(s) found their item only under the legacy key{note}"
            )
        if not reads and phase != NO_PHASE:
            return "unknown", (
                f"no receiver reports reads ({RECEIVER_READS} is 0 in {days} days): do the "
                "receivers count them, and reach CloudWatch?"
            )
        return "pass", f"{_count(reads)} read(s){note}"

    missed = sum(found.total(LEGACY_FALLBACK_READS) for found in counters.values())
    also = f"; {_count(missed)} fallback read(s) found nothing under either key (new items)"
    recorded = [
        f"{phase}: {record.summary()}"
        for phase, done in backfills.items()
        for record in done.records
    ]
    passed = (
        f"no read needed the legacy key in {days} days; reads: "
        f"{_per_phase(counters, RECEIVER_READS)}{also if missed else ''}"
        + (f"; backfilled: {'; '.join(recorded)}" if recorded else "")
    )
    check = _judge_counters(
        "receivers", counters, RECEIVER_METRICS, judge, passed, window, namespace
    )
    for phase, done in backfills.items():
        if phase in check.evidence["phases"]:
            check.evidence["phases"][phase]["backfilled"] = done.to_json()
    return check


def judge_consistency(
    counters: Mapping[str, Counters],
    *,
    days: int,
    window: Window,
    namespace: str = METRICS_NAMESPACE,
    min_consistency: float = DEFAULT_MIN_CONSISTENCY,
) -> Check:
    """Every phase's receivers sampled shadow reads, none found its item only under the
    legacy key (backfill owed), and their consistency is at least ``min_consistency`` %.

    Receivers without a phase (``none``) block only on what they report.
    """
    limit = f"{min_consistency:.12g}"

    def judge(phase: str, found: Counters) -> tuple[Result, str]:
        shadow = ShadowCounts.of(found.sums)
        figure = shadow.consistency
        problems = []
        if shadow.legacy_only:
            problems.append(
                f"{_count(shadow.legacy_only)} sampled read(s) found the item only under the "
                "legacy key: backfill owed"
            )
        if figure is not None and figure < min_consistency:
            problems.append(
                f"consistency {percent_text(figure, (min_consistency,))} % is below {limit} %: "
                f"{_count(shadow.same)} same, {_count(shadow.different)} different of "
                f"{_count(shadow.compared)} compared"
            )
        if problems:
            return "fail", "; ".join(problems)
        if not shadow.sampled:
            if phase == NO_PHASE:
                return "pass", "no shadow reads"
            return "unknown", (
                f"no shadow reads in {days} days: do the receivers sample with read_with_shadow?"
            )
        return "pass", _consistency_words(shadow, min_consistency)

    shown = ", ".join(
        f"{phase} {_consistency_words(ShadowCounts.of(found.sums), min_consistency)}"
        for phase, found in counters.items()
        if phase != NO_PHASE
    )
    passed = (
        f"no backfill owed and consistency at least {limit} % in {days} days; shadow reads: {shown}"
    )
    return _judge_counters(
        "consistency",
        counters,
        SHADOW_METRICS,
        judge,
        passed,
        window,
        namespace,
        figures=lambda found: {"consistency": ShadowCounts.of(found.sums).consistency},
        more={"min_consistency": min_consistency},
    )


def _consistency_words(shadow: ShadowCounts, minimum: float) -> str:
    """``"99.95 % of 2000 compared (2100 sampled)"``, or that none was compared."""
    figure = shadow.consistency
    sampled = _count(shadow.sampled)
    if figure is None:
        return f"{sampled} sampled, none found the item under both keys (consistency undefined)"
    return (
        f"{percent_text(figure, (minimum,))} % of {_count(shadow.compared)} compared "
        f"({sampled} sampled)"
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
    *,
    figures: Callable[[Counters], Mapping[str, Any]] | None = None,
    more: Mapping[str, Any] | None = None,
) -> Check:
    """A check of counters: each phase judged (an unread phase is an error), ``passed``
    when all pass, else the phases that did not. ``figures`` adds what a read phase's
    evidence shows besides its counters; ``more``, what the check's evidence shows."""
    phases: dict[str, Any] = {}
    for phase, found in counters.items():
        result, detail = ("error", found.error) if found.error is not None else judge(phase, found)
        shown = {} if figures is None or found.error is not None else figures(found)
        phases[phase] = {**found.of(metrics), **shown, "result": result, "detail": detail}
    result = _worst(entry["result"] for entry in phases.values())
    detail = passed if result == "pass" else _problems(phases)
    evidence = {"namespace": namespace, "window": times.as_json(window), "phases": phases}
    return Check(name, result, detail, {**evidence, **(more or {})})


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
