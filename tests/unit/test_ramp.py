"""The guarded ramp's decisions: durations, steps, the guards' verdict, what a tick does."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import replace
from typing import Any

import pytest

from ai_agent_handler.exceptions import RampError
from ai_agent_handler.ops.cloudwatch import period_for
from ai_agent_handler.ops.ramp import (
    Evidence,
    FlagView,
    Plan,
    RampState,
    Verdict,
    content_digest,
    decide,
    judge,
    next_tick,
    parse_steps,
    realign,
)
from ai_agent_handler.ops.times import Window, format_duration, parse_duration
from tests.support import FLAGS_DIR

T0 = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.timezone.utc)
HOUR = datetime.timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("45s", 45),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        (" 2H ", 7200),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "1.5h", "2h junk", "1 h"])
def test_bad_durations_say_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"30m, 2h, 1d"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "steps"),
    [("1,5,25,50,100", (1, 5, 25, 50, 100)), ("10", (10,)), ("1%, 50%,100", (1, 50, 100))],
)
def test_steps(text: str, steps: tuple[int, ...]) -> None:
    assert parse_steps(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5,1", "must rise"),
        ("5,5", "must rise"),
        ("0,5", "1 to 100"),
        ("5,101", "1 to 100"),
        ("1,,5", "not a percentage"),
        ("a", "not a percentage"),
    ],
)
def test_bad_steps(text: str, message: str) -> None:
    with pytest.raises(RampError, match=message):
        parse_steps(text)


PLAN = Plan("production", (1, 5, 25, 50, 100), 3600.0, ("receivers-5xx",), 10, 0.25)
WINDOW = Window(T0, T0 + HOUR)


def counters(**sums: tuple[float, float]) -> dict[str, dict[str, float]]:
    """``KeyDecisions=(composite, legacy)`` -> the nested sums."""
    out: dict[str, dict[str, float]] = {
        m: {"composite": 0.0, "legacy": 0.0}
        for m in (
            "KeyDecisions",
            "FlagEvaluationErrors",
            "LambdaInvokeErrors",
            "StreamChunksFailed",
        )
    }
    for metric, (composite, legacy) in sums.items():
        out[metric] = {"composite": composite, "legacy": legacy}
    return out


HEALTHY = counters(KeyDecisions=(50, 500), LambdaInvokeErrors=(1, 10))


@pytest.mark.parametrize(
    ("alarms", "sums", "baseline", "health", "says"),
    [
        ({"receivers-5xx": "OK"}, HEALTHY, None, "healthy", "50 composite"),
        ({"receivers-5xx": "ALARM"}, HEALTHY, None, "breach", "alarm receivers-5xx is in ALARM"),
        ({"receivers-5xx": "INSUFFICIENT_DATA"}, HEALTHY, None, "hold", "INSUFFICIENT_DATA"),
        ({"receivers-5xx": None}, HEALTHY, None, "hold", "does not exist"),
        (
            {},
            counters(KeyDecisions=(50, 500), FlagEvaluationErrors=(0, 1)),
            None,
            "breach",
            "1 flag evaluation error",
        ),
        ({}, counters(KeyDecisions=(9, 500)), None, "hold", "too little data: 9"),
        # 4 % against 2 %: worse than legacy by more than 25 %.
        (
            {},
            counters(KeyDecisions=(50, 500), LambdaInvokeErrors=(2, 10)),
            None,
            "breach",
            "LambdaInvokeErrors per decision: composite 0.04 > legacy 0.02",
        ),
        # 2.4 % against 2 %: within the tolerance.
        ({}, counters(KeyDecisions=(500, 500), LambdaInvokeErrors=(12, 10)), None, "healthy", ""),
        (
            {},
            counters(KeyDecisions=(50, 500), StreamChunksFailed=(3, 0)),
            None,
            "breach",
            "StreamChunksFailed",
        ),
        # Too little data never rolls back on ratios (an alarm would).
        (
            {},
            counters(KeyDecisions=(5, 500), LambdaInvokeErrors=(5, 0)),
            None,
            "hold",
            "too little data",
        ),
        # Late steps: no legacy traffic left; the span before the ramp is the reference.
        (
            {},
            counters(KeyDecisions=(500, 0), LambdaInvokeErrors=(10, 0)),
            counters(KeyDecisions=(0, 1000), LambdaInvokeErrors=(0, 20)),
            "healthy",
            "",
        ),
        (
            {},
            counters(KeyDecisions=(500, 0), LambdaInvokeErrors=(30, 0)),
            counters(KeyDecisions=(0, 1000), LambdaInvokeErrors=(0, 20)),
            "breach",
            "(before the ramp)",
        ),
        (
            {},
            counters(KeyDecisions=(500, 0), LambdaInvokeErrors=(3, 0)),
            None,
            "hold",
            "no legacy traffic to compare with",
        ),
    ],
)
def test_the_guards_verdict(
    alarms: dict[str, str | None],
    sums: dict[str, dict[str, float]],
    baseline: dict[str, dict[str, float]] | None,
    health: str,
    says: str,
) -> None:
    evidence = Evidence(WINDOW, alarms, sums, baseline, WINDOW if baseline else None)
    verdict = judge(evidence, PLAN)
    assert verdict.health == health
    assert says in " | ".join(verdict.reasons)


def test_unreadable_metrics_hold_and_say_why() -> None:
    verdict = judge(Evidence(WINDOW, error="AccessDenied: no"), PLAN)
    assert verdict == Verdict("hold", ("metrics unreadable: AccessDenied: no",))
    # The alarms were read before the counters failed: one in ALARM still rolls back.
    fired = Evidence(WINDOW, {"receivers-5xx": "ALARM"}, error="Throttling: slow down")
    assert judge(fired, PLAN) == Verdict("breach", ("alarm receivers-5xx is in ALARM",))
    quiet = Evidence(WINDOW, {"receivers-5xx": "OK"}, error="Throttling: slow down")
    assert judge(quiet, PLAN).health == "hold"


def test_min_decisions_zero_judges_without_traffic() -> None:
    verdict = judge(Evidence(WINDOW, {}, counters()), replace(PLAN, min_decisions=0))
    assert verdict.health == "healthy"


DIGEST = "d" * 16
#: The file as the ramp wrote it at 5 %, the step written at T0.
AT_5 = FlagView(DIGEST, 5, 7, T0)


def state(**changes: Any) -> RampState:
    base = RampState(
        id="r1",
        plan=PLAN,
        status="running",
        step=1,
        start_percent=0,
        expects=DIGEST,
        started=T0 - 2 * HOUR,
        started_by="alice",
    )
    return replace(base, **changes)


def at(percent: int | None, digest: str = DIGEST, modified: datetime.datetime = T0) -> FlagView:
    return FlagView(digest, percent, 7, modified)


OK = Verdict("healthy", ("fine",))
HOLD = Verdict("hold", ("too little data",))
BREACH = Verdict("breach", ("alarm receivers-5xx is in ALARM",))


@pytest.mark.parametrize(
    ("ramp", "flag", "verdict", "now", "kind", "step", "percent", "trigger"),
    [
        (state(), AT_5, OK, T0 + HOUR, "advance", 2, 25, "bake done, guards healthy"),
        (state(), AT_5, OK, T0 + HOUR / 2, "none", 1, 5, "baking, 30m left"),
        # The bake counts from the file's write on the store's clock, not from any state.
        (state(), at(5, modified=T0 + HOUR / 2), OK, T0 + HOUR, "none", 1, 5, "baking, 30m"),
        (state(), AT_5, HOLD, T0 + HOUR, "none", 1, 5, "holding"),
        # An alarm rolls back mid-bake, one step.
        (state(), AT_5, BREACH, T0 + HOUR / 2, "rollback", 0, 1, "guard breach"),
        # From the first step back to where the ramp started.
        (state(step=0), at(1), BREACH, T0, "rollback", -1, 0, "guard breach"),
        # Before the first step there is nothing to roll back to: pause, never step -2.
        (state(step=-1), at(0), BREACH, T0, "pause", -1, 0, "guard breach"),
        # Resumed at 0 %: after the bake, step 1 (the alarms were the guards).
        (state(step=-1), at(0), OK, T0 + HOUR, "advance", 0, 1, "bake done"),
        (state(step=4), at(100), OK, T0 + HOUR, "done", 4, 100, "last step baked"),
        (state(step=4), at(100), BREACH, T0 + HOUR, "rollback", 3, 50, "guard breach"),
        # Content the ramp did not write, whatever the version says.
        (state(), at(5, "e" * 16), None, T0 + HOUR, "pause", 1, 5, "flag file changed outside"),
        (state(), at(None, "e" * 16), None, T0 + HOUR, "pause", 1, 5, "flag file changed"),
        (
            state(status="paused", reason="guard breach"),
            AT_5,
            None,
            T0 + HOUR,
            "none",
            1,
            5,
            "ramp is paused",
        ),
        (state(status="done"), AT_5, None, T0 + HOUR, "none", 1, 5, "ramp is done"),
    ],
)
def test_what_a_tick_does(
    ramp: RampState,
    flag: FlagView,
    verdict: Verdict | None,
    now: datetime.datetime,
    kind: str,
    step: int,
    percent: int,
    trigger: str,
) -> None:
    action = decide(ramp, flag, verdict, now)
    assert (action.kind, action.step, action.percent) == (kind, step, percent)
    assert action.trigger.startswith(trigger)
    assert action.writes == (kind != "none")


def test_a_running_ramp_cannot_be_decided_without_the_guards() -> None:
    with pytest.raises(RampError):
        decide(state(), AT_5, None, T0 + HOUR)


@pytest.mark.parametrize(
    ("ramp", "flag", "now", "says"),
    [
        (state(), AT_5, T0 + HOUR / 2, "bake until 2026-11-01T13:00:00+00:00 (30m left), then"),
        (state(), AT_5, T0 + HOUR, "bake done: step 3/5 (25 %) with the guards healthy"),
        (state(step=4), at(100), T0 + HOUR, "bake done: the ramp is done"),
        (state(step=-1), at(0), T0 + HOUR, "step 1/5 (1 %) with no alarm in ALARM"),
        (state(), at(0, "e" * 16), T0, "pause the ramp: the flag file changed outside it (now 0"),
        (state(status="paused"), AT_5, T0, "nothing while paused"),
        (state(status="done"), AT_5, T0, "nothing: the ramp is done"),
    ],
)
def test_status_says_what_the_next_tick_does(
    ramp: RampState, flag: FlagView, now: datetime.datetime, says: str
) -> None:
    assert says in next_tick(ramp, flag, now)


def test_at_0_percent_the_guards_are_the_alarms_and_the_evaluation_errors() -> None:
    quiet = Evidence(WINDOW, {"receivers-5xx": "OK"}, counters())
    assert judge(quiet, PLAN).health == "hold"  # too little data, at a real step
    assert judge(quiet, PLAN, composite=False).health == "healthy"
    fired = Evidence(WINDOW, {"receivers-5xx": "ALARM"}, counters())
    assert judge(fired, PLAN, composite=False).health == "breach"
    errors = Evidence(WINDOW, {}, counters(FlagEvaluationErrors=(0, 2)))
    assert judge(errors, PLAN, composite=False).health == "breach"


@pytest.mark.parametrize(
    ("composite_failures", "tolerance", "health"),
    [
        # Legacy fails 2 % (10 of 500); composite 500 decisions.
        (12, 0.25, "healthy"),  # 2.4 %: 1.2x legacy
        (12.5, 0.25, "healthy"),  # 2.5 %: exactly 1.25x legacy is not worse
        (13, 0.25, "breach"),  # 2.6 %: 1.3x
        (13, 0.5, "healthy"),  # the same with twice the tolerance
        (15, 0.5, "healthy"),  # exactly 1.5x
        (16, 0.5, "breach"),
        (10.5, 0.0, "breach"),  # no slack: anything above legacy
        (10, 0.0, "healthy"),
    ],
)
def test_the_tolerance_boundary(composite_failures: float, tolerance: float, health: str) -> None:
    sums = counters(KeyDecisions=(500, 500), LambdaInvokeErrors=(composite_failures, 10))
    verdict = judge(Evidence(WINDOW, {}, sums), replace(PLAN, tolerance=tolerance))
    assert verdict.health == health


def test_the_state_survives_its_metadata_string() -> None:
    original = state(reason="why", step=-1)
    assert RampState.decode(original.encode()) == original


def _damaged(**changes: Any) -> str:
    data = json.loads(state().encode())
    plan = changes.pop("plan", {})
    data["plan"].update(plan)
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[1, 2]", "not a JSON object"),
        ("{", "not a JSON object"),
        (42, "not a JSON object"),
        ('"x"', "not a JSON object"),
        (json.dumps({"id": "r1"}), "has no 'plan'"),
        (_damaged(step=5), "step must be a whole number from -1 to 4"),
        (_damaged(step=-2), "step must be"),
        (_damaged(step="two"), "step must be"),
        (_damaged(step=True), "step must be"),
        (_damaged(plan={"steps": []}), "at least one step"),
        (_damaged(plan={"steps": [5, 1]}), "must rise"),
        (_damaged(plan={"steps": [0, 5]}), "plan.steps must be a whole number from 1 to 100"),
        (_damaged(plan={"steps": "1,5"}), "not a list"),
        (_damaged(plan={"bake": float("nan")}), "plan.bake must be from 0"),
        (_damaged(plan={"bake": 1e300}), "plan.bake must be from 0"),
        (_damaged(plan={"bake": -1}), "plan.bake must be from 0"),
        (_damaged(plan={"bake": "2h"}), "plan.bake must be a number"),
        (_damaged(plan={"tolerance": float("inf")}), "plan.tolerance"),
        (_damaged(plan={"alarms": [1]}), "plan.alarms must be a string"),
        (_damaged(status="running-ish"), "status must be one of"),
        (_damaged(start_percent=1), "start_percent must be a whole number from 0 to 0"),
        (_damaged(started="yesterday"), "started is not a time"),
        (_damaged(expects=None), "expects must be a string"),
    ],
)
def test_a_damaged_state_is_a_ramp_error_that_names_the_damage(text: object, says: str) -> None:
    with pytest.raises(RampError, match=re.escape(says)):
        RampState.decode(text)


def test_the_content_digest_ignores_metadata_but_not_the_rule() -> None:
    doc = json.loads((FLAGS_DIR / "production.flagd.json").read_text())
    same = {**doc, "metadata": {**doc["metadata"], "version": 99, "ramp": "{}"}}
    assert content_digest(same) == content_digest(doc)
    edited = json.loads(json.dumps(doc))
    edited["flags"]["composite-partition-key"]["targeting"]["if"][2]["fractional"][1][1] = 5
    assert content_digest(edited) != content_digest(doc)


@pytest.mark.parametrize(
    ("percent", "index"), [(0, -1), (1, 0), (4, 0), (5, 1), (99, 3), (100, 4), (None, -1)]
)
def test_realign(percent: int | None, index: int) -> None:
    assert realign(PLAN.steps, percent) == index


@pytest.mark.parametrize(
    ("age", "span", "period"),
    [
        (datetime.timedelta(hours=1), HOUR, 60),
        (datetime.timedelta(days=2), datetime.timedelta(days=2), 120),
        (datetime.timedelta(days=14), datetime.timedelta(days=14), 840),
        (datetime.timedelta(days=30), datetime.timedelta(days=30), 1800),
        (datetime.timedelta(days=90), datetime.timedelta(days=90), 7200),
    ],
)
def test_the_period_is_one_cloudwatch_accepts(
    age: datetime.timedelta, span: datetime.timedelta, period: int
) -> None:
    now = T0
    window = Window(now - age, now - age + span)
    assert period_for(window, now) == period
    assert window.seconds / period <= 1440


@pytest.mark.parametrize(
    "kind", ["start", "advance", "rollback", "pause", "resume", "abort", "promote", "none"]
)
def test_every_ramp_line_reads_at_the_start(kind: str) -> None:
    from ai_agent_handler.ops.cli_ramp import describe
    from ai_agent_handler.ops.ramp import Action
    from ai_agent_handler.ops.ramp_io import Outcome

    at_start = state(step=-1, status="paused" if kind == "resume" else "running")
    line = describe(Outcome(Action(kind, -1, 0, "operator"), at_start, written=False))[0]  # type: ignore[arg-type]
    assert "the start (0 %, before step 1/5)" in line
    assert not re.search(r"\b(at|to) before\b", line), line
