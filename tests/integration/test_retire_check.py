"""``ai-agent-rollout retire-check``: the plan's phase 4 ("remove fallback logic after all
systems migrated") as checks, against files, moto's S3 and moto's CloudWatch.

A scratch checkout (``flags/`` beside an ``ai_agent_handler/`` package) holds the shipped
phase files the command finds as ``--phase`` does; live files are local (their age set with
``os.utime``) or S3 objects. moto stamps an S3 object with the real time and cannot backdate
it, so the S3 cases run the check later through the injectable ``now`` (and put their
metrics in that later window: moto takes any timestamp and filters by it).
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from ai_agent_handler import FLAG_KEY
from ai_agent_handler.ops import cli, cli_retire, retire, retire_io
from tests.support import BUCKET, PHASES, REGION, REPO
from tests.support.cli import Runner
from tests.support.flags import dump, everywhere, phase_doc, rollout

DAYS = 14
CHECKS = ["files", "quiet", "decisions", "receivers", "consistency"]
SHADOW = ("ShadowSame", "ShadowDifferent", "ShadowLegacyOnly", "ShadowCompositeOnly")
UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def composite(phase: str) -> dict[str, Any]:
    """A flag document of ``phase`` that gives every endpoint the composite key."""
    return everywhere(True) if phase == "dev" else rollout(phase, percent=100)


def put_metric(
    cloudwatch: Any,
    metric: str,
    phase: str,
    scheme: str,
    value: float,
    at: datetime.datetime | None = None,
) -> None:
    """One counter value as the EMF lines of handlers and receivers report it."""
    cloudwatch.put_metric_data(
        Namespace="ai_agent_handler",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [
                    {"Name": "phase", "Value": phase},
                    {"Name": "key_scheme", "Value": scheme},
                ],
                "Timestamp": at or utcnow() - datetime.timedelta(hours=1),
                "Value": value,
                "Unit": "Count",
            }
        ],
    )


def migrated_metrics() -> list[tuple[str, str, str, float]]:
    """Every phase decided composite only, without errors; receivers read without needing
    the legacy key, and their sampled shadow reads found the same item under both keys (or
    only under the composite key). Counters reported as 0 are reported: the EMF line
    carries them."""
    out: list[tuple[str, str, str, float]] = []
    for phase in PHASES:
        out += [
            ("KeyDecisions", phase, "composite", 120),
            ("FlagEvaluationErrors", phase, "composite", 0),
            ("ReceiverReads", phase, "composite", 80),
            ("LegacyFallbackReads", phase, "composite", 0),
            ("LegacyFallbackHits", phase, "composite", 0),
            ("ShadowSame", phase, "composite", 60),
            ("ShadowDifferent", phase, "composite", 0),
            ("ShadowLegacyOnly", phase, "composite", 0),
            ("ShadowCompositeOnly", phase, "composite", 5),
        ]
    return out


#: A live file named on the command line that does not exist.
MISSING = "missing"


@dataclass
class Fleet:
    """What the check will find: shipped files, live files (None: ``--live P=none``; a phase
    left out: no ``--live``), counters in CloudWatch."""

    shipped: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {phase: composite(phase) for phase in PHASES}
    )
    live: dict[str, dict[str, Any] | bytes | str | None] = field(
        default_factory=lambda: {phase: composite(phase) for phase in PHASES}
    )
    metrics: list[tuple[str, str, str, float]] = field(default_factory=migrated_metrics)
    #: When the live files last changed.
    age: datetime.timedelta = datetime.timedelta(days=30)

    def drop(self, *, metrics: tuple[str, ...], phase: str | None = None) -> None:
        self.metrics = [
            m for m in self.metrics if not (m[0] in metrics and (phase is None or m[1] == phase))
        ]

    def build(self, root: Path, cloudwatch: Any) -> list[str]:
        """Write the checkout and live files, report the counters; the command line."""
        checkout(root, self.shipped)
        argv = ["retire-check", "--days", str(DAYS)]
        folder = root / "live"
        folder.mkdir(exist_ok=True)
        changed = (utcnow() - self.age).timestamp()
        for phase, content in self.live.items():
            if content is None:
                argv += ["--live", f"{phase}=none"]
                continue
            path = folder / f"{phase}.flagd.json"
            if content != MISSING:
                path.write_bytes(content if isinstance(content, bytes) else dump(content))
                os.utime(path, (changed, changed))
            argv += ["--live", f"{phase}={path}"]
        for metric, phase, scheme, value in self.metrics:
            put_metric(cloudwatch, metric, phase, scheme, value)
        return argv


def checkout(root: Path, shipped: dict[str, dict[str, Any]]) -> Path:
    """A scratch checkout of this repository whose ``flags/`` hold ``shipped``."""
    flags = root / "flags"
    flags.mkdir(parents=True, exist_ok=True)
    for phase, doc in shipped.items():
        (flags / f"{phase}.flagd.json").write_bytes(dump(doc))
    (root / "ai_agent_handler").mkdir(exist_ok=True)  # a checkout: flags/ beside the package
    (root / "ai_agent_handler" / "__init__.py").write_text("")
    return flags


def results(body: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["result"] for check in body["checks"]}


def check_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [check for check in body["checks"] if check["name"] == name]
    return found


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The scratch checkout is the current folder (``--phase`` finds its ``flags/``)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cloudwatch(aws: None) -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


def shipped_in(root: Path) -> Callable[[str], str]:
    return lambda phase: str(root / "flags" / f"{phase}.flagd.json")


# -- a migrated fleet ----------------------------------------------------------------------------


@pytest.fixture
def code_tree(tmp_path: Path) -> Path:
    """A git work tree whose code and configuration still name the flag, with a binary
    file and untracked folders (an environment, a cache) that name it too."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "service"
    (root / "app").mkdir(parents=True)
    (root / "app" / "handler.py").write_text(
        "import os\n"
        "\n"
        'SOURCE = os.environ.get("FLAG_SOURCE")\n'
        f'KEY = "{FLAG_KEY}"\n'
        "handler = make(partition_key_mode='composite', flag_source=SOURCE)\n"
    )
    (root / "deploy.env").write_text("ROLLOUT_PHASE=production\nPARTITION_KEY_MODE=composite\n")
    (root / "notes.txt").write_text("nothing to see\n")
    for skipped in (".git", ".venv/lib", "app/__pycache__"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "x.py").write_text("FLAG_SOURCE = 1\n")
    (root / "blob.bin").write_bytes(b"\x00\x01FLAG_SOURCE\n")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "app/handler.py", "deploy.env", "notes.txt", "blob.bin"])
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return root


CODE_REFERENCES = [
    'app/handler.py:3:SOURCE = os.environ.get("FLAG_SOURCE")',
    f'app/handler.py:4:KEY = "{FLAG_KEY}"',
    "app/handler.py:5:handler = make(partition_key_mode='composite', flag_source=SOURCE)",
    "deploy.env:1:ROLLOUT_PHASE=production",
    "deploy.env:2:PARTITION_KEY_MODE=composite",
]


def printed_command(lines: list[str]) -> list[str]:
    """The git grep ``retire-check`` prints, as the shell reads it (continued lines joined)."""
    at = next(i for i, line in enumerate(lines) if line.startswith("where code still names"))
    text = []
    for line in lines[at + 1 :]:
        text.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(text))


def test_a_migrated_fleet_with_live_files_in_s3_and_local_can_remove_the_flag(
    here: Path, s3: Any, cloudwatch: Any, code_tree: Path
) -> None:
    checkout(here, {phase: composite(phase) for phase in PHASES})
    later = utcnow() + datetime.timedelta(days=DAYS + 1)  # the S3 objects are 15 days old then
    dev = here / "dev.flagd.json"
    dev.write_bytes(dump(composite("dev")))
    os.utime(dev, (utcnow().timestamp(),) * 2)  # also 15 days old by then
    for phase in ("staging", "production"):
        s3.put_object(
            Bucket=BUCKET, Key=f"ai-agent/{phase}.flagd.json", Body=dump(composite(phase))
        )
    for metric, phase, scheme, value in migrated_metrics():
        put_metric(cloudwatch, metric, phase, scheme, value, at=later - datetime.timedelta(days=2))
    argv = [
        "retire-check", "--days", str(DAYS),
        "--live", f"dev={dev}",
        "--live", f"staging=s3://{BUCKET}/ai-agent/staging.flagd.json",
        "--live", f"production=S3://{BUCKET}/ai-agent/production.flagd.json",
    ]  # fmt: skip
    lines: list[str] = []
    code = cli_retire.run(
        cli.build_parser().parse_args(argv),
        lines.append,
        shipped_in(here),
        now=later,
        cloudwatch_client=cloudwatch,
        s3_client=s3,
    )
    assert code == cli.EXIT_OK, "\n".join(lines)
    heads = [line for line in lines if not line.startswith(" ")]  # a wrapped detail is indented
    assert [line.split()[:2] for line in heads[:5]] == [
        ["PASS", "files"],
        ["PASS", "quiet"],
        ["PASS", "decisions"],
        ["PASS", "receivers"],
        ["PASS", "consistency"],
    ]
    assert lines[-1] == "the flag can be removed: follow rollout.md section 7"
    # The removal's work list: the printed git grep, run in the service's work tree.
    command = printed_command(lines)
    assert command == retire.code_search()
    found = subprocess.run(command, cwd=code_tree, capture_output=True, text=True, check=True)
    assert found.stdout.splitlines() == CODE_REFERENCES

    body: list[str] = []
    args = cli.build_parser().parse_args([*argv, "--json"])
    cli_retire.run(args, body.append, shipped_in(here), now=later, cloudwatch_client=cloudwatch)
    report = json.loads("".join(body))
    assert report["ready"] is True
    assert results(report) == dict.fromkeys(CHECKS, "pass")
    assert report["code_search"] == command
    files = check_of(report, "files")["evidence"]["phases"]
    assert files["production"]["live"]["source"] == f"s3://{BUCKET}/ai-agent/production.flagd.json"
    assert files["production"]["live"]["kind"] == "composite-everywhere"


# -- a half-migrated fleet: exactly the checks that must fail ------------------------------------


def _receivers_hit_legacy(fleet: Fleet) -> None:
    fleet.metrics += [
        ("LegacyFallbackReads", "production", "composite", 2),
        ("LegacyFallbackHits", "production", "composite", 2),
    ]


CASES: list[tuple[str, Callable[[Fleet], None], dict[str, tuple[str, str]]]] = [
    ("migrated", lambda f: None, {}),
    ("dev-has-no-live-file", lambda f: f.live.update(dev=None), {}),
    (
        "fallback-reads-that-found-nothing",  # a new item is under neither key
        lambda f: f.metrics.append(("LegacyFallbackReads", "staging", "composite", 7)),
        {},
    ),
    (
        "staging-live-file-at-50-percent",
        lambda f: f.live.update(staging=rollout("staging", percent=50)),
        {"files": ("fail", "staging: live")},
    ),
    (
        "production-shipped-file-legacy",
        lambda f: f.shipped.update(production=phase_doc("production")),
        {"files": ("fail", "production: shipped")},
    ),
    (
        "live-file-invalid",
        lambda f: f.live.update(dev=b"{not json"),
        {"files": ("fail", "dev: live")},
    ),
    (
        "live-file-missing",
        lambda f: f.live.update(dev=MISSING),
        {"files": ("fail", "no such file"), "quiet": ("unknown", "no such file")},
    ),
    (
        "no-live-for-production",
        lambda f: f.live.pop("production"),
        {
            "files": ("unknown", "the live file of production was not named"),
            "quiet": ("unknown", "the live file of production was not named"),
        },
    ),
    (
        "legacy-decisions-in-production",
        lambda f: f.metrics.append(("KeyDecisions", "production", "legacy", 5)),
        {"decisions": ("fail", "production: 5 legacy")},
    ),
    (
        "legacy-decisions-of-handlers-without-a-phase",
        lambda f: f.metrics.append(("KeyDecisions", "none", "legacy", 3)),
        {"decisions": ("fail", "ROLLOUT_PHASE")},
    ),
    (
        "one-flag-evaluation-error",
        lambda f: f.metrics.append(("FlagEvaluationErrors", "staging", "legacy", 1)),
        {"decisions": ("fail", "staging: 1 flag evaluation error")},
    ),
    (
        "no-decisions-reported-for-dev",
        lambda f: f.drop(metrics=("KeyDecisions", "FlagEvaluationErrors"), phase="dev"),
        {"decisions": ("unknown", "are the EMF metrics reaching CloudWatch?")},
    ),
    (
        "receivers-hit-the-legacy-key",
        _receivers_hit_legacy,
        {"receivers": ("fail", "production: 2 read(s) found their item only under the legacy")},
    ),
    (
        "no-receiver-metrics",
        lambda f: f.drop(metrics=("ReceiverReads", "LegacyFallbackReads", "LegacyFallbackHits")),
        {"receivers": ("unknown", "no receiver reports reads")},
    ),
    (
        "shadow-reads-found-items-only-under-the-legacy-key",
        lambda f: f.metrics.append(("ShadowLegacyOnly", "production", "composite", 3)),
        {
            "consistency": (
                "fail",
                "production: 3 sampled read(s) found the item only under the legacy key: "
                "backfill owed",
            )
        },
    ),
    (
        "shadow-copies-disagree",
        lambda f: f.metrics.append(("ShadowDifferent", "staging", "composite", 1)),
        {
            "consistency": (
                "fail",
                "staging: consistency 98.36 % is below 99.9 %: 60 same, 1 different of 61 compared",
            )
        },
    ),
    (
        "shadow-reads-of-receivers-without-a-phase-disagree",
        lambda f: f.metrics.append(("ShadowDifferent", "none", "composite", 2)),
        {"consistency": ("fail", "none: consistency 0 % is below 99.9 %")},
    ),
    (
        "only-composite-only-shadow-reads",
        lambda f: f.drop(metrics=("ShadowSame",), phase="dev"),
        {},
    ),
    (
        "no-shadow-reads-in-dev",
        lambda f: f.drop(metrics=SHADOW, phase="dev"),
        {
            "consistency": (
                "unknown",
                "dev: no shadow reads in 14 days: do the receivers sample with read_with_shadow?",
            )
        },
    ),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_half_migrated_fleet_fails_exactly_the_checks_it_should(
    run: Runner,
    here: Path,
    cloudwatch: Any,
    change: Callable[[Fleet], None],
    expected: dict[str, tuple[str, str]],
) -> None:
    fleet = Fleet()
    change(fleet)
    argv = fleet.build(here, cloudwatch)
    # Before the window: every case has it, and it never counts.
    put_metric(cloudwatch, "KeyDecisions", "staging", "legacy", 50, at=utcnow() - 20 * DAY)

    result = run(*argv, "--json")
    body = result.json()
    wanted = dict.fromkeys(CHECKS, "pass")
    wanted |= {name: outcome for name, (outcome, _) in expected.items()}
    assert results(body) == wanted, body
    for name, (_, words) in expected.items():
        assert words in check_of(body, name)["detail"]
    assert body["ready"] is (not expected)
    assert result.code == (cli.EXIT_NOT_DONE if expected else cli.EXIT_OK), result.err

    human = run(*argv)
    assert human.code == result.code
    lines = human.out.splitlines()
    for name, (outcome, _) in expected.items():
        assert any(line.split()[:2] == [outcome.upper(), name] for line in lines), lines
    if expected:
        assert lines[-1] == f"not yet: {len(expected)} check(s) fail"
    else:
        assert lines[-1] == "the flag can be removed: follow rollout.md section 7"


def test_the_receivers_check_reads_the_backfill_recorded_beside_the_live_file(
    run: Runner, here: Path, cloudwatch: Any
) -> None:
    from ai_agent_handler.ops.backfill import Backfilled, Job

    fleet = Fleet()
    _receivers_hit_legacy(fleet)
    argv = fleet.build(here, cloudwatch)
    job = Job("agents-v1", "agents")
    record = Backfilled(job, utcnow(), True, 300, 0, 0, 0, {"e#p": {"items": 300}}, (0,))
    folder = here / "live" / "production.flagd.json.backfill" / job.name
    folder.mkdir(parents=True)
    (folder / "verified-segment-0-of-1.json").write_text(json.dumps(record.to_json()))

    body = run(*argv, "--json").json()
    receivers = check_of(body, "receivers")
    assert receivers["result"] == "fail"
    assert "production: fallback hits 2 although backfilled" in receivers["detail"]
    assert "agents-v1 -> agents: 1 endpoint(s), 300 item(s), complete" in receivers["detail"]
    evidence = receivers["evidence"]["phases"]["production"]["backfilled"]
    assert evidence["complete"] is True
    assert evidence["source"] == f"{here / 'live' / 'production.flagd.json'}.backfill"
    assert "backfilled" not in receivers["evidence"]["phases"]["dev"]["backfilled"]["tables"]


@pytest.mark.parametrize(
    ("minimum", "result"), [(None, "fail"), ("98.5", "fail"), ("98.3", "pass"), ("98", "pass")]
)
def test_min_consistency_sets_where_the_consistency_check_passes(
    run: Runner, here: Path, cloudwatch: Any, minimum: str | None, result: str
) -> None:
    fleet = Fleet()
    fleet.metrics.append(("ShadowDifferent", "staging", "composite", 1))  # 60 of 61: 98.36 %
    argv = fleet.build(here, cloudwatch)
    option = [] if minimum is None else ["--min-consistency", minimum]
    outcome = run(*argv, *option, "--json")
    check = check_of(outcome.json(), "consistency")
    assert check["result"] == result, check["detail"]
    assert check["evidence"]["min_consistency"] == float(minimum or 99.9)
    assert outcome.code == (cli.EXIT_OK if result == "pass" else cli.EXIT_NOT_DONE)
    if result == "pass":
        assert f"consistency at least {minimum} %" in check["detail"]
        assert "staging 98.36 % of 61 compared (66 sampled)" in check["detail"]


# -- quiet: no flag change for N days -------------------------------------------------------------


def _audit_record(path: Path, when: datetime.datetime) -> None:
    record = {"time": when.isoformat(timespec="milliseconds"), "file": str(path), "command": "x"}
    path.with_name(path.name + ".audit.jsonl").write_text(json.dumps(record) + "\n")


@pytest.mark.parametrize(
    ("modified_days_ago", "audited_days_ago", "result"),
    [
        (2, None, "fail"),  # edited two days ago
        (30, 2, "fail"),  # copied back with its old mtime, but the audit log saw the change
        (30, 20, "pass"),
        (DAYS + 1, None, "pass"),
    ],
)
def test_a_live_file_changed_within_n_days_is_not_quiet(
    run: Runner,
    here: Path,
    cloudwatch: Any,
    modified_days_ago: int,
    audited_days_ago: int | None,
    result: str,
) -> None:
    fleet = Fleet()
    argv = fleet.build(here, cloudwatch)
    staging = here / "live" / "staging.flagd.json"
    modified = (utcnow() - modified_days_ago * DAY).timestamp()
    os.utime(staging, (modified, modified))
    if audited_days_ago is not None:
        _audit_record(staging, utcnow() - audited_days_ago * DAY)

    outcome = run(*argv, "--json")
    body = outcome.json()
    expected = dict.fromkeys(CHECKS, "pass") | {"quiet": result}
    assert results(body) == expected
    quiet = check_of(body, "quiet")
    phase = quiet["evidence"]["phases"]["staging"]
    assert phase["source"] == str(staging)
    assert phase["result"] == result
    if audited_days_ago is not None:
        assert phase["newest_audit"] is not None
    if result == "fail":
        assert "staging" in quiet["detail"] and "changed" in quiet["detail"]
        assert outcome.code == cli.EXIT_NOT_DONE
    else:
        assert outcome.code == cli.EXIT_OK


def test_an_s3_live_file_is_quiet_once_n_days_have_passed(
    run: Runner, here: Path, s3: Any, cloudwatch: Any
) -> None:
    checkout(here, {phase: composite(phase) for phase in PHASES})
    source = here / "flags" / "production.flagd.json"
    uri = f"s3://{BUCKET}/ai-agent/production.flagd.json"
    assert run("--file", uri, "seed", "--from", str(source)).code == 0  # audited under .audit/

    def quiet(now: datetime.datetime) -> retire.Check:
        report = retire_io.retire_check(
            days=DAYS,
            live={"dev": None, "staging": None, "production": uri},
            shipped=shipped_in(here),
            cloudwatch_client=cloudwatch,
            s3_client=s3,
            now=now,
        )
        (check,) = [check for check in report.checks if check.name == "quiet"]
        return check

    today = quiet(utcnow())
    assert today.result == "fail"
    assert "production" in today.detail and "changed" in today.detail
    later = quiet(utcnow() + (DAYS + 1) * DAY)
    assert later.result == "pass", later.detail
    evidence = later.evidence["phases"]["production"]
    assert evidence["source"] == uri
    assert evidence["last_change"] is not None and evidence["newest_audit"] is not None


# -- a read that fails ---------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


def test_cloudwatch_that_cannot_be_read_exits_1_and_the_other_checks_are_reported(
    run: Runner,
    here: Path,
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
    no_backoff: None,
) -> None:
    fleet = Fleet(metrics=[])
    argv = fleet.build(here, cloudwatch=None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")

    result = run(*argv, "--json")
    assert result.code == cli.EXIT_ERROR, result.err
    body = result.json()
    assert results(body) == {
        "files": "pass",
        "quiet": "pass",
        "decisions": "error",
        "receivers": "error",
        "consistency": "error",
    }
    assert body["ready"] is False
    assert "CloudWatch" in check_of(body, "decisions")["detail"]
    assert len(result.err.strip().splitlines()) == 1 and "CloudWatch" in result.err

    human = run(*argv)
    assert human.code == cli.EXIT_ERROR
    assert human.out.splitlines()[-1].startswith("not yet:")


def test_a_failing_check_outranks_a_read_error(
    run: Runner, here: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int, no_backoff: None
) -> None:
    fleet = Fleet(metrics=[])
    fleet.live.update(staging=rollout("staging", percent=50))
    argv = fleet.build(here, cloudwatch=None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    result = run(*argv)
    assert result.code == cli.EXIT_NOT_DONE
    assert result.out.splitlines()[-1] == (
        "not yet: 1 check(s) fail, 3 could not read their evidence"
    )


def test_printed_lines_fit_the_terminal(
    run: Runner, here: Path, cloudwatch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet()
    fleet.shipped.update(staging=composite("staging"))
    fleet.live.update(staging=rollout("staging", percent=50), production=rollout("production"))
    argv = fleet.build(here, cloudwatch)
    for columns in (80, 100, 200):
        monkeypatch.setenv("COLUMNS", str(columns))
        result = run(*argv)
        lines = result.out.splitlines()
        for line in lines:  # longer only where one path alone fills the line, kept whole
            assert len(line) <= columns or any(len(word) > columns // 2 for word in line.split()), (
                result.out
            )
        fail = [line for line in lines if line.startswith("FAIL")]
        assert fail, result.out
        # every word of the check's detail is kept, wrapped under its column
        body = run(*argv, "--json").json()
        detail = check_of(body, "files")["detail"]
        at = lines.index(next(line for line in lines if line.split()[:2] == ["FAIL", "files"]))
        words = []
        for line in lines[at:]:
            if line is not lines[at] and not line.startswith(" " * 10):
                break
            words += line.split()
        assert " ".join(words[2:]).startswith(" ".join(detail.split())[:200])
        assert printed_command(lines) == retire.code_search()  # continued, not cut


# -- the command line and --json -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "--days"),
        (["--days", "0"], "a whole number of days, 1 or more"),
        (["--days", "-3"], "a whole number of days, 1 or more"),
        (["--days", "1.5"], "a whole number of days, 1 or more"),
        (["--days", "two"], "a whole number of days, 1 or more"),
        (["--days", "456"], "455"),
        (["--days", "14", "--live", "Production=/x"], "did you mean 'production'"),
        (["--days", "14", "--live", "production"], "PHASE=PATH"),
        (["--days", "14", "--live", "=/x"], "PHASE=PATH"),
        (["--days", "14", "--live", "production="], "is empty"),
        (["--days", "14", "--live", "production=s3:/bucket/key"], "s3://bucket/key"),
        (["--days", "14", "--live", "production=s3://bucket"], "s3://bucket/key"),
        (["--days", "14", "--live", "dev=none", "--live", "dev=/x"], "dev given twice"),
        (["--days", "14", "--code", "."], "unrecognized arguments: --code"),
        (["--days", "14", "--namespace", ""], "--namespace is empty"),
        (["--days", "14", "--min-consistency", "0"], "above 0 and at most 100"),
        (["--days", "14", "--min-consistency", "100.01"], "above 0 and at most 100"),
        (["--days", "14", "--min-consistency", "all"], "not a percentage"),
    ],
)
def test_bad_command_lines_exit_2(run: Runner, argv: list[str], words: str) -> None:
    result = run("retire-check", *argv)
    assert result.code == cli.EXIT_USAGE
    assert result.out == ""
    assert len(result.err.strip().splitlines()) == 1
    assert words in result.err
    as_json = run("retire-check", *argv, "--json")
    assert as_json.json() == {"error": as_json.err.split("error: ", 1)[1].strip(), "exit_code": 2}


@pytest.mark.parametrize("option", ["--file", "--phase"])
def test_retire_check_reads_every_phase_not_one_file(run: Runner, option: str) -> None:
    value = "production" if option == "--phase" else "x.json"
    result = run(option, value, "retire-check", "--days", "14")
    assert result.code == cli.EXIT_USAGE
    assert "--live" in result.err


def test_the_json_report(run: Runner, here: Path, cloudwatch: Any) -> None:
    fleet = Fleet()
    fleet.live.pop("production")
    body = run(*fleet.build(here, cloudwatch), "--json").json()
    assert set(body) == {"ready", "days", "checks", "code_search"}
    assert body["ready"] is False and body["days"] == DAYS
    assert [check["name"] for check in body["checks"]] == CHECKS
    for check in body["checks"]:
        assert set(check) == {"name", "result", "detail", "evidence"}
        assert check["result"] in {"pass", "fail", "unknown", "error", "info"}
        assert isinstance(check["detail"], str) and "\n" not in check["detail"]
        assert isinstance(check["evidence"], dict)
    files = check_of(body, "files")["evidence"]["phases"]
    assert files["production"]["live"] is None and files["production"]["live_given"] is False
    assert files["dev"]["shipped"]["kind"] == "composite-everywhere"
    assert files["dev"]["live"]["version"] == 2
    decisions = check_of(body, "decisions")["evidence"]
    assert decisions["namespace"] == "ai_agent_handler"
    assert set(decisions["window"]) == {"start", "end"}
    assert decisions["phases"]["staging"]["KeyDecisions"] == {"composite": 120.0, "legacy": 0.0}
    receivers = check_of(body, "receivers")["evidence"]["phases"]
    assert receivers["production"]["ReceiverReads"] == {"composite": 80.0, "legacy": 0.0}
    consistency = check_of(body, "consistency")["evidence"]
    assert consistency["min_consistency"] == 99.9
    assert consistency["phases"]["staging"]["ShadowSame"] == {"composite": 60.0, "legacy": 0.0}
    assert consistency["phases"]["staging"]["consistency"] == 100.0
    quiet = check_of(body, "quiet")["evidence"]
    assert quiet["phases"]["production"] == {
        "result": "unknown",
        "detail": "the live file of production was not named (name none if that fleet has no "
        "live file)",
        "source": None,
    }


# -- the console script, through AWS_ENDPOINT_URL ------------------------------------------------


def test_the_console_script_reads_s3_and_cloudwatch_at_aws_endpoint_url(
    tmp_path: Path, moto_server: str
) -> None:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    s3.create_bucket(Bucket=BUCKET)
    cloudwatch = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    checkout(tmp_path, {phase: composite(phase) for phase in PHASES})
    argv = ["retire-check", "--days", str(DAYS), "--json"]
    for phase in PHASES:
        key = f"ai-agent/{phase}.flagd.json"
        s3.put_object(Bucket=BUCKET, Key=key, Body=dump(composite(phase)))
        argv += ["--live", f"{phase}=s3://{BUCKET}/{key}"]
    for metric, phase, scheme, value in migrated_metrics():
        put_metric(cloudwatch, metric, phase, scheme, value)
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-m", "ai_agent_handler.ops.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = json.loads(done.stdout)
    # Just written: every live file changed today, so only `quiet` says no.
    assert results(body) == {
        "files": "pass",
        "quiet": "fail",
        "decisions": "pass",
        "receivers": "pass",
        "consistency": "pass",
    }, done.stderr
    assert done.returncode == cli.EXIT_NOT_DONE
