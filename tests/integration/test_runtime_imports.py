"""A handler's whole run loads the runtime and the flag machinery, never the operators' side
nor (for an agent without MCP servers) the MCP SDK."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

RUN_ONE = """
import json, logging, sys
from unittest import mock
from ai_agent_handler import AIAgentEventHandler, Utility

calls = []
with mock.patch.object(Utility, "invoke_funct_on_aws_lambda", lambda *a, **k: calls.append(a)):
    handler = AIAgentEventHandler(logging.getLogger("t"), {}, rollout_phase="dev")
    handler.endpoint_id, handler.part_id = "ep", "p"
    handler.run = {"run_uuid": "r", "updated_by": "u", "thread": {"thread_uuid": "t"}}
    handler.connection_id = "c"
    handler.invoke_async_funct("insert_update_run")
    handler.send_data_to_stream(index=0, chunk_delta="hi", is_message_end=True)
print(json.dumps({
    "keys": [call[1] for call in calls],
    "modules": sorted(m for m in sys.modules if m.startswith("ai_agent_handler")),
    "mcp_sdk_loaded": "mcp" in sys.modules,
}))
"""


def test_a_run_never_imports_the_operators_side() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUN_ONE],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["keys"] == ["ep#p", "ep#p"]  # dev's shipped file: composite
    modules = result["modules"]
    assert "ai_agent_handler.flag_file.provider" in modules  # the run really used the flags
    assert [m for m in modules if m.startswith("ai_agent_handler.ops")] == []
    # An agent without MCP servers never loads the MCP SDK or the session machinery.
    assert [m for m in modules if m.startswith("ai_agent_handler.tools")] == []
    assert result["mcp_sdk_loaded"] is False
