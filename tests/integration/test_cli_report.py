"""``report --html FILE``: the approvers' page of a real rollout, its live files local or on S3
and its metrics in CloudWatch (moto's server on loopback), opened in a headless Chromium.

* The page names every change (who, what, why, versions) and every ramp step with its
  trigger (operator, ramp, alarm); the timeline's SVG holds one marker per change.
* The composite share comes from the ``KeyDecisions`` the fleet reported; when CloudWatch
  cannot be read the page says so, and the command still writes it.
* In Chromium, with the network off: no console error, no request, the markers as parsed,
  a screenshot of the expected size.
"""

from __future__ import annotations

import datetime
import html.parser
from pathlib import Path

import boto3
import pytest

from ai_agent_handler.ops import report, report_io
from tests.support import BUCKET, FLAGS_DIR, REGION
from tests.support.browser import chromium_or_skip, render
from tests.support.cli import Runner
from tests.support.rollout import ALARM, KEY, rollout

pytestmark = pytest.mark.slow


class Collected(html.parser.HTMLParser):
    """The elements of a page by class word, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.classes: dict[str, int] = {}
        self.text: list[str] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "class" and value:
                for word in value.split():
                    self.classes[word] = self.classes.get(word, 0) + 1
            if name in ("src", "href") and value and not value.startswith("#"):
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def collected(page: str) -> Collected:
    found = Collected()
    found.feed(page)
    return found


def put_decisions(phase: str, composite: float, legacy: float) -> None:
    """Key decisions of ``phase`` as the fleet's EMF lines become metrics."""
    cw = boto3.client("cloudwatch", region_name=REGION)
    now = datetime.datetime.now(datetime.timezone.utc)
    cw.put_metric_data(
        Namespace="ai_agent_handler",
        MetricData=[
            {
                "MetricName": "KeyDecisions",
                "Dimensions": [
                    {"Name": "phase", "Value": phase},
                    {"Name": "key_scheme", "Value": scheme},
                ],
                "Timestamp": now - datetime.timedelta(minutes=minutes),
                "Value": value,
            }
            for minutes in (1, 30, 90)
            for scheme, value in (("composite", composite), ("legacy", legacy))
        ],
    )


def test_the_page_of_a_rollout_names_every_change_and_the_composite_share(
    run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rollout(run, monkeypatch, named_live)
    put_decisions("production", composite=25, legacy=75)
    out = tmp_path / "out" / "rollout.html"
    out.parent.mkdir()
    result = run("report", "--html", str(out), "--endpoint", "aws-prod-eu-west-1")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == f"report written: {out.resolve()}"
    page = out.read_text(encoding="utf-8")
    found = collected(page)
    trail = run("history", "--json").json()["records"]
    assert len(trail) == 6
    assert found.classes["marker"] == len(trail)  # one per change, ramp steps included
    assert found.classes["change"] == len(trail)
    for trigger, count in (("operator", 4), ("ramp", 1), ("alarm", 1)):
        assert found.classes[f"marker-{trigger}"] == count, trigger
    text = " ".join(" ".join(found.text).split())
    for record in trail:
        assert record["command"] in text and record["actor"] in text
        if record["reason"]:
            assert " ".join(record["reason"].split()) in text
    assert f"alarms: {ALARM} ALARM" in text  # the rollback's guard evidence
    assert "listed (allow-list)" in text  # the endpoint asked about, and why
    assert "metrics-unreachable" not in found.classes
    assert "25 %" in text  # the composite share of production's decisions
    assert "script" not in found.tags and found.urls == []


def test_the_page_of_a_rollout_in_chromium_with_the_network_off(
    run: Runner, named_live: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chromium = chromium_or_skip()
    rollout(run, monkeypatch, named_live)
    assert run("report", "--html", "rollout.html").code == 0
    shot = tmp_path / "rollout.png"
    rendered = render(tmp_path / "rollout.html", screenshot=shot, chromium=chromium)
    assert rendered.console == [] and rendered.requests == []
    parsed = collected(rendered.dom)
    trail = run("history", "--json").json()["records"]
    steps = [r for r in trail if r["ramp"] is not None]
    assert len(steps) == 3  # the ramp's start, its step and its rollback
    assert parsed.classes["marker"] == len(trail)  # one per change and per ramp step
    text = " ".join(" ".join(parsed.text).split())
    for record in trail:
        assert record["command"] in text and record["actor"] in text
        assert record["reason"] is None or " ".join(record["reason"].split()) in text
    width, height = png_size(shot.read_bytes())
    assert width == 1280 and height > 1500


def test_unreachable_metrics_are_said_on_the_page(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    live = tmp_path / "production.flagd.json"
    live.write_bytes((FLAGS_DIR / "production.flagd.json").read_bytes())
    assert run("--file", str(live), "percent", "5", "--reason", "CHG-9").code == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = run("--file", str(live), "report", "--html", "page.html")
    assert result.code == 0, result.err
    assert "metrics could not be read for production" in result.err
    found = collected((tmp_path / "page.html").read_text())
    assert found.classes["metrics-unreachable"] == 1
    assert found.classes["marker"] == 1
    assert "CHG-9" in " ".join(found.text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report"], "the following arguments are required: --html"),
        (["report", "--html", ""], "--html is empty"),
        (["report", "--html", "x.html", "--endpoint", "a#b"], "endpoint_id"),
        (["report", "--html", "x.html", "--days", "0"], "1 or more"),
        (["report", "--html", "x.html", "prod"], "unknown phase 'prod'"),
    ],
)
def test_report_refuses_a_wrong_command_line(run: Runner, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 2 and message in result.err


def test_report_into_a_missing_folder_is_exit_1_and_writes_nothing(
    run: Runner, tmp_path: Path
) -> None:
    result = run("--phase", "production", "report", "--html", str(tmp_path / "no" / "p.html"))
    assert result.code == 1 and "no such folder" in result.err
    assert not (tmp_path / "no").exists()


def events(count: int, days: int) -> list[report.Event]:
    """``count`` changes over ``days``, across the phases, every trigger."""
    start = datetime.datetime(2026, 10, 1, tzinfo=datetime.timezone.utc)
    step = datetime.timedelta(days=days) / max(count, 1)
    phases, triggers = ("dev", "staging", "production"), ("operator", "ramp", "alarm")
    return [
        report.Event(
            time=start + i * step,
            phase=phases[i % 3],
            action="change",
            trigger=triggers[i % 3],  # type: ignore[arg-type]
            actor=f"actor-{i % 7}",
            command=f"percent {i % 100}",
            reason=f"CHG-{i} <b>&</b>",
            version_before=i,
            version_after=i + 1,
            before=None,
            after=f"composite for {i % 100} % of endpoints",
            percent=i % 100,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(("count", "days"), [(3, 1), (10_000, 60)])
def test_the_page_in_chromium_with_the_network_off(tmp_path: Path, count: int, days: int) -> None:
    chromium = chromium_or_skip()
    page = report.Page(
        title="Rollout",
        generated=datetime.datetime(2026, 12, 4, tzinfo=datetime.timezone.utc),
        phases=(
            report.PhaseView(
                "production", f"s3://{BUCKET}/{KEY}", 7, "composite for 5 %", "percent", 5
            ),
        ),
        events=tuple(events(count, days)),
        shares=(report.Share("production", error="cannot read: AccessDenied"),),
        checklist=(report.CheckRow("files", "FAIL", "production is at 5 %"),),
    )
    path = tmp_path / "page.html"
    report_io.write(path, report.render(page))
    shot = tmp_path / "page.png"
    rendered = render(path, screenshot=shot, chromium=chromium)
    assert rendered.console == [] and rendered.requests == []
    parsed = collected(rendered.dom)
    marks = report.aggregate(page.events)
    assert parsed.classes["marker"] == len(marks)
    days_and_phases = {(e.time.date(), e.phase) for e in page.events}
    assert len(marks) == (count if count <= report.LIMIT else len(days_and_phases))
    text = " ".join(parsed.text)
    for event in page.events[-report.LIMIT :]:
        assert event.command in text
    newest = max(page.events, key=lambda e: e.time)
    assert f"{newest.reason}" in text  # the reason's "<b>&</b>" shown as text...
    assert "<b>&amp;</b>" not in rendered.dom  # ...never as markup
    width, height = png_size(shot.read_bytes())
    assert width == 1280 and height > 1000


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_io_writes_the_page_whole(tmp_path: Path) -> None:
    path = tmp_path / "p.html"
    path.write_text("old")
    report_io.write(path, "new page")
    assert path.read_text() == "new page"
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]  # no temporary file left
