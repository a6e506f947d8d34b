"""Background stream dispatch: order per SQS group, backpressure, failure reports, exit drain.

Real parts only: moto (in process) for Lambda and SQS FIFO, a loopback Lambda endpoint on
127.0.0.1 speaking the Invoke REST path, real worker threads and a real child process.
Nothing here asserts on time; waits are bounded only so a broken build fails instead of
hanging.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber

from ai_agent_handler import (
    AIAgentEventHandler,
    InvocationError,
    StreamDeliveryError,
    StreamReport,
    Utility,
)
from ai_agent_handler.pytest_plugin import PartitionKeyFlag
from ai_agent_handler.transport.invoke import json_dumps
from ai_agent_handler.transport.stream import StreamDispatcher, encode_chunk
from bench.loopback import Invocation, LambdaLoopback, lambda_client
from tests.support import REGION, REPO
from tests.support.aws import LambdaCapture, drain

LOG = logging.getLogger("test.dispatch")
KEY = "aws-prod#acme-corp"


def run(uuid: str = "run-1") -> dict[str, Any]:
    return {"run_uuid": uuid, "updated_by": "tester", "thread": {"thread_uuid": "thread-1"}}


def stream_handler(
    dispatcher: StreamDispatcher | None,
    *,
    client: Any = None,
    queue: Any = None,
    connection_id: str = "conn-1",
    **setting: Any,
) -> AIAgentEventHandler:
    """A handler set up the way the engine does, streaming through ``dispatcher``."""
    handler = AIAgentEventHandler(LOG, {"agent_name": "t"}, aws_lambda=client, **setting)
    handler.endpoint_id = "aws-prod"
    handler.part_id = "acme-corp"
    handler.run = run()
    handler.connection_id = connection_id
    handler.task_queue = queue
    if dispatcher is not None:
        handler.stream_dispatcher = dispatcher
    return handler


@pytest.fixture
def dispatcher() -> Iterator[StreamDispatcher]:
    """A private dispatcher per test, so no test waits on another's chunks."""
    own = StreamDispatcher(workers=4, queue_size=100)
    yield own
    own.close(timeout=5)


class Gate:
    """A botocore event hook that holds requests until opened (a stalled endpoint).

    On ``before-call`` it runs before the request is built, so a capture on ``before-send``
    sees only requests that got through.
    """

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.threads: list[int] = []

    def __call__(self, **_: Any) -> None:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if not self.open.wait(timeout=20):
            raise AssertionError("gate never opened")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.001)


# -- the chunk encoding ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("group", "data_format", "index", "delta", "end"),
    [
        ("conn-1-run-1", "text", 0, "Hello world", False),
        ("conn-1-run-1-rs#2", "xml", 17, '<tag a="1">', True),
        ("c", "text", 3, 'quote " backslash \\ newline \n tab \t nul \x00', False),
        ("c", "text", 4, "unicode: é ü 汉字 😀 \u2028", False),
        ("c", "json", 5, "", True),
        ("c", "text", True, "bool index", False),  # bool is not a plain int: general path
        ("c", "text", Decimal("7"), "decimal index", False),
        ("c", "text", 2**70, "big index", False),
    ],
)
def test_chunk_encoding_is_the_wire_format(
    group: str, data_format: str, index: Any, delta: str, end: bool
) -> None:
    expected = json_dumps(
        {
            "message_group_id": group,
            "data_format": data_format,
            "index": index,
            "chunk_delta": delta,
            "is_message_end": end,
        }
    )
    assert encode_chunk(group, data_format, index, delta, end) == expected


# -- sync mode and the patched seam ---------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", "rs#1"])
def test_sync_mode_is_upstream_one_call_per_chunk_in_the_callers_thread(
    lambda_client: Any, sent: LambdaCapture, suffix: str
) -> None:
    threads: list[int] = []
    lambda_client.meta.events.register(
        "before-send.lambda.Invoke", lambda **_: threads.append(threading.get_ident())
    )
    handler = stream_handler(None, client=lambda_client, stream_dispatch="sync")
    for index in range(5):
        handler.send_data_to_stream(index=index, chunk_delta=f"c{index}", suffix=suffix)
        assert len(sent) == index + 1  # sent before the call returned
    assert threads == [threading.get_ident()] * 5
    group = "conn-1-run-1" + (f"-{suffix}" if suffix else "")
    assert [json.loads(s.payload["params"]["data"]) for s in sent] == [
        {
            "chunk_delta": f"c{i}",
            "data_format": "text",
            "index": i,
            "is_message_end": False,
            "message_group_id": group,
        }
        for i in range(5)
    ]
    assert handler.flush() == StreamReport()  # nothing went through a dispatcher


def test_sync_mode_raises_from_the_failing_chunk() -> None:
    with LambdaLoopback(fail=lambda _: True) as server:
        handler = stream_handler(
            None, client=lambda_client(server.url, max_attempts=1), stream_dispatch="sync"
        )
        with pytest.raises(InvocationError, match="ResourceNotFoundException"):
            handler.send_data_to_stream(index=0, chunk_delta="x")


@pytest.mark.parametrize("setting", [{}, {"stream_dispatch": "background"}])
def test_a_patched_utility_sees_every_chunk_before_the_call_returns(
    dispatcher: StreamDispatcher, setting: dict[str, Any]
) -> None:
    # The contract's test seam: code outside the repo patches the class attribute and reads
    # call_args right away, with the routing key as the second positional argument.
    threads: list[int] = []
    with mock.patch.object(Utility, "invoke_funct_on_aws_lambda") as patched:
        patched.side_effect = lambda *a, **k: threads.append(threading.get_ident())
        handler = stream_handler(dispatcher, **setting)
        for index in range(3):
            handler.send_data_to_stream(index=index, chunk_delta="x", is_message_end=index == 2)
            assert patched.call_count == index + 1
            args, kwargs = patched.call_args
            assert args[1] == KEY
            assert args[2] == "send_data_to_stream"
            assert kwargs["message_group_id"] == "conn-1-run-1"
            assert json.loads(kwargs["params"]["data"])["index"] == index
    assert threads == [threading.get_ident()] * 3
    assert dispatcher.high_water == 0


def test_an_unknown_dispatch_mode_is_refused() -> None:
    handler = stream_handler(None, stream_dispatch="threads")
    with pytest.raises(ValueError, match="stream_dispatch"):
        handler.send_data_to_stream(chunk_delta="x")


@pytest.mark.parametrize("timeout", ["nan", float("nan"), -1, "soon"])
def test_a_flush_timeout_that_cannot_work_is_refused_before_anything_is_sent(
    dispatcher: StreamDispatcher, lambda_client: Any, sent: LambdaCapture, timeout: object
) -> None:
    with pytest.raises(ValueError, match="stream_flush_timeout"):
        stream_handler(dispatcher, client=lambda_client, stream_flush_timeout=timeout)
    handler = stream_handler(None, client=lambda_client, stream_flush_timeout=timeout)
    with pytest.raises(ValueError, match="stream_flush_timeout"):
        handler.send_data_to_stream(chunk_delta="x")
    assert len(sent) == 0


@pytest.mark.parametrize("timeout", [float("inf"), "inf", None])
def test_an_endless_flush_timeout_waits_for_every_chunk(
    dispatcher: StreamDispatcher, lambda_client: Any, sent: LambdaCapture, timeout: object
) -> None:
    handler = stream_handler(dispatcher, client=lambda_client, stream_flush_timeout=timeout)
    handler.send_data_to_stream(index=0, chunk_delta="x")
    handler.send_data_to_stream(index=1, is_message_end=True)
    assert len(sent) == 2


def test_a_flush_after_the_message_end_does_not_read_as_nothing_sent(
    dispatcher: StreamDispatcher, lambda_client: Any, sent: LambdaCapture
) -> None:
    handler = stream_handler(dispatcher, client=lambda_client)
    for index in range(7):
        handler.send_data_to_stream(index=index, chunk_delta=f"c{index}")
    handler.send_data_to_stream(index=7, is_message_end=True)
    assert len(sent) == 8
    report = handler.flush()
    assert (report.delivered, report.failed, report.pending) == (0, 0, 0)  # since the end
    assert (report.earlier_delivered, report.earlier_failed) == (8, 0)
    assert str(report) == "no chunk since the previous report; earlier: 8 delivered, 0 failed"
    handler.send_data_to_stream(index=8, chunk_delta="more")
    assert str(handler.flush()) == (
        "1 delivered, 0 failed, 0 pending; earlier: 8 delivered, 0 failed"
    )


# -- background Lambda ----------------------------------------------------------------------
def test_background_lambda_returns_first_and_delivers_by_the_message_end(
    dispatcher: StreamDispatcher, lambda_client: Any, sent: LambdaCapture
) -> None:
    gate = Gate()
    gate.open.clear()
    lambda_client.meta.events.register("before-call.lambda.Invoke", gate)
    handler = stream_handler(dispatcher, client=lambda_client)
    for index in range(6):
        handler.send_data_to_stream(index=index, chunk_delta=f"c{index}")
    gate.entered.wait(10)
    assert len(sent) == 0  # the endpoint is stalled, yet every call returned
    gate.open.set()
    handler.send_data_to_stream(index=6, chunk_delta="end", is_message_end=True)
    # The message end waited for everything before it; nothing is left behind.
    assert sorted(json.loads(s.payload["params"]["data"])["index"] for s in sent) == list(range(7))
    assert {s.key for s in sent} == {KEY}
    assert {s.invocation_type for s in sent} == {"Event"}
    assert threading.get_ident() not in gate.threads


def test_the_key_is_pinned_when_the_chunk_is_handed_over(
    dispatcher: StreamDispatcher,
    lambda_client: Any,
    sent: LambdaCapture,
    partition_key_flag: PartitionKeyFlag,
) -> None:
    gate = Gate()
    gate.open.clear()
    lambda_client.meta.events.register("before-call.lambda.Invoke", gate)
    handler = stream_handler(dispatcher, client=lambda_client)
    for index in range(4):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    # The handler's context and the flag change before any chunk is delivered.
    handler.part_id = "other-corp"
    partition_key_flag.legacy()
    gate.open.set()
    assert handler.flush().delivered == 4
    assert sent.keys() == [KEY] * 4
    assert {s.payload["key_scheme"] for s in sent} == {"composite"}


def test_background_and_sync_send_the_same_payloads(
    dispatcher: StreamDispatcher, lambda_client: Any, sent: LambdaCapture
) -> None:
    chunks = [(i, "xml" if i % 2 else "text", f"piece {i} é") for i in range(8)]
    for mode in ("sync", "background"):
        handler = stream_handler(dispatcher, client=lambda_client, stream_dispatch=mode)
        for index, data_format, delta in chunks:
            handler.send_data_to_stream(index=index, data_format=data_format, chunk_delta=delta)
        handler.send_data_to_stream(index=8, is_message_end=True, suffix="rs#1")
    sync, background = sent[:9], sent[9:]
    assert sorted(json_dumps(s.payload) for s in background) == sorted(
        json_dumps(s.payload) for s in sync
    )


def test_a_new_run_waits_for_the_previous_runs_chunks(dispatcher: StreamDispatcher) -> None:
    with LambdaLoopback(delay=0.01) as server:
        handler = stream_handler(dispatcher, client=lambda_client(server.url))
        for index in range(10):
            handler.send_data_to_stream(index=index, chunk_delta="x")
        handler.run = run("run-2")
        assert len(server.received) == 10
        assert {i.payload["params"]["connection_id"] for i in server.received} == {"conn-1"}


# -- failures are counted and reported --------------------------------------------------------
def odd_index(invocation: Invocation) -> bool:
    return bool(json.loads(invocation.payload["params"]["data"])["index"] % 2)


def test_flush_after_failures_reports_them(
    dispatcher: StreamDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    with LambdaLoopback(fail=odd_index) as server:
        handler = stream_handler(dispatcher, client=lambda_client(server.url, max_attempts=1))
        for index in range(10):
            handler.send_data_to_stream(index=index, chunk_delta="x")
        with caplog.at_level(logging.ERROR, logger=LOG.name):
            report = handler.flush()
    assert (report.delivered, report.failed, report.pending) == (5, 5, 0)
    assert not report.ok
    assert all("ResourceNotFoundException" in error for error in report.errors)
    assert sorted(int(e.split()[1]) for e in report.errors) == [1, 3, 5, 7, 9]
    assert len(server.received) == 5
    summary = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert summary == [summary[0]]
    assert "5 chunks not delivered" in summary[0] and "flush" in summary[0]
    assert handler.flush() == StreamReport(earlier_delivered=5, earlier_failed=5)  # reported once


def test_the_message_end_raises_when_chunks_of_the_message_failed(
    dispatcher: StreamDispatcher,
) -> None:
    with LambdaLoopback(fail=odd_index) as server:
        handler = stream_handler(dispatcher, client=lambda_client(server.url, max_attempts=1))
        for index in range(4):
            handler.send_data_to_stream(index=index, chunk_delta="x")
        with pytest.raises(StreamDeliveryError, match="2 chunks not delivered") as caught:
            handler.send_data_to_stream(index=4, chunk_delta="", is_message_end=True)
        assert (caught.value.report.delivered, caught.value.report.failed) == (3, 2)
        # The next message starts with a clean count.
        handler.send_data_to_stream(index=6, chunk_delta="", is_message_end=True)
        assert len(server.received) == 4


def test_a_new_run_logs_the_previous_runs_failures_without_raising(
    dispatcher: StreamDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    with LambdaLoopback(fail=lambda _: True) as server:
        handler = stream_handler(dispatcher, client=lambda_client(server.url, max_attempts=1))
        handler.send_data_to_stream(index=0, chunk_delta="x")
        with caplog.at_level(logging.ERROR, logger=LOG.name):
            handler.run = run("run-2")
    assert handler.run == run("run-2")
    assert any("run-1" in r.getMessage() and "a new run" in r.getMessage() for r in caplog.records)


def test_flush_with_a_timeout_reports_what_is_still_pending(
    dispatcher: StreamDispatcher, lambda_client: Any, sent: LambdaCapture
) -> None:
    gate = Gate()
    gate.open.clear()
    lambda_client.meta.events.register("before-call.lambda.Invoke", gate)
    handler = stream_handler(dispatcher, client=lambda_client)
    for index in range(3):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    report = handler.flush(timeout=0.05)
    assert (report.delivered, report.pending) == (0, 3)
    gate.open.set()
    assert handler.flush().delivered == 3


# -- backpressure -------------------------------------------------------------------------
def test_a_stalled_endpoint_blocks_the_producer_at_the_queue_bound(
    lambda_client: Any, sent: LambdaCapture
) -> None:
    small = StreamDispatcher(workers=2, queue_size=5)
    gate = Gate()
    gate.open.clear()
    lambda_client.meta.events.register("before-call.lambda.Invoke", gate)
    handler = stream_handler(small, client=lambda_client)
    returned: list[int] = []

    def produce() -> None:
        for index in range(12):
            handler.send_data_to_stream(index=index, chunk_delta="x")
            returned.append(index)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: small.producer_waits > 0, "the producer to block")
    assert returned == [0, 1, 2, 3, 4]  # the sixth call is waiting for room
    assert small.pending == 5
    gate.open.set()
    producer.join(20)
    assert not producer.is_alive()
    assert handler.flush().delivered == 12
    assert small.high_water == 5  # memory stayed bounded
    assert len(sent) == 12
    assert small.close(timeout=5) == 0


# -- SQS FIFO -----------------------------------------------------------------------------
def test_sqs_groups_keep_index_order_under_parallel_producers(
    dispatcher: StreamDispatcher, fifo_queue: Any
) -> None:
    batch_sizes: list[int] = []
    fifo_queue.meta.client.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **_: batch_sizes.append(len(params["Entries"])),
    )
    producers, chunks = 3, 15

    def produce(number: int) -> None:
        handler = stream_handler(dispatcher, queue=fifo_queue, connection_id=f"conn-{number}")
        for index in range(chunks):
            handler.send_data_to_stream(index=index, chunk_delta=f"{number}:{index}")
            handler.send_data_to_stream(index=index, chunk_delta="r", suffix="rs#1")
        handler.send_data_to_stream(index=chunks, is_message_end=True)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    by_group: dict[str, list[int]] = defaultdict(list)
    for message in drain(fifo_queue):
        data = json.loads(json.loads(message.body)["params"]["data"])
        assert message.attributes["MessageGroupId"] == data["message_group_id"]
        assert message.message_attributes["endpoint_id"]["StringValue"] == KEY
        assert message.message_attributes["key_scheme"]["StringValue"] == "composite"
        by_group[data["message_group_id"]].append(data["index"])
    assert len(by_group) == producers * 2
    for group, indexes in by_group.items():
        expected = list(range(chunks + (0 if group.endswith("rs#1") else 1)))
        assert indexes == expected, group
    assert sum(batch_sizes) == producers * (2 * chunks + 1)
    assert max(batch_sizes) <= 10


def test_sqs_chunks_queued_behind_a_send_go_out_in_batches_of_ten(
    dispatcher: StreamDispatcher, fifo_queue: Any
) -> None:
    gate = Gate()
    gate.open.clear()
    client = fifo_queue.meta.client
    client.meta.events.register("before-send.sqs.SendMessageBatch", gate)
    sizes: list[int] = []
    client.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **_: sizes.append(len(params["Entries"])),
    )
    handler = stream_handler(dispatcher, queue=fifo_queue)
    handler.send_data_to_stream(index=0, chunk_delta="x")
    assert gate.entered.wait(10)  # the first chunk is on the wire, alone
    for index in range(1, 25):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    gate.open.set()
    handler.send_data_to_stream(index=25, is_message_end=True)
    assert sizes[:3] == [1, 10, 10]
    assert sum(sizes) == 26
    indexes = [json.loads(json.loads(m.body)["params"]["data"])["index"] for m in drain(fifo_queue)]
    assert indexes == list(range(26))


def test_a_fifo_group_stops_at_its_first_failed_chunk(
    dispatcher: StreamDispatcher, fifo_queue: Any
) -> None:
    # Chunk 0 goes out alone, the batch 1-10 fails; without a stop the reader would get
    # [0, 11, 12, ...]: a hole it cannot see. Nothing after the failure may be sent.
    gate = Gate()
    client = fifo_queue.meta.client
    calls: list[int] = []

    def second_batch_fails(**_: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected send failure")

    client.meta.events.register("before-send.sqs.SendMessageBatch", gate)
    client.meta.events.register("before-send.sqs.SendMessageBatch", second_batch_fails)
    handler = stream_handler(dispatcher, queue=fifo_queue)
    other = stream_handler(dispatcher, queue=fifo_queue, connection_id="conn-2")
    handler.send_data_to_stream(index=0, chunk_delta="x")
    assert gate.entered.wait(10)
    for index in range(1, 25):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    gate.open.set()
    with pytest.raises(StreamDeliveryError) as caught:
        handler.send_data_to_stream(index=25, is_message_end=True)
    report = caught.value.report
    assert (report.delivered, report.failed, report.pending) == (1, 25, 0)
    assert "injected send failure" in report.errors[0]
    for index in range(3):  # another group of the same queue is not affected
        other.send_data_to_stream(index=index, chunk_delta="y")
    other.send_data_to_stream(index=3, is_message_end=True)
    by_group: dict[str, list[int]] = defaultdict(list)
    for message in drain(fifo_queue):
        data = json.loads(json.loads(message.body)["params"]["data"])
        by_group[data["message_group_id"]].append(data["index"])
    assert by_group == {"conn-1-run-1": [0], "conn-2-run-1": [0, 1, 2, 3]}
    assert len(calls) == 2 + 1  # nothing of the broken group was sent after the failure

    handler.run = run("run-2")  # a new run streams again
    handler.send_data_to_stream(index=0, is_message_end=True)
    assert [
        json.loads(json.loads(m.body)["params"]["data"])["index"] for m in drain(fifo_queue)
    ] == [0]


def test_sqs_batch_uses_the_single_message_wire_format(fifo_queue: Any) -> None:
    params = {"connection_id": "c", "data": '{"index":0}', "n": Decimal("2")}
    Utility.invoke_funct_on_aws_lambda(
        LOG, KEY, "send_data_to_stream", params=params, message_group_id="g", task_queue=fifo_queue
    )
    single = drain(fifo_queue)
    failed = Utility.send_stream_batch(
        LOG, fifo_queue, [(KEY, "send_data_to_stream", {**params, "data": '{"index":1}'}, "g")]
    )
    assert failed == []
    (batched,) = drain(fifo_queue)
    (one,) = single
    assert batched.message_attributes == one.message_attributes
    assert batched.attributes["MessageGroupId"] == one.attributes["MessageGroupId"] == "g"
    assert json.loads(batched.body) == {
        "params": {**json.loads(one.body)["params"], "data": '{"index":1}'}
    }


@pytest.mark.parametrize("count", [0, 11])
def test_sqs_batch_size_is_checked(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 10"):
        Utility.send_stream_batch(LOG, object(), [(KEY, "f", {}, "g")] * count)


def test_sqs_partial_batch_failures_are_failures(caplog: pytest.LogCaptureFixture) -> None:
    sqs = boto3.resource("sqs", region_name=REGION)
    queue = sqs.Queue(f"https://sqs.{REGION}.amazonaws.com/123456789012/t.fifo")
    with Stubber(queue.meta.client) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"},
                    {"Id": "3", "MessageId": "m3", "MD5OfMessageBody": "x"},
                ],
                "Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}],
            },
        )
        with caplog.at_level(logging.ERROR, logger=LOG.name):
            failed = Utility.send_stream_batch(
                LOG, queue, [(KEY, "send_data_to_stream", {"i": i}, "g") for i in range(4)]
            )
    # Entry 2 got no answer at all: that is a failure too, not a silent success.
    assert [position for position, _ in failed] == [1, 2]
    assert failed[0][1].startswith("InternalError")
    assert "2 of 4 messages" in caplog.text


def test_a_missing_queue_fails_the_whole_batch_and_is_reported(
    dispatcher: StreamDispatcher, aws: None
) -> None:
    queue = boto3.resource("sqs", region_name=REGION).Queue(
        f"https://sqs.{REGION}.amazonaws.com/123456789012/missing.fifo"
    )
    handler = stream_handler(dispatcher, queue=queue)
    for index in range(3):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    with pytest.raises(StreamDeliveryError) as caught:
        handler.send_data_to_stream(index=3, is_message_end=True)
    assert caught.value.report.failed == 4
    assert "NonExistentQueue" in caught.value.report.errors[0]


# -- process exit ---------------------------------------------------------------------------
EXIT_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from ai_agent_handler import AIAgentEventHandler
    from ai_agent_handler.transport.stream import StreamDispatcher
    from ai_agent_handler.pytest_plugin import PartitionKeyFlag
    from bench.loopback import lambda_client

    url, count, exit_timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    logging.basicConfig(level=logging.ERROR)
    PartitionKeyFlag().install()
    handler = AIAgentEventHandler(logging.getLogger("child"), {}, aws_lambda=lambda_client(url))
    handler.endpoint_id, handler.part_id = "aws-prod", "acme-corp"
    handler.run = {"run_uuid": "r", "updated_by": "u", "thread": {"thread_uuid": "t"}}
    handler.connection_id = "conn-exit"
    handler.stream_dispatcher = StreamDispatcher(workers=4, exit_timeout=exit_timeout)
    for index in range(count):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    print("sent", count, flush=True)
    # no flush, no message end: the interpreter exits with chunks in flight
    """
)


def run_child(url: str, count: int, exit_timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, url, str(count), str(exit_timeout)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "", "PYTHONPATH": str(REPO), "AWS_EC2_METADATA_DISABLED": "true"},
    )


def test_nothing_is_lost_when_the_process_exits_without_a_flush() -> None:
    with LambdaLoopback(delay=0.02) as server:
        child = run_child(server.url, 40, 10.0)
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == "sent 40"
        received = sorted(json.loads(i.payload["params"]["data"])["index"] for i in server.received)
    assert received == list(range(40))
    assert "undelivered" not in child.stderr


def test_exit_logs_what_it_could_not_deliver_in_time() -> None:
    with LambdaLoopback() as server:
        server.gate.clear()  # the endpoint never answers while the child exits
        child = run_child(server.url, 6, 0.2)
    assert child.returncode == 0, child.stderr
    assert "6 stream chunks were still undelivered" in child.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_streams_with_its_own_workers(dispatcher: StreamDispatcher) -> None:
    with LambdaLoopback() as server:
        client = lambda_client(server.url)
        handler = stream_handler(dispatcher, client=client)
        handler.send_data_to_stream(index=0, chunk_delta="parent", is_message_end=True)
        pid = os.fork()
        if pid == 0:  # the child: the parent's worker threads do not exist here
            status = 1
            try:
                handler.run = run("run-child")
                for index in range(5):
                    handler.send_data_to_stream(index=index, chunk_delta="child")
                handler.send_data_to_stream(index=5, is_message_end=True)
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(server.received) == 7


def test_a_subclass_may_set_the_run_before_the_base_init() -> None:
    class Early(AIAgentEventHandler):
        def __init__(self) -> None:
            self.run = run()
            super().__init__(LOG, {})

    assert Early().run is None  # the base __init__ starts without a run, as upstream
