#!/usr/bin/env python3
"""Developer entry point; needs nothing but python3.

    python3 dev.py demo     the rollout demo (local AWS in process, no credentials needed)
    python3 dev.py demo mcp a provider handler calling a tool on an MCP server it starts
    python3 dev.py demo backfill
                            the example receiver's table backfilled to the composite key,
                            verified, and read without the fallback (local AWS in process)
    python3 dev.py test     the whole test suite, one pytest worker per core (pytest-xdist;
                            -n 0 runs it in one process)
    python3 dev.py lint     ruff (lint + format check) and mypy
    python3 dev.py bench    the benchmarks, writing bench/RESULTS.md (--smoke: tiny sizes)
    python3 dev.py lowest   the whole test suite on the lowest versions pyproject.toml allows

Each command creates ./.venv on first use and installs the package with its dev extras
into it; it reinstalls only when pyproject.toml changes. The first install fetches about 100
packages: about 40 s on a 2-core machine with a quick package index, two minutes on a slow
one. pip's lines are shown as they come, and a line every few seconds while pip is quiet.

lowest proves the declared floors: it creates ./.venv-lowest and installs the package with
its test, flagd and otel extras under a constraints file that pins every runtime dependency
and every dependency of those extras to the floor pyproject.toml declares (boto3>=X installs
boto3==X; the pins are derived from pyproject.toml on every run, there is no second list),
plus urllib3<2 so botocore runs on the urllib3 1.x line it still allows. It prints the
versions under test, then runs the suite (extra arguments go to pytest, e.g. -q or
tests/unit; CI runs tests/unit and tests/integration there, the suites that call the
dependencies: the whole flows of tests/e2e run on the current versions only).
.venv-lowest is rebuilt from scratch whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOWEST = ROOT / ".venv-lowest"
COMMANDS = ("demo", "test", "lint", "bench", "lowest")
#: What ``lowest`` adds to the floors: botocore allows urllib3 1.26 on every Python.
LOWEST_EXTRA_CONSTRAINTS = ("urllib3<2",)
#: The extras ``lowest`` installs, and whose requirements it pins to their floors: all but
#: the dev tools.
LOWEST_EXTRAS = ("test", "flagd", "otel")
#: Seconds pip may stay quiet before a line says the install is still going.
HEARTBEAT = 5.0
#: ``--no-compile``: pip does not byte-compile all ~100 packages up front (a third of a
#: first install on 2 cores); Python compiles what a command imports, once, on first use.
PIP_INSTALL = (
    "-m",
    "pip",
    "--disable-pip-version-check",
    "install",
    "--progress-bar",
    "off",
    "--no-compile",
)
#: pip lines not worth a line each: one per package already in place on a reinstall.
_HIDDEN = ("Requirement already satisfied: ",)


def python_in(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts" if os.name == "nt" else "bin") / "python"


PY = python_in(VENV)


# -- installing, with progress ------------------------------------------------------------


def stream(
    cmd: list[str], *, heartbeat: float = HEARTBEAT, out: TextIO | None = None, cwd: Path = ROOT
) -> int:
    """Run ``cmd`` showing its output line by line as it comes (indented), and a line
    ``... still working (N s)`` whenever it stays quiet for ``heartbeat`` seconds; the exit
    status. Carriage-return redraws keep only their last state: a log gets whole lines."""
    out = out or sys.stdout
    began = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    shown = began
    while True:
        try:
            line = lines.get(timeout=max(0.0, shown + heartbeat - time.monotonic()))
        except queue.Empty:
            shown = time.monotonic()
            print(f"  ... still working ({shown - began:.0f} s)", file=out, flush=True)
            continue
        if line is None:
            break
        text = line.rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
        if not text or text.startswith(_HIDDEN):
            continue
        print(f"  {text}", file=out, flush=True)
        shown = time.monotonic()
    return proc.wait()


def pip_install(
    python: Path, *args: str, heartbeat: float = HEARTBEAT, out: TextIO | None = None
) -> None:
    """``pip install args`` into ``python``'s environment, its lines shown as they come
    (no progress bars); raises :class:`subprocess.CalledProcessError` when pip fails."""
    cmd = [str(python), *PIP_INSTALL, *args]
    status = stream(cmd, heartbeat=heartbeat, out=out)
    if status:
        raise subprocess.CalledProcessError(status, cmd)


def ensure_venv(
    venv_dir: Path = VENV, extras: str = "dev", constraints: str = "", *, fresh: bool = False
) -> Path:
    """``venv_dir`` with the package and its ``extras`` installed (under ``constraints``,
    the text of a pip constraints file); its python. Installs only when pyproject.toml or
    the constraints changed since the last install; ``fresh`` then starts from an empty
    environment, so nothing from an earlier install stays."""
    python = python_in(venv_dir)
    stamp = venv_dir / ".installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + constraints.encode())
    if stamp.exists() and stamp.read_text() == want.hexdigest() and python.exists():
        return python
    name = venv_dir.name
    if fresh or not python.exists():
        print(
            f"creating {name} and installing ai_agent_handler[{extras}] into it: about 100 "
            "packages, a minute or so when pip has none cached; pip's lines follow ...",
            flush=True,
        )
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    else:
        print(
            f"pyproject.toml changed: updating ai_agent_handler[{extras}] in {name} ...", flush=True
        )
    args = ["-e", f"{ROOT}[{extras}]"]
    if constraints:
        (venv_dir / "constraints.txt").write_text(constraints)
        args = ["--constraint", str(venv_dir / "constraints.txt"), *args]
    began = time.monotonic()
    pip_install(python, *args)
    print(f"installed in {time.monotonic() - began:.0f} s", flush=True)
    stamp.write_text(want.hexdigest())
    return python


# -- the declared floors ------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?"
    r"\s*(?P<specs>[^;]*?)\s*(?P<marker>;.*)?$"
)
_SPEC = re.compile(r"(?P<op>~=|===|==|!=|<=|>=|<|>)\s*(?P<version>\S+)$")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def declared(group: str | None = None, text: str | None = None) -> list[str]:
    """The requirements of ``[project].dependencies`` (``group`` None) or of the optional
    dependency group ``group``, as pyproject.toml (or ``text``) declares them."""
    if text is None:
        text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if sys.version_info < (3, 11):  # no tomllib
        return toml_string_array(text, *_where(group))
    import tomllib

    project = tomllib.loads(text)["project"]
    found = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [str(item) for item in found]


def _where(group: str | None) -> tuple[str, str]:
    if group is None:
        return "project", "dependencies"
    return "project.optional-dependencies", group


def toml_string_array(text: str, table: str, key: str) -> list[str]:
    """The strings of the array ``key = [...]`` in the TOML table ``[table]``, without a TOML
    library: enough TOML for a dependency list (comments, basic and literal strings, a bare
    or quoted key), for Python 3.10, which has no ``tomllib``."""
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.strip() == f"[{table}]"]
    if not headers:
        raise KeyError(f"pyproject.toml has no [{table}]")
    section: list[str] = []
    for line in lines[headers[0] + 1 :]:
        if line.lstrip().startswith("["):  # the next table; array items here are strings
            break
        section.append(line)
    body = "\n".join(section)
    key_pattern = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    found = re.search(rf"^\s*{key_pattern}\s*=\s*\[", body, re.MULTILINE)
    if found is None:
        raise KeyError(f"pyproject.toml: [{table}] has no {key}")
    items: list[str] = []
    i = found.end()
    while i < len(body):
        char = body[i]
        if char == "]":
            return items
        if char == "#":
            end = body.find("\n", i)
            i = len(body) if end < 0 else end
        elif char == '"':
            string = _BASIC_STRING.match(body, i)
            if string is None:
                break
            items.append(json.loads(string.group()))
            i = string.end()
        elif char == "'":
            end = body.find("'", i + 1)
            if end < 0:
                break
            items.append(body[i + 1 : end])
            i = end + 1
        else:
            i += 1
    raise ValueError(f"pyproject.toml: [{table}] {key}: an array that does not end")


def floor(requirement: str) -> tuple[str, str, str]:
    """``(name, lowest version allowed, marker)`` of a requirement: the version of its
    ``>=``, ``~=`` or ``==`` clause. A requirement without exactly one is refused: every
    dependency declares the lowest version it is known to work with."""
    found = _REQUIREMENT.match(requirement)
    floors: list[str] = []
    for spec in (found["specs"] if found else "").split(","):
        clause = _SPEC.match(spec.strip())
        if clause is None:
            if spec.strip():
                floors.append("?")
            continue
        if clause["op"] in (">=", "~=", "==", "==="):
            floors.append(clause["version"])
    if found is None or len(floors) != 1 or floors[0] == "?" or "*" in floors[0]:
        raise ValueError(f"pyproject.toml: {requirement!r} needs exactly one floor (>=, ~= or ==)")
    return found["name"], floors[0], (found["marker"] or "").strip()


def lowest_constraints(text: str | None = None) -> str:
    """The pip constraints file ``lowest`` installs under: ``name==floor`` for every
    runtime dependency and every requirement of :data:`LOWEST_EXTRAS`, and
    :data:`LOWEST_EXTRA_CONSTRAINTS`."""
    requirements = declared(None, text)
    for group in LOWEST_EXTRAS:
        requirements += declared(group, text)
    pins = []
    for requirement in requirements:
        name, version, marker = floor(requirement)
        pins.append(f"{name}=={version}{' ' + marker if marker else ''}")
    return "\n".join([*pins, *LOWEST_EXTRA_CONSTRAINTS]) + "\n"


_SHOW_VERSIONS = """
import importlib.metadata as m, platform, sys
print(f"lowest: Python {platform.python_version()}; the versions under test:")
for line in sys.argv[1:]:
    name, _, pin = line.partition(" ")
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        have = "not installed"
    print(f"  {name:<32} {have:<10} ({pin})")
"""


def lowest(pytest_args: list[str]) -> int:
    began = time.monotonic()
    constraints = lowest_constraints()
    python = ensure_venv(LOWEST, ",".join(LOWEST_EXTRAS), constraints, fresh=True)
    shown = []
    for line in constraints.splitlines():
        name = re.split(r"[=<>!~;\s]", line, maxsplit=1)[0]
        shown.append(f"{name} {line[len(name) :].strip()}")
    subprocess.run([str(python), "-c", _SHOW_VERSIONS, *shown], cwd=ROOT, check=True)
    # pytest before 8.3 prints a traceback for every expected failure under -rx (8.3 and
    # later only with --xfail-tb): the summary names failures, errors and skips; -ra after
    # it gives the project's default back.
    pytest = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-rfEs"]
    pytest += parallel(pytest_args)
    status = subprocess.run(pytest, cwd=ROOT).returncode
    print(f"lowest: {'passed' if status == 0 else 'FAILED'} in {time.monotonic() - began:.0f} s")
    return status


# -- commands -----------------------------------------------------------------------------


def run(*cmd: str) -> int:
    return subprocess.run([str(PY), *cmd], cwd=ROOT).returncode


def parallel(pytest_args: list[str]) -> list[str]:
    """``pytest_args`` with one worker per core (pytest-xdist's ``-n auto``), unless they say
    how many (``-n 0``: one process, as a debugger wants)."""
    said = any(arg.startswith(("-n", "--numprocesses")) for arg in pytest_args)
    return pytest_args if said else ["-n", "auto", *pytest_args]


#: ``python3 dev.py demo [NAME]``: the examples, by name (the first is the default).
EXAMPLES = {"rollout": "rollout_demo.py", "mcp": "mcp_tools.py", "backfill": "receiver_backfill.py"}


def demo_command(rest: list[str]) -> list[str]:
    """The example ``demo`` runs, and its arguments: ``demo mcp`` -> mcp_tools.py."""
    name = rest[0] if rest and rest[0] in EXAMPLES else "rollout"
    args = rest[1:] if rest and rest[0] in EXAMPLES else rest
    return [str(ROOT / "examples" / EXAMPLES[name]), *args]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "lowest":
        return lowest(rest)
    ensure_venv()
    if command == "demo":
        return run(*demo_command(rest))
    if command == "test":
        return run("-m", "pytest", *parallel(rest))
    if command == "bench":
        return run("-m", "bench", *rest)
    status = run("-m", "ruff", "check", ".")
    status |= run("-m", "ruff", "format", "--check", ".")
    status |= run("-m", "mypy")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
