"""``ai-agent-rollout`` in process: a runner, scratch copies of the phase files, audit logs."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.ops import cli

from . import FLAGS_DIR, PHASES


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
