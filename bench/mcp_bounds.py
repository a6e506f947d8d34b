"""MCP tools under hostile servers and many tenants: how fast failures come, what stays bounded.

- A Gemini agent's schema bomb (definitions that each refer to the next one four times) is
  refused within the node budget; the anchor is the same conversion of a schema as large as
  the budget allows (the ratio: the refusal's cost against the budget's, per object).
- A malformed answer (each of :class:`tests.support.mcp_faults.FaultyMcp`'s faults) fails
  its call at once, with a 30 s ``call_timeout``; the anchor is a good call to the same
  server on an open session.
- 10,000 handlers, one bearer token each, against a FastMCP server in its own process: the
  process's resident memory and open descriptors after each 1,000, against the first 1,000.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import statistics
import time
from typing import Any

from .common import Row, Section, Series
from .mcp_tools import server_process

TARGET_BOMB_MS = 50.0
TARGET_MALFORMED_MS = 1000.0
TARGET_GROWTH = 1.10  # memory and descriptors after 10,000 tokens vs after 1,000


def _bomb(levels: int, refs: int) -> dict[str, Any]:
    defs: dict[str, Any] = {
        f"D{i}": {
            "type": "object",
            "properties": {f"p{j}": {"$ref": f"#/$defs/D{i + 1}"} for j in range(refs)},
        }
        for i in range(levels)
    }
    defs[f"D{levels}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "$ref": "#/$defs/D0"}


def _schema_rows(smoke: bool) -> list[Row]:
    from ai_agent_handler.exceptions import MCPProtocolError
    from ai_agent_handler.tools.formats import MAX_SCHEMA_NODES, gemini_schema

    bomb = _bomb(30, 4)  # 4**30 objects unbounded
    largest = _bomb(6, 3)  # 3**6 leaves: 1,093 objects, within the budget
    refused, accepted = Series(), Series()
    for _ in range(5 if smoke else 30):
        start = time.perf_counter()
        with contextlib.suppress(MCPProtocolError):
            gemini_schema(bomb)
        refused.add((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        gemini_schema(largest)
        accepted.add((time.perf_counter() - start) * 1e3)
    per_node = accepted.median / 1093
    return [
        Row(
            f"a Gemini schema bomb (30 levels x 4 refs) refused at {MAX_SCHEMA_NODES} objects",
            f"{refused.median:.1f} ms ({refused.spread('{:.1f}')})",
            f"{per_node * 1e3:.1f} us per object accepted",
            f"{refused.median / (per_node * MAX_SCHEMA_NODES):.2f}x the budget's cost",
            f"< {TARGET_BOMB_MS:.0f} ms",
            refused.median < TARGET_BOMB_MS,
        )
    ]


def _malformed_rows(smoke: bool) -> list[Row]:
    from ai_agent_handler import AIAgentEventHandler, MCPError
    from ai_agent_handler.tools import session
    from tests.support.mcp_faults import FaultyMcp

    actions = ["not-json", "html", "wrong-id", "deep", "500", "cut", "drop", "sse-cut"]
    actions.append("sse-garbage")
    rounds = 2 if smoke else 10
    failing: dict[str, Series] = {a: Series() for a in actions}
    good = Series()
    with FaultyMcp() as server:
        agent = {
            "llm": {"llm_name": "gpt"},
            "configuration": {},
            "mcp_servers": [
                {"name": "faulty", "setting": {"base_url": server.url, "call_timeout": 30}}
            ],
        }
        add = AIAgentEventHandler(logging.getLogger("bench"), agent).get_function("add")
        add(a=0, b=0)
        for _ in range(rounds):
            for action in actions:
                server.script("tools/call", action)
                start = time.perf_counter()
                with contextlib.suppress(MCPError):
                    add(a=1, b=1)
                failing[action].add((time.perf_counter() - start) * 1e3)
                add(a=1, b=1)  # a session cut off is reopened here, outside the anchor
                start = time.perf_counter()
                add(a=1, b=1)
                good.add((time.perf_counter() - start) * 1e3)
    session.close()
    worst_action = max(actions, key=lambda a: failing[a].median)
    worst = failing[worst_action].median
    return [
        Row(
            f"a malformed answer fails its call ({len(actions)} kinds; slowest: {worst_action})",
            f"{worst:.1f} ms (medians {min(f.median for f in failing.values()):.1f}-{worst:.1f})",
            f"{good.median:.1f} ms a good call",
            f"{worst / good.median:.1f}x a good call",
            f"< {TARGET_MALFORMED_MS:.0f} ms (timeout 30 s)",
            worst < TARGET_MALFORMED_MS,
        )
    ]


def _usage() -> tuple[float, int]:
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return rss_pages * resource.getpagesize() / 2**20, len(os.listdir("/proc/self/fd"))


def _token_rows(smoke: bool) -> tuple[list[Row], list[str]]:
    from ai_agent_handler import AIAgentEventHandler
    from ai_agent_handler.tools import session

    tokens, step = (600, 200) if smoke else (10_000, 1_000)
    logger = logging.getLogger("bench")
    marks: list[tuple[int, float, int, float]] = []
    with server_process(stateless=True) as url:
        start = time.perf_counter()
        for i in range(1, tokens + 1):
            agent = {
                "llm": {"llm_name": "gpt"},
                "configuration": {},
                "mcp_servers": [
                    {"name": "s", "setting": {"base_url": url, "bearer_token": f"tok-{i}"}}
                ],
            }
            AIAgentEventHandler(logger, agent)
            if i % step == 0:
                rss, fds = _usage()
                marks.append((i, rss, fds, (time.perf_counter() - start) / step * 1e3))
                start = time.perf_counter()
        runner = session._loop()
        open_sessions = sum(1 for c in runner.connections.values() if c.live is not None)
        lists = len(session._lists)
        session.close()
    first, last = marks[0], marks[-1]
    rss_growth = last[1] / first[1]
    fd_growth = last[2] / first[2]
    rows = [
        Row(
            f"resident memory after {tokens:,} one-token handlers vs after {step:,}",
            f"{last[1]:.0f} MiB",
            f"{first[1]:.0f} MiB",
            f"{rss_growth:.2f}x",
            f"<= {TARGET_GROWTH:.2f}x",
            rss_growth <= TARGET_GROWTH,
        ),
        Row(
            f"open descriptors after {tokens:,} one-token handlers vs after {step:,}",
            f"{last[2]}",
            f"{first[2]}",
            f"{fd_growth:.2f}x",
            f"<= {TARGET_GROWTH:.2f}x",
            fd_growth <= TARGET_GROWTH,
        ),
    ]
    per_handler = statistics.median(m[3] for m in marks)
    notes = [
        "Memory and descriptors per 1,000 tokens: "
        + ", ".join(f"{n:,}: {rss:.0f} MiB / {fds} fds" for n, rss, fds, _ in marks)
        + f". At the end: {open_sessions} sessions open (bound {session.MAX_SESSIONS}),"
        f" {lists} lists kept (bound {session.MAX_LISTS}); a cold handler (connect, initialize,"
        f" list) took {per_handler:.1f} ms (median per 1,000)."
    ]
    return rows, notes


def run(smoke: bool) -> Section:
    section = Section(
        "MCP tools: hostile servers and many tenants",
        "A schema bomb, malformed answers from a hand-written server on 127.0.0.1, and"
        " handlers that each bring their own bearer token (one session and one tool list"
        " each) against a FastMCP server (stateless, JSON answers) in its own process.",
    )
    section.rows += _schema_rows(smoke)
    section.rows += _malformed_rows(smoke)
    rows, notes = _token_rows(smoke)
    section.rows += rows
    section.notes += notes
    return section
