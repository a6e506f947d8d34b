"""The guarded ramp against real parts: flag files (local and S3 on moto), moto's CloudWatch.

moto does not evaluate alarms, so the tests set their state; the counters are put as the
handlers' EMF lines would arrive, with timestamps on the test's clock (which runs 20 days
in the past, so every window is one moto can answer). The store's clock is the test's
(:func:`tests.support.store_clock.on_clock`): every write of the flag file is stamped with
it, as the store would stamp it with its own.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from openfeature.evaluation_context import EvaluationContext

from ai_agent_handler import RampError
from ai_agent_handler.exceptions import FlagFileError, StoreError
from ai_agent_handler.flag_file.provider import FlagFileProvider
from ai_agent_handler.ops import edits
from ai_agent_handler.ops.edits_io import commit
from ai_agent_handler.ops.ramp import COUNTERS
from ai_agent_handler.ops.ramp_io import Ramp
from ai_agent_handler.ops.store import FlagStore, LocalFileStore, open_store
from ai_agent_handler.receiver import SHADOW_METRICS
from tests.support import BUCKET, FLAGS_DIR, REGION
from tests.support.cli import Runner
from tests.support.flags import value
from tests.support.rollout import create_alarm
from tests.support.store_clock import on_clock, set_modified

STEPS = (1, 5, 25, 50, 100)
ALARM = "agent-receivers-errors"
HOUR = datetime.timedelta(hours=1)


class Clock:
    """The ramp's clock and its store's: starts 20 days ago on a whole second, moves only
    when told."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=20)
        self.now = now.replace(microsecond=0)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, delta: datetime.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cw(aws: None) -> Any:
    return create_alarm(ALARM)


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


def live_store(kind: str, tmp_path: Path) -> FlagStore:
    """The production live file, seeded from the shipped one (legacy everywhere)."""
    if kind == "local":
        path = tmp_path / "production.flagd.json"
        shutil.copyfile(FLAGS_DIR / "production.flagd.json", path)
        return open_store(str(path))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    key = "ai-agent/production.flagd.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=(FLAGS_DIR / "production.flagd.json").read_bytes())
    return open_store(f"s3://{BUCKET}/{key}", s3_client=s3)


@pytest.fixture(params=["local", "s3"])
def flag_store(
    request: pytest.FixtureRequest, tmp_path: Path, aws: None, clock: Clock
) -> FlagStore:
    """The live file, its writes stamped with the test's clock (the store's clock)."""
    store = live_store(request.param, tmp_path)
    set_modified(store, clock.now)
    return on_clock(store, clock)


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


def ramp_meta(store: FlagStore) -> dict[str, Any]:
    """The ramp's state as the flag file carries it."""
    return dict(json.loads(flag_doc(store)["metadata"]["ramp"]))


def written(store: FlagStore) -> tuple[bytes | None, int]:
    """What a command that writes nothing must leave as it was: the file and its audit."""
    return store.read().data, len(audit(store))


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
        before = written(flag_store)
        baking = started.tick()
        assert (baking.action.kind, baking.written) == ("none", False)
        assert baking.action.trigger == "baking, 30m left"
        # A tick that changes nothing writes nothing: flag, state, audit.
        assert written(flag_store) == before
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
    before = written(flag_store)
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.trigger) == ("none", "holding")
    assert outcome.written is False
    assert written(flag_store) == before
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
    assert flag_store.read().data == snapshot and audit(flag_store) == []
    ramp.start(steps=STEPS, bake=0.0, min_decisions=0)
    before = written(flag_store)
    for lever in (ramp.pause, ramp.abort, ramp.promote):
        assert lever(dry_run=True).written is False
    assert ramp.tick(dry_run=True).action.kind == "advance"
    assert written(flag_store) == before


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
    before = written(flag_store)
    with pytest.raises(RampError, match=message):
        ramp.start(steps=STEPS, bake=60.0, alarms=alarms)
    assert written(flag_store) == before


def test_steps_at_or_below_the_files_percentage_are_skipped(
    flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
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
    before = local_file.read_bytes()
    result = run(*[a.replace("{f}", str(local_file)) for a in argv])
    assert result.code == code, result.err
    assert says in result.err
    assert local_file.read_bytes() == before
    assert sorted(p.name for p in local_file.parent.iterdir()) == [local_file.name]


@pytest.mark.parametrize("history", ["fresh", "edited"])
def test_tick_without_a_ramp_is_nothing_to_do(run: Runner, local_file: Path, history: str) -> None:
    """Nothing is written: the file (bytes, time, version), its audit log and the folder are as
    they were, whether or not an earlier change left a lock and an audit log beside it."""
    if history == "edited":
        assert run("--file", str(local_file), "percent", "5", "--reason", "CHG-1").code == 0
    store = open_store(str(local_file))
    folder = {path.name: path.read_bytes() for path in local_file.parent.iterdir()}
    modified = local_file.stat().st_mtime_ns
    version, records = edits.version_of(flag_doc(store)), audit(store)
    result = run("--file", str(local_file), "ramp", "tick")
    assert result.code == 0 and "no ramp" in result.out
    assert {path.name: path.read_bytes() for path in local_file.parent.iterdir()} == folder
    assert local_file.stat().st_mtime_ns == modified
    assert edits.version_of(flag_doc(store)) == version == (2 if history == "edited" else 1)
    assert audit(store) == records and len(records) == (1 if history == "edited" else 0)
    if history == "fresh":
        assert list(folder) == [local_file.name]  # no lock file, no audit log


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
    assert "ROLLED BACK to the start (0 %, before step 1/3) and paused: guard breach" in result.out
    assert f"alarm {ALARM} is in ALARM" in result.out
    waited = run("--file", f, "ramp", "status", "--wait")
    assert waited.code == 5 and "paused" in waited.out


@pytest.mark.parametrize("damage", ["invalid", "deleted"])
def test_a_broken_or_deleted_flag_file_steps_nothing_and_says_why(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock, damage: str
) -> None:
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
    before = flag_store.read().data
    error = FlagFileError if damage == "invalid" else StoreError
    says = "the ramp cannot step until the file is repaired" if damage == "invalid" else "no such"
    with pytest.raises(error, match=says):
        started.tick()
    assert flag_store.read().data == before


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


# -- one step is one conditional write: races, clocks, outages ------------------------------


def baked(flag_store: FlagStore, cw: Any, clock: Clock) -> Ramp:
    """A ramp at step 1 (1 %) whose bake is over with healthy evidence."""
    ramp = ramp_of(flag_store, cw, clock)
    ramp.start(steps=STEPS, bake=3600.0, alarms=(ALARM,), min_decisions=20)
    healthy(cw, clock)
    clock.advance(HOUR)
    return ramp


def while_reading_alarms(cw: Any, action: Any) -> None:
    """Run ``action`` once, when the next tick asks CloudWatch for its alarms: after the tick
    read the file and before it writes."""
    done: list[bool] = []

    def hook(**_: Any) -> None:
        if not done:
            done.append(True)
            action()

    cw.meta.events.register("before-call.cloudwatch.DescribeAlarms", hook)


@pytest.mark.parametrize(
    ("meanwhile", "percent", "status", "actions"),
    [
        ("another controller ticks", 5, "running", ["start", "advance"]),
        ("the operator pauses", 1, "paused", ["start", "pause"]),
        ("the operator aborts", 0, "aborted", ["start", "abort"]),
        ("the operator sets 30 %", 30, "running", ["start"]),
    ],
)
def test_whatever_lands_between_a_ticks_read_and_its_write_wins(
    flag_store: FlagStore,
    cw: Any,
    clock: Clock,
    meanwhile: str,
    percent: int,
    status: str,
    actions: list[str],
) -> None:
    ramp = baked(flag_store, cw, clock)
    other_cw = boto3.client("cloudwatch", region_name=REGION)
    other = ramp_of(flag_store, other_cw, clock, who="bob")
    levers = {
        "another controller ticks": other.tick,
        "the operator pauses": lambda: other.pause(reason="INC-1"),
        "the operator aborts": lambda: other.abort(reason="INC-1"),
        "the operator sets 30 %": lambda: commit(
            flag_store, lambda d: edits.set_percent(d, 30), command="percent 30", actor="bob"
        ),
    }
    landed: list[Any] = []
    while_reading_alarms(cw, lambda: landed.append(levers[meanwhile]()))
    outcome = ramp.tick()
    assert landed, "the interleaving did not happen"
    assert (outcome.action.kind, outcome.written) == ("none", False)
    assert outcome.action.trigger.startswith("another controller or an operator changed the file")
    assert percent_of(flag_store) == percent
    assert ramp_meta(flag_store)["status"] == status
    assert [r["ramp"]["action"] for r in ramp_records(flag_store)] == actions
    if meanwhile == "the operator sets 30 %":  # the next tick sees the edit and pauses
        assert ramp.tick().action.kind == "pause" and percent_of(flag_store) == 30


def test_decisions_reported_in_the_ticks_own_second_count(
    flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    ramp = ramp_of(flag_store, cw, clock)
    ramp.start(steps=STEPS, bake=0.0, alarms=(ALARM,), min_decisions=2)
    # Runs 5.3 s after the step, reported at once; the tick comes in the same second.
    report(cw, clock.now + datetime.timedelta(seconds=5.3), KeyDecisions=(2, 8))
    clock.advance(datetime.timedelta(seconds=5.8))
    outcome = ramp.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("advance", 5), outcome.action.reasons


def test_a_hand_edit_that_keeps_the_version_pauses_the_ramp(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    doc = flag_doc(flag_store)
    version = doc["metadata"]["version"]
    edited = edits.set_percent(doc, 30)
    assert edited["metadata"]["version"] == version
    flag_store.write(json.dumps(edited).encode(), flag_store.read())
    healthy(cw, clock)
    clock.advance(HOUR)
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.trigger) == (
        "pause",
        "flag file changed outside the ramp",
    )
    assert outcome.action.reasons == ("the file is at 30 %, the ramp wrote 1 %",)
    assert percent_of(flag_store) == 30 and ramp_meta(flag_store)["status"] == "paused"


def test_a_controller_whose_clock_is_behind_the_store_decides_nothing(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    healthy(cw, clock)
    clock.advance(HOUR)
    late = Ramp(flag_store, actor="cron", cloudwatch_client=cw, clock=lambda: clock.now - 23 * HOUR)
    before = written(flag_store)
    with pytest.raises(StoreError, match=r"clock .* is 79200 s behind the file's last write"):
        late.tick()
    assert written(flag_store) == before
    # The correct controller steps; the late one still cannot, and cannot shorten a bake.
    assert started.tick().action.kind == "advance"
    with pytest.raises(StoreError, match="behind"):
        late.tick()


def test_a_controller_whose_clock_is_ahead_of_s3_decides_nothing(
    moto_server: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    s3.create_bucket(Bucket=BUCKET)
    key = "ai-agent/production.flagd.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=(FLAGS_DIR / "production.flagd.json").read_bytes())
    store = open_store(f"s3://{BUCKET}/{key}", s3_client=s3)
    cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    now = datetime.datetime.now(datetime.timezone.utc)
    Ramp(store, actor="t", cloudwatch_client=cw).start(steps=STEPS, bake=0.0, min_decisions=0)
    assert store.read().server_time is not None  # S3 says what time it is
    ahead = Ramp(store, actor="t", cloudwatch_client=cw, clock=lambda: now + 2 * HOUR)
    with pytest.raises(StoreError, match=r"s ahead of the store's clock"):
        ahead.tick()
    assert percent_of(store) == 1
    right = Ramp(store, actor="t", cloudwatch_client=cw)
    assert right.tick().action.kind == "advance"


class HangingCloudWatch:
    """A CloudWatch on loopback that takes every request and never answers; ``on_request``
    runs (in the server's thread) when a request has arrived."""

    def __init__(self, on_request: Any) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                on_request()
                owner.release.wait(10)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_hanging_cloudwatch_holds_the_ramp_and_never_blocks_the_levers(
    flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    from ai_agent_handler._aws import METRICS_READ_CONFIG

    ramp = baked(flag_store, cw, clock)
    operator = ramp_of(flag_store, cw, clock, who="bob")
    paused: list[Any] = []
    hanging = HangingCloudWatch(lambda: paused or paused.append(operator.pause(reason="INC-2")))
    try:
        # The library's own client settings, with a read timeout short enough for a test.
        ramp._cloudwatch = boto3.client(
            "cloudwatch",
            region_name=REGION,
            endpoint_url=hanging.url,
            config=METRICS_READ_CONFIG.merge(Config(read_timeout=0.3)),
        )
        outcome = ramp.tick()
    finally:
        hanging.close()
    assert paused and paused[0].written  # the pause got through while the tick waited
    assert (outcome.action.kind, outcome.written) == ("none", False)
    assert outcome.action.trigger == "holding"
    assert "metrics unreadable: cannot read the alarms" in outcome.action.reasons[0]
    assert ramp_meta(flag_store)["status"] == "paused" and percent_of(flag_store) == 1


def test_all_of_a_ticks_metric_reads_have_one_deadline(
    flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    ramp = baked(flag_store, cw, clock)
    ramp.metrics_deadline = 0.0
    outcome = ramp.tick()
    assert (outcome.action.kind, outcome.written) == ("none", False)
    assert "took too long (past its deadline)" in outcome.action.reasons[0]


def test_metric_reads_have_tight_stated_timeouts() -> None:
    from ai_agent_handler import _aws

    config = _aws.cloudwatch_client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, _aws.METRICS_READ_TIMEOUT)
    assert config.retries is not None
    assert (config.retries["total_max_attempts"], config.retries["mode"]) == (2, "standard")


def test_a_breach_before_the_first_step_pauses_with_its_audit_record(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    set_alarm(cw, "ALARM")
    assert started.tick().action.kind == "rollback" and percent_of(flag_store) == 0
    set_alarm(cw, "OK")
    started.resume(reason="INC-3 fixed")
    set_alarm(cw, "ALARM")
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.step, outcome.written) == ("pause", -1, True)
    assert outcome.state is not None and (outcome.state.step, outcome.state.status) == (
        -1,
        "paused",
    )
    record = audit(flag_store)[-1]
    assert (record["ramp"]["action"], record["ramp"]["trigger"]) == ("pause", "guard breach")
    assert record["version_after"] == outcome.version == edits.version_of(flag_doc(flag_store))
    assert ramp_meta(flag_store)["step"] == -1 and percent_of(flag_store) == 0


def test_a_ramp_resumed_at_0_percent_bakes_then_reapplies_its_first_step(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock, run: Runner
) -> None:
    set_alarm(cw, "ALARM")
    assert started.tick().action.percent == 0  # step 1 rolled back, paused
    set_alarm(cw, "OK")
    resumed = started.resume(reason="INC-4 fixed")
    assert resumed.state is not None and (resumed.state.step, resumed.state.percent) == (-1, 0)
    assert started.tick().action.trigger == "baking, 1h left"
    current = started.read()
    assert current.state is not None
    from ai_agent_handler.ops.ramp import next_tick

    said = next_tick(current.state, current.flag, clock.now)
    assert said.endswith(
        "then step 1/5 (1 %) with no alarm in ALARM; one step back on a breach; "
        "hold when it cannot judge"
    )
    clock.advance(HOUR)  # no composite decision at all: at 0 % none is expected
    outcome = started.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("advance", 1)
    assert percent_of(flag_store) == 1


DAMAGE = {
    "a step past the plan": lambda m: {**m, "step": 9},
    "an empty plan": lambda m: {**m, "plan": {**m["plan"], "steps": []}},
    "a NaN bake": lambda m: {**m, "plan": {**m["plan"], "bake": float("nan")}},
    "a 1e300 bake": lambda m: {**m, "plan": {**m["plan"], "bake": 1e300}},
    "a JSON array": lambda m: [m],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_ramp_state_is_one_clear_line_and_abort_removes_it(
    run: Runner, local_file: Path, damage: str
) -> None:
    f = str(local_file)
    started = run("--file", f, "ramp", "start", "--steps", "10,50", "--bake", "1h")
    assert started.code == 0, started.err
    doc = json.loads(local_file.read_text())
    meta = json.loads(doc["metadata"]["ramp"])
    doc["metadata"]["ramp"] = json.dumps(DAMAGE[damage](meta))
    local_file.write_text(json.dumps(doc))
    before = local_file.read_bytes()
    for command in ("status", "tick", "pause", "resume", "promote"):
        result = run("--file", f, "ramp", command)
        assert result.code == 3, (command, result.err)
        assert "the ramp state (metadata.ramp) is damaged" in result.err
        assert "`ramp abort` removes it" in result.err and "Traceback" not in result.err
        assert local_file.read_bytes() == before
    aborted = run("--file", f, "ramp", "abort", "--reason", "damaged")
    assert aborted.code == 0, aborted.err
    assert "the ramp state was damaged: removed it" in aborted.out
    after = json.loads(local_file.read_text())
    assert "ramp" not in after["metadata"]
    assert edits.read_state(after).percent == 10  # the percentage is left as it was
    assert run("--file", f, "ramp", "status").code == 3  # no ramp now


def test_status_tells_the_file_as_it_is(
    run: Runner, local_file: Path, cw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = str(local_file)
    assert run("--file", f, "ramp", "start", "--steps", "10,100", "--bake", "1h").code == 0
    assert run("--file", f, "ramp", "promote", "--reason", "go").code == 0
    assert run("--file", f, "rollback", "--reason", "INC-5").code == 0
    shown = run("--file", f, "ramp", "status")
    assert shown.code == 0
    version = edits.version_of(json.loads(local_file.read_text()))
    assert shown.out.splitlines()[:2] == [
        f"ramp {json.loads(json.loads(local_file.read_text())['metadata']['ramp'])['id']} on "
        f"{f}: done, step 2/2 (100 %)",
        f"  the file changed since the ramp's last write: now 0 % (version {version})",
    ]
    body = run("--file", f, "ramp", "status", "--json").json()
    assert body["file"] == {
        "percent": 0,
        "version": version,
        "digest": body["file"]["digest"],
        "written_by_the_ramp": False,
    }
    assert body["ramp"]["status"] == "done"


def test_status_wait_says_when_it_gives_up(run: Runner, local_file: Path) -> None:
    f = str(local_file)
    assert run("--file", f, "ramp", "start", "--steps", "10,100", "--bake", "1h").code == 0
    result = run("--file", f, "ramp", "status", "--wait", "--timeout", "0s")
    assert result.code == 6
    assert "running, step 1/2 (10 %)" in result.out
    assert "timed out after 0s: the ramp is still running (exit 6)" in result.err


@pytest.mark.parametrize(("heartbeat", "lines"), [(600.0, 1), (0.0, 3)])
def test_ramp_run_shows_it_is_alive_while_a_step_bakes(
    run: Runner, local_file: Path, monkeypatch: pytest.MonkeyPatch, heartbeat: float, lines: int
) -> None:
    """Three ticks of a baking step, then ``--timeout``: a line for the first, and one at
    least every HEARTBEAT seconds (the run's monotonic clock jumps 5 minutes at the third)."""
    from ai_agent_handler.ops import cli_ramp

    ticks = {"n": 0}
    real_tick, real_monotonic = Ramp.tick, time.monotonic

    def tick(self: Ramp, **kwargs: Any) -> Any:
        ticks["n"] += 1
        return real_tick(self, **kwargs)

    monkeypatch.setattr(Ramp, "tick", tick)
    monkeypatch.setattr(cli_ramp, "HEARTBEAT", heartbeat)
    monkeypatch.setattr(cli_ramp, "_nap", lambda *_: 0.0)
    monkeypatch.setattr(
        cli_ramp.time, "monotonic", lambda: real_monotonic() + (300 if ticks["n"] >= 3 else 0)
    )
    f = str(local_file)
    assert run("--file", f, "ramp", "start", "--steps", "10,100", "--bake", "1h").code == 0
    result = run("--file", f, "ramp", "run", "--timeout", "1m")
    assert (result.code, ticks["n"]) == (6, 3)
    assert result.out.count("nothing to do: baking") == lines, result.out
    assert "timed out after 1m: the ramp is still running (exit 6)" in result.err


def test_resume_can_lower_the_enough_data_guard(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    report(cw, clock.now + datetime.timedelta(minutes=1), KeyDecisions=(7, 400))
    clock.advance(HOUR)
    held = started.tick()
    assert held.action.reasons == ("too little data: 7 composite decision(s), 20 needed",)
    started.pause(reason="low traffic")
    resumed = started.resume(reason="judge on 5", min_decisions=5)
    assert resumed.state is not None and resumed.state.plan.min_decisions == 5
    assert ramp_meta(flag_store)["plan"]["min_decisions"] == 5
    report(cw, clock.now + datetime.timedelta(minutes=1), KeyDecisions=(6, 400))
    clock.advance(HOUR)
    assert started.tick().action.kind == "advance"


def test_abort_gets_through_when_the_file_has_custom_targeting(
    started: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    def custom(doc: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        doc["flags"]["composite-partition-key"]["targeting"] = {"if": [True, "legacy", "legacy"]}
        return doc

    commit(flag_store, custom, command="custom", actor="bob")
    before = flag_doc(flag_store)["flags"]
    aborted = started.abort(reason="INC-6")
    assert aborted.written and aborted.action.kind == "abort"
    assert aborted.notes == (
        "the file has custom targeting: left as it is (`rollback` for legacy)",
    )
    assert flag_doc(flag_store)["flags"] == before
    assert ramp_meta(flag_store)["status"] == "aborted"


# -- the consistency guard: the receivers' shadow reads -------------------------------------


@pytest.fixture
def guarded(flag_store: FlagStore, cw: Any, clock: Clock) -> Ramp:
    """A ramp at 1 % with the consistency guard: 99.9 % over at least 500 compared reads."""
    ramp = ramp_of(flag_store, cw, clock)
    outcome = ramp.start(
        steps=STEPS,
        bake=3600.0,
        alarms=(ALARM,),
        min_decisions=20,
        min_consistency=99.9,
        min_shadow_reads=500,
        reason="CHG-201",
    )
    assert outcome.written and outcome.state is not None
    return ramp


def test_a_guarded_ramp_keeps_its_guard_in_the_flag_file(
    guarded: Ramp, flag_store: FlagStore
) -> None:
    plan = ramp_meta(flag_store)["plan"]
    assert (plan["min_consistency"], plan["min_shadow_reads"]) == (99.9, 500)
    assert audit(flag_store)[-1]["ramp"]["plan"]["min_consistency"] == 99.9


def test_low_consistency_rolls_back_one_step_and_pauses(
    guarded: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    at = clock.now + datetime.timedelta(minutes=1)
    report(cw, at, KeyDecisions=(40, 400), ShadowSame=(985, 0), ShadowDifferent=(15, 0))
    clock.advance(HOUR / 4)  # mid-bake: a breach does not wait for the bake
    before = flag_doc(flag_store)["metadata"]["version"]
    outcome = guarded.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("rollback", 0)
    assert outcome.written
    # What the flag file now says: the percentage back, the ramp paused with its reason.
    doc = flag_doc(flag_store)
    assert edits.read_state(doc).percent == 0
    assert doc["metadata"]["version"] == before + 1
    meta = ramp_meta(flag_store)
    reason = "shadow read consistency 98.5 % < 99.9 %: 985 same, 15 different of 1000 compared"
    assert (meta["status"], meta["step"]) == ("paused", -1)
    assert meta["reason"] == f"guard breach: {reason}"
    record = audit(flag_store)[-1]
    assert record["command"] == "ramp rollback 0"
    assert record["ramp"]["reasons"] == [reason]
    counters = record["ramp"]["evidence"]["counters"]
    assert counters["ShadowSame"] == {"composite": 985.0, "legacy": 0.0}
    assert counters["ShadowDifferent"] == {"composite": 15.0, "legacy": 0.0}


def test_consistent_shadow_reads_let_the_ramp_advance(
    guarded: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    at = clock.now + datetime.timedelta(minutes=1)
    report(
        cw,
        at,
        KeyDecisions=(40, 400),
        ShadowSame=(1999, 0),
        ShadowDifferent=(1, 0),
        ShadowLegacyOnly=(25, 0),  # backfill owed: not the ramp's guard
        ShadowCompositeOnly=(300, 0),
    )
    clock.advance(HOUR)
    outcome = guarded.tick()
    assert (outcome.action.kind, outcome.action.percent) == ("advance", 5)
    assert percent_of(flag_store) == 5
    meta = ramp_meta(flag_store)
    assert (meta["status"], meta["step"], meta["reason"]) == ("running", 1, None)
    record = audit(flag_store)[-1]
    assert record["command"] == "ramp advance 5"
    assert record["ramp"]["reasons"] == [
        "40 composite decision(s), guards OK",
        "shadow read consistency 99.95 % >= 99.9 % (1999 same, 1 different of 2000 compared)",
    ]


def test_too_few_shadow_reads_hold_and_write_nothing(
    guarded: Ramp, flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    at = clock.now + datetime.timedelta(minutes=1)
    report(cw, at, KeyDecisions=(40, 400), ShadowSame=(400, 0), ShadowCompositeOnly=(900, 0))
    clock.advance(HOUR * 2)
    before = written(flag_store)
    outcome = guarded.tick()
    assert (outcome.action.kind, outcome.action.trigger) == ("none", "holding")
    assert outcome.action.reasons == ("too few shadow reads: 400 compared, 500 needed",)
    assert written(flag_store) == before


def test_only_a_guarded_ramp_reads_the_shadow_counters(
    flag_store: FlagStore, cw: Any, clock: Clock
) -> None:
    asked: list[str] = []
    cw.meta.events.register(
        "before-parameter-build.cloudwatch.GetMetricStatistics",
        lambda params, **_: asked.append(params["MetricName"]),
    )

    def one_tick(**guard: Any) -> tuple[list[str], int]:
        ramp = ramp_of(flag_store, cw, clock)
        ramp.start(steps=STEPS, bake=3600.0, min_decisions=20, **guard)
        healthy(cw, clock)  # enough legacy traffic: no baseline read
        clock.advance(HOUR / 2)
        asked.clear()
        assert ramp.tick().action.trigger.startswith("baking")
        ramp.abort(reason="next")
        return sorted(set(asked)), len(asked)

    plain = one_tick()
    assert plain == (sorted(COUNTERS), 2 * len(COUNTERS))  # as many as before the guard
    guarded = one_tick(min_consistency=99.0)
    assert guarded == (sorted((*COUNTERS, *SHADOW_METRICS)), 2 * 8)


def test_the_cli_starts_a_guarded_ramp_and_shows_the_guard(run: Runner, local_file: Path) -> None:
    f = str(local_file)
    started = run(
        "--file", f, "ramp", "start", "--steps", "10,100", "--bake", "1h",
        "--min-consistency", "99.5", "--min-shadow-reads", "250", "--reason", "CHG-1",
    )  # fmt: skip
    assert started.code == 0, started.err
    plan = json.loads(json.loads(local_file.read_text())["metadata"]["ramp"])["plan"]
    assert (plan["min_consistency"], plan["min_shadow_reads"]) == (99.5, 250)
    shown = run("--file", f, "ramp", "status")
    assert "min consistency 99.5 % over 250 shadow reads" in shown.out, shown.out
    body = run("--file", f, "ramp", "status", "--json").json()
    assert body["ramp"]["plan"]["min_consistency"] == 99.5


def test_the_cli_without_the_guard_stores_none(run: Runner, local_file: Path) -> None:
    f = str(local_file)
    assert run("--file", f, "ramp", "start", "--steps", "10,100", "--bake", "1h").code == 0
    plan = json.loads(json.loads(local_file.read_text())["metadata"]["ramp"])["plan"]
    assert (plan["min_consistency"], plan["min_shadow_reads"]) == (None, 100)
    assert "consistency" not in run("--file", f, "ramp", "status").out


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--min-consistency", "0"], "above 0 and at most 100"),
        (["--min-consistency", "100.5"], "above 0 and at most 100"),
        (["--min-consistency", "-5"], "above 0 and at most 100"),
        (["--min-consistency", "nan"], "above 0 and at most 100"),
        (["--min-consistency", "most"], "not a percentage"),
        (["--min-consistency", "99.9", "--min-shadow-reads", "0"], "1 or more"),
        (["--min-consistency", "99.9", "--min-shadow-reads", "1.5"], "not a whole number"),
        (["--min-shadow-reads", "50"], "it takes --min-consistency P too"),
    ],
)
def test_bad_consistency_options_exit_2_and_write_nothing(
    run: Runner, local_file: Path, options: list[str], says: str
) -> None:
    before = local_file.read_bytes()
    f = str(local_file)
    result = run("--file", f, "ramp", "start", "--steps", "10,100", "--bake", "1h", *options)
    assert result.code == 2, result.err
    assert says in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert local_file.read_bytes() == before
    assert sorted(p.name for p in local_file.parent.iterdir()) == [local_file.name]


@pytest.mark.parametrize(
    ("guard", "says"),
    [
        ({"min_consistency": 0.0}, "min_consistency must be a percentage above 0"),
        ({"min_consistency": 101.0}, "min_consistency must be a percentage above 0"),
        ({"min_consistency": 99.0, "min_shadow_reads": 0}, "min_shadow_reads must be 1 or more"),
    ],
)
def test_start_refuses_a_guard_it_could_not_read_back(
    flag_store: FlagStore, cw: Any, clock: Clock, guard: dict[str, Any], says: str
) -> None:
    before = written(flag_store)
    with pytest.raises(RampError, match=says):
        ramp_of(flag_store, cw, clock).start(steps=STEPS, bake=60.0, **guard)
    assert written(flag_store) == before
