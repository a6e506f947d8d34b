"""A scripted AWS on loopback for the reliability suites.

:class:`FaultServer` is a real HTTP server on 127.0.0.1 that speaks just enough of the
Lambda (rest-json) and SQS (json) wire protocols for ``Invoke`` and ``SendMessage``. Each
request takes the next action from a script (``"500"``, ``"throttle"``, ``"drop"``,
``"slow"``, ..., then ``"ok"``), so botocore's real retry logic, error parsing and timeouts
run against it. Every request is recorded with what it carried and how it was answered.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import boto3
from botocore.config import Config

from ai_agent_handler._aws import FLAG_READ_CONFIG, RETRY_CONFIG

from . import REGION

__all__ = ["PATIENT_TIMEOUT", "READ_TIMEOUT", "SLOW_SECONDS", "FaultServer", "Recorded"]

QUEUE_PATH = "/123456789012/agent-tasks.fifo"

#: Seconds the ``slow`` action waits before answering; clients built for timeout cases give
#: up after READ_TIMEOUT, the others wait long enough never to time out on a busy machine.
SLOW_SECONDS = 1.0
READ_TIMEOUT = 0.3
PATIENT_TIMEOUT = 10.0


# -- scripted AWS on loopback -------------------------------------------------------------
@dataclass
class Recorded:
    """One request the server received and the action it answered with."""

    service: str  # "lambda" | "sqs"
    action: str
    key: str | None  # the routing key it carried
    funct: str | None
    body: dict[str, Any]
    accepted: bool  # answered with success, i.e. the call arrived

    def body_params(self) -> dict[str, Any]:
        """The call's ``params``: from the Lambda payload, or the SQS message body."""
        if self.service == "sqs":
            return dict(json.loads(self.body.get("MessageBody") or "{}").get("params") or {})
        return dict(self.body.get("params") or {})


@dataclass
class FaultServer:
    """A loopback HTTP server answering Lambda Invoke / SQS SendMessage from a script."""

    script: list[str] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    default: str = "ok"
    #: S3 objects served to GetObject, by (bucket, key).
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: When set, a GetObject whose ExpectedBucketOwner differs is refused, as S3 does.
    bucket_owner: str | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def next_action(self) -> str:
        with self._lock:
            self._in_flight += 1
            return self.script.pop(0) if self.script else self.default

    def done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every request received so far has been answered (``slow`` ones too)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout):
                raise AssertionError(f"{self._in_flight} requests still in flight")

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def accepted(self) -> list[Recorded]:
        return [r for r in self.requests if r.accepted]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # Clients pointed at this server, with the library's retry policy.
    def lambda_client(self, *, read_timeout: float = PATIENT_TIMEOUT) -> Any:
        config = RETRY_CONFIG.merge(Config(read_timeout=read_timeout, connect_timeout=1))
        return boto3.client("lambda", region_name=REGION, endpoint_url=self.url, config=config)

    def s3_client(self, *, read_timeout: float = PATIENT_TIMEOUT) -> Any:
        """An S3 client with the flag source's own retry policy, path-style addressing."""
        config = FLAG_READ_CONFIG.merge(
            Config(read_timeout=read_timeout, s3={"addressing_style": "path"})
        )
        return boto3.client("s3", region_name=REGION, endpoint_url=self.url, config=config)

    def queue(self, *, read_timeout: float = PATIENT_TIMEOUT) -> Any:
        config = RETRY_CONFIG.merge(Config(read_timeout=read_timeout, connect_timeout=1))
        sqs = boto3.resource("sqs", region_name=REGION, endpoint_url=self.url, config=config)
        return sqs.Queue(self.url + QUEUE_PATH)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # dropped connections are part of the script, not server errors


def _lambda_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"Type": "User", "message": message}).encode()
    return status, {"x-amzn-ErrorType": code, "Content-Type": "application/json"}, body


def _sqs_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.0"}, body


_LAMBDA_FAULTS = {
    "500": (500, "ServiceException", "internal failure"),
    "502": (502, "EC2ThrottledException", "bad gateway"),
    "503": (503, "ServiceUnavailable", "unavailable"),
    "throttle": (429, "TooManyRequestsException", "Rate exceeded"),
    "denied": (403, "AccessDeniedException", "not authorized to perform lambda:InvokeFunction"),
    "notfound": (404, "ResourceNotFoundException", "Function not found"),
}
_S3_FAULTS = {
    "500": (500, "InternalError", "We encountered an internal error."),
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "denied": (403, "AccessDenied", "Access Denied"),
    "notfound": (404, "NoSuchKey", "The specified key does not exist."),
    "wrong-owner": (403, "AccessDenied", "Access Denied"),
}


def _s3_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>r</RequestId></Error>"
    ).encode()
    return status, {"Content-Type": "application/xml"}, body


_SQS_FAULTS = {
    "500": (500, "InternalError", "internal failure"),
    "503": (503, "ServiceUnavailable", "unavailable"),
    "throttle": (400, "RequestThrottled", "Rate exceeded"),
    "denied": (400, "AccessDenied", "not authorized to perform sqs:SendMessage"),
    "notfound": (400, "QueueDoesNotExist", "The specified queue does not exist"),
}


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            action = server.next_action()
            try:
                if "/functions/" in self.path:
                    self._lambda(action, raw)
                else:
                    self._sqs(action, raw)
            except OSError:
                pass  # the client gave up (timeout) and closed the socket first
            finally:
                server.done()

        def do_GET(self) -> None:
            action = server.next_action()
            try:
                self._s3(action)
            except OSError:
                pass
            finally:
                server.done()

        def _s3(self, action: str) -> None:
            bucket, _, key = unquote(self.path.split("?", 1)[0]).lstrip("/").partition("/")
            owner = self.headers.get("x-amz-expected-bucket-owner")
            entry = Recorded(
                service="s3",
                action=action,
                key=None,
                funct=None,
                body={"bucket": bucket, "key": key, "expected_bucket_owner": owner},
                accepted=False,
            )
            server.record(entry)
            if action == "drop":
                self._drop()
                return
            if action == "slow":
                time.sleep(SLOW_SECONDS)
                action = "ok"
            if owner is not None and server.bucket_owner not in (None, owner):
                action = "wrong-owner"
            if action in _S3_FAULTS:
                self._answer(*_s3_error(*_S3_FAULTS[action]))
                return
            data = server.objects.get((bucket, key))
            if data is None:
                self._answer(*_s3_error(*_S3_FAULTS["notfound"]))
                return
            etag = '"' + hashlib.md5(data).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, {"ETag": etag}, b"")
                return
            entry.accepted = True
            self._answer(200, {"ETag": etag, "Content-Type": "application/json"}, data)

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _drop(self) -> None:
            # Close without an answer: the client sees the connection reset / closed.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _lambda(self, action: str, raw: bytes) -> None:
            payload = json.loads(raw or b"{}")
            invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            function = unquote(self.path.split("/functions/", 1)[1].split("/", 1)[0])
            entry = Recorded(
                service="lambda",
                action=action,
                key=payload.get("endpoint_id"),
                funct=payload.get("funct"),
                body={"function": function, "type": invocation_type, **payload},
                accepted=False,
            )
            if action == "drop":
                server.record(entry)
                self._drop()
                return
            if action == "slow":
                # Processed, but answered after the client gave up: a real duplicate risk.
                time.sleep(SLOW_SECONDS)
                action = "ok"
            if action in _LAMBDA_FAULTS:
                server.record(entry)
                self._answer(*_lambda_error(*_LAMBDA_FAULTS[action]))
                return
            entry.accepted = True
            server.record(entry)
            if action == "function-error":
                body = json.dumps({"errorMessage": "boom", "errorType": "Exception"}).encode()
                self._answer(200, {"X-Amz-Function-Error": "Unhandled"}, body)
            elif invocation_type == "Event":
                self._answer(202, {}, b"")
            else:
                self._answer(200, {}, json.dumps({"data": {"ok": True}}).encode())

        def _sqs(self, action: str, raw: bytes) -> None:
            request = json.loads(raw or b"{}")
            batch = self.headers.get("X-Amz-Target", "").endswith("SendMessageBatch")
            # One record per message; a batch answers for each of its entries.
            entries = request.get("Entries", []) if batch else [request]
            records = []
            for entry_request in entries:
                attributes = entry_request.get("MessageAttributes", {})
                records.append(
                    Recorded(
                        service="sqs",
                        action=action,
                        key=attributes.get("endpoint_id", {}).get("StringValue"),
                        funct=attributes.get("funct", {}).get("StringValue"),
                        body=entry_request,
                        accepted=False,
                    )
                )
            if action == "drop":
                for entry in records:
                    server.record(entry)
                self._drop()
                return
            if action == "slow":
                time.sleep(SLOW_SECONDS)
                action = "ok"
            if action in _SQS_FAULTS:
                for entry in records:
                    server.record(entry)
                self._answer(*_sqs_error(*_SQS_FAULTS[action]))
                return
            answers = []
            failed = []
            for position, entry in enumerate(records):
                # "partial": SQS accepts the batch call but refuses its first entry.
                entry.accepted = not (action == "partial" and position == 0)
                server.record(entry)
                message_body = str(entry.body.get("MessageBody", ""))
                answer = {
                    "Id": entry.body.get("Id"),
                    "MessageId": str(uuid.uuid4()),
                    "MD5OfMessageBody": hashlib.md5(message_body.encode()).hexdigest(),
                    "SequenceNumber": "1",
                }
                if entry.accepted:
                    answers.append(answer)
                else:
                    failed.append(
                        {"Id": answer["Id"], "Code": "InternalError", "SenderFault": False}
                    )
            document: dict[str, Any] = (
                {"Successful": answers, "Failed": failed} if batch else answers[0]
            )
            headers = {"Content-Type": "application/x-amz-json-1.0"}
            self._answer(200, headers, json.dumps(document).encode())

    return Handler
