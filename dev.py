#!/usr/bin/env python3
"""Developer entry point; needs nothing but python3.

    python3 dev.py demo     the rollout demo (local AWS in process, no credentials needed)
    python3 dev.py test     the whole test suite
    python3 dev.py lint     ruff (lint + format check) and mypy
    python3 dev.py bench    the benchmarks, writing bench/RESULTS.md (--smoke: tiny sizes)

Each command creates ./.venv on first use and installs the package with its dev extras
into it; it reinstalls only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".installed"


def ensure_venv() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing ai_agent_handler[dev] into .venv ...", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(want)


def run(*cmd: str) -> int:
    return subprocess.run([str(PY), *cmd], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "bench"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    if command == "demo":
        return run(str(ROOT / "examples" / "rollout_demo.py"), *rest)
    if command == "test":
        return run("-m", "pytest", *rest)
    if command == "bench":
        return run("-m", "bench", *rest)
    status = run("-m", "ruff", "check", ".")
    status |= run("-m", "ruff", "format", "--check", ".")
    status |= run("-m", "mypy")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
