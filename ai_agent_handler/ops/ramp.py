"""A guarded ramp of the percentage, as pure decisions (no I/O).

``ai-agent-rollout ramp start --steps 1,5,25,50,100 --bake 2h --alarm NAME`` fixes a
:class:`Plan`. The ramp lives in the flag file it steers: ``metadata.ramp`` holds its
:class:`RampState` (plan, step, status, and the digest of the flag content the ramp wrote)
as one JSON string, so that a step -- the new percentage and the new state -- is one
conditional write of one object. The bake of a step counts from the file's last write on
the store's clock (:attr:`FlagView.modified`), never from a controller's clock.

Every ``tick`` looks at the file and the evidence read from CloudWatch, and :func:`decide`
says what to do -- at most one step:

1. A ramp that is not running does nothing.
2. Flag content that is not what the ramp wrote (its digest differs: an operator's
   ``percent``, ``allow``, ``rollback``, a hand edit, whatever its version says) pauses the
   ramp: it never fights an operator.
3. A guard breach -- a named alarm in ``ALARM``, any flag evaluation error, composite-key
   failures worse than legacy's, shadow reads' consistency below the plan's minimum (when it
   has one) -- rolls back to the previous step and pauses, whether the step is still baking
   or not (before the first step: pauses). The stable hash of the percentage rule moves back
   exactly the endpoints that step moved.
4. While the step bakes, nothing happens.
5. After the bake, evidence that cannot judge (too few composite decisions or compared shadow
   reads, an alarm in ``INSUFFICIENT_DATA`` or missing, CloudWatch unreadable) holds: nothing
   is written and the next tick looks again. It never rolls back.
6. Healthy after the bake: the next step; after the last step's bake, the ramp is done.

:func:`judge` turns :class:`Evidence` into a :class:`Verdict`. Ratios are computed here from
plain counter sums: ``failures / KeyDecisions`` per key scheme, for ``LambdaInvokeErrors``
and ``StreamChunksFailed``. Composite is worse than legacy when its ratio exceeds legacy's
by more than ``tolerance`` (relative); with no legacy failures at all, any composite failure
is worse. The legacy reference is the current window's legacy traffic, or -- once too little
of it is left (late steps) -- the same span before the ramp started. At 0 % (a ramp resumed
after rolling back its first step) there is no composite traffic to count: the guards are
the alarms and the evaluation errors.

A plan with ``min_consistency`` (``ramp start --min-consistency P``) also reads the receivers'
four shadow-read counters (:data:`~ai_agent_handler.receiver.SHADOW_METRICS`) and judges
their consistency (:func:`.shadow.consistency`: of the sampled reads that found the item under
both keys, the share whose copies agree): below ``P`` is a breach; fewer than
``min_shadow_reads`` compared reads cannot judge (hold). Without composite traffic (0 %) it
is not applied; a plan without it reads the same counters as before.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from ..exceptions import RampError
from ..receiver import SHADOW_METRICS
from . import edits, times
from .shadow import ShadowCounts, check_min_consistency, percent_text
from .times import Window

#: The library's counters a tick reads for the phase (sums per key scheme).
COUNTERS = ("KeyDecisions", "FlagEvaluationErrors", "LambdaInvokeErrors", "StreamChunksFailed")
#: Failures compared as ratios to the key decisions of the same scheme.
FAILURES = ("LambdaInvokeErrors", "StreamChunksFailed")
#: Where the ramp's state is kept in the flag file: ``metadata.ramp``, a JSON string (flagd
#: metadata values are strings, numbers or booleans).
METADATA_KEY = "ramp"
#: The longest bake a plan may have (a year): anything longer is a typo or damage.
MAX_BAKE = 366 * 86400.0

Status = Literal["running", "paused", "done", "aborted"]
Health = Literal["healthy", "hold", "breach"]
ActionKind = Literal[
    "none", "start", "advance", "rollback", "pause", "resume", "abort", "promote", "done"
]


def parse_steps(text: str) -> tuple[int, ...]:
    """``"1,5,25,50,100"`` -> ``(1, 5, 25, 50, 100)``: integers 1..100, strictly rising."""
    steps: list[int] = []
    for part in text.split(","):
        item = part.strip().rstrip("%").strip()
        try:
            steps.append(int(item))
        except ValueError:
            raise RampError(f"not a percentage step: {part.strip()!r} in {text!r}") from None
    return _checked_steps(steps, f" in {text!r}")


def _checked_steps(steps: list[int], where: str = "") -> tuple[int, ...]:
    if not steps:
        raise RampError(f"a ramp needs at least one step{where}")
    for before, value in zip([0, *steps], steps, strict=False):
        if not 1 <= value <= 100:
            raise RampError(f"steps are percentages from 1 to 100, got {value}{where}")
        if value <= before:
            raise RampError(f"steps must rise: {value} after {before}{where}")
    return tuple(steps)


def content_digest(doc: Mapping[str, Any]) -> str:
    """What a flag document makes handlers answer, as a digest: everything but
    ``metadata`` (version, phase, the ramp's own state). A hand edit that keeps the version
    number still changes it."""
    content = {key: value for key, value in doc.items() if key != "metadata"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """What ``ramp start`` fixed: the steps and the guards."""

    phase: str
    steps: tuple[int, ...]
    bake: float
    alarms: tuple[str, ...] = ()
    min_decisions: int = 100
    tolerance: float = 0.25
    namespace: str = "ai_agent_handler"
    #: The consistency guard: the percentage of compared shadow reads whose copies agree
    #: must not fall below this (above 0, at most 100); None: no such guard.
    min_consistency: float | None = None
    #: The compared shadow reads (``ShadowSame + ShadowDifferent``) the consistency guard
    #: needs before it can judge.
    min_shadow_reads: int = 100

    @property
    def counters(self) -> tuple[str, ...]:
        """The counters a tick reads for this plan: :data:`COUNTERS`, and the shadow-read
        counters when it has the consistency guard."""
        if self.min_consistency is None:
            return COUNTERS
        return (*COUNTERS, *SHADOW_METRICS)

    def guard_words(self) -> str:
        """``"min consistency 99.9 % over 100 shadow reads"``; empty without the guard."""
        if self.min_consistency is None:
            return ""
        return (
            f"min consistency {_figure(self.min_consistency)} % "
            f"over {self.min_shadow_reads} shadow reads"
        )


def _figure(value: float) -> str:
    """A percentage as given (``99.9``, ``100``): no rounding to a neighbour."""
    return f"{value:.12g}"


@dataclass(frozen=True)
class RampState:
    """The ramp of one flag file, as kept in its ``metadata.ramp``."""

    id: str
    plan: Plan
    status: Status
    #: Index into ``plan.steps`` of the step the file is at; -1 = before the first step
    #: (``start_percent``).
    step: int
    #: The percentage before the ramp started (what ``abort`` and a rollback of the first
    #: step go back to).
    start_percent: int
    #: :func:`content_digest` of the flag content the ramp wrote or adopted: anything else
    #: is someone else's edit.
    expects: str
    started: datetime.datetime
    started_by: str
    #: Why the ramp is paused, aborted or done (the last action's trigger).
    reason: str | None = None

    @property
    def percent(self) -> int:
        return self.percent_at(self.step)

    @property
    def last_step(self) -> int:
        return len(self.plan.steps) - 1

    def percent_at(self, step: int) -> int:
        return self.plan.steps[step] if step >= 0 else self.start_percent

    def encode(self) -> str:
        """The ``metadata.ramp`` string."""
        data = times.as_json(self, own_fields=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, text: object) -> RampState:
        """``metadata.ramp`` -> the state; :class:`RampError` saying what is damaged."""
        try:
            data = json.loads(text) if isinstance(text, str) else None
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise RampError("metadata.ramp is not a JSON object in a string")
        try:
            plan = data["plan"]
            if not isinstance(plan, dict):
                raise RampError("plan is not an object")
            steps = _checked_steps([_int(s, "plan.steps", 1, 100) for s in _list(plan["steps"])])
            state = cls(
                id=_text(data["id"], "id"),
                plan=Plan(
                    phase=_text(plan["phase"], "plan.phase"),
                    steps=steps,
                    bake=_number(plan["bake"], "plan.bake", 0, MAX_BAKE),
                    alarms=tuple(_text(a, "plan.alarms") for a in _list(plan["alarms"])),
                    min_decisions=_int(plan["min_decisions"], "plan.min_decisions", 0, 10**12),
                    tolerance=_number(plan["tolerance"], "plan.tolerance", 0, 1000),
                    namespace=_text(plan["namespace"], "plan.namespace"),
                    # Absent from states written before the consistency guard: none.
                    min_consistency=_min_consistency(plan.get("min_consistency")),
                    min_shadow_reads=_int(
                        plan.get("min_shadow_reads", 100), "plan.min_shadow_reads", 1, 10**12
                    ),
                ),
                status=_choice(data["status"], "status", get_args(Status)),
                step=_int(data["step"], "step", -1, len(steps) - 1),
                start_percent=_int(data["start_percent"], "start_percent", 0, steps[0] - 1),
                expects=_text(data["expects"], "expects"),
                started=_time(data["started"]),
                started_by=_text(data["started_by"], "started_by"),
                reason=None if data.get("reason") is None else _text(data["reason"], "reason"),
            )
        except KeyError as err:
            raise RampError(f"the ramp state has no {err.args[0]!r}") from None
        return state

    def to_json(self, flag: FlagView | None = None) -> dict[str, Any]:
        """The state for ``--json`` output; with ``flag``, when the file was last written
        and, while the ramp runs on the file it wrote, when the step's bake ends."""
        out: dict[str, Any] = times.as_json(self, own_fields=True)
        out.update(percent=self.percent, steps_total=len(self.plan.steps))
        if flag is not None:
            out["file_written"] = times.iso(flag.modified)
            if self.status == "running" and flag.digest == self.expects:
                ends = flag.modified + datetime.timedelta(seconds=self.plan.bake)
                out["bake_ends"] = times.iso(ends)
        return out


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise RampError(f"not a list: {value!r}")
    return value


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RampError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RampError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise RampError(f"{name} must be from {low:g} to {high:g}, not {value!r}")
    return float(value)


def _min_consistency(value: object) -> float | None:
    if value is None:
        return None
    try:
        return check_min_consistency(value, "plan.min_consistency")
    except ValueError as err:
        raise RampError(str(err)) from None


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise RampError(f"{name} must be a string, not {value!r}")
    return value


def _choice(value: object, name: str, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise RampError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _time(value: object) -> datetime.datetime:
    moment = times.parse_iso(_text(value, "started"))
    if moment is None:
        raise RampError(f"started is not a time: {value!r}")
    return moment


@dataclass(frozen=True)
class FlagView:
    """What the flag file says now, as far as a ramp cares."""

    digest: str
    #: The composite share of the endpoints outside the allow-list (None: not canonical).
    percent: int | None
    version: int | None
    #: The file's last write on the store's clock: the current step's bake starts here.
    modified: datetime.datetime


def view_of(doc: Mapping[str, Any], modified: datetime.datetime) -> FlagView:
    """The flag document ``doc``, last written at ``modified``, as a ramp sees it."""
    return FlagView(content_digest(doc), percent_of(doc), edits.version_of(doc), modified)


def percent_of(doc: Mapping[str, Any]) -> int | None:
    """The composite share of the endpoints outside the allow-list (0 or 100 for a plain
    switch); None for custom targeting."""
    state = edits.read_state(doc)
    if state.canonical:
        return state.percent or 0
    if state.plain:
        return 100 if state.kind == "composite-everywhere" else 0
    return None


def state_of(doc: Mapping[str, Any]) -> RampState | None:
    """The ramp ``doc`` carries (``metadata.ramp``); None: none. :class:`RampError` when it
    is damaged."""
    metadata = doc.get("metadata")
    raw = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return None if raw is None else RampState.decode(raw)


@dataclass(frozen=True)
class Evidence:
    """What CloudWatch said about the current step's window."""

    window: Window
    alarms: Mapping[str, str | None] = field(default_factory=dict)
    #: ``{metric: {key_scheme: sum}}`` over ``window``.
    counters: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: The same counters over the span before the ramp started (legacy reference of late
    #: steps); None when not read.
    baseline: Mapping[str, Mapping[str, float]] | None = field(
        default=None, metadata={"omit_none": True}
    )
    baseline_window: Window | None = field(default=None, metadata={"omit_none": True})
    #: Why CloudWatch could not be read (then nothing else is known).
    error: str | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class Verdict:
    """``healthy``, ``hold`` (cannot judge: wait) or ``breach`` (roll back), and why."""

    health: Health
    reasons: tuple[str, ...] = ()


def _sum(counters: Mapping[str, Mapping[str, float]], metric: str, scheme: str | None) -> float:
    values = counters.get(metric, {})
    if scheme is None:
        return float(sum(values.values()))
    return float(values.get(scheme, 0.0))


def _ratio(failures: float, decisions: float) -> float:
    return failures / decisions if decisions else 0.0


def judge(evidence: Evidence, plan: Plan, *, composite: bool = True) -> Verdict:
    """The guards' verdict on ``evidence`` (see the module docstring); ``composite=False``
    at 0 %, where no composite traffic is expected (alarms and evaluation errors only)."""
    breaches: list[str] = []
    holds: list[str] = []
    for name, state in evidence.alarms.items():
        if state == "ALARM":
            breaches.append(f"alarm {name} is in ALARM")
        elif state is None:
            holds.append(f"alarm {name} does not exist")
        elif state != "OK":
            holds.append(f"alarm {name} is {state}")
    if evidence.error:
        # An alarm read before the failure still rolls back; nothing else can be judged.
        if breaches:
            return Verdict("breach", tuple(breaches))
        return Verdict("hold", (f"metrics unreadable: {evidence.error}",))
    counters = evidence.counters
    errors = _sum(counters, "FlagEvaluationErrors", None)
    if errors:
        breaches.append(f"{errors:g} flag evaluation error(s)")
    decisions = _sum(counters, "KeyDecisions", "composite")
    enough = decisions >= max(plan.min_decisions, 1)
    if composite and decisions < plan.min_decisions:
        holds.append(
            f"too little data: {decisions:g} composite decision(s), {plan.min_decisions} needed"
        )
    reference, where = _legacy_reference(evidence, plan)
    for metric in FAILURES:
        failed = _sum(counters, metric, "composite")
        if not failed or not enough:
            continue
        ratio = _ratio(failed, decisions)
        if reference is None:
            holds.append(f"{metric}: {failed:g} composite, and no legacy traffic to compare with")
            continue
        legacy = _ratio(
            _sum(reference, metric, "legacy"), _sum(reference, "KeyDecisions", "legacy")
        )
        if ratio > legacy * (1 + plan.tolerance):
            breaches.append(
                f"{metric} per decision: composite {ratio:.4g} > legacy {legacy:.4g}{where}"
                f" (tolerance {plan.tolerance:g})"
            )
    notes: list[str] = []
    if composite and plan.min_consistency is not None:
        health, said = _consistency(counters, plan.min_consistency, plan.min_shadow_reads)
        if health == "breach":
            breaches.append(said)
        elif health == "hold":
            holds.append(said)
        else:
            notes.append(said)
    if breaches:
        return Verdict("breach", tuple(breaches))
    if holds:
        return Verdict("hold", tuple(holds))
    if not composite:
        return Verdict("healthy", ("at 0 %: alarms OK, no flag evaluation errors",))
    return Verdict("healthy", (f"{decisions:g} composite decision(s), guards OK", *notes))


def _consistency(
    counters: Mapping[str, Mapping[str, float]], minimum: float, needed: int
) -> tuple[Health, str]:
    """The consistency guard on the window's shadow-read counters: ``hold`` with fewer than
    ``needed`` compared reads, ``breach`` below ``minimum`` percent, else ``healthy``."""
    shadow = ShadowCounts.of(counters)
    needed = max(needed, 1)
    if shadow.compared < needed:
        return "hold", f"too few shadow reads: {shadow.compared:g} compared, {needed} needed"
    figure = shadow.consistency
    assert figure is not None  # at least one compared read
    said = f"shadow read consistency {percent_text(figure, (minimum,))} %"
    counts = f"{shadow.same:g} same, {shadow.different:g} different of {shadow.compared:g} compared"
    if figure < minimum:
        return "breach", f"{said} < {_figure(minimum)} %: {counts}"
    return "healthy", f"{said} >= {_figure(minimum)} % ({counts})"


def _legacy_reference(
    evidence: Evidence, plan: Plan
) -> tuple[Mapping[str, Mapping[str, float]] | None, str]:
    """The counters legacy's ratios come from: this window while enough legacy traffic is
    left, else the span before the ramp."""
    needed = max(plan.min_decisions, 1)
    if _sum(evidence.counters, "KeyDecisions", "legacy") >= needed:
        return evidence.counters, ""
    baseline = evidence.baseline
    if baseline is not None and _sum(baseline, "KeyDecisions", "legacy") >= needed:
        return baseline, " (before the ramp)"
    return None, ""


@dataclass(frozen=True)
class Action:
    """What a command does: ``none`` writes nothing; the others write the flag file (its
    percentage and ``metadata.ramp``) once, with one audit record."""

    kind: ActionKind = field(metadata={"json": "action"})
    #: The step the file goes to (``advance``, ``rollback``), or the ramp's step.
    step: int
    percent: int
    trigger: str
    reasons: tuple[str, ...] = ()
    verdict: Verdict | None = None

    @property
    def writes(self) -> bool:
        return self.kind != "none"


def decide(
    state: RampState, flag: FlagView, verdict: Verdict | None, now: datetime.datetime
) -> Action:
    """At most one step for ``state`` (see the module docstring); ``verdict`` is required
    when the ramp is running and the file is as it wrote it."""
    here = Action("none", state.step, state.percent, "")
    if state.status != "running":
        reasons = (state.reason,) if state.reason else ()
        return replace(here, trigger=f"ramp is {state.status}", reasons=reasons)
    if flag.digest != state.expects:
        return replace(
            here,
            kind="pause",
            trigger="flag file changed outside the ramp",
            reasons=(
                f"the file is at {shown_percent(flag.percent)}, the ramp wrote {state.percent} %",
            ),
        )
    if verdict is None:
        raise RampError("decide needs the guards' verdict for a running ramp")
    if verdict.health == "breach":
        if state.step < 0:  # nothing below the start: stop here
            return Action("pause", -1, state.percent, "guard breach", verdict.reasons, verdict)
        back = state.step - 1
        return Action(
            "rollback", back, state.percent_at(back), "guard breach", verdict.reasons, verdict
        )
    left = (flag.modified - now).total_seconds() + state.plan.bake
    if left > 0:
        trigger = f"baking, {times.format_duration(left)} left"
        return replace(here, trigger=trigger, reasons=verdict.reasons, verdict=verdict)
    if verdict.health == "hold":
        return replace(here, trigger="holding", reasons=verdict.reasons, verdict=verdict)
    if state.step >= state.last_step:
        return Action(
            "done", state.step, state.percent, "last step baked healthy", verdict.reasons, verdict
        )
    nxt = state.step + 1
    return Action(
        "advance", nxt, state.plan.steps[nxt], "bake done, guards healthy", verdict.reasons, verdict
    )


def next_tick(state: RampState, flag: FlagView, now: datetime.datetime) -> str:
    """What the next tick will do, in words (``ramp status``)."""
    if state.status == "paused":
        return "nothing while paused (`ramp resume` bakes this step again, then goes on)"
    if state.status != "running":
        return f"nothing: the ramp is {state.status} (`ramp start` begins a new one)"
    if flag.digest != state.expects:
        return (
            f"pause the ramp: the flag file changed outside it (now {shown_percent(flag.percent)}, "
            f"the ramp wrote {state.percent} %)"
        )
    if state.step >= state.last_step:
        then = "the ramp is done"
    else:
        then = step_label(state, state.step + 1)
    guards = "no alarm in ALARM" if state.percent == 0 else "the guards healthy"
    what = f"{then} with {guards}; one step back on a breach; hold when it cannot judge"
    left = (flag.modified - now).total_seconds() + state.plan.bake
    if left > 0:
        ends = flag.modified + datetime.timedelta(seconds=state.plan.bake)
        return f"bake until {times.iso(ends)} ({times.format_duration(left)} left), then {what}"
    return f"bake done: {what}"


def shown_percent(percent: int | None) -> str:
    """``"5 %"``, or ``"custom targeting"`` for a file with no percentage."""
    return "custom targeting" if percent is None else f"{percent} %"


def step_label(state: RampState, step: int | None = None) -> str:
    """``"step 2/5 (5 %)"``, or ``"the start (0 %, before step 1/5)"``: it reads after
    "at", "to" and "resumed at" alike."""
    index = state.step if step is None else step
    if index < 0:
        return f"the start ({state.start_percent} %, before step 1/{len(state.plan.steps)})"
    return f"step {index + 1}/{len(state.plan.steps)} ({state.plan.steps[index]} %)"


def realign(steps: tuple[int, ...], percent: int | None) -> int:
    """The index of the highest step at or below ``percent`` (-1: below the first)."""
    index = -1
    for i, value in enumerate(steps):
        if percent is not None and value <= percent:
            index = i
    return index
