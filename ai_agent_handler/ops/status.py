"""Where the rollout stands, per flag file, as pure decisions: :class:`FileStatus` holds one
file as read (:mod:`.status_io` reads it) and says it in words and as JSON.

One file's status is its rule (all, none, allow-list, percentage: :class:`.edits.RolloutState`),
its version, the ramp it carries if any (state, step, bake left, what the next tick will do),
its last change (who, when, what, why: the newest audit record), and, for a live file that
cannot be used, what handlers serve meanwhile (their last good flags, at a cold start the
shipped file of its phase: ``fallback``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import times
from .edits import RolloutState
from .history import Record
from .ramp import FlagView, RampState, next_tick, shown_percent, step_label


@dataclass(frozen=True)
class FileStatus:
    """One flag file as ``status`` read it."""

    phase: str | None
    source: str
    #: ``file`` (``--file`` or a named live file), ``checkout`` or ``installed``.
    origin: str
    #: Where the live file was named (``ai-agent-rollout.toml``'s path, ``$ROLLOUT_LIVE_X``).
    named_by: str | None = None
    version: int | None = None
    state: RolloutState | None = None
    #: Why the file cannot be used (then ``state`` is None).
    error: str | None = None
    problems: tuple[str, ...] = ()
    #: What kind of failure ``error`` is: ``missing`` (no such file), ``invalid`` (not a
    #: valid flag file), ``config`` (a malformed location) or ``unreadable`` (permissions,
    #: AWS, a folder that is not there).
    error_kind: str | None = None
    #: The command that creates a missing live file.
    hint: str | None = None
    #: What a cold start serves while the live file is unusable (``status --json``'s shape).
    fallback: Mapping[str, Any] | None = None
    #: The file as the ramp sees it (its digest, percentage, last write on the store's clock).
    flag: FlagView | None = None
    ramp: RampState | None = None
    #: Why ``metadata.ramp`` cannot be read.
    ramp_error: str | None = None
    #: The flag document as read (None: unusable).
    doc: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    #: The newest audit record (None: none, or not readable: ``last_error``).
    last: Record | None = None
    last_error: str | None = None

    @property
    def valid(self) -> bool:
        return self.state is not None

    def to_json(self, now: datetime.datetime, *, full: bool = True) -> dict[str, Any]:
        """``status --json``'s row for this file (``full`` False: ``validate``'s, without
        the ramp and the last change)."""
        row: dict[str, Any] = {
            "phase": self.phase,
            "source": self.source,
            "origin": self.origin,
            "valid": self.valid,
            "version": self.version,
            "state": self.state.to_json() if self.state else None,
            "error": self.error,
            "problems": list(self.problems),
            "fallback": dict(self.fallback) if self.fallback is not None else None,
        }
        if full:
            row.update(
                named_by=self.named_by,
                ramp=self._ramp_json(now),
                ramp_error=self.ramp_error,
                last_change=self._last_json(now),
                last_change_error=self.last_error,
            )
        if self.hint is not None:
            row["hint"] = self.hint
        return row

    def _ramp_json(self, now: datetime.datetime) -> dict[str, Any] | None:
        if self.ramp is None:
            return None
        out = self.ramp.to_json(self.flag)
        if self.flag is not None:
            out["next_tick"] = next_tick(self.ramp, self.flag, now)
            out["bake_left"] = bake_left(self.ramp, self.flag, now)
        return out

    def _last_json(self, now: datetime.datetime) -> dict[str, Any] | None:
        last = self.last
        if last is None:
            return None
        return {
            "time": times.iso(last.time, ms=True),
            "seconds_ago": max(0.0, round((now - last.time).total_seconds(), 3)),
            "actor": last.actor,
            "command": last.command,
            "trigger": last.trigger,
            "reason": last.reason,
            "version_after": last.version_after,
        }

    def lines(self, now: datetime.datetime, width: int) -> list[str]:
        """``status``'s lines for this file, the first headed by the phase padded to
        ``width``, the others indented under it."""
        label = str(self.phase or "?").ljust(width)
        pad = " " * width
        if not self.valid:
            lines = [f"{label}  UNREADABLE OR INVALID: {self.error}"]
            if self.hint:
                lines.append(f"{pad}  to create it from the shipped file: {self.hint}")
            if self.fallback is not None:
                fb = self.fallback
                lines.append(
                    f"{pad}  handlers reading it keep their last good flags; a cold start "
                    f"serves the shipped {fb['phase']} file (decision log: flag_source = "
                    f"fallback), here version {fb['version']}: {fb['description']}"
                )
        else:
            assert self.state is not None
            lines = [f"{label}  {self.state.describe()}"]
            named = f"; named by {self.named_by}" if self.named_by else ""
            note = " (shipped with the installed package, read-only)"
            note = note if self.origin == "installed" else ""
            lines.append(f"{pad}  version {self.version}, {self.source}{note}{named}")
        lines.extend(f"{pad}  {line}" for line in self.ramp_lines(now))
        last = self.last_change(now)
        if last is not None:
            lines.append(f"{pad}  last change{' ' if self.last else ': '}{last}")
        return lines

    def ramp_lines(self, now: datetime.datetime) -> list[str]:
        """The ramp in words (state, step, next tick); empty without one."""
        if self.ramp_error:
            return [f"ramp: DAMAGED: {self.ramp_error}"]
        state = self.ramp
        if state is None:
            return []
        head = f"ramp {state.id}: {state.status.upper()}, {step_label(state)}"
        if state.reason and state.status != "running":
            head += f" ({state.reason})"
        if self.flag is None:
            return [head]
        lines = [head]
        if self.flag.digest != state.expects:
            lines.append(
                f"  the file changed outside the ramp: now {shown_percent(self.flag.percent)}"
            )
        lines.append(f"  next tick: {next_tick(state, self.flag, now)}")
        return lines

    def last_change(self, now: datetime.datetime) -> str | None:
        """The last change in words (when, who, what, why), or why it is not known; None
        for an unusable file without audit records."""
        if self.last_error:
            return f"cannot read the audit trail: {self.last_error}"
        last = self.last
        if last is None:
            return None if not self.valid else "no audit record"
        seconds = (now - last.time).total_seconds()
        ago = f"{times.ago(seconds)} ago"
        if seconds < -60:
            ago = f"{times.ago(-seconds)} in the future: a clock is off"
        said = f"{times.iso(last.time)} ({ago}) by {last.actor} ({last.trigger}): {last.command}"
        return f"{said}; why: {last.reason}" if last.reason else said


def bake_left(state: RampState, flag: FlagView, now: datetime.datetime) -> float | None:
    """Seconds until the current step's bake ends, 0 once baked; None when the ramp is not
    running on the file it wrote."""
    if state.status != "running" or flag.digest != state.expects:
        return None
    return max(0.0, (flag.modified - now).total_seconds() + state.plan.bake)
