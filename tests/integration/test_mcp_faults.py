"""MCP tools when servers misbehave: malformed answers, killed servers, outages, many tokens,
hostile schemas, typos, fork() and close() races.

Servers are real sockets on 127.0.0.1: FastMCP (the official SDK) in this process or in its
own (to be killed), and :class:`FaultyMcp`, a hand-written server that answers what its
script says. Ages and idleness are moved with the session module's clock, never waited for.
Every timeout here is long (20 s): an error that came from a timeout has the wrong type.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.server.fastmcp import FastMCP

from ai_agent_handler import AIAgentEventHandler, MCPError
from ai_agent_handler.exceptions import (
    MCPConfigError,
    MCPConnectionError,
    MCPProtocolError,
    MCPToolNotFound,
)
from ai_agent_handler.tools import session, warm
from ai_agent_handler.tools.formats import MAX_SCHEMA_NODES
from tests.support import REPO
from tests.support.aws import SessionClock
from tests.support.mcp_faults import ADD_TOOL, FaultyMcp
from tests.support.mcp_server import McpServer, build_tools, free_port

LOGGER = logging.getLogger("test-mcp-faults")
PATIENT = 20.0  # seconds: far longer than any prompt failure takes


@pytest.fixture(autouse=True)
def _sessions() -> Iterator[None]:
    yield
    session.close()


def agent_for(url: str, llm_name: str = "gpt", **settings: Any) -> dict[str, Any]:
    setting = {"base_url": url, "list_timeout": PATIENT, "call_timeout": PATIENT, **settings}
    return {
        "llm": {"llm_name": llm_name},
        "configuration": {},
        "mcp_servers": [{"name": "srv", "setting": setting}],
    }


def handler(agent: dict[str, Any]) -> AIAgentEventHandler:
    return AIAgentEventHandler(LOGGER, agent)


def names(agent: dict[str, Any]) -> list[str]:
    return [t["name"] for t in agent["configuration"]["tools"]]


# -- answers the SDK cannot take fail at once, typed ------------------------------------------
MALFORMED = [
    ("not-json", MCPProtocolError, "not a JSON-RPC message"),
    ("html", MCPProtocolError, "'text/html'"),
    ("wrong-id", MCPProtocolError, "JSON-RPC id 999999"),
    ("deep", MCPProtocolError, "recursion limit"),
    ("500", MCPProtocolError, "HTTP 500 Internal Server Error"),
    ("sse-garbage", MCPProtocolError, "not a JSON-RPC message"),
    ("cut", MCPConnectionError, "cut off"),
    ("drop", MCPConnectionError, "no answer"),
    ("sse-cut", MCPConnectionError, "without the answer"),
]


@pytest.mark.parametrize(("action", "error", "message"), MALFORMED)
def test_a_malformed_call_answer_fails_typed_and_is_never_sent_again(
    action: str, error: type[MCPError], message: str
) -> None:
    with FaultyMcp() as server:
        add = handler(agent_for(server.url)).get_function("add")
        server.script("tools/call", action)
        with pytest.raises(error, match=message) as caught:
            add(a=1, b=2)
        assert caught.value.server == "srv" and caught.value.tool == "add"
        if error is MCPConnectionError:
            assert "may have run and is not sent again" in str(caught.value)
        assert server.count("tools/call") == 1  # it reached the server; it is not re-sent
        assert add(a=2, b=3) == [{"type": "text", "text": "5"}]  # the next call works


@pytest.mark.parametrize(("action", "error", "message"), MALFORMED)
def test_a_malformed_list_answer_fails_typed(
    action: str, error: type[MCPError], message: str
) -> None:
    with FaultyMcp() as server:
        # A cut-off list is sent once more: script the fault twice so the retry fails too.
        server.script("tools/list", action, action)
        with pytest.raises(error, match=message):
            handler(agent_for(server.url))
        resent = error is MCPConnectionError
        assert server.count("tools/list") == (2 if resent else 1)


@pytest.mark.parametrize("action", ["cut", "drop", "sse-cut"])
def test_a_list_cut_off_once_is_sent_again(action: str) -> None:
    with FaultyMcp() as server:
        server.script("tools/list", action)
        agent = agent_for(server.url)
        handler(agent)
        assert names(agent) == ["add"]
        assert server.count("tools/list") == 2
        assert server.count("initialize") == 2  # the second on a new session


def test_a_good_event_stream_answer_passes_unchanged() -> None:
    with FaultyMcp() as server:
        server.script("tools/list", "sse")
        server.script("tools/call", "sse")
        agent = agent_for(server.url)
        assert handler(agent).get_function("add")(a=20, b=22)[0]["text"] == "42"
        assert names(agent) == ["add"]


def _killable(port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.mcp_server",
            "--port",
            str(port),
            "--announce",
            *list(extra),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _await_line(proc: subprocess.Popen[str], wanted: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"the server ended before {wanted!r}")


@pytest.mark.parametrize(
    "kind", [(), ("--stateless", "--json")], ids=["stateful-sse", "stateless-json"]
)
def test_a_server_killed_mid_call_fails_the_call_at_once(kind: tuple[str, ...]) -> None:
    port = free_port()
    proc = _killable(port, *kind)
    try:
        slow = handler(agent_for(f"http://127.0.0.1:{port}/mcp")).get_function("slow")
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                slow(seconds=PATIENT * 2)
            except MCPError as err:
                outcome.append(err)

        caller = threading.Thread(target=call)
        caller.start()
        _await_line(proc, "tools/call")  # the call is running on the server
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        caller.join(PATIENT)
        assert not caller.is_alive()
        (err,) = outcome
        assert isinstance(err, MCPConnectionError), repr(err)
        assert "may have run and is not sent again" in str(err)
    finally:
        proc.kill()
        proc.wait(10)
    with McpServer(port=port) as restarted:  # whoever listens there now never gets it
        handler(agent_for(restarted.url)).get_function("add")(a=1, b=1)
        assert [r.params["name"] for r in restarted.requests("tools/call")] == ["add"]


def test_a_call_whose_answer_is_lost_ran_once_and_is_not_sent_again() -> None:
    with FaultyMcp() as server:
        add = handler(agent_for(server.url)).get_function("add")
        server.script("tools/call", "drop")
        with pytest.raises(MCPConnectionError, match="may have run"):
            add(a=1, b=1)
        assert server.count("tools/call") == 1  # the server ran it; the answer was lost


# -- an outage does not spread to runs that call no tool -----------------------------------------
def test_an_outage_serves_the_last_good_list_until_its_stale_limit(
    mcp_clock: SessionClock, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = {"tools_ttl": 60, "tools_max_stale": 3600}
    with McpServer(port=port) as server:
        add = handler(agent_for(server.url, **settings)).get_function("add")
    with pytest.raises(MCPConnectionError):  # the server is down
        add(a=1, b=1)
    with caplog.at_level(logging.WARNING, logger="ai_agent_handler.tools"):
        # The session had to be reopened, so the list is fetched again: that fails, and the
        # last good list is served; within RELIST_SECONDS nobody tries again.
        agent = agent_for(server.url, **settings)
        handler(agent)
        handler(agent_for(server.url, **settings))
        mcp_clock.advance(61)  # tried again after RELIST_SECONDS, and past its ttl: still served
        handler(agent_for(server.url, **settings))
    assert names(agent) == ["add", "echo", "fail", "slow", "grow"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "ai_agent_handler.tools"]
    assert len(warnings) == 2
    assert "ConnectError" in warnings[0] and "serving its tool list from 0 s ago" in warnings[0]
    assert "serving its tool list from 61 s ago (for up to 3599 s more)" in warnings[1]

    with McpServer(port=port) as back:
        mcp_clock.advance(session.RELIST_SECONDS)
        handler(agent_for(back.url, **settings))  # tried again: listed
        assert back.count("tools/list") == 1
        handler(agent_for(back.url, **settings))  # fresh again
        assert back.count("tools/list") == 1

    mcp_clock.advance(61 + 3600)  # past the stale limit: the outage is the constructor's error
    with pytest.raises(MCPConnectionError):
        handler(agent_for(server.url, **settings))


def test_a_call_that_succeeds_lists_again_at_the_next_handler(mcp_clock: SessionClock) -> None:
    port = free_port()
    with McpServer(port=port) as server:
        handler(agent_for(server.url, tools_ttl=60))
    mcp_clock.advance(61)
    handler(agent_for(server.url, tools_ttl=60))  # down: the stale list, no retry for a while
    with McpServer(port=port) as back:
        add = handler(agent_for(back.url, tools_ttl=60)).get_function("add")
        assert back.count("tools/list") == 0
        assert add(a=1, b=1)[0]["text"] == "2"  # the server answers again
        before = back.count("tools/list")
        agent = agent_for(back.url, tools_ttl=60)
        handler(agent)
        assert back.count("tools/list") == before + 1


def test_warm_serves_the_stale_list_too(mcp_clock: SessionClock) -> None:
    port = free_port()
    with McpServer(port=port) as server:
        agent = agent_for(server.url, tools_ttl=60)
        warm(agent["mcp_servers"])
    mcp_clock.advance(61)
    warm(agent["mcp_servers"])  # down, but a last good list exists: no error


def shrinking_tools(mcp: FastMCP) -> None:
    build_tools(mcp)

    @mcp.tool()
    def shrink(name: str) -> str:
        """Removes a tool without telling the client."""
        mcp.remove_tool(name)
        return "removed"


def test_an_unknown_tool_error_result_lists_again_at_the_next_handler() -> None:
    with McpServer(tools=shrinking_tools) as server:
        h = handler(agent_for(server.url))
        h.get_function("shrink")(name="echo")
        with pytest.raises(MCPToolNotFound, match="Function echo not found in MCP tools"):
            h.get_function("echo")(text="x")
        lists = server.count("tools/list")
        fresh = agent_for(server.url)
        handler(fresh)
        assert server.count("tools/list") == lists + 1
        assert "echo" not in names(fresh)


# -- many tokens: sessions and lists stay bounded -------------------------------------------------
def test_distinct_tokens_keep_sessions_and_lists_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "MAX_SESSIONS", 4)
    monkeypatch.setattr(session, "MAX_LISTS", 8)
    with McpServer() as server:
        for i in range(30):
            h = handler(agent_for(server.url, bearer_token=f"tok-{i}"))
            h.get_function("add")(a=i, b=0)
        runner = session._loop()
        live = [c for c in runner.connections.values() if c.live is not None]
        assert len(live) <= 4
        assert len(runner.connections) <= 4
        assert len(session._lists) == 8
        deadline = time.monotonic() + PATIENT
        while server.count("DELETE") < 26 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.count("DELETE") >= 26  # each session beyond the bound was ended
        session.close()
        assert server.count("DELETE") == 30


def gated_tools(gate: threading.Event) -> Any:
    def tools(mcp: FastMCP) -> None:
        build_tools(mcp)

        @mcp.tool()
        async def wait_for_gate() -> str:
            """Answers once the test opens the gate."""
            await asyncio.to_thread(gate.wait, PATIENT)
            return "done"

    return tools


def test_the_idle_sweep_never_closes_a_session_with_a_call_in_flight(
    mcp_clock: SessionClock,
) -> None:
    gate = threading.Event()
    with McpServer(tools=gated_tools(gate)) as server:
        first = agent_for(server.url, bearer_token="a")
        waiting = handler(first).get_function("wait_for_gate")
        outcome: list[Any] = []
        caller = threading.Thread(target=lambda: outcome.append(waiting()))
        caller.start()
        deadline = time.monotonic() + PATIENT
        while server.count("tools/call") < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        mcp_clock.advance(session.IDLE_SECONDS + 1)  # the in-flight session looks idle
        handler(agent_for(server.url, bearer_token="b")).get_function("add")(a=1, b=1)
        gate.set()
        caller.join(PATIENT)
        assert outcome == [[{"type": "text", "text": "done"}]]
        assert server.count("DELETE") == 0
        mcp_clock.advance(
            session.IDLE_SECONDS + 1
        )  # now both are idle: opening a third closes them
        handler(agent_for(server.url, bearer_token="c")).get_function("add")(a=1, b=1)
        deadline = time.monotonic() + PATIENT
        while server.count("DELETE") < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.count("DELETE") == 2


# -- hostile schemas ------------------------------------------------------------------------------
def schema_bomb(levels: int) -> dict[str, Any]:
    defs: dict[str, Any] = {
        f"D{i}": {
            "type": "object",
            "properties": {f"p{j}": {"$ref": f"#/$defs/D{i + 1}"} for j in range(4)},
        }
        for i in range(levels)
    }
    defs[f"D{levels}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/D0"}}}


def test_a_schema_bomb_leaves_that_tool_out_of_a_gemini_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bomb = {"name": "bomb", "description": "", "inputSchema": schema_bomb(30)}
    with FaultyMcp(tools=[bomb, ADD_TOOL]) as server:
        agent = agent_for(server.url, llm_name="gemini")
        with caplog.at_level(logging.WARNING, logger="ai_agent_handler.tools"):
            h = handler(agent)
        assert names(agent) == ["add"]
        assert f"past {MAX_SCHEMA_NODES} objects" in caplog.text and "'bomb'" in caplog.text
        with pytest.raises(MCPToolNotFound):
            h.get_function("bomb")
        other = agent_for(server.url, llm_name="claude")  # other models take it as it is
        handler(other)
        assert names(other) == ["bomb", "add"]


# -- typos are refused before any request ---------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"call_timout": 5}, "unknown setting 'call_timout' (did you mean 'call_timeout'?)"),
        ({"tools_tl": 5}, "did you mean 'tools_ttl'"),
        ({"bearer": "x"}, "did you mean 'bearer_token'"),
        ({"zzz": 1}, "unknown setting 'zzz' (the keys: allow_tools, base_url"),
    ],
)
def test_an_unknown_setting_is_refused_before_any_request(
    setting: dict[str, Any], message: str
) -> None:
    with FaultyMcp() as server:
        with pytest.raises(MCPConfigError, match=re.escape(message)):
            handler(agent_for(server.url, **setting))
        assert server.received == []


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            {"allow_tools": ["ad"]},
            "'allow_tools' names 'ad', which the server does not offer "
            r"\(did you mean 'add'\?\)",
        ),
        ({"allow_tools": ["add", "eho"]}, "'eho'.*did you mean 'echo'"),
        ({"block_tools": ["fial"]}, "'block_tools' names 'fial'.*did you mean 'fail'"),
    ],
)
def test_allow_and_block_lists_naming_no_tool_are_refused(
    setting: dict[str, Any], message: str
) -> None:
    with McpServer() as server:
        agent = agent_for(server.url, **setting)
        with pytest.raises(MCPConfigError, match=message):
            handler(agent)
        assert agent["configuration"] == {}


# -- fork() and close() ---------------------------------------------------------------------------
def _list_in_child(url: str, out: Any) -> None:
    try:
        agent = agent_for(url)
        handler(agent)
        out.put(names(agent))
    except MCPError as err:  # pragma: no cover - reported to the parent
        out.put(repr(err))


def test_a_child_forked_while_the_list_cache_is_locked_can_store_lists() -> None:
    with McpServer() as server:
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        with session._lists.lock:  # as if the parent's loop thread were storing a list
            child = context.Process(target=_list_in_child, args=(server.url, out))
            child.start()
        child.join(PATIENT)
        assert child.exitcode == 0
        assert out.get(timeout=1)[0] == "add"


def test_a_call_cut_off_by_close_raises_an_mcp_error() -> None:
    with McpServer() as server:
        slow = handler(agent_for(server.url)).get_function("slow")
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                slow(seconds=PATIENT * 2)
            except BaseException as err:  # anything at all, to see what it was
                outcome.append(err)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + PATIENT
        while server.count("tools/call") < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        session.close(timeout=0.5)
        caller.join(PATIENT)
        (err,) = outcome
        assert isinstance(err, MCPConnectionError), repr(err)
        assert "close()" in str(err) and "may have run" in str(err)


def test_a_call_handed_to_a_loop_that_just_stopped_runs_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with McpServer() as server:
        add = handler(agent_for(server.url)).get_function("add")
        stopped = session._loop()
        session.close()
        real = session._loop
        handed = iter([stopped])
        monkeypatch.setattr(session, "_loop", lambda: next(handed, None) or real())
        assert add(a=2, b=2)[0]["text"] == "4"


# -- noise -------------------------------------------------------------------------------------
def test_restarts_and_exits_log_no_warnings_from_the_sdk(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), McpServer() as server:
        add = handler(agent_for(server.url)).get_function("add")
        add(a=1, b=1)
        server.restart()
        add(a=1, b=1)
        server.stop()
        session.close()  # the session's server is gone
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_interpreter_exit_with_the_server_gone_prints_nothing() -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from ai_agent_handler import AIAgentEventHandler\n"
        "from tests.support.mcp_server import McpServer\n"
        "server = McpServer().start()\n"
        "agent = {'llm': {'llm_name': 'gpt'}, 'configuration': {},\n"
        "         'mcp_servers': [{'name': 's', 'setting': {'base_url': server.url}}]}\n"
        "AIAgentEventHandler(logging.getLogger('x'), agent).get_function('add')(a=1, b=1)\n"
        "server.stop()\n"
        "print('done')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert result.stderr == ""


# -- travrse agents: tools through the agent's MCP proxy ---------------------------------------
def test_travrse_tools_carry_the_proxy_config_as_upstream_gives_it() -> None:
    with McpServer() as server:
        agent = agent_for(server.url, llm_name="travrse", allow_tools=["add"])
        proxy = {"base_url": "https://proxy.example/{endpoint_id}/mcp", "headers": {"X-K": "v"}}
        agent["configuration"]["mcp_proxy"] = proxy
        handler(agent)
        (tool,) = agent["configuration"]["tools"]
        assert tool["tool_type"] == "external"
        assert tool["config"] == {
            "url": "https://proxy.example/{endpoint_id}/mcp/add",
            "method": "POST",
            "headers": {"X-K": "v"},
        }
        assert tool["config"]["headers"] is not proxy["headers"]
        plain = agent_for(server.url, llm_name="travrse", allow_tools=["add"])
        handler(plain)  # without a proxy the tools come as they are listed
        assert "config" not in plain["configuration"]["tools"][0]


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("https://p", "must be a dict"),
        ({"headers": {}}, r"\['base_url'\] must be a non-empty string"),
        ({"base_url": "https://p", "headers": []}, r"\['headers'\] must be a dict"),
    ],
)
def test_a_bad_travrse_proxy_is_refused_before_any_request(proxy: Any, message: str) -> None:
    with FaultyMcp() as server:
        agent = agent_for(server.url, llm_name="travrse")
        agent["configuration"]["mcp_proxy"] = proxy
        with pytest.raises(MCPConfigError, match=message):
            handler(agent)
        assert server.received == []
