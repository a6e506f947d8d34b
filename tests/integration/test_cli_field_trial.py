"""ai-agent-rollout as operators met it in the field trial.

* ``--phase`` edits the repository's ``flags/`` (found from the current folder), never the
  copy installed with the package; outside a checkout it reads that copy and says so.
* Versions only grow: across edits, rollbacks of broken files, files copied over the live one
  and re-seeding (``seed``), on a local file and on S3.
* A command that changes nothing writes nothing (no version, no audit record, no lock file);
  removing an endpoint that is not listed is an error with "did you mean".
* Command-line edges: empty values, a ``--file`` that swallowed the command, ``S3://`` URIs,
  missing folders, the lock message, one JSON vocabulary, one exit-code table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ai_agent_handler.flag_file import default_provider
from ai_agent_handler.ops import cli
from ai_agent_handler.ops import edits as fe
from ai_agent_handler.ops import store as flag_store
from ai_agent_handler.ops.store import LocalFileStore, S3Store, Snapshot
from tests.support import BUCKET, PHASES, REPO
from tests.support import FLAGS_DIR as FLAGS
from tests.support.cli import Runner, audit_records, copy_phase_files

PYPROJECT = '[project]\nname = "{name}"\nversion = "0.0.0"\n'
SHIPPED = {phase: (FLAGS / f"{phase}.flagd.json").read_bytes() for phase in PHASES}


def state_of(path: Path) -> fe.RolloutState:
    return fe.read_state(json.loads(path.read_text()))


def version(path: Path) -> int | None:
    return fe.version_of(json.loads(path.read_text()))


def one_line_error(result: Any) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ai-agent-rollout: error: "), result.err
    return str(lines[0])


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The phase files where a wheel installs them (inside the package, in no checkout);
    ``shipped_flag_file`` answers with them."""
    files = copy_phase_files(tmp_path / "site" / "ai_agent_handler" / "flags")
    monkeypatch.setattr(default_provider, "shipped_flag_file", lambda phase: files[phase])
    return files


def make_checkout(root: Path, name: str = "ai_agent_handler") -> Path:
    copy_phase_files(root / "flags")
    (root / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    (root / "docs" / "deep").mkdir(parents=True)
    return root


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout of the repository: pyproject.toml naming the project, flags/, a subfolder."""
    return make_checkout(tmp_path / "repo")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder is outside any checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# -- 1. --phase: the checkout's file, never the installed one ------------------------------


def test_phase_edits_the_checkout_found_from_the_current_folder(
    run: Runner, checkout: Path, installed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(checkout / "docs" / "deep")
    result = run("--phase", "staging", "set", "composite", "--reason", "CHG-300")
    assert result.code == cli.EXIT_OK, result.err
    target = checkout / "flags" / "staging.flagd.json"
    assert state_of(target).kind == "composite-everywhere"
    assert [r["command"] for r in audit_records(target)] == ["set composite"]
    # The installed copy is untouched and nothing was left beside it.
    assert installed["staging"].read_bytes() == SHIPPED["staging"]
    assert names_in(installed["staging"].parent) == sorted(f"{p}.flagd.json" for p in PHASES)
    (row,) = run("--phase", "staging", "--json", "status").json()["files"]
    assert (row["source"], row["origin"]) == (str(target), "checkout")
    assert row["state"]["kind"] == "composite-everywhere"
    rows = run("--json", "status").json()["files"]
    assert [r["source"] for r in rows] == [
        str(checkout / "flags" / f"{p}.flagd.json") for p in PHASES
    ]


WRITES = [
    ["set", "composite"],
    ["allow", "ep-1"],
    ["disallow", "ep-1"],
    ["percent", "5"],
    ["rollback"],
    ["rollback", "--create"],
]


@pytest.mark.parametrize("argv", WRITES, ids=lambda argv: "-".join(argv))
def test_phase_outside_a_checkout_refuses_every_write(
    run: Runner, installed: dict[str, Path], elsewhere: Path, argv: list[str]
) -> None:
    result = run("--phase", "staging", *argv, "--reason", "CHG-300")
    assert result.code == cli.EXIT_USAGE, result.err
    line = one_line_error(result)
    assert "--phase staging names the file installed with the package" in line
    assert str(installed["staging"]) in line
    assert "run from a checkout of the repository to edit flags/staging.flagd.json" in line
    assert "--file PATH" in line
    assert installed["staging"].read_bytes() == SHIPPED["staging"]
    assert names_in(installed["staging"].parent) == sorted(f"{p}.flagd.json" for p in PHASES)


def test_outside_a_checkout_reads_say_they_read_the_installed_copy(
    run: Runner, installed: dict[str, Path], elsewhere: Path
) -> None:
    note = "shipped with the installed package, read-only"
    result = run("--phase", "production", "status")
    assert result.code == cli.EXIT_OK, result.err
    assert note in result.out and str(installed["production"]) in result.out
    (row,) = run("--phase", "production", "--json", "status").json()["files"]
    assert row["origin"] == "installed"
    result = run("status")
    assert result.code == cli.EXIT_OK and result.out.count(note) == 3
    result = run("validate")
    assert result.code == cli.EXIT_OK and result.out.count(note) == 3
    result = run("--phase", "production", "explain", "--endpoint", "aws-prod-1")
    assert result.code == cli.EXIT_OK, result.err
    assert note in result.out
    said = run("--phase", "production", "--json", "explain", "--endpoint", "e").json()
    assert said["origin"] == "installed"
    assert names_in(installed["production"].parent) == sorted(f"{p}.flagd.json" for p in PHASES)


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("ai_agent_handler", True),
        ("ai-agent-handler", True),
        ("AI.Agent_Handler", True),
        ("someone-elses-project", False),
    ],
)
def test_only_a_checkout_of_this_project_counts(
    run: Runner,
    tmp_path: Path,
    installed: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    counts: bool,
) -> None:
    root = make_checkout(tmp_path / "work", name)
    monkeypatch.chdir(root / "docs")
    result = run("--phase", "production", "percent", "5")
    target = root / "flags" / "production.flagd.json"
    if counts:
        assert result.code == cli.EXIT_OK, result.err
        assert state_of(target).percent == 5
    else:
        assert result.code == cli.EXIT_USAGE, result.err
        assert target.read_bytes() == SHIPPED["production"]
    assert installed["production"].read_bytes() == SHIPPED["production"]


def test_an_editable_install_edits_its_checkout_from_anywhere(
    run: Runner, checkout: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {p: checkout / "flags" / f"{p}.flagd.json" for p in PHASES}
    monkeypatch.setattr(default_provider, "shipped_flag_file", lambda phase: files[phase])
    result = run("--phase", "staging", "percent", "5")
    assert result.code == cli.EXIT_OK, result.err
    assert state_of(files["staging"]).percent == 5
    (row,) = run("--phase", "staging", "--json", "status").json()["files"]
    assert row["origin"] == "checkout"


WHEEL_SCRIPT = """
    import contextlib, io, json, sys
    from ai_agent_handler.ops import cli
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        results.append([code, out.getvalue(), err.getvalue()])
    print(json.dumps(results))
"""


def test_a_wheel_layout_reads_its_copy_and_never_writes_it(tmp_path: Path) -> None:
    """The package as a wheel installs it (flags inside the package), run as CI runs it."""
    site = tmp_path / "site"
    package = site / "ai_agent_handler"
    shutil.copytree(
        REPO / "ai_agent_handler", package, ignore=shutil.ignore_patterns("__pycache__")
    )
    copy_phase_files(package / "flags")
    shipped = package / "flags" / "production.flagd.json"
    checkout = make_checkout(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def cli_in(cwd: Path, *argvs: list[str]) -> list[list[Any]]:
        env = {**os.environ, "PYTHONPATH": str(site)}
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(WHEEL_SCRIPT), json.dumps(argvs)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        results: list[list[Any]] = json.loads(done.stdout)
        return results

    status, write, direct, as_json = cli_in(
        elsewhere,
        ["--phase", "production", "status"],
        ["--phase", "production", "set", "composite"],
        ["--file", str(shipped), "percent", "5"],
        ["--phase", "production", "status", "--json"],
    )
    assert status[0] == cli.EXIT_OK, status
    assert str(shipped) in status[1] and "shipped with the installed package" in status[1]
    assert write[0] == cli.EXIT_USAGE and "installed with the package" in write[2], write
    assert direct[0] == cli.EXIT_USAGE and "inside the installed package" in direct[2], direct
    assert shipped.read_bytes() == SHIPPED["production"]
    assert names_in(shipped.parent) == sorted(f"{p}.flagd.json" for p in PHASES)
    assert json.loads(as_json[1])["files"][0]["origin"] == "installed"
    (written,) = cli_in(checkout / "docs", ["--phase", "production", "percent", "5"])
    assert written[0] == cli.EXIT_OK, written
    assert state_of(checkout / "flags" / "production.flagd.json").percent == 5
    assert shipped.read_bytes() == SHIPPED["production"]


# -- 2. versions only grow -------------------------------------------------------------------

PROD_KEY = "ai-agent/production.flagd.json"


class Live:
    """A live flag file (local or S3): its source, and raw access for the test."""

    def __init__(
        self,
        source: str,
        read: Callable[[], bytes | None],
        write: Callable[[bytes | None], None],
        audit: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.source, self.read, self.write, self.audit = source, read, write, audit

    def version(self) -> int | None:
        data = self.read()
        assert data is not None
        return fe.version_of(json.loads(data))


def _local_live(folder: Path) -> Live:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "production.flagd.json"

    def write(data: bytes | None) -> None:
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)

    return Live(
        str(path),
        lambda: path.read_bytes() if path.exists() else None,
        write,
        lambda: audit_records(path),
    )


def _s3_live(client: Any) -> Live:
    def read() -> bytes | None:
        try:
            return bytes(client.get_object(Bucket=BUCKET, Key=PROD_KEY)["Body"].read())
        except client.exceptions.NoSuchKey:
            return None

    def write(data: bytes | None) -> None:
        if data is None:
            client.delete_object(Bucket=BUCKET, Key=PROD_KEY)
        else:
            client.put_object(Bucket=BUCKET, Key=PROD_KEY, Body=data)

    def audit() -> list[dict[str, Any]]:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PROD_KEY}.audit/")
        keys = sorted(item["Key"] for item in listed.get("Contents", []))
        return [json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys]

    return Live(f"s3://{BUCKET}/{PROD_KEY}", read, write, audit)


@pytest.fixture(params=["local", "s3"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Live:
    if request.param == "local":
        return _local_live(tmp_path / "live")
    return _s3_live(request.getfixturevalue("s3"))


def _to_version_4(run: Runner, live: Live) -> None:
    live.write(SHIPPED["production"])
    for argv in (["allow", "ep-a"], ["percent", "10"], ["percent", "20"]):
        result = run("--file", live.source, *argv, "--reason", "CHG-1")
        assert result.code == cli.EXIT_OK, result.err
    assert live.version() == 4


NO_FLAG_V1 = json.dumps({"metadata": {"version": 1}, "flags": {}}).encode()


@pytest.mark.parametrize(
    "broken",
    [b"\x00\xffnot json", b'{"metadata": {"version": 2, "phase": "prod', NO_FLAG_V1],
    ids=["garbage", "truncated", "no-flag-v1"],
)
def test_rollback_of_a_broken_file_continues_the_version_sequence(
    run: Runner, live: Live, broken: bytes
) -> None:
    _to_version_4(run, live)
    live.write(broken)
    result = run("--file", live.source, "--json", "rollback", "--reason", "INC-7")
    assert result.code == cli.EXIT_OK, result.err
    assert result.json()["version_after"] == 5
    assert live.version() == 5
    assert [r["version_after"] for r in live.audit()] == [2, 3, 4, 5]


def test_a_file_copied_over_the_live_one_does_not_turn_the_version_back(
    run: Runner, live: Live
) -> None:
    _to_version_4(run, live)
    live.write(SHIPPED["production"])  # `aws s3 cp flags/production.flagd.json $PROD` again
    result = run("--file", live.source, "--json", "percent", "30")
    assert result.code == cli.EXIT_OK, result.err
    assert (result.json()["version_before"], result.json()["version_after"]) == (1, 5)
    assert live.version() == 5


def _deny_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = flag_store._aws.s3_client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)

        def refuse(**_: Any) -> None:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "ListObjectsV2")  # type: ignore[arg-type]

        made.meta.events.register("before-call.s3.ListObjectsV2", refuse)
        return made

    monkeypatch.setattr(flag_store._aws, "s3_client", client)


def test_a_denied_listing_of_the_s3_audit_records_is_named(
    run: Runner, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = _s3_live(s3)
    live.write(SHIPPED["production"])
    _deny_listing(monkeypatch)
    result = run("--file", live.source, "percent", "5")
    assert result.code == cli.EXIT_ERROR, result.err
    line = one_line_error(result)
    assert "s3:ListBucket" in line and "AccessDenied" in line and "nothing written" in line
    assert live.read() == SHIPPED["production"] and live.audit() == []


# -- 2. seed ---------------------------------------------------------------------------------


def test_seed_creates_the_live_file_once_and_a_rerun_changes_nothing(
    run: Runner, live: Live, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(checkout)
    seed = ["--file", live.source, "seed", "--from", "flags/production.flagd.json"]
    result = run(*seed, "--reason", "CHG-200 seed")
    assert result.code == cli.EXIT_OK, result.err
    assert json.loads(live.read() or b"") == json.loads(SHIPPED["production"])
    (record,) = live.audit()
    assert record["command"] == "seed --from flags/production.flagd.json"
    assert (record["version_before"], record["version_after"], record["before"]) == (None, 1, None)
    assert record["reason"] == "CHG-200 seed" and record["after"]["kind"] == "legacy-everywhere"
    assert run("--file", live.source, "allow", "ep-canary").code == cli.EXIT_OK
    data = live.read()
    again = run(*seed)
    assert again.code == cli.EXIT_OK, again.err
    assert "already seeded (version 2); unchanged" in again.out
    body = run(*seed, "--json").json()
    assert (body["changed"], body["version_before"], body["version_after"]) == (False, 2, 2)
    assert body["audit"] is None and body["from"] == "flags/production.flagd.json"
    assert live.read() == data and len(live.audit()) == 2


def test_seeding_again_after_the_live_file_was_deleted_continues_the_versions(
    run: Runner, live: Live, checkout: Path
) -> None:
    source = str(checkout / "flags" / "production.flagd.json")
    _to_version_4(run, live)
    live.write(None)
    result = run("--file", live.source, "--json", "seed", "--from", source)
    assert result.code == cli.EXIT_OK, result.err
    assert (result.json()["changed"], result.json()["version_after"]) == (True, 5)
    assert live.version() == 5


@pytest.mark.parametrize("source", ["production", "flags/production.flagd.json", "{abs}"])
def test_seed_from_a_phase_name_or_a_path(
    run: Runner, tmp_path: Path, checkout: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.chdir(checkout)
    doc = json.loads(SHIPPED["production"])
    doc["metadata"]["version"] = 9
    (checkout / "flags" / "production.flagd.json").write_text(json.dumps(doc))
    target = tmp_path / "live" / "production.flagd.json"
    target.parent.mkdir()
    source = source.format(abs=checkout / "flags" / "production.flagd.json")
    result = run("--file", str(target), "seed", "--from", source)
    assert result.code == cli.EXIT_OK, result.err
    assert version(target) == 9  # the source's version, kept


def test_seed_refuses_an_invalid_source_and_writes_nothing(
    run: Runner, live: Live, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.flagd.json"
    bad.write_text('{"flags": {')
    result = run("--file", live.source, "seed", "--from", str(bad))
    assert result.code == cli.EXIT_INVALID, result.err
    one_line_error(result)
    assert live.read() is None and live.audit() == []


def test_two_seeders_cannot_both_win(
    run: Runner, live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another operator creates the file between our read and our write."""
    _to_version_4(run, live)
    theirs = live.read()
    seen = {"writing": False}
    for kind in (LocalFileStore, S3Store):
        real_read, real_write = kind.read, kind.write

        def read(self: Any, real: Any = real_read) -> Snapshot:
            if self.source != live.source or seen["writing"]:
                return real(self)
            return Snapshot(None)

        def write(self: Any, data: bytes, snapshot: Snapshot, real: Any = real_write) -> Any:
            seen["writing"] = True
            return real(self, data, snapshot)

        monkeypatch.setattr(kind, "read", read)
        monkeypatch.setattr(kind, "write", write)
    result = run("--file", live.source, "seed", "--from", str(FLAGS / "production.flagd.json"))
    assert seen["writing"]
    assert result.code == cli.EXIT_OK, result.err
    assert "already seeded (version 4); unchanged" in result.out
    assert live.read() == theirs and len(live.audit()) == 3


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--phase", "production", "seed", "--from", "production"], "seed needs --file"),
        (["--file", "{live}", "seed"], "--from"),
        (["--file", "{live}", "seed", "--from", ""], "--from is empty"),
    ],
)
def test_seed_command_line_errors(
    run: Runner, tmp_path: Path, argv: list[str], fragment: str
) -> None:
    target = tmp_path / "production.flagd.json"
    result = run(*[a.format(live=target) for a in argv])
    assert result.code == cli.EXIT_USAGE, result.err
    assert fragment in one_line_error(result)
    assert names_in(tmp_path) == []


# -- 3. edits that change nothing, or the wrong thing ----------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return copy_phase_files(tmp_path / "flags")


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
    assert names_in(path.parent) == sorted(f"{p}.flagd.json" for p in PHASES)  # no lock, no log


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
    assert names_in(path.parent) == sorted(f"{p}.flagd.json" for p in PHASES)


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


# -- 4. command-line edges -------------------------------------------------------------------


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


def test_the_lock_message_says_how_long_it_waited(run: Runner, files: dict[str, Path]) -> None:
    path = files["staging"]
    with LocalFileStore(path, lock_timeout=1).locked():
        result = run("--file", str(path), "--lock-timeout", "0.2", "percent", "5")
    assert result.code == cli.EXIT_CONFLICT, result.err
    line = one_line_error(result)
    assert "another operator holds the lock" in line and "waited 0.2 s" in line
    assert "held for" not in line


# -- one JSON vocabulary ---------------------------------------------------------------------

STATE_KEYS = {"kind", "description", "allowed", "percent", "canonical", "default_variant"}
FILE_KEYS = {
    "phase",
    "source",
    "origin",
    "valid",
    "version",
    "state",
    "error",
    "problems",
    "fallback",
}
CHANGE_KEYS = {
    "command",
    "source",
    "phase",
    "origin",
    "changed",
    "before",
    "after",
    "version_before",
    "version_after",
    "audit",
    "notes",
    "restore",
}
EXPLAIN_KEYS = {
    "source",
    "phase",
    "origin",
    "endpoint_id",
    "part_id",
    "routing_key",
    "key_scheme",
    "flag_value",
    "variant",
    "reason",
    "error_code",
    "error_message",
    "version",
    "rule",
    "composite_from_percent",
    "state",
    "notes",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def test_every_command_speaks_one_json_vocabulary(
    run: Runner, files: dict[str, Path], tmp_path: Path
) -> None:
    path = str(files["production"])
    for command in (["status"], ["validate"]):
        body = run("--file", path, "--json", *command).json()
        assert set(body) == {"files"}, command
        (row,) = body["files"]
        assert set(row) == FILE_KEYS, command
        assert _is_int(row["version"]) and set(row["state"]) == STATE_KEYS, command
        assert row["origin"] == "file"
    broken = tmp_path / "broken.flagd.json"
    broken.write_text("{")
    (row,) = run("--file", str(broken), "--json", "validate").json()["files"]
    assert set(row) == FILE_KEYS and row["version"] is None and row["problems"]
    (row,) = run("--file", str(broken), "--json", "status").json()["files"]
    assert set(row) == FILE_KEYS and row["problems"]
    said = run("--file", path, "--json", "explain", "--endpoint", "ep", "--part-id", "p").json()
    assert set(said) == EXPLAIN_KEYS
    assert _is_int(said["version"]) and set(said["state"]) == STATE_KEYS
    for argv in (["allow", "ep"], ["percent", "5"], ["set", "legacy"], ["rollback"]):
        body = run("--file", path, "--json", *argv).json()
        assert set(body) == CHANGE_KEYS, argv
        assert _is_int(body["version_before"]) and _is_int(body["version_after"]), argv
        assert set(body["after"]) == STATE_KEYS
    seeded = tmp_path / "seeded.flagd.json"
    body = run("--file", str(seeded), "--json", "seed", "--from", path).json()
    assert set(body) == CHANGE_KEYS | {"from"}
    assert body["version_before"] is None and _is_int(body["version_after"])
    failed = run("--file", str(tmp_path / "nope.json"), "--json", "percent", "5")
    assert failed.json() == {"error": failed.err.split("error: ", 1)[1].strip(), "exit_code": 1}


# -- one exit-code table ---------------------------------------------------------------------


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


def test_seed_has_its_own_help(run: Runner) -> None:
    result = run("seed", "--help")
    assert result.code == cli.EXIT_OK
    assert "--from" in result.out and "already seeded" in result.out


# -- status of an unreadable live file says what handlers serve meanwhile -------------------------
@pytest.mark.parametrize(
    ("name", "content", "fallback"),
    [
        ("production.flagd.json", None, "production"),  # missing
        ("staging.flagd.json", b"{ half", "staging"),  # invalid
        ("live.flagd.json", None, None),  # no phase in the name: nothing to say
    ],
)
def test_status_of_an_unreadable_live_file_says_what_handlers_serve(
    run: Runner, tmp_path: Path, name: str, content: bytes | None, fallback: str | None
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = run("--file", str(path), "status")
    assert result.code == (cli.EXIT_ERROR if content is None else cli.EXIT_INVALID)
    (row,) = run("--json", "--file", str(path), "status").json()["files"]
    if fallback is None:
        assert row["fallback"] is None and "cold start" not in result.out
        return
    shipped = default_provider.shipped_flag_file(fallback)
    assert row["fallback"] == {
        "phase": fallback,
        "source": str(shipped),
        "version": 1,
        "kind": "legacy-everywhere",
        "description": "legacy everywhere (every endpoint sends endpoint_id)",
    }
    assert f"a cold start serves the shipped {fallback} file" in result.out
    assert "flag_source = fallback" in result.out


def test_status_of_a_readable_live_file_has_no_fallback(run: Runner, tmp_path: Path) -> None:
    path = copy_phase_files(tmp_path)["production"]
    (row,) = run("--json", "--file", str(path), "status").json()["files"]
    assert row["valid"] and row["fallback"] is None
