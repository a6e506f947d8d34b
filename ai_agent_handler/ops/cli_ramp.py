"""``ai-agent-rollout ramp ...``: the guarded ramp on the command line.

``start`` fixes the steps and the guards and writes the first step; ``tick`` (from cron, a
scheduled Lambda, or ``ramp run``) applies at most one step; ``status [--wait]`` shows the
ramp and waits for its outcome; ``pause``, ``resume``, ``abort`` and ``promote`` are the
operator's levers. The decisions are :mod:`.ramp`'s, the I/O :mod:`.ramp_io`'s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..exceptions import FlagFileError, MetricsError, RampError, StoreError
from ..metrics import METRICS_NAMESPACE
from . import times
from ._cli_base import (
    EXIT_ERROR,
    EXIT_NOT_DONE,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PROG,
    CliError,
    actor,
    argument_type,
    exit_code,
    whole_number,
)
from .ramp import RampState, next_tick, parse_steps, shown_percent, step_label
from .ramp_io import Current, Outcome, Ramp
from .shadow import ShadowCounts, parse_min_consistency
from .store import FlagStore

Out = Callable[[str], None]

EPILOG = f"""\
examples (P=s3://ops-flags/ai-agent/production.flagd.json):
  {PROG} --file $P ramp start --steps 1,5,25,50,100 --bake 2h --alarm receivers-5xx --reason CHG-200
  {PROG} --file $P ramp tick              every few minutes (cron, a scheduled Lambda)
  {PROG} --file $P ramp run               ticks until the ramp ends (exit 0 done, 5 paused/aborted)
  {PROG} --file $P ramp status --wait     waits for the outcome, for CI
  {PROG} --file $P ramp pause | resume | abort | promote --reason "..."

A step advances after its bake when the guards are healthy: the named alarms OK, no flag
evaluation errors, composite-key failures per decision not worse than legacy's (tolerance),
at least --min-decisions composite decisions; with --min-consistency P, shadow reads whose
copies agree at least P % of the time (of at least --min-shadow-reads compared reads). An
alarm or a breach rolls back one step and pauses; too little data or unreadable metrics
hold. A flag edit the ramp did not make pauses it.
"""


_duration = argument_type(times.parse_duration)
_steps = argument_type(parse_steps, RampError)


_count = whole_number(0)
_reads = whole_number(1)
_percentage = argument_type(parse_min_consistency)


@argument_type
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0 <= value < 1000:
        raise ValueError(f"must be from 0 (no slack) up, got {text!r}")
    return value


def add_parser(
    commands: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser]
) -> None:
    """``ramp`` and its subcommands on the CLI's subparsers."""
    ramp = commands.add_parser(
        "ramp",
        help="a guarded ramp: steps of the percentage that advance after a bake while the "
        "alarms and the library's counters are healthy, and roll back on an alarm",
        description="A guarded ramp of the percentage of --file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = ramp.add_subparsers(
        dest="ramp_command", metavar="RAMP_COMMAND", parser_class=parser_class
    )
    sub.required = True

    def add(name: str, text: str, *, dry_run: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=text.replace("%", "%%"), description=text, parents=[common]
        )
        parser.add_argument(
            "target_phase",
            nargs="?",
            metavar="PHASE",
            help="the live file named for this phase (ai-agent-rollout.toml or "
            "$ROLLOUT_LIVE_<PHASE>) instead of --file",
        )
        if dry_run:
            parser.add_argument(
                "--dry-run", action="store_true", help="say what would happen; write nothing"
            )
        return parser

    start = add("start", "start a ramp: check the file and the alarms, write the first step")
    start.add_argument("--steps", type=_steps, required=True, metavar="1,5,25,50,100")
    start.add_argument(
        "--bake",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="how long each step runs before the next (0s, 30m, 2h, 1d)",
    )
    start.add_argument(
        "--alarm",
        action="append",
        default=[],
        metavar="NAME",
        help="a CloudWatch alarm (metric or composite) that must not be in ALARM; repeatable",
    )
    start.add_argument(
        "--min-decisions",
        type=_count,
        default=100,
        metavar="N",
        help="composite decisions a step needs before it can advance (default 100; 0: none)",
    )
    start.add_argument(
        "--tolerance",
        type=_fraction,
        default=0.25,
        metavar="FRACTION",
        help="how much higher composite's failures per decision may be than legacy's "
        "(default 0.25, i.e. 25 %%; 0: not higher at all)",
    )
    start.add_argument(
        "--min-consistency",
        type=_percentage,
        default=None,
        metavar="P",
        help="a guard on the receivers' shadow reads: of those that found the item under both "
        "keys, at least P %% must agree (above 0, at most 100, e.g. 99.9); below: a breach. "
        "Default: no such guard",
    )
    start.add_argument(
        "--min-shadow-reads",
        type=_reads,
        default=None,
        metavar="N",
        help="compared shadow reads (ShadowSame + ShadowDifferent) the --min-consistency "
        "guard needs before it judges; fewer hold (default 100)",
    )
    start.add_argument(
        "--namespace", default=METRICS_NAMESPACE, help="CloudWatch namespace of the counters"
    )
    start.add_argument(
        "--metrics-phase",
        metavar="NAME",
        help="the phase dimension of the counters (default: the file's phase)",
    )
    add("tick", "apply at most one step now, if one is due; nothing written otherwise")
    for name, text in (
        ("run", "tick every --interval until the ramp is done, paused or aborted"),
        ("status", "the ramp: step, bake, guards; --wait for its outcome"),
    ):
        parser = add(name, text, dry_run=False)
        if name == "status":
            parser.add_argument(
                "--wait",
                action="store_true",
                help="wait until the ramp is done (exit 0), paused or aborted (exit 5)",
            )
        parser.add_argument(
            "--interval",
            type=_duration,
            default=30.0 if name == "status" else 60.0,
            metavar="DURATION",
            help="how often to look (status: 30s, run: 1m)",
        )
        parser.add_argument(
            "--timeout",
            type=_duration,
            default=None,
            metavar="DURATION",
            help="give up after this long (exit 6); default: no limit",
        )
    add("pause", "stop stepping; the file stays as it is")
    resume = add("resume", "step again from where the file is; the bake starts over")
    resume.add_argument(
        "--min-decisions",
        type=_count,
        default=None,
        metavar="N",
        help="change the enough-data guard from now on (low traffic; 0: none)",
    )
    add("abort", "stop the ramp and put the percentage back where it started")
    add("promote", "the last step now, without bake or guards; the ramp is done")


def run(args: argparse.Namespace, out: Out, store: FlagStore) -> int:
    """Run ``ramp <command>`` on the flag file of ``store``."""
    ramp = Ramp(store, actor=actor())
    command = args.ramp_command
    if command == "status":
        return _status(ramp, args, out)
    if command == "run":
        return _run_loop(ramp, args, out)
    dry = bool(getattr(args, "dry_run", False))
    if command == "start":
        outcome = ramp.start(
            steps=args.steps,
            bake=args.bake,
            alarms=tuple(dict.fromkeys(args.alarm)),
            min_decisions=args.min_decisions,
            tolerance=args.tolerance,
            namespace=args.namespace,
            phase=args.metrics_phase,
            reason=args.reason,
            dry_run=dry,
            min_consistency=args.min_consistency,
            min_shadow_reads=100 if args.min_shadow_reads is None else args.min_shadow_reads,
        )
    elif command == "tick":
        outcome = ramp.tick(dry_run=dry)
    elif command == "resume":
        outcome = ramp.resume(reason=args.reason, dry_run=dry, min_decisions=args.min_decisions)
    else:
        outcome = getattr(ramp, command)(reason=args.reason, dry_run=dry)
    _report(outcome, args, out, dry_run=dry)
    return EXIT_OK


def _report(outcome: Outcome, args: argparse.Namespace, out: Out, *, dry_run: bool) -> None:
    if args.json:
        out(json.dumps({**outcome.to_json(), "dry_run": dry_run}, indent=2))
        return
    for line in describe(outcome, dry_run=dry_run):
        out(line)


_DONE_WORDS = {
    "start": "started at",
    "advance": "advanced to",
    "rollback": "ROLLED BACK to",
    "pause": "PAUSED at",
    "resume": "resumed at",
    "abort": "ABORTED, back to",
    "promote": "promoted to",
    "done": "done at",
}


def describe(outcome: Outcome, *, dry_run: bool = False) -> list[str]:
    """The human lines for one ramp command's outcome."""
    action, state = outcome.action, outcome.state
    notes = [f"  note: {note}" for note in outcome.notes]
    if state is None:
        said = "no ramp" if action.kind == "none" else "ramp state removed"
        return [f"{said}: {action.trigger}", *notes]
    where = state.plan.phase
    lines = []
    if action.kind == "none":
        lines.append(f"{where}: {step_label(state)}, nothing to do: {action.trigger}")
    else:
        words = _DONE_WORDS[action.kind]
        would = "would be " if dry_run else ""
        label = step_label(state, action.step)
        then = " and paused" if action.kind == "rollback" else ""
        lines.append(f"{where}: {would}{words} {label}{then}: {action.trigger}")
    lines.extend(f"  {reason}" for reason in action.reasons)
    lines.extend(notes)
    if outcome.evidence is not None and outcome.evidence.counters:
        lines.append("  " + _counters_line(outcome.evidence.counters))
        if state.plan.min_consistency is not None:
            lines.append("  " + _shadow_line(outcome.evidence.counters))
    if outcome.written:
        lines.append(f"  flag version {outcome.version}; ramp {state.id} is {state.status}")
    elif dry_run and action.kind != "none":
        lines.append("  dry run: nothing written")
    return lines


#: The window's counters ``describe`` shows, each as its composite and legacy sums.
_COUNTERS_SHOWN = (
    ("decisions composite {} / legacy {}", "KeyDecisions"),
    ("invoke errors {} / {}", "LambdaInvokeErrors"),
    ("failed chunks {} / {}", "StreamChunksFailed"),
    ("flag evaluation errors {} / {}", "FlagEvaluationErrors"),
)


def _counters_line(counters: Mapping[str, Mapping[str, float]]) -> str:
    shown = (
        label.format(*(f"{counters.get(metric, {}).get(s, 0):g}" for s in ("composite", "legacy")))
        for label, metric in _COUNTERS_SHOWN
    )
    return "window: " + "; ".join(shown)


def _shadow_line(counters: Mapping[str, Mapping[str, float]]) -> str:
    shadow = ShadowCounts.of(counters)
    return (
        f"shadow reads: same {shadow.same:g}, different {shadow.different:g}, legacy only "
        f"{shadow.legacy_only:g}, composite only {shadow.composite_only:g}"
    )


def status_lines(current: Current, source: str, now: datetime.datetime) -> list[str]:
    """``ramp status`` in words: the ramp, the file as it is, what the next tick does."""
    state, flag = current.state, current.flag
    assert state is not None
    plan = state.plan
    lines = [f"ramp {state.id} on {source}: {state.status}, {step_label(state)}"]
    if flag.digest != state.expects:
        lines.append(
            f"  the file changed since the ramp's last write: now {shown_percent(flag.percent)} "
            f"(version {flag.version})"
        )
    if state.reason:
        lines.append(f"  why: {state.reason}")
    lines.append(f"  next tick: {next_tick(state, flag, now)}")
    alarms = ", ".join(plan.alarms) or "none"
    steps = ",".join(str(s) for s in plan.steps)
    guard = plan.guard_words()
    consistency = f", {guard}" if guard else ""
    lines.append(
        f"  steps {steps} % (from {state.start_percent} %), "
        f"bake {times.format_duration(plan.bake)}, "
        f"alarms: {alarms}, min decisions {plan.min_decisions}, tolerance {plan.tolerance:g}"
        f"{consistency}"
    )
    lines.append(
        f"  started {times.iso(state.started)} by {state.started_by}; file last written "
        f"{times.iso(flag.modified)}; flag version {flag.version}; metrics {plan.namespace} "
        f"phase={plan.phase}"
    )
    return lines


def _outcome_code(state: RampState | None) -> int:
    return EXIT_OK if state is not None and state.status == "done" else EXIT_NOT_DONE


def _looks(args: argparse.Namespace) -> Iterator[None]:
    """The looks of ``ramp status [--wait]`` and ``ramp run``: one now, then one after each
    nap of ``--interval`` (:func:`_nap`), until ``--timeout`` has run out: then the loop over
    them ends."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        yield
        if deadline is not None and time.monotonic() >= deadline:
            return
        time.sleep(_nap(args.interval, deadline))


def _nap(interval: float, deadline: float | None) -> float:
    """``--interval`` (at least 50 ms), but not past ``deadline``."""
    nap = max(interval, 0.05)
    if deadline is not None:
        nap = min(nap, max(deadline - time.monotonic(), 0.0))
    return nap


def _status(ramp: Ramp, args: argparse.Namespace, out: Out) -> int:
    waiting = False
    current: Current | None = None
    for _ in _looks(args):
        try:
            current = ramp.read()
        except (StoreError, RampError, FlagFileError) as err:
            if not args.wait:
                raise
            current = None
            print(f"{PROG}: note: cannot read the ramp ({err}); looking again", file=sys.stderr)
            continue
        state = current.state
        if state is None:
            raise RampError(f"no ramp on {ramp.store.source} (`ramp start` begins one)")
        if not args.wait or state.status != "running":
            _show(current, ramp, args, out)
            return _outcome_code(state) if args.wait else EXIT_OK
        if not waiting:
            waiting = True
            print(
                f"{PROG}: waiting for the ramp to end: {state.status}, "
                f"{step_label(state)}; looking every {times.format_duration(args.interval)}",
                file=sys.stderr,
                flush=True,
            )
    if current is not None:
        _show(current, ramp, args, out)
    return _timed_out(args.timeout)


def status_of_each(args: argparse.Namespace, out: Out, stores: Mapping[str, FlagStore]) -> int:
    """``ramp status`` of several live files (by phase): each file's ramp, or why none is
    shown. Exit 1 when a file cannot be read."""
    code = EXIT_OK
    shown: list[dict[str, Any]] = []
    for phase, store in stores.items():
        ramp = Ramp(store, actor=actor())
        try:
            current = ramp.read()
        except (StoreError, RampError, FlagFileError) as err:
            code = max(code, exit_code(err) or EXIT_ERROR)
            shown.append({"phase": phase, "source": store.source, "error": str(err)})
            if not args.json:
                out(f"{phase}: {store.source}: {err}")
            continue
        if current.state is None:
            shown.append({"phase": phase, "source": store.source, "ramp": None})
            if not args.json:
                out(f"{phase}: no ramp on {store.source}")
            continue
        if args.json:
            shown.append({"phase": phase, "source": store.source, **_shown(current, ramp)})
        else:
            for line in status_lines(current, store.source, ramp.clock()):
                out(line)
    if args.json:
        out(json.dumps({"files": shown}, indent=2))
    return code


def _timed_out(timeout: float) -> int:
    print(
        f"{PROG}: timed out after {times.format_duration(timeout)}: the ramp is still running "
        "(exit 6)",
        file=sys.stderr,
    )
    return EXIT_TIMEOUT


def _show(current: Current, ramp: Ramp, args: argparse.Namespace, out: Out) -> None:
    assert current.state is not None
    if args.json:
        out(json.dumps(_shown(current, ramp), indent=2))
        return
    for line in status_lines(current, ramp.store.source, ramp.clock()):
        out(line)


def _shown(current: Current, ramp: Ramp) -> dict[str, Any]:
    """``ramp status --json`` of one file."""
    assert current.state is not None
    flag = current.flag
    return {
        "ramp": current.state.to_json(flag),
        "file": {
            "percent": flag.percent,
            "version": flag.version,
            "digest": flag.digest,
            "written_by_the_ramp": flag.digest == current.state.expects,
        },
        "next_tick": next_tick(current.state, flag, ramp.clock()),
    }


#: ``ramp run`` says at least this often that it is still waiting (a CI log shows progress).
HEARTBEAT = 600.0


def _run_loop(ramp: Ramp, args: argparse.Namespace, out: Out) -> int:
    """Tick until the ramp is not running; its outcome is the exit code."""
    said, shown = "", time.monotonic()
    for _ in _looks(args):
        try:
            outcome = ramp.tick()
        except (StoreError, MetricsError, FlagFileError) as err:  # try again next time
            print(f"{PROG}: note: tick failed ({err}); trying again", file=sys.stderr)
            continue
        # Every step, each change of what the ramp waits for ("baking", "holding"), and
        # at least every HEARTBEAT seconds: a CI log shows progress, not a line a tick.
        now_saying = outcome.action.trigger.split(",")[0]
        ended = outcome.state is None or outcome.state.status != "running"
        late = time.monotonic() - shown >= HEARTBEAT
        if outcome.written or ended or now_saying != said or late:
            _report(outcome, args, out, dry_run=False)
            shown = time.monotonic()
        said = now_saying
        if ended:
            return _outcome_code(outcome.state)
    return _timed_out(args.timeout)


def check_usage(args: argparse.Namespace) -> None:
    """What the command line must say for ``ramp`` (exit 2): which live file comes later,
    from ``--file``, the ``PHASE`` named or (``ramp status``) every named live file."""
    if args.phase is not None:
        raise CliError(
            "ramp takes --file PATH|s3://BUCKET/KEY or a PHASE whose live file is named "
            f"(ramp {args.ramp_command} {args.phase}), not --phase: a phase file of the "
            "repository is released, not ramped",
            EXIT_USAGE,
        )
    if args.file is not None and args.target_phase is not None:
        raise CliError(
            f"ramp {args.ramp_command}: --file and PHASE both name a file; give one", EXIT_USAGE
        )
    if getattr(args, "min_shadow_reads", None) is not None and args.min_consistency is None:
        raise CliError(
            "ramp start: --min-shadow-reads sets what the consistency guard needs; it takes "
            "--min-consistency P too",
            EXIT_USAGE,
        )


NO_FILE = (
    "ramp needs --file PATH|s3://BUCKET/KEY, the live file a fleet reads, or a PHASE whose "
    "live file is named in ai-agent-rollout.toml or $ROLLOUT_LIVE_<PHASE>"
)
