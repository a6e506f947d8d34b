"""MCP tool calls: this library vs the raw SDK vs a fresh session per call (upstream's way).

The server is a FastMCP server (the official SDK, 1.x line) in its own process on
127.0.0.1, stateful with SSE answers, the SDK's default. Three ways to make the same call:

- this library: ``handler.get_function("add")(a=.., b=..)`` from synchronous code, through
  the process's background loop and its persistent session;
- the raw SDK over one persistent session, awaited directly in an event loop (the floor);
- upstream's way: ``asyncio.run`` of a fresh session per call (connect, initialize, the
  SDK's own ``tools/list`` before the first call, call, close).

Handler construction is timed with three servers whose lists are cached, counting the
requests the servers receive meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .common import ROOT, Row, Section, Series

TARGET_VS_RAW = 1.3
TARGET_VS_FRESH = 5.0
TARGET_CONSTRUCT_MS = 1.0


@contextmanager
def server_process(*, stateless: bool = False) -> Iterator[str]:
    from tests.support.mcp_server import free_port

    port = free_port()
    extra = ["--stateless", "--json"] if stateless else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mcp_server", "--port", str(port), *extra],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _agent(*urls: str, llm_name: str = "gpt") -> dict[str, Any]:
    return {
        "llm": {"llm_name": llm_name},
        "configuration": {},
        "mcp_servers": [
            {"name": f"s{i}", "setting": {"base_url": url, "tool_prefix": f"s{i}_"}}
            for i, url in enumerate(urls)
        ],
    }


def _ours(url: str, calls: int) -> float:
    from ai_agent_handler import AIAgentEventHandler

    add = AIAgentEventHandler(logging.getLogger("bench"), _agent(url)).get_function("s0_add")
    add(a=0, b=0)  # connected and listed: measure calls only
    start = time.perf_counter()
    for i in range(calls):
        add(a=i, b=1)
    return (time.perf_counter() - start) / calls


def _raw(url: str, calls: int) -> float:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> float:
        async with (
            streamable_http_client(url) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.call_tool("add", {"a": 0, "b": 0})
            start = time.perf_counter()
            for i in range(calls):
                await session.call_tool("add", {"a": i, "b": 1})
            return (time.perf_counter() - start) / calls

    return asyncio.run(main())


def _fresh(url: str, calls: int) -> float:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def one(i: int) -> None:
        async with (
            streamable_http_client(url) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.call_tool("add", {"a": i, "b": 1})

    start = time.perf_counter()
    for i in range(calls):
        asyncio.run(one(i))
    return (time.perf_counter() - start) / calls


def _construction(smoke: bool) -> tuple[Series, int]:
    from ai_agent_handler import AIAgentEventHandler
    from ai_agent_handler.tools import warm
    from tests.support.mcp_server import McpServer

    with McpServer() as a, McpServer() as b, McpServer() as c:
        servers = (a, b, c)
        warm(_agent(a.url, b.url, c.url)["mcp_servers"])
        before = sum(len(s.received) for s in servers)
        series = Series()
        logger = logging.getLogger("bench")
        for _ in range(3 if smoke else 7):
            agents = [_agent(a.url, b.url, c.url) for _ in range(200)]
            start = time.perf_counter()
            for agent in agents:
                AIAgentEventHandler(logger, agent)
            series.add((time.perf_counter() - start) / len(agents) * 1e3)
        requests = sum(len(s.received) for s in servers) - before
    return series, requests


def run(smoke: bool) -> Section:
    calls = 20 if smoke else 200
    rounds = 1 if smoke else 5
    fresh_calls = 5 if smoke else 40
    section = Section(
        "MCP tool calls: persistent sessions vs a fresh session per call",
        f"{calls} calls of `add` per run ({rounds} runs, alternating), {fresh_calls} per run for"
        " upstream's way; a FastMCP server (stateful, SSE answers) in its own process on"
        " 127.0.0.1. The floor is the raw SDK awaiting calls on one persistent session in its"
        " own event loop; upstream's way is `asyncio.run` of a fresh session per call.",
    )
    ours, raw, fresh = Series(), Series(), Series()
    with server_process() as url:
        for _ in range(rounds):
            ours.add(_ours(url, calls) * 1e3)
            raw.add(_raw(url, calls) * 1e3)
            fresh.add(_fresh(url, fresh_calls) * 1e3)
    from ai_agent_handler.tools import session

    session.close()
    vs_raw = ours.median / raw.median
    vs_fresh = fresh.median / ours.median
    section.rows.append(
        Row(
            "per call via get_function vs the raw SDK, persistent session",
            f"{ours.median:.2f} ms ({ours.spread('{:.2f}')})",
            f"{raw.median:.2f} ms ({raw.spread('{:.2f}')})",
            f"{vs_raw:.2f}x",
            f"<= {TARGET_VS_RAW}x",
            vs_raw <= TARGET_VS_RAW,
        )
    )
    section.rows.append(
        Row(
            "per call via get_function vs a fresh session per call (upstream)",
            f"{ours.median:.2f} ms",
            f"{fresh.median:.2f} ms ({fresh.spread('{:.2f}')})",
            f"{vs_fresh:.1f}x faster",
            f">= {TARGET_VS_FRESH:.0f}x faster",
            vs_fresh >= TARGET_VS_FRESH,
        )
    )
    construct, requests = _construction(smoke)
    section.rows.append(
        Row(
            "handler construction, 3 servers, warm cache",
            f"{construct.median:.3f} ms, {requests} requests ({construct.spread('{:.3f}')})",
            "-",
            "-",
            f"0 requests, < {TARGET_CONSTRUCT_MS:.0f} ms",
            requests == 0 and construct.median < TARGET_CONSTRUCT_MS,
        )
    )
    section.notes.append(
        "Construction with a warm cache parses the agent's server entries, finds each list"
        " in the process's cache and appends a fresh copy of the exported tools (a"
        " `json.loads` of the exported form, memoised per list, model format and filters)."
    )
    return section
