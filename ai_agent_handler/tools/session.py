"""MCP sessions on the official SDK, driven from synchronous code (the I/O of ``tools``).

One event loop per process runs in a daemon thread behind an anyio blocking portal; every
thread (and code that already runs its own event loop) hands its request to that loop, so
a session is entered and left in one task, as the SDK requires. Per :class:`ServerKey`
(URL and headers, the bearer token included) there is one persistent session and one
cached tool list:

- The list is fetched at most once per ``tools_ttl``, however many handlers ask, and
  fetched again early when the server sends ``notifications/tools/list_changed``, when a
  session that died is re-established, and when the server answers a call with "unknown
  tool". While a server cannot be listed, its last good list is served for up to
  ``tools_max_stale`` seconds past its ``tools_ttl`` (one listing is tried again at most
  every :data:`RELIST_SECONDS`, and at once after a call to the server succeeds).
- Every request gets an answer or a typed error, promptly: an answer the SDK could not
  take (not JSON, another content type, another request's id, a body cut off, an event
  stream that ends without the answer, an HTTP error status) becomes an error for that
  request alone (:class:`_Answers`), instead of waiting out the timeout.
- A session that died (server restarted or unreachable) is re-established by the next
  request. A request the server cannot have run (connection refused, session unknown to a
  restarted server) is sent once more on the new session; one that may have run (a
  timeout, a connection dropped while waiting for the answer) is not, and raises. Listing
  is read-only, so a list request is sent once more after any dropped connection.
- Bounded for a process that serves many tenants (one session and list per token): at most
  :data:`MAX_SESSIONS` sessions are open (the least recently used idle ones are closed when
  another opens, and any unused for :data:`IDLE_SECONDS`), and at most :data:`MAX_LISTS`
  tool lists are kept.

After ``fork()`` the child starts its own loop and sessions on first use; the tool lists
it inherited stay valid until they expire.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
import httpx_sse
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

LOGGER = logging.getLogger("ai_agent_handler.tools")
T = TypeVar("T")

# A restarted stateful server answers 404 for the old session; the 1.x client turns that
# into this JSON-RPC error. The request did not run.
_SESSION_TERMINATED = 32600
#: A session unused this long is closed when another one opens; the next request to its
#: server opens a new one.
IDLE_SECONDS = 300.0
#: Most sessions open at once: opening one more closes the least recently used ones that
#: have no request in flight.
MAX_SESSIONS = 32
#: Most tool lists kept (the least recently used is dropped first).
MAX_LISTS = 256
#: While a server cannot be listed, one listing is tried again at most this often; handlers
#: meanwhile get the last good list without waiting.
RELIST_SECONDS = 30.0


#: The clock of list ages and idle sessions (tests move it instead of waiting).
_clock = time.monotonic


class ToolResult(list[dict[str, Any]]):
    """A tool's content (a list of dicts, as upstream returns it) and its structured part."""

    structured_content: dict[str, Any] | None = None


# -- the tool-list cache (shared by all threads) --------------------------------------------
class _Listing:
    """One server's listed tools: fresh until ``expires``, then servable until ``stale_until``
    while the server cannot be listed."""

    __slots__ = ("expires", "listed", "memo", "relist_at", "stale_until", "tools")

    def __init__(self, tools: tuple[ToolSpec, ...], ttl: float, max_stale: float) -> None:
        self.tools = tools
        self.listed = _clock()
        self.expires = self.listed + ttl
        self.stale_until = self.expires + max_stale
        self.relist_at = 0.0  # no listing before this (set after a listing failed)
        self.memo: dict[Any, Any] = {}  # derived forms (exported JSON), per format and filter

    def usable(self, now: float) -> bool:
        """Served without a listing: fresh, or stale while a failed listing backs off."""
        return self.expires > now or self.relist_at > now

    def expire(self) -> None:
        """List again on the next use; until that succeeds, this one stays servable."""
        self.expires = min(self.expires, _clock())
        self.relist_at = 0.0


class _Lists:
    """Tool lists by server key, least recently used first, at most :data:`MAX_LISTS`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[ServerKey, _Listing] = OrderedDict()

    def get(self, key: ServerKey) -> _Listing | None:
        """The key's list while it may be served (fresh or stale), else None."""
        with self.lock:
            listing = self.items.get(key)
            if listing is None:
                return None
            if listing.stale_until <= _clock():
                del self.items[key]
                return None
            self.items.move_to_end(key)
            return listing

    def store(self, key: ServerKey, listing: _Listing) -> _Listing:
        now = _clock()
        with self.lock:
            for gone in [k for k, v in self.items.items() if v.stale_until <= now]:
                del self.items[gone]
            self.items[key] = listing
            self.items.move_to_end(key)
            while len(self.items) > MAX_LISTS:
                self.items.popitem(last=False)
        return listing

    def expire(self, key: ServerKey) -> None:
        with self.lock:
            listing = self.items.get(key)
        if listing is not None:
            listing.expire()

    def __len__(self) -> int:
        return len(self.items)


_lists = _Lists()


# -- synchronous entry points --------------------------------------------------------------
def list_tools(server: ServerConfig) -> _Listing:
    """The server's tools: from the cache while fresh, else listed (one request per process).

    When listing fails and the last good list is younger than ``tools_ttl`` +
    ``tools_max_stale``, that list is returned (and a warning logged) instead of the error.
    """
    listing = _lists.get(server.key)
    if listing is not None and listing.usable(_clock()):
        return listing
    return _submit(server, None, _list_tools, server)


def call_tool(server: ServerConfig, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
    """Call ``tool`` on ``server`` with ``arguments`` as given; the result's content.

    Raises :class:`MCPToolError` for an error result, ``MCPToolNotFound`` when the server no
    longer knows the tool, and the timeout / connection / protocol errors of ``MCPError``.
    """
    return _submit(server, tool, _call_tool, server, tool, dict(arguments))


def _submit(
    server: ServerConfig, tool: str | None, func: Callable[..., Awaitable[T]], *args: Any
) -> T:
    """Run ``func`` (listing, or calling ``tool``) on the loop; a request that :func:`close`
    cut off raises an MCPError."""
    what = f"calling {tool!r}" if tool else "listing tools"
    for attempt in (1, 2):
        runner = _loop()
        try:
            return runner.call(func, *args)
        except RuntimeError:
            if not runner.stopping:
                raise
            if attempt == 1:  # the loop stopped before the request was handed over: a new one
                continue
            raise MCPConnectionError(
                f"MCP server {server.name!r}: {what} found the MCP client closing",
                server=server.name,
                tool=tool,
            ) from None
        except concurrent.futures.CancelledError:
            raise _closed(server, what, tool) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _closed(server: ServerConfig, what: str, tool: str | None) -> MCPConnectionError:
    return MCPConnectionError(
        f"MCP server {server.name!r}: {what} was cut off by close()"
        + ("; the call may have run and is not sent again" if tool else ""),
        server=server.name,
        tool=tool,
    )


def close(timeout: float = 5.0) -> None:
    """End every session (the server is told) and stop the loop; the next request restarts.

    A request still in flight raises ``MCPConnectionError``.
    """
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
        self.stopping = False  # close() was called: no new request is handed over
        self.closed = False  # the loop is closing its sessions: requests fail, none reopen
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
                self.closed = True
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
        """Close sessions unused for IDLE_SECONDS, and the least recently used ones past
        MAX_SESSIONS; forget servers with no session and no request (the next reopens)."""
        now = _clock()
        open_ = sorted(
            (c for c in self.connections.values() if c.live is not None and c is not keep),
            key=lambda c: c.live.last_used if c.live is not None else 0.0,
        )
        count = len(open_) + 1
        for connection in open_:
            live = connection.live
            assert live is not None
            if live.done.is_set():
                connection.live = None
                count -= 1
            elif not live.calls and (live.last_used < now - IDLE_SECONDS or count > MAX_SESSIONS):
                connection.live = None
                live.retire()
                count -= 1
        for key, connection in list(self.connections.items()):
            if connection is not keep and connection.live is None and not connection.users:
                if connection.lost:
                    _lists.expire(key)
                del self.connections[key]

    stop_timeout = 5.0

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self.portal is not None
        return self.portal.call(func, *args)

    def stop(self, timeout: float) -> None:
        self.stopping = True
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
    connection = _connection(server.key)
    connection.users += 1
    try:
        return await connection.list_tools(server)
    finally:
        connection.users -= 1


async def _call_tool(server: ServerConfig, tool: str, arguments: dict[str, Any]) -> ToolResult:
    connection = _connection(server.key)
    connection.users += 1
    try:
        return await connection.call_tool(server, tool, arguments)
    finally:
        connection.users -= 1


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
    _lists.lock = threading.Lock()  # the parent's loop thread may have held it


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close, 2.0)


# -- every request gets its answer or an error made here --------------------------------------
#: Marks the JSON-RPC errors this module makes (a server cannot make one look like ours).
_MADE_HERE = f"ai_agent_handler:{secrets.token_hex(8)}"
_UNSENT, _CUT_OFF, _MALFORMED = "unsent", "cut off", "malformed"


def _request_id(request: httpx.Request) -> types.RequestId | None:
    """The JSON-RPC id of a POST that carries a request (not a notification), else None."""
    if request.method != "POST":
        return None
    try:  # the SDK's own serialization: a plain parse is enough (and cheaper on every call)
        message = json.loads(request.content)
    except ValueError:
        return None
    if not isinstance(message, dict) or "method" not in message:
        return None
    rid = message.get("id")
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None


def _problem(data: str | bytes, rid: types.RequestId, *, in_stream: bool) -> tuple[str, bool]:
    """(what is wrong with one message of an answer, or "", whether it is the answer)."""
    try:
        message = types.JSONRPCMessage.model_validate_json(data)
    except ValueError as exc:
        reason = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        start = data[:60] if isinstance(data, bytes) else data[:60].encode()
        return f"the answer is not a JSON-RPC message ({reason}): {start!r}"[:240], False
    root = message.root
    if isinstance(root, (types.JSONRPCResponse, types.JSONRPCError)):
        got = int(root.id) if isinstance(root.id, str) and root.id.isdigit() else root.id
        if got != rid:
            return f"the answer carries JSON-RPC id {root.id!r}, not {rid!r}", False
        return "", True
    if in_stream:  # the server's own requests and notifications may come first
        return "", False
    return f"the answer is a JSON-RPC {type(root).__name__}, not a response", False


def _made(request: httpx.Request, rid: types.RequestId, kind: str, detail: str) -> httpx.Response:
    return httpx.Response(200, json=_made_message(rid, kind, detail), request=request)


def _made_message(rid: types.RequestId, kind: str, detail: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "error": {"code": types.INTERNAL_ERROR, "message": detail, "data": [_MADE_HERE, kind]},
    }


def _made_kind(exc: McpError) -> str | None:
    """The kind of an error made by :class:`_Answers`, None for the server's own."""
    data = exc.error.data
    if isinstance(data, list) and len(data) == 2 and data[0] == _MADE_HERE:
        return str(data[1])
    return None


def _plain(headers: httpx.Headers) -> list[tuple[str, str]]:
    # What is passed on is decoded already: no encoding, and its own length.
    dropped = ("content-encoding", "content-length", "transfer-encoding")
    return [(k, v) for k, v in headers.items() if k.lower() not in dropped]


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every session: loading the CA bundle costs about 30 ms, as much
    as the rest of opening a session (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured)."""
    return httpx.create_ssl_context(trust_env=True)


class _Answers(httpx.AsyncBaseTransport):
    """HTTP for one session: each POST carrying a request ends with that request's answer.

    The SDK hands an answer it cannot parse to the session's message handler and leaves the
    request waiting for its timeout; an event stream that breaks before the answer it drops
    silently. Here such an exchange ends with a JSON-RPC error for that request's id,
    marked as made here (:func:`_made_kind`): ``unsent`` (the connection failed, the server
    never saw it), ``cut off`` (sent, then the connection or stream ended before the answer)
    or ``malformed`` (an HTTP error status, another content type, not JSON-RPC, another id).
    Good answers pass as they came. Ending a session (``DELETE``) never warns: a server
    that forgot the session or is gone drops it by itself.
    """

    def __init__(self, live: _Live) -> None:
        self.live = live
        self.inner = httpx.AsyncHTTPTransport(verify=_tls())

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return await self._end(request)
        rid = _request_id(request)
        if rid is None:
            return await self.inner.handle_async_request(request)
        try:
            response = await self.inner.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return _made(request, rid, _UNSENT, f"{type(exc).__name__}: {exc}")
        except httpx.TransportError as exc:
            return _made(request, rid, _CUT_OFF, f"no answer: {type(exc).__name__}: {exc}")
        status = response.status_code
        if status in (202, 404):  # the SDK's own cases (404: the session is unknown)
            return response
        kind = response.headers.get("content-type", "").lower()
        if status // 100 == 2 and kind.startswith("text/event-stream"):
            return httpx.Response(
                status,
                headers=_plain(response.headers),
                stream=_Events(response, rid),
                extensions=response.extensions,
                request=request,
            )
        try:
            body = await response.aread()
        except httpx.TransportError as exc:
            return _made(request, rid, _CUT_OFF, f"the answer was cut off: {type(exc).__name__}")
        finally:
            await response.aclose()
        if status // 100 != 2:
            reason = response.reason_phrase or ""
            return _made(request, rid, _MALFORMED, f"HTTP {status} {reason}".rstrip())
        if not kind.startswith("application/json"):
            return _made(
                request,
                rid,
                _MALFORMED,
                f"the answer is {kind or 'untyped'!r}, not JSON or an event stream",
            )
        problem, _ = _problem(body, rid, in_stream=False)
        if problem:
            return _made(request, rid, _MALFORMED, problem)
        return httpx.Response(
            status,
            headers=_plain(response.headers),
            content=body,
            extensions=response.extensions,
            request=request,
        )

    async def _end(self, request: httpx.Request) -> httpx.Response:
        if self.live.forgotten:
            return httpx.Response(204, request=request)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as exc:
            LOGGER.debug("MCP session end not sent: %s", exc)
            return httpx.Response(204, request=request)
        if response.status_code // 100 != 2 and response.status_code != 405:
            await response.aclose()
            LOGGER.debug("MCP session end answered HTTP %s", response.status_code)
            return httpx.Response(204, request=request)
        return response


class _Events(httpx.AsyncByteStream):
    """An answer's event stream, passed on event by event until the answer; an event the
    SDK could not take, or an end before the answer, becomes an error event for the request.

    A server that numbers its events (resumable streams) is left to the SDK, which
    reconnects to resume them.
    """

    def __init__(self, response: httpx.Response, rid: types.RequestId) -> None:
        self.response = response
        self.rid = rid

    async def __aiter__(self) -> AsyncIterator[bytes]:
        numbered = False
        try:
            async for event in httpx_sse.EventSource(self.response).aiter_sse():
                numbered = numbered or bool(event.id)
                if event.event == "message" and event.data:
                    problem, answered = _problem(event.data, self.rid, in_stream=True)
                    if problem:
                        yield self._error(_MALFORMED, problem)
                        return
                    yield _encode(event)
                    if answered:
                        return
                else:
                    yield _encode(event)
        except httpx.TransportError as exc:
            if not numbered:
                yield self._error(_CUT_OFF, f"the answer was cut off: {type(exc).__name__}")
            return
        if not numbered:
            yield self._error(_CUT_OFF, "the server ended the answer's stream without the answer")

    def _error(self, kind: str, detail: str) -> bytes:
        data = json.dumps(_made_message(self.rid, kind, detail))
        return f"event: message\ndata: {data}\n\n".encode()

    async def aclose(self) -> None:
        await self.response.aclose()


def _encode(event: httpx_sse.ServerSentEvent) -> bytes:
    lines = [] if event.event == "message" else [f"event: {event.event}"]
    if event.id:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


# -- one server's session (runs in the loop) -------------------------------------------------
class _Live:
    """One session of a server: the SDK session, its in-flight calls, how it ended."""

    __slots__ = (
        "calls",
        "closing",
        "done",
        "failure",
        "forgotten",
        "last_used",
        "retiring",
        "session",
    )

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.closing = anyio.Event()  # set: leave the session (its owner task ends)
        self.done = anyio.Event()  # set: the owner task ended
        self.calls: set[anyio.CancelScope] = set()
        self.failure: BaseException | None = None  # why it died, when it did
        self.retiring = False
        self.forgotten = False  # the server no longer has it (restarted, or unreachable)
        self.last_used = _clock()

    def retire(self) -> None:
        """No new requests; closed once the in-flight ones are answered."""
        self.retiring = True
        if not self.calls:
            self.closing.set()

    def release(self, scope: anyio.CancelScope) -> None:
        self.calls.discard(scope)
        self.last_used = _clock()
        if self.retiring and not self.calls:
            self.closing.set()


class _Connection:
    """The persistent session of one server key, reopened when it died or was retired."""

    def __init__(self, key: ServerKey, runner: _Runner) -> None:
        self.key = key
        self.runner = runner
        self.live: _Live | None = None
        self.lost = False  # the last session died: the list it gave may be stale
        self.users = 0  # requests of this key in the loop now
        self.connect_lock = anyio.Lock()
        self.list_lock = anyio.Lock()

    # -- session lifetime ----------------------------------------------------------------
    async def open(self, server: ServerConfig) -> _Live:
        async with self.connect_lock:
            live = self.live
            if live is not None and not live.done.is_set() and not live.retiring:
                return live
            if self.runner.closed:
                raise MCPConnectionError(
                    f"MCP server {server.name!r}: the MCP client was closed", server=server.name
                )
            self.live = None
            if self.lost:
                _lists.expire(self.key)
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
                        transport=_Answers(live),
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
            _lists.expire(self.key)
        elif isinstance(message, Exception):  # on the server's own stream (GET)
            LOGGER.debug("MCP server message not understood: %s", message)

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
                made = _made_kind(exc)
                if made is None and exc.error.code == _SESSION_TERMINATED and attempt == 1:
                    live.forgotten = True  # a restarted server never ran it: resend
                    self._detach(live, dead=False)
                    continue
                if made in (_UNSENT, _CUT_OFF):
                    live.forgotten = made == _UNSENT
                    self._detach(live, dead=True)
                    if attempt == 1 and (made == _UNSENT or idempotent):
                        continue
                    raise _translate(exc, server, tool, what) from exc
                if made is not None or exc.error.code != types.CONNECTION_CLOSED:
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
            if self.runner.closed:
                raise _closed(server, what, tool)
            failure = live.failure or MCPConnectionError("connection closed")
            if attempt == 1 and (idempotent or _never_sent(failure)):
                continue
            raise _translate(failure, server, tool, what) from failure
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_tools(self, server: ServerConfig) -> _Listing:
        async with self.list_lock:  # one listing at a time: the others use its result
            listing = _lists.get(self.key)
            if listing is not None and listing.usable(_clock()):
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

            try:
                listed = await self._request(
                    server, "listing tools", None, server.list_timeout, send, idempotent=True
                )
            except MCPError as exc:
                if listing is None:
                    raise
                listing.relist_at = _clock() + RELIST_SECONDS
                LOGGER.warning(
                    "%s; serving its tool list from %.0f s ago (for up to %.0f s more)",
                    exc,
                    _clock() - listing.listed,
                    listing.stale_until - _clock(),
                )
                return listing
            specs = tuple(
                ToolSpec(t.name, t.description or "", dict(t.inputSchema)) for t in listed
            )
            return _lists.store(self.key, _Listing(specs, server.tools_ttl, server.tools_max_stale))

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
                _lists.expire(self.key)
                raise not_found(tool, f" (server {server.name!r} does not know it)") from exc
            raise
        listing = _lists.get(self.key)
        if listing is not None and listing.relist_at:  # it answers again: list at next use
            listing.relist_at = 0.0
        content = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content
        ]
        if result.isError:
            text = " ".join(str(c.get("text", "")) for c in content if c.get("type") == "text")
            if text.lower().startswith("unknown tool"):
                _lists.expire(self.key)
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
        made = _made_kind(leaf)
        if made in (_UNSENT, _CUT_OFF):
            may_have_run = made == _CUT_OFF and tool is not None
            return MCPConnectionError(
                f"{where} failed: {leaf.error.message}"
                + ("; the call may have run and is not sent again" if may_have_run else ""),
                server=server.name,
                tool=tool,
            )
        if made is not None:
            return MCPProtocolError(
                f"{where} failed: {leaf.error.message}", server=server.name, tool=tool
            )
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
