"""What ``ai-agent-rollout`` says when a command line or an edit is wrong: one line, exit 2
for the command line, nothing written.

* Empty values (an unset variable), a ``--file`` or ``--phase`` that swallowed the command, an
  id that could never be valid: refused before anything is read.
* Removing an endpoint that is not listed is refused with "did you mean"; ``explain`` and
  ``allow`` note a name that differs from a listed one only in case or separators.
* A held lock says how long the command waited; a missing bucket is not a missing file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.ops import cli
from ai_agent_handler.ops.store import LocalFileStore
from tests.support.cli import (
    PHASE_FILE_NAMES,
    SHIPPED,
    Runner,
    audit_records,
    names_in,
    one_line_error,
)

# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--file", "", "status"], "--file is empty: is the variable you passed unset?"),
        (["--file=", "percent", "5"], "--file is empty"),
        (["status", "--file", ""], "--file is empty"),
        (["--file", "status"], "--file got the command name 'status'"),
        (["--file", "percent", "5"], "--file got the command name 'percent'"),
        (["--file", "allow", "ep-1", "--reason", "x"], "--file got the command name 'allow'"),
        (["--phase", "status"], "--phase got the command name 'status'"),
        (["--file", "{f}", "--audit-log", "", "percent", "5"], "--audit-log is empty"),
        (["validate", ""], "FILE is empty"),
    ],
)
def test_empty_values_and_swallowed_commands(
    run: Runner, files: dict[str, Path], argv: list[str], fragment: str
) -> None:
    path = files["staging"]
    result = run(*[a.format(f=path) for a in argv])
    assert result.code == cli.EXIT_USAGE, result.err
    line = one_line_error(result)
    assert fragment in line
    if "command name" in fragment:
        assert "empty or unset variable" in line
    assert path.read_bytes() == SHIPPED["staging"]


BAD_VALUES = ["", "a#b", " a", "a ", "a\tb", "a\x1bb", "a\u202eb"]


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
@pytest.mark.parametrize(
    "command",
    [
        ["allow", "{v}"],
        ["allow", "ok", "{v}"],
        ["disallow", "{v}"],
        ["allow", "--remove", "{v}"],
        ["explain", "--endpoint", "{v}"],
        ["explain", "--endpoint", "ok", "--part-id", "{v}"],
    ],
    ids=lambda c: "-".join(w for w in c if w != "{v}"),
)
def test_a_bad_id_on_the_command_line_is_exit_2_before_anything_is_read(
    run: Runner, tmp_path: Path, command: list[str], value: str
) -> None:
    # The file does not exist: a check after reading would say so (exit 1) instead.
    path = tmp_path / "flags" / "production.flagd.json"
    path.parent.mkdir()
    result = run("--file", str(path), *[w.replace("{v}", value) for w in command])
    assert result.code == cli.EXIT_USAGE, result.err
    line = one_line_error(result)
    assert "no such file" not in line
    assert ("endpoint_id" if "--part-id" not in command else "part_id") in line
    assert line.isprintable()
    assert names_in(path.parent) == []


# -- the allow-list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "argv", "fragments"),
    [
        (
            ["aws-prod-eu-west-1", "aws-prod-us-east-2"],
            ["disallow", "aws-prod-eu-west1"],
            ["did you mean aws-prod-eu-west-1?", "aws-prod-us-east-2"],
        ),
        (
            ["aws-prod-eu-west-1"],
            ["allow", "--remove", "aws-prod-eu-west-1", "aws-prod-eu-west1"],
            ["aws-prod-eu-west1", "did you mean aws-prod-eu-west-1?"],
        ),
        ([], ["disallow", "nobody"], ["nobody", "the allow-list is empty"]),
        (
            [f"ep-{i:03d}" for i in range(40)],
            ["disallow", "xyz"],
            ["ep-000", "(+", "more)"],
        ),
    ],
    ids=["typo", "one-of-two-missing", "empty-list", "long-list"],
)
def test_removing_an_endpoint_that_is_not_listed_is_refused(
    run: Runner, files: dict[str, Path], listed: list[str], argv: list[str], fragments: list[str]
) -> None:
    path = files["production"]
    if listed:
        assert run("--file", str(path), "allow", *listed).code == cli.EXIT_OK
    before, records = path.read_bytes(), audit_records(path)
    result = run("--file", str(path), *argv, "--reason", "INC-3")
    assert result.code == cli.EXIT_INVALID, result.err
    line = one_line_error(result)
    assert "not on the allow-list" in line and "nothing written" in line
    for fragment in fragments:
        assert fragment in line
    assert len(line) < 400
    assert path.read_bytes() == before and audit_records(path) == records


def test_disallow_nobody_on_a_plain_switch_writes_nothing(
    run: Runner, files: dict[str, Path]
) -> None:
    path = files["dev"]
    result = run("--file", str(path), "disallow", "nobody")
    assert result.code == cli.EXIT_INVALID, result.err
    assert path.read_bytes() == SHIPPED["dev"]
    assert names_in(path.parent) == PHASE_FILE_NAMES


def test_explain_of_a_near_miss_says_did_you_mean(run: Runner, files: dict[str, Path]) -> None:
    path = str(files["production"])
    assert run("--file", path, "allow", "aws-prod-eu-west-1").code == cli.EXIT_OK
    result = run("--file", path, "explain", "--endpoint", "aws-prod-eu-west1", "--part-id", "p")
    assert result.code == cli.EXIT_OK, result.err
    assert "did you mean aws-prod-eu-west-1?" in result.out
    body = run("--file", path, "--json", "explain", "--endpoint", "aws-prod-eu-west1").json()
    assert any("did you mean aws-prod-eu-west-1?" in note for note in body["notes"])
    listed = run("--file", path, "--json", "explain", "--endpoint", "aws-prod-eu-west-1").json()
    assert listed["notes"] == []
    far = run("--file", path, "--json", "explain", "--endpoint", "gcp-asia-1").json()
    assert far["notes"] == []


@pytest.mark.parametrize(
    ("new", "noted"),
    [
        ("aws-prod-eu-west1", True),  # a separator missing: the same name typed badly
        ("AWS-prod-eu-west-1", True),
        ("aws-prod-eu-west-2", False),  # another region: legitimate, no noise
        ("aws-prod-us-east-1", False),
    ],
)
def test_allow_notes_a_name_that_differs_from_a_listed_one_only_in_case_or_separators(
    run: Runner, files: dict[str, Path], new: str, noted: bool
) -> None:
    path = str(files["production"])
    assert run("--file", path, "allow", "aws-prod-eu-west-1").code == cli.EXIT_OK
    result = run("--file", path, "allow", new)
    assert result.code == cli.EXIT_OK, result.err
    assert ("aws-prod-eu-west-1" in result.err) is noted, result.err
    assert ("note:" in result.err) is noted
    body = run("--file", path, "--json", "disallow", new).json()
    assert body["changed"] is True


# -- what happened --------------------------------------------------------------------------


def test_the_lock_message_says_how_long_it_waited(run: Runner, files: dict[str, Path]) -> None:
    path = files["staging"]
    with LocalFileStore(path, lock_timeout=1).locked():
        result = run("--file", str(path), "--lock-timeout", "0.2", "percent", "5")
    assert result.code == cli.EXIT_CONFLICT, result.err
    line = one_line_error(result)
    assert "another operator holds the lock" in line and "waited 0.2 s" in line
    assert "held for" not in line


@pytest.mark.parametrize("argv", [["status"], ["rollback", "--reason", "r"], ["percent", "5"]])
def test_a_missing_bucket_is_not_a_missing_file(s3: Any, run: Runner, argv: list[str]) -> None:
    uri = "s3://no-such-bucket-here/production.flagd.json"
    result = run("--file", uri, *argv)
    assert result.code == 1
    text = result.out + result.err
    assert "no such bucket no-such-bucket-here" in text
    assert "no such file" not in text
