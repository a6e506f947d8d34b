"""The audit trail read back (:mod:`ai_agent_handler.ops.history`): what a record is, what is
damaged, what triggered a change, whom it concerns, which records ``history`` keeps."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from ai_agent_handler.ops import history
from ai_agent_handler.ops.history import Damaged, Filters, Record

T0 = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc)


def state(kind: str, allowed: tuple[str, ...] = (), percent: int | None = None) -> dict[str, Any]:
    return {"kind": kind, "allowed": list(allowed), "percent": percent, "description": kind}


def raw(**fields: Any) -> dict[str, Any]:
    made: dict[str, Any] = {
        "time": "2026-12-01T09:00:00.000+00:00",
        "actor": "alice",
        "command": "percent 5",
        "phase": "production",
        "file": "s3://b/production.flagd.json",
        "before": state("legacy-everywhere"),
        "after": state("percent", percent=5),
        "version_before": 1,
        "version_after": 2,
        "reason": "CHG-1",
    }
    made.update(fields)
    return made


def record(**fields: Any) -> Record:
    found = history.from_raw(raw(**fields), "log:1")
    assert isinstance(found, Record)
    return found


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([1, 2], "not a JSON object but list"),
        ("text", "not a JSON object but str"),
        (raw(time="yesterday"), "no valid time: 'yesterday'"),
        (raw(time=None), "no valid time: None"),
        (raw(command=""), "no command"),
        (raw(command=7), "no command"),
    ],
)
def test_what_is_not_a_record_is_damaged_and_says_why(value: object, why: str) -> None:
    assert history.from_raw(value, "log:3") == Damaged("log:3", why)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"time": "2026-12-01T09:00', "not JSON (JSONDecodeError"),  # cut off by a crash
        (b"\xff\xfe garbage", "not JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_line_that_is_not_json_is_damaged(line: bytes, why: str) -> None:
    found = history.from_line(line, "log:9")
    assert isinstance(found, Damaged) and found.where == "log:9"
    assert found.why.startswith(why)


def test_a_record_keeps_what_it_says_and_tolerates_odd_fields() -> None:
    found = record(actor=None, version_before=True, reason=3, before="x")
    assert (found.actor, found.version_before, found.reason, found.before) == (
        "?",
        None,
        None,
        None,
    )
    assert found.time == T0 and found.version_after == 2
    assert found.to_json()["trigger"] == "operator"


def ramp_details(action: str, trigger: str, health: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"action": action, "trigger": trigger, "reasons": []}
    if health is not None:
        details["verdict"] = {"health": health, "reasons": []}
    return details


@pytest.mark.parametrize(
    ("ramp", "expected"),
    [
        (None, "operator"),
        (ramp_details("start", "start by operator"), "operator"),
        (ramp_details("pause", "paused by operator"), "operator"),
        (ramp_details("abort", "abort by operator"), "operator"),
        (ramp_details("advance", "bake done, guards healthy", "healthy"), "ramp"),
        (ramp_details("done", "last step baked healthy", "healthy"), "ramp"),
        (ramp_details("pause", "flag file changed outside the ramp"), "ramp"),
        (ramp_details("rollback", "guard breach", "breach"), "alarm"),
        (ramp_details("pause", "guard breach", "breach"), "alarm"),
    ],
)
def test_the_trigger_of_a_change(ramp: dict[str, Any] | None, expected: str) -> None:
    assert record(ramp=ramp).trigger == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"command": "rollback"}, True),
        ({"ramp": ramp_details("rollback", "guard breach", "breach")}, True),
        ({"ramp": ramp_details("abort", "abort by operator")}, True),
        ({"before": state("percent", percent=25), "after": state("percent", percent=5)}, True),
        ({"before": state("allow-list", ("a", "b")), "after": state("allow-list", ("a",))}, True),
        ({}, False),  # legacy -> 5 %
        ({"before": state("percent", percent=5), "after": state("composite-everywhere")}, False),
        ({"before": None}, False),
    ],
)
def test_what_counts_as_a_move_back(fields: dict[str, Any], expected: bool) -> None:
    assert history.is_rollback(record(**fields)) is expected


@pytest.mark.parametrize(
    ("rollout", "threshold", "expected"),
    [
        (state("legacy-everywhere"), None, "legacy"),
        (state("disabled"), 3, "legacy"),
        (state("composite-everywhere"), None, "composite"),
        (state("allow-list", ("ep",)), None, "composite"),
        (state("allow-list", ("other",)), None, "legacy"),
        (state("percent", percent=0), None, "legacy"),
        (state("percent", percent=30), None, None),  # its hash unknown
        (state("percent", percent=30), 31, "legacy"),
        (state("percent", percent=30), 30, "composite"),
        (state("allow-list-and-percent", ("ep",), 1), 99, "composite"),
        (state("custom"), 1, None),
        (None, 1, "legacy"),  # no file: the code default
    ],
)
def test_the_key_a_recorded_state_gives_an_endpoint(
    rollout: dict[str, Any] | None, threshold: int | None, expected: str | None
) -> None:
    assert history.key_for(rollout, "ep", threshold) == expected


@pytest.mark.parametrize(
    ("fields", "threshold", "expected"),
    [
        ({"command": "allow ep"}, None, True),  # names it
        ({"command": "allow ep2", "after": state("allow-list", ("ep2",))}, None, False),
        ({"after": state("percent", percent=5)}, 4, True),  # 5 % passes its hash at 4
        ({"after": state("percent", percent=5)}, 6, False),
        ({"after": state("percent", percent=5)}, None, True),  # cannot tell: shown
        (
            {"before": state("percent", percent=50), "after": state("percent", percent=60)},
            10,
            False,  # composite before and after
        ),
        ({"before": state("custom"), "after": state("custom")}, 1, False),  # nothing changed
        ({"after": state("composite-everywhere")}, None, True),
    ],
)
def test_a_change_concerns_an_endpoint_when_it_moved_its_key(
    fields: dict[str, Any], threshold: int | None, expected: bool
) -> None:
    assert history.concerns(record(**fields), "ep", threshold) is expected


def at(minutes: int, **fields: Any) -> Record:
    moment = T0 + datetime.timedelta(minutes=minutes)
    return record(time=moment.isoformat(), version_after=minutes + 1, **fields)


def test_select_is_newest_first_and_applies_every_filter() -> None:
    records = [at(0), at(10, actor="bob"), at(20), at(30, actor="bob", command="allow ep")]
    shown = history.select(records, Filters())
    assert [r.version_after for r in shown] == [31, 21, 11, 1]
    since = T0 + datetime.timedelta(minutes=10)
    assert [r.version_after for r in history.select(records, Filters(since=since))] == [31, 21, 11]
    assert [r.version_after for r in history.select(records, Filters(actor="bob"))] == [31, 11]
    assert [r.version_after for r in history.select(records, Filters(limit=2))] == [31, 21]
    by_endpoint = Filters(endpoint="ep", threshold=90, actor="bob")
    assert [r.version_after for r in history.select(records, by_endpoint)] == [31]


def test_describe_says_when_who_what_why_and_the_ramps_evidence() -> None:
    evidence = {
        "window": {"start": "2026-12-01T08:00:00+00:00", "end": "2026-12-01T09:00:00+00:00"},
        "alarms": {"receivers-5xx": "ALARM"},
        "counters": {"KeyDecisions": {"composite": 120, "legacy": 880}},
    }
    ramp = {
        **ramp_details("rollback", "guard breach", "breach"),
        "reasons": ["alarm receivers-5xx is in ALARM"],
        "from": "step 2/3 (5 %)",
        "to": "step 1/3 (1 %)",
        "evidence": evidence,
    }
    lines = history.describe(record(command="ramp rollback 1", actor="ramp-bot", ramp=ramp))
    assert lines[0] == (
        "2026-12-01T09:00:00+00:00  production  alarm     ramp-bot: ramp rollback 1  "
        "(version 1 -> 2)"
    )
    assert lines[1:] == [
        "    why: CHG-1",
        "    now: percent",
        "    ramp rollback from step 2/3 (5 %) to step 1/3 (1 %): guard breach",
        "      alarm receivers-5xx is in ALARM",
        "      window 2026-12-01T08:00:00+00:00 to 2026-12-01T09:00:00+00:00",
        "      alarms: receivers-5xx ALARM",
        "      counters: KeyDecisions composite 120/legacy 880",
    ]


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [(1, 2, "1 -> 2"), (None, 3, "3"), (None, None, "?"), (4, None, "4 -> ?")],
)
def test_versions_in_words(before: int | None, after: int | None, said: str) -> None:
    assert history.versions(record(version_before=before, version_after=after)) == said
