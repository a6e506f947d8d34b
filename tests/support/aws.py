"""What left boto3 and the library, read back: Lambda requests, SQS messages, EMF lines."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = ["EmfCapture", "LambdaCapture", "SentInvoke", "create_task_table", "drain"]


@dataclass
class SentInvoke:
    """One Lambda Invoke request as it left boto3."""

    function_name: str
    invocation_type: str
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.payload["endpoint_id"])

    @property
    def funct(self) -> str:
        return str(self.payload["funct"])


class LambdaCapture(list[SentInvoke]):
    """Every Invoke request a client sent, parsed from the wire (URL, header, body)."""

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-send.lambda.Invoke", self._record)
        return client

    def _record(self, request: Any, **_: Any) -> None:
        # URL: .../2015-03-31/functions/<name>/invocations
        name = unquote(request.url.split("/functions/", 1)[1].split("/", 1)[0])
        invocation_type = request.headers.get("X-Amz-Invocation-Type", b"RequestResponse")
        if isinstance(invocation_type, bytes):
            invocation_type = invocation_type.decode()
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        self.append(SentInvoke(name, invocation_type, json.loads(body)))

    def keys(self) -> list[str]:
        return [sent.key for sent in self]


def drain(queue: Any) -> list[Any]:
    """Every message in the queue, in delivery order, with all attributes."""
    out: list[Any] = []
    while True:
        batch = queue.receive_messages(
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        if not batch:
            return out
        for message in batch:
            out.append(message)
            message.delete()


class EmfCapture(io.StringIO):
    """An EMF stream whose lines can be read back as documents."""

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line]

    def total(self, metric: str, **dimensions: str) -> int:
        """The sum of ``metric`` over lines matching ``dimensions``."""
        out = 0
        for doc in self.documents():
            if metric in doc and all(doc.get(k) == v for k, v in dimensions.items()):
                out += int(doc[metric])
        return out


def create_task_table(dynamodb: Any, name: str = "agent-tasks") -> Any:
    """A receiver's table on a boto3 DynamoDB resource: partition key ``pk`` (the routing
    key), sort key ``sk``."""
    return dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


class SessionClock:
    """The MCP session module's clock (tool-list ages, idle sessions), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
