"""The guarded ramp against real parts: flag files (local and S3 on moto), moto's CloudWatch.

moto does not evaluate alarms, so the tests set their state; the counters are put as the
handlers' EMF lines would arrive, with timestamps on the test's clock (which runs 20 days
in the past, so every window is one moto can answer).
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from openfeature.evaluation_context import EvaluationContext

from ai_agent_handler.flag_file.provider import FlagFileProvider
from ai_agent_handler.ops import edits
from ai_agent_handler.ops.ramp_control import Ramp, state_location
from ai_agent_handler.ops.store import FlagStore, open_store
from tests.support import BUCKET, FLAGS_DIR, REGION
from tests.support.cli import Runner
from tests.support.flags import value

STEPS = (1, 5, 25, 50, 100)
ALARM = "agent-receivers-errors"
HOUR = datetime.timedelta(hours=1)


class Clock:
    """The ramp's clock: starts 20 days ago, moves only when told."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=20)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, delta: datetime.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cw(aws: None) -> Any:
    client = boto3.client("cloudwatch", region_name=REGION)
    client.put_metric_alarm(
        AlarmName=ALARM,
        Namespace="receivers",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    client.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="test")
    return client


def set_alarm(cw: Any, state: str) -> None:
    cw.set_alarm_state(AlarmName=ALARM, StateValue=state, StateReason="test")


def report(
    cw: Any, at: datetime.datetime, phase: str = "production", **sums: tuple[int, int]
) -> None:
    """Counters as the fleet's EMF lines become metrics: ``KeyDecisions=(composite, legacy)``."""
    data = []
    for metric, values in sums.items():
        for scheme, count in zip(("composite", "legacy"), values, strict=True):
            if count:
                data.append(
                    {
                        "MetricName": metric,
                        "Dimensions": [
                            {"Name": "phase", "Value": phase},
                            {"Name": "key_scheme", "Value": scheme},
                        ],
                        "Value": count,
                        "Unit": "Count",
                        "Timestamp": at,
                    }
                )
    cw.put_metric_data(Namespace="ai_agent_handler", MetricData=data)


def healthy(cw: Any, clock: Clock) -> None:
    report(
        cw,
        clock.now + datetime.timedelta(minutes=1),
        KeyDecisions=(40, 400),
        LambdaInvokeErrors=(0, 2),
    )


@pytest.fixture(params=["local", "s3"])
def flag_store(request: pytest.FixtureRequest, tmp_path: Path, aws: None) -> FlagStore:
    """The production live file, seeded from the shipped one (legacy everywhere)."""
    if request.param == "local":
        path = tmp_path / "production.flagd.json"
        shutil.copyfile(FLAGS_DIR / "production.flagd.json", path)
        return open_store(str(path))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    key = "ai-agent/production.flagd.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=(FLAGS_DIR / "production.flagd.json").read_bytes())
    return open_store(f"s3://{BUCKET}/{key}", s3_client=s3)


def ramp_of(store: FlagStore, cw: Any, clock: Clock, who: str = "alice") -> Ramp:
    return Ramp(store, actor=who, cloudwatch_client=cw, clock=clock)


def flag_doc(store: FlagStore) -> dict[str, Any]:
    data = store.read().data
    assert data is not None
    return json.loads(data)


def percent_of(store: FlagStore) -> int | None:
    return edits.read_state(flag_doc(store)).percent


def audit(store: FlagStore) -> list[dict[str, Any]]:
    """Every audit record of the flag file, oldest first."""
    location = store.audit_location
    if location.startswith("s3://"):
        s3 = store.client  # type: ignore[attr-defined]
        bucket, prefix = location[5:].split("/", 1)
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        records = [
            json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            for item in listed
        ]
        return sorted(records, key=lambda r: r["time"])
    path = Path(location)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ramp_records(store: FlagStore) -> list[dict[str, Any]]:
    return [r for r in audit(store) if "ramp" in r]


def state_bytes(store: FlagStore) -> bytes | None:
    return open_store(state_location(store), s3_client=getattr(store, "_client", None)).read().data


@pytest.fixture
def started(flag_store: FlagStore, cw: Any, clock: Clock) -> Ramp:
    ramp = ramp_of(flag_store, cw, clock)
    outcome = ramp.start(
        steps=STEPS, bake=3600.0, alarms=(ALARM,), min_decisions=20, reason="CHG-200"
    )
    assert outcome.written and outcome.action.kind == "start"
    return ramp


def test_a_healthy_ramp_walks_every_step_then_is_done(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    assert percent_of(flag_store) == 1
    versions = [edits.version_of(flag_doc(flag_store))]
    for step, percent in enumerate(STEPS[1:], start=1):
        healthy(cw, clock)
        clock.advance(HOUR / 2)
        before = (flag_store.read().data, state_bytes(flag_store), len(audit(flag_store)))
        baking = started.tick()
        assert (baking.action.kind, baking.written) == ("none", False)
        assert baking.action.trigger == "baking, 30m left"
        # A tick that changes nothing writes nothing: flag, state, audit.
        assert (flag_store.read().data, state_bytes(flag_store), len(audit(flag_store))) == before
        clock.advance(HOUR / 2)
        outcome = started.tick()
        assert (outcome.action.kind, outcome.action.percent) == ("advance", percent)
        assert percent_of(flag_store) == percent
        versions.append(edits.version_of(flag_doc(flag_store)))
        record = audit(flag_store)[-1]
        assert record["command"] == f"ramp advance {percent}"
        assert record["ramp"]["trigger"] == "bake done, guards healthy"
        evidence = record["ramp"]["evidence"]
        assert evidence["alarms"] == {ALARM: "OK"}
        assert evidence["counters"]["KeyDecisions"] == {"composite": 40.0, "legacy": 400.0}
        assert record["version_after"] == versions[-1]
        assert outcome.state is not None and outcome.state.step == step
    healthy(cw, clock)
    clock.advance(HOUR)
    finished = started.tick()
    assert finished.action.kind == "done" and finished.state is not None
    assert finished.state.status == "done"
    # The file moved once per step, and every action is one audit record.
    assert versions == list(range(versions[0] or 0, (versions[0] or 0) + len(STEPS)))
    actions = [r["ramp"]["action"] for r in ramp_records(flag_store)]
    assert actions == ["start", "advance", "advance", "advance", "advance", "done"]
    assert edits.read_state(flag_doc(flag_store)).kind == "composite-everywhere"
    assert started.tick().written is False


def endpoints_composite(store: FlagStore, folder: Path) -> set[str]:
    """The endpoints a handler's provider gives the composite key, out of 300."""
    path = folder / f"eval-{len(list(folder.glob('eval-*')))}.json"
    path.write_bytes(flag_doc_bytes(store))
    provider = FlagFileProvider(str(path))
    provider.initialize(EvaluationContext())
    names = [f"aws-prod-{n}" for n in range(300)]
    return {e for e in names if value(provider, e)}


def flag_doc_bytes(store: FlagStore) -> bytes:
    data = store.read().data
    assert data is not None
    return data


def test_an_alarm_mid_bake_rolls_back_one_step_and_pauses(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock, tmp_path: Path
) -> None:
    for _ in range(2):  # to 25 %
        healthy(cw, clock)
        clock.advance(HOUR)
        started.tick()
    assert percent_of(flag_store) == 25
    at_25 = endpoints_composite(flag_store, tmp_path)
    clock.advance(HOUR / 4)
    set_alarm(cw, "ALARM")
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("rollback", 5)
    assert outcome.state is not None and outcome.state.status == "paused"
    assert percent_of(flag_store) == 5
    # The stable hash moved back only the endpoints the 25 % step had moved.
    at_5 = endpoints_composite(flag_store, tmp_path)
    assert at_5 < at_25 and 0 < len(at_5) < len(at_25)
    record = audit(flag_store)[-1]
    assert record["command"] == "ramp rollback 5"
    assert record["ramp"]["trigger"] == "guard breach"
    assert record["ramp"]["reasons"] == [f"alarm {ALARM} is in ALARM"]
    assert record["ramp"]["evidence"]["alarms"] == {ALARM: "ALARM"}
    # Paused: later ticks do nothing, whatever the guards say.
    set_alarm(cw, "OK")
    clock.advance(HOUR * 3)
    assert started.tick().written is False and percent_of(flag_store) == 5


@pytest.mark.parametrize("fault", ["INSUFFICIENT_DATA", "too few decisions", "unreadable"])
def test_evidence_that_cannot_judge_holds_and_writes_nothing(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock, fault: str
) -> None:
    if fault == "INSUFFICIENT_DATA":
        healthy(cw, clock)
        set_alarm(cw, "INSUFFICIENT_DATA")
    elif fault == "too few decisions":
        report(cw, clock.now + datetime.timedelta(minutes=1), KeyDecisions=(19, 400))
    else:
        healthy(cw, clock)
        # CloudWatch that cannot be reached: nothing listens on port 9 of loopback.
        started._cloudwatch = boto3.client(
            "cloudwatch",
            region_name=REGION,
            endpoint_url="http://127.0.0.1:9",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        )
    clock.advance(HOUR * 2)
    before = (flag_store.read().data, state_bytes(flag_store), len(audit(flag_store)))
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.trigger) == ("none", "holding")
    assert outcome.written is False
    assert (flag_store.read().data, state_bytes(flag_store), len(audit(flag_store))) == before
    said = " ".join(outcome.action.reasons)
    expected = {
        "INSUFFICIENT_DATA": f"alarm {ALARM} is INSUFFICIENT_DATA",
        "too few decisions": "too little data: 19 composite decision(s), 20 needed",
        "unreadable": "metrics unreadable: cannot read the alarms from CloudWatch",
    }[fault]
    assert expected in said


def test_a_hand_edit_pauses_the_ramp_and_resume_continues_from_the_files_step(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock, capsys: Any
) -> None:
    healthy(cw, clock)
    clock.advance(HOUR)
    started.tick()  # 5 %
    operator = ramp_of(flag_store, cw, clock, who="bob")
    from ai_agent_handler.ops.store import commit

    commit(flag_store, lambda d: edits.set_percent(d, 30), command="percent 30", actor="bob")
    healthy(cw, clock)
    clock.advance(HOUR)
    outcome = started.tick()
    assert outcome.action.kind == "pause"
    assert outcome.action.trigger == "flag file changed outside the ramp"
    assert outcome.state is not None and outcome.state.status == "paused"
    assert percent_of(flag_store) == 30  # the operator's edit stands
    assert audit(flag_store)[-1]["ramp"]["action"] == "pause"
    # 30 % is no step of the ramp: resume says what to do.
    from ai_agent_handler.ops.ramp import RampError

    with pytest.raises(RampError, match=r"30 %, which is no step of the ramp"):
        operator.resume()
    commit(flag_store, lambda d: edits.set_percent(d, 25), command="percent 25", actor="bob")
    resumed = operator.resume(reason="back on a step")
    assert resumed.state is not None
    assert (resumed.state.status, resumed.state.step, resumed.state.percent) == ("running", 2, 25)
    assert resumed.notes == ("the file was moved to 25 %: resuming from there",)
    # The bake starts over at resume; then the ramp goes on from 25 %.
    healthy(cw, clock)
    clock.advance(HOUR / 2)
    assert started.tick().action.kind == "none"
    clock.advance(HOUR / 2)
    assert started.tick().action.percent == 50


def test_resume_after_a_rollback_bakes_the_step_it_went_back_to(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    healthy(cw, clock)
    clock.advance(HOUR)
    started.tick()  # 5 %
    set_alarm(cw, "ALARM")
    assert started.tick().action.kind == "rollback"  # 1 %, paused
    set_alarm(cw, "OK")
    resumed = started.resume(reason="INC-9 fixed")
    assert resumed.state is not None and (resumed.state.step, resumed.state.percent) == (0, 1)
    healthy(cw, clock)
    clock.advance(HOUR / 2)
    assert started.tick().action.kind == "none"
    clock.advance(HOUR / 2)
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("advance", 5)
    actions = [r["ramp"]["action"] for r in ramp_records(flag_store)]
    assert actions == ["start", "advance", "rollback", "resume", "advance"]


def test_abort_puts_the_percentage_back_and_promote_finishes(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    healthy(cw, clock)
    clock.advance(HOUR)
    started.tick()  # 5 %
    aborted = started.abort(reason="CHG-200 cancelled")
    assert aborted.state is not None and aborted.state.status == "aborted"
    assert percent_of(flag_store) == 0
    from ai_agent_handler.ops.ramp import RampError

    with pytest.raises(RampError, match="aborted"):
        started.resume()
    again = started.start(steps=(10, 100), bake=60.0, min_decisions=0)
    assert again.state is not None and again.state.percent == 10
    promoted = started.promote(reason="enough")
    assert promoted.state is not None and promoted.state.status == "done"
    assert edits.read_state(flag_doc(flag_store)).kind == "composite-everywhere"
    actions = [r["ramp"]["action"] for r in ramp_records(flag_store)]
    assert actions == ["start", "advance", "abort", "start", "promote"]


def test_dry_runs_write_nothing(flag_store: FlagStore, cw: Any, clock: Clock) -> None:
    ramp = ramp_of(flag_store, cw, clock)
    snapshot = flag_store.read().data
    planned = ramp.start(steps=STEPS, bake=3600.0, alarms=(ALARM,), dry_run=True)
    assert planned.action.kind == "start" and planned.written is False
    assert state_bytes(flag_store) is None and flag_store.read().data == snapshot
    ramp.start(steps=STEPS, bake=0.0, min_decisions=0)
    before = (flag_store.read().data, state_bytes(flag_store), len(audit(flag_store)))
    for lever in (ramp.pause, ramp.abort, ramp.promote):
        assert lever(dry_run=True).written is False
    assert ramp.tick(dry_run=True).action.kind == "advance"
    assert (flag_store.read().data, state_bytes(flag_store), len(audit(flag_store))) == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing alarm", "no such alarm: nope"),
        ("alarm firing", f"alarm {ALARM} is in ALARM now"),
        ("running", "a ramp is already running"),
        ("composite", "at 100 % already"),
        ("custom", "canonical percentage"),
    ],
)
def test_start_refuses_what_cannot_ramp(
    flag_store: FlagStore, cw: Any, clock: Clock, setup: str, message: str
) -> None:
    from ai_agent_handler.ops.ramp import RampError
    from ai_agent_handler.ops.store import commit

    ramp = ramp_of(flag_store, cw, clock)
    alarms: tuple[str, ...] = (ALARM,)
    if setup == "missing alarm":
        alarms = ("nope",)
    elif setup == "alarm firing":
        set_alarm(cw, "ALARM")
    elif setup == "running":
        ramp.start(steps=STEPS, bake=60.0, min_decisions=0)
    elif setup == "composite":
        commit(flag_store, lambda d: edits.set_everywhere(d, "composite"), command="set", actor="t")
    else:

        def custom(doc: dict[str, Any]) -> dict[str, Any]:
            doc = json.loads(json.dumps(doc))
            doc["flags"][next(iter(doc["flags"]))]["targeting"] = {
                "if": [True, "composite", "legacy"]
            }
            return doc

        commit(flag_store, custom, command="custom", actor="t")
    before = (flag_store.read().data, state_bytes(flag_store))
    with pytest.raises(RampError, match=message):
        ramp.start(steps=STEPS, bake=60.0, alarms=alarms)
    assert (flag_store.read().data, state_bytes(flag_store)) == before


def test_steps_at_or_below_the_files_percentage_are_skipped(
    flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    from ai_agent_handler.ops.store import commit

    commit(flag_store, lambda d: edits.set_percent(d, 5), command="percent 5", actor="t")
    outcome = ramp_of(flag_store, cw, clock).start(steps=STEPS, bake=60.0, min_decisions=0)
    assert outcome.state is not None and outcome.state.plan.steps == (25, 50, 100)
    assert outcome.state.start_percent == 5 and percent_of(flag_store) == 25
    assert outcome.notes == ("the file is at 5 %: steps 1, 5 skipped",)


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def local_file(tmp_path: Path) -> Path:
    path = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", path)
    return path


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["ramp", "tick"], 2, "ramp needs --file"),
        (["--file", "{f}", "ramp", "start", "--steps", "5,1", "--bake", "1h"], 2, "must rise"),
        (["--file", "{f}", "ramp", "start", "--steps", "1,5", "--bake", "2x"], 2, "not a duration"),
        (["--file", "{f}", "ramp", "start", "--steps", "1,5"], 2, "--bake"),
        (
            [
                "--file",
                "{f}",
                "ramp",
                "start",
                "--steps",
                "1",
                "--bake",
                "1h",
                "--min-decisions",
                "-1",
            ],
            2,
            "0 or more",
        ),
        (["--file", "{f}", "ramp", "pause"], 3, "no ramp on"),
        (["--file", "{f}", "ramp", "status"], 3, "no ramp on"),
        (["--file", "{f}", "ramp", "bogus"], 2, "invalid choice"),
    ],
)
def test_ramp_command_line_errors(
    run: Runner, local_file: Path, argv: list[str], code: int, says: str
) -> None:
    result = run(*[a.replace("{f}", str(local_file)) for a in argv])
    assert result.code == code, result.err
    assert says in result.err
    assert not Path(f"{local_file}.ramp.json").exists()


def test_tick_without_a_ramp_is_nothing_to_do(run: Runner, local_file: Path) -> None:
    result = run("--file", str(local_file), "ramp", "tick")
    assert result.code == 0 and "no ramp" in result.out


def test_the_cli_walks_a_ramp_with_json_output(
    run: Runner, local_file: Path, cw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = str(local_file)
    started = run(
        "--file",
        f,
        "ramp",
        "start",
        "--steps",
        "10,100",
        "--bake",
        "0s",
        "--min-decisions",
        "0",
        "--alarm",
        ALARM,
        "--json",
        "--reason",
        "CHG-1",
    )
    assert started.code == 0, started.err
    body = started.json()
    assert body["action"] == "start" and body["ramp"]["percent"] == 10
    assert body["ramp"]["plan"]["alarms"] == [ALARM]
    shown = run("--file", f, "ramp", "status")
    assert shown.code == 0 and "running, step 1/2 (10 %)" in shown.out
    ticked = run("--file", f, "ramp", "tick", "--json")
    assert ticked.code == 0 and ticked.json()["action"] == "advance", ticked.out
    done = run("--file", f, "ramp", "run", "--interval", "1s", "--timeout", "30s")
    assert done.code == 0, done.err
    assert "done at step 2/2 (100 %)" in done.out
    waited = run("--file", f, "ramp", "status", "--wait", "--json")
    assert waited.code == 0 and waited.json()["ramp"]["status"] == "done"


def test_ramp_run_ends_with_exit_5_when_an_alarm_rolls_back(
    run: Runner, local_file: Path, cw: Any
) -> None:
    f = str(local_file)
    started = run(
        "--file",
        f,
        "ramp",
        "start",
        "--steps",
        "10,50,100",
        "--bake",
        "0s",
        "--min-decisions",
        "0",
        "--alarm",
        ALARM,
    )
    assert started.code == 0, started.err
    set_alarm(cw, "ALARM")
    result = run("--file", f, "ramp", "run", "--interval", "1s", "--timeout", "30s")
    assert result.code == 5, result.err
    assert "ROLLED BACK to before the first step (0 %) and paused: guard breach" in result.out
    assert f"alarm {ALARM} is in ALARM" in result.out
    waited = run("--file", f, "ramp", "status", "--wait")
    assert waited.code == 5 and "paused" in waited.out


@pytest.mark.parametrize("damage", ["invalid", "deleted"])
def test_a_broken_or_deleted_flag_file_pauses_the_ramp(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock, damage: str
) -> None:
    from ai_agent_handler.ops.store import LocalFileStore

    if damage == "invalid":
        if isinstance(flag_store, LocalFileStore):
            flag_store.target.write_text("{not json")
        else:
            flag_store.client.put_object(  # type: ignore[attr-defined]
                Bucket=BUCKET, Key="ai-agent/production.flagd.json", Body=b"{not json"
            )
    elif isinstance(flag_store, LocalFileStore):
        flag_store.target.unlink()
    else:
        flag_store.client.delete_object(  # type: ignore[attr-defined]
            Bucket=BUCKET, Key="ai-agent/production.flagd.json"
        )
    clock.advance(HOUR)
    outcome = started.tick()
    assert outcome.action.kind == "pause"
    assert outcome.action.reasons[0].endswith("-> unreadable")
    assert outcome.state is not None and outcome.state.status == "paused"


def test_an_alarm_rolls_back_even_when_the_counters_cannot_be_read(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    from botocore.exceptions import ClientError

    def throttled(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "GetMetricStatistics"
        )

    cw.meta.events.register("before-call.cloudwatch.GetMetricStatistics", throttled)
    clock.advance(HOUR * 2)
    held = started.tick()
    assert (held.action.kind, held.written) == ("none", False)
    assert "metrics unreadable" in held.action.reasons[0] and "Throttling" in held.action.reasons[0]
    set_alarm(cw, "ALARM")
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("rollback", 0)
    assert percent_of(flag_store) == 0
    assert audit(flag_store)[-1]["ramp"]["evidence"]["error"].startswith("cannot read")
