"""The guarded ramp's I/O: its state beside the flag file, the evidence, the writes.

The state is ``<flag file>.ramp.json`` (``<key>.ramp.json`` in S3), written like a flag file:
atomically under a lock file locally, with a conditional put (ETag) on S3. Any number of
controllers may call :meth:`Ramp.tick` at once; exactly one step happens:

* Locally the whole tick holds the state's lock; a controller that finds it taken leaves
  the step to the holder.
* On S3 a step is first *announced* in the state (``pending``, a conditional put: of two
  controllers only one gets it), then the flag file is written (the edit refuses if the file
  is not at the version the ramp last wrote), then the state is settled. A controller that
  died after the flag write is finished by the next tick (the file shows the step); one that
  died before it is forgotten after :data:`~.ramp.LEASE_SECONDS`.

Every action -- start, advance, rollback, pause, resume, abort, promote, done -- is one audit
record in the flag file's audit log, with the trigger, the guards' verdict and the evidence
(alarm states, counter sums, the window). A tick that changes nothing writes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError

from .. import _aws
from ..exceptions import ConflictError, FlagEditError, FlagFileError, StoreError
from ..flag_file.document import parse
from . import cloudwatch, edits
from .cloudwatch import METRICS_NAMESPACE, MetricsError, Window
from .ramp import (
    COUNTERS,
    Action,
    Evidence,
    FlagView,
    Pending,
    Plan,
    RampError,
    RampState,
    Status,
    decide,
    judge,
    needs_evidence,
    realign,
    resolve_pending,
    step_label,
)
from .store import (
    FlagStore,
    LocalFileStore,
    S3Store,
    Snapshot,
    audit_record,
    commit,
    open_store,
    write_audited,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

__all__ = ["Outcome", "Ramp", "state_location"]

Clock = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def state_location(store: FlagStore) -> str:
    """Where the ramp state of ``store``'s flag file lives."""
    if isinstance(store, LocalFileStore):
        return str(store.target) + ".ramp.json"
    if isinstance(store, S3Store):
        return f"s3://{store.bucket}/{store.key}.ramp.json"
    raise TypeError(f"no ramp state for {type(store).__name__}")


@dataclass(frozen=True)
class Outcome:
    """What one ramp command did."""

    action: Action
    #: The ramp after the command (None: there is no ramp).
    state: RampState | None
    written: bool
    evidence: Evidence | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            **self.action.to_json(),
            "written": self.written,
            "ramp": self.state.to_json() if self.state else None,
            "evidence": self.evidence.to_json() if self.evidence else None,
            "notes": list(self.notes),
        }


class _FlagMoved(FlagEditError):
    """The flag file is not at the version the ramp expected."""


class _AnnounceLost(ConflictError):
    """Another controller announced a step first."""


class Ramp:
    """The ramp of one flag file (``store``), driven by commands of one ``actor``."""

    def __init__(
        self,
        store: FlagStore,
        *,
        actor: str,
        lock_timeout: float = 10.0,
        cloudwatch_client: CloudWatchClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.actor = actor
        self.clock = clock or _utcnow
        self.controller = f"{actor}@{socket.gethostname()}:{os.getpid()}"
        location = state_location(store)
        s3 = store.client if isinstance(store, S3Store) else None
        # The state's own store: only its write, lock and read are used (audit records go
        # to the flag file's log).
        self.state_store = open_store(location, s3_client=s3, lock_timeout=lock_timeout)
        self._cloudwatch = cloudwatch_client

    # -- reading --------------------------------------------------------------------------

    @property
    def cloudwatch(self) -> CloudWatchClient:
        if self._cloudwatch is None:
            try:
                self._cloudwatch = _aws.cloudwatch_client()
            except BotoCoreError as err:  # no region configured
                raise MetricsError(f"cannot create a CloudWatch client: {err}") from err
        return self._cloudwatch

    def read(self) -> tuple[Snapshot, RampState | None]:
        """The state's bytes and the ramp they hold (None: no ramp was ever started)."""
        snapshot = self.state_store.read()
        if snapshot.data is None:
            return snapshot, None
        try:
            data = json.loads(snapshot.data)
        except ValueError as err:
            raise RampError(f"{self.state_store.source} is not JSON: {err}") from err
        return snapshot, RampState.from_json(data)

    def flag(self) -> tuple[FlagView, dict[str, Any]]:
        """The flag file now: its version and percentage, and the document."""
        snapshot = self.store.read()
        if snapshot.data is None:
            raise StoreError(f"{self.store.source}: no such file")
        doc = parse(snapshot.data, source=self.store.source)
        return _view(doc), doc

    def _flag_or_unreadable(self) -> FlagView:
        """The flag file now; an invalid or missing one has no version (someone else's
        doing: the ramp pauses). A read that fails (S3 unreachable) raises."""
        snapshot = self.store.read()
        if snapshot.data is None:
            return FlagView(None, None)
        try:
            return _view(parse(snapshot.data, source=self.store.source))
        except FlagFileError:
            return FlagView(None, None)

    def evidence(self, state: RampState) -> Evidence:
        """The guards' evidence for the current step: alarms and counters since it started
        (and before the ramp, when too little legacy traffic is left to compare with)."""
        now = self.clock()
        plan = state.plan
        start = min(state.step_started, now)
        # CloudWatch wants StartTime < EndTime; a step written this second has no data yet.
        window = Window(start, max(now, start + datetime.timedelta(seconds=1)))
        try:
            alarms = cloudwatch.alarm_states(self.cloudwatch, plan.alarms)
        except MetricsError as err:
            return Evidence(window, error=str(err))
        try:
            counters = self._sums(plan, window, now)
            legacy = counters.get("KeyDecisions", {}).get("legacy", 0.0)
            baseline = baseline_window = None
            if legacy < max(plan.min_decisions, 1):
                span = datetime.timedelta(seconds=max(plan.bake, 3600.0))
                baseline_window = Window(state.started - span, state.started)
                baseline = self._sums(plan, baseline_window, now)
        except MetricsError as err:  # the alarms were read: one in ALARM still counts
            return Evidence(window, alarms, error=str(err))
        return Evidence(window, alarms, counters, baseline, baseline_window)

    def _sums(self, plan: Plan, window: Window, now: datetime.datetime) -> dict[str, Any]:
        return cloudwatch.counter_sums(
            self.cloudwatch,
            phase=plan.phase,
            metrics=COUNTERS,
            window=window,
            namespace=plan.namespace,
            now=now,
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
    ) -> Outcome:
        """Start a ramp: check the file and the alarms, write the first step."""
        with self._locked():
            snapshot, old = self.read()
            if old is not None and old.status in ("running", "paused"):
                raise RampError(
                    f"a ramp is already {old.status} on {self.store.source} "
                    f"({step_label(old)}): `ramp resume`, `ramp promote` or `ramp abort` it first"
                )
            view, doc = self.flag()
            if view.percent is None:
                raise RampError(
                    f"{self.store.source}: {edits.read_state(doc).describe()}; a ramp edits "
                    "the canonical percentage (`rollback` or `set legacy` makes it so)"
                )
            notes = []
            remaining = tuple(s for s in steps if s > view.percent)
            if len(remaining) < len(steps):
                skipped = ", ".join(str(s) for s in steps if s <= view.percent)
                notes.append(f"the file is at {view.percent} %: steps {skipped} skipped")
            if not remaining:
                raise RampError(f"the file is at {view.percent} % already: no step above it")
            phase = phase or edits.phase_of(doc, self.store.source)
            if not phase:
                raise RampError(
                    f"cannot tell the phase of {self.store.source} (its metrics dimension): "
                    "pass --metrics-phase NAME"
                )
            plan = Plan(phase, remaining, bake, alarms, min_decisions, tolerance, namespace)
            states = cloudwatch.alarm_states(self.cloudwatch, alarms) if alarms else {}
            missing = [name for name, value in states.items() if value is None]
            if missing:
                raise RampError(f"no such alarm: {', '.join(missing)} (check the names)")
            firing = [name for name, value in states.items() if value == "ALARM"]
            if firing:
                raise RampError(
                    f"alarm {', '.join(firing)} is in ALARM now: fix that before ramping"
                )
            now = self.clock()
            state = RampState(
                id=uuid.uuid4().hex[:8],
                source=self.store.source,
                plan=plan,
                status="running",
                step=-1,
                start_percent=view.percent,
                step_started=now,
                flag_version=view.version or 0,
                started=now,
                started_by=self.actor,
                updated=now,
                revision=(old.revision + 1) if old else 1,
            )
            action = Action("start", 0, plan.steps[0], "ramp started")
            evidence = Evidence(Window(now, now), states)
            if dry_run:
                return Outcome(action, state, False, evidence, tuple(notes))
            done = self._step(snapshot, state, action, evidence, reason, command="ramp start")
            return replace(done, notes=(*done.notes, *notes))

    def tick(self, *, dry_run: bool = False) -> Outcome:
        """At most one step (see :func:`.ramp.decide`); nothing written when nothing is due."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._locked())
            except ConflictError:  # a local lock another controller holds: its tick
                _, state = self.read()
                action = Action(
                    "none",
                    state.step if state else -1,
                    state.percent if state else 0,
                    "another controller is ticking this ramp",
                )
                return Outcome(action, state, False)
            return self._tick(dry_run)

    def _tick(self, dry_run: bool) -> Outcome:
        snapshot, state = self.read()
        if state is None:
            return Outcome(Action("none", -1, 0, "no ramp on this file"), None, False)
        flag = self._flag_or_unreadable()
        now = self.clock()
        notes: list[str] = []
        if state.pending is not None and state.status == "running":
            verdict, why = resolve_pending(state, flag, now)
            if verdict == "wait":
                return Outcome(Action("none", state.step, state.percent, why), state, False)
            if verdict == "adopt":
                pending = state.pending
                settled = replace(
                    state,
                    step=pending.step,
                    step_started=pending.at,
                    flag_version=flag.version or 0,
                    status="paused" if pending.kind == "rollback" else "running",
                    pending=None,
                )
                action = Action(pending.kind, pending.step, pending.percent, f"finished: {why}")
                if dry_run:
                    return Outcome(action, settled, False)
                return Outcome(action, self._settle(settled), True)
            notes.append(why)
            if verdict == "drop":
                state = replace(state, pending=None)
        evidence = self.evidence(state) if needs_evidence(state, flag) else None
        verdict_ = judge(evidence, state.plan) if evidence is not None else None
        action = decide(state, flag, verdict_, now)
        if dry_run or not action.writes:
            return Outcome(action, state, False, evidence, tuple(notes))
        if action.kind in ("advance", "rollback"):
            try:
                return self._step(
                    snapshot, state, action, evidence, None, command=f"ramp {action.kind}"
                )
            except _AnnounceLost:
                _, now_state = self.read()
                lost = Action(
                    "none", state.step, state.percent, "another controller took this step"
                )
                return Outcome(lost, now_state, False, evidence)
        status: Status = "paused" if action.kind == "pause" else "done"
        new = replace(state, status=status, reason=_reason(action), pending=None)
        return self._audited(snapshot, state, new, action, evidence, None, notes=tuple(notes))

    def pause(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """Stop stepping (the file stays as it is) until ``resume``."""
        with self._locked():
            snapshot, state = self._existing()
            if state.status == "paused":
                return Outcome(
                    Action("none", state.step, state.percent, "already paused"), state, False
                )
            self._refuse_finished(state, "pause")
            action = Action(
                "pause", state.step, state.percent, "paused by operator", _given(reason)
            )
            new = replace(state, status="paused", reason=_reason(action), pending=None)
            if dry_run:
                return Outcome(action, new, False)
            return self._audited(snapshot, state, new, action, None, reason)

    def resume(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """Run again from the step the file is at; its bake starts over."""
        with self._locked():
            snapshot, state = self._existing()
            if state.status == "running":
                return Outcome(
                    Action("none", state.step, state.percent, "already running"), state, False
                )
            self._refuse_finished(state, "resume")
            view, _ = self.flag()
            step = state.step
            notes = []
            if view.percent != state.percent:
                step = realign(state.plan.steps, view.percent)
                at = state.plan.steps[step] if step >= 0 else state.start_percent
                if view.percent is None or at != view.percent:
                    raise RampError(
                        f"the file is at {_shown(view.percent)}, which is no step of the ramp "
                        f"({', '.join(map(str, state.plan.steps))}): set it to one with "
                        "`percent N`, or `ramp abort` and start a new ramp"
                    )
                notes.append(f"the file was moved to {view.percent} %: resuming from there")
            if step < 0:
                step = -1
            now = self.clock()
            new = replace(
                state,
                status="running",
                step=step,
                step_started=now,
                flag_version=view.version or 0,
                reason=None,
                pending=None,
            )
            action = Action("resume", new.step, new.percent, "resumed by operator", _given(reason))
            if dry_run:
                return Outcome(action, new, False, notes=tuple(notes))
            return self._audited(snapshot, state, new, action, None, reason, notes=tuple(notes))

    def abort(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """Stop the ramp and put the percentage back where it was before it started."""
        return self._finish_by_operator("abort", reason, dry_run)

    def promote(self, *, reason: str | None = None, dry_run: bool = False) -> Outcome:
        """The last step now, without baking or guards; the ramp is done."""
        return self._finish_by_operator("promote", reason, dry_run)

    def _finish_by_operator(
        self, which: Literal["abort", "promote"], reason: str | None, dry_run: bool
    ) -> Outcome:
        with self._locked():
            snapshot, state = self._existing()
            self._refuse_finished(state, which)
            status: Status
            if which == "abort":
                step, percent, status = -1, state.start_percent, "aborted"
            else:
                step, percent, status = state.last_step, state.plan.steps[-1], "done"
            action = Action(which, step, percent, f"{which} by operator", _given(reason))
            view, _ = self.flag()
            new = replace(state, status=status, step=step, reason=_reason(action), pending=None)
            if dry_run:
                return Outcome(action, new, False)
            if view.percent == percent:
                adopted = replace(new, flag_version=view.version or 0)
                return self._audited(snapshot, state, adopted, action, None, reason)
            change = self._write_flag(state, action, None, reason, f"ramp {which}", check=False)
            settled = replace(
                new, flag_version=change.version_after or 0, step_started=self.clock()
            )
            return Outcome(action, self._settle_after(snapshot, settled), True)

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.state_store.locked():
            yield

    def _existing(self) -> tuple[Snapshot, RampState]:
        snapshot, state = self.read()
        if state is None:
            raise RampError(f"no ramp on {self.store.source} (`ramp start` begins one)")
        return snapshot, state

    @staticmethod
    def _refuse_finished(state: RampState, what: str) -> None:
        if state.status in ("done", "aborted"):
            raise RampError(
                f"the ramp is {state.status} ({step_label(state)}); nothing to {what} "
                "(`ramp start` begins a new one; `percent`/`rollback` change the file)"
            )

    def _step(
        self,
        snapshot: Snapshot,
        state: RampState,
        action: Action,
        evidence: Evidence | None,
        reason: str | None,
        *,
        command: str,
    ) -> Outcome:
        """Announce, write the flag file, settle: one step."""
        now = self.clock()
        pending = Pending(
            action.kind, action.step, action.percent, state.flag_version, now, self.controller
        )
        announced = replace(state, pending=pending, updated=now, revision=state.revision + 1)
        try:
            written = self._put(announced, snapshot)  # of two controllers, one gets here
        except ConflictError as err:
            raise _AnnounceLost(str(err)) from err
        try:
            change = self._write_flag(state, action, evidence, reason, command, check=True)
        except _FlagMoved as err:
            paused = replace(
                state,
                status="paused",
                reason=f"flag file changed outside the ramp: {err}",
                pending=None,
                revision=announced.revision,
            )
            moved = Action(
                "pause",
                state.step,
                state.percent,
                "flag file changed outside the ramp",
                (str(err),),
            )
            return self._audited(written, state, paused, moved, evidence, None)
        status: Status = "paused" if action.kind == "rollback" else state.status
        settled = replace(
            announced,
            status=status,
            step=action.step,
            step_started=now,
            flag_version=change.version_after or 0,
            reason=_reason(action) if action.kind == "rollback" else None,
            pending=None,
        )
        return Outcome(action, self._finish_step(settled, written), True, evidence)

    def _finish_step(self, settled: RampState, announced: Snapshot) -> RampState:
        """The state after the flag file is written (a separate step: a controller can die
        between the two, and the next tick finishes it)."""
        return self._settle_after(announced, settled)

    def _write_flag(
        self,
        state: RampState,
        action: Action,
        evidence: Evidence | None,
        reason: str | None,
        command: str,
        *,
        check: bool,
    ) -> Any:
        expected = state.flag_version
        percent = action.percent

        def edit(doc: dict[str, Any]) -> dict[str, Any]:
            if check and edits.version_of(doc) != expected:
                raise _FlagMoved(f"version {expected} -> {edits.version_of(doc)}")
            return edits.set_percent(doc, percent)

        try:
            return commit(
                self.store,
                edit,
                command=f"{command} {percent}",
                actor=self.actor,
                reason=reason or f"ramp {state.id}: {action.trigger}",
                phase=state.plan.phase,
                details=_details(state, action, evidence),
            )
        except FlagEditError as err:
            cause = err.__cause__ if isinstance(err.__cause__, _FlagMoved) else err
            if isinstance(cause, _FlagMoved):
                raise cause from None
            raise

    def _audited(
        self,
        snapshot: Snapshot,
        before: RampState,
        new: RampState,
        action: Action,
        evidence: Evidence | None,
        reason: str | None,
        *,
        notes: tuple[str, ...] = (),
    ) -> Outcome:
        """A state change without a flag write, with its audit record in the flag's log."""
        now = self.clock()
        new = replace(new, updated=now, revision=new.revision + 1)
        flag_state = None
        version = None
        with contextlib.suppress(StoreError, FlagFileError):
            _, doc = self.flag()
            flag_state = edits.read_state(doc)
            version = edits.version_of(doc)
        record = audit_record(
            actor=self.actor,
            command=f"ramp {action.kind}",
            phase=new.plan.phase,
            source=self.store.source,
            before=flag_state,
            after=flag_state or edits.RolloutState(kind="missing"),
            version_before=version,
            version_after=version,
            reason=reason or f"ramp {new.id}: {action.trigger}",
            snapshot=Snapshot(None),
            details=_details(before, action, evidence),
        )
        write_audited(self.state_store, _encode(new), snapshot, record, audit_of=self.store)
        return Outcome(action, new, True, evidence, notes)

    def _settle(self, state: RampState) -> RampState:
        snapshot, _ = self.read()
        return self._settle_after(snapshot, state)

    def _settle_after(self, snapshot: Snapshot, state: RampState) -> RampState:
        new = replace(state, updated=self.clock(), revision=state.revision + 1)
        self._put(new, snapshot)
        return new

    def _put(self, state: RampState, snapshot: Snapshot) -> Snapshot:
        try:
            return self.state_store.write(_encode(state), snapshot)
        except ConflictError as err:
            raise ConflictError(
                f"another controller changed the ramp of {self.store.source} meanwhile; "
                "nothing written by this one"
            ) from err


def _view(doc: Mapping[str, Any]) -> FlagView:
    state = edits.read_state(doc)
    percent: int | None = None
    if state.canonical:
        percent = state.percent or 0
    elif state.plain:
        percent = 100 if state.kind == "composite-everywhere" else 0
    return FlagView(edits.version_of(doc), percent)


def _encode(state: RampState) -> bytes:
    return (json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n").encode()


def _given(reason: str | None) -> tuple[str, ...]:
    return (reason,) if reason else ()


def _reason(action: Action) -> str:
    said = "; ".join(action.reasons)
    return f"{action.trigger}: {said}" if said else action.trigger


def _shown(percent: int | None) -> str:
    return "custom targeting" if percent is None else f"{percent} %"


def _details(state: RampState, action: Action, evidence: Evidence | None) -> dict[str, Any]:
    ramp: dict[str, Any] = {
        "id": state.id,
        "action": action.kind,
        "trigger": action.trigger,
        "reasons": list(action.reasons),
        "from": step_label(state),
        "to": step_label(state, action.step) if action.step < len(state.plan.steps) else None,
        "plan": state.plan.to_json(),
    }
    if action.verdict is not None:
        ramp["verdict"] = action.verdict.to_json()
    if evidence is not None:
        ramp["evidence"] = evidence.to_json()
    return {"ramp": ramp}
