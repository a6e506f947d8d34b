"""Real MCP servers of the official SDK (FastMCP, 1.x line) on 127.0.0.1, for tests and bench.

Each :class:`McpServer` runs uvicorn in its own thread on a free port and records every
JSON-RPC message it receives (method and request headers), so a test can count the
``initialize`` and ``tools/list`` requests a client made; a session's end (HTTP DELETE) is
recorded as the method ``"DELETE"``. ``restart()`` stops the server and starts a fresh one
on the same port: its sessions are gone, as after a real restart. ``list_delay`` slows its
``tools/list`` answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from mcp.server.fastmcp import Context, FastMCP

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    method: str
    headers: dict[str, str]
    params: dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_tools(mcp: FastMCP) -> None:
    """The tools every test server offers."""

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def echo(text: str, someValue: str = "") -> str:
        """Echo the text (and someValue, when given)."""
        return f"{text}|{someValue}" if someValue else text

    @mcp.tool()
    def fail(message: str) -> str:
        """Always fails with the message."""
        raise ValueError(message)

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Answers after the given number of seconds."""
        await asyncio.sleep(seconds)
        return "done"

    @mcp.tool()
    async def grow(name: str, ctx: Context) -> str:  # type: ignore[type-arg]
        """Adds a tool called ``name`` and tells the client its tool list changed."""

        def added() -> str:
            return name

        mcp.add_tool(added, name=name, description=f"added at run time: {name}")
        await ctx.session.send_tool_list_changed()
        return f"added {name}"


class McpServer:
    """A FastMCP server on a free loopback port; ``url`` is its Streamable HTTP endpoint."""

    def __init__(
        self,
        *,
        stateless: bool = False,
        json_response: bool = False,
        tools: Callable[[FastMCP], None] = build_tools,
        port: int | None = None,
        list_delay: float = 0.0,
        on_receive: Callable[[str], None] | None = None,
    ) -> None:
        self.stateless = stateless
        self.list_delay = list_delay
        self.json_response = json_response
        self.tools = tools
        self.port = port or free_port()
        self.received: list[Received] = []
        self.on_receive = on_receive  # called with each JSON-RPC method as it arrives
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for r in self.received if r.method == method)

    def requests(self, method: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.method == method]

    def reset_counts(self) -> None:
        with self._lock:
            self.received.clear()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> McpServer:
        mcp = _SlowListing(
            "test-server", stateless_http=self.stateless, json_response=self.json_response
        )
        mcp.list_delay = self.list_delay
        self.tools(mcp)
        app = _Recorder(mcp.streamable_http_app(), self)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            lifespan="on",
            timeout_graceful_shutdown=0.2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"mcp-server-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"MCP test server on port {self.port} did not start")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(10)
        self._server = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> McpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _SlowListing(FastMCP):  # type: ignore[type-arg]
    """FastMCP whose ``tools/list`` answers after ``list_delay`` seconds."""

    list_delay = 0.0

    async def list_tools(self) -> Any:
        await asyncio.sleep(self.list_delay)
        return await super().list_tools()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


class _Recorder:
    """ASGI middleware: records each JSON-RPC message of a POST, then passes it on."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], owner: McpServer):
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE":  # a session's end
            with self.owner._lock:
                self.owner.received.append(Received("DELETE", _headers(scope), {}))
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = _headers(scope)
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        for item in decoded if isinstance(decoded, list) else [decoded]:
            if isinstance(item, dict) and "method" in item:
                with self.owner._lock:
                    self.owner.received.append(
                        Received(item["method"], headers, item.get("params") or {})
                    )
                if self.owner.on_receive is not None:
                    self.owner.on_receive(item["method"])
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.mcp_server --port N [--stateless] [--json] [--announce]``.

    Serves until its standard input closes (the benchmarks run it in its own process, so its
    threads do not share the measured interpreter's GIL). Prints ``ready`` once listening;
    with ``--announce``, then each JSON-RPC method as it arrives (a test that kills the
    server mid-call waits for ``tools/call``).
    """
    import argparse
    import logging
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--announce", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the SDK's per-request lines are noise here

    def announce(method: str) -> None:
        print(method, flush=True)

    with McpServer(
        stateless=args.stateless,
        json_response=args.json,
        port=args.port,
        on_receive=announce if args.announce else None,
    ):
        print("ready", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
