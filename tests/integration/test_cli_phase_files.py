"""``--phase`` names a file: the checkout's, never the copy installed with the package.

* ``--phase`` edits the repository's ``flags/`` (found from the current folder, in a checkout
  of this project only), never the copy installed with the package.
* Outside a checkout, reads say they read the installed copy; every write is refused.
* An editable install edits its checkout from anywhere; a wheel's layout, run in a separate
  process, reads its copy and never writes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.flag_file import default_provider
from ai_agent_handler.ops import cli
from tests.support import PHASES, REPO
from tests.support.cli import (
    PHASE_FILE_NAMES,
    SHIPPED,
    Runner,
    audit_records,
    copy_phase_files,
    make_checkout,
    names_in,
    one_line_error,
    state_of,
)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The phase files where a wheel installs them (inside the package, in no checkout);
    ``shipped_flag_file`` answers with them."""
    files = copy_phase_files(tmp_path / "site" / "ai_agent_handler" / "flags")
    monkeypatch.setattr(default_provider, "shipped_flag_file", lambda phase: files[phase])
    return files


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder is outside any checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


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
    assert names_in(installed["staging"].parent) == PHASE_FILE_NAMES
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
    assert names_in(installed["staging"].parent) == PHASE_FILE_NAMES


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
    assert names_in(installed["production"].parent) == PHASE_FILE_NAMES


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
    assert names_in(shipped.parent) == PHASE_FILE_NAMES
    assert json.loads(as_json[1])["files"][0]["origin"] == "installed"
    (written,) = cli_in(checkout / "docs", ["--phase", "production", "percent", "5"])
    assert written[0] == cli.EXIT_OK, written
    assert state_of(checkout / "flags" / "production.flagd.json").percent == 5
    assert shipped.read_bytes() == SHIPPED["production"]
