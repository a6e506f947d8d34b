"""examples/agent_task_receiver.py receives what a real handler sent, on a local AWS (moto).

The handler's requests are taken as they left boto3 (Lambda ``Invoke`` payloads, SQS
messages read back from a FIFO queue and shaped as Lambda delivers them) and given to the
example's ``handler``; its table is DynamoDB and its WebSocket API the API Gateway
management API, both moto. The receiver's EMF lines are read from stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from ai_agent_handler.pytest_plugin import PartitionKeyFlag
from ai_agent_handler.receiver import InvalidRoutingKey
from examples import agent_task_receiver as example
from tests.support import REGION
from tests.support.aws import LambdaCapture, create_task_table, drain

WEBSOCKET_API_URL = f"https://ws1.execute-api.{REGION}.amazonaws.com/prod"
COMPOSITE, LEGACY = "aws-prod#acme-corp", "aws-prod"


def create_table() -> Any:
    """The example's table: partition key ``pk`` (the routing key), sort key ``sk``."""
    return create_task_table(boto3.resource("dynamodb", region_name=REGION))


class Receiver:
    """The example's function on a moto table, with every chunk it posted recorded."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.table = create_table()
        self.posted: list[tuple[str, dict[str, Any]]] = []
        connections = boto3.client(
            "apigatewaymanagementapi", region_name=REGION, endpoint_url=WEBSOCKET_API_URL
        )
        connections.meta.events.register(
            "before-call.apigatewaymanagementapi.PostToConnection", self._record
        )
        self.functions = example.TaskFunctions(self.table, connections)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        connection_id = params["url_path"].rsplit("/", 1)[1]
        self.posted.append((connection_id, json.loads(params["body"])))

    def keys(self) -> list[tuple[str, str]]:
        return sorted((item["pk"], item["sk"]) for item in self.table.scan()["Items"])

    def reads(self) -> list[dict[str, Any]]:
        """The receiver's EMF lines written since the last call."""
        lines = self.capsys.readouterr().out.splitlines()
        docs = [json.loads(line) for line in lines if line.startswith("{")]
        return [doc for doc in docs if "ReceiverReads" in doc]


@pytest.fixture
def receiver(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Receiver]:
    monkeypatch.setenv("AI_AGENT_HANDLER_METRICS", "emf")
    monkeypatch.setenv("ROLLOUT_PHASE", "staging")
    built = Receiver(capsys)
    monkeypatch.setattr(example, "_functions", built.functions)
    yield built


def deliver(sent: LambdaCapture) -> list[Any]:
    """Every request the handler sent since the last call, given to the example's handler."""
    results = [example.handler(request.payload, None) for request in sent]
    sent.clear()
    return results


def lambda_record(message: Any) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping delivers it (camelCase attributes)."""
    return {
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": message.attributes,
        "messageAttributes": {
            name: {
                "stringValue": value["StringValue"],
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.message_attributes.items()
        },
        "md5OfBody": message.md5_of_body,
        "eventSource": "aws:sqs",
        "awsRegion": REGION,
    }


def _counts(doc: dict[str, Any]) -> tuple[str, int, int, int, bool]:
    """(key_scheme, ReceiverReads, LegacyFallbackReads, LegacyFallbackHits, found)"""
    return (
        doc["key_scheme"],
        doc["ReceiverReads"],
        doc["LegacyFallbackReads"],
        doc["LegacyFallbackHits"],
        doc["found"],
    )


def test_legacy_written_data_is_found_by_a_composite_call(
    receiver: Receiver,
    partition_key_flag: PartitionKeyFlag,
    make_handler: Any,
    sent: LambdaCapture,
) -> None:
    partition_key_flag.legacy()
    make_handler().invoke_async_funct("insert_update_run", status="in_progress")
    assert [(s.key, s.payload["key_scheme"]) for s in sent] == [(LEGACY, "legacy")]
    deliver(sent)
    assert [_counts(doc) for doc in receiver.reads()] == [("legacy", 1, 0, 0, False)]

    partition_key_flag.composite()  # the endpoint turns composite
    handler = make_handler()
    handler.invoke_async_funct("get_run")
    handler.invoke_async_funct("insert_update_run", status="completed")
    handler.invoke_async_funct("get_run")
    assert [(s.key, s.payload["key_scheme"]) for s in sent] == [(COMPOSITE, "composite")] * 3
    found, _, updated = deliver(sent)

    assert found["data"]["status"] == "in_progress"  # the legacy item, through the fallback
    assert found["data"]["pk"] == LEGACY
    assert updated["data"] == {**found["data"], "status": "completed", "pk": COMPOSITE}
    assert [_counts(doc) for doc in receiver.reads()] == [
        ("composite", 1, 1, 1, True),  # get_run: composite missed, legacy found
        ("composite", 1, 1, 1, True),  # insert_update_run reads before it writes
        ("composite", 1, 0, 0, True),  # now under the composite key: no fallback
    ]
    # Each write under the key its call came with; the legacy item is left as it was.
    assert receiver.keys() == [(LEGACY, "run#run-1"), (COMPOSITE, "run#run-1")]
    old = receiver.table.get_item(Key={"pk": LEGACY, "sk": "run#run-1"})["Item"]
    assert old["status"] == "in_progress"


def test_composite_written_data_is_found_by_a_composite_call(
    receiver: Receiver, make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()  # composite: the plugin's default
    handler.invoke_async_funct("insert_update_run", status="in_progress")
    handler.invoke_async_funct("get_run")
    _, found = deliver(sent)

    assert found["data"] == {
        "pk": COMPOSITE,
        "sk": "run#run-1",
        "status": "in_progress",
        "thread_uuid": "thread-1",
        "updated_by": "tester",
    }
    assert [_counts(doc) for doc in receiver.reads()] == [
        # A new run: nothing under either key yet. This fallback read finds nothing; only
        # fallback reads that hit (LegacyFallbackHits) mean the legacy keys still matter.
        ("composite", 1, 1, 0, False),
        ("composite", 1, 0, 0, True),
    ]
    assert receiver.keys() == [(COMPOSITE, "run#run-1")]


def test_chunks_reach_a_connection_registered_under_the_legacy_key(
    receiver: Receiver, make_handler: Any, sent: LambdaCapture
) -> None:
    # The $connect route registered the connection before the endpoint turned composite.
    receiver.table.put_item(Item={"pk": LEGACY, "sk": "connection#conn-1"})
    handler = make_handler()
    handler.send_data_to_stream(index=0, chunk_delta="Hello")
    handler.send_data_to_stream(index=1, is_message_end=True)
    chunks = [json.loads(s.payload["params"]["data"]) for s in sent]
    assert {s.key for s in sent} == {COMPOSITE}

    assert deliver(sent) == [{"data": True}, {"data": True}]
    assert receiver.posted == [("conn-1", chunk) for chunk in chunks]
    assert [_counts(doc) for doc in receiver.reads()] == [("composite", 1, 1, 1, True)] * 2


def test_a_chunk_for_a_connection_the_endpoint_does_not_have_is_dropped(
    receiver: Receiver, make_handler: Any, sent: LambdaCapture
) -> None:
    receiver.table.put_item(Item={"pk": "aws-other", "sk": "connection#conn-1"})
    make_handler().send_data_to_stream(index=0, chunk_delta="Hello")
    assert deliver(sent) == [{"data": False}]
    assert receiver.posted == []


def test_sqs_records_are_received_in_order(
    receiver: Receiver, make_handler: Any, fifo_queue: Any, sent: LambdaCapture
) -> None:
    receiver.table.put_item(Item={"pk": LEGACY, "sk": "connection#conn-1"})
    handler = make_handler()
    handler.task_queue = fifo_queue
    handler.invoke_async_funct("insert_update_run", status="in_progress")
    handler.send_data_to_stream(index=0, chunk_delta="Hi")
    handler.send_data_to_stream(index=1, is_message_end=True)
    assert not sent  # with a task queue nothing goes to Lambda directly
    messages = drain(fifo_queue)
    assert {m.message_attributes["key_scheme"]["StringValue"] for m in messages} == {"composite"}

    result = example.handler({"Records": [lambda_record(m) for m in messages]}, None)

    assert result == {"batchItemFailures": []}
    run = receiver.table.get_item(Key={"pk": COMPOSITE, "sk": "run#run-1"})["Item"]
    assert run["status"] == "in_progress"
    assert [chunk["chunk_delta"] for _, chunk in receiver.posted] == ["Hi", ""]
    assert [_counts(doc) for doc in receiver.reads()] == [
        ("composite", 1, 1, 0, False),
        ("composite", 1, 1, 1, True),
        ("composite", 1, 1, 1, True),
    ]


INVALID = [
    # (endpoint_id, key_scheme) a sender could put on the wire; the handler never does
    ("aws-prod#", "composite"),
    ("#acme-corp", "composite"),
    ("aws-prod#acme-corp#x", "composite"),
    ("aws-prod", "composite"),
    ("aws-prod#acme-corp", "legacy"),
    ("aws-prod#acme-corp", None),  # no key_scheme: legacy, which cannot hold "#"
    ("aws-prod#acme-corp", "Composite"),
    (" aws-prod", "legacy"),
    ("", "legacy"),
]


@pytest.mark.parametrize(("key", "scheme"), INVALID)
def test_an_invalid_key_is_refused_and_nothing_is_written(
    receiver: Receiver, make_handler: Any, sent: LambdaCapture, key: str, scheme: str | None
) -> None:
    make_handler().invoke_async_funct("insert_update_run", status="in_progress")
    (request,) = sent
    payload = {**request.payload, "endpoint_id": key, "key_scheme": scheme}
    if scheme is None:
        del payload["key_scheme"]

    with pytest.raises(InvalidRoutingKey):
        example.handler(payload, None)

    assert receiver.keys() == []
    assert receiver.reads() == []  # refused before anything was read


@pytest.mark.parametrize(("key", "scheme"), INVALID)
def test_an_invalid_key_on_sqs_goes_back_with_the_rest_of_the_batch(
    receiver: Receiver, make_handler: Any, fifo_queue: Any, key: str, scheme: str | None
) -> None:
    handler = make_handler()
    handler.task_queue = fifo_queue
    handler.invoke_async_funct("insert_update_run", status="in_progress")
    handler.invoke_async_funct("insert_update_run", status="completed")
    first, second = (lambda_record(m) for m in drain(fifo_queue))
    first["messageAttributes"]["endpoint_id"]["stringValue"] = key
    if scheme is None:
        del first["messageAttributes"]["key_scheme"]
    else:
        first["messageAttributes"]["key_scheme"]["stringValue"] = scheme

    result = example.handler({"Records": [first, second]}, None)

    # The FIFO group stays in order: the later message is not processed before the bad one.
    assert result == {
        "batchItemFailures": [
            {"itemIdentifier": first["messageId"]},
            {"itemIdentifier": second["messageId"]},
        ]
    }
    assert receiver.keys() == []


def test_the_function_builds_its_clients_from_its_environment(
    aws: None, monkeypatch: pytest.MonkeyPatch, make_handler: Any, sent: LambdaCapture
) -> None:
    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
    from moto.core.models import DEFAULT_ACCOUNT_ID

    create_table().put_item(Item={"pk": COMPOSITE, "sk": "connection#conn-1"})
    monkeypatch.setenv("TASK_TABLE", "agent-tasks")
    monkeypatch.setenv("WEBSOCKET_API_URL", WEBSOCKET_API_URL)
    monkeypatch.setattr(example, "_functions", None)
    make_handler().send_data_to_stream(index=0, chunk_delta="Hello")

    assert deliver(sent) == [{"data": True}]
    assert example.functions() is example.functions()  # built once per environment
    backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID][REGION]
    assert json.loads(backend.connections["conn-1"].data)["chunk_delta"] == "Hello"
