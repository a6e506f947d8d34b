"""A guarded ramp of the percentage, as pure decisions (no I/O).

``ai-agent-rollout ramp start --steps 1,5,25,50,100 --bake 2h --alarm NAME`` fixes a
:class:`Plan`; every ``tick`` then looks at the flag file, the plan's state and the
evidence read from CloudWatch, and :func:`decide` says what to do -- at most one step:

1. A ramp that is not running does nothing.
2. A flag file whose version is not the one the ramp wrote was changed by someone else: the
   ramp pauses (it never fights an operator).
3. A guard breach -- a named alarm in ``ALARM``, any flag evaluation error, composite-key
   failures worse than legacy's -- rolls back to the previous step and pauses, whether the
   step is still baking or not. The stable hash of the percentage rule moves back exactly
   the endpoints that step moved.
4. While the step bakes, nothing happens.
5. After the bake, evidence that cannot judge (too few composite decisions, an alarm in
   ``INSUFFICIENT_DATA`` or missing, CloudWatch unreadable) holds: nothing is written and
   the next tick looks again. It never rolls back.
6. Healthy after the bake: the next step; after the last step's bake, the ramp is done.

:func:`judge` turns :class:`Evidence` into a :class:`Verdict`. Ratios are computed here from
plain counter sums: ``failures / KeyDecisions`` per key scheme, for ``LambdaInvokeErrors``
and ``StreamChunksFailed``. Composite is worse than legacy when its ratio exceeds legacy's
by more than ``tolerance`` (relative); with no legacy failures at all, any composite failure
is worse. The legacy reference is the current window's legacy traffic, or -- once too little
of it is left (late steps) -- the same span before the ramp started.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..exceptions import RampError
from .cloudwatch import Window

__all__ = [
    "COUNTERS",
    "FAILURES",
    "LEASE_SECONDS",
    "Action",
    "ActionKind",
    "Evidence",
    "FlagView",
    "Health",
    "Pending",
    "Plan",
    "RampError",
    "RampState",
    "Status",
    "Verdict",
    "decide",
    "flag_moved",
    "format_duration",
    "judge",
    "needs_evidence",
    "parse_duration",
    "parse_steps",
    "realign",
    "resolve_pending",
    "step_label",
]

#: The library's counters a tick reads for the phase (sums per key scheme).
COUNTERS = ("KeyDecisions", "FlagEvaluationErrors", "LambdaInvokeErrors", "StreamChunksFailed")
#: Failures compared as ratios to the key decisions of the same scheme.
FAILURES = ("LambdaInvokeErrors", "StreamChunksFailed")

#: A step another controller announced (state written, flag not yet) is left to it for this
#: long; after that it is taken as never made and decided again.
LEASE_SECONDS = 120.0

Status = Literal["running", "paused", "done", "aborted"]
Health = Literal["healthy", "hold", "breach"]
ActionKind = Literal[
    "none", "start", "advance", "rollback", "pause", "resume", "abort", "promote", "done"
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> float:
    """``"0s"``, ``"30m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` -> seconds."""
    cleaned = text.strip().lower()
    if not cleaned or _DURATION.sub("", cleaned):
        raise RampError(
            f"not a duration: {text!r} (expected a number and a unit s, m, h or d: 30m, 2h, 1d)"
        )
    return float(sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(cleaned)))


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; ``0`` -> ``"0s"``."""
    left = max(0, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def parse_steps(text: str) -> tuple[int, ...]:
    """``"1,5,25,50,100"`` -> ``(1, 5, 25, 50, 100)``: integers 1..100, strictly rising."""
    steps: list[int] = []
    for part in text.split(","):
        item = part.strip().rstrip("%").strip()
        try:
            value = int(item)
        except ValueError:
            raise RampError(f"not a percentage step: {part.strip()!r} in {text!r}") from None
        if not 1 <= value <= 100:
            raise RampError(f"steps are percentages from 1 to 100, got {value} in {text!r}")
        if steps and value <= steps[-1]:
            raise RampError(f"steps must rise: {value} after {steps[-1]} in {text!r}")
        steps.append(value)
    return tuple(steps)


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _time(value: object) -> datetime.datetime:
    if not isinstance(value, str):
        raise RampError(f"not a time: {value!r}")
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


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

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "steps": list(self.steps),
            "bake_seconds": self.bake,
            "bake": format_duration(self.bake),
            "alarms": list(self.alarms),
            "min_decisions": self.min_decisions,
            "tolerance": self.tolerance,
            "namespace": self.namespace,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            phase=str(data["phase"]),
            steps=tuple(int(s) for s in data["steps"]),
            bake=float(data["bake_seconds"]),
            alarms=tuple(str(a) for a in data.get("alarms", ())),
            min_decisions=int(data.get("min_decisions", 100)),
            tolerance=float(data.get("tolerance", 0.25)),
            namespace=str(data.get("namespace", "ai_agent_handler")),
        )


@dataclass(frozen=True)
class Pending:
    """A step announced in the state before the flag file is written (crash recovery)."""

    kind: ActionKind
    step: int
    percent: int
    from_version: int
    at: datetime.datetime
    by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "step": self.step,
            "percent": self.percent,
            "from_version": self.from_version,
            "at": _iso(self.at),
            "by": self.by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pending:
        return cls(
            kind=data["kind"],
            step=int(data["step"]),
            percent=int(data["percent"]),
            from_version=int(data["from_version"]),
            at=_time(data["at"]),
            by=str(data.get("by", "")),
        )


@dataclass(frozen=True)
class RampState:
    """The ramp of one flag file, as kept beside it (``<file>.ramp.json``)."""

    id: str
    source: str
    plan: Plan
    status: Status
    #: Index into ``plan.steps`` of the step the file is at; -1 = none (``start_percent``).
    step: int
    #: The percentage before the ramp started (what ``abort`` and a rollback of the first
    #: step go back to).
    start_percent: int
    #: When the current step was written: its bake and its evidence window start here.
    step_started: datetime.datetime
    #: ``metadata.version`` the ramp last wrote or adopted: any other version is a hand edit.
    flag_version: int
    started: datetime.datetime
    started_by: str
    updated: datetime.datetime
    #: Why the ramp is paused, aborted or done (the last action's trigger).
    reason: str | None = None
    pending: Pending | None = None
    #: Bumped by every write of the state.
    revision: int = 1

    @property
    def percent(self) -> int:
        return self.plan.steps[self.step] if self.step >= 0 else self.start_percent

    @property
    def last_step(self) -> int:
        return len(self.plan.steps) - 1

    def bake_ends(self) -> datetime.datetime:
        return self.step_started + datetime.timedelta(seconds=self.plan.bake)

    def to_json(self) -> dict[str, Any]:
        return {
            "ramp": self.id,
            "file": self.source,
            "plan": self.plan.to_json(),
            "status": self.status,
            "step": self.step,
            "steps_total": len(self.plan.steps),
            "percent": self.percent,
            "start_percent": self.start_percent,
            "step_started": _iso(self.step_started),
            "bake_ends": _iso(self.bake_ends()),
            "flag_version": self.flag_version,
            "started": _iso(self.started),
            "started_by": self.started_by,
            "updated": _iso(self.updated),
            "reason": self.reason,
            "pending": self.pending.to_json() if self.pending else None,
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RampState:
        try:
            pending = data.get("pending")
            return cls(
                id=str(data["ramp"]),
                source=str(data["file"]),
                plan=Plan.from_json(data["plan"]),
                status=data["status"],
                step=int(data["step"]),
                start_percent=int(data["start_percent"]),
                step_started=_time(data["step_started"]),
                flag_version=int(data["flag_version"]),
                started=_time(data["started"]),
                started_by=str(data["started_by"]),
                updated=_time(data["updated"]),
                reason=data.get("reason"),
                pending=Pending.from_json(pending) if pending else None,
                revision=int(data.get("revision", 1)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise RampError(f"the ramp state is not readable: {err!r}") from err


@dataclass(frozen=True)
class FlagView:
    """What the flag file says now, as far as a ramp cares."""

    version: int | None
    #: The composite share of the endpoints outside the allow-list (None: not canonical).
    percent: int | None


@dataclass(frozen=True)
class Evidence:
    """What CloudWatch said about the current step's window."""

    window: Window
    alarms: Mapping[str, str | None] = field(default_factory=dict)
    #: ``{metric: {key_scheme: sum}}`` over ``window``.
    counters: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: The same counters over the span before the ramp started (legacy reference of late
    #: steps); None when not read.
    baseline: Mapping[str, Mapping[str, float]] | None = None
    baseline_window: Window | None = None
    #: Why CloudWatch could not be read (then nothing else is known).
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "window": self.window.to_json(),
            "alarms": dict(self.alarms),
            "counters": {m: dict(v) for m, v in self.counters.items()},
        }
        if self.baseline is not None and self.baseline_window is not None:
            out["baseline"] = {m: dict(v) for m, v in self.baseline.items()}
            out["baseline_window"] = self.baseline_window.to_json()
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Verdict:
    """``healthy``, ``hold`` (cannot judge: wait) or ``breach`` (roll back), and why."""

    health: Health
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"health": self.health, "reasons": list(self.reasons)}


def _sum(counters: Mapping[str, Mapping[str, float]], metric: str, scheme: str | None) -> float:
    values = counters.get(metric, {})
    if scheme is None:
        return float(sum(values.values()))
    return float(values.get(scheme, 0.0))


def _ratio(failures: float, decisions: float) -> float:
    return failures / decisions if decisions else 0.0


def judge(evidence: Evidence, plan: Plan) -> Verdict:
    """The guards' verdict on ``evidence`` (see the module docstring)."""
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
    if decisions < plan.min_decisions:
        holds.append(
            f"too little data: {decisions:g} composite decision(s), {plan.min_decisions} needed"
        )
    reference, where = _legacy_reference(evidence, plan)
    for metric in FAILURES:
        failed = _sum(counters, metric, "composite")
        if not failed or not enough:
            continue
        composite = _ratio(failed, decisions)
        if reference is None:
            holds.append(f"{metric}: {failed:g} composite, and no legacy traffic to compare with")
            continue
        legacy = _ratio(
            _sum(reference, metric, "legacy"), _sum(reference, "KeyDecisions", "legacy")
        )
        if composite > legacy * (1 + plan.tolerance):
            breaches.append(
                f"{metric} per decision: composite {composite:.4g} > legacy {legacy:.4g}{where}"
                f" (tolerance {plan.tolerance:g})"
            )
    if breaches:
        return Verdict("breach", tuple(breaches))
    if holds:
        return Verdict("hold", tuple(holds))
    return Verdict("healthy", (f"{decisions:g} composite decision(s), guards OK",))


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
    """What a tick does: ``none`` writes nothing; the others write the state (and the flag
    file for ``advance``/``rollback``) with one audit record."""

    kind: ActionKind
    #: The step the file goes to (``advance``, ``rollback``), or the ramp's step.
    step: int
    percent: int
    trigger: str
    reasons: tuple[str, ...] = ()
    verdict: Verdict | None = None

    @property
    def writes(self) -> bool:
        return self.kind != "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.kind,
            "step": self.step,
            "percent": self.percent,
            "trigger": self.trigger,
            "reasons": list(self.reasons),
            "verdict": self.verdict.to_json() if self.verdict else None,
        }


def flag_moved(state: RampState, flag: FlagView) -> bool:
    """True when the flag file is not at the version the ramp last wrote or adopted."""
    return flag.version != state.flag_version


def needs_evidence(state: RampState, flag: FlagView) -> bool:
    """Whether :func:`decide` will look at the guards (so the caller reads CloudWatch)."""
    return state.status == "running" and state.pending is None and not flag_moved(state, flag)


def decide(
    state: RampState, flag: FlagView, verdict: Verdict | None, now: datetime.datetime
) -> Action:
    """At most one step for ``state`` (see the module docstring); ``verdict`` is required
    when :func:`needs_evidence` says so. A pending step is resolved by the caller first."""
    here = Action("none", state.step, state.percent, "")
    if state.status != "running":
        return replace(here, trigger=f"ramp is {state.status}", reasons=_why(state))
    if flag_moved(state, flag):
        shown = "unreadable" if flag.version is None else str(flag.version)
        return replace(
            here,
            kind="pause",
            trigger="flag file changed outside the ramp",
            reasons=(f"version {state.flag_version} -> {shown}",),
        )
    if verdict is None:
        raise RampError("decide needs the guards' verdict for a running ramp")
    if verdict.health == "breach":
        back = state.step - 1
        percent = state.plan.steps[back] if back >= 0 else state.start_percent
        return Action("rollback", back, percent, "guard breach", verdict.reasons, verdict)
    baking = now < state.bake_ends()
    if baking:
        left = format_duration((state.bake_ends() - now).total_seconds())
        return replace(
            here, trigger=f"baking, {left} left", reasons=verdict.reasons, verdict=verdict
        )
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


def _why(state: RampState) -> tuple[str, ...]:
    return (state.reason,) if state.reason else ()


def resolve_pending(
    state: RampState, flag: FlagView, now: datetime.datetime
) -> tuple[Literal["wait", "adopt", "drop", "moved"], str]:
    """What became of a step another controller announced: ``wait`` (its lease runs),
    ``adopt`` (the flag file shows it written: finish it), ``drop`` (never written, lease
    over: decide again) or ``moved`` (someone else changed the file)."""
    pending = state.pending
    assert pending is not None
    if flag.version == pending.from_version:
        age = (now - pending.at).total_seconds()
        if age < LEASE_SECONDS:
            return "wait", f"{pending.by} is applying step {pending.step + 1} ({pending.percent} %)"
        return "drop", f"step announced by {pending.by} {age:.0f} s ago was never written"
    if flag.percent == pending.percent:
        return "adopt", f"step {pending.step + 1} ({pending.percent} %) was written by {pending.by}"
    return "moved", "flag file changed outside the ramp"


def step_label(state: RampState, step: int | None = None) -> str:
    """``"step 2/5 (5 %)"``, or ``"before the first step (0 %)"``."""
    index = state.step if step is None else step
    if index < 0:
        return f"before the first step ({state.start_percent} %)"
    return f"step {index + 1}/{len(state.plan.steps)} ({state.plan.steps[index]} %)"


def realign(steps: Sequence[int], percent: int | None) -> int:
    """The index of the highest step at or below ``percent`` (-1: below the first)."""
    index = -1
    for i, value in enumerate(steps):
        if percent is not None and value <= percent:
            index = i
    return index
