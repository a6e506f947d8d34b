"""rollout.md can be followed from phase 1 to the end of the migration: its commands, in order.

Every ``ai-agent-rollout`` line of the runbook's shell blocks runs against a local S3 (moto)
and a scratch checkout (``flags/`` and a ``pyproject.toml``). The ``aws`` lines run against
moto through a small stand-in for the AWS CLI that keeps the CLI's own rules where the
runbook relies on them: a streaming answer's content goes to the outfile (the last
argument), ``--query`` (JMESPath, as the CLI applies it) and ``--output text`` shape what is
printed, and ``NAME=$(...)`` captures it for later ``$NAME``. ``start-deployment`` is not in
moto: the stand-in checks its version argument names a version that was created. The fleet
configuration line (``update-function-configuration``) is applied to a handler created
with those variables. A command that no longer parses, or a phase that does not end where
the runbook says, fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import boto3
import jmespath
import pytest

from ai_agent_handler import PartitionKeyError
from ai_agent_handler.ops import edits as fe
from tests.support import BUCKET, REGION, REPO
from tests.support.cli import Runner, copy_phase_files

LIVE = {
    "DEV": f"s3://{BUCKET}/ai-agent/dev.flagd.json",
    "STAGING": f"s3://{BUCKET}/ai-agent/staging.flagd.json",
    "PROD": f"s3://{BUCKET}/ai-agent/production.flagd.json",
}


def runbook_commands() -> list[str]:
    """The shell lines of rollout.md's bash blocks, joined at backslashes."""
    text = (REPO / "rollout.md").read_text()
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def live_state(client: Any, uri: str) -> fe.RolloutState:
    key = uri.split("/", 3)[3]
    doc = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return fe.read_state(doc)


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


class AwsCli:
    """The ``aws`` commands the runbook uses, against moto, with the CLI's output rules."""

    def __init__(self) -> None:
        self.appconfig = boto3.client("appconfig", region_name=REGION)
        self.deployed: list[str] = []
        self.fleet: dict[str, str] = {}

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
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "ai_agent_handler"\n')
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
    ran: list[str] = []
    for line in runbook_commands():
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
