"""MCP sessions on the official SDK, driven from synchronous code (the I/O of ``tools``).

One event loop per process runs in a daemon thread behind an anyio blocking portal; every
thread (and code that already runs its own event loop) hands its request to that loop, so
a session is entered and left in one task, as the SDK requires. Per :class:`ServerKey`
(URL and headers, the bearer token included) there is one persistent session and one
cached tool list:

- The list is fetched at most once per ``tools_ttl``, however many handlers ask, and
  dropped early when the server sends ``notifications/tools/list_changed``, when a session
  that died is re-established, and when the server answers a call with "unknown tool".
- A session that died (server restarted or unreachable) is re-established by the next
  request. A request the server cannot have run (connection refused, session unknown to a
  restarted server) is sent once more on the new session; one that may have run (a
  timeout, a connection dropped while waiting for the answer) is not, and raises. Listing
  is read-only, so a list request is sent once more after any dropped connection.
- A session nobody used for :data:`IDLE_SECONDS` is closed when another one opens, so a
  process serving many tenants does not keep a session per tenant forever.

After ``fork()`` the child starts its own loop and sessions on first use; the tool lists
it inherited stay valid until they expire.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
from anyio.abc import TaskGroup, TaskStatus
from anyio.from_thread import BlockingPortal
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from ..exceptions import (
    MCPConnectionError,
    MCPError,
    MCPProtocolError,
    MCPTimeoutError,
    MCPToolError,
)
from .formats import ToolSpec
from .servers import ServerConfig, ServerKey, not_found

if TYPE_CHECKING:
    from mcp.shared.session import RequestResponder

__all__ = ["ToolResult", "call_tool", "close", "list_tools"]

LOGGER = logging.getLogger("ai_agent_handler.tools")
T = TypeVar("T")

# A restarted stateful server answers 404 for the old session; the 1.x client turns that
# into this JSON-RPC error. The request did not run.
_SESSION_TERMINATED = 32600
#: A session unused this long is closed when another one opens (bounds open sessions in a
#: process that serves many tenants); the next request to it opens a new one.
IDLE_SECONDS = 300.0


class ToolResult(list[dict[str, Any]]):
    """A tool's content (a list of dicts, as upstream returns it) and its structured part."""

    structured_content: dict[str, Any] | None = None


# -- the tool-list cache (shared by all threads) --------------------------------------------
class _Listing:
    __slots__ = ("expires", "memo", "tools")

    def __init__(self, tools: tuple[ToolSpec, ...], expires: float) -> None:
        self.tools = tools
        self.expires = expires
        self.memo: dict[Any, Any] = {}  # derived forms (exported JSON), per format and filter


_cache: dict[ServerKey, _Listing] = {}
_cache_lock = threading.Lock()


def cached(key: ServerKey) -> _Listing | None:
    """The live listing of ``key``, or None when absent or expired (no request)."""
    listing = _cache.get(key)
    if listing is None or listing.expires <= time.monotonic():
        return None
    return listing


def _store(key: ServerKey, tools: tuple[ToolSpec, ...], ttl: float) -> _Listing:
    listing = _Listing(tools, time.monotonic() + ttl)
    with _cache_lock:
        _cache[key] = listing
    return listing


def invalidate(key: ServerKey) -> None:
    with _cache_lock:
        _cache.pop(key, None)


# -- synchronous entry points --------------------------------------------------------------
def list_tools(server: ServerConfig) -> _Listing:
    """The server's tools: from the cache while fresh, else listed (one request per process)."""
    return cached(server.key) or _loop().call(_list_tools, server)


def call_tool(server: ServerConfig, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
    """Call ``tool`` on ``server`` with ``arguments`` as given; the result's content.

    Raises :class:`MCPToolError` for an error result, ``MCPToolNotFound`` when the server no
    longer knows the tool, and the timeout / connection / protocol errors of ``MCPError``.
    """
    return _loop().call(_call_tool, server, tool, dict(arguments))


def close(timeout: float = 5.0) -> None:
    """End every session (the server is told) and stop the loop; the next request restarts."""
    global _runner
    with _runner_lock:
        runner, _runner = _runner, None
    if runner is not None:
        runner.stop(timeout)


# -- the loop thread -----------------------------------------------------------------------
class _Runner:
    """An event loop in a daemon thread, a portal into it, and the sessions it owns."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.connections: dict[ServerKey, _Connection] = {}
        self.portal: BlockingPortal | None = None
        self.tasks: TaskGroup | None = None
        started = threading.Event()
        self.thread = threading.Thread(
            target=anyio.run, args=(self._serve, started), name="ai-agent-mcp", daemon=True
        )
        self.thread.start()
        started.wait()
        if self.portal is None:
            raise MCPError("the MCP event loop did not start")

    async def _serve(self, started: threading.Event) -> None:
        try:
            async with BlockingPortal() as portal, anyio.create_task_group() as tasks:
                self.portal, self.tasks = portal, tasks
                started.set()
                await portal.sleep_until_stopped()
                sessions = [c.live for c in self.connections.values() if c.live is not None]
                for live in sessions:
                    live.closing.set()
                with anyio.move_on_after(self.stop_timeout):
                    for live in sessions:
                        await live.done.wait()
                tasks.cancel_scope.cancel()
        finally:
            started.set()

    def sweep(self, keep: _Connection) -> None:
        """Close sessions nobody used for IDLE_SECONDS (the next request reopens them)."""
        limit = time.monotonic() - IDLE_SECONDS
        for connection in self.connections.values():
            live = connection.live
            if live is None or connection is keep or live.calls or live.last_used >= limit:
                continue
            connection.live = None
            live.retire()

    stop_timeout = 5.0

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self.portal is not None
        return self.portal.call(func, *args)

    def stop(self, timeout: float) -> None:
        if self.pid != os.getpid() or self.portal is None:
            return
        self.stop_timeout = timeout
        with contextlib.suppress(RuntimeError):  # already stopped
            self.portal.call(self.portal.stop)
        self.thread.join(timeout + 1)


_runner: _Runner | None = None
_runner_lock = threading.Lock()


def _loop() -> _Runner:
    global _runner
    runner = _runner
    if runner is None or runner.pid != os.getpid():
        with _runner_lock:
            if _runner is None or _runner.pid != os.getpid():
                _runner = _Runner()
            runner = _runner
    return runner


async def _list_tools(server: ServerConfig) -> _Listing:
    return await _connection(server.key).list_tools(server)


async def _call_tool(server: ServerConfig, tool: str, arguments: dict[str, Any]) -> ToolResult:
    return await _connection(server.key).call_tool(server, tool, arguments)


def _connection(key: ServerKey) -> _Connection:
    # Runs in the loop (anyio's primitives are made there); the loop is the only user.
    runner = _loop()
    connection = runner.connections.get(key)
    if connection is None:
        connection = runner.connections[key] = _Connection(key, runner)
    return connection


def _forget_after_fork() -> None:
    global _runner, _runner_lock
    _runner = None
    _runner_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close, 2.0)


# -- one server's session (runs in the loop) -------------------------------------------------
class _Live:
    """One session of a server: the SDK session, its in-flight calls, how it ended."""

    __slots__ = ("calls", "closing", "done", "failure", "last_used", "retiring", "session")

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.closing = anyio.Event()  # set: leave the session (its owner task ends)
        self.done = anyio.Event()  # set: the owner task ended
        self.calls: set[anyio.CancelScope] = set()
        self.failure: BaseException | None = None  # why it died, when it did
        self.retiring = False
        self.last_used = time.monotonic()

    def retire(self) -> None:
        """No new requests; closed once the in-flight ones are answered."""
        self.retiring = True
        if not self.calls:
            self.closing.set()

    def release(self, scope: anyio.CancelScope) -> None:
        self.calls.discard(scope)
        self.last_used = time.monotonic()
        if self.retiring and not self.calls:
            self.closing.set()


class _Connection:
    """The persistent session of one server key, reopened when it died or was retired."""

    def __init__(self, key: ServerKey, runner: _Runner) -> None:
        self.key = key
        self.runner = runner
        self.live: _Live | None = None
        self.lost = False  # the last session died: the list it gave may be stale
        self.connect_lock = anyio.Lock()
        self.list_lock = anyio.Lock()

    # -- session lifetime ----------------------------------------------------------------
    async def open(self, server: ServerConfig) -> _Live:
        async with self.connect_lock:
            live = self.live
            if live is not None and not live.done.is_set() and not live.retiring:
                return live
            self.live = None
            if self.lost:
                invalidate(self.key)
                self.lost = False
            live = _Live()
            assert self.runner.tasks is not None
            try:
                live.session = await self.runner.tasks.start(self._own, server, live)
            except Exception as exc:
                raise _translate(exc, server, None, "connecting") from exc
            self.live = live
            self.runner.sweep(keep=self)
            return live

    async def _own(
        self, server: ServerConfig, live: _Live, *, task_status: TaskStatus[ClientSession]
    ) -> None:
        # Enters and leaves the transport and the session in this one task.
        started = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        headers=dict(server.headers),
                        timeout=httpx.Timeout(300.0, connect=server.connect_timeout),
                    )
                )
                read, write, _ = await stack.enter_async_context(
                    streamable_http_client(server.base_url, http_client=http)
                )
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=self._on_message)
                )
                with anyio.fail_after(server.connect_timeout):
                    await session.initialize()
                started = True
                task_status.started(session)
                await live.closing.wait()
        except Exception as exc:
            if not started:
                raise
            live.failure = exc
            self.lost = True
            LOGGER.info("MCP session of %s ended: %s", server.name, _leaf(exc))
        finally:
            live.done.set()
            for scope in list(live.calls):  # what waits on a dead session fails now
                scope.cancel()

    async def _on_message(
        self,
        message: RequestResponder[types.ServerRequest, types.ClientResult]
        | types.ServerNotification
        | Exception,
    ) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            invalidate(self.key)

    def _detach(self, live: _Live, *, dead: bool) -> None:
        """New requests go to a new session, whose tool list is fetched again.

        A dead session is closed now; one the server merely forgot (it restarted) is closed
        once its other in-flight requests are answered.
        """
        self.lost = True
        if self.live is live:
            self.live = None
        if dead:
            live.closing.set()
        else:
            live.retire()

    # -- requests ------------------------------------------------------------------------
    async def _request(
        self,
        server: ServerConfig,
        what: str,
        tool: str | None,
        timeout: float,
        send: Callable[[ClientSession], Awaitable[T]],
        *,
        idempotent: bool,
    ) -> T:
        for attempt in (1, 2):
            live = await self.open(server)
            assert live.session is not None
            scope = anyio.CancelScope()
            live.calls.add(scope)
            try:
                with scope, anyio.fail_after(timeout):
                    return await send(live.session)
            except TimeoutError as exc:
                raise MCPTimeoutError(
                    f"MCP server {server.name!r}: {what} took longer than {timeout:g} s"
                    + ("; the call may have run and is not sent again" if tool else ""),
                    server=server.name,
                    tool=tool,
                ) from exc
            except McpError as exc:
                if exc.error.code == _SESSION_TERMINATED and attempt == 1:
                    self._detach(live, dead=False)  # a restarted server never ran it: resend
                    continue
                if exc.error.code != types.CONNECTION_CLOSED:
                    raise _translate(exc, server, tool, what) from exc
            except Exception as exc:  # an answer the SDK could not take (malformed result)
                raise _translate(exc, server, tool, what) from exc
            finally:
                live.release(scope)
            # The session died while the request was out (its owner cancelled the request,
            # or the SDK answered "connection closed"): never use it again.
            self._detach(live, dead=True)
            with anyio.move_on_after(1):
                await live.done.wait()
            failure = live.failure or MCPConnectionError("connection closed")
            if attempt == 1 and (idempotent or _never_sent(failure)):
                continue
            raise _translate(failure, server, tool, what) from failure
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_tools(self, server: ServerConfig) -> _Listing:
        async with self.list_lock:  # one listing at a time: the others use its result
            listing = cached(self.key)
            if listing is not None:
                return listing

            async def send(session: ClientSession) -> list[types.Tool]:
                tools: list[types.Tool] = []
                cursor: str | None = None
                while True:
                    params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await session.list_tools(params=params)
                    tools.extend(page.tools)
                    cursor = page.nextCursor
                    if not cursor:
                        return tools

            listed = await self._request(
                server, "listing tools", None, server.list_timeout, send, idempotent=True
            )
            specs = tuple(
                ToolSpec(t.name, t.description or "", dict(t.inputSchema)) for t in listed
            )
            return _store(self.key, specs, server.tools_ttl)

    async def call_tool(
        self, server: ServerConfig, tool: str, arguments: dict[str, Any]
    ) -> ToolResult:
        async def send(session: ClientSession) -> types.CallToolResult:
            return await session.call_tool(tool, arguments)

        try:
            result = await self._request(
                server, f"calling {tool!r}", tool, server.call_timeout, send, idempotent=False
            )
        except MCPProtocolError as exc:
            if _unknown_tool(exc, tool):
                invalidate(self.key)
                raise not_found(tool, f" (server {server.name!r} does not know it)") from exc
            raise
        content = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content
        ]
        if result.isError:
            text = " ".join(str(c.get("text", "")) for c in content if c.get("type") == "text")
            if text.lower().startswith("unknown tool"):
                invalidate(self.key)
                raise not_found(tool, f" (server {server.name!r}: {text})")
            raise MCPToolError(
                text or f"MCP tool {tool!r} returned an error result",
                server=server.name,
                tool=tool,
                content=content,
                structured_content=result.structuredContent,
            )
        answer = ToolResult(content)
        answer.structured_content = result.structuredContent
        return answer


# -- errors at the edge --------------------------------------------------------------------
def _leaves(exc: BaseException) -> list[BaseException]:
    group = getattr(exc, "exceptions", None)  # an exception group (a backport on 3.10)
    if isinstance(group, tuple) and group:
        return [leaf for sub in group for leaf in _leaves(sub)]
    return [exc]


def _leaf(exc: BaseException) -> BaseException:
    leaves = _leaves(exc)
    # The transport's own error says more than the cancellations it caused.
    for leaf in leaves:
        if isinstance(leaf, (httpx.HTTPError, McpError, TimeoutError, OSError)):
            return leaf
    return leaves[0]


def _never_sent(exc: BaseException) -> bool:
    """The request cannot have reached the server (it is safe to send it again)."""
    return isinstance(_leaf(exc), (httpx.ConnectError, httpx.ConnectTimeout))


def _unknown_tool(exc: MCPProtocolError, tool: str) -> bool:
    cause = exc.__cause__
    return (
        isinstance(cause, McpError)
        and cause.error.code in (types.METHOD_NOT_FOUND, types.INVALID_PARAMS)
        and "tool" in cause.error.message.lower()
        and tool in cause.error.message
    )


def _translate(exc: BaseException, server: ServerConfig, tool: str | None, what: str) -> MCPError:
    leaf = _leaf(exc)
    where = f"MCP server {server.name!r} ({server.base_url}): {what}"
    if isinstance(leaf, (TimeoutError, httpx.TimeoutException)):
        return MCPTimeoutError(f"{where} timed out", server=server.name, tool=tool)
    if isinstance(leaf, httpx.HTTPStatusError):
        status = leaf.response.status_code
        return MCPProtocolError(
            f"{where} failed: HTTP {status} {leaf.response.reason_phrase}",
            server=server.name,
            tool=tool,
        )
    if isinstance(leaf, McpError):
        if leaf.error.code == _SESSION_TERMINATED and what == "connecting":
            # The 1.x client reports every 404 this way; before a session exists it means
            # there is no MCP endpoint at the URL.
            return MCPProtocolError(
                f"{where} failed: HTTP 404, no MCP endpoint at this URL (check base_url)",
                server=server.name,
                tool=tool,
            )
        if leaf.error.code == types.CONNECTION_CLOSED:
            return MCPConnectionError(
                f"{where} failed: connection closed", server=server.name, tool=tool
            )
        return MCPProtocolError(
            f"{where} failed: JSON-RPC error {leaf.error.code}: {leaf.error.message}",
            server=server.name,
            tool=tool,
        )
    if isinstance(leaf, (httpx.TransportError, OSError, MCPConnectionError)):
        return MCPConnectionError(
            f"{where} failed: {type(leaf).__name__}: {leaf}", server=server.name, tool=tool
        )
    return MCPProtocolError(
        f"{where} failed: {type(leaf).__name__}: {leaf}", server=server.name, tool=tool
    )
