"""A provider handler in upstream's style whose model calls a tool over MCP.

``python3 dev.py demo mcp [MCP_URL]`` (or ``.venv/bin/python examples/mcp_tools.py
[MCP_URL]``). Without a URL it starts a small calculator server (FastMCP, the official
SDK's 1.x line) on 127.0.0.1 and stops it at the end.

The handler does what upstream's OpenAI / Anthropic handlers do with the base class: the
constructor has put the servers' tools into ``agent["configuration"]["tools"]`` (here in the
``gpt`` format) and the model picks one; the handler calls it through
``self.get_function(name)(**arguments)``, sends the JSON-encoded output back to the model
(an exception becomes ``"Function execution failed: ..."``), and streams the model's answer
with ``process_text_content`` and ``send_data_to_stream``. The model is scripted, and the
agent task Lambda is replaced by :class:`PrintingTaskFunctions` through upstream's local
dispatch (``test_mode="local_for_all"``), so no AWS account is needed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ai_agent_handler import AIAgentEventHandler

__all__ = ["PrintingTaskFunctions", "ScriptedToolModel", "ToolCallingHandler", "run"]

STREAMED: list[dict[str, Any]] = []  # the chunks the task functions received, in order


class PrintingTaskFunctions:
    """Stands in for the agent task Lambda: prints what a WebSocket client would get."""

    def __init__(self, logger: logging.Logger, **setting: Any) -> None:
        self.logger = logger

    def send_data_to_stream(self, connection_id: str, data: str) -> None:
        chunk = json.loads(data)
        STREAMED.append(chunk)
        print(chunk["chunk_delta"], end="\n" if chunk["is_message_end"] else "", flush=True)

    def insert_update_run(self, **params: Any) -> None:
        self.logger.info("run %s: %s", params.get("run_uuid"), params.get("status"))


class ScriptedToolModel:
    """A "model" that asks for ``tool(**arguments)`` and then answers with its output."""

    def __init__(self, tool: str, arguments: dict[str, Any]) -> None:
        self.tool = tool
        self.arguments = arguments

    def respond(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        last = messages[-1]
        if last["role"] == "user":
            offered = {t["name"] for t in tools if t.get("type") == "function"}
            if self.tool not in offered:
                return {"text": f"I have no tool called {self.tool}."}
            return {"function_call": {"name": self.tool, "arguments": self.arguments}}
        output = last["content"]
        try:
            text = json.loads(output)[0]["text"]
        except (ValueError, LookupError, TypeError):
            text = output
        return {"text": f"The tool {self.tool} answered: {text}"}


def deltas(text: str, size: int = 4) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


class ToolCallingHandler(AIAgentEventHandler):
    """The loop of a provider handler: model, tool call, model, streamed answer."""

    def __init__(self, logger: logging.Logger, agent: dict[str, Any], **setting: Any) -> None:
        super().__init__(logger, agent, **setting)
        self.model: ScriptedToolModel | None = None

    def ask(self, question: str) -> str:
        assert self.model is not None
        tools = self.agent["configuration"]["tools"]
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        self.invoke_async_funct("insert_update_run", status="in_progress")
        reply = self.model.respond(messages, tools)
        while "function_call" in reply:
            call = reply["function_call"]
            try:
                output = json.dumps(self.get_function(call["name"])(**call["arguments"]))
            except Exception as err:  # upstream's handlers hand the failure to the model
                output = f"Function execution failed: {err}"
            messages.append({"role": "tool", "name": call["name"], "content": output})
            reply = self.model.respond(messages, tools)
        index, buf = 0, ""
        for delta in deltas(reply["text"]):
            self.accumulated_text += delta
            buf += delta
            index, buf = self.process_text_content(index, buf, "text")
        self.send_data_to_stream(index=index, chunk_delta=buf, is_message_end=True)
        self.final_output = {"role": "assistant", "content": self.accumulated_text}
        self.invoke_async_funct("insert_update_run", status="completed")
        return self.accumulated_text


def run(url: str, tool: str = "add", arguments: dict[str, Any] | None = None) -> str:
    """One run against the MCP server at ``url``; returns the streamed answer."""
    agent = {
        "llm": {"llm_name": "gpt"},
        "configuration": {},
        "mcp_servers": [{"name": "calculator", "setting": {"base_url": url}}],
    }
    local = {"module_name": __name__, "class_name": "PrintingTaskFunctions"}
    # Local dispatch still builds boto3's Lambda client (upstream's signature passes it),
    # which wants a region; nothing is sent to AWS.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    handler = ToolCallingHandler(
        logging.getLogger("mcp-example"),
        agent,
        test_mode="local_for_all",
        functs_on_local={"send_data_to_stream": local, "insert_update_run": local},
        stream_dispatch="sync",
        rollout_phase="dev",
    )
    handler.model = ScriptedToolModel(
        tool, arguments if arguments is not None else {"a": 2, "b": 3}
    )
    handler.endpoint_id = "aws-dev-us-east-1"
    handler.run = {"run_uuid": "run-1", "updated_by": "example", "thread": {"thread_uuid": "t-1"}}
    handler.connection_id = "ws-1"
    return handler.ask("What is 2 + 3?")


def _calculator(port: int) -> Any:
    import uvicorn
    from mcp.server.fastmcp import FastMCP

    mcp = FastMCP("calculator", stateless_http=True, json_response=True)

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    server = uvicorn.Server(
        uvicorn.Config(mcp.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    server = None
    if argv:
        url = argv[0]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = _calculator(port)
        url = f"http://127.0.0.1:{port}/mcp"
    try:
        answer = run(url)
    finally:
        if server is not None:
            server.should_exit = True
    return 0 if answer.endswith("5") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
