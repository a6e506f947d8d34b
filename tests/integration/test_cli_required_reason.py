"""``ROLLOUT_REQUIRE_REASON``: a team can require ``--reason`` on every change.

Set, every command that changes a flag file (the edits and the ramp's levers) refuses to run
without a reason, before anything is written; reads, dry runs and ticks go through. Unset or
off, nothing is required; a value that is neither on nor off is a usage error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Runner, audit_records

CHANGES = [
    ["allow", "ep-a"],
    ["disallow", "ep-a"],
    ["percent", "5"],
    ["set", "composite"],
    ["rollback"],
    ["ramp", "start", "--steps", "5,100", "--bake", "1h", "--min-decisions", "0"],
    ["ramp", "pause"],
    ["ramp", "resume"],
    ["ramp", "abort"],
    ["ramp", "promote"],
]


@pytest.mark.parametrize("argv", CHANGES, ids=lambda argv: " ".join(argv[:2]))
@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_required_reason_refuses_a_change_without_one(
    run: Runner,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    reason: str | None,
) -> None:
    monkeypatch.setenv("ROLLOUT_REQUIRE_REASON", "1")
    path = files["production"]
    before = path.read_bytes()
    given = [] if reason is None else ["--reason", reason]
    result = run("--file", str(path), *argv, *given)
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        f"ai-agent-rollout: error: {' '.join(argv[:2]) if argv[0] == 'ramp' else argv[0]} "
        "needs --reason TEXT: this team requires a reason on every change "
        "(ROLLOUT_REQUIRE_REASON is set)"
    ]
    assert path.read_bytes() == before and audit_records(path) == []


def test_a_required_reason_lets_reads_dry_runs_and_ticks_through(
    run: Runner, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUT_REQUIRE_REASON", "yes")
    path = str(files["production"])
    assert run("--file", path, "status").code == 0
    assert run("--file", path, "explain", "--endpoint", "ep").code == 0
    assert run("--file", path, "percent", "5", "--reason", "CHG-1").code == 0
    assert audit_records(files["production"])[-1]["reason"] == "CHG-1"
    dry = ["ramp", "start", "--steps", "10,100", "--bake", "1h", "--min-decisions", "0"]
    assert run("--file", path, *dry, "--dry-run").code == 0
    seeded = files["production"].with_name("live.flagd.json")
    refused = run("--file", str(seeded), "seed", "--from", "production")
    assert refused.code == 2 and not seeded.exists()


@pytest.mark.parametrize("value", ["0", "off", "false", ""])
def test_the_requirement_is_off_unless_set(
    run: Runner, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ROLLOUT_REQUIRE_REASON", value)
    assert run("--file", str(files["production"]), "percent", "5").code == 0


def test_a_malformed_requirement_is_exit_2(
    run: Runner, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUT_REQUIRE_REASON", "maybe")
    result = run("--file", str(files["production"]), "percent", "5", "--reason", "r")
    assert result.code == 2
    assert "ROLLOUT_REQUIRE_REASON='maybe': expected 1 or 0" in result.err
