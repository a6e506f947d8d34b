"""``ai-agent-rollout`` in process: a runner, scratch copies of the phase files and checkouts,
what a flag file and its folder hold afterwards."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.ops import cli, edits

from . import FLAGS_DIR, PHASES

#: The shipped phase files' bytes, by phase.
SHIPPED = {phase: (FLAGS_DIR / f"{phase}.flagd.json").read_bytes() for phase in PHASES}
#: A folder holding copies of the phase files and nothing else (no lock, no audit log).
PHASE_FILE_NAMES = sorted(f"{phase}.flagd.json" for phase in PHASES)
#: The ``pyproject.toml`` of a checkout of the project called ``name``.
PYPROJECT = '[project]\nname = "{name}"\nversion = "0.0.0"\n'


@dataclass
class Result:
    """What one CLI call returned and printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Runner:
    """Runs ``cli.main`` in process and captures its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> Result:
        self.capsys.readouterr()
        code = cli.main(list(argv))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


def copy_phase_files(folder: Path) -> dict[str, Path]:
    """The shipped phase files copied to ``folder``, by phase."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for phase in PHASES:
        target = folder / f"{phase}.flagd.json"
        shutil.copyfile(FLAGS_DIR / f"{phase}.flagd.json", target)
        out[phase] = target
    return out


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The JSON-lines audit log next to a local flag file."""
    log = path.with_name(path.name + ".audit.jsonl")
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def one_line_error(result: Result) -> str:
    """The error a command printed, checked to be one ``ai-agent-rollout: error:`` line."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ai-agent-rollout: error: "), result.err
    return lines[0]


def make_checkout(root: Path, name: str = "ai_agent_handler") -> Path:
    """A checkout of the project ``name`` at ``root``: ``pyproject.toml``, ``flags/`` with
    the shipped phase files, and a subfolder ``docs/deep``."""
    copy_phase_files(root / "flags")
    (root / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    package = root / re.sub(r"[-.]+", "_", name).lower()  # flags/ beside the package: a checkout
    package.mkdir()
    (package / "__init__.py").write_text("")
    (root / "docs" / "deep").mkdir(parents=True)
    return root


def state_of(path: Path) -> edits.RolloutState:
    """The rollout state of the local flag file at ``path``."""
    return edits.read_state(json.loads(path.read_text()))


def version(path: Path) -> int | None:
    """The version of the local flag file at ``path``."""
    return edits.version_of(json.loads(path.read_text()))


def names_in(folder: Path) -> list[str]:
    """The names in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir())
