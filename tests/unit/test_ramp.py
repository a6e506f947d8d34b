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
    COUNTERS,
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
from ai_agent_handler.ops.shadow import (
    ShadowCounts,
    consistency,
    parse_min_consistency,
    percent_text,
)
from ai_agent_handler.ops.times import Window, format_duration, parse_duration
from ai_agent_handler.receiver import SHADOW_METRICS
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


# -- the consistency guard: shadow reads ----------------------------------------------------

GUARDED = replace(PLAN, min_consistency=99.9, min_shadow_reads=100)


def shadow(
    same: float = 0, different: float = 0, legacy_only: float = 0, composite_only: float = 0
) -> dict[str, dict[str, float]]:
    """The four shadow-read counters as CloudWatch sums them (composite key reads)."""
    values = (same, different, legacy_only, composite_only)
    return {m: {"composite": v} for m, v in zip(SHADOW_METRICS, values, strict=True)}


@pytest.mark.parametrize(
    ("plan", "alarms", "sums", "health", "says", "never"),
    [
        # No guard: the shadow counters are not looked at, whatever they say.
        (PLAN, {}, {**HEALTHY, **shadow(10, 90)}, "healthy", "50 composite", "consistency"),
        (
            GUARDED,
            {},
            {**HEALTHY, **shadow(1999, 1, legacy_only=40)},
            "healthy",
            "shadow read consistency 99.95 % >= 99.9 % (1999 same, 1 different of 2000 compared)",
            "too few",
        ),
        # Exactly at the minimum is not below it.
        (GUARDED, {}, {**HEALTHY, **shadow(999, 1)}, "healthy", "99.9 % >= 99.9 %", ""),
        (
            GUARDED,
            {},
            {**HEALTHY, **shadow(985, 15)},
            "breach",
            "shadow read consistency 98.5 % < 99.9 %: 985 same, 15 different of 1000 compared",
            "",
        ),
        # 99.899 % is not rounded up to the minimum it is below.
        (
            GUARDED,
            {},
            {**HEALTHY, **shadow(99899, 101)},
            "breach",
            "consistency 99.899 % < 99.9 %",
            "",
        ),
        (
            GUARDED,
            {},
            {**HEALTHY, **shadow(60, 39, composite_only=500)},
            "hold",
            "too few shadow reads: 99 compared, 100 needed",
            "",
        ),
        (
            replace(GUARDED, min_consistency=50.0, min_shadow_reads=5),
            {},
            {**HEALTHY, **shadow(3, 2)},
            "healthy",
            "60 % >= 50 %",
            "",
        ),
        # A hold never masks another guard's breach.
        (
            GUARDED,
            {"receivers-5xx": "ALARM"},
            {**HEALTHY, **shadow(5, 0)},
            "breach",
            "alarm receivers-5xx is in ALARM",
            "too few shadow reads",
        ),
        (
            GUARDED,
            {},
            {**counters(KeyDecisions=(50, 500), FlagEvaluationErrors=(1, 0)), **shadow(5, 0)},
            "breach",
            "1 flag evaluation error",
            "too few shadow reads",
        ),
        # Two breaches are both said.
        (
            GUARDED,
            {"receivers-5xx": "ALARM"},
            {**HEALTHY, **shadow(900, 100)},
            "breach",
            "alarm receivers-5xx is in ALARM | shadow read consistency 90 % < 99.9 %",
            "",
        ),
        # Too few composite decisions and too few shadow reads: one hold, both reasons.
        (
            GUARDED,
            {},
            {**counters(KeyDecisions=(9, 500)), **shadow(1, 0)},
            "hold",
            "10 needed | too few shadow reads: 1 compared, 100 needed",
            "",
        ),
    ],
)
def test_the_consistency_guards_verdict(
    plan: Plan,
    alarms: dict[str, str | None],
    sums: dict[str, dict[str, float]],
    health: str,
    says: str,
    never: str,
) -> None:
    verdict = judge(Evidence(WINDOW, alarms, sums), plan)
    said = " | ".join(verdict.reasons)
    assert verdict.health == health, said
    assert says in said
    if never:
        assert never not in said


def test_the_consistency_guard_is_not_applied_at_0_percent() -> None:
    low = Evidence(WINDOW, {"receivers-5xx": "OK"}, {**counters(), **shadow(1, 99)})
    assert judge(low, GUARDED, composite=False) == Verdict(
        "healthy", ("at 0 %: alarms OK, no flag evaluation errors",)
    )
    none = Evidence(WINDOW, {"receivers-5xx": "OK"}, counters())
    assert judge(none, GUARDED, composite=False).health == "healthy"
    assert judge(low, GUARDED).health == "breach"  # at a real step it is


def test_only_a_plan_with_the_consistency_guard_reads_the_shadow_counters() -> None:
    assert PLAN.counters == COUNTERS
    assert GUARDED.counters == (*COUNTERS, *SHADOW_METRICS)
    assert PLAN.guard_words() == ""
    assert GUARDED.guard_words() == "min consistency 99.9 % over 100 shadow reads"


def test_the_consistency_is_one_figure_of_same_and_different() -> None:
    assert consistency(0, 0) is None
    assert consistency(999, 1) == pytest.approx(99.9)
    assert consistency(5, 0) == 100.0
    counts = ShadowCounts.of({**shadow(3, 1, legacy_only=7, composite_only=9)})
    assert (counts.compared, counts.sampled, counts.consistency) == (4, 20, 75.0)
    # Both key schemes add up; a counter nobody reported is 0.
    both = ShadowCounts.of({"ShadowSame": {"composite": 2, "legacy": 1}})
    assert (both.same, both.different, both.consistency) == (3, 0, 100.0)


@pytest.mark.parametrize(
    ("value", "limits", "text"),
    [
        (99.95, (), "99.95"),
        (100.0, (), "100"),
        (98.5, (99.9,), "98.5"),
        (99.9996, (), "99.9996"),  # never 100 while a copy disagrees
        (99.8999, (99.9,), "99.8999"),  # never the minimum it is below
        (66.666666, (), "66.67"),
    ],
)
def test_consistency_figures_never_round_across_a_limit(
    value: float, limits: tuple[float, ...], text: str
) -> None:
    assert percent_text(value, limits) == text


def test_the_guard_survives_its_metadata_string_and_old_states_have_none() -> None:
    guarded = state(plan=replace(GUARDED, min_consistency=99.5, min_shadow_reads=250))
    assert RampState.decode(guarded.encode()) == guarded
    data = json.loads(state().encode())
    assert data["plan"]["min_consistency"] is None and data["plan"]["min_shadow_reads"] == 100
    # A state written before the guard existed has neither field: no guard.
    for name in ("min_consistency", "min_shadow_reads"):
        del data["plan"][name]
    old = RampState.decode(json.dumps(data))
    assert (old.plan.min_consistency, old.plan.min_shadow_reads) == (None, 100)
    assert old == state()


@pytest.mark.parametrize(
    ("plan", "says"),
    [
        ({"min_consistency": 0}, "plan.min_consistency must be a percentage above 0"),
        ({"min_consistency": 100.5}, "plan.min_consistency must be a percentage above 0"),
        ({"min_consistency": float("nan")}, "plan.min_consistency must be a percentage"),
        ({"min_consistency": "99.9"}, "plan.min_consistency must be a percentage, not '99.9'"),
        ({"min_consistency": True}, "plan.min_consistency must be a percentage"),
        ({"min_shadow_reads": 0}, "plan.min_shadow_reads must be a whole number from 1"),
        ({"min_shadow_reads": 1.5}, "plan.min_shadow_reads must be a whole number"),
    ],
)
def test_a_damaged_guard_is_a_ramp_error(plan: dict[str, Any], says: str) -> None:
    with pytest.raises(RampError, match=re.escape(says)):
        RampState.decode(_damaged(plan=plan))


@pytest.mark.parametrize(
    ("text", "value"), [("99.9", 99.9), ("100", 100.0), ("0.5", 0.5), (" 99.5% ", 99.5)]
)
def test_min_consistency_values(text: str, value: float) -> None:
    assert parse_min_consistency(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0", "above 0 and at most 100"),
        ("-1", "above 0 and at most 100"),
        ("100.1", "above 0 and at most 100"),
        ("nan", "above 0 and at most 100"),
        ("inf", "above 0 and at most 100"),
        ("high", "not a percentage"),
        ("", "not a percentage"),
    ],
)
def test_bad_min_consistency_values(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_min_consistency(text)


def test_the_plan_line_and_the_evidence_lines_show_the_guard() -> None:
    from ai_agent_handler.ops.cli_ramp import describe, status_lines
    from ai_agent_handler.ops.ramp import Action
    from ai_agent_handler.ops.ramp_io import Current, Outcome
    from ai_agent_handler.ops.store import Snapshot

    guarded = state(plan=GUARDED)
    current = Current(Snapshot(b"{}", None), {}, AT_5, guarded)
    plan_line = status_lines(current, "f.json", T0)[2]
    assert plan_line.endswith("tolerance 0.25, min consistency 99.9 % over 100 shadow reads")
    plain = status_lines(replace(current, state=state()), "f.json", T0)[2]
    assert plain.endswith("tolerance 0.25")
    evidence = Evidence(WINDOW, {}, {**HEALTHY, **shadow(985, 15, 2, 7)})
    verdict = judge(evidence, GUARDED)
    action = Action("rollback", 0, 1, "guard breach", verdict.reasons, verdict)
    lines = describe(Outcome(action, guarded, False, evidence))
    assert "  shadow reads: same 985, different 15, legacy only 2, composite only 7" in lines
    assert any("shadow read consistency 98.5 % < 99.9 %" in line for line in lines)
    unguarded = describe(Outcome(action, state(), False, Evidence(WINDOW, {}, HEALTHY)))
    assert not any("shadow reads:" in line for line in unguarded)
