"""ai-agent-rollout on real files and on S3 (moto): every subcommand, audit, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler import FLAG_KEY
from ai_agent_handler.decision import VARIANTS
from ai_agent_handler.ops import cli
from ai_agent_handler.ops import edits as fe
from ai_agent_handler.ops.store import LocalFileStore, S3Store, Snapshot
from tests.support import BUCKET, REPO
from tests.support import FLAGS_DIR as FLAGS
from tests.support.cli import (
    PHASE_FILE_NAMES,
    SHIPPED,
    Runner,
    audit_records,
    names_in,
    one_line_error,
    state_of,
    version,
)
from tests.support.live import s3_audit_records

# -- status and validate ------------------------------------------------------------------


def test_status_of_the_shipped_phase_files(run: Runner) -> None:
    result = run("status")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("dev") and "composite everywhere" in lines[0]
    assert any(line.startswith("staging") and "legacy everywhere" in line for line in lines)
    assert any(line.startswith("production") and "legacy everywhere" in line for line in lines)
    assert str(FLAGS / "production.flagd.json") in result.out
    rows = run("status", "--json").json()["files"]
    assert [row["phase"] for row in rows] == ["dev", "staging", "production"]
    assert all(row["valid"] and row["version"] >= 1 for row in rows)


def test_status_and_validate_of_one_file(run: Runner, files: dict[str, Path]) -> None:
    result = run("--file", str(files["staging"]), "status", "--json")
    (row,) = result.json()["files"]
    assert row["phase"] == "staging"
    assert row["state"]["kind"] == "legacy-everywhere"
    result = run("validate", *map(str, files.values()))
    assert result.code == 0
    assert result.out.count("ok ") == 3


# -- changes on real files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kind", "allowed", "percent"),
    [
        (["percent", "30"], "percent", (), 30),
        (["percent", "30%"], "percent", (), 30),
        (["allow", "ep-a", "ep-b"], "allow-list-and-percent", ("ep-a", "ep-b"), 5),
        (["set", "composite"], "composite-everywhere", (), 100),
        (["set", "legacy"], "legacy-everywhere", (), 0),
        (["rollback"], "legacy-everywhere", (), 0),
    ],
)
def test_each_change_from_the_shipped_production_file(
    run: Runner, files: dict[str, Path], argv: list[str], kind: str, allowed: Any, percent: int
) -> None:
    path = files["production"]
    # Start from a non-trivial state so "set legacy" and "rollback" really change something.
    assert run("--file", str(path), "percent", "5").code == 0
    result = run("--file", str(path), "--json", *argv, "--reason", "CHG-1")
    assert result.code == 0, result.err
    state = state_of(path)
    assert (state.kind, state.allowed, state.percent) == (kind, allowed, percent)
    assert json.loads(path.read_text())["flags"][FLAG_KEY]["variants"] == VARIANTS
    body = result.json()
    assert body["after"]["kind"] == kind
    assert body["version_after"] == version(path)
    assert run("validate", str(path)).code == 0


def test_allow_then_remove_then_disallow(run: Runner, files: dict[str, Path]) -> None:
    path = str(files["staging"])
    assert run("--file", path, "allow", "a", "b", "c").code == 0
    assert run("--file", path, "allow", "--remove", "b").code == 0
    assert state_of(files["staging"]).allowed == ("a", "c")
    assert run("disallow", "a", "--file", path).code == 0  # global option after the command
    assert state_of(files["staging"]).allowed == ("c",)


def test_every_write_bumps_the_version_and_appends_an_audit_record(
    run: Runner, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.ACTOR_ENV, "alice")
    path = files["production"]
    start = version(path)
    assert start is not None
    steps = [["allow", "ep-1"], ["percent", "10"], ["percent", "25"], ["rollback"]]
    for argv in steps:
        assert run("--file", str(path), *argv, "--reason", f"step {argv[0]}").code == 0
    records = audit_records(path)
    assert [r["command"] for r in records] == ["allow ep-1", "percent 10", "percent 25", "rollback"]
    assert [r["version_after"] for r in records] == list(range(start + 1, start + 5))
    assert [r["version_before"] for r in records] == list(range(start, start + 4))
    assert version(path) == start + 4
    last = records[-1]
    assert last["actor"] == "alice"
    assert last["reason"] == "step rollback"
    assert last["phase"] == "production"
    assert last["file"] == str(path)
    assert last["before"]["kind"] == "allow-list-and-percent"
    assert last["after"]["kind"] == "legacy-everywhere"
    assert last["time"].endswith("+00:00")


def test_a_command_that_changes_nothing_writes_nothing(run: Runner, files: dict[str, Path]) -> None:
    path = files["staging"]
    before = path.read_bytes()
    result = run("--file", str(path), "rollback")  # already legacy everywhere
    assert result.code == 0
    assert "unchanged" in result.out
    assert path.read_bytes() == before
    assert audit_records(path) == []


@pytest.mark.parametrize(
    ("phase", "argv"),
    [
        ("dev", ["percent", "100"]),
        ("dev", ["set", "composite"]),
        ("staging", ["percent", "0"]),
        ("staging", ["set", "legacy"]),
        ("staging", ["rollback"]),
        ("production", ["set", "legacy"]),
    ],
)
def test_a_command_that_changes_nothing_leaves_no_trace(
    run: Runner, files: dict[str, Path], phase: str, argv: list[str]
) -> None:
    path = files[phase]
    result = run("--file", str(path), *argv, "--reason", "no-op")
    assert result.code == cli.EXIT_OK, result.err
    assert "unchanged" in result.out
    assert path.read_bytes() == SHIPPED[phase]
    assert names_in(path.parent) == PHASE_FILE_NAMES  # no lock, no log


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["percent", "5"], "missing-file"),
        (["rollback"], "missing-file"),
        (["allow", "ep"], "missing-folder"),
        (["rollback", "--create"], "missing-folder"),
        (["percent", "5"], "invalid-file"),
        (["allow", "ep"], "invalid-file"),
        (["percent", "0"], "no-op"),
    ],
)
def test_a_failed_or_empty_write_leaves_no_lock_or_audit_file(
    run: Runner, tmp_path: Path, argv: list[str], why: str
) -> None:
    folder = tmp_path / "flags"
    folder.mkdir()
    path = folder / "production.flagd.json"
    if why == "missing-folder":
        path = folder / "no-such-folder" / "production.flagd.json"
    elif why == "invalid-file":
        path.write_text('{"flags": {')
    elif why == "no-op":
        path.write_bytes(SHIPPED["production"])
    before = names_in(folder)
    result = run("--file", str(path), *argv)
    expected = {"no-op": 0, "invalid-file": 3}.get(why, 1)
    assert result.code == expected, result.err
    assert names_in(folder) == before
    if why == "missing-folder":
        assert f"folder {path.parent} does not exist" in one_line_error(result)


def test_rollback_then_status_shows_legacy_everywhere(run: Runner, files: dict[str, Path]) -> None:
    path = str(files["production"])
    assert run("--file", path, "allow", "x", "y").code == 0
    assert run("--file", path, "percent", "60").code == 0
    result = run("--file", path, "rollback", "--reason", "INC-1")
    assert result.code == 0
    assert f"--file {path} allow x y" in result.out  # how to restore, printed for the operator
    status = run("--file", path, "status")
    assert status.code == 0
    assert "legacy everywhere" in status.out.splitlines()[0]


def test_rollback_repairs_a_broken_file(run: Runner, files: dict[str, Path]) -> None:
    path = files["production"]
    path.write_text('{"flags": {"composite-partition-key": ')  # a half-written file
    assert run("--file", str(path), "percent", "10").code == cli.EXIT_INVALID
    result = run("--file", str(path), "rollback", "--json")
    assert result.code == 0, result.err
    assert result.json()["notes"]
    assert state_of(path).kind == "legacy-everywhere"
    assert json.loads(path.read_text())["metadata"]["phase"] == "production"
    assert run("validate", str(path)).code == 0


def test_set_legacy_on_the_dev_switch(run: Runner, files: dict[str, Path]) -> None:
    path = files["dev"]
    assert run("--file", str(path), "set", "legacy").code == 0
    doc = json.loads(path.read_text())
    assert "targeting" not in doc["flags"][FLAG_KEY]
    assert doc["flags"][FLAG_KEY]["defaultVariant"] == "legacy"


def test_the_written_file_keeps_its_permissions_and_stays_readable(
    run: Runner, files: dict[str, Path]
) -> None:
    path = files["staging"]
    path.chmod(0o640)
    assert run("--file", str(path), "percent", "1").code == 0
    assert path.stat().st_mode & 0o777 == 0o640
    lines = path.read_text().splitlines()
    assert any('"in": [{"var": "endpoint_id"}, []]' in line for line in lines)


# -- errors: one line, non-zero -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        ([], cli.EXIT_USAGE, "required"),
        (["frobnicate"], cli.EXIT_USAGE, "invalid choice"),
        (["percent", "30"], cli.EXIT_USAGE, "needs --file"),
        (["--file", "{f}", "percent", "101"], cli.EXIT_USAGE, "0 to 100"),
        (["--file", "{f}", "percent", "ten"], cli.EXIT_USAGE, "whole number"),
        (["--file", "{f}", "percent"], cli.EXIT_USAGE, "required"),
        (["--file", "{f}", "set", "maybe"], cli.EXIT_USAGE, "invalid choice"),
        (["--file", "{f}", "allow"], cli.EXIT_USAGE, "required"),
        (["--file", "{f}", "allow", "a#b"], cli.EXIT_USAGE, "must not contain"),
        (["--file", "{f}", "allow", " a"], cli.EXIT_USAGE, "whitespace"),
        (["--file", "{f}", "--phase", "dev", "status"], cli.EXIT_USAGE, "not allowed"),
        (["--file", "{f}", "--lock-timeout", "nan", "percent", "5"], cli.EXIT_USAGE, "nan"),
        (["--file", "{f}", "--lock-timeout", "inf", "percent", "5"], cli.EXIT_USAGE, "inf"),
        (["--file", "{f}", "--lock-timeout", "-1", "percent", "5"], cli.EXIT_USAGE, "-1"),
        (["--file", "{f}", "percent", "5", "--lock-timeout=-inf"], cli.EXIT_USAGE, "-inf"),
        (["--file", "{f}", "--lock-timeout", "soon", "percent", "5"], cli.EXIT_USAGE, "soon"),
        (["--phase", "qa", "status"], cli.EXIT_USAGE, "invalid choice"),
        (["--file", "{f}", "explain"], cli.EXIT_USAGE, "--endpoint"),
        (["--file", "{f}", "explain", "--endpoint", "a#b"], cli.EXIT_USAGE, "must not contain"),
        (["--file", "{missing}", "percent", "5"], cli.EXIT_ERROR, "no such file"),
        (["--file", "{missing}", "status"], cli.EXIT_ERROR, "no such file"),
        (["--file", "s3://", "status"], cli.EXIT_USAGE, "not an S3 object URI"),
        (["validate", "{missing}"], cli.EXIT_ERROR, "no such file"),
    ],
)
def test_bad_arguments_give_one_line_and_a_non_zero_exit(
    run: Runner, files: dict[str, Path], argv: list[str], code: int, fragment: str
) -> None:
    path = files["staging"]
    before = path.read_bytes()
    argv = [a.format(f=path, missing=path.parent / "nope.flagd.json") for a in argv]
    result = run(*argv)
    assert result.code == code, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith("ai-agent-rollout: error: ")
    if result.err.rstrip().endswith("(above)"):  # status, validate: said once, on stdout
        assert fragment in result.out and fragment not in result.err
    else:
        assert fragment in result.err
    assert path.read_bytes() == before


INVALID_FILES: dict[str, Any] = {
    "garbage": b"\x00\xffnot json",
    "empty": b"",
    "truncated": b'{"flags": {',
    "not-an-object": b"[]",
    "no-flag": {"metadata": {"version": 1}, "flags": {}},
    "string-variants": {
        "metadata": {"version": 1},
        "flags": {
            FLAG_KEY: {
                "state": "ENABLED",
                "variants": {"composite": "yes", "legacy": "no"},
                "defaultVariant": "legacy",
            }
        },
    },
    "targeting-returns-unknown-variant": {
        "metadata": {"version": 1},
        "flags": {
            FLAG_KEY: {
                "state": "ENABLED",
                "variants": {"composite": True, "legacy": False},
                "defaultVariant": "legacy",
                "targeting": {"if": [True, "on", "legacy"]},
            }
        },
    },
}


@pytest.mark.parametrize("name", sorted(INVALID_FILES))
def test_invalid_files_give_one_line_and_exit_3(run: Runner, tmp_path: Path, name: str) -> None:
    content = INVALID_FILES[name]
    path = tmp_path / "production.flagd.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    before = path.read_bytes()
    for argv in (["validate", str(path)], ["--file", str(path), "percent", "10"]):
        result = run(*argv)
        assert result.code == cli.EXIT_INVALID, (argv, result.err)
        assert path.read_bytes() == before
    result = run("--file", str(path), "status")
    assert result.code == cli.EXIT_INVALID
    assert len(result.err.strip().splitlines()) <= 1
    assert "INVALID" in result.out
    result = run("--json", "--file", str(path), "allow", "ep")
    assert result.json()["exit_code"] == cli.EXIT_INVALID


def test_help_has_examples_and_exit_codes(run: Runner) -> None:
    result = run("--help")
    assert result.code == 0
    for needle in ("examples", "rollback", "percent", "exit codes", cli.ACTOR_ENV):
        assert needle in result.out


def _section_1() -> str:
    text = (REPO / "rollout.md").read_text()
    match = re.search(r"^## 1\. .*?(?=^## 2\. )", text, flags=re.S | re.M)
    assert match
    return match.group(0)


def test_rollout_md_has_one_exit_code_table_and_help_points_to_it(run: Runner) -> None:
    section = _section_1()
    rows = re.findall(r"^\| `(\d)` \|(.*)\|$", section, flags=re.M)
    codes = {
        cli.EXIT_OK,
        cli.EXIT_ERROR,
        cli.EXIT_USAGE,
        cli.EXIT_INVALID,
        cli.EXIT_CONFLICT,
        cli.EXIT_NOT_DONE,
        cli.EXIT_TIMEOUT,
    }
    assert {int(code) for code, _ in rows} == codes
    assert all(len(rest.split("|")) == 3 for _, rest in rows)  # meaning, written, what to do
    assert "Exit codes:" not in section
    assert re.search(r"^\| `seed --from ", section, flags=re.M)
    result = run("--help")
    assert result.code == cli.EXIT_OK
    assert "exit codes" in result.out and "rollout.md" in result.out and "seed" in result.out


def test_lock_held_by_another_operator_is_a_conflict(run: Runner, files: dict[str, Path]) -> None:
    path = files["staging"]
    store = LocalFileStore(path, lock_timeout=1)
    with store.locked():
        result = run("--file", str(path), "--lock-timeout", "0.1", "percent", "5")
    assert result.code == cli.EXIT_CONFLICT
    assert "another operator" in result.err
    assert state_of(path).kind == "legacy-everywhere"


# -- S3 through moto ------------------------------------------------------------------------

KEY = "ai-agent/staging.flagd.json"
URI = f"s3://{BUCKET}/{KEY}"


@pytest.fixture(autouse=True)
def _staging_on_s3(request: pytest.FixtureRequest) -> None:
    """Tests that use ``s3`` find the staging file at :data:`URI`."""
    if "s3" in request.fixturenames:
        s3 = request.getfixturevalue("s3")
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=(FLAGS / "staging.flagd.json").read_bytes())


def s3_doc(client: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(client.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())
    return doc


def test_every_subcommand_on_s3(run: Runner, s3: Any) -> None:
    assert run("--file", URI, "validate").code == 0
    for argv, kind in [
        (["allow", "ep-a"], "allow-list"),
        (["percent", "20"], "allow-list-and-percent"),
        (["disallow", "ep-a"], "percent"),
        (["set", "composite"], "composite-everywhere"),
        (["rollback"], "legacy-everywhere"),
    ]:
        result = run("--file", URI, *argv, "--reason", "s3 test")
        assert result.code == 0, result.err
        assert fe.read_state(s3_doc(s3)).kind == kind
    assert fe.version_of(s3_doc(s3)) == 6
    status = run("--file", URI, "status", "--json").json()["files"][0]
    assert status["state"]["kind"] == "legacy-everywhere"
    assert status["source"] == URI
    records = s3_audit_records(s3, KEY)
    assert [r["version_after"] for r in records] == [2, 3, 4, 5, 6]
    assert all(r["etag_before"] and r["file"] == URI for r in records)
    said = run("--file", URI, "--json", "explain", "--endpoint", "ep-a", "--part-id", "p")
    assert said.code == 0, said.err
    assert (said.json()["routing_key"], said.json()["version"]) == ("ep-a", 6)
    assert run("--file", URI, "allow", "ep-a").code == 0
    said = run("--file", URI, "--json", "explain", "--endpoint", "ep-a", "--part-id", "p")
    assert (said.json()["routing_key"], said.json()["version"]) == ("ep-a#p", 7)


def test_s3_concurrent_change_is_refused_not_overwritten(
    run: Runner, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another operator writes between our read and our write: our put is refused."""
    original_read = S3Store.read

    def read_then_someone_else_writes(self: S3Store) -> Snapshot:
        snapshot = original_read(self)
        theirs = fe.bump_version(fe.allow(s3_doc(s3), ["their-endpoint"]))
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps(theirs).encode())
        return snapshot

    monkeypatch.setattr(S3Store, "read", read_then_someone_else_writes)
    result = run("--file", URI, "percent", "50")
    assert result.code == cli.EXIT_CONFLICT, result.err
    assert "changed by someone else" in result.err
    state = fe.read_state(s3_doc(s3))
    assert state.allowed == ("their-endpoint",)  # their change survived
    assert state.percent == 0  # ours was not applied
    assert s3_audit_records(s3, KEY) == []
    monkeypatch.setattr(S3Store, "read", original_read)
    assert run("--file", URI, "percent", "50").code == 0  # re-running applies on top of theirs
    assert fe.read_state(s3_doc(s3)).allowed == ("their-endpoint",)


def test_s3_rollback_creates_a_missing_object_and_audit_can_go_local(
    run: Runner, s3: Any, tmp_path: Path
) -> None:
    uri = f"s3://{BUCKET}/ai-agent/production.flagd.json"
    audit = tmp_path / "audit.jsonl"
    result = run("--file", uri, "rollback")  # a mistyped key must not look like success
    assert result.code == cli.EXIT_ERROR
    assert "no such file" in result.err and "--create" in result.err
    result = run(
        "--file", uri, "--audit-log", str(audit), "rollback", "--create", "--reason", "restore"
    )
    assert result.code == 0, result.err
    body = s3.get_object(Bucket=BUCKET, Key="ai-agent/production.flagd.json")["Body"].read()
    doc = json.loads(body)
    assert fe.read_state(doc).kind == "legacy-everywhere"
    assert doc["metadata"]["phase"] == "production"
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["reason"] == "restore"


def test_s3_errors_are_one_line(run: Runner, s3: Any) -> None:
    result = run("--file", f"s3://{BUCKET}/missing.flagd.json", "percent", "5")
    assert result.code == cli.EXIT_ERROR
    assert "no such file" in result.err
    result = run("--file", "s3://no-such-bucket-here/x.json", "status")
    assert result.code == cli.EXIT_ERROR
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("scheme", ["S3", "s3"])
def test_an_s3_uri_in_any_case_is_s3(
    run: Runner, s3: Any, scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key = "ai-agent/staging.flagd.json"
    uri = f"{scheme}://{BUCKET}/{key}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=SHIPPED["staging"])
    assert run("--file", uri, "status").code == cli.EXIT_OK
    result = run("--file", uri, "--json", "percent", "5")
    assert result.code == cli.EXIT_OK, result.err
    assert result.json()["source"] == f"s3://{BUCKET}/{key}"
    doc = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert fe.read_state(doc).percent == 5
    assert names_in(tmp_path) == []  # no local file, lock or log named like the URI


@pytest.mark.parametrize(
    "uri",
    ["s3:/bucket/key.json", "s3:///key.json", f"s3://{BUCKET}", f"S3://{BUCKET}/", "s3:key.json"],
)
@pytest.mark.parametrize("argv", [["status"], ["percent", "5"], ["rollback", "--create"]])
def test_a_malformed_s3_uri_is_exit_2_with_the_expected_form(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("--file", uri, *argv)
    assert result.code == cli.EXIT_USAGE, result.err
    assert "s3://bucket/key" in one_line_error(result)
    assert names_in(tmp_path) == []


def test_a_symlinked_flag_file_keeps_its_link(run: Runner, files: dict[str, Path]) -> None:
    link = files["staging"].parent / "live.flagd.json"
    link.symlink_to(files["staging"])
    assert run("--file", str(link), "percent", "15").code == 0
    assert link.is_symlink()
    assert state_of(files["staging"]).percent == 15


# -- what reaches the audit log and the terminal ------------------------------------------

#: Every character str.splitlines() breaks a line at (JSON escapes the ASCII ones already).
LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", LINE_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_reason_with_a_line_break_stays_one_audit_line(
    run: Runner, files: dict[str, Path], char: str
) -> None:
    path = files["production"]
    reasons = [f"CHG-1{char}step 1", f"{char}CHG-2 caf\u00e9 \u4e2d{char}"]
    for n, reason in enumerate(reasons):
        assert run("--file", str(path), "allow", f"ep-{n}", "--reason", reason).code == 0
    log = path.with_name(path.name + ".audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["reason"] for line in lines] == reasons
    assert "caf\u00e9 \u4e2d" in lines[1]  # other text stays readable UTF-8


def test_an_undecodable_reason_is_kept_escaped(run: Runner, files: dict[str, Path]) -> None:
    # A byte that is not UTF-8 on the command line arrives as a lone surrogate.
    path = files["production"]
    reason = "CHG-3 caf\udce9"
    result = run("--file", str(path), "allow", "ep", "--reason", reason)
    assert result.code == 0, result.err
    (record,) = audit_records(path)
    assert record["reason"] == reason


#: Ids a hand-edited (valid) flag file may hold that must not drive the terminal.
HOSTILE_IDS = ["\x1b[2J\x1b[H", "ep\x9b31m", "a\u202eb", "bell\x07", "nl\x85x"]


def _terminal_safe(text: str) -> bool:
    return all(ch == "\n" or ch.isprintable() for ch in text)


def test_human_output_escapes_control_characters(
    run: Runner, files: dict[str, Path], tmp_path: Path
) -> None:
    path = files["production"]
    doc = json.loads(path.read_text())
    doc["flags"][FLAG_KEY]["targeting"]["if"][0]["in"][1] = HOSTILE_IDS
    path.write_text(json.dumps(doc))
    runs = [
        run("--file", str(path), "status"),
        run("validate", str(path)),
        run("--file", str(path), "explain", "--endpoint", HOSTILE_IDS[0], "--part-id", "p"),
        run("--file", str(path), "allow", "ep-x"),
        run("--file", str(tmp_path / "\x1b[2J.json"), "status"),  # an error naming the path
    ]
    for result in runs:
        assert _terminal_safe(result.out) and _terminal_safe(result.err), result
    assert "\\x1b[2J\\x1b[H" in runs[0].out and "ep\\x9b31m" in runs[0].out
    assert "a\\u202eb" in runs[0].out
    assert "\\x1b[2J.json: no such file" in runs[4].out and runs[4].code == cli.EXIT_ERROR
    # --json keeps the data exact (JSON escapes it).
    for argv in (["status"], ["allow", "ep-y"]):
        result = run("--file", str(path), "--json", *argv)
        assert result.out.isascii()
        body = result.json()
        state = body["files"][0]["state"] if argv == ["status"] else body["after"]
        assert set(HOSTILE_IDS) <= set(state["allowed"])


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_deeply_nested_file_is_invalid_and_rollback_repairs_it(
    run: Runner, files: dict[str, Path]
) -> None:
    path = files["production"]
    path.write_bytes(DEEP)
    for argv in (["validate", str(path)], ["--file", str(path), "status"]):
        result = run(*argv)
        assert result.code == cli.EXIT_INVALID, (argv, result.err)
        assert len(result.err.strip().splitlines()) == 1, result.err
    assert path.read_bytes() == DEEP
    result = run("--file", str(path), "rollback", "--reason", "INC-9")
    assert result.code == 0, result.err
    assert run("validate", str(path)).code == 0
    assert state_of(path).kind == "legacy-everywhere"


# -- AI_AGENT_ROLLOUT_FILE: one live file for a shell that works on one fleet -----------------


def test_the_file_variable_stands_in_for_file_in_reads_and_changes(
    run: Runner, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    live = files["production"]
    monkeypatch.setenv("AI_AGENT_ROLLOUT_FILE", str(live))
    status = run("status", "--json")
    assert status.code == 0 and [row["source"] for row in status.json()["files"]] == [str(live)]
    assert run("percent", "10", "--reason", "CHG-1").code == 0
    assert state_of(live).percent == 10
    # --file, --phase and a PHASE argument name their own files and win.
    other = files["staging"]
    assert run("--file", str(other), "percent", "20").code == 0
    assert state_of(other).percent == 20 and state_of(live).percent == 10
    shipped = run("status", "production", "--json").json()
    assert [row["source"] for row in shipped["files"]] != [str(live)]


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_file_variable_is_refused(
    run: Runner, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AI_AGENT_ROLLOUT_FILE", value)
    result = run("percent", "10")
    assert result.code == 2
    assert "$AI_AGENT_ROLLOUT_FILE is set but empty" in result.err
