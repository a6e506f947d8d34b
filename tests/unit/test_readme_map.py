"""The README's module map is the package's tree: every module named, none that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ai_agent_handler
from tests.support import REPO

PACKAGE = Path(ai_agent_handler.__file__).resolve().parent


def _mapped() -> set[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    folders: list[tuple[int, str]] = []
    names: set[str] = set()
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        indent, name = len(match.group(1)), match.group(2)
        folders = [(i, f) for i, f in folders if i < indent]
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
        elif name.endswith(".py") and folders and folders[0][1] == "ai_agent_handler":
            names.add("/".join([f for _, f in folders[1:]] + [name]))
    return names


def _has_code(path: Path) -> bool:
    """More than a docstring: a package ``__init__`` that defines something is a module too."""
    body = ast.parse(path.read_text()).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body
    )


def test_the_module_map_matches_the_tree() -> None:
    on_disk = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent == PACKAGE or _has_code(path)
    }
    assert _mapped() == on_disk


def test_the_readme_says_which_evidence_needs_data_beside_the_checkout() -> None:
    # Suites that read data from ../shared are skipped in a clone without it: the README,
    # which cites them, must say so next to the citation.
    paragraphs = (REPO / "README.md").read_text().split("\n\n")
    needing = {}
    for module in sorted((REPO / "tests").rglob("test_*.py")):
        folders = re.findall(r'SHARED\s*/\s*"([\w.-]+)"', module.read_text())
        if folders:
            needing[module.relative_to(REPO).as_posix()] = folders[0]
    assert needing, "no suite reads ../shared: this test has nothing to check"
    for module, folder in needing.items():
        cited = [p for p in paragraphs if module in p]
        assert cited, f"README does not cite {module}"
        assert any(f"../shared/{folder}/" in p and "skipped" in p for p in cited), (
            f"README cites {module} without saying it needs ../shared/{folder}/ and is "
            "skipped without it"
        )
