"""Streaming throughput against endpoints that take time to answer.

Lambda: a loopback Lambda-compatible endpoint (``bench.loopback``, its own process) that
answers each Invoke after 20 ms. SQS FIFO: moto's server in its own process. Both run
outside the measured interpreter, so their threads do not compete for its GIL.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Queue
from typing import Any

from ai_agent_handler import AIAgentEventHandler
from ai_agent_handler.transport.stream import DEFAULT_WORKERS

from .common import ROOT, Row, Section, Series, UpstreamStyleHandler, new_run, percentile
from .loopback import lambda_client

DELAY = 0.02
TARGET_SPEEDUP = 10.0
TARGET_PRODUCER_P99_US = 100.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextmanager
def loopback_server(delay: float) -> Iterator[tuple[str, list[int]]]:
    """The loopback endpoint in a child process; yields its URL and, after exit, its count."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.loopback", "--delay", str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert child.stdout is not None and child.stdin is not None
    count: list[int] = []
    try:
        yield child.stdout.readline().strip(), count
    finally:
        out, _ = child.communicate(timeout=30)
        if out.strip():
            count.append(int(out.split()[-1]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        child.terminate()
        child.wait(10)


def _ours(**setting: Any) -> AIAgentEventHandler:
    handler = AIAgentEventHandler(logging.getLogger("bench"), {"agent_name": "bench"}, **setting)
    handler.endpoint_id = "aws-prod-us-east-1"
    handler.part_id = "acme-corp"
    handler.connection_id = "conn-bench"
    return handler


def _stream_sync(handler: UpstreamStyleHandler, chunks: int) -> float:
    start = time.perf_counter()
    for index in range(chunks):
        handler.send_data_to_stream(index, "text", "0123456789", is_message_end=index == chunks - 1)
    return time.perf_counter() - start


def _stream_background(
    handler: AIAgentEventHandler, chunks: int, run_uuid: str
) -> tuple[float, list[float]]:
    handler.run = new_run(run_uuid)
    send = handler.send_data_to_stream
    calls: list[float] = []
    start = time.perf_counter()
    for index in range(chunks - 1):
        before = time.perf_counter()
        send(index, "text", "0123456789")
        calls.append(time.perf_counter() - before)
    send(chunks - 1, "text", "", is_message_end=True)  # waits until all were delivered
    return time.perf_counter() - start, calls


class _NoMessageEnd(AIAgentEventHandler):
    """A provider that streams and never ends its message (as upstream's travrse handler)."""

    def ask_model(self, input_messages: Any, queue: Any = None, stream_event: Any = None) -> None:
        queue.put({"name": "run_id", "value": self.run["run_uuid"] if self.run else None})
        try:
            for index in range(self.setting["chunks"]):
                self.send_data_to_stream(index, "text", "0123456789")
        finally:
            stream_event.set()


def _engine_run(handler: AIAgentEventHandler, run_uuid: str) -> float:
    """A run driven the engine's way: ask_model in a thread, on until stream_event is set."""
    handler.run = new_run(run_uuid)
    queue: Queue[Any] = Queue()
    stream_event = threading.Event()
    start = time.perf_counter()
    threading.Thread(
        target=handler.ask_model,  # type: ignore[attr-defined]
        args=([], queue, stream_event),
        daemon=True,
    ).start()
    queue.get()
    stream_event.wait(120)
    return time.perf_counter() - start


def _compare(
    title: str,
    chunks: int,
    anchor: UpstreamStyleHandler,
    ours: AIAgentEventHandler,
    sync_rounds: int,
    rounds: int,
) -> tuple[Series, Series, Series, Series]:
    """Chunks/s of the anchor and of ours, and our producer p50/p99 per run (us)."""
    anchor_rate, ours_rate, p50, p99 = Series(), Series(), Series(), Series()
    _stream_background(ours, 10, f"{title}-warm")  # workers and connections up
    anchor.send_data_to_stream(0, "text", "warm")
    for number in range(max(sync_rounds, rounds)):
        if number < sync_rounds:
            anchor.run = new_run(f"{title}-sync-{number}")
            anchor_rate.add(chunks / _stream_sync(anchor, chunks))
        if number < rounds:
            elapsed, calls = _stream_background(ours, chunks, f"{title}-bg-{number}")
            ours_rate.add(chunks / elapsed)
            p50.add(percentile(calls, 50) * 1e6)
            p99.add(percentile(calls, 99) * 1e6)
    return anchor_rate, ours_rate, p50, p99


def run(smoke: bool) -> Section:
    chunks = 20 if smoke else 500
    sync_rounds, rounds = (1, 2) if smoke else (3, 7)
    section = Section(
        "Streaming throughput: blocking per-chunk calls vs background dispatch",
        f"{chunks} chunks per run; the anchor is the upstream-style handler making one"
        f" blocking call per chunk ({sync_rounds} runs), ours is the default background"
        f" dispatch ({rounds} runs), timed until the message-end call returns (by then every"
        " chunk was delivered). Producer latency is each non-final `send_data_to_stream`"
        " call. Lambda: a loopback Invoke endpoint in its own process answering after"
        f" {DELAY * 1e3:.0f} ms; boto3 client with `max_pool_connections=32` (the library's"
        " default).",
    )
    with loopback_server(DELAY) as (url, received):
        client = lambda_client(url, pool=32)
        anchor = UpstreamStyleHandler(aws_lambda=client)
        ours = _ours(aws_lambda=client)
        anchor_rate, ours_rate, p50, p99 = _compare(
            "lambda", chunks, anchor, ours, sync_rounds, rounds
        )
        engine = _NoMessageEnd(
            logging.getLogger("bench"), {"agent_name": "bench"}, aws_lambda=client, chunks=chunks
        )
        engine.endpoint_id, engine.part_id = "aws-prod-us-east-1", "acme-corp"
        engine.connection_id = "conn-bench"
        engine_rate = Series()
        for number in range(rounds):
            engine_rate.add(chunks / _engine_run(engine, f"engine-{number}"))
    expected = (chunks * (sync_rounds + rounds * 2)) + 10 + 1
    speedup = ours_rate.median / anchor_rate.median
    section.rows.append(
        Row(
            f"Lambda Event, {DELAY * 1e3:.0f} ms endpoint: throughput",
            f"{ours_rate.median:.0f} chunks/s ({ours_rate.spread('{:.0f}')})",
            f"{anchor_rate.median:.1f} chunks/s ({anchor_rate.spread('{:.1f}')})",
            f"{speedup:.1f}x",
            f">= {TARGET_SPEEDUP:.0f}x",
            speedup >= TARGET_SPEEDUP,
        )
    )
    section.rows.append(
        Row(
            "Lambda Event: producer latency per chunk",
            f"p50 {p50.median:.1f} us, p99 {p99.median:.1f} us (p99 over runs"
            f" {p99.spread('{:.0f}')})",
            f"{1e6 / anchor_rate.median:.0f} us per blocking call",
            f"{p99.median / (1e6 / anchor_rate.median):.4f}x",
            f"p99 <= {TARGET_PRODUCER_P99_US:.0f} us",
            p99.median <= TARGET_PRODUCER_P99_US,
        )
    )
    versus = engine_rate.median / ours_rate.median
    section.rows.append(
        Row(
            "Lambda Event: a run the engine's way without a message end, until the engine"
            " goes on (every chunk delivered by then)",
            f"{engine_rate.median:.0f} chunks/s ({engine_rate.spread('{:.0f}')})",
            f"{ours_rate.median:.0f} chunks/s with a message end (above)",
            f"{versus:.2f}x",
            ">= 0.8x",
            versus >= 0.8,
        )
    )
    seen = received[0] if received else -1
    section.notes.append(
        f"The endpoint received {seen} invocations for {expected} chunks sent"
        f" ({'all delivered' if seen == expected else 'MISMATCH'}). The background"
        f" dispatcher has {DEFAULT_WORKERS} worker threads (default), so at most"
        f" {DEFAULT_WORKERS} invocations are in flight;"
        " the speedup is bounded by that and by boto3's CPU cost per call on this machine."
    )
    # moto's FIFO gets slower per message as a queue fills: smaller streams keep it sane.
    section.rows.append(
        _sqs(smoke, 20 if smoke else 200, 1 if smoke else 2, 2 if smoke else 3, section)
    )
    return section


def _sqs(smoke: bool, chunks: int, sync_rounds: int, rounds: int, section: Section) -> Row:
    import boto3

    anchor_rate, ours_rate = Series(), Series()
    held: list[int] = []
    requests = {"SendMessage": 0, "SendMessageBatch": 0}
    with moto_server() as url:
        sqs = boto3.resource("sqs", endpoint_url=url, region_name="us-east-1")

        def counted(model: Any, **_: Any) -> None:
            if model.name in requests:
                requests[model.name] += 1

        sqs.meta.client.meta.events.register("before-call.sqs", counted)

        def fresh_queue(name: str) -> Any:
            # A new queue per run: moto's FIFO send slows down as a queue fills up, which
            # would penalise whichever variant runs later.
            return sqs.create_queue(
                QueueName=f"{name}.fifo",
                Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
            )

        def count(queue: Any) -> int:
            queue.reload()
            return int(queue.attributes["ApproximateNumberOfMessages"])

        anchor = UpstreamStyleHandler()
        ours = _ours()
        ours.task_queue = fresh_queue("warm")
        _stream_background(ours, 10, "sqs-warm")
        requests.update(SendMessage=0, SendMessageBatch=0)
        for number in range(max(sync_rounds, rounds)):
            if number < sync_rounds:
                anchor.task_queue = fresh_queue(f"anchor-{number}")
                anchor.run = new_run(f"sqs-sync-{number}")
                anchor_rate.add(chunks / _stream_sync(anchor, chunks))
                held.append(count(anchor.task_queue))
            if number < rounds:
                ours.task_queue = fresh_queue(f"ours-{number}")
                elapsed, _ = _stream_background(ours, chunks, f"sqs-bg-{number}")
                ours_rate.add(chunks / elapsed)
                held.append(count(ours.task_queue))
    delivered = all(value == chunks for value in held)
    section.notes.append(
        f"SQS FIFO on moto's server, a fresh queue per run: every queue held its {chunks}"
        f" messages: {'yes' if delivered else f'NO ({held})'}. One stream is one message group,"
        " sent in order by one worker at a time in batches of up to 10. moto's FIFO send"
        " costs time per message that grows with the queue length (it scans the queue for"
        " content-based duplicates), so on moto the figure is dominated by its CPU per"
        " message, not by round trips; against real SQS, where each request is a network"
        " round trip, the request count below is what decides."
    )
    per_run = chunks * sync_rounds, chunks * rounds
    section.notes.append(
        f"SQS requests: {requests['SendMessage'] / sync_rounds:.0f} SendMessage per"
        f" {chunks}-chunk stream one by one, {requests['SendMessageBatch'] / rounds:.0f}"
        f" SendMessageBatch batched ({per_run[0]} and {per_run[1]} chunks in all)."
    )
    speedup = ours_rate.median / anchor_rate.median
    return Row(
        "SQS FIFO (moto server), one group: throughput",
        f"{ours_rate.median:.0f} chunks/s batched ({ours_rate.spread('{:.0f}')})",
        f"{anchor_rate.median:.0f} chunks/s one by one ({anchor_rate.spread('{:.0f}')})",
        f"{speedup:.1f}x",
        "informational",
        None,
    )
