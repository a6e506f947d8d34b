"""The README's first command: the rollout demo runs, shows the keys, and checks itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ai_agent_handler.ops import edits
from examples import rollout_demo as demo
from tests.support import REPO


def test_the_demo_runs_and_shows_the_rollout_and_the_rollback(tmp_path: Path) -> None:
    page = tmp_path / "demo report.html"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "rollout_demo.py"), "--report", str(page)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "aws-prod-us-east-1#acme-corp" in out  # dev: the composite key on the wire
    assert "$ ai-agent-rollout --file production.flagd.json percent 30" in out
    assert "$ ai-agent-rollout --file production.flagd.json allow aws-prod-eu-west-1" in out
    assert "$ ai-agent-rollout --file production.flagd.json rollback" in out
    assert "legacy everywhere" in out
    lines = out.strip().splitlines()
    table = [
        line.split()
        for line in lines
        if line.strip().startswith("aws-prod-") and len(line.split()) == 5
    ]
    # The guarded ramp: advanced on healthy guards, rolled back one step on the alarm.
    assert "ramp start --steps 30,60,100 --bake 0s --alarm agent-receivers-errors" in out
    assert "advanced to step 2/3 (60 %): bake done, guards healthy" in out
    assert "ROLLED BACK to step 1/3 (30 %) and paused: guard breach" in out
    assert "alarm agent-receivers-errors is in ALARM" in out
    ramp = [
        line.split()
        for line in lines
        if line.strip().startswith("aws-prod-") and len(line.split()) == 4
    ]
    assert len(ramp) == len(demo.ENDPOINTS)
    assert any(row[1] == "legacy" and row[2] == "composite" for row in ramp)  # moved at 60
    assert all(row[1] == row[3] for row in ramp)  # the alarm moved exactly those back
    assert len(table) == len(demo.ENDPOINTS)
    assert all(row[1] == "legacy" and row[4] == "legacy" for row in table)  # shipped, rollback
    assert any(row[3] == "composite" for row in table)  # percent 30 moved some endpoints
    assert lines[-1].startswith("OK: ") and "rollback" in lines[-1]
    assert "rolled back from 60 % to 30 % on an alarm and paused" in lines[-1]
    assert result.stderr == ""
    # The page of the rollout: written where it was asked, its path printed, one timeline
    # marker per change of the audit log (the edits, the ramp's start, step and rollback).
    assert f"report written: {page}" in out
    html = page.read_text(encoding="utf-8")
    assert html.count('<g class="marker ') == 6
    assert html.count('class="marker marker-alarm rollback"') == 1
    counted = re.search(r"(\d+) (calls?) before, ", out)
    assert counted and (counted[1] == "1") == (counted[2] == "call")  # number and noun agree
    assert not re.search(r"(?<![\d.])1 (calls|records|runs|endpoints)\b", out), out


def test_the_demo_fails_loudly_when_the_keys_are_not_what_the_files_say(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rollback that changes nothing: the next runs stay composite, which the demo catches.
    monkeypatch.setattr(edits, "rollback", lambda doc, **_: doc)
    assert demo.main([]) == 1
    failed = capsys.readouterr().out.strip().splitlines()[-1]
    assert failed.startswith("FAILED: ") and "rollback: legacy everywhere" in failed


def test_the_backfill_demo_moves_the_receivers_data_and_proves_it() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "receiver_backfill.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    before, after = out.split("4. The same reads after the backfill")
    assert "ReceiverReads 120, LegacyFallbackHits 120, ShadowSame 0, ShadowLegacyOnly 120" in before
    assert "ReceiverReads 120, LegacyFallbackHits 0, ShadowSame 120, ShadowLegacyOnly 0" in after
    assert "backfill agent-tasks.pk -> agent-tasks.pk: dry run" in before
    assert "121 scanned: 120 copied, 0 already there, 0 conflict(s)" in before
    assert "backfill verify agent-tasks.pk -> agent-tasks.pk: complete" in before
    assert "retire-check will read: agent-tasks -> agent-tasks: 3 endpoint(s), 120 item(s)" in out
    assert out.strip().splitlines()[-1].startswith("OK in ")
    assert result.stderr == ""
