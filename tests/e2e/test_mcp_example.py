"""examples/mcp_tools.py: an upstream-style provider handler answers its model's tool call
through ``get_function`` against a real MCP server, and streams the answer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ai_agent_handler.tools import session
from examples import mcp_tools
from tests.support import REPO
from tests.support.mcp_server import McpServer
from tests.support.provider import assemble


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    mcp_tools.STREAMED.clear()
    yield
    session.close()


@pytest.mark.parametrize(
    "kind",
    [{}, {"stateless": True, "json_response": True}],
    ids=["stateful-sse", "stateless-json"],
)
def test_the_model_gets_the_tool_output_and_the_answer_is_streamed(kind: dict[str, Any]) -> None:
    with McpServer(**kind) as server:
        answer = mcp_tools.run(server.url)
        (call,) = server.requests("tools/call")
    assert answer == "The tool add answered: 5"
    assert call.params == {"name": "add", "arguments": {"a": 2, "b": 3}}
    assert assemble(mcp_tools.STREAMED) == {"ws-1-run-1": answer}


def test_a_failing_tool_becomes_the_models_function_output() -> None:
    with McpServer() as server:
        answer = mcp_tools.run(server.url, tool="fail", arguments={"message": "disk full"})
    assert answer == (
        "The tool fail answered: Function execution failed: Error executing tool fail: disk full"
    )


def test_the_example_runs_on_its_own() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mcp_tools.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "The tool add answered: 5"
