"""``status`` of a live file that cannot be used: said once, with what to do and what
handlers serve meanwhile.

* A missing live file is said once (on stdout; with ``--json`` on stderr) with the ``seed``
  command that creates it, ready to paste.
* A missing or invalid live file of a phase names the shipped file a cold start serves instead;
  a file whose name holds no phase, or a readable one, names none.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ai_agent_handler.flag_file import default_provider
from ai_agent_handler.ops import cli
from tests.support.cli import Runner, copy_phase_files


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
