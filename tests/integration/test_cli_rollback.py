"""``rollback``: repairs any file it can read as JSON, and says how to restore what it undid.

* A file nested deeper than the document allows is rewritten legacy everywhere, keeping what
  is within bounds and saying what it dropped; the version sequence continues.
* The restore hint is shell-quoted: pasted back, it restores the same endpoints and percentage
  (``--json``: a list of quoted commands).
* ``rollback --create`` into a folder that does not exist names the folder and leaves nothing.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.flag_file.document import validate
from ai_agent_handler.ops import cli
from ai_agent_handler.ops import edits as fe
from tests.support.cli import Runner, audit_records, copy_phase_files, names_in, one_line_error


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


# -- rollback --create ----------------------------------------------------------------------


def test_rollback_create_into_a_missing_folder_names_the_folder(
    run: Runner, tmp_path: Path
) -> None:
    path = tmp_path / "opps" / "production.flagd.json"
    result = run("--file", str(path), "rollback", "--create", "--reason", "INC-1")
    assert result.code == cli.EXIT_ERROR, result.err
    line = one_line_error(result)
    assert f"folder {path.parent} does not exist" in line
    assert "lock" not in line
    assert names_in(tmp_path) == []
