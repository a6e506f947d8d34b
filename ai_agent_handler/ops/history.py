"""The audit trail read back, as pure decisions: what a record says, whom it concerns, which
records ``history`` shows and in which words (no I/O; :mod:`.history_io` reads the records).

An audit record (:func:`.audit.record`) is a JSON object; :func:`from_raw` turns one into a
:class:`Record`, or into a :class:`Damaged` saying where it was and why it cannot be read (a
line cut off by a crash, an object that is not JSON, a record without a time or command).
Damaged records are counted and shown, never dropped silently and never a traceback.

A record's **trigger** (:func:`trigger`) is what made the change: ``operator`` (a person's
command, including a ramp lever such as ``ramp pause``), ``ramp`` (a tick's step, hold
ending or done), or ``alarm`` (a tick that rolled back or paused because a guard breached:
an alarm in ``ALARM``, evaluation errors, composite failing more than legacy).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import times

Trigger = Literal["operator", "ramp", "alarm"]
TRIGGERS: tuple[Trigger, ...] = ("operator", "ramp", "alarm")
#: The ramp's actions only an operator takes; a pause is an operator's when its trigger
#: says "by operator" (a tick pauses too, on an edit made outside the ramp).
OPERATOR_RAMP_ACTIONS = frozenset({"start", "resume", "abort", "promote"})
#: The composite/legacy answer of a rollout state for one endpoint; None: cannot tell.
Key = Literal["composite", "legacy"]


@dataclass(frozen=True)
class Record:
    """One audit record, as ``history`` shows it."""

    time: datetime.datetime
    actor: str
    command: str
    #: Where it was read: ``<log>:<line>`` or ``s3://bucket/<key>.audit/<name>``.
    where: str
    phase: str | None = None
    file: str | None = None
    reason: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    #: The rollout state before and after (``RolloutState.to_json()``), as recorded.
    before: Mapping[str, Any] | None = field(default=None, repr=False)
    after: Mapping[str, Any] | None = field(default=None, repr=False)
    #: A ramp action's details: ``action``, ``trigger``, ``reasons``, ``from``, ``to``,
    #: ``verdict``, ``evidence`` (None: not a ramp action).
    ramp: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def trigger(self) -> Trigger:
        return trigger(self)

    def to_json(self) -> dict[str, Any]:
        """The record for ``history --json``: the fields above, the trigger, and the ramp's
        evidence as recorded."""
        return {
            "time": times.iso(self.time, ms=True),
            "actor": self.actor,
            "command": self.command,
            "trigger": self.trigger,
            "phase": self.phase,
            "file": self.file,
            "reason": self.reason,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "before": dict(self.before) if self.before is not None else None,
            "after": dict(self.after) if self.after is not None else None,
            "ramp": dict(self.ramp) if self.ramp is not None else None,
            "where": self.where,
        }


@dataclass(frozen=True)
class Damaged:
    """An audit record that cannot be read: where it is and why."""

    where: str
    why: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "why": self.why}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) else None


def from_raw(raw: object, where: str) -> Record | Damaged:
    """The record ``raw`` (a decoded JSON value) read at ``where``, or why it is damaged."""
    if not isinstance(raw, dict):
        return Damaged(where, f"not a JSON object but {type(raw).__name__}")
    moment = times.parse_iso(raw.get("time"))
    if moment is None:
        return Damaged(where, f"no valid time: {raw.get('time')!r}"[:200])
    command = _text(raw.get("command"))
    if not command:
        return Damaged(where, "no command")
    return Record(
        time=moment,
        actor=_text(raw.get("actor")) or "?",
        command=command,
        where=where,
        phase=_text(raw.get("phase")),
        file=_text(raw.get("file")),
        reason=_text(raw.get("reason")),
        version_before=_int(raw.get("version_before")),
        version_after=_int(raw.get("version_after")),
        before=_object(raw.get("before")),
        after=_object(raw.get("after")),
        ramp=_object(raw.get("ramp")),
    )


def from_line(line: bytes, where: str) -> Record | Damaged:
    """One line of a JSON-lines log (or one record object's body)."""
    try:
        raw = json.loads(line)
    except ValueError as err:
        return Damaged(where, f"not JSON ({err.__class__.__name__}: {err})"[:200])
    except RecursionError:
        return Damaged(where, "nested too deeply")
    return from_raw(raw, where)


def trigger(record: Record) -> Trigger:
    """``operator``, ``ramp`` or ``alarm`` (see the module docstring)."""
    ramp = record.ramp
    if ramp is None:
        return "operator"
    if _breach(ramp):
        return "alarm"
    action, said = ramp.get("action"), ramp.get("trigger")
    by_operator = isinstance(said, str) and said.endswith("by operator")
    if action in OPERATOR_RAMP_ACTIONS or by_operator:
        return "operator"
    return "ramp"


def _breach(ramp: Mapping[str, Any]) -> bool:
    verdict = _object(ramp.get("verdict"))
    return ramp.get("trigger") == "guard breach" or (
        verdict is not None and verdict.get("health") == "breach"
    )


def is_rollback(record: Record) -> bool:
    """A move back: ``rollback``, a ramp's rollback or abort, a lower percentage, or a
    rollout that left fewer endpoints composite."""
    if record.command == "rollback":
        return True
    ramp = record.ramp
    if ramp is not None and ramp.get("action") in ("rollback", "abort"):
        return True
    before, after = record.before, record.after
    if before is None or after is None:
        return False
    return _share(after) < _share(before)


def _share(state: Mapping[str, Any]) -> float:
    """A rough order of "how composite" a state is (for :func:`is_rollback`)."""
    kind = state.get("kind")
    if kind == "composite-everywhere":
        return 101.0
    listed = len(state.get("allowed") or ())
    percent = _int(state.get("percent")) or 0
    return percent + listed / 1e6


def key_for(state: Mapping[str, Any] | None, endpoint: str, threshold: int | None) -> Key | None:
    """The key a rollout state (as recorded; None: no file) gives ``endpoint``; ``threshold``
    is the smallest percentage at which its stable hash turns composite (None: unknown).
    None: cannot tell."""
    if state is None:  # no file yet: handlers use the code default, legacy
        return "legacy"
    kind = state.get("kind")
    if kind in ("legacy-everywhere", "disabled", "missing"):
        return "legacy"
    if kind == "composite-everywhere":
        return "composite"
    if kind not in ("allow-list", "percent", "allow-list-and-percent"):
        return None
    allowed = state.get("allowed") or ()
    if endpoint in allowed:
        return "composite"
    percent = _int(state.get("percent")) or 0
    if percent <= 0:
        return "legacy"
    if threshold is None:
        return None
    return "composite" if percent >= threshold else "legacy"


def concerns(record: Record, endpoint: str, threshold: int | None) -> bool:
    """Whether ``record`` changed (or may have changed) the key of ``endpoint``: it names
    the endpoint, or the endpoint's key differs before and after, or cannot be told."""
    if endpoint in record.command.split():
        return True
    before = key_for(record.before, endpoint, threshold)
    after = key_for(record.after, endpoint, threshold)
    if before is None or after is None:
        return record.before != record.after
    return before != after


@dataclass(frozen=True)
class Filters:
    """What ``history`` keeps: records at or after ``since``, by ``actor``, concerning
    ``endpoint`` (with its ``threshold``), at most ``limit`` (newest)."""

    since: datetime.datetime | None = None
    actor: str | None = None
    endpoint: str | None = None
    threshold: int | None = None
    limit: int | None = None

    def keeps(self, record: Record) -> bool:
        if self.since is not None and record.time < self.since:
            return False
        if self.actor is not None and record.actor != self.actor:
            return False
        return self.endpoint is None or concerns(record, self.endpoint, self.threshold)


def select(records: Iterable[Record], filters: Filters) -> list[Record]:
    """The records ``filters`` keeps, newest first (by time, then version), at most its
    ``limit``."""
    kept = newest_first(record for record in records if filters.keeps(record))
    return kept if filters.limit is None else kept[: filters.limit]


def newest_first(records: Iterable[Record]) -> list[Record]:
    """``records`` newest first: by time, then by the version written."""
    return sorted(records, key=lambda r: (r.time, r.version_after or 0), reverse=True)


def versions(record: Record) -> str:
    """``"7 -> 8"``, ``"8"`` (created), ``"?"``."""
    before, after = record.version_before, record.version_after
    if before is None and after is None:
        return "?"
    if before is None:
        return str(after)
    return f"{before} -> {after if after is not None else '?'}"


def describe(record: Record) -> list[str]:
    """The lines ``history`` prints for one record: the headline, then the reason, the rule
    after the change, and a ramp action's evidence."""
    phase = record.phase or "?"
    head = (
        f"{times.iso(record.time)}  {phase:<10}  {record.trigger:<8}  {record.actor}: "
        f"{record.command}  (version {versions(record)})"
    )
    lines = [head]
    if record.reason:
        lines.append(f"    why: {record.reason}")
    after = record.after.get("description") if record.after else None
    if isinstance(after, str):
        lines.append(f"    now: {after}")
    lines.extend(f"    {line}" for line in evidence(record))
    return lines


def evidence(record: Record) -> list[str]:
    """A ramp action's trigger, steps and the guards' evidence, in words (empty: none)."""
    ramp = record.ramp
    if ramp is None:
        return []
    said = []
    step_from, step_to = _text(ramp.get("from")), _text(ramp.get("to"))
    action = _text(ramp.get("action")) or "?"
    moved = ""
    if step_from and step_to and step_from != step_to:
        moved = f" from {step_from} to {step_to}"
    said.append(f"ramp {action}{moved}: {_text(ramp.get('trigger')) or '?'}")
    said.extend(f"  {reason}" for reason in ramp.get("reasons") or () if isinstance(reason, str))
    found = _object(ramp.get("evidence"))
    if found is not None:
        said.extend(f"  {line}" for line in _evidence_lines(found))
    return said


def _evidence_lines(found: Mapping[str, Any]) -> list[str]:
    lines = []
    window = _object(found.get("window"))
    if window is not None:
        lines.append(f"window {window.get('start')} to {window.get('end')}")
    alarms = _object(found.get("alarms"))
    if alarms:
        lines.append("alarms: " + ", ".join(f"{name} {state}" for name, state in alarms.items()))
    counters = _object(found.get("counters"))
    if counters:
        shown = []
        for metric, sums in sorted(counters.items()):
            if isinstance(sums, dict):
                parts = "/".join(
                    f"{scheme} {value:g}"
                    for scheme, value in sorted(sums.items())
                    if isinstance(value, (int, float))
                )
                shown.append(f"{metric} {parts}")
        lines.append("counters: " + "; ".join(shown))
    if isinstance(found.get("error"), str):
        lines.append(f"metrics unreadable: {found['error']}")
    return lines


def summary(shown: Sequence[Record], damaged: Sequence[Damaged], total: int) -> str:
    """The last line of ``history``: how many records were shown, read and damaged."""
    line = f"{len(shown)} of {total} record(s) shown"
    if damaged:
        line += f"; {len(damaged)} damaged record(s) could not be read (listed above)"
    return line
