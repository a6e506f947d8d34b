"""ai-agent-rollout as operators met it in the third field trial.

* ``rollback`` repairs any file it can read as JSON, however deeply nested.
* Every value printed as a command is shell-quoted: pasted, it does what it says.
* ``retire-check --code`` scans what the repository tracks, with short evidence lines.
* Messages say what happened: no "0 %" step, no "1 calls", no doubled errors.
* A team can require ``--reason`` on every change.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.flag_file.document import validate
from ai_agent_handler.ops import edits as fe
from tests.support.cli import Runner, audit_records, copy_phase_files


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return copy_phase_files(tmp_path / "flags")


def nested(levels: int) -> str:
    """A JSON value nested ``levels`` arrays deep (built as text: no recursion here)."""
    return "[" * levels + '"x"' + "]" * levels


def with_deep_part(path: Path, where: str, levels: int) -> None:
    """Put a value ``levels`` deep into ``where`` of the file: another flag's targeting, our
    flag's targeting, or the metadata."""
    doc = json.loads(path.read_text())
    if where == "another flag":
        doc["flags"]["other-flag"] = {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": "@DEEP@",
        }
    elif where == "our flag":
        doc["flags"]["composite-partition-key"]["targeting"] = "@DEEP@"
    else:
        doc["metadata"]["note"] = "@DEEP@"
    path.write_text(json.dumps(doc).replace('"@DEEP@"', nested(levels)))
    json.loads(path.read_text())  # still readable as JSON


# -- rollback repairs any file it can read as JSON ------------------------------------------
@pytest.mark.parametrize("where", ["another flag", "our flag", "metadata"])
@pytest.mark.parametrize("levels", [65, 500, 900])
def test_rollback_repairs_a_deeply_nested_file(
    run: Runner, files: dict[str, Path], where: str, levels: int
) -> None:
    path = files["production"]
    with_deep_part(path, where, levels)
    assert run("--file", str(path), "validate").code == 3  # invalid
    result = run("--file", str(path), "rollback", "--reason", "INC-9")
    assert result.code == 0, result.err
    doc = json.loads(path.read_text())
    assert validate(doc) == []
    assert fe.read_state(doc).kind == "legacy-everywhere"
    assert fe.version_of(doc) == 2  # the version sequence continues
    assert "other-flag" not in doc["flags"]  # what was too deep to keep is gone ...
    assert "note" not in doc["metadata"]
    assert "nested deeper than 64 levels" in result.out  # ... and the output says why
    if where == "another flag":
        assert "dropped the flag other-flag" in result.out
    assert run("--file", str(path), "status").code == 0
    assert audit_records(path)[-1]["reason"] == "INC-9"


def test_rollback_keeps_what_is_within_bounds(run: Runner, files: dict[str, Path]) -> None:
    path = files["production"]
    with_deep_part(path, "another flag", 500)
    doc = json.loads(path.read_text())
    doc["flags"]["kept-flag"] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
    }
    path.write_text(json.dumps(doc).replace('"@DEEP@"', nested(500)))
    assert run("--file", str(path), "rollback", "--reason", "INC-9").code == 0
    flags = json.loads(path.read_text())["flags"]
    assert "kept-flag" in flags and "other-flag" not in flags


# -- every value printed as a command is shell-quoted ---------------------------------------
@pytest.mark.parametrize(
    "endpoints",
    [
        ["aws-prod eu"],
        ["it's", "plain"],
        ["$(touch pwned)", "a;b"],
    ],
)
def test_the_restore_hint_pastes_back_to_the_same_endpoints(
    run: Runner, tmp_path: Path, endpoints: list[str]
) -> None:
    folder = tmp_path / "odd dir"
    path = copy_phase_files(folder)["production"]
    assert run("--file", str(path), "allow", *endpoints, "--reason", "CHG-1").code == 0
    assert run("--file", str(path), "percent", "5", "--reason", "CHG-2").code == 0
    result = run("--file", str(path), "rollback", "--reason", "INC-1")
    line = next(x for x in result.out.splitlines() if "to restore the previous rollout" in x)
    commands = line.split(": ", 1)[1].split(" && ")
    argvs = [shlex.split(command) for command in commands]
    assert argvs == [
        ["ai-agent-rollout", "--file", str(path), "allow", *endpoints],
        ["ai-agent-rollout", "--file", str(path), "percent", "5"],
    ]
    as_json = run("--file", str(path), "--json", "allow", "x", "--reason", "r")
    assert as_json.code == 0
    # Pasted back (without the program name), the commands restore the rollout.
    run("--file", str(path), "rollback", "--reason", "again")
    for argv in argvs:
        assert run(*argv[1:], "--reason", "restore").code == 0
    state = fe.read_state(json.loads(path.read_text()))
    assert list(state.allowed) == sorted(endpoints) or set(state.allowed) == set(endpoints)
    assert state.percent == 5


def test_the_json_restore_list_holds_quoted_commands(run: Runner, files: dict[str, Path]) -> None:
    path = files["production"]
    run("--file", str(path), "allow", "aws-prod eu", "--reason", "CHG-1")
    result = run("--file", str(path), "--json", "rollback", "--reason", "INC-1")
    body: dict[str, Any] = result.json()
    assert [shlex.split(line) for line in body["restore"]] == [
        ["ai-agent-rollout", "--file", str(path), "allow", "aws-prod eu"]
    ]


# -- messages that say what happened --------------------------------------------------------
def test_status_of_a_missing_live_file_says_it_once_and_how_to_create_it(
    run: Runner, tmp_path: Path
) -> None:
    path = tmp_path / "live dir" / "production.flagd.json"
    result = run("--file", str(path), "status")
    assert result.code == 1
    said = f"{path}: no such file"
    assert (result.out + result.err).count(said) == 1  # once, on stdout
    assert result.err.strip() == "ai-agent-rollout: error: 1 of 1 flag file(s) unusable (above)"
    hint = next(line for line in result.out.splitlines() if "to create it" in line)
    argv = shlex.split(hint.split(": ", 1)[1])
    assert argv == ["ai-agent-rollout", "--file", str(path), "seed", "--from", "production"]
    path.parent.mkdir()
    assert run(*argv[1:]).code == 0  # pasted, it creates the file
    assert run("--file", str(path), "status").code == 0
    as_json = run("--file", str(path.with_name("staging.flagd.json")), "--json", "status")
    assert as_json.json()["files"][0]["hint"].endswith("seed --from staging")
    assert "no such file" in as_json.err  # --json: stdout is data, so stderr says why


@pytest.mark.parametrize("argv", [["status"], ["rollback", "--reason", "r"], ["percent", "5"]])
def test_a_missing_bucket_is_not_a_missing_file(s3: Any, run: Runner, argv: list[str]) -> None:
    uri = "s3://no-such-bucket-here/production.flagd.json"
    result = run("--file", uri, *argv)
    assert result.code == 1
    text = result.out + result.err
    assert "no such bucket no-such-bucket-here" in text
    assert "no such file" not in text


# -- a team can require --reason ------------------------------------------------------------
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
