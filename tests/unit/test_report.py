"""The approvers' page (``ops/report.py``), read back with an HTML parser: one marker and one
table row per event (per day and phase above the limit), newest first, every text escaped,
nothing fetched from elsewhere, and the sections that say what could not be read."""

from __future__ import annotations

import datetime
import html.parser
import math
import re
import time
from collections.abc import Sequence

import pytest

from ai_agent_handler.ops.report import (
    LIMIT,
    RAMP_ACTIONS,
    TRIGGER_LABELS,
    CheckRow,
    EndpointRow,
    Event,
    Page,
    PhaseView,
    Share,
    SharePoint,
    Trigger,
    aggregate,
    render,
)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 10, 1, tzinfo=UTC)
GENERATED = datetime.datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
PHASES = ("dev", "staging", "production")
TRIGGERS: tuple[Trigger, ...] = ("operator", "ramp", "alarm")
WORST = {"operator": 0, "ramp": 1, "alarm": 2}
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}
HOSTILE = "</title><script>alert(1)</script>"


class Parsed(html.parser.HTMLParser):
    """Start tags with their attributes (in order), text, style text, and any end tag that
    does not close the element open at that point."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.style: list[str] = []
        self.unbalanced: list[str] = []
        self._open: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        if tag not in VOID:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self._open or self._open.pop() != tag:
            self.unbalanced.append(tag)

    def handle_data(self, data: str) -> None:
        (self.style if self._open and self._open[-1] == "style" else self.text).append(data)

    def classed(self, word: str, tag: str | None = None) -> list[dict[str, str]]:
        """The attributes of every element whose class list holds ``word``, in page order."""
        return [
            attrs
            for name, attrs in self.tags
            if word in attrs.get("class", "").split() and tag in (None, name)
        ]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def event(
    minutes: float = 0,
    *,
    phase: str = "production",
    trigger: Trigger = "operator",
    action: str = "change",
    percent: int | None = 5,
    reason: str | None = "CHG-42",
    actor: str = "alice",
    rollback: bool = False,
    evidence: tuple[str, ...] = (),
    at: datetime.datetime = T0,
) -> Event:
    return Event(
        time=at + datetime.timedelta(minutes=minutes),
        phase=phase,
        action=action,
        trigger=trigger,
        actor=actor,
        command="edit by hand" if percent is None else f"percent {percent}",
        reason=reason,
        version_before=3,
        version_after=4,
        before="legacy for every endpoint",
        after="custom rule" if percent is None else f"composite for {percent} % of endpoints",
        percent=percent,
        evidence=evidence,
        rollback=rollback,
    )


def spread(count: int, days: int) -> tuple[Event, ...]:
    """``count`` events evenly over ``days`` days from T0, round-robin over the phases; every
    fourth day has alarms, every fifth a rollback, odd events are ramp ticks."""
    step = days * 1440 / count
    made = []
    for k in range(count):
        day = int(k * step // 1440)
        trigger: Trigger = "alarm" if day % 4 == 0 and k % 7 == 0 else TRIGGERS[k % 2]
        made.append(
            event(
                k * step,
                phase=PHASES[k % 3],
                trigger=trigger,
                action="advance" if trigger != "operator" else "change",
                percent=(None, 1, 5, 25, 50, 100)[k % 6],
                rollback=day % 5 == 0 and k % 11 == 0,
                evidence=("healthy: 0 of 3 guards breached",) if trigger != "operator" else (),
            )
        )
    return tuple(made)


def page(events: Sequence[Event] = (), **fields: object) -> Page:
    defaults: dict[str, object] = {
        "title": "Partition-key rollout",
        "generated": GENERATED,
        "phases": (),
        "events": tuple(events),
    }
    return Page(**{**defaults, **fields})  # type: ignore[arg-type]


# -- the aggregation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "days", "marks_expected", "aggregated"),
    [(1, 1, 1, False), (100, 10, 100, False), (10_000, 60, 60 * 3, True)],
    ids=["1-event", "100-events", "10000-events"],
)
def test_aggregation_table(count: int, days: int, marks_expected: int, aggregated: bool) -> None:
    events = spread(count, days)
    marks = aggregate(events)
    assert len(marks) == marks_expected
    assert sum(mark.count for mark in marks) == count
    assert sorted(i for mark in marks for i in mark.indices) == list(range(count))
    assert all(mark.day is aggregated for mark in marks)
    assert [m.time for m in marks] == sorted(m.time for m in marks)
    for mark in marks:
        group = [events[i] for i in mark.indices]
        assert mark.count == len(group)
        assert {e.phase for e in group} == {mark.phase}
        assert mark.trigger == max((e.trigger for e in group), key=WORST.__getitem__)
        assert mark.rollback is any(e.rollback for e in group)
        assert mark.percent == group[-1].percent
        if aggregated:
            day = mark.time.date()
            assert mark.time == datetime.datetime(day.year, day.month, day.day, tzinfo=UTC)
            assert {e.time.date() for e in group} == {day}
            assert mark.label == f"{mark.count} changes on {day.isoformat()}"
            # the spread's days: alarms every fourth day, rollbacks every fifth
            offset = (day - T0.date()).days
            assert mark.trigger == ("alarm" if offset % 4 == 0 else "ramp")
            assert mark.rollback is (offset % 5 == 0)

    started = time.perf_counter()
    document = render(page(events))
    seconds = time.perf_counter() - started
    parsed = Parsed(document)
    markers = parsed.classed("marker")
    assert len(markers) == marks_expected
    assert len(parsed.classed("marker-day")) == (marks_expected if aggregated else 0)
    assert len(document.encode("utf-8")) < 2_000_000
    assert seconds < 10  # about 0.2 s for 10,000 events; generous for a loaded machine
    rows = parsed.classed("change", "tr")
    full = [r for r in rows if "day" not in r["class"].split()]
    assert len(full) == min(count, LIMIT)
    assert len(rows) - len(full) == (marks_expected if aggregated else 0)


def test_the_limit_is_inclusive_and_configurable() -> None:
    events = spread(30, 3)
    assert all(not mark.day for mark in aggregate(events, limit=30))
    assert all(mark.day for mark in aggregate(events, limit=29))
    assert len(aggregate(events, limit=29)) == 3 * 3
    parsed = Parsed(render(page(events), limit=10))
    rows = parsed.classed("change", "tr")
    assert len([r for r in rows if "day" in r["class"].split()]) == 9
    assert len(rows) == 9 + 10
    assert aggregate([]) == []


def test_a_day_marker_says_how_many_changes_it_stands_for() -> None:
    events = spread(300, 2)
    parsed = Parsed(render(page(events)))
    first = parsed.classed("marker-day")[0]
    assert first["data-day"] == T0.date().isoformat()
    assert "changes on 2026-10-01" in parsed.all_text
    day_rows = [r for r in parsed.classed("change", "tr") if "day" in r["class"].split()]
    assert sum(int(r["data-count"]) for r in day_rows) == 300


# -- structure ---------------------------------------------------------------------------------


def mixed() -> tuple[Event, ...]:
    return (
        event(30, trigger="ramp", action="advance", percent=25, evidence=("KeyDecisions 1,200",)),
        event(0, phase="staging", percent=100),
        event(90, trigger="alarm", action="rollback", percent=5, rollback=True),
        event(60, phase="dev", percent=None),
    )


def test_one_marker_per_event_carrying_its_trigger_and_rollback_flag() -> None:
    events = mixed()
    parsed = Parsed(render(page(events)))
    markers = parsed.classed("marker", "g")
    assert len(markers) == len(events)
    for marker in markers:
        e = events[int(marker["data-event"])]
        classes = marker["class"].split()
        assert f"marker-{e.trigger}" in classes
        assert ("rollback" in classes) is e.rollback
        assert ("unknown" in classes) is (e.percent is None)
    assert {m["data-event"] for m in markers} == {"0", "1", "2", "3"}
    assert parsed.unbalanced == []


def test_each_marker_has_a_tooltip_with_time_actor_command_and_reason() -> None:
    document = render(page([event(0, reason="CHG-7 canary", actor="bob")]))
    tooltip = re.search(r'<g class="marker[^"]*"[^>]*><title>(.*?)</title>', document, re.S)
    assert tooltip is not None
    text = html.unescape(tooltip.group(1))
    assert "2026-10-01T00:00:00+00:00" in text
    assert "bob: percent 5" in text
    assert "CHG-7 canary" in text


def test_change_rows_newest_first_with_versions_rule_and_evidence() -> None:
    events = mixed()
    parsed = Parsed(render(page(events)))
    rows = parsed.classed("change", "tr")
    assert len(rows) == len(events)
    times = [events[int(r["data-event"])].time for r in rows]
    assert times == sorted(times, reverse=True)
    assert "rollback" in rows[0]["class"].split()
    text = parsed.all_text
    assert "3 → 4" in text
    assert "KeyDecisions 1,200" in text
    assert "composite for 25 % of endpoints" in text
    assert len(parsed.classed("evidence", "ul")) >= 1


def test_sections_come_in_order() -> None:
    parsed = Parsed(render(page(mixed())))
    ids = [attrs["id"] for name, attrs in parsed.tags if name == "section"]
    assert ids == ["timeline", "changes", "share", "endpoints", "ramp", "retire"]


def test_the_legend_names_every_trigger_and_is_no_marker() -> None:
    parsed = Parsed(render(page([event()])))
    for trigger in TRIGGERS:
        assert parsed.classed(f"key-{trigger}")
        assert TRIGGER_LABELS[trigger] in parsed.all_text
    assert len(parsed.classed("marker")) == 1


# -- escaping and self-containment -------------------------------------------------------------


def hostile_page() -> Page:
    bad = event(0, reason=HOSTILE, actor='"bob" & <eve>\x07', evidence=("<b>x</b>",))
    view = PhaseView(
        phase="production",
        source="s3://ops-flags/<prod>.json",
        version=7,
        rule="composite for 25 % of endpoints; legacy for the rest",
        kind="percent",
        percent=25,
        allowed=("<img src=x onerror=alert(1)>",),
        endpoints=(EndpointRow('aws-"prod"', "composite", "listed"),),
        ramp=("state: running <now>",),
    )
    return page(
        [bad, event(5, reason="see https://tickets.example/CHG-1 and //cdn.example/x.js")],
        title="Rollout <b>report</b>",
        phases=(view,),
        shares=(Share("production", error="AccessDenied: <arn:aws:iam::1:user/x>"),),
        checklist=(CheckRow("files", "PASS", "<ok>"),),
        notes=("& note",),
    )


def test_every_text_from_the_data_is_escaped() -> None:
    document = render(hostile_page())
    parsed = Parsed(document)
    names = {name for name, _ in parsed.tags}
    assert "script" not in names
    assert "img" not in names
    assert "b" not in names or all(not a for n, a in parsed.tags if n == "b")
    assert "<script" not in document.lower()
    assert HOSTILE in parsed.all_text  # shown as text, in the table and the tooltip
    assert '"bob" & <eve>\\u0007' in parsed.all_text
    assert "\x07" not in document
    assert parsed.unbalanced == []
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]


def test_nothing_is_loaded_from_elsewhere() -> None:
    document = render(hostile_page())
    parsed = Parsed(document)
    for _, attrs in parsed.tags:
        for name, value in attrs.items():
            assert not re.match(r"\s*(https?:|//)", value, re.I), (name, value)
            if name in ("href", "src", "xlink:href"):
                assert value.startswith("#"), (name, value)
    style = "".join(parsed.style)
    assert "url(" not in style
    assert "@import" not in style
    assert "http" not in style
    assert "@media print" in style
    # the URLs of the reason are text only; without them the page names no URL at all
    assert "http" not in render(page(mixed()))
    head = document[: document.index("<style>")]
    assert '<meta charset="utf-8">' in head
    assert document.startswith("<!DOCTYPE html>")


def test_every_chart_scales_to_the_page_width() -> None:
    pts = tuple(SharePoint(T0 + datetime.timedelta(hours=h), h, 10) for h in range(4))
    parsed = Parsed(render(page(mixed(), shares=(Share("production", pts),))))
    charts = [attrs for name, attrs in parsed.tags if name == "svg"]
    assert len(charts) == 2
    for attrs in charts:
        assert attrs["width"] == "100%"
        assert re.fullmatch(r"0 0 \d+ \d+(\.\d+)?", attrs["viewbox"])


# -- what could not be read --------------------------------------------------------------------


def test_unreachable_metrics_say_why_and_a_phase_without_metrics_says_so() -> None:
    parsed = Parsed(render(hostile_page()))
    (unreachable,) = parsed.classed("metrics-unreachable", "p")
    assert unreachable is not None
    assert "AccessDenied: <arn:aws:iam::1:user/x>" in parsed.all_text
    shares = [SharePoint(T0, 1, 3, errors=2, fallback_hits=1)]
    parsed = Parsed(render(page(mixed(), shares=(Share("staging", tuple(shares)),))))
    assert parsed.classed("metrics-unreachable") == []
    assert len(parsed.classed("no-metrics")) == 2  # dev and production
    assert "No metrics read for this phase." in parsed.all_text
    assert parsed.classed("err") and parsed.classed("fb")
    assert "25.0% composite" in parsed.all_text


@pytest.mark.parametrize(
    ("checklist", "error", "said"),
    [
        ((), None, "Not run."),
        ((), "AccessDenied on cloudwatch", "The check could not run: AccessDenied on cloudwatch"),
    ],
)
def test_checklist_not_run_or_failed(
    checklist: tuple[CheckRow, ...], error: str | None, said: str
) -> None:
    parsed = Parsed(render(page(checklist=checklist, checklist_error=error)))
    assert said in parsed.all_text
    assert parsed.classed("check") == []


def test_checklist_rows_with_their_status() -> None:
    rows = (
        CheckRow("files", "PASS", "every phase composite"),
        CheckRow("quiet", "FAIL", "changed 2 days ago"),
        CheckRow("decisions", "unknown", "no decisions reported"),
        CheckRow("receivers", "ERROR", "AccessDenied"),
    )
    parsed = Parsed(render(page(checklist=rows)))
    found = parsed.classed("check", "tr")
    assert [r["class"] for r in found] == [
        "check check-pass",
        "check check-fail",
        "check check-unknown",
        "check check-error",
    ]
    assert len(parsed.classed("status")) == 4
    assert "UNKNOWN" in parsed.all_text


def test_damaged_records_and_notes_are_counted_in_the_header() -> None:
    text = Parsed(render(page(damaged=3, notes=("metrics from us-east-1",)))).all_text
    assert "3 audit records could not be read and are not shown." in text
    assert "metrics from us-east-1" in text
    assert "1 audit record could not be read" in Parsed(render(page(damaged=1))).all_text
    assert "could not be read" not in Parsed(render(page())).all_text


def test_endpoints_and_ramp_sections() -> None:
    tick = event(
        10,
        trigger="ramp",
        action="advance",
        percent=25,
        evidence=("guard decisions: healthy",),
    )
    older = event(0, trigger="ramp", action="start", percent=5)
    parsed = Parsed(render(hostile_page()))
    text = parsed.all_text
    assert "ai-agent-rollout --file 's3://ops-flags/<prod>.json' explain --endpoint E" in text
    assert "stable hash" in text
    assert len(parsed.classed("endpoint", "tr")) == 1
    assert "state: running <now>" in text
    parsed = Parsed(render(page([older, tick, event(20)])))
    ticks = parsed.classed("tick", "li")
    assert [t["data-event"] for t in ticks] == ["1", "0"]  # ramp actions only, newest first
    assert "guard decisions: healthy" in parsed.all_text
    assert {"advance", "start"} <= RAMP_ACTIONS


# -- edges -------------------------------------------------------------------------------------


def test_an_empty_page_renders() -> None:
    document = render(page())
    parsed = Parsed(document)
    assert parsed.unbalanced == []
    assert parsed.classed("marker") == []
    assert parsed.classed("change") == []
    assert "No changes recorded." in parsed.all_text
    assert "2026-12-04T09:30:00+00:00" in parsed.all_text


def coordinates(document: str) -> list[float]:
    numbers = re.findall(r'\b(?:x|y|x1|x2|y1|y2|cx|cy|r|width|height)="([^"%]*)"', document)
    numbers += [n for d in re.findall(r' d="([^"]*)"', document) for n in re.findall(r"[-\d.]+", d)]
    return [float(n) for n in numbers]


@pytest.mark.parametrize(
    "events",
    [
        [event(0)],
        [event(0, phase=p, trigger=t) for p in PHASES for t in TRIGGERS],
        [event(0, percent=None), event(5, percent=None, phase="dev")],
    ],
    ids=["single-event", "one-instant", "percent-none"],
)
def test_degenerate_histories_render(events: list[Event]) -> None:
    document = render(page(events))
    parsed = Parsed(document)
    assert len(parsed.classed("marker")) == len(events)
    assert len(parsed.classed("change", "tr")) == len(events)
    assert parsed.unbalanced == []
    assert "None" not in document
    values = coordinates(document)
    assert values and all(math.isfinite(v) for v in values)
    assert len(parsed.classed("axis-label")) >= 2


def test_a_custom_rule_breaks_the_step_line_and_is_called_custom() -> None:
    events = [event(0, percent=5), event(10, percent=None), event(20, percent=50)]
    document = render(page(events))
    (step,) = re.findall(r'<path class="step" d="([^"]*)"', document)
    assert step.count("M") == 2  # the line stops at the custom rule and starts again after it
    parsed = Parsed(document)
    assert "custom" in parsed.all_text
    assert [m["data-event"] for m in parsed.classed("marker") if "unknown" in m["class"]] == ["1"]


# -- from the audit trail and CloudWatch to the page -------------------------------------------


def _record(**fields: object) -> object:
    from ai_agent_handler.ops import history

    raw: dict[str, object] = {
        "time": "2026-12-01T09:00:00+00:00",
        "actor": "alice",
        "command": "percent 5",
        "before": {"kind": "percent", "percent": 25, "allowed": [], "description": "25 %"},
        "after": {"kind": "percent", "percent": 5, "allowed": [], "description": "5 %"},
        "version_before": 3,
        "version_after": 4,
    }
    raw.update(fields)
    found = history.from_raw(raw, "log:1")
    assert isinstance(found, history.Record)
    return found


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, 0),
        ({"kind": "composite-everywhere"}, 100),
        ({"kind": "legacy-everywhere", "percent": 0}, 0),
        ({"kind": "disabled"}, 0),
        ({"kind": "allow-list", "percent": 0, "allowed": ["a"]}, 0),
        ({"kind": "allow-list-and-percent", "percent": 30}, 30),
        ({"kind": "custom"}, None),
    ],
)
def test_the_share_after_a_recorded_state(
    state: dict[str, object] | None, expected: int | None
) -> None:
    from ai_agent_handler.ops.report import percent_after

    assert percent_after(state) == expected


def test_an_audit_record_becomes_an_event() -> None:
    from ai_agent_handler.ops.report import event_of

    event = event_of(_record(), "production")  # type: ignore[arg-type]
    assert (event.phase, event.action, event.trigger, event.percent) == (
        "production",
        "change",
        "operator",
        5,
    )
    assert (event.before, event.after, event.rollback) == ("25 %", "5 %", True)  # 25 -> 5 %
    ramp = {
        "action": "rollback",
        "trigger": "guard breach",
        "reasons": ["alarm a is in ALARM"],
        "verdict": {"health": "breach"},
        "from": "step 2/3 (25 %)",
        "to": "step 1/3 (5 %)",
    }
    tick = event_of(_record(ramp=ramp, phase="staging"), "production")  # type: ignore[arg-type]
    assert (tick.phase, tick.action, tick.trigger, tick.rollback) == (
        "staging",
        "rollback",
        "alarm",
        True,
    )
    assert tick.evidence[:2] == (
        "ramp rollback from step 2/3 (25 %) to step 1/3 (5 %): guard breach",
        "  alarm a is in ALARM",
    )


def test_cloudwatch_series_become_share_points() -> None:
    from ai_agent_handler.ops.report import share_of

    t1, t2 = T0, T0 + datetime.timedelta(minutes=5)
    series = {
        "KeyDecisions": {"composite": {t1: 1.0, t2: 3.0}, "legacy": {t1: 9.0}},
        "FlagEvaluationErrors": {"composite": {t2: 1.0}, "legacy": {t2: 2.0}},
        "LegacyFallbackHits": {"composite": {t1: 4.0}},
    }
    share = share_of("production", series)
    assert share.points == (SharePoint(t1, 1.0, 9.0, 0.0, 4.0), SharePoint(t2, 3.0, 0.0, 3.0, 0.0))
    assert share_of("dev", {}).points == ()


@pytest.mark.parametrize(
    ("xs", "expected"),
    [
        ([100.0, 100.0, 100.0], [100.0, 111.0, 122.0]),  # one instant: apart
        ([100.0, 300.0], [100.0, 300.0]),  # far enough: untouched
        ([100.0] * 9, [100.0, 111.0, 122.0, 133.0, 144.0, 155.0, 166.0, 166.0, 166.0]),  # capped
    ],
)
def test_markers_of_one_moment_are_moved_apart_a_little(
    xs: list[float], expected: list[float]
) -> None:
    from ai_agent_handler.ops.report import _dodged

    assert _dodged(xs) == expected
