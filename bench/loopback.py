"""A Lambda-compatible Invoke endpoint on 127.0.0.1 that answers after a fixed delay.

It speaks the Lambda REST path ``POST /2015-03-31/functions/<name>/invocations`` closely
enough for boto3 (``endpoint_url=server.url``): ``Event`` gets 202 with an empty body,
``RequestResponse`` gets 200 and ``{"data": null}``. Every request is recorded (invocation
type, decoded payload, handling thread). ``fail`` picks requests to refuse with a 404
``ResourceNotFoundException`` (botocore does not retry it); ``gate`` holds every answer
until it is set, to stall the endpoint.

Used by the benchmarks (as a subprocess, so its threads do not share the measured
interpreter's GIL) and by the dispatch tests (in-process).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Invocation", "LambdaLoopback", "lambda_client"]

_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")


@dataclass(frozen=True)
class Invocation:
    """One Invoke request as the endpoint received it."""

    function_name: str
    invocation_type: str
    payload: dict[str, Any]
    received: float = field(compare=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    server: LambdaLoopback

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._answer(404, {"message": f"unknown path {self.path}"}, "UnknownOperation")
            return
        invocation = Invocation(
            function_name=match.group(1),
            invocation_type=self.headers.get("X-Amz-Invocation-Type", "RequestResponse"),
            payload=json.loads(body or b"null"),
            received=time.perf_counter(),
        )
        server = self.server
        server.gate.wait()
        if server.delay:
            time.sleep(server.delay)
        if server.fail is not None and server.fail(invocation):
            server.record(invocation, failed=True)
            self._answer(404, {"message": "Function not found"}, "ResourceNotFoundException")
            return
        server.record(invocation, failed=False)
        if invocation.invocation_type == "Event":
            self._answer(202, None)
        else:
            self._answer(200, {"data": None})

    def _answer(self, status: int, body: dict[str, Any] | None, error: str = "") -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: one line per request would swamp the benchmark output


class LambdaLoopback(ThreadingHTTPServer):
    """The endpoint; ``start()`` serves it from a daemon thread, ``close()`` stops it."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        delay: float = 0.0,
        fail: Callable[[Invocation], bool] | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.delay = delay
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self.received: list[Invocation] = []
        self.failed: list[Invocation] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, invocation: Invocation, *, failed: bool) -> None:
        with self._lock:
            (self.failed if failed else self.received).append(invocation)

    def start(self) -> LambdaLoopback:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.gate.set()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> LambdaLoopback:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


def lambda_client(url: str, pool: int = 32, max_attempts: int = 4) -> Any:
    """A boto3 Lambda client for the loopback endpoint (dummy credentials, no real AWS)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="loopback",
        aws_secret_access_key="loopback",
        config=Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=pool,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin closes; print the URL first and the request count last."""
    parser = argparse.ArgumentParser(prog="python -m bench.loopback")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds before answering")
    args = parser.parse_args(argv)
    server = LambdaLoopback(delay=args.delay).start()
    print(server.url, flush=True)
    sys.stdin.read()
    print(len(server.received), flush=True)
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
