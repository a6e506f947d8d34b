"""The rollout demo: ``python3 dev.py demo`` (or ``.venv/bin/python examples/rollout_demo.py``).

Everything runs in this process on embedded defaults: moto stands in for AWS, the shipped
phase files are copied to a scratch folder, and a synthetic agent run is streamed through a
real :class:`~ai_agent_handler.AIAgentEventHandler`. The key of every Lambda call is read
from the request boto3 actually sent (a ``before-send`` hook), not from the handler.

1. One run per endpoint in each phase, on the shipped files: who sends which key.
2. Production, one long-lived handler: ``allow``, ``percent`` and ``rollback`` are applied
   with ``ai-agent-rollout`` between runs, and each change shows on the next run without a
   restart. During the rollback one run is in flight: it keeps the key it started with.
3. A guarded ramp on the same file: ``ramp start``, a ``ramp tick`` that advances while the
   alarm is OK and the runs' decisions (put into moto's CloudWatch as the EMF lines would
   be) suffice; then the alarm fires and the next tick rolls back one step and pauses.
4. ``ai-agent-rollout report --html``: the page of this rollout for approvers (every change
   and ramp step with its trigger and reason, the composite share of the runs' decisions),
   written to ``--report PATH`` (default: ``ai-agent-rollout-demo-report.html`` in the
   system's temporary folder) and kept after the demo.

Exits non-zero when what was sent is not what the flag files say.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

ENDPOINTS = (
    ("aws-prod-us-east-1", "acme-corp"),
    ("aws-prod-us-west-2", "globex"),
    ("aws-prod-eu-west-1", "initech"),
    ("aws-prod-eu-central-1", "umbrella"),
    ("aws-prod-ap-south-1", "hooli"),
    ("aws-prod-ap-northeast-1", "stark-ind"),
    ("aws-prod-sa-east-1", "wayne-ent"),
    ("aws-prod-ca-central-1", "tyrell"),
)
CANARY = "aws-prod-eu-west-1"
PERCENT = 30
AGENT_REPLY = ["Checking the ", "order <b>#4711</b>", " status: ", "shipped today", "."]


class Wire:
    """Every Lambda Invoke request as it left boto3: ``(funct, key, key_scheme, run)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def record(self, request: Any, **_: Any) -> None:
        payload = json.loads(request.body)
        run = str(payload["params"].get("run_uuid") or _stream_run(payload["params"]))
        self.calls.append((payload["funct"], payload["endpoint_id"], payload["key_scheme"], run))

    def of_run(self, run_uuid: str) -> list[tuple[str, str, str, str]]:
        return [call for call in self.calls if call[3] == run_uuid]


def _stream_run(params: dict[str, Any]) -> str:
    # Stream chunks carry the run in their message group id: "<connection>-<run_uuid>".
    group = str(json.loads(params["data"])["message_group_id"])
    return group.removeprefix(f"{params['connection_id']}-")


class AgentRun:
    """A synthetic agent run: created, a reply streamed in chunks, completed."""

    def __init__(self, handler: Any, run_uuid: str) -> None:
        self.handler = handler
        self.run_uuid = run_uuid
        self.index = 0
        self.buf = ""

    def start(self, endpoint: str, part_id: str) -> None:
        handler = self.handler
        handler.endpoint_id = endpoint
        handler.part_id = part_id
        handler.run = {
            "run_uuid": self.run_uuid,
            "updated_by": "demo",
            "thread": {"thread_uuid": f"thread-{self.run_uuid}"},
        }
        handler.connection_id = "ws-conn-1"
        handler.invoke_async_funct("insert_update_run", status="in_progress")

    def stream(self, pieces: Sequence[str]) -> None:
        for piece in pieces:
            self.index, self.buf = self.handler.process_text_content(
                self.index, self.buf + piece, "text"
            )

    def finish(self) -> None:
        self.handler.send_data_to_stream(
            index=self.index, chunk_delta=self.buf, is_message_end=True
        )
        self.handler.invoke_async_funct("insert_update_run", status="completed")

    def whole(self, endpoint: str, part_id: str) -> None:
        self.start(endpoint, part_id)
        self.stream(AGENT_REPLY)
        self.finish()


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def _rollout(flag_file: Path, *args: str) -> list[str]:
    """Run ``ai-agent-rollout`` in process, show the command; return its output lines."""
    from ai_agent_handler.ops import cli

    print(f"   $ ai-agent-rollout --file {flag_file.name} {' '.join(args)}")
    with _quiet_stdout() as out:
        code = cli.main(["--file", str(flag_file), *args])
    if code != 0:
        raise SystemExit(f"demo: ai-agent-rollout {' '.join(args)} failed with exit {code}")
    return out.getvalue().splitlines()


class DecisionLog(logging.Handler):
    """Keeps the handler's per-run decision records (what operators query in CloudWatch)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        decision = getattr(record, "key_decision", None)
        if isinstance(decision, dict):
            self.records.append(decision)


def _use_flag_file(path: Path) -> None:
    """Register a FlagFileProvider on the handler's domain for this phase's scratch file.

    A deployed handler configures it itself from ``rollout_phase`` / ``flag_source`` once per
    process; the demo switches phases in one process, so it registers the provider itself.
    The file is checked at every run (the default); ``refresh_wait=1`` makes each run wait
    for a check that found a change (the default waits at most 5 ms, then decides on the
    flags it has), so every printed step shows the change just made.
    """
    from openfeature import api

    from ai_agent_handler import FLAG_DOMAIN, FlagFileProvider

    api.set_provider_and_wait(FlagFileProvider(path, refresh_wait=1), domain=FLAG_DOMAIN)


def _count(number: int, noun: str) -> str:
    """``"1 call"``, ``"8 calls"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _scheme_cell(calls: list[tuple[str, str, str, str]]) -> str:
    schemes = {call[2] for call in calls}
    return schemes.pop() if len(schemes) == 1 else "SPLIT!"


#: Where the demo writes its report when ``--report`` does not say.
REPORT = Path(tempfile.gettempdir()) / "ai-agent-rollout-demo-report.html"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when every run sent the key the flag files say."""
    import argparse

    parser = argparse.ArgumentParser(prog="rollout_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, default=REPORT, help=f"default: {REPORT}")
    report = parser.parse_args(sys.argv[1:] if argv is None else list(argv)).report
    started = time.perf_counter()
    for name, value in (
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "demo"),
        ("AWS_SECRET_ACCESS_KEY", "demo"),
    ):
        os.environ.setdefault(name, value)
    os.environ.pop("AWS_PROFILE", None)
    logging.basicConfig(level=logging.WARNING, format="  log: %(levelname)s %(message)s")
    from moto import mock_aws

    from ai_agent_handler.decision_log import DECISION_LOGGER

    scratch = Path(tempfile.mkdtemp(prefix="ai-agent-rollout-demo-"))
    decisions = DecisionLog()
    decision_logger = logging.getLogger(DECISION_LOGGER)
    saved = decision_logger.level, decision_logger.propagate
    decision_logger.addHandler(decisions)
    decision_logger.setLevel(logging.INFO)
    decision_logger.propagate = False  # the records are shown in the summary, not as log lines
    try:
        with mock_aws(config={"lambda": {"use_docker": False}}):
            return _demo(scratch, started, decisions, report)
    finally:
        decision_logger.removeHandler(decisions)
        decision_logger.setLevel(saved[0])
        decision_logger.propagate = saved[1]
        shutil.rmtree(scratch, ignore_errors=True)


def _demo(scratch: Path, started: float, decisions: DecisionLog, report: Path) -> int:
    import boto3

    from ai_agent_handler import AIAgentEventHandler
    from ai_agent_handler.flag_file.default_provider import shipped_flag_file
    from ai_agent_handler.settings import PHASES

    wire = Wire()
    client = boto3.client("lambda")
    client.meta.events.register("before-send.lambda.Invoke", wire.record)
    files = {}
    for phase in PHASES:
        files[phase] = scratch / f"{phase}.flagd.json"
        shutil.copyfile(shipped_flag_file(phase), files[phase])
    problems: list[str] = []

    def handler_for(phase: str) -> Any:
        return AIAgentEventHandler(
            logging.getLogger("demo"),
            {"agent_name": "demo-agent"},
            aws_lambda=client,
            rollout_phase=phase,
            flag_source=str(files[phase]),
        )

    print("Partition-key rollout demo: local AWS (moto), flag files copied to a scratch folder")
    print(f"  {scratch}")
    print()
    print("1. One streamed agent run per endpoint and phase, on the shipped flag files")
    print(f"   {'phase':<11} {'endpoint':<20} {'key sent to Lambda':<30} calls of the run")
    first = ENDPOINTS[:2]
    for phase in PHASES:
        _use_flag_file(files[phase])
        handler = handler_for(phase)
        for endpoint, part in first:
            run_uuid = f"{phase}-{endpoint}"
            AgentRun(handler, run_uuid).whole(endpoint, part)
            calls = wire.of_run(run_uuid)
            keys = {call[1] for call in calls}
            key = keys.pop() if len(keys) == 1 else "SPLIT!"
            scheme = _scheme_cell(calls)
            print(f"   {phase:<11} {endpoint:<20} {key:<30} {len(calls)}, all {scheme}")
            want = "composite" if phase == "dev" else "legacy"
            _expect(problems, scheme == want, f"{phase} ships {want}")
    print()

    print("2. Production, one long-lived handler; ai-agent-rollout between runs, no restart")
    production = files["production"]
    _use_flag_file(production)
    handler = handler_for("production")
    columns: list[tuple[str, dict[str, str]]] = []
    counter = iter(range(10_000))

    def runs_now(label: str) -> dict[str, str]:
        schemes = {}
        for endpoint, part in ENDPOINTS:
            run_uuid = f"run-{next(counter):03d}"
            AgentRun(handler, run_uuid).whole(endpoint, part)
            schemes[endpoint] = _scheme_cell(wire.of_run(run_uuid))
        columns.append((label, schemes))
        return schemes

    before = runs_now("shipped")
    reason = ["--reason", "demo"]
    print(f"     {_rollout(production, 'allow', CANARY, *reason)[0]}")
    canary = runs_now("allow (canary)")
    print(f"     {_rollout(production, 'percent', str(PERCENT), *reason)[0]}")
    percent = runs_now(f"percent {PERCENT}")
    endpoint, part = ENDPOINTS[-1]
    said = _rollout(production, "explain", "--endpoint", endpoint, "--part-id", part)
    print(f"     {said[1].strip()}")
    print(f"     {said[3].strip()}")

    # A run in flight while the operator rolls back keeps the key it was decided with.
    in_flight = AgentRun(handler, "run-in-flight")
    in_flight.start(CANARY, "initech")
    in_flight.stream(AGENT_REPLY[:2])
    sent_before = len(wire.of_run("run-in-flight"))
    print(f"     {_rollout(production, 'rollback', *reason)[0]}")
    in_flight.stream(AGENT_REPLY[2:])
    in_flight.finish()
    flight = wire.of_run("run-in-flight")
    rolled_back = runs_now("rollback")
    last = decisions.records[-1] if decisions.records else {}

    print("   key scheme of each endpoint's next run (composite = endpoint_id#part_id sent):")
    header = "".join(f"{label:<16}" for label, _ in columns)
    print(f"   {'endpoint':<24} {header}".rstrip())
    for endpoint, _ in ENDPOINTS:
        row = "".join(f"{schemes[endpoint]:<16}" for _, schemes in columns)
        print(f"   {endpoint:<24} {row}".rstrip())
    print(
        f"   a run in flight on {CANARY} during the rollback: {_count(sent_before, 'call')}"
        f" before, {len(flight) - sent_before} after, all {_scheme_cell(flight)} (decided once"
        " per run)"
    )
    print(
        f"   decision log, last run: key_scheme={last.get('key_scheme')} "
        f"flag_set_version={last.get('flag_set_version')} reason={last.get('reason')} "
        f"({len(decisions.records)} records, one per run)"
    )
    audit = production.with_name(production.name + ".audit.jsonl")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    print(
        f"   audit log {audit.name}: "
        + "; ".join(f"v{r['version_after']} {r['command']} by {r['actor']}" for r in records)
    )

    ramp = _guarded_ramp(production, runs_now, decisions, problems)
    print()
    print("4. The rollout at a glance, for approvers: one HTML page (no script, no network)")
    said = _rollout(production, "report", "--html", str(report), "--endpoint", CANARY)
    print(f"     {said[0]}")
    print(f"     {said[1].strip()}")
    _expect(problems, report.is_file(), "the report is written")
    composite_at_percent = sum(1 for s in percent.values() if s == "composite")
    _expect(problems, set(before.values()) == {"legacy"}, "production ships legacy")
    _expect(problems, canary[CANARY] == "composite", "the canary turns composite")
    _expect(
        problems,
        sum(1 for s in canary.values() if s == "composite") == 1,
        "only the canary turns composite",
    )
    _expect(problems, percent[CANARY] == "composite", "the canary stays composite")
    _expect(problems, set(rolled_back.values()) == {"legacy"}, "rollback: legacy everywhere")
    _expect(problems, _scheme_cell(flight) == "composite", "the in-flight run keeps its key")
    _expect(problems, 0 < sent_before < len(flight), "the in-flight run spans the rollback")
    _expect(problems, last.get("key_scheme") == "legacy", "the decision log shows legacy")
    print()
    elapsed = time.perf_counter() - started
    if problems:
        print(f"FAILED: {'; '.join(problems)}")
        return 1
    print(
        f"OK: {len(wire.calls)} Lambda calls checked in {elapsed:.1f} s -- canary, then "
        f"{composite_at_percent}/{len(ENDPOINTS)} endpoints composite at {PERCENT} %, then "
        "rollback: legacy everywhere on the next run, no restart; a guarded ramp rolled "
        f"back from {ramp} on an alarm and paused."
    )
    return 0


RAMP_STEPS = (30, 60, 100)
ALARM = "agent-receivers-errors"


def _guarded_ramp(
    production: Path,
    runs_now: Any,
    decisions: DecisionLog,
    problems: list[str],
) -> str:
    """Part 3: ``ramp start``, ``ramp tick`` between runs; an alarm fires and the next tick
    rolls back one step and pauses. Returns the step it rolled back from."""
    import boto3

    print()
    print("3. A guarded ramp: each tick advances one step while the alarm is OK; an alarm")
    print("   rolls back one step and pauses (moto does not evaluate alarms: the demo sets")
    print("   the state CloudWatch would set when the receivers' errors rise)")
    cloudwatch = boto3.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=ALARM,
        Namespace="receivers",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="demo")
    reported = len(decisions.records)

    def report_to_cloudwatch() -> None:
        # What the fleet's EMF lines become: KeyDecisions per key scheme.
        nonlocal reported
        new, reported = decisions.records[reported:], len(decisions.records)
        for scheme in ("composite", "legacy"):
            count = sum(1 for record in new if record.get("key_scheme") == scheme)
            if count:
                cloudwatch.put_metric_data(
                    Namespace="ai_agent_handler",
                    MetricData=[
                        {
                            "MetricName": "KeyDecisions",
                            "Dimensions": [
                                {"Name": "phase", "Value": "production"},
                                {"Name": "key_scheme", "Value": scheme},
                            ],
                            "Value": count,
                            "Unit": "Count",
                        }
                    ],
                )

    steps = ",".join(map(str, RAMP_STEPS))
    said = _rollout(
        production,
        "ramp",
        "start",
        "--steps",
        steps,
        "--bake",
        "0s",
        "--alarm",
        ALARM,
        "--min-decisions",
        "2",
        "--reason",
        "demo",
    )
    print(f"     {said[0]}")
    first = runs_now(f"ramp {RAMP_STEPS[0]} %")
    report_to_cloudwatch()
    said = _rollout(production, "ramp", "tick")
    print("\n".join(f"     {line.strip()}" for line in said[:3]))
    second = runs_now(f"ramp {RAMP_STEPS[1]} %")
    report_to_cloudwatch()
    cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="demo")
    print(f"   (alarm {ALARM} goes to ALARM)")
    said = _rollout(production, "ramp", "tick")
    print(f"     {said[0]}")
    print(f"     {said[1].strip()}")
    back = runs_now(f"alarm: {RAMP_STEPS[0]} %")
    status = _rollout(production, "ramp", "status")
    print(f"     {status[0]}")
    print(f"     {status[1].strip()}")

    labels = (f"ramp {RAMP_STEPS[0]} %", f"ramp {RAMP_STEPS[1]} %", "after the alarm")
    print("   key scheme of each endpoint's next run:")
    print(f"   {'endpoint':<24} " + "".join(f"{label:<16}" for label in labels).rstrip())
    for endpoint, _ in ENDPOINTS:
        row = "".join(f"{schemes[endpoint]:<16}" for schemes in (first, second, back))
        print(f"   {endpoint:<24} {row}".rstrip())

    def composite(schemes: dict[str, str]) -> set[str]:
        return {e for e, scheme in schemes.items() if scheme == "composite"}

    _expect(problems, composite(first) < composite(second), "the ramp's step 2 moves more")
    _expect(
        problems,
        composite(back) == composite(first),
        "the alarm moves back exactly the endpoints of the step it undoes",
    )
    _expect(problems, ": paused, step 1/3" in status[0], "the ramp is paused after the alarm")
    return f"{RAMP_STEPS[1]} % to {RAMP_STEPS[0]} %"


def _expect(problems: list[str], ok: bool, what: str) -> None:
    if not ok:
        problems.append(what)


if __name__ == "__main__":
    sys.exit(main())
