"""Background delivery of stream chunks, so a provider handler never waits on the network.

``send_data_to_stream`` is called for every ~10 characters of model output. Upstream made
one blocking Lambda or SQS call per chunk; here the handler encodes the chunk, pins the
run's routing key into it and hands it to a :class:`StreamDispatcher`, whose worker threads
deliver it:

* **SQS FIFO** (the handler has a task queue): chunks of one message group go out in the
  order they were handed over -- index order, as a provider handler numbers them -- with
  ``SendMessageBatch`` (up to 10 per call, :meth:`Utility.send_stream_batch`). One group is
  sent by at most one worker at a time; different groups go out in parallel.
* **Lambda** ``Event`` invocations: one :meth:`Utility.invoke_funct_on_aws_lambda` per
  chunk, in parallel on the bounded pool; the WebSocket client reorders by ``index``.

Memory is bounded: at most ``queue_size`` chunks are accepted but not yet delivered per
dispatcher; a producer that would exceed it waits until a worker makes room (backpressure).

Each handler owns a :class:`StreamChannel` on the dispatcher that counts its chunks. The
handler waits on it at a chunk with ``is_message_end=True``, when a new ``run`` is set and in
``flush()``; the wait returns a :class:`StreamReport` of what was delivered, what failed and
what was still pending. At interpreter exit every dispatcher is drained (bounded by
``exit_timeout``) and undelivered or unreported chunks are logged, so nothing is dropped
silently.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from .invoke import Utility, json_dumps

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs.service_resource import Queue

STREAM_FUNCT = "send_data_to_stream"

#: Worker threads per dispatcher. A Lambda ``Event`` invoke takes ~20-50 ms, so 32 workers
#: keep up with several concurrent streams (threads idle at no cost). The library's own
#: clients have a connection pool this large; give an injected boto3 client
#: ``max_pool_connections`` at least this large, or urllib3 discards connections.
DEFAULT_WORKERS = 32
#: Chunks accepted but not yet delivered, per dispatcher (a chunk is well under 1 KiB).
DEFAULT_QUEUE_SIZE = 1000
#: How long interpreter exit waits for undelivered chunks.
DEFAULT_EXIT_TIMEOUT = 10.0
#: How long a message end or a new run waits for the handler's chunks (seconds).
DEFAULT_FLUSH_TIMEOUT = 60.0

#: The library's own edge function, captured at import. When the class attribute is
#: something else, a test (or the acceptance suite) has patched it and reads ``call_args``
#: as soon as ``send_data_to_stream`` returns: the handler then calls it synchronously.
LIBRARY_INVOKE = Utility.invoke_funct_on_aws_lambda

#: SendMessageBatch takes at most 10 entries and 256 KiB in all; stay clear of the size limit
#: (attributes and JSON escaping add to the encoded chunk).
SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 192 * 1024

#: Error texts kept per report; the counts are always complete.
MAX_ERRORS_KEPT = 10

_log = logging.getLogger(__name__)


def encode_chunk(
    message_group_id: str, data_format: str, index: int, chunk_delta: str, is_message_end: bool
) -> str:
    """The ``data`` string of one stream chunk, byte-identical to ``json_dumps`` of its dict.

    Built directly (sorted keys, compact separators, ASCII escaping) because this runs for
    every chunk and a general ``json.dumps(sort_keys=True)`` costs several times more. Any
    unusual type (an index that is not a plain int, a non-str text) takes the general path.
    """
    if (
        type(index) is int
        and type(chunk_delta) is str
        and type(data_format) is str
        and type(message_group_id) is str
        and type(is_message_end) is bool
    ):
        return (
            f'{{"chunk_delta":{encode_basestring_ascii(chunk_delta)},'
            f'"data_format":{encode_basestring_ascii(data_format)},'
            f'"index":{index},"is_message_end":{"true" if is_message_end else "false"},'
            f'"message_group_id":{encode_basestring_ascii(message_group_id)}}}'
        )
    return json_dumps(
        {
            "message_group_id": message_group_id,
            "data_format": data_format,
            "index": index,
            "chunk_delta": chunk_delta,
            "is_message_end": is_message_end,
        }
    )


@dataclass(frozen=True, slots=True)
class StreamReport:
    """What happened to a handler's chunks since its previous report.

    ``pending`` counts chunks not yet delivered when the wait ended (it timed out); they are
    still being delivered and show up in a later report. ``earlier_delivered`` and
    ``earlier_failed`` are what the handler's earlier reports counted (a message end, a new
    run and a flush each report and start a new count), so a ``flush()`` right after a
    message end reads "no chunk since the previous report; earlier: 8 delivered, 0 failed",
    not as if nothing was sent.
    """

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    errors: tuple[str, ...] = ()
    earlier_delivered: int = 0
    earlier_failed: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed and nothing is left pending."""
        return not self.failed and not self.pending

    def __str__(self) -> str:
        if self.delivered or self.failed or self.pending:
            text = f"{self.delivered} delivered, {self.failed} failed, {self.pending} pending"
        else:
            text = "no chunk since the previous report"
        if self.earlier_delivered or self.earlier_failed:
            text += f"; earlier: {self.earlier_delivered} delivered, {self.earlier_failed} failed"
        if self.errors:
            text += "; first errors: " + "; ".join(self.errors[:3])
        return text


class StreamChunk:
    """One chunk on its way: everything the delivery needs, pinned when it is handed over.

    ``queue`` is the SQS FIFO queue it goes through; None means a Lambda ``Event`` invoke
    with ``client``. ``channel`` (the handler's account that counts it) is set by
    :meth:`StreamChannel.send`.
    """

    # A plain slotted class: one is built per chunk, and a dataclass costs import time.
    __slots__ = (
        "channel",
        "client",
        "group",
        "index",
        "logger",
        "params",
        "queue",
        "routing_key",
        "setting",
    )

    def __init__(
        self,
        logger: logging.Logger,
        routing_key: str,
        params: dict[str, Any],
        group: str,
        queue: Queue | None,
        client: LambdaClient | None,
        setting: Mapping[str, Any],
        index: int,
    ) -> None:
        self.logger = logger
        self.routing_key = routing_key
        self.params = params
        self.group = group
        self.queue = queue
        self.client = client
        self.setting = setting
        self.index = index
        self.channel: StreamChannel | None = None


class _Lane:
    """The chunks of one SQS message group, sent in order by one worker at a time."""

    __slots__ = ("items", "key", "queue")

    def __init__(self, key: tuple[int, str], queue: Queue) -> None:
        self.key = key
        self.queue = queue
        self.items: deque[StreamChunk] = deque()

    def take(self) -> list[StreamChunk]:
        batch = [self.items.popleft()]
        size = len(batch[0].params["data"])
        while self.items and len(batch) < SQS_BATCH_ENTRIES:
            size += len(self.items[0].params["data"])
            if size > SQS_BATCH_BYTES:
                break
            batch.append(self.items.popleft())
        return batch


class StreamChannel:
    """One handler's account of its chunks on a dispatcher.

    Counts what is in flight, delivered and failed, so the handler can wait for its own
    chunks (not other handlers') and report on them.
    """

    __slots__ = (
        "__weakref__",
        "_cond",
        "broken",
        "delivered",
        "dispatcher",
        "errors",
        "failed",
        "pending",
        "reported_delivered",
        "reported_failed",
    )

    def __init__(self, dispatcher: StreamDispatcher) -> None:
        self.dispatcher = dispatcher
        self._cond = threading.Condition(dispatcher._lock)
        self.pending = 0
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        #: What earlier reports counted.
        self.reported_delivered = 0
        self.reported_failed = 0
        #: SQS message groups that lost a chunk -> why; their later chunks are not sent.
        self.broken: dict[str, str] = {}

    def send(self, chunk: StreamChunk) -> None:
        """Hand one chunk over; blocks only while the dispatcher's queue is full."""
        self.dispatcher._submit(self, chunk)

    def wait(self, timeout: float | None = None) -> StreamReport:
        """Wait until every chunk sent so far is delivered or failed (or ``timeout`` passes).

        Returns the report since the previous one and starts a new count.
        """
        with self._cond:
            self._cond.wait_for(lambda: self.pending == 0, timeout)
            report = StreamReport(
                self.delivered,
                self.failed,
                self.pending,
                tuple(self.errors),
                self.reported_delivered,
                self.reported_failed,
            )
            self.reported_delivered += self.delivered
            self.reported_failed += self.failed
            self.delivered = 0
            self.failed = 0
            self.errors = []
        return report

    def forget_broken_groups(self) -> None:
        """Let message groups that lost a chunk stream again (a new run starts)."""
        with self._cond:
            self.broken.clear()

    def _reset(self) -> None:
        self._cond = threading.Condition(self.dispatcher._lock)
        self.pending = 0


_Task = StreamChunk | _Lane


class StreamDispatcher:
    """A bounded queue and a pool of daemon worker threads delivering stream chunks.

    ``workers`` threads start on first use. ``queue_size`` bounds the chunks accepted but not
    yet delivered; :meth:`StreamChannel.send` blocks while it is reached. Usually shared per
    process (:func:`shared_dispatcher`); tests and hosts may create their own.
    """

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
    ) -> None:
        if workers < 1:
            raise ValueError(f"stream dispatcher needs at least one worker, got {workers}")
        if queue_size < 1:
            raise ValueError(f"stream queue size must be at least 1, got {queue_size}")
        self.workers = workers
        self.queue_size = queue_size
        self.exit_timeout = exit_timeout
        self._init_state()
        _live.add(self)
        _install_process_hooks()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._quiet = threading.Condition(self._lock)
        self._ready: deque[_Task] = deque()
        self._lanes: dict[tuple[int, str], _Lane] = {}
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._channels: weakref.WeakSet[StreamChannel] = weakref.WeakSet()
        self._closed = False
        #: Most chunks ever held at once (never above ``queue_size``).
        self.high_water = 0
        #: How many times a producer had to wait for room (backpressure applied).
        self.producer_waits = 0

    # -- producer side ----------------------------------------------------------------------
    def channel(self) -> StreamChannel:
        """A new channel for one handler."""
        channel = StreamChannel(self)
        with self._lock:
            self._channels.add(channel)
        return channel

    @property
    def pending(self) -> int:
        """Chunks accepted and not yet delivered or failed."""
        return self._pending

    def _submit(self, channel: StreamChannel, chunk: StreamChunk) -> None:
        chunk.channel = channel
        with self._lock:
            if self._closed:
                raise RuntimeError("stream dispatcher is closed")
            if not self._threads:
                self._start_workers()
            while self._pending >= self.queue_size:
                self.producer_waits += 1
                self._room.wait()
            self._pending += 1
            if self._pending > self.high_water:
                self.high_water = self._pending
            channel.pending += 1
            queue = chunk.queue
            if queue is None:
                self._ready.append(chunk)
                self._work.notify()
                return
            key = (id(queue), chunk.group)
            lane = self._lanes.get(key)
            if lane is None:
                # A lane is in _lanes exactly while it is scheduled or being sent; a new one
                # is scheduled now, an existing one picks the chunk up in its next batch.
                lane = self._lanes[key] = _Lane(key, queue)
                lane.items.append(chunk)
                self._ready.append(lane)
                self._work.notify()
            else:
                lane.items.append(chunk)

    def _start_workers(self) -> None:
        # All at once, on first use: a producer then never pays for a thread start mid-stream.
        for number in range(self.workers):
            thread = threading.Thread(
                target=self._run_worker, name=f"ai-agent-stream-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def drain(self, timeout: float | None = None) -> int:
        """Wait until every accepted chunk is delivered or failed; return how many are left."""
        with self._quiet:
            self._quiet.wait_for(lambda: self._pending == 0, timeout)
            return self._pending

    def close(self, timeout: float | None = None) -> int:
        """Deliver what is queued (waiting at most ``timeout``), then stop the workers.

        Returns how many chunks were left undelivered. A closed dispatcher accepts nothing.
        """
        left = self.drain(timeout)
        with self._lock:
            self._closed = True
            self._work.notify_all()
        return left

    # -- worker side ------------------------------------------------------------------------
    def _run_worker(self) -> None:
        lock = self._lock
        while True:
            with lock:
                while not self._ready:
                    if self._closed:
                        self._threads.remove(threading.current_thread())
                        return
                    self._work.wait()
                task = self._ready.popleft()
                batch = task.take() if type(task) is _Lane else None
                if batch is not None and _refuse_broken(batch, self):
                    self._after_lane(task)  # type: ignore[arg-type]
                    continue
            if batch is None:
                assert type(task) is StreamChunk
                error = _deliver_one(task)
                with lock:
                    self._finish(task, error)
                    self._settle(1)
            else:
                assert type(task) is _Lane
                errors = _deliver_batch(task, batch)
                with lock:
                    for position, chunk in enumerate(batch):
                        error = errors.get(position)
                        if error is not None:
                            # The group has a hole from here on: stop it (see _refuse_broken).
                            chunk.channel.broken.setdefault(  # type: ignore[union-attr]
                                chunk.group, f"chunk index {chunk.index} failed"
                            )
                        self._finish(chunk, error)
                    self._settle(len(batch))
                    self._after_lane(task)

    def _after_lane(self, lane: _Lane) -> None:
        # Under the lock: a lane with chunks left is scheduled again, an empty one retired.
        if lane.items:
            self._ready.append(lane)
            self._work.notify()
        else:
            del self._lanes[lane.key]

    def _finish(self, chunk: StreamChunk, error: str | None) -> None:
        channel = chunk.channel
        assert channel is not None  # set by StreamChannel.send
        channel.pending -= 1
        if error is None:
            channel.delivered += 1
        else:
            channel.failed += 1
            if len(channel.errors) < MAX_ERRORS_KEPT:
                channel.errors.append(f"index {chunk.index} ({chunk.group}): {error}")
        if not channel.pending:
            channel._cond.notify_all()

    def _settle(self, count: int) -> None:
        self._pending -= count
        self._room.notify(count)
        if not self._pending:
            self._quiet.notify_all()

    # -- process life -----------------------------------------------------------------------
    def _at_exit(self) -> None:
        left = self.drain(self.exit_timeout)
        if left:
            _log.error(
                "%d stream chunks were still undelivered %.1f s after interpreter exit began;"
                " they are lost",
                left,
                self.exit_timeout,
            )
        for channel in list(self._channels):
            report = channel.wait(0)
            if report.failed:
                _log.error("stream chunks failed and were never reported: %s", report)

    def _after_fork(self) -> None:
        # The worker threads do not exist in a forked child, and the parent's chunks are the
        # parent's to deliver: start empty and let the first send start new workers.
        channels = list(self._channels)
        self._init_state()
        for channel in channels:
            channel._reset()
            self._channels.add(channel)


def _refuse_broken(batch: list[StreamChunk], dispatcher: StreamDispatcher) -> bool:
    """Fail, without sending, a batch of a message group that already lost a chunk.

    A FIFO reader would otherwise get the chunks after the hole and never notice it; the
    message end then raises as for any failed chunk. Called under the dispatcher's lock.
    """
    channel = batch[0].channel
    assert channel is not None
    why = channel.broken.get(batch[0].group)
    if why is None:
        return False
    for chunk in batch:
        dispatcher._finish(chunk, f"not sent: {why} before it in this message group")
    dispatcher._settle(len(batch))
    return True


def _deliver_one(chunk: StreamChunk) -> str | None:
    # Through the class attribute, so the one edge every Lambda call passes stays the same.
    try:
        Utility.invoke_funct_on_aws_lambda(
            chunk.logger,
            chunk.routing_key,
            STREAM_FUNCT,
            params=chunk.params,
            setting=chunk.setting,
            test_mode=chunk.setting.get("test_mode"),
            aws_lambda=chunk.client,
            invocation_type="Event",
            message_group_id=chunk.group,
            task_queue=None,
        )
    except Exception as err:  # delivered in the background: every failure becomes a count
        return f"{type(err).__name__}: {err}"
    return None


def _deliver_batch(lane: _Lane, batch: list[StreamChunk]) -> dict[int, str]:
    try:
        failed = Utility.send_stream_batch(
            batch[0].logger,
            lane.queue,
            [(c.routing_key, STREAM_FUNCT, c.params, c.group) for c in batch],
        )
    except Exception as err:  # the whole batch failed
        text = f"{type(err).__name__}: {err}"
        return dict.fromkeys(range(len(batch)), text)
    return dict(failed)


_live: weakref.WeakSet[StreamDispatcher] = weakref.WeakSet()
_shared: dict[tuple[int, int], StreamDispatcher] = {}
_shared_lock = threading.Lock()
_hooks_installed = False


def shared_dispatcher(
    workers: int = DEFAULT_WORKERS, queue_size: int = DEFAULT_QUEUE_SIZE
) -> StreamDispatcher:
    """The process-wide dispatcher for this configuration (created on first use)."""
    key = (workers, queue_size)
    dispatcher = _shared.get(key)
    if dispatcher is None:
        with _shared_lock:
            dispatcher = _shared.get(key)
            if dispatcher is None:
                dispatcher = _shared[key] = StreamDispatcher(workers, queue_size)
    return dispatcher


def _install_process_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    # atexit runs after threading has joined non-daemon threads and while the daemon
    # workers still run, so they can finish the queue; the wait is bounded by exit_timeout.
    atexit.register(_drain_all)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset_after_fork)


def _drain_all() -> None:
    for dispatcher in list(_live):
        dispatcher._at_exit()


def _reset_after_fork() -> None:
    for dispatcher in list(_live):
        dispatcher._after_fork()
