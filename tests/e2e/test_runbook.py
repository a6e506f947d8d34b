"""rollout.md can be followed from phase 1 to cleanup with the CLI: its commands, run in order.

Every ``ai-agent-rollout`` line of the runbook's shell blocks runs against a local S3 (moto)
and scratch copies of the phase files; ``aws s3 cp`` seeding lines are done with boto3,
other ``aws`` lines (AppConfig) are skipped. A command that no longer parses, or a phase
that does not end where the runbook says, fails here.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.ops import cli
from ai_agent_handler.ops import edits as fe
from tests.support import BUCKET, REPO
from tests.support.cli import Runner, copy_phase_files

LIVE = {
    "DEV": f"s3://{BUCKET}/ai-agent/dev.flagd.json",
    "STAGING": f"s3://{BUCKET}/ai-agent/staging.flagd.json",
    "PROD": f"s3://{BUCKET}/ai-agent/production.flagd.json",
}


def runbook_commands() -> list[list[str]]:
    """The shell lines of rollout.md's bash blocks, joined at backslashes, comments cut."""
    text = (REPO / "rollout.md").read_text()
    lines: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(words)
    return lines


def live_state(client: Any, uri: str) -> fe.RolloutState:
    key = uri.split("/", 3)[3]
    doc = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return fe.read_state(doc)


def test_the_runbook_runs_from_phase_1_to_cleanup(
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shipped = copy_phase_files(tmp_path / "flags")
    copy_phase_files(tmp_path / "ops")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.default_provider, "shipped_flag_file", lambda phase: shipped[phase])
    run = Runner(capsys)
    ran = 0
    for words in runbook_commands():
        words = [re.sub(r"\$(DEV|STAGING|PROD)\b", lambda m: LIVE[m.group(1)], w) for w in words]
        if words[0] == "export" or re.fullmatch(r"[A-Z]+=.*", words[0]):
            continue
        if words[:3] == ["aws", "s3", "cp"]:
            source, target = words[3], words[4]
            s3.put_object(
                Bucket=BUCKET, Key=target.split("/", 3)[3], Body=Path(source).read_bytes()
            )
            continue
        if words[0] != "ai-agent-rollout":
            continue  # AppConfig publishing: not available locally
        argv = [m for w in words[1:] for m in (sorted(glob.glob(w)) if "*" in w else [w])]
        result = run(*argv)
        assert result.code == 0, f"{' '.join(words)}: {result.err}"
        ran += 1
    assert ran >= 18
    assert live_state(s3, LIVE["DEV"]).kind == "composite-everywhere"
    assert live_state(s3, LIVE["STAGING"]).kind == "composite-everywhere"
    production = live_state(s3, LIVE["PROD"])
    assert production.kind == "composite-everywhere"
    assert production.allowed == ("aws-prod-eu-west-1", "aws-prod-us-east-2")
    # Cleanup made composite the shipped truth of production.
    assert fe.read_state(json.loads(shipped["production"].read_text())).kind == (
        "composite-everywhere"
    )
