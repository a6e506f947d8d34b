"""examples/agent_task_receiver.py receives what a real handler sent, on a local AWS (moto).

The handler's requests are taken as they left boto3 (Lambda ``Invoke`` payloads, SQS
messages read back from a FIFO queue and shaped as Lambda delivers them) and given to the
example's ``handler``; its table is DynamoDB and its WebSocket API the API Gateway
management API, both moto. The receiver's EMF lines are read from stdout, the keys it read
from the table's ``GetItem`` requests.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from ai_agent_handler.pytest_plugin import PartitionKeyFlag
from ai_agent_handler.receiver import (
    SHADOW_COMPOSITE_ONLY,
    SHADOW_DIFFERENT,
    SHADOW_LEGACY_ONLY,
    SHADOW_METRICS,
    SHADOW_READ_ERRORS,
    SHADOW_SAME,
    InvalidRoutingKey,
)
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
        self.got: list[str] = []  # the partition key of every GetItem, in order
        self.table.meta.client.meta.events.register(
            "before-call.dynamodb.GetItem", self._record_get
        )

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        connection_id = params["url_path"].rsplit("/", 1)[1]
        self.posted.append((connection_id, json.loads(params["body"])))

    def _record_get(self, params: dict[str, Any], **_: Any) -> None:
        self.got.append(json.loads(params["body"])["Key"]["pk"]["S"])

    def read_keys(self) -> list[str]:
        """The partition keys read since the last call."""
        keys, self.got = self.got, []
        return keys

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


@pytest.fixture
def shadowing(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Receiver]:
    """The example's function started with ``SHADOW_SAMPLE=1``: every composite read shadowed."""
    monkeypatch.setenv("AI_AGENT_HANDLER_METRICS", "emf")
    monkeypatch.setenv("ROLLOUT_PHASE", "staging")
    monkeypatch.setenv("SHADOW_SAMPLE", "1")
    # What the module does when Lambda loads it, with this environment.
    monkeypatch.setattr(example, "SHADOW_SAMPLE", example.shadow_sample_from_environment())
    built = Receiver(capsys)
    assert built.functions.shadow_sample == 1.0
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


# -- shadow reads (SHADOW_SAMPLE=1) ----------------------------------------------------------
def _shadow(doc: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(key_scheme, the ``shadow`` property, the one shadow counter at 1), checking that a
    shadowed line carries all five shadow counters and an unshadowed one none."""
    counters = [*SHADOW_METRICS, SHADOW_READ_ERRORS]
    present = [name for name in counters if name in doc]
    assert present in ([], counters), doc
    ones = [name for name in present if doc[name] == 1]
    assert len(ones) <= 1 and all(doc[name] in (0, 1) for name in present), doc
    return doc["key_scheme"], doc.get("shadow"), ones[0] if ones else None


def test_a_run_written_under_both_keys_is_compared(
    shadowing: Receiver,
    partition_key_flag: PartitionKeyFlag,
    make_handler: Any,
    sent: LambdaCapture,
) -> None:
    partition_key_flag.legacy()
    make_handler().invoke_async_funct("insert_update_run", status="in_progress")
    deliver(sent)
    assert [_shadow(doc) for doc in shadowing.reads()] == [("legacy", None, None)]  # one key
    assert shadowing.read_keys() == [LEGACY]

    partition_key_flag.composite()
    handler = make_handler()
    handler.invoke_async_funct("insert_update_run", status="in_progress")  # copies it over
    handler.invoke_async_funct("get_run")
    handler.invoke_async_funct("insert_update_run", status="completed")  # only this copy
    handler.invoke_async_funct("get_run")
    _, _, _, found = deliver(sent)

    assert found["data"]["status"] == "completed"
    assert found["data"]["pk"] == COMPOSITE
    assert [_shadow(doc) for doc in shadowing.reads()] == [
        ("composite", "LegacyOnly", SHADOW_LEGACY_ONLY),  # the fallback found it: backfill owed
        ("composite", "Same", SHADOW_SAME),  # both keys, equal but for pk
        ("composite", "Same", SHADOW_SAME),  # insert_update_run reads before it writes
        ("composite", "Different", SHADOW_DIFFERENT),  # the legacy copy is still in_progress
    ]
    # The fallback read did the shadow's work on the first call; one extra read afterwards.
    assert shadowing.read_keys() == [COMPOSITE, LEGACY] * 4
    assert shadowing.keys() == [(LEGACY, "run#run-1"), (COMPOSITE, "run#run-1")]


def test_a_connection_registered_under_the_legacy_key_only(
    shadowing: Receiver, make_handler: Any, sent: LambdaCapture
) -> None:
    shadowing.table.put_item(Item={"pk": LEGACY, "sk": "connection#conn-1"})
    make_handler().send_data_to_stream(index=0, chunk_delta="Hello")

    assert deliver(sent) == [{"data": True}]  # the chunk still reaches the connection
    (doc,) = shadowing.reads()
    assert _shadow(doc) == ("composite", "LegacyOnly", SHADOW_LEGACY_ONLY)
    assert (doc["LegacyFallbackReads"], doc["LegacyFallbackHits"]) == (1, 1)
    assert shadowing.read_keys() == [COMPOSITE, LEGACY]  # no read beyond the fallback's


def test_a_run_written_under_the_composite_key_only(
    shadowing: Receiver, make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    handler.invoke_async_funct("insert_update_run", status="in_progress")
    handler.invoke_async_funct("get_run")
    _, found = deliver(sent)

    assert found["data"]["pk"] == COMPOSITE
    assert [_shadow(doc) for doc in shadowing.reads()] == [
        ("composite", "Neither", None),  # a new run: under neither key, no outcome
        ("composite", "CompositeOnly", SHADOW_COMPOSITE_ONLY),
    ]
    assert shadowing.read_keys() == [COMPOSITE, LEGACY, COMPOSITE, LEGACY]


def test_no_shadow_read_when_the_sample_is_0(
    receiver: Receiver, make_handler: Any, sent: LambdaCapture
) -> None:
    receiver.functions.shadow_sample = 0.0
    receiver.table.put_item(Item={"pk": COMPOSITE, "sk": "connection#conn-1"})
    receiver.table.put_item(Item={"pk": LEGACY, "sk": "connection#conn-1"})
    make_handler().send_data_to_stream(index=0, chunk_delta="Hello")

    assert deliver(sent) == [{"data": True}]
    assert [_shadow(doc) for doc in receiver.reads()] == [("composite", None, None)]
    assert receiver.read_keys() == [COMPOSITE]


EXAMPLE = Path(example.__file__ or "")


def _started(monkeypatch: pytest.MonkeyPatch, value: str | None) -> ModuleType:
    """The example module loaded afresh, as Lambda's init does, with ``SHADOW_SAMPLE``."""
    if value is None:
        monkeypatch.delenv("SHADOW_SAMPLE", raising=False)
    else:
        monkeypatch.setenv("SHADOW_SAMPLE", value)
    spec = importlib.util.spec_from_file_location("agent_task_started", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("value", "sample"),
    [(None, 0.01), ("", 0.01), ("1", 1.0), ("0", 0.0), (" 0.25 ", 0.25), ("1e-3", 0.001)],
)
def test_the_sample_is_read_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str | None, sample: float
) -> None:
    module = _started(monkeypatch, value)
    started: float = module.SHADOW_SAMPLE
    assert started == sample
    assert module.TaskFunctions(table=None, connections=None).shadow_sample == sample


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1", "nan", "inf", "1%", "0,5"])
def test_an_invalid_sample_fails_the_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ValueError) as caught:
        _started(monkeypatch, value)
    message = str(caught.value)
    assert message.startswith("SHADOW_SAMPLE must be a number from 0")
    assert repr(value) in message


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
