"""The guarded ramp's I/O: the flag file that carries it, the evidence, the one write.

The ramp's state is ``metadata.ramp`` of the flag file it steers (:mod:`.ramp`). Every
action -- start, advance, rollback, pause, resume, abort, promote, done -- is one
:func:`~.edits_io.commit` of that file, conditional on the file being exactly what the decision
was taken on (the ETag on S3; under the file's lock, the same bytes, locally): the new
percentage and the new state land together, with one audit record naming the trigger, the
guards' verdict and the evidence, or nothing lands. So:

* Controllers racing on one tick: the first write wins, the others find the file changed
  and write nothing. Exactly one step, whatever the interleaving; nothing to adopt after a
  crash (a controller that dies before its write did nothing).
* ``pause``, ``abort``, an operator's edit landing while a tick reads CloudWatch: the
  tick's write loses. No lock is held while CloudWatch is read, and the operator's levers
  retry their own write when a tick got in first, so they always get through.
* The bake of a step counts from the file's last write on the store's clock (mtime,
  ``LastModified``). A controller whose clock disagrees with the store's by more than
  :data:`MAX_CLOCK_SKEW` (behind the file's last write; or S3's ``Date`` header) decides
  nothing.

CloudWatch is read with :data:`~ai_agent_handler._aws.METRICS_READ_CONFIG` and within
:data:`METRICS_DEADLINE` seconds in all; a read that fails or runs out holds the ramp (an
alarm already read in ``ALARM`` still rolls back).
"""

from __future__ import annotations

import copy
import datetime
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import _aws
from ..exceptions import ConflictError, FlagFileError, MetricsError, RampError, StoreError
from ..flag_file.document import parse
from ..metrics import METRICS_NAMESPACE
from . import cloudwatch, edits, times
from .edits_io import commit
from .ramp import (
    COUNTERS,
    METADATA_KEY,
    Action,
    Evidence,
    FlagView,
    Plan,
    RampState,
    content_digest,
    decide,
    judge,
    realign,
    shown_percent,
    state_of,
    step_label,
    view_of,
)
from .shadow import check_min_consistency
from .store import FlagStore, Snapshot
from .times import Window

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

Clock = Callable[[], datetime.datetime]

#: Seconds a controller's clock may disagree with the store's before it decides nothing.
MAX_CLOCK_SKEW = 60.0
#: Seconds all of a tick's CloudWatch reads may take together.
METRICS_DEADLINE = 20.0
#: How far past "now" the evidence window reaches: datapoints stamped later in this second,
#: or by a fleet clock slightly ahead, still count.
WINDOW_SLACK = datetime.timedelta(seconds=60)
#: How often an operator's lever tries its write when ticks keep getting in first.
LEVER_TRIES = 5


@dataclass(frozen=True)
class Current:
    """The flag file as one read: its bytes, document, view and ramp (None: none)."""

    snapshot: Snapshot
    doc: dict[str, Any]
    flag: FlagView
    state: RampState | None


@dataclass(frozen=True)
class Outcome:
    """What one ramp command did."""

    action: Action
    #: The ramp after the command (None: there is no ramp).
    state: RampState | None
    written: bool
    evidence: Evidence | None = None
    notes: tuple[str, ...] = ()
    #: ``metadata.version`` of the file after the command.
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = times.as_json(self.action)
        out.update(written=self.written, version=self.version, notes=list(self.notes))
        out.update(ramp=times.as_json(self.state), evidence=times.as_json(self.evidence))
        return out


class Ramp:
    """The ramp of one flag file (``store``), driven by commands of one ``actor``."""

    def __init__(
        self,
        store: FlagStore,
        *,
        actor: str,
        cloudwatch_client: CloudWatchClient | None = None,
        clock: Clock | None = None,
        max_clock_skew: float = MAX_CLOCK_SKEW,
        metrics_deadline: float = METRICS_DEADLINE,
    ) -> None:
        self.store = store
        self.actor = actor
        self.clock = clock or times.utcnow
        self.max_clock_skew = max_clock_skew
        self.metrics_deadline = metrics_deadline
        self._cloudwatch = cloudwatch_client

    # -- reading --------------------------------------------------------------------------

    @property
    def cloudwatch(self) -> CloudWatchClient:
        if self._cloudwatch is None:
            try:
                self._cloudwatch = _aws.cloudwatch_client()
            except _aws.ERRORS as err:  # no region configured
                raise MetricsError(f"cannot create a CloudWatch client: {err}") from err
        return self._cloudwatch

    def read(self, *, damaged_ok: bool = False) -> Current:
        """The flag file and its ramp. A missing or invalid file raises; a damaged ramp
        state raises :class:`RampError` (``damaged_ok``: read as no ramp)."""
        source = self.store.source
        snapshot = self.store.read()
        if snapshot.data is None:
            raise StoreError(f"{source}: no such file")
        try:
            doc = parse(snapshot.data, source=source)
        except FlagFileError as err:
            raise FlagFileError(
                f"{err}; the ramp cannot step until the file is repaired (`rollback`)",
                err.problems,
            ) from err
        flag = view_of(doc, snapshot.modified or self.clock())
        try:
            state = state_of(doc)
        except RampError as err:
            if not damaged_ok:
                raise RampError(
                    f"{source}: the ramp state (metadata.{METADATA_KEY}) is damaged: "
                    f"{err}; `ramp abort` removes it"
                ) from err
            state = None
        return Current(snapshot, doc, flag, state)

    def _existing(self, *, damaged_ok: bool = False) -> Current:
        current = self.read(damaged_ok=damaged_ok)
        if current.state is None and not damaged_ok:
            raise RampError(f"no ramp on {self.store.source} (`ramp start` begins one)")
        return current

    def check_clock(self, snapshot: Snapshot, now: datetime.datetime) -> None:
        """:class:`StoreError` when this controller's clock disagrees with the store's."""
        skew = datetime.timedelta(seconds=self.max_clock_skew)
        problem = None
        if snapshot.modified is not None and now < snapshot.modified - skew:
            off = (snapshot.modified - now).total_seconds()
            problem = f"{off:.0f} s behind the file's last write on the store's clock"
        elif snapshot.server_time is not None and abs(now - snapshot.server_time) > skew:
            off = (now - snapshot.server_time).total_seconds()
            problem = f"{abs(off):.0f} s {'ahead of' if off > 0 else 'behind'} the store's clock"
        if problem:
            raise StoreError(
                f"this controller's clock ({times.iso(now)}) is {problem} "
                f"(more than {self.max_clock_skew:g} s); it decides nothing until its clock "
                "is right (NTP); nothing written"
            )

    def evidence(self, state: RampState, flag: FlagView, now: datetime.datetime) -> Evidence:
        """The guards' evidence for the current step: alarms and counters since its write
        (and before the ramp, when too little legacy traffic is left to compare with). The
        shadow-read counters are read only for a plan with the consistency guard."""
        plan = state.plan
        end = now.replace(microsecond=0) + datetime.timedelta(seconds=1) + WINDOW_SLACK
        window = Window(flag.modified, max(end, flag.modified + datetime.timedelta(seconds=1)))
        deadline = time.monotonic() + self.metrics_deadline
        try:
            alarms = cloudwatch.alarm_states(self.cloudwatch, plan.alarms)
        except MetricsError as err:
            return Evidence(window, error=str(err))
        try:
            counters = self._sums(plan, plan.counters, window, now, deadline)
            baseline = baseline_window = None
            if counters["KeyDecisions"].get("legacy", 0.0) < max(plan.min_decisions, 1):
                span = datetime.timedelta(seconds=max(plan.bake, 3600.0))
                baseline_window = Window(state.started - span, state.started)
                baseline = self._sums(plan, COUNTERS, baseline_window, now, deadline)
        except MetricsError as err:  # the alarms were read: one in ALARM still counts
            return Evidence(window, alarms, error=str(err))
        return Evidence(window, alarms, counters, baseline, baseline_window)

    def _sums(
        self,
        plan: Plan,
        metrics: tuple[str, ...],
        window: Window,
        now: datetime.datetime,
        deadline: float,
    ) -> dict[str, dict[str, float]]:
        return cloudwatch.counter_sums(
            self.cloudwatch,
            phase=plan.phase,
            metrics=metrics,
            window=window,
            namespace=plan.namespace,
            now=now,
            deadline=deadline,
        )

    # -- commands -------------------------------------------------------------------------

    def start(
        self,
        *,
        steps: tuple[int, ...],
        bake: float,
        alarms: tuple[str, ...] = (),
        min_decisions: int = 100,
        tolerance: float = 0.25,
        namespace: str = METRICS_NAMESPACE,
        phase: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
        min_consistency: float | None = None,
        min_shadow_reads: int = 100,
    ) -> Outcome:
        """Start a ramp: check the file and the alarms, write the first step.
        ``min_consistency`` (a percentage) adds the consistency guard on shadow reads,
        judged once ``min_shadow_reads`` compared reads were counted."""
        if min_consistency is not None:
            try:
                min_consistency = check_min_consistency(min_consistency, "min_consistency")
            except ValueError as err:
                raise RampError(str(err)) from None
        if not isinstance(min_shadow_reads, int) or isinstance(min_shadow_reads, bool):
            raise RampError(f"min_shadow_reads must be a whole number, not {min_shadow_reads!r}")
        if min_shadow_reads < 1:
            raise RampError(f"min_shadow_reads must be 1 or more, not {min_shadow_reads}")
        current = self.read()
        old, view = current.state, current.flag
        source = self.store.source
        if old is not None and old.status in ("running", "paused"):
            raise RampError(
                f"a ramp is already {old.status} on {source} ({step_label(old)}): "
                "`ramp resume`, `ramp promote` or `ramp abort` it first"
            )
        if view.percent is None:
            raise RampError(
                f"{source}: {edits.read_state(current.doc).describe()}; a ramp edits "
                "the canonical percentage (`rollback` or `set legacy` makes it so)"
            )
        remaining = tuple(s for s in steps if s > view.percent)
        notes = []
        if len(remaining) < len(steps):
            skipped = ", ".join(str(s) for s in steps if s <= view.percent)
            notes.append(f"the file is at {view.percent} %: steps {skipped} skipped")
        if not remaining:
            raise RampError(f"the file is at {view.percent} % already: no step above it")
        phase = phase or edits.phase_of(current.doc, source)
        if not phase:
            raise RampError(
                f"cannot tell the phase of {source} (its metrics dimension)",
                options={"phase": "NAME"},
            )
        plan = Plan(
            phase,
            remaining,
            bake,
            alarms,
            min_decisions,
            tolerance,
            namespace,
            min_consistency,
            min_shadow_reads,
        )
        states = cloudwatch.alarm_states(self.cloudwatch, alarms) if alarms else {}
        missing = [name for name, value in states.items() if value is None]
        if missing:
            raise RampError(f"no such alarm: {', '.join(missing)} (check the names)")
        firing = [name for name, value in states.items() if value == "ALARM"]
        if firing:
            raise RampError(f"alarm {', '.join(firing)} is in ALARM now: fix that before ramping")
        now = self.clock()
        state = RampState(
            uuid.uuid4().hex[:8], plan, "running", 0, view.percent, "", now, self.actor
        )
        action = Action("start", 0, plan.steps[0], "ramp started")
        evidence = Evidence(Window(now, now), states)
        outcome = self._write(current, action, state, evidence, reason, dry_run=dry_run)
        return replace(outcome, notes=tuple(notes))

    def tick(self, *, dry_run: bool = False) -> Outcome:
        """At most one step (see :func:`.ramp.decide`); nothing written when nothing is due,
        or when another controller or an operator wrote the file first."""
        current = self.read()
        state, flag = current.state, current.flag
        if state is None:
            return Outcome(Action("none", -1, 0, "no ramp on this file"), None, False)
        now = self.clock()
        evidence = verdict = None
        if state.status == "running" and flag.digest == state.expects:
            self.check_clock(current.snapshot, now)
            evidence = self.evidence(state, flag, now)
            verdict = judge(evidence, state.plan, composite=state.percent > 0)
        action = decide(state, flag, verdict, now)
        if not action.writes:
            return Outcome(action, state, False, evidence, version=flag.version)
        new = replace(state, step=action.step, reason=_reason(action))
        if action.kind in ("pause", "rollback"):
            new = replace(new, status="paused")
        elif action.kind == "done":
            new = replace(new, status="done")
        else:
            new = replace(new, reason=None)
        try:
            return self._write(current, action, new, evidence, None, dry_run=dry_run)
        except ConflictError:
            lost = Action(
                "none",
                state.step,
                state.percent,
                "another controller or an operator changed the file meanwhile; nothing written",
            )
            return Outcome(lost, self.read(damaged_ok=True).state, False, evidence)

    def pause(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """Stop stepping (the file stays as it is) until ``resume``."""

        def lever(current: Current) -> Outcome:
            state = current.state
            assert state is not None
            if state.status == "paused":
                return _nothing(state, "already paused")
            _refuse_finished(state, "pause")
            action = Action(
                "pause", state.step, state.percent, "paused by operator", _given(reason)
            )
            new = replace(state, status="paused", reason=_reason(action))
            return self._write(current, action, new, None, reason, dry_run=dry_run)

        return self._lever(lever)

    def resume(
        self,
        *,
        reason: str | None = None,
        dry_run: bool = False,
        min_decisions: int | None = None,
    ) -> Outcome:
        """Run again from the step the file is at; its bake starts over (at 0 %: the
        alarms are the guards, then step 1). ``min_decisions`` changes that guard."""

        def lever(current: Current) -> Outcome:
            state, view = current.state, current.flag
            assert state is not None
            if state.status == "running":
                return _nothing(state, "already running")
            _refuse_finished(state, "resume")
            if min_decisions is not None:
                state = replace(state, plan=replace(state.plan, min_decisions=min_decisions))
            step, notes = state.step, []
            if view.percent != state.percent:
                step = realign(state.plan.steps, view.percent)
                if view.percent is None or state.percent_at(step) != view.percent:
                    raise RampError(
                        f"the file is at {shown_percent(view.percent)}, which is no step of the "
                        f"ramp ({state.start_percent} or {', '.join(map(str, state.plan.steps))}): "
                        "set it to one with `percent N`, or `ramp abort` and start a new ramp"
                    )
                notes.append(f"the file was moved to {view.percent} %: resuming from there")
            new = replace(state, status="running", step=step, reason=None)
            action = Action("resume", step, new.percent, "resumed by operator", _given(reason))
            done = self._write(current, action, new, None, reason, dry_run=dry_run)
            return replace(done, notes=tuple(notes))

        return self._lever(lever)

    def abort(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """Stop the ramp and put the percentage back where it was before it started. A
        damaged ramp state is removed and the percentage left as it is."""

        def lever(current: Current) -> Outcome:
            state = current.state
            if state is None:  # damaged: remove it
                action = Action("abort", -1, current.flag.percent or 0, "damaged ramp state")
                notes = (
                    "the ramp state was damaged: removed it; the percentage is as it was "
                    "(`percent N` or `rollback` to change it)",
                )
                done = self._write(current, action, None, None, reason, dry_run=dry_run)
                return replace(done, notes=notes)
            _refuse_finished(state, "abort")
            action = Action("abort", -1, state.start_percent, "abort by operator", _given(reason))
            new = replace(state, status="aborted", step=-1, reason=_reason(action))
            if current.flag.percent is None:  # custom targeting: stop, leave the file be
                done = self._write(current, action, new, None, reason, dry_run, keep_flag=True)
                note = "the file has custom targeting: left as it is (`rollback` for legacy)"
                return replace(done, notes=(note,))
            return self._write(current, action, new, None, reason, dry_run=dry_run)

        return self._lever(lever, damaged_ok=True)

    def promote(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """The last step now, without baking or guards; the ramp is done."""

        def lever(current: Current) -> Outcome:
            state = current.state
            assert state is not None
            _refuse_finished(state, "promote")
            last = state.last_step
            action = Action(
                "promote", last, state.plan.steps[-1], "promote by operator", _given(reason)
            )
            new = replace(state, status="done", step=last, reason=_reason(action))
            return self._write(current, action, new, None, reason, dry_run=dry_run)

        return self._lever(lever)

    # -- writing --------------------------------------------------------------------------

    def _lever(self, lever: Callable[[Current], Outcome], *, damaged_ok: bool = False) -> Outcome:
        """An operator's command: read, decide, write; again when a tick wrote first."""
        for attempt in range(LEVER_TRIES):
            try:
                return lever(self._existing(damaged_ok=damaged_ok))
            except ConflictError:
                if attempt == LEVER_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _write(
        self,
        current: Current,
        action: Action,
        new: RampState | None,
        evidence: Evidence | None,
        reason: str | None,
        dry_run: bool,
        *,
        keep_flag: bool = False,
    ) -> Outcome:
        """The file with ``action``'s percentage (unless ``keep_flag``) and ``new`` as its
        ramp (None: none), written only if it is still exactly ``current``; one audit
        record."""
        moves = not keep_flag and new is not None and action.kind in _MOVES
        written: list[RampState] = []

        def edit(doc: dict[str, Any]) -> dict[str, Any]:
            out = edits.set_percent(doc, action.percent) if moves else copy.deepcopy(doc)
            metadata = out.setdefault("metadata", {})
            if new is None:
                metadata.pop(METADATA_KEY, None)
            else:
                expects = content_digest(out) if moves or new.status == "running" else new.expects
                written.append(replace(new, expects=expects))
                metadata[METADATA_KEY] = written[-1].encode()
            return out

        before = current.state or new
        if dry_run:
            edit(current.doc)
            return Outcome(action, written[-1] if written else None, False, evidence)
        change = commit(
            self.store,
            edit,
            command=f"ramp {action.kind} {action.percent}",
            actor=self.actor,
            reason=reason or f"ramp {before.id if before else '?'}: {action.trigger}",
            phase=(before.plan.phase if before else None),
            details=_details(before, action, evidence),
            expected=current.snapshot,
        )
        state = written[-1] if written else None
        return Outcome(action, state, change.changed, evidence, version=change.version_after)


#: The actions that set the flag's percentage; the others change only ``metadata.ramp``.
_MOVES = frozenset({"start", "advance", "rollback", "abort", "promote"})


def _nothing(state: RampState, why: str) -> Outcome:
    return Outcome(Action("none", state.step, state.percent, why), state, False)


def _refuse_finished(state: RampState, what: str) -> None:
    if state.status in ("done", "aborted"):
        raise RampError(
            f"the ramp is {state.status} ({step_label(state)}); nothing to {what} "
            "(`ramp start` begins a new one; `percent`/`rollback` change the file)"
        )


def _given(reason: str | None) -> tuple[str, ...]:
    return (reason,) if reason else ()


def _reason(action: Action) -> str:
    said = "; ".join(action.reasons)
    return f"{action.trigger}: {said}" if said else action.trigger


def _details(state: RampState | None, action: Action, evidence: Evidence | None) -> dict[str, Any]:
    ramp: dict[str, Any] = {
        "id": state.id if state else None,
        "action": action.kind,
        "trigger": action.trigger,
        "reasons": list(action.reasons),
    }
    if state is not None:
        ramp["from"] = step_label(state)
        ramp["to"] = step_label(state, action.step)
        ramp["plan"] = times.as_json(state.plan)
    if action.verdict is not None:
        ramp["verdict"] = times.as_json(action.verdict)
    if evidence is not None:
        ramp["evidence"] = times.as_json(evidence)
    return {"ramp": ramp}
