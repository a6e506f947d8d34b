"""``retire-check``'s judgements, evidence in and a check out: one table per check.

Each row builds the evidence directly (:class:`FileReading`, :class:`LastChange`,
:class:`Counters`) and names the result it must get and phrases its detail must hold (or must
not). The reads that gather the evidence (files, S3, CloudWatch) are covered by
``tests/integration/test_retire_check.py``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from ai_agent_handler.ops.backfill import Backfilled, Job
from ai_agent_handler.ops.retire import (
    NO_PHASE,
    Backfills,
    Counters,
    FileReading,
    LastChange,
    judge_consistency,
    judge_decisions,
    judge_files,
    judge_quiet,
    judge_receivers,
)
from ai_agent_handler.ops.times import Window
from ai_agent_handler.receiver import SHADOW_METRICS

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAYS = 14
WINDOW = Window(NOW - datetime.timedelta(days=DAYS), NOW)
PHASES = ("dev", "staging", "production")


def ago(**delta: float) -> datetime.datetime:
    return NOW - datetime.timedelta(**delta)


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def check_detail(detail: str, says: tuple[str, ...], never: tuple[str, ...]) -> None:
    for phrase in says:
        assert phrase in detail, (phrase, detail)
    for phrase in never:
        assert phrase not in detail, (phrase, detail)


# -- files ---------------------------------------------------------------------------------------

COMPOSITE = "composite everywhere (every endpoint sends endpoint_id#part_id)"
LEGACY = "legacy everywhere (every endpoint sends endpoint_id)"


def shipped_file(phase: str, kind: str = "composite-everywhere", **reading: Any) -> FileReading:
    description = {"composite-everywhere": COMPOSITE, "legacy-everywhere": LEGACY}.get(kind)
    defaults: dict[str, Any] = {"kind": kind, "description": description, "version": 3}
    return FileReading(f"flags/{phase}.flagd.json", **{**defaults, **reading})


def live_file(phase: str, kind: str = "composite-everywhere", **reading: Any) -> FileReading:
    description = {"composite-everywhere": COMPOSITE, "legacy-everywhere": LEGACY}.get(kind)
    defaults: dict[str, Any] = {"kind": kind, "description": description, "version": 7}
    source = f"s3://ops-flags/ai-agent/{phase}.flagd.json"
    return FileReading(source, **{**defaults, **reading})


ALL_SHIPPED = {phase: shipped_file(phase) for phase in PHASES}
NO_LIVE: dict[str, FileReading | None] = dict.fromkeys(PHASES)
ALL_LIVE: dict[str, FileReading | None] = {phase: live_file(phase) for phase in PHASES}
NOT_A_FILE = {"kind": None, "description": None, "version": None}
#: How a detail ends the note on a phase whose live file was not named.
NOT_NAMED = "if that fleet has no live file"


FILES = [
    pytest.param(
        {},
        NO_LIVE,
        "pass",
        ("composite for every endpoint in the shipped files of every phase",),
        ("live files",),
        id="shipped-composite-no-live-files",
    ),
    pytest.param(
        {},
        ALL_LIVE,
        "pass",
        ("shipped files of every phase and the live files of dev, staging, production",),
        (),
        id="shipped-and-live-composite",
    ),
    pytest.param(
        {},
        {**NO_LIVE, "production": live_file("production")},
        "pass",
        ("and the live files of production",),
        ("dev,", "staging"),
        id="one-phase-with-a-live-file",
    ),
    pytest.param(
        {},
        {},
        "unknown",
        (
            "dev",
            "staging",
            "production",
            NOT_NAMED,
        ),
        (),
        id="live-not-given-for-any-phase",
    ),
    pytest.param(
        {},
        {"dev": None, "production": live_file("production")},
        "unknown",
        ("staging", NOT_NAMED),
        ("dev", "production"),
        id="live-not-given-for-one-phase",
    ),
    pytest.param(
        {"production": shipped_file("production", "legacy-everywhere")},
        ALL_LIVE,
        "fail",
        (f"production: shipped flags/production.flagd.json: {LEGACY}",),
        ("dev", "staging"),
        id="shipped-legacy",
    ),
    pytest.param(
        {},
        {**ALL_LIVE, "staging": live_file("staging", "percent", description="5 % composite")},
        "fail",
        ("staging: live s3://ops-flags/ai-agent/staging.flagd.json: 5 % composite",),
        (),
        id="live-on-a-percentage",
    ),
    pytest.param(
        {},
        {**ALL_LIVE, "production": live_file("production", "custom", description="custom")},
        "unknown",
        (
            "production: live s3://ops-flags/ai-agent/production.flagd.json: custom targeting",
            "cannot tell whether every endpoint gets the composite key",
            "`set composite`",
        ),
        (),
        id="live-custom-targeting",
    ),
    pytest.param(
        {},
        {**ALL_LIVE, "production": live_file("production", problem="no such file", **NOT_A_FILE)},
        "fail",
        ("production: live s3://ops-flags/ai-agent/production.flagd.json: no such file",),
        (),
        id="live-file-missing",
    ),
    pytest.param(
        {},
        {
            **ALL_LIVE,
            "dev": live_file("dev", problem="not a valid flag file: line 1", **NOT_A_FILE),
        },
        "fail",
        ("dev: live s3://ops-flags/ai-agent/dev.flagd.json: not a valid flag file: line 1",),
        (),
        id="live-file-invalid",
    ),
    pytest.param(
        {},
        {**ALL_LIVE, "staging": live_file("staging", error="AccessDenied", **NOT_A_FILE)},
        "error",
        ("staging: live s3://ops-flags/ai-agent/staging.flagd.json: AccessDenied",),
        (),
        id="live-file-unreadable",
    ),
    pytest.param(
        {"dev": shipped_file("dev", error="no flags/ folder in this checkout", **NOT_A_FILE)},
        NO_LIVE,
        "error",
        ("dev: shipped flags/dev.flagd.json: no flags/ folder in this checkout",),
        (),
        id="shipped-file-unreadable",
    ),
    pytest.param(
        {"dev": shipped_file("dev", error="AccessDenied", **NOT_A_FILE)},
        {**NO_LIVE, "production": live_file("production", "legacy-everywhere")},
        "fail",
        (
            "dev: shipped flags/dev.flagd.json: AccessDenied",
            f"production: live s3://ops-flags/ai-agent/production.flagd.json: {LEGACY}",
        ),
        (),
        id="a-failure-outranks-an-error",
    ),
    pytest.param(
        {"dev": shipped_file("dev", error="AccessDenied", **NOT_A_FILE)},
        {"dev": None, "production": None},
        "unknown",
        ("dev: shipped flags/dev.flagd.json: AccessDenied", "staging", NOT_NAMED),
        (),
        id="not-given-outranks-an-error",
    ),
    pytest.param(
        {"staging": shipped_file("staging", "legacy-everywhere")},
        {**ALL_LIVE, "staging": live_file("staging", "legacy-everywhere")},
        "fail",
        (
            f"staging: shipped flags/staging.flagd.json: {LEGACY}; "
            f"staging: live s3://ops-flags/ai-agent/staging.flagd.json: {LEGACY}",
        ),
        (),
        id="shipped-and-live-both-named",
    ),
]


@pytest.mark.parametrize(("shipped", "live", "result", "says", "never"), FILES)
def test_judge_files(
    shipped: Mapping[str, FileReading],
    live: Mapping[str, FileReading | None],
    result: str,
    says: tuple[str, ...],
    never: tuple[str, ...],
) -> None:
    check = judge_files({**ALL_SHIPPED, **shipped}, live)
    assert (check.name, check.result) == ("files", result), check.detail
    check_detail(check.detail, says, never)
    assert check.detail.count(NOT_NAMED) == len([p for p in PHASES if p not in live])
    assert list(check.evidence["phases"]) == list(PHASES)


def test_judge_files_tells_a_phase_without_a_live_file_from_one_not_named() -> None:
    check = judge_files(ALL_SHIPPED, {"dev": None, "staging": live_file("staging")})
    phases = check.evidence["phases"]
    assert [phases[p]["live_given"] for p in PHASES] == [True, True, False]
    assert phases["dev"]["live"] is None and phases["production"]["live"] is None
    assert phases["staging"]["live"]["source"] == "s3://ops-flags/ai-agent/staging.flagd.json"
    assert [phases[p]["result"] for p in PHASES] == ["pass", "pass", "unknown"]
    assert phases["dev"]["detail"] == "dev: composite everywhere"


# -- quiet ---------------------------------------------------------------------------------------

LIVE_PATH = "/srv/flags/production.flagd.json"
OLD = ago(days=20)


def changed(
    modified: datetime.datetime | None = OLD, source: str = LIVE_PATH, **found: Any
) -> LastChange:
    return LastChange(source, modified, **found)


QUIET = [
    pytest.param(
        dict.fromkeys(PHASES), "pass", ("no live file to change",), (), id="no-live-files"
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed()},
        "pass",
        (f"no live file changed in 14 days (the newest: production, {iso(OLD)})",),
        (),
        id="changed-20-days-ago",
    ),
    pytest.param(
        {
            "dev": changed(ago(days=30), "/srv/flags/dev.flagd.json"),
            "staging": changed(ago(days=15), "/srv/flags/staging.flagd.json"),
            "production": changed(),
        },
        "pass",
        (f"(the newest: staging, {iso(ago(days=15))})",),
        (),
        id="the-newest-phase-is-named",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(ago(days=DAYS))},
        "pass",
        (f"(the newest: production, {iso(ago(days=DAYS))})",),
        (),
        id="exactly-n-days-ago-is-quiet",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(ago(days=DAYS, seconds=-1))},
        "fail",
        ("changed 13 days ago",),  # whole days, rounded down
        (),
        id="a-second-within-n-days",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(ago(seconds=30))},
        "fail",
        (
            f"production: {LIVE_PATH} changed less than a minute ago ({iso(ago(seconds=30))})",
            f"quiet from {iso(ago(seconds=30) + datetime.timedelta(days=DAYS))}",
        ),
        (),
        id="seconds-ago",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(ago(minutes=45))},
        "fail",
        ("changed 45 minutes ago",),
        (),
        id="minutes-ago",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(ago(hours=47))},
        "fail",
        ("changed 47 hours ago",),
        (),
        id="hours-ago",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(ago(hours=49))},
        "fail",
        ("changed 2 days ago",),
        (),
        id="days-ago",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(OLD, audited=ago(days=2))},
        "fail",
        ("changed 2 days ago", iso(ago(days=2))),
        (),
        id="a-newer-audit-record-counts",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(OLD, audited=ago(days=40))},
        "pass",
        (iso(OLD),),
        (iso(ago(days=40)),),
        id="an-older-audit-record-does-not",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(None, audited=ago(days=1))},
        "fail",
        ("changed 24 hours ago",),
        (),
        id="only-an-audit-time",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(OLD, audit_error="cannot read log")},
        "pass",
        ("no live file changed in 14 days",),
        ("cannot read log",),
        id="an-unreadable-audit-log-does-not-block",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(None, missing=True)},
        "unknown",
        (f"production: {LIVE_PATH}: no such file",),
        (),
        id="live-file-missing",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(None)},
        "unknown",
        (f"production: {LIVE_PATH}: no time of its last change",),
        (),
        id="no-time-known",
    ),
    pytest.param(
        {**dict.fromkeys(PHASES), "production": changed(None, error="cannot stat: EACCES")},
        "error",
        ("production: cannot stat: EACCES",),
        (),
        id="cannot-stat",
    ),
    pytest.param(
        {"dev": None, "production": None},
        "unknown",
        ("staging", NOT_NAMED),
        ("staging:", "dev", "production"),
        id="live-not-given-for-one-phase",
    ),
    pytest.param(
        {},
        "unknown",
        (
            "dev",
            "staging",
            "production",
            NOT_NAMED,
        ),
        (),
        id="live-not-given-for-any-phase",
    ),
    pytest.param(
        {
            "dev": changed(None, "/srv/flags/dev.flagd.json", error="cannot stat: EIO"),
            "staging": None,
            "production": changed(ago(hours=3)),
        },
        "fail",
        ("dev: cannot stat: EIO", "production: /srv/flags/production.flagd.json changed 3 hours"),
        (),
        id="a-failure-outranks-an-error",
    ),
]


@pytest.mark.parametrize(("changes", "result", "says", "never"), QUIET)
def test_judge_quiet(
    changes: Mapping[str, LastChange | None],
    result: str,
    says: tuple[str, ...],
    never: tuple[str, ...],
) -> None:
    check = judge_quiet(changes, days=DAYS, now=NOW)
    assert (check.name, check.result) == ("quiet", result), check.detail
    check_detail(check.detail, says, never)
    assert check.detail.count(NOT_NAMED) == len([p for p in PHASES if p not in changes])
    assert check.evidence["since"] == iso(ago(days=DAYS))
    assert list(check.evidence["phases"]) == list(PHASES)


def test_judge_quiet_keeps_both_times_and_the_audit_error_in_the_evidence() -> None:
    audited = ago(days=16)
    change = changed(OLD, audited=audited, audit_error="cannot list the audit records")
    check = judge_quiet({"dev": None, "staging": None, "production": change}, days=DAYS, now=NOW)
    assert check.evidence["phases"]["production"] == {
        "result": "pass",
        "detail": f"{LIVE_PATH} last changed {iso(audited)}",
        "source": LIVE_PATH,
        "last_change": iso(audited),
        "modified": iso(OLD),
        "newest_audit": iso(audited),
        "audit_error": "cannot list the audit records",
    }
    assert check.evidence["phases"]["dev"] == {
        "result": "pass",
        "detail": "no live file",
        "source": None,
    }


# -- decisions -----------------------------------------------------------------------------------


def decided(composite: float = 0, legacy: float | None = None, errors: float = 0) -> Counters:
    """A phase's decision counters as CloudWatch sums them (``legacy`` None: not reported)."""
    schemes = (
        {"composite": composite} if legacy is None else {"composite": composite, "legacy": legacy}
    )
    return Counters({"KeyDecisions": schemes, "FlagEvaluationErrors": {"composite": errors}})


def unread(why: str) -> Counters:
    return Counters(error=why)


CW_ERROR = (
    "cannot read ai_agent_handler/KeyDecisions (phase=staging, key_scheme=composite) from "
    "CloudWatch: AccessDenied: not authorized"
)
MIGRATED = {"dev": decided(10), "staging": decided(20), "production": decided(30)}

DECISIONS = [
    pytest.param(
        {**MIGRATED, NO_PHASE: Counters()},
        "pass",
        (
            "no legacy key and no flag evaluation error in 14 days; composite decisions: "
            "dev 10, staging 20, production 30",
        ),
        ("none",),
        id="migrated-none-silent",
    ),
    pytest.param(
        {**MIGRATED, NO_PHASE: decided(5)},
        "pass",
        ("composite decisions: dev 10, staging 20, production 30",),
        ("none", "5"),
        id="migrated-none-composite",
    ),
    pytest.param(
        {**MIGRATED, "production": decided(30, legacy=0)},
        "pass",
        ("production 30",),
        (),
        id="legacy-reported-as-0",
    ),
    pytest.param(
        {**MIGRATED, "production": decided(30, legacy=3)},
        "fail",
        ("production: 3 legacy decision(s) (an endpoint still legacy, or runs without part_id)",),
        ("dev", "staging"),
        id="legacy-decisions",
    ),
    pytest.param(
        {**MIGRATED, "production": decided(30, legacy=2.5)},
        "fail",
        ("production: 2.5 legacy decision(s)",),
        (),
        id="a-fractional-sum",
    ),
    pytest.param(
        {**MIGRATED, NO_PHASE: decided(5, legacy=2)},
        "fail",
        ("none: 2 legacy decision(s) (handlers without ROLLOUT_PHASE)",),
        ("part_id",),
        id="legacy-without-a-phase",
    ),
    pytest.param(
        {**MIGRATED, "dev": decided(10, errors=4)},
        "fail",
        ("dev: 4 flag evaluation error(s)",),
        ("legacy decision",),
        id="evaluation-errors",
    ),
    pytest.param(
        {**MIGRATED, NO_PHASE: decided(errors=1)},
        "fail",
        ("none: 1 flag evaluation error(s)",),
        (),
        id="evaluation-errors-without-a-phase",
    ),
    pytest.param(
        {**MIGRATED, "staging": decided(20, legacy=3, errors=4)},
        "fail",
        (
            "staging: 3 legacy decision(s) (an endpoint still legacy, or runs without part_id); "
            "4 flag evaluation error(s)",
        ),
        (),
        id="legacy-and-errors",
    ),
    pytest.param(
        {**MIGRATED, "staging": decided(0)},
        "unknown",
        ("staging: no decisions reported in 14 days: are the EMF metrics reaching CloudWatch?",),
        (),
        id="a-phase-without-decisions",
    ),
    pytest.param(
        {"dev": Counters(), "staging": decided(20), "production": Counters(), NO_PHASE: Counters()},
        "unknown",
        ("dev, production: no decisions reported in 14 days",),
        ("none",),
        id="phases-with-one-reason-together",
    ),
    pytest.param(
        {
            "dev": decided(10),
            "staging": unread(CW_ERROR),
            "production": unread(CW_ERROR),
            NO_PHASE: unread(CW_ERROR),
        },
        "error",
        (CW_ERROR,),
        ("staging, production", "production:"),
        id="an-error-stands-for-the-later-phases",
    ),
    pytest.param(
        {"dev": decided(10, legacy=1), "staging": unread(CW_ERROR), "production": unread(CW_ERROR)},
        "fail",
        ("dev: 1 legacy decision(s)", CW_ERROR),
        (),
        id="a-failure-outranks-an-error",
    ),
]


@pytest.mark.parametrize(("counters", "result", "says", "never"), DECISIONS)
def test_judge_decisions(
    counters: Mapping[str, Counters], result: str, says: tuple[str, ...], never: tuple[str, ...]
) -> None:
    check = judge_decisions(counters, days=DAYS, window=WINDOW)
    assert (check.name, check.result) == ("decisions", result), check.detail
    check_detail(check.detail, says, never)
    assert check.detail.count("CloudWatch: AccessDenied") <= 1  # an error said once
    assert list(check.evidence["phases"]) == list(counters)
    assert check.evidence["window"] == {"start": iso(WINDOW.start), "end": iso(WINDOW.end)}


# -- receivers -----------------------------------------------------------------------------------


def read(reads: float = 0, misses: float = 0, hits: float = 0) -> Counters:
    """A phase's receiver counters: reads, fallback reads that found nothing under either key
    (``LegacyFallbackReads`` less the hits), reads that found their item only under the legacy
    key (``LegacyFallbackHits``)."""
    return Counters(
        {
            "ReceiverReads": {"composite": reads},
            "LegacyFallbackReads": {"composite": misses + hits},
            "LegacyFallbackHits": {"composite": hits},
        }
    )


READ_EVERYWHERE = {"dev": read(5), "staging": read(6), "production": read(7)}

RECEIVERS = [
    pytest.param(
        {**READ_EVERYWHERE, NO_PHASE: Counters()},
        "pass",
        ("no read needed the legacy key in 14 days; reads: dev 5, staging 6, production 7",),
        ("fallback", "none"),
        id="migrated-none-silent",
    ),
    pytest.param(
        {**READ_EVERYWHERE, "production": read(7, misses=4)},
        "pass",
        ("; 4 fallback read(s) found nothing under either key (new items)",),
        (),
        id="fallback-reads-without-hits-do-not-block",
    ),
    pytest.param(
        {**READ_EVERYWHERE, NO_PHASE: read(0, misses=2)},
        "pass",
        ("reads: dev 5, staging 6, production 7; 2 fallback read(s) found nothing",),
        (),
        id="fallback-reads-without-a-phase-are-counted",
    ),
    pytest.param(
        {**READ_EVERYWHERE, "production": read(7, hits=2)},
        "fail",
        ("production: 2 read(s) found their item only under the legacy key",),
        ("fallback read(s) found nothing",),
        id="legacy-hits",
    ),
    pytest.param(
        {**READ_EVERYWHERE, "staging": read(0, hits=1)},
        "fail",
        ("staging: 1 read(s) found their item only under the legacy key",),
        ("no receiver reports reads",),
        id="hits-outrank-no-reads",
    ),
    pytest.param(
        {**READ_EVERYWHERE, NO_PHASE: read(3, hits=1)},
        "fail",
        ("none: 1 read(s) found their item only under the legacy key",),
        (),
        id="hits-without-a-phase",
    ),
    pytest.param(
        {**READ_EVERYWHERE, "dev": read(0)},
        "unknown",
        (
            "dev: no receiver reports reads (ReceiverReads is 0 in 14 days): do the receivers "
            "count them, and reach CloudWatch?",
        ),
        (),
        id="a-phase-without-reads",
    ),
    pytest.param(
        {
            "dev": read(5),
            "staging": unread(CW_ERROR),
            "production": unread(CW_ERROR),
            NO_PHASE: unread(CW_ERROR),
        },
        "error",
        (CW_ERROR,),
        ("staging:", "production:"),
        id="an-error-stands-for-the-later-phases",
    ),
    pytest.param(
        {"dev": read(0), "staging": unread(CW_ERROR), "production": unread(CW_ERROR)},
        "unknown",
        ("dev: no receiver reports reads", CW_ERROR),
        (),
        id="unknown-outranks-an-error",
    ),
]


@pytest.mark.parametrize(("counters", "result", "says", "never"), RECEIVERS)
def test_judge_receivers(
    counters: Mapping[str, Counters], result: str, says: tuple[str, ...], never: tuple[str, ...]
) -> None:
    check = judge_receivers(counters, days=DAYS, window=WINDOW)
    assert (check.name, check.result) == ("receivers", result), check.detail
    check_detail(check.detail, says, never)
    assert check.detail.count("CloudWatch: AccessDenied") <= 1  # an error said once
    assert list(check.evidence["phases"]) == list(counters)


def test_the_receivers_evidence_keeps_every_counter() -> None:
    check = judge_receivers(
        {**READ_EVERYWHERE, "production": read(7, misses=4, hits=1)}, days=DAYS, window=WINDOW
    )
    assert check.evidence["phases"]["production"] == {
        "ReceiverReads": {"composite": 7},
        "LegacyFallbackReads": {"composite": 5},
        "LegacyFallbackHits": {"composite": 1},
        "result": "fail",
        "detail": "1 read(s) found their item only under the legacy key",
    }


def _backfilled(*, complete: bool = True) -> Backfills:
    record = Backfilled(
        Job("agents-v1", "agents"),
        ago(days=2),
        complete,
        300,
        0 if complete else 3,
        0,
        0,
        {"aws-prod#acme": {"items": 300, "complete": complete}},
        (0,),
    )
    return Backfills("live/production.flagd.json.backfill", (record,))


RECORDED = "agents-v1 -> agents: 1 endpoint(s), 300 item(s), complete, verified 2026-02-27"

BACKFILLED = [
    pytest.param(
        {**READ_EVERYWHERE, "production": read(7, hits=2)},
        {"production": _backfilled()},
        "fail",
        (
            "production: fallback hits 2 although backfilled (items written under the legacy key "
            "since, or a table not backfilled); backfilled: " + RECORDED,
        ),
        ("migrate",),
        id="hits-although-backfilled",
    ),
    pytest.param(
        {**READ_EVERYWHERE, "production": read(7, hits=2)},
        {"production": Backfills("live/production.flagd.json.backfill")},
        "fail",
        (
            "production: 2 read(s) found their item only under the legacy key; no backfill is "
            "recorded beside live/production.flagd.json.backfill: copy the legacy items "
            "(ai-agent-rollout backfill, then backfill verify)",
        ),
        (),
        id="hits-and-no-backfill",
    ),
    pytest.param(
        {**READ_EVERYWHERE, "production": read(7, hits=2)},
        {"production": _backfilled(complete=False)},
        "fail",
        (
            "production: 2 read(s) found their item only under the legacy key; backfilled: "
            "agents-v1 -> agents: 1 endpoint(s), 300 item(s), INCOMPLETE (3 missing)",
        ),
        ("although",),
        id="hits-and-an-incomplete-backfill",
    ),
    pytest.param(
        READ_EVERYWHERE,
        {"production": _backfilled()},
        "pass",
        ("reads: dev 5, staging 6, production 7; backfilled: production: " + RECORDED,),
        (),
        id="passed-and-backfilled",
    ),
    pytest.param(
        READ_EVERYWHERE,
        {"production": Backfills("s3://b/p.backfill", error="cannot read s3://b/p.backfill")},
        "pass",
        (),
        ("backfilled",),
        id="unreadable-records-do-not-decide",
    ),
]


@pytest.mark.parametrize(("counters", "backfills", "result", "says", "never"), BACKFILLED)
def test_the_receivers_check_names_what_was_backfilled(
    counters: Mapping[str, Counters],
    backfills: Mapping[str, Backfills],
    result: str,
    says: tuple[str, ...],
    never: tuple[str, ...],
) -> None:
    check = judge_receivers(counters, days=DAYS, window=WINDOW, backfills=backfills)
    assert check.result == result, check.detail
    check_detail(check.detail, says, never)
    assert check.evidence["phases"]["production"]["backfilled"] == backfills["production"].to_json()


# -- consistency ---------------------------------------------------------------------------------


def sampled(
    same: float = 0, different: float = 0, legacy_only: float = 0, composite_only: float = 0
) -> Counters:
    """A phase's shadow-read counters (receivers' sampled reads of composite keys)."""
    values = (same, different, legacy_only, composite_only)
    return Counters({m: {"composite": v} for m, v in zip(SHADOW_METRICS, values, strict=True)})


AGREEING = {"dev": sampled(100), "staging": sampled(2000, 1), "production": sampled(5000, 2, 0, 30)}
BACKFILL_OWED = "sampled read(s) found the item only under the legacy key: backfill owed"

CONSISTENCY = [
    pytest.param(
        {**AGREEING, NO_PHASE: Counters()},
        "pass",
        (
            "no backfill owed and consistency at least 99.9 % in 14 days; shadow reads: "
            "dev 100 % of 100 compared (100 sampled), staging 99.95 % of 2001 compared "
            "(2001 sampled), production 99.96 % of 5002 compared (5032 sampled)",
        ),
        ("none",),
        id="agreeing-none-silent",
    ),
    pytest.param(
        {**AGREEING, "dev": sampled(composite_only=12)},
        "pass",
        ("dev 12 sampled, none found the item under both keys (consistency undefined)",),
        (),
        id="only-composite-only-reads",
    ),
    pytest.param(
        {**AGREEING, "staging": sampled(999, 1)},
        "pass",
        ("staging 99.9 % of 1000 compared",),
        (),
        id="exactly-the-minimum",
    ),
    pytest.param(
        {**AGREEING, "production": sampled(5000, 2, legacy_only=3)},
        "fail",
        (f"production: 3 {BACKFILL_OWED}",),
        ("dev", "staging", "consistency"),
        id="backfill-owed",
    ),
    pytest.param(
        {**AGREEING, "staging": sampled(985, 15)},
        "fail",
        ("staging: consistency 98.5 % is below 99.9 %: 985 same, 15 different of 1000 compared",),
        ("dev", "production", "backfill"),
        id="below-the-minimum",
    ),
    pytest.param(
        {**AGREEING, "staging": sampled(99899, 101)},
        "fail",
        ("consistency 99.899 % is below 99.9 %",),
        (),
        id="never-rounded-up-to-the-minimum",
    ),
    pytest.param(
        {**AGREEING, "dev": sampled(90, 10, legacy_only=1)},
        "fail",
        (f"dev: 1 {BACKFILL_OWED}; consistency 90 % is below 99.9 %",),
        (),
        id="backfill-owed-and-below",
    ),
    pytest.param(
        {**AGREEING, "dev": sampled(legacy_only=4)},
        "fail",
        (f"dev: 4 {BACKFILL_OWED}",),
        ("no shadow reads", "consistency 0"),
        id="only-legacy-only-reads",
    ),
    pytest.param(
        {**AGREEING, "production": Counters()},
        "unknown",
        ("production: no shadow reads in 14 days: do the receivers sample with read_with_shadow?",),
        (),
        id="a-phase-without-shadow-reads",
    ),
    pytest.param(
        {**AGREEING, NO_PHASE: sampled(1, legacy_only=2)},
        "fail",
        (f"none: 2 {BACKFILL_OWED}",),
        (),
        id="backfill-owed-without-a-phase",
    ),
    pytest.param(
        {**AGREEING, NO_PHASE: sampled(50, 50)},
        "fail",
        ("none: consistency 50 % is below 99.9 %",),
        (),
        id="disagreeing-without-a-phase",
    ),
    pytest.param(
        {
            "dev": sampled(100),
            "staging": unread(CW_ERROR),
            "production": unread(CW_ERROR),
            NO_PHASE: unread(CW_ERROR),
        },
        "error",
        (CW_ERROR,),
        ("staging:", "production:"),
        id="an-error-stands-for-the-later-phases",
    ),
    pytest.param(
        {"dev": Counters(), "staging": unread(CW_ERROR), "production": unread(CW_ERROR)},
        "unknown",
        ("dev: no shadow reads", CW_ERROR),
        (),
        id="unknown-outranks-an-error",
    ),
]


@pytest.mark.parametrize(("counters", "result", "says", "never"), CONSISTENCY)
def test_judge_consistency(
    counters: Mapping[str, Counters], result: str, says: tuple[str, ...], never: tuple[str, ...]
) -> None:
    check = judge_consistency(counters, days=DAYS, window=WINDOW)
    assert (check.name, check.result) == ("consistency", result), check.detail
    check_detail(check.detail, says, never)
    assert check.detail.count("CloudWatch: AccessDenied") <= 1  # an error said once
    assert list(check.evidence["phases"]) == list(counters)
    assert check.evidence["min_consistency"] == 99.9


@pytest.mark.parametrize(
    ("minimum", "result", "says"),
    [
        (98.0, "pass", "consistency at least 98 % in 14 days"),
        (98.5, "pass", "staging 98.5 % of 1000 compared"),
        (99.0, "fail", "staging: consistency 98.5 % is below 99 %"),
        (100.0, "fail", "production: consistency 99.96 % is below 100 %"),
    ],
)
def test_judge_consistency_against_its_minimum(minimum: float, result: str, says: str) -> None:
    counters = {**AGREEING, "staging": sampled(985, 15)}
    check = judge_consistency(counters, days=DAYS, window=WINDOW, min_consistency=minimum)
    assert check.result == result, check.detail
    assert says in check.detail
    assert check.evidence["min_consistency"] == minimum


def test_the_consistency_evidence_keeps_every_counter_and_the_figure() -> None:
    check = judge_consistency(
        {**AGREEING, "staging": sampled(985, 15, 2, 7), NO_PHASE: unread(CW_ERROR)},
        days=DAYS,
        window=WINDOW,
    )
    assert check.evidence["phases"]["staging"] == {
        "ShadowSame": {"composite": 985},
        "ShadowDifferent": {"composite": 15},
        "ShadowLegacyOnly": {"composite": 2},
        "ShadowCompositeOnly": {"composite": 7},
        "consistency": 98.5,
        "result": "fail",
        "detail": f"2 {BACKFILL_OWED}; consistency 98.5 % is below 99.9 %: 985 same, "
        "15 different of 1000 compared",
    }
    assert check.evidence["phases"]["dev"]["consistency"] == 100.0
    assert "consistency" not in check.evidence["phases"][NO_PHASE]  # not read
