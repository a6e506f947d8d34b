"""rollout.md can be followed from phase 1 to the end of the migration: its commands, in order.

Every ``ai-agent-rollout`` line of the runbook's shell blocks runs against a local S3 (moto)
and a scratch checkout (``flags/`` beside an ``ai_agent_handler/`` package). The ``aws``
lines run against moto through a small stand-in for the AWS CLI that keeps the CLI's own
rules where the runbook relies on them: a streaming answer's content goes to the outfile
(the last argument), ``--query`` (JMESPath, as the CLI applies it) and ``--output text``
shape what is printed, and ``NAME=$(...)`` captures it for later ``$NAME``.
``start-deployment`` is not in moto: the stand-in checks its version argument names a
version that was created. The fleet configuration line
(``update-function-configuration``) is applied to a handler created with those variables.
A command that no longer parses, or a phase that does not end where the runbook says, fails
here.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import boto3
import jmespath
import pytest

from ai_agent_handler import PartitionKeyError
from ai_agent_handler.ops import edits as fe
from ai_agent_handler.ops import retire, times
from ai_agent_handler.ops.backfill_io import read_backfilled
from tests.support import BUCKET, REGION, REPO, tables
from tests.support.cli import Runner, copy_phase_files

LIVE = {
    "DEV": f"s3://{BUCKET}/ai-agent/dev.flagd.json",
    "STAGING": f"s3://{BUCKET}/ai-agent/staging.flagd.json",
    "PROD": f"s3://{BUCKET}/ai-agent/production.flagd.json",
}


#: ``cat > FILE <<'TAG'`` then the file's lines, then ``TAG``: one "line" of
#: :func:`runbook_commands`, the file's text after the first newline.
HEREDOC = re.compile(r"cat > (\S+) <<'(\w+)'\n(.*)", flags=re.S)


def runbook_commands() -> list[str]:
    """The shell lines of rollout.md's bash blocks, joined at backslashes; a here-document
    (``cat > FILE <<'TAG'`` ... ``TAG``) is one line with its text."""
    text = (REPO / "rollout.md").read_text()
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        pending = iter(block.replace("\\\n", " ").splitlines())
        for line in pending:
            opened = re.fullmatch(r"cat > \S+ <<'(\w+)'", line.strip())
            if opened:
                body = []
                for inner in pending:
                    if inner.strip() == opened.group(1):
                        break
                    body.append(inner + "\n")
                line = line.strip() + "\n" + "".join(body)
            if line.strip():
                lines.append(line)
    return lines


def receivers_table() -> None:
    """The example receiver's table as the worked example of the backfill finds it: runs of
    two endpoints under their legacy keys (partition key ``pk``)."""
    client = boto3.client("dynamodb", region_name=REGION)
    tables.create_receiver(client, "agent-tasks")
    runs = [
        {"pk": {"S": endpoint}, "sk": {"S": f"run#{n}"}, "status": {"S": "done"}}
        for endpoint in ("aws-prod-us-east-1", "aws-prod-eu-west-1")
        for n in range(3)
    ]
    tables.put_all(client, "agent-tasks", runs)


def receivers_items(backfill_root: str) -> dict[str, int]:
    """The composite keys of the receiver's table and their items; the backfill recorded as
    verified beside the live file."""
    client = boto3.client("dynamodb", region_name=REGION)
    keys = [item["pk"]["S"] for item in tables.scan_all(client, "agent-tasks")]
    (record,) = read_backfilled(backfill_root)
    assert record.complete and record.whole and record.items == 6
    return {key: keys.count(key) for key in keys if "#" in key}


def live_state(client: Any, uri: str) -> fe.RolloutState:
    key = uri.split("/", 3)[3]
    doc = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return fe.read_state(doc)


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def _values(words: list[str], name: str) -> list[str]:
    """Every word after ``name`` up to the next option (``--dimensions A B``)."""
    rest = words[words.index(name) + 1 :]
    return rest[: next((i for i, w in enumerate(rest) if w.startswith("--")), len(rest))]


class Clock:
    """The ramp controller's clock in this test: a day passes between two ticks."""

    def __init__(self, now: datetime.datetime | None = None) -> None:
        self.now = now or datetime.datetime.now(datetime.timezone.utc)

    def __call__(self) -> datetime.datetime:
        return self.now


def fleets_report_a_migrated_day(cloudwatch: Any, at: datetime.datetime) -> None:
    """A day of every phase's fleet after the migration: composite decisions only,
    receivers reading without a legacy hit, and their sampled shadow reads finding the same
    copy under both keys."""
    cloudwatch.put_metric_data(
        Namespace="ai_agent_handler",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [
                    {"Name": "phase", "Value": phase},
                    {"Name": "key_scheme", "Value": "composite"},
                ],
                "Value": 100,
                "Unit": "Count",
                "Timestamp": at,
            }
            for phase in ("dev", "staging", "production")
            for metric in ("KeyDecisions", "ReceiverReads", "ShadowSame")
        ],
    )


def fleet_reports_healthy_runs(cloudwatch: Any, at: datetime.datetime) -> None:
    """What the production fleet's EMF lines add up to over a day: runs on both keys, no
    failures."""
    cloudwatch.put_metric_data(
        Namespace="ai_agent_handler",
        MetricData=[
            {
                "MetricName": "KeyDecisions",
                "Dimensions": [
                    {"Name": "phase", "Value": "production"},
                    {"Name": "key_scheme", "Value": scheme},
                ],
                "Value": 500,
                "Unit": "Count",
                "Timestamp": at,
            }
            for scheme in ("composite", "legacy")
        ],
    )


class AwsCli:
    """The ``aws`` commands the runbook uses, against moto, with the CLI's output rules."""

    def __init__(self) -> None:
        self.appconfig = boto3.client("appconfig", region_name=REGION)
        self.deployed: list[str] = []
        self.fleet: dict[str, str] = {}
        self.cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        self.alarms: list[str] = []

    def __call__(self, words: list[str]) -> str:
        service, operation = words[1], words[2]
        if (service, operation) == ("appconfig", "create-hosted-configuration-version"):
            content = _option(words, "--content").removeprefix("fileb://")
            answer = self.appconfig.create_hosted_configuration_version(
                ApplicationId=_option(words, "--application-id"),
                ConfigurationProfileId=_option(words, "--configuration-profile-id"),
                Content=Path(content).read_bytes(),
                ContentType=_option(words, "--content-type"),
            )
            Path(words[-1]).write_bytes(answer.pop("Content").read())  # the outfile
            answer.pop("ResponseMetadata")
            return self._print(answer, words)
        if (service, operation) == ("appconfig", "start-deployment"):
            version = _option(words, "--configuration-version")
            assert version.isdigit(), f"--configuration-version {version!r}"
            self.appconfig.get_hosted_configuration_version(  # raises unless it was created
                ApplicationId=_option(words, "--application-id"),
                ConfigurationProfileId=_option(words, "--configuration-profile-id"),
                VersionNumber=int(version),
            )
            self.deployed.append(version)
            return ""
        if (service, operation) == ("lambda", "update-function-configuration"):
            variables = _option(words, "--environment")
            match = re.fullmatch(r"Variables=\{(.*)\}", variables)
            assert match, variables
            self.fleet = dict(pair.split("=", 1) for pair in match.group(1).split(","))
            return ""
        if (service, operation) == ("cloudwatch", "put-metric-alarm"):
            self.cloudwatch.put_metric_alarm(
                AlarmName=_option(words, "--alarm-name"),
                Namespace=_option(words, "--namespace"),
                MetricName=_option(words, "--metric-name"),
                Dimensions=[
                    dict(
                        zip(
                            ("Name", "Value"),
                            (p.split("=", 1)[1] for p in w.split(",")),
                            strict=True,
                        )
                    )
                    for w in _values(words, "--dimensions")
                ],
                Statistic=_option(words, "--statistic"),
                Period=int(_option(words, "--period")),
                EvaluationPeriods=int(_option(words, "--evaluation-periods")),
                Threshold=float(_option(words, "--threshold")),
                ComparisonOperator=_option(words, "--comparison-operator"),
                TreatMissingData=_option(words, "--treat-missing-data"),
            )
            self.alarms.append(_option(words, "--alarm-name"))
            return ""
        raise AssertionError(f"rollout.md uses an aws command this test does not know: {words}")

    @staticmethod
    def _print(answer: dict[str, Any], words: list[str]) -> str:
        if "--query" in words:
            answer = jmespath.search(_option(words, "--query"), answer)
        if "--output" in words and _option(words, "--output") == "text":
            return f"{answer}\n"
        return json.dumps(answer, default=str) + "\n"


def test_the_runbook_runs_from_phase_1_to_the_end_of_the_migration(
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_handler: Any,
    sent: Any,
    flag_files: None,
) -> None:
    checkout = copy_phase_files(tmp_path / "flags")
    (tmp_path / "ai_agent_handler").mkdir()  # a checkout: flags/ beside the package
    (tmp_path / "ai_agent_handler" / "__init__.py").write_text("")
    copy_phase_files(tmp_path / "ops")
    monkeypatch.chdir(tmp_path)
    aws = AwsCli()
    application = aws.appconfig.create_application(Name="ai-agent")["Id"]
    variables = {
        **LIVE,
        "APP": application,
        "PROFILE": aws.appconfig.create_configuration_profile(
            ApplicationId=application, Name="production", LocationUri="hosted"
        )["Id"],
        "ENV": "production-env",
    }
    run = Runner(capsys)
    clock = Clock()
    monkeypatch.setattr(times, "utcnow", clock)
    ticks: list[str] = []
    ran: list[str] = []
    receivers_table()
    for line in runbook_commands():
        heredoc = HEREDOC.fullmatch(line)
        if heredoc:
            (tmp_path / heredoc.group(1)).write_text(heredoc.group(3))
            ran.append("cat")
            continue
        capture = re.match(r"([A-Z]+)=\$\((.*)\)\s*$", line)
        text = capture.group(2) if capture else line
        words = shlex.split(text, comments=True)
        if not words:
            continue
        words = [
            re.sub(r"\$\{?([A-Z]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), w)
            for w in words
        ]
        if words[0] == "export" or re.fullmatch(r"[A-Z]+=.*", words[0]):
            continue
        if words[0] == "aws":
            printed = aws(words)
        elif words[0] == "ai-agent-rollout" and words[-2:] == ["ramp", "tick"]:
            # The controller: a tick every few minutes; here a day passes between ticks, and
            # the fleet reports healthy runs meanwhile. The ramp walks its steps to the end.
            for _ in range(12):
                fleet_reports_healthy_runs(aws.cloudwatch, clock.now + datetime.timedelta(hours=1))
                clock.now += datetime.timedelta(days=1, minutes=5)
                result = run(*words[1:])
                assert result.code == 0, f"{line}: {result.err}"
                ticks.append(result.out)
                if "done at step" in result.out:
                    break
            printed = "".join(ticks)
        elif words[:2] == ["ai-agent-rollout", "retire-check"]:
            # Right after the last flag change the answer is "not yet": the files are not
            # quiet and no fleet has reported. Fifteen days later, with the fleets reporting
            # composite decisions, receivers reading without legacy hits and shadow reads
            # agreeing, it is yes.
            result = run(*words[1:])
            assert result.code == 5, f"{line}: {result.err}"
            assert re.search(r"^FAIL\s+quiet", result.out, flags=re.M), result.out
            later = clock.now + datetime.timedelta(days=15)  # the ramp's days, then 15 more
            for day in range(1, 15):
                fleets_report_a_migrated_day(aws.cloudwatch, later - datetime.timedelta(days=day))
            monkeypatch.setattr(times, "utcnow", Clock(later))
            result = run(*words[1:])
            assert result.code == 0, f"{line}: {result.out} {result.err}"
            printed = result.out
        elif words[:2] == ["git", "grep"]:
            # The removal's work list: the command retire-check prints, run in this
            # repository, finds where the flag is named (its key, its settings).
            assert words == retire.code_search(), line
            found = subprocess.run(words, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert found.returncode == 0, f"{line}: {found.stderr}"
            named = {hit.split(":", 1)[0] for hit in found.stdout.splitlines()}
            assert {"flags/production.flagd.json", "ai_agent_handler/settings.py"} <= named
            printed = found.stdout
        elif words[0] == "ai-agent-rollout":
            argv = [m for w in words[1:] for m in (sorted(tmp_path.glob(w)) if "*" in w else [w])]
            result = run(*map(str, argv))
            assert result.code == 0, f"{line}: {result.err}"
            printed = result.out
        else:
            raise AssertionError(f"rollout.md runs a command this test does not know: {line}")
        if capture:
            variables[capture.group(1)] = printed.strip()
        ran.append(words[0] if words[0] == "aws" else words[-1])

    assert len(ran) >= 24
    # The receivers' table: every legacy run also under its composite key.
    copies = receivers_items(f"{LIVE['PROD']}.backfill")
    assert copies == {"aws-prod-us-east-1#acme-corp": 3, "aws-prod-eu-west-1#initech": 3}
    # Production went through the guarded ramp: every step, each after its bake, then done.
    steps = [re.search(r"(advanced to|done at) step (\d)/5", out) for out in ticks]
    assert [m.group(2) for m in steps if m] == ["2", "3", "4", "5", "5"], ticks
    assert aws.alarms == ["agent-composite-invoke-errors"]
    # Every phase ended where the runbook says.
    assert live_state(s3, LIVE["DEV"]).kind == "composite-everywhere"
    assert live_state(s3, LIVE["STAGING"]).kind == "composite-everywhere"
    production = live_state(s3, LIVE["PROD"])
    assert production.kind == "composite-everywhere"
    assert production.allowed == ("aws-prod-eu-west-1", "aws-prod-us-east-2")
    # Cleanup made composite the shipped truth of production, in the checkout.
    assert fe.read_state(json.loads(checkout["production"].read_text())).kind == (
        "composite-everywhere"
    )
    # AppConfig: the published content is the edited working copy; its version was deployed.
    assert aws.deployed == [variables["VERSION"]] and variables["VERSION"].isdigit()
    assert (tmp_path / "ops/published.flagd.json").read_bytes() == (
        tmp_path / "ops/production.flagd.json"
    ).read_bytes()
    # The end of the migration: the fleet's variables make every run composite, and a run
    # without part_id is refused before anything is sent.
    assert aws.fleet["PARTITION_KEY_MODE"] == "composite"
    (tmp_path / "ops/production.flagd.json").write_text(
        (REPO / "flags/production.flagd.json").read_text()
    )  # a legacy file: the switch does not ask it
    for name, value in aws.fleet.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLAG_SOURCE", str(tmp_path / "ops/production.flagd.json"))
    make_handler().invoke_async_funct("f")
    with pytest.raises(PartitionKeyError):
        make_handler(part_id=None).invoke_async_funct("f")
    monkeypatch.delenv("PARTITION_KEY_MODE")  # its rollback
    make_handler().invoke_async_funct("f")
    assert [(c.payload["endpoint_id"], c.payload["key_scheme"]) for c in sent] == [
        ("aws-prod#acme-corp", "composite"),
        ("aws-prod", "legacy"),
    ]


def test_the_outfile_holds_the_configuration_not_the_version(aws: None, tmp_path: Path) -> None:
    """Why the old runbook's ``jq -r .VersionNumber version.json`` gave ``null``."""
    cli = AwsCli()
    app = cli.appconfig.create_application(Name="a")["Id"]
    profile = cli.appconfig.create_configuration_profile(
        ApplicationId=app, Name="p", LocationUri="hosted"
    )["Id"]
    outfile = tmp_path / "version.json"
    printed = cli(
        [
            "aws", "appconfig", "create-hosted-configuration-version",
            "--application-id", app, "--configuration-profile-id", profile,
            "--content-type", "application/json",
            "--content", f"fileb://{REPO}/flags/dev.flagd.json", str(outfile),
        ]
    )  # fmt: skip
    assert json.loads(printed)["VersionNumber"] == 1  # the version is in the response
    assert outfile.read_bytes() == (REPO / "flags/dev.flagd.json").read_bytes()
    assert json.loads(outfile.read_text()).get("VersionNumber") is None
