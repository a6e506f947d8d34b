"""The guarded ramp's decisions: durations, steps, the guards' verdict, what a tick does."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

import pytest

from ai_agent_handler.ops.cloudwatch import Window, period_for
from ai_agent_handler.ops.ramp import (
    LEASE_SECONDS,
    Evidence,
    FlagView,
    Pending,
    Plan,
    RampError,
    RampState,
    Verdict,
    decide,
    format_duration,
    judge,
    parse_duration,
    parse_steps,
    realign,
    resolve_pending,
)

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
    with pytest.raises(RampError, match=r"30m, 2h, 1d"):
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


def state(**changes: Any) -> RampState:
    base = RampState(
        id="r1",
        source="s3://b/production.flagd.json",
        plan=PLAN,
        status="running",
        step=1,
        start_percent=0,
        step_started=T0,
        flag_version=7,
        started=T0 - 2 * HOUR,
        started_by="alice",
        updated=T0,
    )
    return replace(base, **changes)


OK = Verdict("healthy", ("fine",))
HOLD = Verdict("hold", ("too little data",))
BREACH = Verdict("breach", ("alarm receivers-5xx is in ALARM",))
AT_5 = FlagView(7, 5)


@pytest.mark.parametrize(
    ("ramp", "flag", "verdict", "now", "kind", "step", "percent", "trigger"),
    [
        (state(), AT_5, OK, T0 + HOUR, "advance", 2, 25, "bake done, guards healthy"),
        (state(), AT_5, OK, T0 + HOUR / 2, "none", 1, 5, "baking, 30m left"),
        (state(), AT_5, HOLD, T0 + HOUR, "none", 1, 5, "holding"),
        # An alarm rolls back mid-bake, one step.
        (state(), AT_5, BREACH, T0 + HOUR / 2, "rollback", 0, 1, "guard breach"),
        # From the first step back to where the ramp started.
        (
            state(step=0, start_percent=0),
            FlagView(7, 1),
            BREACH,
            T0,
            "rollback",
            -1,
            0,
            "guard breach",
        ),
        (state(step=4), FlagView(7, 100), OK, T0 + HOUR, "done", 4, 100, "last step baked"),
        (state(step=4), FlagView(7, 100), BREACH, T0 + HOUR, "rollback", 3, 50, "guard breach"),
        (
            state(),
            FlagView(8, 5),
            None,
            T0 + HOUR,
            "pause",
            1,
            5,
            "flag file changed outside the ramp",
        ),
        (
            state(),
            FlagView(None, None),
            None,
            T0 + HOUR,
            "pause",
            1,
            5,
            "flag file changed outside the ramp",
        ),
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


PENDING = Pending("advance", 2, 25, 7, T0, "bob@host:1")


@pytest.mark.parametrize(
    ("flag", "now", "verdict"),
    [
        (AT_5, T0 + datetime.timedelta(seconds=5), "wait"),
        (AT_5, T0 + datetime.timedelta(seconds=LEASE_SECONDS + 1), "drop"),
        (FlagView(8, 25), T0 + datetime.timedelta(seconds=5), "adopt"),
        (FlagView(8, 30), T0 + datetime.timedelta(seconds=5), "moved"),
    ],
)
def test_what_became_of_an_announced_step(
    flag: FlagView, now: datetime.datetime, verdict: str
) -> None:
    assert resolve_pending(state(pending=PENDING), flag, now)[0] == verdict


def test_the_state_survives_its_json() -> None:
    original = state(pending=PENDING, reason="why")
    assert RampState.from_json(original.to_json()) == original


@pytest.mark.parametrize("broken", [{}, {"ramp": "x"}, {**state().to_json(), "step": "two"}])
def test_an_unreadable_state_is_a_ramp_error(broken: dict[str, Any]) -> None:
    with pytest.raises(RampError, match="not readable"):
        RampState.from_json(broken)


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
