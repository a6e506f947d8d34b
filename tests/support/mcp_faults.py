"""A hand-written MCP server on 127.0.0.1 that answers what a script says, malformed or not.

:class:`FaultyMcp` speaks just enough of MCP's Streamable HTTP transport (stateless, JSON
answers) for ``initialize``, ``tools/list`` and ``tools/call``; everything else a client
sends gets ``202``. Each ``tools/list`` and ``tools/call`` takes the next action of its
method's script (then ``"ok"``), so the client's handling of what an official SDK server
never sends runs against real sockets. Every JSON-RPC message received is recorded, the ones
answered with a fault too.

Actions: ``ok``, ``sse`` (the answer as an event stream), ``not-json``, ``html`` (a
``text/html`` page), ``wrong-id``, ``deep`` (a result nested past the JSON parser's depth),
``500``, ``cut`` (a JSON body cut off mid-way), ``drop`` (the request is read, the
connection closed without an answer), ``sse-cut`` (an event stream that ends without the
answer), ``sse-garbage`` (an event whose data is not JSON-RPC).
"""

from __future__ import annotations

import json
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ADD_TOOL", "FaultyMcp"]

ADD_TOOL: dict[str, Any] = {
    "name": "add",
    "description": "Add two integers.",
    "inputSchema": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}


class FaultyMcp:
    """The server; ``url`` is its endpoint. ``script(method, *actions)`` queues actions."""

    def __init__(self, tools: Iterable[dict[str, Any]] = (ADD_TOOL,)) -> None:
        self.tools = list(tools)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/mcp"

    def script(self, method: str, *actions: str) -> None:
        with self._lock:
            self._scripts[method].extend(actions)

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.received if m == method)

    def _next(self, method: str) -> str:
        with self._lock:
            queue = self._scripts[method]
            return queue.popleft() if queue else "ok"

    def __enter__(self) -> FaultyMcp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(owner: FaultyMcp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes

        def log_message(self, *args: Any) -> None:
            pass

        def do_DELETE(self) -> None:
            self._send(405, "text/plain", b"")

        def do_GET(self) -> None:
            self._send(405, "text/plain", b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            message = json.loads(body)
            method = message.get("method", "")
            with owner._lock:
                owner.received.append((method, message.get("params") or {}))
            if "id" not in message:  # a notification
                self._send(202, "text/plain", b"")
                return
            rid = message["id"]
            if method == "initialize":
                version = message["params"]["protocolVersion"]
                self._answer(rid, _initialized(version), "ok")
            elif method == "tools/list":
                self._answer(rid, {"tools": owner.tools}, owner._next(method))
            elif method == "tools/call":
                args = message["params"].get("arguments") or {}
                text = str(args.get("a", 0) + args.get("b", 0))
                result = {"content": [{"type": "text", "text": text}], "isError": False}
                self._answer(rid, result, owner._next(method))
            else:
                error = {"code": -32601, "message": f"Method not found: {method}"}
                self._send(
                    200, "application/json", _dump({"jsonrpc": "2.0", "id": rid, "error": error})
                )

        def _answer(self, rid: Any, result: dict[str, Any], action: str) -> None:
            good = _dump({"jsonrpc": "2.0", "id": rid, "result": result})
            if action == "ok":
                self._send(200, "application/json", good)
            elif action == "sse":
                self._send(200, "text/event-stream", b"event: message\ndata: " + good + b"\n\n")
            elif action == "not-json":
                self._send(200, "application/json", b"this is not JSON")
            elif action == "html":
                self._send(200, "text/html", b"<html><body>Bad gateway</body></html>")
            elif action == "wrong-id":
                self._send(200, "application/json", _dump({**json.loads(good), "id": 999_999}))
            elif action == "deep":
                nested: Any = "x"
                for _ in range(300):
                    nested = {"a": nested}
                wrapped = {"jsonrpc": "2.0", "id": rid, "result": {**result, "deep": nested}}
                self._send(200, "application/json", json.dumps(wrapped).encode())
            elif action == "500":
                self._send(500, "text/plain", b"internal error")
            elif action == "cut":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(good)))
                self.end_headers()
                self.wfile.write(good[: len(good) // 2])
                self._hang_up()
            elif action == "drop":
                self._hang_up()
            elif action == "sse-cut":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b": still working\n\n")
                self._hang_up()
            elif action == "sse-garbage":
                self._send(200, "text/event-stream", b"event: message\ndata: {not json\n\n")
            else:  # pragma: no cover - a typo in a test's script
                raise ValueError(f"unknown action {action!r}")

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _hang_up(self) -> None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Handler


def _initialized(version: str) -> dict[str, Any]:
    return {
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "faulty", "version": "1"},
    }


def _dump(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()
