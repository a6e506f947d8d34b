"""Shared fixtures: a local AWS (moto, in process) and capture of what boto3 really sent."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from moto import mock_aws

from ai_agent_handler import AIAgentEventHandler

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so no test can ever reach a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "ROLLOUT_PHASE", "FLAG_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


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


@pytest.fixture
def aws() -> Iterator[None]:
    """moto's in-process AWS; Lambda accepts Invoke without Docker."""
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield


@pytest.fixture
def sent(aws: None) -> LambdaCapture:
    return LambdaCapture()


@pytest.fixture
def lambda_client(sent: LambdaCapture) -> Any:
    return sent.attach(boto3.client("lambda", region_name=REGION))


@pytest.fixture
def fifo_queue(aws: None) -> Any:
    """A FIFO queue with content-based deduplication (as the task queue is configured)."""
    sqs = boto3.resource("sqs", region_name=REGION)
    return sqs.create_queue(
        QueueName="agent-tasks.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )


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


RUN = {"run_uuid": "run-1", "updated_by": "tester", "thread": {"thread_uuid": "thread-1"}}


@pytest.fixture
def make_handler(lambda_client: Any) -> Any:
    """Build a handler the way the engine does, with the moto Lambda client injected."""

    def make(
        endpoint_id: str | None = "aws-prod",
        part_id: str | None = "acme-corp",
        run: dict[str, Any] | None = RUN,
        connection_id: str | None = "conn-1",
        **setting: Any,
    ) -> AIAgentEventHandler:
        setting.setdefault("stream_dispatch", "sync")
        handler = AIAgentEventHandler(
            logging.getLogger("test"), {"agent_name": "t"}, aws_lambda=lambda_client, **setting
        )
        handler.endpoint_id = endpoint_id
        handler.part_id = part_id
        handler.run = dict(run) if run is not None else None
        handler.connection_id = connection_id
        return handler

    return make
