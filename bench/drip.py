"""An S3 ``GetObject`` endpoint on 127.0.0.1 that can drip its answer, for hanging-source runs.

``GET /<bucket>/<key>`` answers 200 with the object's ``Content-Length`` and ``ETag`` and
then sends the body one byte every ``drip`` seconds (None: all at once), or 304 when
``If-None-Match`` names the current ETag. A read timeout, which bounds each socket read,
never trips on it: only a deadline on the whole fetch does. Used by the provider tests and
the hanging-source benchmark, in process; a boto3 client reaches it with
:func:`s3_client`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DripServer", "s3_client"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DripServer

    def do_GET(self) -> None:
        server = self.server
        server.requests += 1
        _, bucket, key = self.path.split("?", 1)[0].split("/", 2)
        body = server.objects.get((bucket, key))
        if body is None:
            self._head(404, b"<Error><Code>NoSuchKey</Code></Error>")
            return
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", etag)
        self.end_headers()
        drip = server.drip
        try:
            if drip is None:
                self.wfile.write(body)
                return
            for byte in body:
                if server.closing.wait(drip):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:  # the client gave up: that is what a deadline does
            server.cut_off += 1

    def _head(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DripServer(ThreadingHTTPServer):
    """S3 objects on loopback; ``drip`` seconds per body byte (None: no delay)."""

    daemon_threads = True

    def __init__(self, drip: float | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.drip = drip
        self.objects: dict[tuple[str, str], bytes] = {}
        self.requests = 0
        self.cut_off = 0  # answers the client stopped reading
        self.closing = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        time.sleep(0)


def s3_client(url: str, read_timeout: float = 2.0) -> Any:
    """A boto3 S3 client on ``url`` (path-style), without retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=1,
            read_timeout=read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
