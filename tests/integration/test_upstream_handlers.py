"""Provider handlers in upstream's styles on this class, driven the way the engine drives them.

The engine (``tests.support.upstream_handlers.drive``) runs ``ask_model`` in a thread with a
queue and an event, returns once the event is set, never joins the thread and never calls
``flush()``; inside Lambda the environment is then frozen. The Lambda endpoint is a
loopback Invoke server (``bench.loopback``) that answers slowly, with two stream workers, so
chunks are still queued when a provider's last ``send_data_to_stream`` returns. Tools come
from a real FastMCP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ai_agent_handler import StreamDeliveryError
from ai_agent_handler.tools import session
from ai_agent_handler.tools.servers import parse_servers
from ai_agent_handler.transport.stream import StreamDispatcher
from bench.loopback import LambdaLoopback, lambda_client
from tests.support import REPO
from tests.support.mcp_server import McpServer
from tests.support.upstream_handlers import OpenAIStyleHandler, TravrseStyleHandler, drive

LOG = logging.getLogger("test-upstream-handlers")
REPLY = ["The ", "answer ", "is ", "five, ", "and ", "that ", "is ", "all."]


@pytest.fixture(autouse=True)
def _sessions() -> Iterator[None]:
    yield
    session.close()


def agent(mcp_url: str | None = None, llm_name: str = "gpt") -> dict[str, Any]:
    found: dict[str, Any] = {"llm": {"llm_name": llm_name}, "configuration": {}}
    if mcp_url:
        found["mcp_servers"] = [{"name": "tools", "setting": {"base_url": mcp_url}}]
    return found


def engine_setup(handler: Any, server: LambdaLoopback) -> Any:
    handler.endpoint_id, handler.part_id = "aws-prod", "acme-corp"
    handler.run = {"run_uuid": "run-1", "updated_by": "u", "thread": {"thread_uuid": "t"}}
    handler.connection_id = "conn-1"
    handler.stream_dispatcher = StreamDispatcher(workers=2)
    return handler


def delivered(server: LambdaLoopback) -> list[tuple[int, str, bool]]:
    chunks = [json.loads(i.payload["params"]["data"]) for i in server.received]
    return sorted((c["index"], c["chunk_delta"], c["is_message_end"]) for c in chunks)


# -- _short_term_memory ---------------------------------------------------------------------
def test_a_local_run_appends_its_tool_call_to_short_term_memory() -> None:
    with McpServer() as tools:
        handler = OpenAIStyleHandler(
            LOG, agent(tools.url), tool_call=("add", {"a": 2, "b": 3}), reply=["5"]
        )
        assert handler.short_term_memory == []
        assert drive(handler, [{"role": "user", "content": "2+3?"}], stream=False) == "resp-2"
    memory = handler.short_term_memory
    assert [m["message"]["role"] for m in memory] == ["assistant", "tool"]
    assert json.loads(memory[1]["message"]["content"]) == [{"type": "text", "text": "5"}]
    handler.short_term_memory = []  # the engine may reset it, as upstream's setter allows
    assert handler._short_term_memory == []


def test_a_travrse_style_local_run_remembers_its_answer() -> None:
    handler = TravrseStyleHandler(LOG, agent(llm_name="travrse"), reply=["hi"])
    drive(handler, [{"role": "user", "content": "hello"}], stream=False)
    assert handler.short_term_memory == [{"role": "assistant", "content": "hi"}]


# -- travrse tools through the agent's MCP proxy ---------------------------------------------
class McpProxy(ThreadingHTTPServer):
    """The engine's MCP proxy as Travrse reaches it: POST <base>/<tool> with the arguments."""

    daemon_threads = True

    def __init__(self, mcp_url: str) -> None:
        self.server_config = parse_servers([{"name": "behind", "setting": {"base_url": mcp_url}}])
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: McpProxy

    def do_POST(self) -> None:
        arguments = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tool = self.path.rsplit("/", 1)[1]
        self.server.calls.append((self.path, dict(self.headers), arguments))
        content = session.call_tool(self.server.server_config[0], tool, arguments)
        body = json.dumps({"content": list(content)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_travrse_style_tool_call_goes_through_the_proxy_url_to_the_mcp_server() -> None:
    with McpServer() as tools:
        proxy = McpProxy(tools.url)
        try:
            given = agent(tools.url, llm_name="travrse")
            given["configuration"]["mcp_proxy"] = {
                "base_url": proxy.url + "/{endpoint_id}/mcp",
                "headers": {"X-Proxy-Key": "k"},
            }
            given["configuration"]["enabled_tools"] = ["add"]
            handler = TravrseStyleHandler(
                LOG, given, reply=["sum: "], tool_arguments={"a": 20, "b": 22}
            )
            handler.endpoint_id = "aws-prod"
            drive(handler, [{"role": "user", "content": "20+22?"}], stream=False)
        finally:
            proxy.shutdown()
            proxy.server_close()
    assert handler.final_output["content"] == "sum: 42"
    ((path, headers, arguments),) = proxy.calls
    assert path == "/aws-prod/mcp/add"
    assert headers["X-Proxy-Key"] == "k" and arguments == {"a": 20, "b": 22}
    assert [r.params["name"] for r in tools.requests("tools/call")] == ["add"]


# -- every chunk delivered before the engine goes on -----------------------------------------
@pytest.mark.parametrize(
    ("style", "message_end"),
    [("openai", True), ("openai", False), ("travrse", False)],
    ids=["openai-message-end", "openai-no-message-end", "travrse"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "direct"])
def test_every_chunk_is_delivered_when_the_engines_call_returns(
    style: str, message_end: bool, stream: bool
) -> None:
    with LambdaLoopback(delay=0.05) as server:
        client = lambda_client(server.url)
        if style == "openai":
            handler: Any = OpenAIStyleHandler(
                LOG, agent(), aws_lambda=client, reply=REPLY, message_end=message_end
            )
        else:
            handler = TravrseStyleHandler(LOG, agent(llm_name="travrse"), aws_lambda=client)
            handler.setting["reply"] = REPLY
        engine_setup(handler, server)
        drive(handler, [{"role": "user", "content": "?"}], stream=stream)
        got = delivered(server)  # read at once: nothing is waited for here
    if style == "openai":
        assert "".join(delta for _, delta, _ in got) == "".join(REPLY)
        assert got[-1][2] is message_end
    else:
        assert [(i, d) for i, d, _ in got] == [*enumerate(REPLY), (len(REPLY), "")]
    assert [index for index, _, _ in got] == list(range(len(got)))


def test_a_failed_delivery_is_raised_from_ask_model_and_the_engine_is_not_kept_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with LambdaLoopback(fail=lambda invocation: True) as server:
        handler = TravrseStyleHandler(
            LOG, agent(llm_name="travrse"), aws_lambda=lambda_client(server.url)
        )
        handler.setting["reply"] = ["a", "b"]
        engine_setup(handler, server)
        with pytest.raises(StreamDeliveryError, match="3 chunks not delivered"):
            drive(handler, [], stream=False)
        stream_event = threading.Event()
        raised: list[BaseException] = []

        def ask() -> None:
            try:
                handler.ask_model([], None, stream_event)
            except StreamDeliveryError as err:
                raised.append(err)

        thread = threading.Thread(target=ask)
        thread.start()
        assert stream_event.wait(60)  # set, after the failures were logged
        thread.join(60)
    assert "at stream_event.set(): 3 chunks not delivered" in caplog.text
    (err,) = raised  # and raised where the thread can see it
    assert err.report.failed == 3


# -- the same in a process that stops as soon as the engine's call returns --------------------
CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from ai_agent_handler.pytest_plugin import PartitionKeyFlag
    from ai_agent_handler.transport.stream import StreamDispatcher
    from bench.loopback import lambda_client
    from tests.support.upstream_handlers import OpenAIStyleHandler, TravrseStyleHandler, drive

    url, style, stream = sys.argv[1], sys.argv[2], sys.argv[3] == "stream"
    logging.basicConfig(level=logging.ERROR)
    PartitionKeyFlag().install()
    reply = [f"d{i} " for i in range(12)]
    agent = {"llm": {"llm_name": "gpt"}, "configuration": {}}
    if style == "travrse":
        client = lambda_client(url)
        handler = TravrseStyleHandler(logging.getLogger("child"), agent, aws_lambda=client)
        handler.setting["reply"] = reply
    else:
        handler = OpenAIStyleHandler(
            logging.getLogger("child"), agent, aws_lambda=lambda_client(url), reply=reply,
            message_end=style == "openai-end",
        )
    handler.endpoint_id, handler.part_id = "aws-prod", "acme-corp"
    handler.run = {"run_uuid": "run-1", "updated_by": "u", "thread": {"thread_uuid": "t"}}
    handler.connection_id = "conn-1"
    handler.stream_dispatcher = StreamDispatcher(workers=2)
    drive(handler, [{"role": "user", "content": "?"}], stream=stream)
    print("returned", flush=True)
    os._exit(0)  # the environment is frozen or reclaimed: nothing runs after the return
    """
)


@pytest.mark.parametrize("style", ["openai-end", "openai-no-end", "travrse"])
@pytest.mark.parametrize("stream", ["stream", "direct"])
def test_a_process_stopped_right_after_the_engines_call_lost_no_chunk(
    style: str, stream: str
) -> None:
    with LambdaLoopback(delay=0.05) as server:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, server.url, style, stream],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "", "PYTHONPATH": str(REPO), "AWS_EC2_METADATA_DISABLED": "true"},
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == "returned"
        got = delivered(server)
    expected = 13 if style == "travrse" else None
    indexes = [index for index, _, _ in got]
    assert indexes == list(range(len(got)))
    if expected is not None:
        assert len(got) == expected
    assert "".join(d for _, d, _ in got) == "".join(f"d{i} " for i in range(12))
    assert got[-1][2] is (style == "openai-end")
    assert os.environ.get("PATH")  # the parent's environment is untouched
