"""``seed --from``: the first live file, created once; a rerun changes nothing.

``seed`` copies a phase file (a phase name or a path) to a live file that does not exist yet,
audited like any change; a live file already there is left alone, also when another operator
creates it between our read and our write. On a local file and on S3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.ops import cli
from ai_agent_handler.ops.store import LocalFileStore, S3Store, Snapshot
from tests.support import FLAGS_DIR
from tests.support.cli import SHIPPED, Runner, names_in, one_line_error, version
from tests.support.live import LiveFile, to_version_4


def test_seed_creates_the_live_file_once_and_a_rerun_changes_nothing(
    run: Runner, live: LiveFile, checkout: Path, monkeypatch: pytest.MonkeyPatch
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
    run: Runner, live: LiveFile, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.flagd.json"
    bad.write_text('{"flags": {')
    result = run("--file", live.source, "seed", "--from", str(bad))
    assert result.code == cli.EXIT_INVALID, result.err
    one_line_error(result)
    assert live.read() is None and live.audit() == []


def test_two_seeders_cannot_both_win(
    run: Runner, live: LiveFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another operator creates the file between our read and our write."""
    to_version_4(run, live)
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
    result = run("--file", live.source, "seed", "--from", str(FLAGS_DIR / "production.flagd.json"))
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


def test_seed_has_its_own_help(run: Runner) -> None:
    result = run("seed", "--help")
    assert result.code == cli.EXIT_OK
    assert "--from" in result.out and "already seeded" in result.out
