"""A rollout with a history: an operator's edits, a guarded ramp started, stepped by a tick
and rolled back by an alarm, all through ``ai-agent-rollout`` against moto's server (the
``named_live`` fixture), and damaged records planted in its audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from . import BUCKET, REGION
from .cli import Runner

#: The alarm the ramp watches (created in OK by the ``aws_server`` fixture).
ALARM = "receivers-5xx"
#: The key of the production live file in :data:`~tests.support.BUCKET`.
KEY = "ai-agent/production.flagd.json"


def create_alarm(name: str = ALARM) -> Any:
    """A metric alarm ``name`` in OK; the CloudWatch client that made it."""
    cw = boto3.client("cloudwatch", region_name=REGION)
    cw.put_metric_alarm(
        AlarmName=name,
        Namespace="receivers",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    set_alarm("OK", name)
    return cw


def set_alarm(state: str, name: str = ALARM) -> None:
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName=name, StateValue=state, StateReason="test"
    )


def rollout(run: Runner, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Five changes after the seed, oldest first: alice's ``percent 5``, bob's canary
    ``allow``, alice's ``ramp start`` (10, 25, 50 %, no bake), ramp-bot's tick to 25 %, and
    ramp-bot's tick that rolls back to 10 % with the alarm in ALARM."""
    steps = [
        ("alice", ["percent", "5", "--reason", "CHG-1 first step"]),
        ("bob", ["allow", "aws-prod-eu-west-1", "--reason", "CHG-2 canary"]),
        (
            "alice",
            [
                "ramp",
                "start",
                "--steps",
                "10,25,50",
                "--bake",
                "0s",
                "--alarm",
                ALARM,
                "--min-decisions",
                "0",
            ],
        ),
        ("ramp-bot", ["ramp", "tick"]),
    ]
    for actor, argv in steps:
        monkeypatch.setenv("AI_AGENT_ROLLOUT_ACTOR", actor)
        result = run("--file", source, *argv)
        assert result.code == 0, result.err
    set_alarm("ALARM")
    monkeypatch.setenv("AI_AGENT_ROLLOUT_ACTOR", "ramp-bot")
    assert run("--file", source, "ramp", "tick").code == 0
    monkeypatch.delenv("AI_AGENT_ROLLOUT_ACTOR")


def plant_damaged(source: str) -> list[str]:
    """Two damaged records in the audit trail of ``source``; where they are."""
    if source.startswith("s3://"):
        s3 = boto3.client("s3", region_name=REGION)
        names = [f"{KEY}.audit/0000000098-garbage.json", f"{KEY}.audit/0000000099-list.json"]
        s3.put_object(Bucket=BUCKET, Key=names[0], Body=b"\x00not json")
        s3.put_object(Bucket=BUCKET, Key=names[1], Body=b"[1, 2]")
        return [f"s3://{BUCKET}/{name}" for name in names]
    log = Path(source + ".audit.jsonl")
    lines = log.read_bytes().count(b"\n")
    with log.open("ab") as opened:
        opened.write(b'{"time": "2026-12-01T09:00:00Z", "actor": "x"}\n')  # no command
        opened.write(b'{"time": "2026-12-0')  # cut off by a crash
    return [f"{log}:{lines + 1}", f"{log}:{lines + 2}"]
