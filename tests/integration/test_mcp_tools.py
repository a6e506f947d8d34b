"""MCP tools against real servers of the official SDK on 127.0.0.1, counting their requests.

Every server here is a FastMCP server (the SDK's 1.x line) on a free port: stateful with
SSE answers, stateful with JSON answers, and stateless with JSON answers (the kind
upstream's own server is). One server of each kind serves the whole module; before each
test it is running, its request log is empty, and the client has no session and no cached
tool list, as in a fresh process. A test that changes a server's tools or timing starts
servers of its own (``own_server``). The boundary is the HTTP socket; nothing in the
client is replaced.

No test waits for time to pass: the session module's clock is moved (``mcp_clock``), and a
request the server must have received is waited for as it arrives (:func:`arrival`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mcp.server.fastmcp import FastMCP

from ai_agent_handler import AIAgentEventHandler, MCPError, MCPToolError
from ai_agent_handler.exceptions import (
    MCPConfigError,
    MCPConnectionError,
    MCPProtocolError,
    MCPTimeoutError,
    MCPToolNotFound,
)
from ai_agent_handler.tools import session, warm
from tests.support.aws import SessionClock
from tests.support.mcp_server import McpServer, Received, free_port

LOGGER = logging.getLogger("test-mcp")
KINDS: dict[str, dict[str, Any]] = {
    "stateful-sse": {},
    "stateful-json": {"json_response": True},
    "stateless-json": {"stateless": True, "json_response": True},
}
TOOL_NAMES = ["add", "echo", "fail", "slow", "grow"]
PATIENT = 20.0  # seconds: far longer than any awaited request takes to arrive


class Arrivals(list[Received]):
    """A server's request log that also wakes a test waiting for a method to arrive."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[str, threading.Event]] = []

    def append(self, item: Received) -> None:
        super().append(item)
        for method, event in list(self._waiting):
            if item.method == method:
                event.set()

    def clear(self) -> None:
        super().clear()
        self._waiting.clear()

    def arrival(self, method: str) -> threading.Event:
        event = threading.Event()
        self._waiting.append((method, event))  # first, so no arrival falls between
        if any(r.method == method for r in list(self)):
            event.set()
        return event


def logged(server: McpServer) -> McpServer:
    """``server`` whose request log can be waited on (see :func:`arrival`)."""
    server.received = Arrivals()
    return server


def arrival(server: McpServer, method: str) -> threading.Event:
    """Set once ``method`` is in the server's log (now or later, until its counts reset)."""
    received = server.received
    assert isinstance(received, Arrivals)
    return received.arrival(method)


@pytest.fixture(autouse=True)
def _sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No cached tool list before the test (the servers' URLs are the same for every
    test); every session closed after it."""
    monkeypatch.setattr(session, "_lists", session._Lists())
    yield
    session.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, McpServer]]:
    """One running server of each kind for the module."""
    started = {kind: logged(McpServer(**settings)).start() for kind, settings in KINDS.items()}
    yield started
    session.close()  # no open connection for a server to wait for while it stops
    for server in started.values():
        server.stop()


def ready(server: McpServer) -> McpServer:
    """The server running (a test that stopped it and failed left it stopped), its log empty."""
    if server._server is None:
        server.start()
    server.reset_counts()
    return server


@pytest.fixture(params=list(KINDS))
def server(request: pytest.FixtureRequest, servers: dict[str, McpServer]) -> McpServer:
    return ready(servers[request.param])


@pytest.fixture
def sse_server(servers: dict[str, McpServer]) -> McpServer:
    """The stateful server with SSE answers (what ``McpServer()`` starts)."""
    return ready(servers["stateful-sse"])


@pytest.fixture
def stateless_server(servers: dict[str, McpServer]) -> McpServer:
    return ready(servers["stateless-json"])


@pytest.fixture
def own_server() -> Iterator[Callable[..., McpServer]]:
    """Starts a server for this test only (``McpServer``'s arguments); each is stopped after
    the client's sessions are closed, so no stop waits for an open connection."""
    started: list[McpServer] = []

    def start(**settings: Any) -> McpServer:
        server = logged(McpServer(**settings)).start()
        started.append(server)
        return server

    yield start
    session.close()
    for server in started:
        server.stop()


def agent_for(*servers: McpServer | str, llm_name: str = "gpt", **settings: Any) -> dict[str, Any]:
    """An agent as the engine builds it, one entry per server (or URL)."""
    return {
        "llm": {"llm_name": llm_name},
        "configuration": {},
        "mcp_servers": [
            {
                "name": f"srv{i}",
                "mcp_server_uuid": f"uuid-{i}",
                "setting": {
                    "base_url": getattr(s, "url", s),
                    "headers": {"X-Tenant": "t1"},
                    **settings,
                },
            }
            for i, s in enumerate(servers)
        ],
    }


def handler(agent: dict[str, Any]) -> AIAgentEventHandler:
    return AIAgentEventHandler(LOGGER, agent)


# -- setup -------------------------------------------------------------------------------------
NAME_KEY: dict[str, Callable[[dict[str, Any]], str]] = {
    "gpt": lambda t: t["name"],
    "openai": lambda t: t["name"],
    "claude": lambda t: t["name"],
    "gemini": lambda t: t["name"],
    "ollama": lambda t: t["function"]["name"],
    "travrse": lambda t: t["name"],
}


@pytest.mark.parametrize("llm_name", list(NAME_KEY))
def test_the_constructor_appends_every_tool_in_the_models_format(
    server: McpServer, llm_name: str
) -> None:
    agent = agent_for(server, llm_name=llm_name)
    given = {"type": "function", "name": "already_there"}
    agent["configuration"]["tools"] = [given]
    handler(agent)
    tools = agent["configuration"]["tools"]
    assert tools[0] is given
    assert [NAME_KEY[llm_name](t) for t in tools[1:]] == TOOL_NAMES
    add = tools[1]
    if llm_name == "claude":
        assert add["input_schema"]["required"] == ["a", "b"]
    elif llm_name == "gemini":
        assert add["parameters"]["properties"]["a"] == {"type": "integer"}
        assert "additionalProperties" not in str(tools) and "$schema" not in str(tools)
    elif llm_name == "travrse":
        assert add["tool_type"] == "external" and "parameters_schema" in add
    assert server.count("tools/list") == 1


def test_native_setup_sends_nothing_and_describes_each_server(server: McpServer) -> None:
    agent = agent_for(server)
    agent["mcp_servers"][0]["setting"]["bearer_token"] = "secret"
    agent["configuration"]["mcp_llm_native"] = True
    handler(agent)
    assert "mcp_llm_native" not in agent["configuration"]
    assert agent["configuration"]["tools"] == [
        {
            "type": "mcp",
            "server_label": "srv0",
            "server_url": server.url,
            "headers": {"X-Tenant": "t1"},
            "require_approval": "never",
        }
    ]
    given_headers = agent["mcp_servers"][0]["setting"]["headers"]
    assert agent["configuration"]["tools"][0]["headers"] is not given_headers
    assert server.received == []


def test_get_function_after_native_setup_lists_on_first_use(server: McpServer) -> None:
    agent = agent_for(server)
    agent["configuration"]["mcp_llm_native"] = True
    h = handler(agent)
    assert h.get_function("add")(a=2, b=2) == [{"type": "text", "text": "4"}]
    assert server.count("tools/list") == 1


def test_twenty_handlers_list_once_and_fifty_calls_initialize_once(server: McpServer) -> None:
    handlers: list[AIAgentEventHandler] = []
    threads = [
        threading.Thread(target=lambda: handlers.append(handler(agent_for(server))))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(handlers) == 20
    assert server.count("tools/list") == 1
    add = handlers[0].get_function("add")
    results = [add(a=i, b=1) for i in range(50)]
    assert results[-1] == [{"type": "text", "text": "50"}]
    assert results[-1].structured_content == {"result": 50}
    assert server.count("tools/call") == 50
    assert server.count("initialize") == 1
    assert server.count("tools/list") == 1  # the SDK's hidden list is not sent again


def test_calls_from_many_threads_and_from_inside_an_event_loop(server: McpServer) -> None:
    add = handler(agent_for(server)).get_function("add")
    answers: dict[int, Any] = {}

    def work(i: int) -> None:
        answers[i] = add(a=i, b=i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: a[0]["text"] for i, a in answers.items()} == {i: str(2 * i) for i in range(16)}

    async def provider_code_in_a_loop() -> Any:
        return add(a=20, b=22)  # synchronous provider code called from async code

    assert asyncio.run(provider_code_in_a_loop()) == [{"type": "text", "text": "42"}]


def test_another_tenants_headers_get_their_own_session_and_list(sse_server: McpServer) -> None:
    server = sse_server
    first = agent_for(server)
    second = agent_for(server)
    second["mcp_servers"][0]["setting"]["headers"] = {"X-Tenant": "t2"}
    handler(first).get_function("add")(a=1, b=1)
    handler(second).get_function("add")(a=1, b=1)
    handler(agent_for(server)).get_function("add")(a=1, b=1)
    assert server.count("initialize") == 2
    assert server.count("tools/list") == 2
    tenants = [r.headers.get("x-tenant") for r in server.requests("tools/call")]
    assert tenants == ["t1", "t2", "t1"]


def test_bearer_token_and_headers_arrive_on_every_request(server: McpServer) -> None:
    agent = agent_for(server, bearer_token="tok-1")
    before = copy.deepcopy(agent["mcp_servers"])
    handler(agent).get_function("echo")(text="hi")
    assert server.received
    for received in server.received:
        assert received.headers["authorization"] == "Bearer tok-1"
        assert received.headers["x-tenant"] == "t1"
    assert agent["mcp_servers"] == before  # the agent's server dicts are never changed


def test_arguments_reach_the_tool_exactly_as_the_model_sent_them(server: McpServer) -> None:
    echo = handler(agent_for(server)).get_function("echo")
    assert echo(text="a", someValue="B") == [{"type": "text", "text": "a|B"}]
    (call,) = server.requests("tools/call")
    assert call.params["arguments"] == {"text": "a", "someValue": "B"}


# -- errors ------------------------------------------------------------------------------------
def test_an_error_result_raises_mcp_tool_error_with_its_content(server: McpServer) -> None:
    fail = handler(agent_for(server)).get_function("fail")
    with pytest.raises(MCPToolError, match="boom") as caught:
        fail(message="boom")
    assert caught.value.tool == "fail" and caught.value.server == "srv0"
    assert caught.value.content[0]["type"] == "text"


def test_an_unknown_name_raises_upstreams_message(server: McpServer) -> None:
    h = handler(agent_for(server))
    with pytest.raises(MCPToolNotFound, match="Function nope not found in MCP tools"):
        h.get_function("nope")
    with pytest.raises(Exception, match="Function add not found in MCP tools"):
        AIAgentEventHandler(LOGGER, {"configuration": {}}).get_function("add")


def only_add(mcp: FastMCP) -> None:
    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b


def test_a_tool_the_server_dropped_is_not_found_and_the_list_is_fetched_again(
    own_server: Callable[..., McpServer],
) -> None:
    server = own_server()
    echo = handler(agent_for(server)).get_function("echo")
    server.tools = only_add
    server.restart()
    with pytest.raises(MCPToolNotFound, match="Function echo not found in MCP tools"):
        echo(text="x")
    fresh = agent_for(server)
    handler(fresh)
    assert [t["name"] for t in fresh["configuration"]["tools"]] == ["add"]


def test_a_slow_tool_times_out_is_not_sent_again_and_the_session_stays_usable(
    server: McpServer,
) -> None:
    h = handler(agent_for(server, call_timeout=0.3))
    started = time.monotonic()
    with pytest.raises(MCPTimeoutError, match="may have run"):
        h.get_function("slow")(seconds=3)
    assert time.monotonic() - started < 2
    assert server.count("tools/call") == 1
    assert h.get_function("add")(a=1, b=2) == [{"type": "text", "text": "3"}]


def test_a_server_that_is_down_fails_fast_and_setup_changes_nothing() -> None:
    port = free_port()
    agent = {
        "llm": {"llm_name": "claude"},
        "configuration": {"tools": []},
        "mcp_servers": [{"name": "down", "setting": {"base_url": f"http://127.0.0.1:{port}/mcp"}}],
    }
    before = copy.deepcopy(agent)
    started = time.monotonic()
    with pytest.raises(MCPConnectionError, match=r"'down'.*ConnectError"):
        handler(agent)
    assert time.monotonic() - started < 5
    assert agent == before


def test_a_slow_tool_list_times_out_within_the_list_timeout(
    own_server: Callable[..., McpServer],
) -> None:
    server = own_server(list_delay=3)
    started = time.monotonic()
    with pytest.raises(MCPTimeoutError, match=r"listing tools took longer than 0\.3 s"):
        handler(agent_for(server, list_timeout=0.3))
    assert time.monotonic() - started < 2


def test_a_url_without_an_mcp_endpoint_says_so(sse_server: McpServer) -> None:
    agent = agent_for(sse_server.url.replace("/mcp", "/other"))
    with pytest.raises(MCPProtocolError, match=r"HTTP 404, no MCP endpoint .*check base_url"):
        handler(agent)


def test_a_server_that_never_answers_times_out_within_the_connect_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        agent = agent_for(f"http://127.0.0.1:{listener.getsockname()[1]}/mcp", connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(MCPTimeoutError):
            handler(agent)
        assert time.monotonic() - started < 3


def test_a_restarted_server_answers_the_next_call(server: McpServer) -> None:
    add = handler(agent_for(server)).get_function("add")
    assert add(a=1, b=1)[0]["text"] == "2"
    server.restart()
    assert add(a=2, b=2)[0]["text"] == "4"
    server.stop()
    server.reset_counts()
    with pytest.raises(MCPConnectionError):
        add(a=3, b=3)
    server.start()
    assert add(a=4, b=4)[0]["text"] == "8"
    assert [r.params["arguments"] for r in server.requests("tools/call")] == [{"a": 4, "b": 4}]


def test_a_call_cut_off_by_a_server_stop_fails_and_is_never_sent_again(server: McpServer) -> None:
    h = handler(agent_for(server, call_timeout=1.5))
    slow = h.get_function("slow")
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            slow(seconds=3)
        except MCPError as err:
            outcome.append(err)

    calling = arrival(server, "tools/call")
    caller = threading.Thread(target=call)
    caller.start()
    assert calling.wait(PATIENT)
    server.stop()  # the call is running on it (uvicorn lets it run while it shuts down)
    caller.join(10)
    server.reset_counts()
    server.start()
    # The answer's event stream ended before the answer (a connection error), or the server
    # answered its shutdown's HTTP 500 (a protocol error): prompt, never the timeout. It may
    # have run, so it is not sent again.
    (err,) = outcome
    assert isinstance(err, (MCPConnectionError, MCPProtocolError)), repr(err)
    assert server.count("tools/call") == 0
    # The client's next call reaches the restarted server, and nothing of the cut-off call
    # went out with it.
    assert h.get_function("add")(a=1, b=1)[0]["text"] == "2"
    assert {r.params["name"] for r in server.requests("tools/call")} == {"add"}


def test_a_session_reopened_after_a_restart_fetches_the_list_again(
    own_server: Callable[..., McpServer],
) -> None:
    server = own_server()
    add = handler(agent_for(server)).get_function("add")
    server.tools = only_add
    server.restart()
    assert add(a=1, b=1)[0]["text"] == "2"  # on a new session
    fresh = agent_for(server)
    handler(fresh)
    assert [t["name"] for t in fresh["configuration"]["tools"]] == ["add"]


def test_calls_in_flight_when_a_server_restarts_are_sent_once_more_on_one_new_session(
    sse_server: McpServer,
) -> None:
    server = sse_server
    add = handler(agent_for(server)).get_function("add")
    add(a=0, b=0)
    server.restart()
    server.reset_counts()
    answers: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: answers.append(add(a=i, b=0)[0]["text"]))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers, key=int) == [str(i) for i in range(8)]
    assert server.count("initialize") == 1  # one new session for all of them


def test_idle_sessions_close_when_another_opens(
    sse_server: McpServer, mcp_clock: SessionClock
) -> None:
    server = sse_server
    first = agent_for(server)
    second = agent_for(server)
    second["mcp_servers"][0]["setting"]["headers"] = {"X-Tenant": "t2"}
    handler(first).get_function("add")(a=1, b=1)
    mcp_clock.advance(session.IDLE_SECONDS + 1)
    ended_one = arrival(server, "DELETE")
    handler(second).get_function("add")(a=1, b=1)  # opens t2's session: t1's is idle
    assert ended_one.wait(PATIENT)
    (ended,) = server.requests("DELETE")
    assert ended.headers["x-tenant"] == "t1"
    assert handler(agent_for(server)).get_function("add")(a=2, b=2)[0]["text"] == "4"
    assert server.count("initialize") == 3  # t1's next call opened a new session


def test_the_list_changed_notification_drops_the_cached_list(
    own_server: Callable[..., McpServer],
) -> None:
    server = own_server()  # stateful with SSE answers: notifications reach the client
    h = handler(agent_for(server))
    assert h.get_function("grow")(name="shiny") == [{"type": "text", "text": "added shiny"}]
    fresh = agent_for(server)
    handler(fresh)
    assert "shiny" in [t["name"] for t in fresh["configuration"]["tools"]]
    assert server.count("tools/list") == 2


def test_the_tool_list_expires_after_its_ttl(
    sse_server: McpServer, mcp_clock: SessionClock
) -> None:
    server = sse_server
    handler(agent_for(server, tools_ttl=0.2))
    handler(agent_for(server, tools_ttl=0.2))
    mcp_clock.advance(0.3)
    handler(agent_for(server, tools_ttl=0.2))
    assert server.count("tools/list") == 2


# -- several servers ---------------------------------------------------------------------------
def test_a_name_offered_by_two_servers_is_refused_unless_prefixed(
    sse_server: McpServer, stateless_server: McpServer
) -> None:
    one, two = sse_server, stateless_server
    agent = agent_for(one, two)
    with pytest.raises(MCPConfigError, match="'add' is offered by servers 'srv0' and 'srv1'"):
        handler(agent)
    assert agent["configuration"] == {}
    agent["mcp_servers"][1]["setting"]["tool_prefix"] = "b_"
    h = handler(agent)
    names = [t["name"] for t in agent["configuration"]["tools"]]
    assert names == TOOL_NAMES + [f"b_{n}" for n in TOOL_NAMES]
    assert h.get_function("b_add")(a=1, b=2)[0]["text"] == "3"
    assert two.count("tools/call") == 1 and one.count("tools/call") == 0
    assert two.requests("tools/call")[0].params["name"] == "add"


@pytest.mark.parametrize(
    ("setting", "offered"),
    [
        ({"allow_tools": ["add", "echo"]}, ["add", "echo"]),
        ({"block_tools": ["fail", "slow", "grow"]}, ["add", "echo"]),
        ({"allow_tools": ["add", "fail"], "block_tools": ["fail"]}, ["add"]),
        ({"allow_tools": []}, []),
    ],
)
def test_allow_and_block_lists_choose_the_tools_offered(
    sse_server: McpServer, setting: dict[str, Any], offered: list[str]
) -> None:
    agent = agent_for(sse_server, **setting)
    h = handler(agent)
    assert [t["name"] for t in agent["configuration"]["tools"]] == offered
    with pytest.raises(MCPToolNotFound):
        h.get_function("slow")


def test_warm_lists_ahead_so_handlers_make_no_request(
    own_server: Callable[..., McpServer],
) -> None:
    a, b, c = own_server(), own_server(), own_server()
    agent = agent_for(a, b, c, tool_prefix="")
    for i, entry in enumerate(agent["mcp_servers"]):
        entry["setting"]["tool_prefix"] = f"s{i}_"
    warm(agent["mcp_servers"])
    counts = [s.count("tools/list") for s in (a, b, c)]
    handler(copy.deepcopy(agent))
    assert [s.count("tools/list") for s in (a, b, c)] == counts == [1, 1, 1]


def _call_in_child(url: str, out: Any) -> None:
    try:
        out.put(handler(agent_for(url)).get_function("add")(a=5, b=5)[0]["text"])
    except MCPError as err:  # pragma: no cover - reported to the parent
        out.put(repr(err))


def test_a_forked_child_makes_its_own_session(sse_server: McpServer) -> None:
    server = sse_server
    handler(agent_for(server)).get_function("add")(a=1, b=1)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_call_in_child, args=(server.url, out))
    child.start()
    child.join(30)
    assert out.get(timeout=1) == "10"
    assert server.count("initialize") == 2
    # The child's handler was set up from the inherited list; the one more tools/list is
    # the SDK's own, sent before the first call of every new session.
    assert server.count("tools/list") == 2
