"""The approvers' page: one self-contained HTML document saying what happened to the
partition-key flag, when, why and by whom, and what share of traffic used the composite key.

Sections, in order: a header (the rule of every phase now), the timeline (one lane per phase:
the composite percentage as a step line, each change a marker whose colour and shape name its
trigger), the changes table (newest first), the composite share over time from CloudWatch,
the endpoints of each phase, the guarded ramp of each phase with its guards' evidence, and
the retire-check checklist.

Pure: the caller reads flag files, audit log and CloudWatch and passes what it found as a
:class:`Page` (with the time it was made); :func:`render` only formats it. The page has no
script and names no other resource (styles and charts are inline, fonts the system's), so it
can be mailed, kept with a change ticket and printed. Every text of the data is escaped.

A long history stays readable: up to ``limit`` events each is one timeline marker and one
table row; above it :func:`aggregate` folds them into one mark per UTC day and phase, and the
table shows the newest ``limit`` events in full under one row per day and phase.
"""

from __future__ import annotations

import datetime
import html
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import history, retire
from .status import FileStatus
from .times import UTC, format_duration, iso, utc

Trigger = Literal["operator", "ramp", "alarm"]

#: What each trigger means, with its marker's shape (the shape reads in greyscale print too).
TRIGGER_LABELS: dict[str, str] = {
    "operator": "operator edit (circle)",
    "ramp": "guarded ramp tick (square)",
    "alarm": "CloudWatch alarm (triangle)",
}
#: A day's mark takes its worst trigger: an alarm outranks the ramp, the ramp an operator.
TRIGGER_RANK = {"operator": 0, "ramp": 1, "alarm": 2}
_GLYPHS = {"operator": "\u25cf", "ramp": "\u25a0", "alarm": "\u25b2"}
#: The actions of a guarded ramp; an operator's edit of a file is ``change``.
RAMP_ACTIONS = frozenset(
    {"start", "advance", "rollback", "pause", "resume", "abort", "promote", "done"}
)
#: Up to this many events the page shows each one; above it, one mark per day and phase.
LIMIT = 200
#: Phases are shown in rollout order; any other phase after them, by name.
PHASE_ORDER = ("dev", "staging", "production")
#: Rules under which an endpoint not listed is chosen by a stable hash of its id.
PERCENT_KINDS = frozenset({"percent", "allow-list-and-percent"})


@dataclass(frozen=True)
class Event:
    """One change of a flag file (one audit record): one mark on the timeline."""

    time: datetime.datetime
    phase: str
    action: str  # "change" (an operator's edit) or one of RAMP_ACTIONS
    trigger: Trigger
    actor: str
    command: str
    reason: str | None
    version_before: int | None
    version_after: int | None
    before: str | None  # the rule before, in words
    after: str  # the rule after, in words
    percent: int | None  # composite share of endpoints after it; None: custom rule or unknown
    evidence: tuple[str, ...] = ()  # the ramp guards' evidence lines of this tick
    rollback: bool = False  # a move back: rollback, ramp rollback, abort, percent lowered


@dataclass(frozen=True)
class SharePoint:
    """One CloudWatch period of one phase: key decisions per scheme, errors, fallback hits."""

    time: datetime.datetime
    composite: float
    legacy: float
    errors: float = 0.0  # FlagEvaluationErrors
    fallback_hits: float = 0.0  # receivers' LegacyFallbackHits


@dataclass(frozen=True)
class Share:
    """The composite share over time of one phase; ``error``: why metrics could not be read."""

    phase: str
    points: tuple[SharePoint, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class EndpointRow:
    """The key one endpoint gets now (``composite`` or ``legacy``) and the rule that decides."""

    endpoint: str
    key: str
    why: str


@dataclass(frozen=True)
class PhaseView:
    """One phase's flag file now: its rule in words, allow-list, ramp; ``error``: unreadable."""

    phase: str
    source: str
    version: int | None
    rule: str
    kind: str
    percent: int | None
    allowed: tuple[str, ...] = ()
    ramp: tuple[str, ...] = ()
    last_change: str | None = None
    error: str | None = None
    endpoints: tuple[EndpointRow, ...] = ()


@dataclass(frozen=True)
class CheckRow:
    """One line of the retire-check checklist (status PASS, FAIL, UNKNOWN or ERROR)."""

    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class Page:
    """Everything the page shows; ``events`` in any order, ``damaged``: unreadable records."""

    title: str
    generated: datetime.datetime
    phases: tuple[PhaseView, ...]
    events: tuple[Event, ...]
    shares: tuple[Share, ...] = ()
    checklist: tuple[CheckRow, ...] = ()
    checklist_error: str | None = None
    damaged: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mark:
    """One marker of the timeline: one event, or (``day``) every event of one UTC day and phase.

    ``time`` is the event's, for a day 00:00 UTC; ``trigger`` a day's worst; ``rollback`` true
    when any event was one; ``indices`` the positions of its events in the sequence given to
    :func:`aggregate`, oldest first; ``percent`` the composite share after its last event.
    """

    time: datetime.datetime
    phase: str
    trigger: str
    count: int
    rollback: bool
    indices: tuple[int, ...]
    label: str
    percent: int | None
    day: bool = False


def aggregate(events: Sequence[Event], *, limit: int = LIMIT) -> list[Mark]:
    """The timeline's marks, oldest first: one per event while there are at most ``limit``,
    else one per (UTC day, phase) with its count, worst trigger and rollback flag."""
    order = sorted(range(len(events)), key=lambda i: (utc(events[i].time), i))
    if len(events) <= limit:
        return [_single(events[i], i) for i in order]
    days: dict[tuple[datetime.date, str], list[int]] = {}
    for i in order:
        days.setdefault((utc(events[i].time).date(), events[i].phase), []).append(i)
    marks = []
    for (day, phase), indices in sorted(days.items(), key=lambda item: item[0]):
        group = [events[i] for i in indices]
        start = datetime.datetime(day.year, day.month, day.day, tzinfo=UTC)
        worst = max((e.trigger for e in group), key=lambda t: TRIGGER_RANK.get(t, 0))
        back, last, count = any(e.rollback for e in group), group[-1].percent, len(group)
        label = f"{_plural(count, 'change')} on {day.isoformat()}"
        marks.append(Mark(start, phase, worst, count, back, tuple(indices), label, last, True))
    return marks


def _single(event: Event, index: int) -> Mark:
    time, label = utc(event.time), f"{event.command} ({event.actor})"
    return Mark(time, event.phase, event.trigger, 1, event.rollback, (index,), label, event.percent)


# -- text ------------------------------------------------------------------------------------

_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _e(value: object) -> str:
    """``value`` as HTML text or attribute value: escaped, control characters made visible."""
    text = _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value))
    return html.escape(text, quote=True)


def _trigger(trigger: str) -> str:
    """The trigger as a CSS class word (a trigger is data too)."""
    return re.sub(r"[^a-z]", "", trigger.lower()) or "other"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _time(moment: datetime.datetime, *, short: bool = False) -> str:
    """A ``<time>`` element; ``short``: ``2026-12-04 09:30:00`` (UTC) for table cells."""
    stamp = iso(moment)
    text = utc(moment).strftime("%Y-%m-%d %H:%M:%S") if short else stamp
    return f'<time datetime="{stamp}">{text}</time>'


def _percent(value: int | None) -> str:
    return "custom" if value is None else f"{_e(value)} %"


def _versions(before: int | None, after: int | None) -> str:
    return _e(f"{'-' if before is None else before} → {'-' if after is None else after}")


def _badge(trigger: str, rollback: bool = False) -> str:
    word = _trigger(trigger)
    out = f'<span class="trig trig-{word}">{_GLYPHS.get(word, "●")} {_e(trigger)}</span>'
    return out + (' <span class="back">↩ rollback</span>' if rollback else "")


def _phases(page: Page) -> list[str]:
    found = {p.phase for p in page.phases} | {e.phase for e in page.events}
    found |= {s.phase for s in page.shares}
    known = [p for p in PHASE_ORDER if p in found]
    return known + sorted(found - set(PHASE_ORDER))


# -- time axis ---------------------------------------------------------------------------------

WIDTH = 1000
_LEFT, _RIGHT = 118.0, 985.0
_STEPS = (300, 900, 1800, 3600, 10800, 21600, 43200, 86400, 172800, 604800, 1209600)
_MONTH = 2629746  # seconds in an average Gregorian month
_HALF_DAY = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class _Axis:
    """Seconds since the epoch, ``start`` to ``end``, onto the x pixels of every chart."""

    start: float
    end: float

    def x(self, moment: datetime.datetime) -> float:
        share = (utc(moment).timestamp() - self.start) / (self.end - self.start)
        return _LEFT + share * (_RIGHT - _LEFT)

    def at(self, mark: Mark) -> float:
        """Where ``mark`` is drawn: at its event, or for a day in the middle of the day."""
        return self.x(mark.time + _HALF_DAY if mark.day else mark.time)

    def day(self) -> float:
        """The width of one day in pixels."""
        return 86400 / (self.end - self.start) * (_RIGHT - _LEFT)


def _axis(moments: Sequence[datetime.datetime]) -> _Axis | None:
    """The span of ``moments`` with a margin; an hour around them when they are one instant."""
    if not moments:
        return None
    stamps = [utc(m).timestamp() for m in moments]
    low, high = min(stamps), max(stamps)
    if high - low < 3600:
        middle = (low + high) / 2
        low, high = middle - 1800, middle + 1800
    pad = (high - low) * 0.03
    return _Axis(low - pad, high + pad)


def _ticks(axis: _Axis, most: int = 8) -> list[tuple[float, str]]:
    """Tick times (as x) and labels: hours, days or months, whichever gives at most ``most``."""
    span = axis.end - axis.start
    step = next((s for s in _STEPS if span / s <= most), 0)
    out: list[tuple[float, str]] = []
    if step:
        previous = None
        for stamp in range(math.ceil(axis.start / step) * step, math.floor(axis.end) + 1, step):
            moment = datetime.datetime.fromtimestamp(stamp, UTC)
            if step >= 86400:  # days: the year on the first tick and when it changes
                same = previous is not None and previous.year == moment.year
                label = moment.strftime("%d %b" if same else "%d %b %Y")
            else:  # hours: the date on the first tick and when it changes
                same = previous is not None and previous.date() == moment.date()
                label = moment.strftime("%H:%M" if same else "%d %b %H:%M")
            out.append((axis.x(moment), label))
            previous = moment
        return out
    months = next((m for m in (1, 2, 3, 6, 12, 24, 60, 120) if span / (m * _MONTH) <= most), 600)
    start = datetime.datetime.fromtimestamp(axis.start, UTC)
    index = start.year * 12 + start.month - 1 + (start.day > 1 or start.time() > datetime.time())
    index = math.ceil(index / months) * months
    while index // 12 <= 9999:
        moment = datetime.datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
        if moment.timestamp() > axis.end:
            break
        out.append((axis.x(moment), moment.strftime("%b %Y" if months < 12 else "%Y")))
        index += months
    return out


def _axis_svg(axis: _Axis, top: float, bottom: float) -> list[str]:
    """Vertical grid lines from ``top`` to ``bottom`` and the tick labels under them."""
    parts = []
    for x, label in _ticks(axis):
        anchor = "end" if x > _RIGHT - 40 else "middle"
        parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>')
        parts.append(
            f'<text class="axis-label" x="{x:.1f}" y="{bottom + 15}" '
            f'text-anchor="{anchor}">{_e(label)}</text>'
        )
    return parts


# -- timeline ----------------------------------------------------------------------------------

_LANE = 66


def _shape(kind: str, x: float, y: float, r: float) -> str:
    """A circle (operator), square (ramp) or triangle (alarm) of radius ``r`` at ``x, y``."""
    if kind == "ramp":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}"/>'
    if kind == "alarm":
        r *= 1.25
        return (
            f'<path d="M{x:.1f},{y - r:.1f}L{x + r:.1f},{y + 0.8 * r:.1f}'
            f'L{x - r:.1f},{y + 0.8 * r:.1f}Z"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"/>'


def _mark_title(mark: Mark, events: Sequence[Event]) -> str:
    group = [events[i] for i in mark.indices]
    if mark.day:
        counts = {t: sum(e.trigger == t for e in group) for t in TRIGGER_RANK}
        lines = [f"{mark.label} in {mark.phase}"]
        lines.append(", ".join(f"{n} {t}" for t, n in counts.items() if n))
        lines += ["includes a rollback"] if mark.rollback else []
        lines.append(f"afterwards: {group[-1].after}")
    else:
        e = group[0]
        lines = [
            f"{iso(e.time)} · {e.phase} · {e.trigger}{' · rollback' if e.rollback else ''}",
            f"{e.actor}: {e.command}",
            f"reason: {e.reason or '(none given)'}",
            f"afterwards: {e.after} ({_percent(e.percent)})",
        ]
    return _e("\n".join(lines))


def _lane_y(y0: float, percent: float) -> float:
    """The y of ``percent`` in the lane whose top is ``y0``: 0 % at its foot, 100 % near its top."""
    return y0 + _LANE - 12 - percent / 100 * (_LANE - 24)


def _lane(phase: str, row: int, marks: Sequence[Mark], events: Sequence[Event], axis: _Axis) -> str:
    """One phase's lane: its name, the composite % as a step line (a gap after a change to a
    custom rule), and one marker per mark (a custom rule's mark on the lane's middle line)."""
    y0 = 6 + row * _LANE
    low, high = _lane_y(y0, 0), _lane_y(y0, 100)
    parts = [
        f'<rect class="lane{" alt" * (row % 2)}" x="0" y="{y0}" width="{WIDTH}" height="{_LANE}"/>'
        f'<text class="lane-label" x="10" y="{y0 + _LANE / 2 + 4}">{_e(phase)}</text>'
        f'<line class="base" x1="{_LEFT}" x2="{_RIGHT}" y1="{low}" y2="{low}"/>'
        f'<line class="grid" x1="{_LEFT}" x2="{_RIGHT}" y1="{high}" y2="{high}"/>'
        f'<text class="pct-label" x="{_LEFT - 6}" y="{high + 3}" text-anchor="end">100 %</text>'
        f'<text class="pct-label" x="{_LEFT - 6}" y="{low + 3}" text-anchor="end">0 %</text>'
    ]
    xs = _dodged([axis.at(mark) for mark in marks])
    path, known = [], False
    for mark, x in zip(marks, xs, strict=True):
        path.append(f"H{x:.1f}" if known else "")
        known = mark.percent is not None
        if mark.percent is not None:
            path.append(f"{'V' if path[-1] else f'M{x:.1f},'}{_lane_y(y0, mark.percent):.1f}")
    path.append(f"H{_RIGHT}" if known else "")
    if any(path):
        parts.append(f'<path class="step" d="{"".join(path)}"/>')
    for mark, x in zip(marks, xs, strict=True):
        word = _trigger(mark.trigger)
        classes = f"marker{' marker-day' * mark.day} marker-{word}" + " rollback" * mark.rollback
        classes += " unknown" * (mark.percent is None)
        y = y0 + _LANE / 2 if mark.percent is None else _lane_y(y0, mark.percent)
        data = f'data-day="{mark.time.date()}" data-count="{mark.count}"' if mark.day else ""
        data = data or f'data-event="{mark.indices[0]}"'
        radius = max(3.0, min(6.0, axis.day() * 0.4)) if mark.day else 5.0
        parts.append(
            f'<g class="{classes}" {data}><title>{_mark_title(mark, events)}</title>'
            f"{_shape(word, x, y, radius)}</g>"
        )
    return "".join(parts)


#: Markers closer than this (pixels) are moved apart, each at most :data:`_DODGE_MAX` right
#: of its time, so changes made within seconds of each other stay one visible marker each.
_DODGE, _DODGE_MAX = 11.0, 66.0


def _dodged(xs: Sequence[float]) -> list[float]:
    """``xs`` (rising) with neighbours at least :data:`_DODGE` apart where the shift allows."""
    out: list[float] = []
    for x in xs:
        if out and x < out[-1] + _DODGE:
            x = min(out[-1] + _DODGE, x + _DODGE_MAX, _RIGHT)
        out.append(x)
    return out


def _timeline(
    marks: Sequence[Mark], events: Sequence[Event], phases: list[str], axis: _Axis
) -> str:
    """One lane per phase, the time axis under them, and the legend of the marker kinds."""
    bottom = 6 + _LANE * len(phases)
    parts = [
        f'<svg class="chart timeline" viewBox="0 0 {WIDTH} {bottom + 78}" width="100%" '
        'role="img" aria-label="Timeline of flag changes per phase">'
    ]
    parts += [
        _lane(phase, row, [m for m in marks if m.phase == phase], events, axis)
        for row, phase in enumerate(phases)
    ]
    parts += _axis_svg(axis, 6, bottom)
    keys = [(t, f"key key-{t}", TRIGGER_LABELS[t], 5.0) for t in TRIGGER_RANK]
    keys += [
        ("operator", "key key-operator rollback", "hollow: a move back (rollback, abort)", 5.0),
        ("operator", "key key-operator unknown", "faded: custom rule, share unknown", 5.0),
    ]
    if marks and marks[0].day:
        keys.append(("operator", "key key-operator", "one mark: a UTC day of one phase", 5.0))
    for n, (kind, classes, text, radius) in enumerate(keys):
        x, y = 24 + (n % 3) * 320, bottom + 42 + (n // 3) * 22
        parts.append(
            f'<g class="{classes}">{_shape(kind, x, y, radius)}</g>'
            f'<text class="legend-text" x="{x + 14}" y="{y + 4}">{_e(text)}</text>'
        )
    return "".join(parts) + "</svg>"


# -- composite share ---------------------------------------------------------------------------

_BUCKETS = 300


def _share_svg(share: Share, axis: _Axis, rules: Sequence[Mark]) -> str:
    """composite / (composite + legacy) in %, summed per time bucket (a gap where a bucket has
    no decisions); evaluation errors and fallback hits as marks in two strips under it; the
    phase's changes as vertical lines (dashed red: a move back)."""
    top, bottom, errors_y, hits_y = 10, 130, 164, 180
    buckets: dict[int, list[float]] = {}
    for point in share.points:
        stamp = utc(point.time).timestamp()
        at = int((stamp - axis.start) / (axis.end - axis.start) * _BUCKETS)
        got = buckets.setdefault(min(_BUCKETS - 1, max(0, at)), [0.0] * 6)
        for n, value in enumerate(
            (stamp, 1, point.composite, point.legacy, point.errors, point.fallback_hits)
        ):
            got[n] += value
    parts = [
        f'<svg class="chart share" viewBox="0 0 {WIDTH} {hits_y + 10}" width="100%" role="img" '
        f'aria-label="Composite share over time in {_e(share.phase)}">'
    ]
    for percent in (0, 25, 50, 75, 100):
        y = bottom - percent / 100 * (bottom - top)
        parts.append(
            f'<line class="{"base" if percent == 0 else "grid"}" x1="{_LEFT}" x2="{_RIGHT}" '
            f'y1="{y}" y2="{y}"/><text class="pct-label" x="{_LEFT - 6}" y="{y + 3}" '
            f'text-anchor="end">{percent} %</text>'
        )
    parts.append(
        f'<text class="pct-label" x="{_LEFT - 6}" y="{errors_y + 3}" text-anchor="end">'
        f'eval errors</text><text class="pct-label" x="{_LEFT - 6}" y="{hits_y + 3}" '
        'text-anchor="end">fallback hits</text>'
    )
    parts += _axis_svg(axis, top, bottom)
    for mark in rules:
        x = axis.at(mark)
        parts.append(
            f'<line class="event-rule{" back-rule" * mark.rollback}" x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{top}" y2="{bottom}"><title>{_e(iso(mark.time))}: {_e(mark.label)}</title></line>'
        )
    segments: list[list[tuple[float, float]]] = [[]]
    for index in sorted(buckets):
        stamp, count, composite, legacy, errors, hits = buckets[index]
        x = axis.x(datetime.datetime.fromtimestamp(stamp / count, UTC))
        if composite + legacy > 0:
            segments[-1].append((x, bottom - composite / (composite + legacy) * (bottom - top)))
        elif segments[-1]:
            segments.append([])
        if errors > 0:
            parts.append(
                f'<rect class="err" x="{x - 1.5:.1f}" y="{errors_y - 5}" width="3" height="10">'
                f"<title>{errors:,.0f} flag evaluation errors</title></rect>"
            )
        if hits > 0:
            parts.append(
                f'<circle class="fb" cx="{x:.1f}" cy="{hits_y}" r="3">'
                f"<title>{hits:,.0f} legacy fallback hits</title></circle>"
            )
    for segment in segments:
        if len(segment) == 1:
            x, y = segment[0]
            parts.append(f'<circle class="share-dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
        elif segment:
            line = "L".join(f"{x:.1f},{y:.1f}" for x, y in segment)
            area = f"M{segment[0][0]:.1f},{bottom}L{line}L{segment[-1][0]:.1f},{bottom}Z"
            parts.append(
                f'<path class="share-area" d="{area}"/><path class="share-line" d="M{line}"/>'
            )
    return "".join(parts) + "</svg>"


def _share_summary(share: Share) -> str:
    """The newest reading and the period's totals, in words."""
    composite = sum(p.composite for p in share.points)
    legacy = sum(p.legacy for p in share.points)
    errors = sum(p.errors for p in share.points)
    hits = sum(p.fallback_hits for p in share.points)
    newest = max(share.points, key=lambda p: utc(p.time))
    said = (
        f"Over the period: {composite / (composite + legacy):.1%} composite "
        f"({composite:,.0f} of {composite + legacy:,.0f} key decisions)"
        if composite + legacy
        else "Over the period: no key decisions"
    )
    return (
        f"{said}; {errors:,.0f} flag evaluation errors; {hits:,.0f} legacy fallback hits. "
        f"Newest reading {iso(newest.time)}."
    )


# -- sections ----------------------------------------------------------------------------------


def _header(page: Page, events: Sequence[Event]) -> list[str]:
    out = [f"<header><h1>{_e(page.title)}</h1>"]
    out.append(f'<p class="generated">Generated {_time(page.generated)} (UTC).')
    if events:
        first, last = utc(events[0].time), utc(events[-1].time)
        counts = ", ".join(
            f"{n:,} {t}" for t in TRIGGER_RANK if (n := sum(e.trigger == t for e in events))
        )
        backs = sum(e.rollback for e in events)
        out.append(
            f" {_plural(len(events), 'change')} ({_e(counts)}; {_plural(backs, 'move')} back) "
            f"from {_time(first)} to {_time(last)} "
            f"({format_duration((last - first).total_seconds())})."
        )
    out.append("</p>")
    if page.phases:
        out.append('<ul class="phase-summary">')
        for view in sorted(page.phases, key=lambda v: _phase_key(v.phase)):
            version = "" if view.version is None else f" (version {_e(view.version)})"
            error = f' <span class="bad">{_e(view.error)}</span>' if view.error else ""
            out.append(f"<li><b>{_e(view.phase)}</b>{version}: {_e(view.rule)}{error}</li>")
        out.append("</ul>")
    if page.damaged > 0:
        out.append(
            f'<p class="damaged">{_plural(page.damaged, "audit record")} could not be read and '
            "are not shown.</p>"
        )
    if page.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in page.notes))
        out.append("</ul>")
    return [*out, "</header>"]


def _phase_key(phase: str) -> tuple[int, str]:
    return (PHASE_ORDER.index(phase), "") if phase in PHASE_ORDER else (len(PHASE_ORDER), phase)


def _evidence(lines: Sequence[str]) -> str:
    return '<ul class="evidence">' + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>"


def _change_row(event: Event, index: int) -> str:
    was = f'<div class="was">was: {_e(event.before)}</div>' if event.before else ""
    reason = _e(event.reason) if event.reason else '<span class="muted">none given</span>'
    evidence = _evidence(event.evidence) if event.evidence else ""
    return (
        f'<tr class="change{" rollback" * event.rollback}" data-event="{index}">'
        f"<td>{_time(event.time, short=True)}</td><td>{_e(event.phase)}</td>"
        f"<td>{_badge(event.trigger, event.rollback)}</td><td>{_e(event.actor)}</td>"
        f"<td><code>{_e(event.command)}</code></td>"
        f"<td>{_versions(event.version_before, event.version_after)}</td>"
        f"<td>{_percent(event.percent)}</td><td>{_e(event.after)}{was}</td>"
        f"<td>{reason}{evidence}</td></tr>"
    )


_CHANGE_HEAD = (
    "<tr><th>Time (UTC)</th><th>Phase</th><th>Trigger</th><th>Actor</th><th>Command</th>"
    "<th>Version</th><th>Composite</th><th>Rule afterwards</th><th>Reason and evidence</th></tr>"
)


def _day_row(mark: Mark, events: Sequence[Event]) -> str:
    group = [events[i] for i in mark.indices]
    counts = " ".join(
        _badge(t) + f" {n:,}" for t in TRIGGER_RANK if (n := sum(e.trigger == t for e in group))
    )
    back = ' <span class="back">↩ rollback</span>' if mark.rollback else ""
    first, last = group[0], group[-1]
    return (
        f'<tr class="change day{" rollback" * mark.rollback}" '
        f'data-day="{mark.time.date().isoformat()}" data-count="{mark.count}">'
        f"<td>{mark.time.date().isoformat()}</td><td>{_e(mark.phase)}</td>"
        f"<td>{mark.count:,}</td><td>{counts}{back}</td>"
        f"<td>{_e(first.after)}</td><td>{_e(last.after)}</td></tr>"
    )


def _changes(marks: Sequence[Mark], page: Page, order: Sequence[int], limit: int) -> list[str]:
    events = page.events
    out = ['<section id="changes"><h2>Changes</h2>']
    if not events:
        return [*out, '<p class="muted">No changes recorded.</p></section>']
    newest = list(reversed(order))[: max(0, limit)] if marks and marks[0].day else order[::-1]
    if marks and marks[0].day:
        out.append(
            f"<p>{len(events):,} changes: more than {limit:,}, so first one row per day and "
            f"phase (newest first), then the newest {len(newest):,} in full.</p>"
            '<table class="changes days"><thead><tr><th>Day (UTC)</th><th>Phase</th>'
            "<th>Changes</th><th>Triggers</th><th>First rule that day</th>"
            "<th>Last rule that day</th></tr></thead><tbody>"
        )
        by_day = sorted(marks, key=lambda m: (m.time, _phase_key(m.phase)), reverse=True)
        out += [_day_row(m, events) for m in by_day]
        out.append(f"</tbody></table><h3>The newest {len(newest):,} changes</h3>")
    out.append(f'<table class="changes"><thead>{_CHANGE_HEAD}</thead><tbody>')
    out += [_change_row(events[i], i) for i in newest]
    return [*out, "</tbody></table></section>"]


def _shares(page: Page, phases: list[str], marks: Sequence[Mark], axis: _Axis | None) -> list[str]:
    out = [
        '<section id="share"><h2>Composite share over time</h2><p class="muted">Key decisions '
        "with the composite key as a share of all key decisions (CloudWatch, per period); "
        "red ticks: flag evaluation errors; amber dots: receivers' legacy fallback hits; "
        "vertical lines: this phase's changes.</p>"
    ]
    shares = {s.phase: s for s in page.shares}
    for phase in phases:
        out.append(f'<div class="block"><h3>{_e(phase)}</h3>')
        share = shares.get(phase)
        if share is None:
            out.append('<p class="no-metrics">No metrics read for this phase.</p>')
        elif share.error:
            out.append(
                f'<p class="metrics-unreachable">Metrics were not reachable: {_e(share.error)}</p>'
            )
        elif not share.points or axis is None:
            out.append('<p class="no-metrics">CloudWatch returned no data points.</p>')
        else:
            rules = [m for m in marks if m.phase == phase]
            out.append(f"<figure>{_share_svg(share, axis, rules)}")
            out.append(f"<figcaption>{_e(_share_summary(share))}</figcaption></figure>")
        out.append("</div>")
    return [*out, "</section>"]


def _endpoints(page: Page) -> list[str]:
    out = ['<section id="endpoints"><h2>Endpoints</h2>']
    if not page.phases:
        out.append('<p class="muted">No flag file read.</p>')
    for view in sorted(page.phases, key=lambda v: _phase_key(v.phase)):
        version = "-" if view.version is None else _e(view.version)
        out.append(
            f'<div class="block"><h3>{_e(view.phase)}</h3><dl><dt>Rule</dt><dd>{_e(view.rule)}'
            f"</dd><dt>Kind</dt><dd>{_e(view.kind)} ({_percent(view.percent)})</dd>"
            f"<dt>File</dt><dd><code>{_e(view.source)}</code>, version {version}</dd>"
        )
        if view.last_change:
            out.append(f"<dt>Last change</dt><dd>{_e(view.last_change)}</dd>")
        out.append("</dl>")
        if view.error:
            out.append(f'<p class="file-error">The file could not be used: {_e(view.error)}</p>')
        listed = ", ".join(f"<code>{_e(a)}</code>" for a in view.allowed) or "none"
        out.append(f"<p>Allow-listed: {listed}</p>")
        if view.kind in PERCENT_KINDS:
            command = f"ai-agent-rollout --file {shlex.quote(view.source)} explain --endpoint E"
            out.append(
                "<p>Endpoints not listed are chosen by a stable hash of their id: an endpoint "
                "keeps its key while the percentage stays, and only gains the composite key as "
                f"it rises. To ask about one endpoint: <code>{_e(command)}</code></p>"
            )
        if view.endpoints:
            out.append("<table><thead><tr><th>Endpoint</th><th>Key</th><th>Why</th></tr></thead>")
            out += [
                f'<tr class="endpoint"><td><code>{_e(r.endpoint)}</code></td>'
                f'<td><span class="key-{_trigger(r.key)}">{_e(r.key)}</span></td>'
                f"<td>{_e(r.why)}</td></tr>"
                for r in view.endpoints
            ]
            out.append("</table>")
        out.append("</div>")
    return [*out, "</section>"]


def _ramps(page: Page, phases: list[str], order: Sequence[int], limit: int) -> list[str]:
    out = ['<section id="ramp"><h2>Ramp</h2>']
    views = {v.phase: v for v in page.phases}
    for phase in phases:
        out.append(f'<div class="block"><h3>{_e(phase)}</h3>')
        view = views.get(phase)
        if view and view.ramp:
            out.append('<ul class="ramp-state">' + "".join(f"<li>{_e(x)}</li>" for x in view.ramp))
            out.append("</ul>")
        else:
            out.append('<p class="muted">No ramp in this file.</p>')
        ticks = [
            i
            for i in reversed(order)
            if page.events[i].phase == phase and page.events[i].action in RAMP_ACTIONS
        ]
        if ticks:
            out.append('<ol class="ticks">')
        for i in ticks[: max(0, limit)]:
            e = page.events[i]
            reason = f" — {_e(e.reason)}" if e.reason else ""
            out.append(
                f'<li class="tick{" rollback" * e.rollback}" data-event="{i}">'
                f"{_time(e.time, short=True)} "
                f"<b>{_e(e.action)}</b> {_badge(e.trigger, e.rollback)} by {_e(e.actor)}: "
                f"<code>{_e(e.command)}</code>, now {_percent(e.percent)}{reason}"
                f"{_evidence(e.evidence) if e.evidence else ''}</li>"
            )
        if ticks:
            out.append("</ol>")
        if len(ticks) > limit:
            out.append(f'<p class="muted">{len(ticks) - limit:,} older ticks are not shown.</p>')
        out.append("</div>")
    return [*out, "</section>"]


def _checklist(page: Page) -> list[str]:
    out = ['<section id="retire"><h2>Retire-check checklist</h2>']
    if page.checklist_error:
        out.append(
            f'<p class="checklist-error">The check could not run: {_e(page.checklist_error)}</p>'
        )
    if page.checklist:
        out.append("<table><thead><tr><th>Check</th><th>Status</th><th>Detail</th></tr></thead>")
        for row in page.checklist:
            status = row.status.upper()
            word = status if status in ("PASS", "FAIL", "UNKNOWN", "ERROR") else "OTHER"
            out.append(
                f'<tr class="check check-{word.lower()}"><td>{_e(row.name)}</td>'
                f'<td><span class="status status-{word.lower()}">{_e(status)}</span></td>'
                f"<td>{_e(row.detail)}</td></tr>"
            )
        out.append("</table>")
    elif not page.checklist_error:
        out.append('<p class="muted">Not run.</p>')
    return [*out, "</section>"]


def render(page: Page, *, limit: int = LIMIT) -> str:
    """The page as one HTML5 document (no script, no external resource); every event one
    timeline marker and table row while there are at most ``limit``, else see
    :func:`aggregate`."""
    order = sorted(range(len(page.events)), key=lambda i: (utc(page.events[i].time), i))
    events = [page.events[i] for i in order]
    marks = aggregate(page.events, limit=limit)
    phases = _phases(page)
    axis = _axis(
        [m.time + 2 * _HALF_DAY if m.day else m.time for m in marks]
        + [m.time for m in marks]
        + [e.time for e in events]
        + [p.time for s in page.shares if not s.error for p in s.points]
    )
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(page.title)}</title><style>{CSS}</style></head><body><main>",
        *_header(page, events),
        '<nav><a href="#timeline">Timeline</a><a href="#changes">Changes</a>'
        '<a href="#share">Composite share</a><a href="#endpoints">Endpoints</a>'
        '<a href="#ramp">Ramp</a><a href="#retire">Retire check</a></nav>',
        '<section id="timeline"><h2>Timeline</h2>',
    ]
    if axis is None or not marks:
        out.append('<p class="muted">No changes recorded.</p>')
    else:
        out.append(f"<figure>{_timeline(marks, page.events, phases, axis)}<figcaption>")
        out.append(
            "Per phase, the share of endpoints on the composite key (0 % to 100 %) as a step "
            "line; each marker one change"
            + (", or every change of one UTC day" if marks[0].day else "")
            + "; a marker's tooltip says who, what and why, as the table below does."
            "</figcaption></figure>"
        )
    out.append("</section>")
    out += _changes(marks, page, order, limit)
    out += _shares(page, phases, marks, axis)
    out += _endpoints(page)
    out += _ramps(page, phases, order, limit)
    out += _checklist(page)
    out.append("</main></body></html>\n")
    return "".join(out)


CSS = """
:root{--op:#2f6db5;--ramp:#1f8a55;--alarm:#c2410c;--ink:#1f2328;--muted:#5b6470;--line:#dde1e6;
--soft:#f5f6f8}*{box-sizing:border-box}
body{margin:0;color:var(--ink);background:#fff;
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:36px 28px 72px}
h1{font-size:1.75rem;font-weight:650;margin:0 0 .3rem}
h2{font-size:1.3rem;font-weight:620;margin:2.8rem 0 .9rem;padding-bottom:.35rem;
border-bottom:1px solid var(--line)}h3{font-size:1.05rem;margin:1.7rem 0 .5rem}
.generated,.muted,figcaption,.was{color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;margin:1.4rem 0;font-size:.9rem}
nav a{color:var(--op);text-decoration:none}.phase-summary,.notes{padding-left:1.2rem}
.damaged,.metrics-unreachable,.file-error,.checklist-error{border-left:3px solid var(--alarm);
background:#fdf4f0;padding:.55rem .85rem;border-radius:0 4px 4px 0}.bad{color:var(--alarm)}
table{border-collapse:collapse;width:100%;font-size:.86rem;margin:.6rem 0 1.2rem}
th,td{text-align:left;vertical-align:top;padding:.5rem .6rem;border-bottom:1px solid var(--line);
overflow-wrap:anywhere}th{background:var(--soft);font-weight:600;white-space:nowrap}
.changes td:nth-child(-n+2),.changes td:nth-child(6),.changes td:nth-child(7),
.days td:nth-child(-n+3){white-space:nowrap;overflow-wrap:normal}
tr.rollback>td:first-child{box-shadow:inset 3px 0 0 var(--alarm)}
code{font:.86em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);
padding:.05em .3em;border-radius:3px}.was{font-size:.85em;margin-top:.2rem}
.trig{white-space:nowrap;font-weight:600}.trig-operator{color:var(--op)}
.trig-ramp{color:var(--ramp)}.trig-alarm{color:var(--alarm)}
.back{white-space:nowrap;color:var(--alarm);border:1px solid currentColor;border-radius:9px;
padding:0 .45em;font-size:.78em}
.evidence{margin:.35rem 0 0;padding-left:1.1rem;color:var(--muted);font-size:.9em}
.key-composite{color:var(--ramp);font-weight:600}.key-legacy{color:var(--muted)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.4rem 0}
dt{color:var(--muted)}dd{margin:0}.ticks{padding-left:1.4rem}.ticks li{margin:.4rem 0}
.status{font-weight:700;padding:.05em .5em;border-radius:4px;border:1px solid currentColor}
.status-pass{color:#1a7f37}.status-fail,.status-error{color:var(--alarm)}
.status-unknown,.status-other{color:#9a6700}figure{margin:1rem 0 1.4rem}
figcaption{font-size:.85rem;margin-top:.3rem}
svg.chart{display:block;width:100%;height:auto;
font:11px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}.lane{fill:#fbfbfc}
.lane.alt{fill:#f3f5f7}.lane-label{font-size:13px;font-weight:600;fill:var(--ink)}
.grid,.tick{stroke:#e2e5e9}.base{stroke:#b8bec7}
.axis-label,.pct-label,.legend-text{fill:var(--muted)}.legend-text{font-size:12px}
.step{fill:none;stroke:#8b95a3;stroke-width:1.6}.marker,.key{stroke-width:1.2}
.marker-operator,.key-operator{fill:var(--op);stroke:var(--op)}
.marker-ramp,.key-ramp{fill:var(--ramp);stroke:var(--ramp)}
.marker-alarm,.key-alarm{fill:var(--alarm);stroke:var(--alarm)}
.marker.unknown,.key.unknown{fill-opacity:.3}
.marker.rollback,.key.rollback{fill:#fff;fill-opacity:1;stroke-width:2.6}
.share-area{fill:var(--op);fill-opacity:.14}
.share-line{fill:none;stroke:var(--op);stroke-width:1.8}.share-dot{fill:var(--op)}
.err{fill:var(--alarm)}.fb{fill:#b7791f}.event-rule{stroke:#9aa3af;stroke-dasharray:2 3}
.event-rule.back-rule{stroke:var(--alarm)}@page{margin:14mm}
@media print{
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}body{font-size:10pt;background:#fff}
main{max-width:none;padding:0}nav{display:none}
th,code,.lane,.lane.alt,.damaged,.metrics-unreachable,.file-error,.checklist-error{background:#fff;
fill:#fff}tr,figure,li,dl,.block{break-inside:avoid}h2,h3{break-after:avoid}
}
"""


# -- from what the operators' tools read ---------------------------------------------------


def percent_after(state: Mapping[str, Any] | None) -> int | None:
    """The composite share of endpoints a recorded rollout state gives (None: custom)."""
    if state is None:
        return 0
    kind = state.get("kind")
    if kind == "composite-everywhere":
        return 100
    if kind in ("legacy-everywhere", "disabled", "missing"):
        return 0
    percent = state.get("percent")
    if kind in ("allow-list", *PERCENT_KINDS) and isinstance(percent, int):
        return percent
    return None


def event_of(record: history.Record, phase: str | None) -> Event:
    """One audit record as a timeline event (its file's ``phase`` when it names none)."""

    def words(state: Mapping[str, Any] | None) -> str | None:
        said = state.get("description") if state is not None else None
        return said if isinstance(said, str) else None

    action = record.ramp.get("action") if record.ramp is not None else None
    return Event(
        time=record.time,
        phase=record.phase or phase or "?",
        action=action if isinstance(action, str) and action in RAMP_ACTIONS else "change",
        trigger=record.trigger,
        actor=record.actor,
        command=record.command,
        reason=record.reason,
        version_before=record.version_before,
        version_after=record.version_after,
        before=words(record.before),
        after=words(record.after) or "?",
        percent=percent_after(record.after),
        evidence=tuple(history.evidence(record)),
        rollback=history.is_rollback(record),
    )


def phase_view(
    found: FileStatus, now: datetime.datetime, endpoints: Sequence[EndpointRow] = ()
) -> PhaseView:
    """One phase's file as ``status`` read it, for the page."""
    state = found.state
    return PhaseView(
        phase=found.phase or "?",
        source=found.source,
        version=found.version,
        rule=state.describe() if state is not None else "unusable",
        kind=state.kind if state is not None else "missing",
        percent=found.flag.percent if found.flag is not None else None,
        allowed=state.allowed if state is not None else (),
        ramp=tuple(line.strip() for line in found.ramp_lines(now)),
        last_change=found.last_change(now),
        error=found.error,
        endpoints=tuple(endpoints),
    )


def check_rows(report: retire.Report) -> tuple[CheckRow, ...]:
    """retire-check's checks as the checklist's rows."""
    return tuple(CheckRow(c.name, c.result.upper(), c.detail) for c in report.checks)


def share_of(
    phase: str, series: Mapping[str, Mapping[str, Mapping[datetime.datetime, float]]]
) -> Share:
    """CloudWatch's series of one phase (:func:`.cloudwatch.counter_series`) as its share."""

    def at(metric: str, scheme: str | None) -> Mapping[datetime.datetime, float]:
        per_scheme = series.get(metric, {})
        if scheme is not None:
            return per_scheme.get(scheme, {})
        summed: dict[datetime.datetime, float] = {}
        for points in per_scheme.values():
            for moment, value in points.items():
                summed[moment] = summed.get(moment, 0.0) + value
        return summed

    composite, legacy = at("KeyDecisions", "composite"), at("KeyDecisions", "legacy")
    errors, hits = at("FlagEvaluationErrors", None), at("LegacyFallbackHits", None)
    moments = sorted({*composite, *legacy, *errors, *hits})
    points = tuple(
        SharePoint(
            moment,
            composite.get(moment, 0.0),
            legacy.get(moment, 0.0),
            errors.get(moment, 0.0),
            hits.get(moment, 0.0),
        )
        for moment in moments
    )
    return Share(phase, points)
