"""The three parts of the package depend on each other in one direction only.

runtime (handler, key rule, decision, transport, tools, settings, AWS edge, metrics)
    <- flag machinery (flag_file/)  <- operators (ops/)

The Lambda runtime never imports the operators' side; the transport and the key rule never
import the flag machinery. Read from the source (imports inside functions count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ai_agent_handler

PACKAGE = Path(ai_agent_handler.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ai_agent_handler module ``path`` imports, as an absolute name."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("ai_agent_handler")}


SOURCES = sorted(PACKAGE.rglob("*.py"))

#: What each part must not import.
FORBIDDEN = {
    "runtime": ("ai_agent_handler.ops",),
    "flag_file": ("ai_agent_handler.ops", "ai_agent_handler.ai_agent_handler"),
    "transport": (
        "ai_agent_handler.ops",
        "ai_agent_handler.flag_file",
        "ai_agent_handler.ai_agent_handler",
    ),
    "tools": (  # MCP tools know nothing of keys, flags or Lambda
        "ai_agent_handler.ops",
        "ai_agent_handler.flag_file",
        "ai_agent_handler.transport",
        "ai_agent_handler.ai_agent_handler",
        "ai_agent_handler.decision",
    ),
    "key rule": ("ai_agent_handler.",),  # pure: nothing of the package but its errors
}


def _part(module: str) -> str | None:
    if module.startswith("ai_agent_handler.ops"):
        return None  # the top: may import anything
    if module.startswith("ai_agent_handler.flag_file"):
        return "flag_file"
    if module.startswith("ai_agent_handler.transport"):
        return "transport"
    if module.startswith("ai_agent_handler.tools"):
        return "tools"
    if module == "ai_agent_handler.partition_key":
        return "key rule"
    return "runtime"


def test_imports_are_read_relative_and_absolute() -> None:
    # The reader the layer test relies on finds what these modules really import.
    assert "ai_agent_handler.ops.edits" in _imports(PACKAGE / "ops" / "cli.py")
    handler = _imports(PACKAGE / "ai_agent_handler.py")
    assert {"ai_agent_handler.transport.invoke", "ai_agent_handler._aws"} <= handler
    assert "ai_agent_handler.flag_file.default_provider" in handler  # inside a method


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module_name(p))
def test_no_module_imports_a_part_above_it(path: Path) -> None:
    part = _part(_module_name(path))
    if part is None:
        return
    bad = sorted(
        name
        for name in _imports(path)
        # the one error tree serves every part
        if not name.startswith("ai_agent_handler.exceptions")
        for forbidden in FORBIDDEN[part]
        if name.startswith(forbidden)
    )
    assert bad == [], f"{_module_name(path)} ({part}) imports {bad}"


def _module_graph() -> dict[str, set[str]]:
    """Each module and the modules it imports (a package only for a name it defines)."""
    modules = {_module_name(path): path for path in SOURCES}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found = _imports(path)
        graph[module] = {
            name
            for name in found
            if name in modules
            and name != module
            # ``from . import session`` names the submodule, not the package it is in
            and not any(other.startswith(name + ".") and other in modules for other in found)
        }
    return graph


def test_no_import_circles() -> None:
    # Typing-only and in-function imports count: a circle through them is still one idea
    # split over modules that cannot be read one after the other.
    graph = _module_graph()
    assert "ai_agent_handler.decision_log" in graph["ai_agent_handler.decision"]  # in a function

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            if here == goal:
                return True
            if here not in seen:
                seen.add(here)
                todo.extend(graph[here])
        return False

    circles = sorted(
        (module, name) for module in graph for name in graph[module] if reaches(name, module)
    )
    assert circles == []


# -- ops: a subject's decisions are pure, its reads and writes are in <subject>_io --------------

OPS = PACKAGE / "ops"
#: What does I/O: the modules that touch files, processes, the network or AWS.
IO_MODULES = (
    "os",
    "shutil",
    "subprocess",
    "socket",
    "fcntl",
    "tempfile",
    "glob",
    "boto3",
    "botocore",
    "ai_agent_handler._aws",
    "ai_agent_handler.ops.store",
    "ai_agent_handler.ops.audit",
    "ai_agent_handler.ops.cloudwatch",
)


def _every_import(path: Path) -> set[str]:
    """Every module ``path`` imports, the package's as absolute names, others as written."""
    found = set(_imports(path))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def _subjects() -> list[str]:
    return sorted(path.stem.removesuffix("_io") for path in OPS.glob("*_io.py"))


def test_the_ops_naming_rule_holds() -> None:
    # Every <subject>_io has its pure <subject>; the three subjects of the operators' side.
    assert _subjects() == [
        "backfill",
        "config",
        "edits",
        "history",
        "ramp",
        "report",
        "retire",
        "status",
    ]
    for subject in _subjects():
        assert (OPS / f"{subject}.py").is_file(), subject
    assert not [path.name for path in OPS.glob("*.py") if path.stem.endswith(("_control", "_ops"))]


#: Pure modules of ops/ that serve several subjects and have no ``_io`` of their own.
SHARED_PURE = ("shadow",)


def test_the_shared_pure_modules_exist() -> None:
    for module in SHARED_PURE:
        assert (OPS / f"{module}.py").is_file(), module
        assert not (OPS / f"{module}_io.py").exists(), module


@pytest.mark.parametrize("subject", [*_subjects(), *SHARED_PURE])
def test_a_subjects_decisions_do_no_io(subject: str) -> None:
    imported = _every_import(OPS / f"{subject}.py")
    doing_io = sorted(
        name
        for name in imported
        for io in IO_MODULES
        if name == io or name.startswith(io + ".") or name.endswith("_io")
    )
    assert doing_io == [], f"ops/{subject}.py imports {doing_io}: that belongs in {subject}_io"
