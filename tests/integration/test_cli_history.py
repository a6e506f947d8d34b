"""Where the rollout stands, with no argument: ``status``, ``history`` and ``ramp status`` on
the live files named once (``ai-agent-rollout.toml`` or ``$ROLLOUT_LIVE_<PHASE>``), local and
on S3 (moto's server on loopback, so every read is a real HTTP request).

* ``history`` lists the audit trail newest first: time, phase, trigger (operator, ramp,
  alarm), actor, command, versions, reason, a ramp action's evidence; damaged records are
  listed and counted, never a traceback; ``--since``, ``--endpoint``, ``--actor``,
  ``--limit`` and ``--json``.
* ``status`` adds the ramp (state, step, next tick) and the last change (who, when, why).
* On S3 the records are fetched with parallel GETs and progress is shown; ``--limit`` stops
  the reading early.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from ai_agent_handler.ops import history_io
from ai_agent_handler.ops.history import Filters
from tests.support import BUCKET, FLAGS_DIR, REGION
from tests.support.cli import Runner
from tests.support.rollout import ALARM, KEY, plant_damaged, rollout

pytestmark = pytest.mark.slow


def test_history_with_no_argument_is_the_named_live_files_trail_newest_first(
    run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout(run, monkeypatch, named_live)
    damaged = plant_damaged(named_live)
    result = run("history")
    assert result.code == 0, result.err
    heads = [line for line in result.out.splitlines() if not line.startswith((" ", "DAMAGED"))]
    said = [head.split(maxsplit=3)[1:] for head in heads[:-1]]
    assert said == [
        ["production", "alarm", "ramp-bot: ramp rollback 10  (version 5 -> 6)"],
        ["production", "ramp", "ramp-bot: ramp advance 25  (version 4 -> 5)"],
        ["production", "operator", "alice: ramp start 10  (version 3 -> 4)"],
        ["production", "operator", "bob: allow aws-prod-eu-west-1  (version 2 -> 3)"],
        ["production", "operator", "alice: percent 5  (version 1 -> 2)"],
        ["production", "operator", f"{_seeder()}: seed --from production  (version 1)"],
    ]
    assert "    why: CHG-2 canary" in result.out
    assert f"      alarms: {ALARM} ALARM" in result.out  # the rollback's evidence
    assert "    ramp rollback from step 2/3 (25 %) to step 1/3 (10 %): guard breach" in result.out
    for place in damaged:
        assert f"DAMAGED  {place}: " in result.out
    assert (
        heads[-1] == "6 of 6 record(s) shown; 2 damaged record(s) could not be read (listed above)"
    )
    assert "Traceback" not in result.out + result.err

    body = run("history", "--json").json()
    assert [r["command"] for r in body["records"]][:2] == ["ramp rollback 10", "ramp advance 25"]
    assert [r["trigger"] for r in body["records"]][:3] == ["alarm", "ramp", "operator"]
    assert body["records"][0]["ramp"]["evidence"]["alarms"] == {ALARM: "ALARM"}
    assert body["damaged"] == 2
    (mine,) = [file for file in body["files"] if file["source"] == named_live]
    assert sorted(d["where"] for d in mine["damaged"]) == sorted(damaged)


def _seeder() -> str:
    from ai_agent_handler.ops._cli_base import actor

    return actor()


def test_history_filters(run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout(run, monkeypatch, named_live)

    def commands(*argv: str) -> list[str]:
        result = run("history", "--json", *argv)
        assert result.code == 0, result.err
        return [record["command"] for record in result.json()["records"]]

    every = commands()
    assert len(every) == 6
    assert commands("--limit", "2") == every[:2]
    assert commands("--actor", "bob") == ["allow aws-prod-eu-west-1"]
    assert commands("--actor", "nobody") == []
    future = (
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    ).isoformat()
    assert commands("--since", future) == []
    assert commands("--since", "1h") == every
    # The canary's key moved only when it was listed; later percentages never touch it.
    assert commands("--endpoint", "aws-prod-eu-west-1") == ["allow aws-prod-eu-west-1"]
    assert commands("production", "--limit", "1") == every[:1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["history", "--limit", "0"], "must be 1 or more"),
        (["history", "--since", "last tuesday"], "not a time or a duration back"),
        (["history", "--endpoint", "a#b"], "endpoint_id"),
        (["history", "--actor", ""], "--actor is empty"),
        (["history", "prodution"], "unknown phase 'prodution' (did you mean 'production'?)"),
        (["--file", "x.json", "history", "production"], "give one"),
    ],
)
def test_history_refuses_a_wrong_command_line(run: Runner, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 2 and message in result.err


def test_status_with_no_argument_says_the_ramp_and_the_last_change(
    run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout(run, monkeypatch, named_live)
    result = run("status")
    assert result.code == 0, result.err
    block = result.out.split("production  ", 1)[1].splitlines()
    assert block[0].startswith("composite for 1 allow-listed endpoint(s) (aws-prod-eu-west-1)")
    assert "10 % of the others" in block[0]
    assert block[1].endswith(f"{named_live}; named by {Path.cwd() / 'ai-agent-rollout.toml'}")
    assert block[2].strip().startswith("ramp ") and "PAUSED, step 1/3 (10 %)" in block[2]
    assert "guard breach" in block[2]
    assert block[3].strip().startswith("next tick: nothing while paused")
    assert "by ramp-bot (alarm): ramp rollback 10" in block[4]
    row = next(r for r in run("status", "--json").json()["files"] if r["phase"] == "production")
    assert row["named_by"] == str(Path.cwd() / "ai-agent-rollout.toml")
    assert row["ramp"]["status"] == "paused" and row["ramp"]["percent"] == 10
    assert row["last_change"]["actor"] == "ramp-bot"
    assert row["last_change"]["trigger"] == "alarm"
    assert row["last_change"]["version_after"] == row["version"] == 6


def test_ramp_status_with_no_file_and_with_a_phase(
    run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rollout(run, monkeypatch, named_live)
    one = run("ramp", "status")
    assert one.code == 0, one.err
    assert one.out.startswith("ramp ") and f"on {named_live}: paused" in one.out
    assert run("ramp", "status", "production").out == one.out
    assert run("ramp", "status", "staging").code == 2  # no live file named for it
    # Two named live files: ramp status shows each; --wait needs one of them.
    staging = tmp_path / "live" / "staging.flagd.json"
    staging.write_bytes((FLAGS_DIR / "staging.flagd.json").read_bytes())
    monkeypatch.setenv("ROLLOUT_LIVE_STAGING", str(staging))
    both = run("ramp", "status")
    assert both.code == 0 and f"staging: no ramp on {staging}" in both.out
    assert f"on {named_live}: paused" in both.out
    waited = run("ramp", "status", "--wait")
    assert waited.code == 2
    assert "ramp status --wait needs one file: name the PHASE (staging, production)" in waited.err
    assert run("ramp", "status", "--wait", "production").code == 5  # paused: the answer is no
    tick = run("ramp", "tick")  # a command that writes names its file
    assert tick.code == 2 and "ramp tick needs its file named: the PHASE" in tick.err
    assert run("ramp", "resume", "production", "--dry-run").code == 0


def test_s3_history_reads_in_parallel_shows_progress_and_stops_at_the_limit(
    aws_server: str, run: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    source = f"s3://{BUCKET}/{KEY}"
    body = (FLAGS_DIR / "production.flagd.json").read_bytes()
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    total = 300
    for version in range(1, total + 1):
        record = {
            "time": f"2026-12-01T{version // 60:02d}:{version % 60:02d}:00.000+00:00",
            "actor": "alice" if version % 2 else "bob",
            "command": f"percent {version % 100}",
            "phase": "production",
            "file": source,
            "version_before": version,
            "version_after": version + 1,
        }
        name = f"{KEY}.audit/{version + 1:010d}-20261201T000000Z-{version:08x}.json"
        s3.put_object(Bucket=BUCKET, Key=name, Body=json.dumps(record).encode())
    monkeypatch.setenv("ROLLOUT_LIVE_PRODUCTION", source)
    result = run("history", "production", "--json")
    assert result.code == 0, result.err
    versions = [r["version_after"] for r in result.json()["records"]]
    assert versions == list(range(total + 1, 1, -1))  # every record, newest first
    progress = [line for line in result.err.splitlines() if "audit records" in line]
    assert progress[-1].endswith(f"{total}/{total}") and 2 <= len(progress) <= 11
    page = run("report", "production", "--html", str(tmp_path / "page.html"))
    assert page.code == 0 and f"{total}/{total}" in page.err  # the report shows it too

    gets: list[str] = []
    client = boto3.client("s3", region_name=REGION)
    client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    trail = history_io.read_trail(source, Filters(limit=3, actor="bob"), s3_client=client)
    assert [r.version_after for r in trail.records] == [301, 299, 297]
    assert len(gets) == history_io.BATCH < total  # one round of GETs, newest names first
    gets.clear()  # the newest records only (status's last change): the limit and a margin
    trail = history_io.read_trail(source, Filters(limit=2), s3_client=client)
    assert [r.version_after for r in trail.records] == [301, 300]
    assert len(gets) == 2 + history_io.WORKERS


def test_a_named_live_file_in_the_environment_wins_over_the_file(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "live").mkdir()
    for name in ("a", "b"):
        target = tmp_path / "live" / f"{name}.flagd.json"
        target.write_bytes((FLAGS_DIR / "staging.flagd.json").read_bytes())
    (tmp_path / "ai-agent-rollout.toml").write_text('[live]\nstaging = "live/a.flagd.json"\n')
    monkeypatch.chdir(tmp_path / "deep" / "er")  # found from a folder below, paths from its own

    def staging_source() -> Any:
        rows = run("status", "staging", "--json").json()["files"]
        return rows[0]["source"], rows[0]["named_by"]

    assert staging_source() == (
        str(tmp_path / "live" / "a.flagd.json"),
        str(tmp_path / "ai-agent-rollout.toml"),
    )
    monkeypatch.setenv("ROLLOUT_LIVE_STAGING", str(tmp_path / "live" / "b.flagd.json"))
    assert staging_source() == (str(tmp_path / "live" / "b.flagd.json"), "$ROLLOUT_LIVE_STAGING")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[live\n", "not valid TOML"),
        ("[live]\nprod = 'x'\n", "ai-agent-rollout.toml: [live]: unknown phase 'prod'"),
        ("[live]\nproduction = ''\n", "live.production must be a path"),
        ("[live]\nproduction = 3\n", "live.production must be a path"),
        ("[phases]\nproduction = 'x'\n", "unknown table or key 'phases'"),
        ("live = 'x'\n", "live must be a table"),
        ("[live]\nproduction = 's3:/bucket/key'\n", "s3"),
    ],
)
def test_a_wrong_configuration_is_one_line_and_exit_2(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, message: str
) -> None:
    (tmp_path / "ai-agent-rollout.toml").write_text(config)
    monkeypatch.chdir(tmp_path)
    for argv in (["status"], ["history"], ["ramp", "status"]):
        result = run(*argv)
        assert result.code == 2, (argv, result.out, result.err)
        assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert run("--phase", "production", "status").code == 0  # --phase needs no live file


def test_retire_check_reads_the_named_live_files(
    run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout(run, monkeypatch, named_live)
    result = run("retire-check", "--days", "1", "--json")
    assert result.code == 5  # at 10 %, paused: not yet
    files = next(c for c in result.json()["checks"] if c["name"] == "files")
    assert named_live in json.dumps(files)
