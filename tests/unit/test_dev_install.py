"""dev.py's entry points that need no process: the demo a name runs, the README's commands.

(How dev.py's install shows pip's progress is in ``tests/integration/test_dev_install.py``.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.dev import load_dev

dev = load_dev()


@pytest.mark.parametrize(
    ("rest", "example", "args"),
    [
        ([], "rollout_demo.py", []),
        (["mcp"], "mcp_tools.py", []),
        (["mcp", "http://127.0.0.1:9/mcp"], "mcp_tools.py", ["http://127.0.0.1:9/mcp"]),
        (["rollout"], "rollout_demo.py", []),
    ],
)
def test_demo_runs_each_example_by_name(rest: list[str], example: str, args: list[str]) -> None:
    script, *given = dev.demo_command(rest)
    assert Path(script) == dev.ROOT / "examples" / example and Path(script).is_file()
    assert given == args


def test_every_example_command_the_readme_gives_works_from_a_fresh_clone() -> None:
    # A fresh clone has only python3: a bare `python examples/x.py` cannot import the package.
    readme = (dev.ROOT / "README.md").read_text()
    for bare in re.findall(r"`(python3? examples/[^`]*)`", readme):
        pytest.fail(f"README gives {bare!r}, which needs the environment active")
    assert "`python3 dev.py demo mcp`" in readme
    for example in re.findall(r"`python3 dev\.py demo (\w+)", readme):
        assert example in dev.EXAMPLES
