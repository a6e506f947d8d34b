"""Provider code written for upstream runs unchanged: an upstream-style provider handler on
this base class, against moto, in both stream dispatch modes; AWS errors caught as upstream's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError
from moto import mock_aws

from ai_agent_handler import InvocationError, Utility
from tests.support import REGION, RUN
from tests.support.aws import LambdaCapture, drain
from tests.support.fault_server import FaultServer
from tests.support.provider import ScriptedModelHandler, assemble

LOG = logging.getLogger("test.upstream")

TEXT_REPLY = [
    "Let me check", " the order. ", "<thinking>", "look up #4711", "</thin", "king>",
    " It ships", " today", " <b>before 5 pm</b>", ".", " Anything else?",
]  # fmt: skip
JSON_REPLY = ['{"order', '": "4711", "st', 'atus": "shi', 'pped", "items": [{"sku": "A1"', "}]}"]


def _handler(mode: str, **setting: Any) -> ScriptedModelHandler:
    handler = ScriptedModelHandler(LOG, {"agent_name": "a"}, stream_dispatch=mode, **setting)
    handler.endpoint_id, handler.part_id = "aws-prod", "acme-corp"
    handler.run = dict(RUN)
    handler.connection_id = "ws-1"
    return handler


def _lambda_chunks(sent: LambdaCapture) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    chunks = [
        json.loads(s.payload["params"]["data"]) for s in sent if s.funct == "send_data_to_stream"
    ]
    persisted = [s.payload for s in sent if s.funct != "send_data_to_stream"]
    return chunks, persisted


def _sqs_chunks(queue: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    chunks, persisted = [], []
    for message in drain(queue):
        funct = message.message_attributes["funct"]["StringValue"]
        params = json.loads(message.body)["params"]
        key = message.message_attributes["endpoint_id"]["StringValue"]
        if funct == "send_data_to_stream":
            chunks.append(json.loads(params["data"]))
        else:
            persisted.append({"endpoint_id": key, "funct": funct, "params": params})
    return chunks, persisted


def _run(transport: str, mode: str, json_reply: bool) -> Any:
    """One run of the provider handler on a fresh moto; what the client and the DB receiver got."""
    with mock_aws(config={"lambda": {"use_docker": False}}):
        sent = LambdaCapture()
        handler = _handler(mode, aws_lambda=sent.attach(boto3.client("lambda", region_name=REGION)))
        queue = None
        if transport == "sqs":
            queue = boto3.resource("sqs", region_name=REGION).create_queue(
                QueueName="agent-tasks.fifo",
                Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
            )
            handler.task_queue = queue
        result = handler.stream_json(JSON_REPLY) if json_reply else handler.stream_text(TEXT_REPLY)
        handler.flush()
        chunks, persisted = _lambda_chunks(sent) if queue is None else _sqs_chunks(queue)
    return result, chunks, persisted


def _table(chunks: list[dict[str, Any]]) -> list[tuple[int, str, str, bool]]:
    rows = [(c["index"], c["data_format"], c["chunk_delta"], c["is_message_end"]) for c in chunks]
    return sorted(rows)


@pytest.mark.parametrize("transport", ["lambda", "sqs"])
@pytest.mark.parametrize("json_reply", [False, True], ids=["text", "json"])
def test_an_upstream_style_handler_streams_the_same_in_both_modes(
    transport: str, json_reply: bool
) -> None:
    sync_result, sync_chunks, sync_db = _run(transport, "sync", json_reply)
    bg_result, bg_chunks, bg_db = _run(transport, "background", json_reply)
    assert _table(sync_chunks) == _table(bg_chunks)  # the same chunks, index for index
    shown = assemble(sync_chunks)
    assert shown == assemble(bg_chunks)
    (text,) = shown.values()
    if json_reply:
        assert json.loads(text) == sync_result == bg_result
    else:
        assert text == "".join(TEXT_REPLY) == sync_result == bg_result
        formats = {c["chunk_delta"]: c["data_format"] for c in sync_chunks}
        assert formats["<thinking>"] == formats["</thinking>"] == formats["<b>"] == "xml"
    for persisted in (sync_db, bg_db):
        assert [p["params"]["status"] for p in persisted] == ["in_progress", "completed"]
        assert {p["endpoint_id"] for p in persisted} == {"aws-prod#acme-corp"}


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_the_handler_catches_client_error_as_upstream_handlers_do(
    mode: str, fault_server: FaultServer
) -> None:
    fault_server.script = ["denied"]  # the first call, the run's first persist, is refused
    handler = _handler(mode, aws_lambda=fault_server.lambda_client())
    text = handler.stream_text(TEXT_REPLY)
    handler.flush()
    fault_server.settle()
    assert handler.persist_errors == ["AccessDeniedException"]
    assert text == "".join(TEXT_REPLY)  # the run went on
    delivered = [r for r in fault_server.accepted() if r.funct == "send_data_to_stream"]
    assert assemble(json.loads(r.body["params"]["data"]) for r in delivered) == {
        "ws-1-run-1": "".join(TEXT_REPLY)
    }


@pytest.mark.parametrize(
    ("script", "kind", "code"),
    [
        (["denied"], ClientError, "AccessDeniedException"),
        (["notfound"], ClientError, "ResourceNotFoundException"),
        (["drop"] * 5, BotoCoreError, None),
    ],
)
def test_a_refused_call_is_the_botocore_error_and_ours(
    fault_server: FaultServer, script: list[str], kind: type[Exception], code: str | None
) -> None:
    fault_server.script = list(script)
    client = fault_server.lambda_client()
    with pytest.raises(kind) as caught:
        Utility.invoke_funct_on_aws_lambda(LOG, "ep#p", "insert_update_run", aws_lambda=client)
    error = caught.value
    assert isinstance(error, InvocationError)
    assert (error.funct, error.routing_key) == ("insert_update_run", "ep#p")
    assert str(error).startswith("insert_update_run for routing key ep#p failed")
    assert type(error.__cause__) in type(error).__mro__  # the original, as the cause
    if code is not None:
        assert isinstance(error, ClientError)
        assert error.response["Error"]["Code"] == code
        assert error.operation_name == "Invoke"
    if code == "ResourceNotFoundException":
        # The modeled class botocore raised is caught by the same name on the client.
        assert isinstance(error, client.exceptions.ResourceNotFoundException)
