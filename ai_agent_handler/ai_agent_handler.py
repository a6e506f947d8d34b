"""``AIAgentEventHandler``: the base class LLM-provider handlers inherit.

It holds a run's context (endpoint, partition, run, WebSocket connection, task queue),
persists the run through ``invoke_async_funct`` and streams model output through
``send_data_to_stream``. Both send the run's *routing key*: the composite
``endpoint_id#part_id`` when the flag :data:`~ai_agent_handler.FLAG_KEY` is on for the
endpoint, ``endpoint_id`` otherwise. The flag is evaluated once per run.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import _aws, settings
from ._chunking import XML_FLUSH_LIMIT, split_xml, try_complete_json
from .decision import KeyDecision, decide, decide_composite, flag_client
from .exceptions import FlagConfigError, StreamDeliveryError
from .partition_key import compose, keys, validate_id
from .transport.invoke import Utility
from .transport.stream import (
    DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_WORKERS,
    LIBRARY_INVOKE,
    STREAM_FUNCT,
    StreamChannel,
    StreamChunk,
    StreamDispatcher,
    StreamReport,
    encode_chunk,
    shared_dispatcher,
)

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs.service_resource import Queue

    from .tools import Toolbox, ToolFunction

__all__ = ["AIAgentEventHandler"]


class AIAgentEventHandler:
    """Base event handler: run context, partition key, Lambda-facing methods.

    ``setting`` keys read here: ``region_name``, ``aws_access_key_id``,
    ``aws_secret_access_key`` (all three or none), ``lambda_task_function``, ``test_mode``,
    ``functs_on_local``, ``accumulated_partial_text_buffer`` (default 10, read per call),
    ``rollout_phase`` (else ``$ROLLOUT_PHASE``), ``flag_source`` (else ``$FLAG_SOURCE``), the
    flag provider's ``flag_min_interval``, ``flag_refresh_wait`` and ``flag_bucket_owner``, and
    ``partition_key_mode`` (:mod:`ai_agent_handler.settings`): these are read once, here, and
    a bad value raises :class:`~ai_agent_handler.FlagConfigError` before the handler exists.
    Streaming (see :meth:`send_data_to_stream`): ``stream_dispatch`` (``"background"``, the
    default, or ``"sync"``), ``stream_workers`` (32), ``stream_queue_size`` (1000) and
    ``stream_flush_timeout`` (60 s). The keyword-only ``aws_lambda`` / ``aws_s3`` inject
    boto3 clients (they are not settings); otherwise the clients are built on first use, so
    creating a handler makes no AWS call. An agent with ``mcp_servers`` gets its tools in
    ``agent["configuration"]["tools"]`` here (:mod:`ai_agent_handler.tools`): one listing per
    server and process while the cached list is fresh, none with ``mcp_llm_native``.

    A subclass's ``ask_model`` sets the ``stream_event`` it is given, and returns, only once
    every chunk the handler sent was delivered (:func:`_delivering`), so the engine, which
    goes on at that point, leaves nothing queued in a Lambda environment about to freeze.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A provider's ask_model is where a run's work ends as this class can see it: its
        # stream_event is set, and it returns, only once every chunk it sent was delivered.
        super().__init_subclass__(**kwargs)
        ask_model = cls.__dict__.get("ask_model")
        if callable(ask_model) and not hasattr(ask_model, "__delivers_chunks__"):
            cls.ask_model = _delivering(ask_model)  # type: ignore[attr-defined]

    def __init__(
        self,
        logger: logging.Logger,
        agent: Mapping[str, Any],
        *,
        aws_lambda: LambdaClient | None = None,
        aws_s3: S3Client | None = None,
        **setting: Any,
    ) -> None:
        self.logger = logger
        self.agent = agent
        if aws_lambda is not None:
            self.aws_lambda = aws_lambda
        if aws_s3 is not None:
            self.aws_s3 = aws_s3
        self.setting: dict[str, Any] = setting
        # Read and checked once: an unknown phase or a malformed flag setting raises here.
        self._flag_config = settings.flag_config(setting)
        self._endpoint_id: str | None = None
        self._part_id: str | None = None
        self._run: dict[str, Any] | None = None
        #: The WebSocket connection chunks are streamed to; None: not streaming.
        self.connection_id: str | None = None
        #: The SQS FIFO queue (a boto3 ``Queue`` resource) calls go through; None: Lambda.
        self.task_queue: Queue | None = None
        #: What a run without a ``run`` (local use) remembers; upstream's handlers append to
        #: ``self._short_term_memory`` directly.
        self._short_term_memory: list[Any] = []
        self.accumulated_text = ""
        self.final_output: dict[str, Any] = {}
        self.uploaded_files: list[Any] = []
        self._decision: KeyDecision | None = None
        self._decision_lock = threading.Lock()  # a run's first decision is made once
        self._stream: StreamChannel | None = None  # background stream dispatch, on first use
        #: The model's MCP tools (``agent["mcp_servers"]``); None when the agent has none.
        self.toolbox: Toolbox | None = None
        if "mcp_servers" in agent:
            from .tools import Toolbox  # loaded only for agents with tools

            self.toolbox = Toolbox(agent, logger)

    # -- AWS clients (lazy, injectable) --------------------------------------------------
    @functools.cached_property
    def aws_lambda(self) -> LambdaClient:
        """The boto3 Lambda client: the injected (or assigned) one, else built on first use.

        The handler's own calls never build it: they pass the injected (or assigned, or
        already built) client, else None, and :class:`Utility` uses a client shared by the
        process only when a call really goes to Lambda. A test that patches
        ``Utility.invoke_funct_on_aws_lambda`` needs no region and no credentials.
        """
        return _aws.lambda_client(self.setting)

    def _lambda_client(self) -> LambdaClient | None:
        client: LambdaClient | None = self.__dict__.get("aws_lambda")
        return client

    @functools.cached_property
    def aws_s3(self) -> S3Client:
        """The boto3 S3 client: the injected (or assigned) one, else built on first use."""
        return _aws.s3_client(self.setting)

    # -- run context ----------------------------------------------------------------------
    @property
    def endpoint_id(self) -> str | None:
        """Platform identifier, e.g. ``"aws-prod-us-east-1"``."""
        return self._endpoint_id

    @endpoint_id.setter
    def endpoint_id(self, value: str | None) -> None:
        # Kept as given even when invalid: a caller that swallows the error below must not
        # send under a stale id, and every later call re-validates and refuses it again.
        # The run's decision stays: it is used only while (run_uuid, endpoint_id, part_id)
        # is the one it was made for, so assigning the same value again changes nothing.
        self._endpoint_id = value
        validate_id("endpoint_id", value)

    @property
    def part_id(self) -> str | None:
        """Business partition, e.g. ``"acme-corp"``; None until set."""
        return self._part_id

    @part_id.setter
    def part_id(self, value: str | None) -> None:
        self._part_id = value  # kept as given, like endpoint_id
        validate_id("part_id", value)

    @property
    def partition_key(self) -> str | None:
        """``endpoint_id#part_id``, or ``endpoint_id`` without a ``part_id``.

        Pure composition: it does not consult the flag (see :attr:`key_decision`).
        """
        return compose(self._endpoint_id, self._part_id)

    @property
    def phase(self) -> str | None:
        """The rollout phase: ``setting["rollout_phase"]``, else ``$ROLLOUT_PHASE``, as read
        when the handler was created (None when unset: the production file is used)."""
        return self._flag_config.phase

    @property
    def flag_config(self) -> settings.FlagConfig:
        """The flag settings read when the handler was created (see :mod:`.settings`)."""
        return self._flag_config

    @property
    def short_term_memory(self) -> list[Any]:
        return self._short_term_memory

    @short_term_memory.setter
    def short_term_memory(self, value: list[Any]) -> None:
        self._short_term_memory = value

    @property
    def run(self) -> dict[str, Any] | None:
        return self._run

    @run.setter
    def run(self, value: dict[str, Any] | None) -> None:
        # getattr: a subclass may set run before calling this class's __init__. The same
        # run assigned again (an updated dict, same run_uuid) is not a new run.
        if getattr(self, "_stream", None) is not None and _run_uuid(value) != _run_uuid(
            getattr(self, "_run", None)
        ):
            self._settle_stream("a new run")
        self._run = value

    # -- the per-run key decision ---------------------------------------------------------
    @property
    def key_decision(self) -> KeyDecision | None:
        """The current run's key decision, once the run has sent something.

        None before that, and once ``run``, ``endpoint_id`` or ``part_id`` is given another
        value (the next call decides again); assigning the same value keeps it.
        """
        decision = self._decision
        run = self._run
        if decision is None or run is None or not self._decided_for(decision, run):
            return None
        return decision

    def _decided_for(self, decision: KeyDecision, run: Mapping[str, Any]) -> bool:
        # The decision belongs to the run's identity, not to the attribute assignments.
        return (
            decision.run_uuid == run["run_uuid"]
            and decision.endpoint_id == self._endpoint_id
            and decision.part_id == (self._part_id or None)
        )

    def _run_decision(self, run: Mapping[str, Any]) -> KeyDecision:
        # Under the lock: threads making a run's first calls together share one decision,
        # so a flag flip between their evaluations cannot split the run across two keys.
        with self._decision_lock:
            decision = self._decision
            run_uuid = str(run["run_uuid"])
            if (
                decision is None
                or decision.run_uuid != run_uuid
                or decision.endpoint_id != self._endpoint_id
                or decision.part_id != (self._part_id or None)
            ):
                decision = self._decide(run_uuid)
                self._decision = decision
            return decision

    def _decide(self, run_uuid: str) -> KeyDecision:
        config = self._flag_config
        # Ids first: an invalid id is refused before any provider is set up.
        run_keys = keys(self._endpoint_id, self._part_id)
        if config.mode == settings.COMPOSITE_MODE:
            return decide_composite(
                self._endpoint_id,
                self._part_id,
                run_uuid=run_uuid,
                phase=config.phase,
                run_keys=run_keys,
            )
        from .flag_file.default_provider import flag_domain

        domain = flag_domain(config, self.setting, self.logger)
        return decide(
            self._endpoint_id,
            self._part_id,
            run_uuid=run_uuid,
            phase=config.phase,
            client=flag_client(domain),
            logger=self.logger,
            run_keys=run_keys,
        )

    # -- Lambda-facing methods ------------------------------------------------------------
    def invoke_async_funct(self, function_name: str, **params: Any) -> None:
        """Run a DB operation ``function_name`` in Lambda for this run (no-op without a run).

        Adds ``thread_uuid``, ``run_uuid`` and ``updated_by`` from the run. Errors raise.
        """
        run = self._run
        if run is None:
            return
        params.update(
            {
                "thread_uuid": run["thread"]["thread_uuid"],
                "run_uuid": run["run_uuid"],
                "updated_by": run["updated_by"],
            }
        )
        decision = self._decision
        if decision is None or not self._decided_for(decision, run):
            decision = self._run_decision(run)
        Utility.invoke_funct_on_aws_lambda(
            self.logger,
            decision.routing_key,
            function_name,
            params=params,
            setting=self.setting,
            test_mode=self.setting.get("test_mode"),
            aws_lambda=self._lambda_client(),
            invocation_type="Event",
            message_group_id=run["run_uuid"],
            task_queue=self.task_queue,
        )

    def send_data_to_stream(
        self,
        index: int = 0,
        data_format: str = "text",
        chunk_delta: str = "",
        is_message_end: bool = False,
        suffix: str = "",
    ) -> None:
        """Send one chunk to the WebSocket connection (no-op without a connection or run).

        By default (``setting["stream_dispatch"] = "background"``) the chunk, with the run's
        pinned routing key, is handed to a background dispatcher and this returns without
        waiting on the network (:mod:`ai_agent_handler.transport.stream`): SQS FIFO groups get their
        chunks in index order in batches of up to 10, Lambda ``Event`` invocations run in
        parallel. It blocks only while the dispatcher's bounded queue is full.

        The chunk with ``is_message_end=True`` waits until every chunk of this handler before
        it was delivered (at most ``setting["stream_flush_timeout"]`` seconds, default 60)
        and raises :class:`~ai_agent_handler.StreamDeliveryError` when any failed or
        is still undelivered, after logging the counts -- as upstream raised from the failing
        chunk's own call, only later, and once per message instead of once per chunk.

        ``"sync"`` keeps the upstream behaviour: one blocking
        :meth:`Utility.invoke_funct_on_aws_lambda` per chunk in the caller's thread, errors
        raised from the call. Chunks also go that way with ``test_mode="local_for_all"``
        (the local function runs in the caller's thread, as upstream) and whenever
        ``Utility.invoke_funct_on_aws_lambda`` is not the library's own function: a test
        that patches it reads ``call_args`` right after this returns, and that patch is the
        contract's test seam.
        """
        connection_id = self.connection_id
        run = self._run
        if connection_id is None or run is None:
            return
        decision = self._decision
        if decision is None or not self._decided_for(decision, run):
            decision = self._run_decision(run)  # once per run (or a non-str run_uuid: cheap)
        if suffix:
            message_group_id = f"{connection_id}-{run['run_uuid']}-{suffix}"
        else:
            message_group_id = f"{connection_id}-{run['run_uuid']}"
        params = {
            "connection_id": connection_id,
            "data": encode_chunk(message_group_id, data_format, index, chunk_delta, is_message_end),
        }
        setting = self.setting
        invoke = Utility.invoke_funct_on_aws_lambda
        if (
            invoke is not LIBRARY_INVOKE
            or setting.get("stream_dispatch") == "sync"
            or setting.get("test_mode") == "local_for_all"
        ):
            invoke(
                self.logger,
                decision.routing_key,
                STREAM_FUNCT,
                params=params,
                setting=setting,
                test_mode=setting.get("test_mode"),
                aws_lambda=self._lambda_client(),
                invocation_type="Event",
                message_group_id=message_group_id,
                task_queue=self.task_queue,
            )
            return
        channel = self._stream or self._open_stream()
        queue = self.task_queue
        channel.send(
            StreamChunk(
                self.logger,
                decision.routing_key,
                params,
                message_group_id,
                queue,
                self._lambda_client() if queue is None else None,
                setting,
                index,
            )
        )
        if is_message_end:
            report = channel.wait(self._stream_timeout())
            if not report.ok:
                raise StreamDeliveryError(self._report_stream(report, "message end"), report)

    # -- MCP tools ------------------------------------------------------------------------
    def get_function(self, function_name: str) -> ToolFunction:
        """The callable of the MCP tool ``function_name`` (see :meth:`.tools.Toolbox.get_function`).

        Raises ``MCPToolNotFound`` (an ``MCPError``; message "Function <name> not found in MCP
        tools") when no server of the agent offers the name, or the agent has no servers.
        """
        if self.toolbox is None:
            from .tools.servers import not_found

            raise not_found(function_name)
        return self.toolbox.get_function(function_name)

    def flush(self, timeout: float | None = None) -> StreamReport:
        """Wait until every chunk this handler handed over is delivered; report on them.

        Returns the :class:`~ai_agent_handler.StreamReport` since the previous
        report (message end, new run or flush): delivered, failed, and still pending when
        ``timeout`` seconds passed (None: wait for all). Failures are logged, not raised.
        Call it before a Lambda entry point returns when the last chunk was not a message
        end: a frozen execution environment delivers nothing.
        """
        return self._wait_stream(timeout, "flush")

    @property
    def stream_dispatcher(self) -> StreamDispatcher:
        """The dispatcher background chunks go through.

        Shared per process and per ``(stream_workers, stream_queue_size)`` setting (defaults
        32 and 1000); assign a :class:`~ai_agent_handler.transport.stream.StreamDispatcher` to use
        another (chunks already handed over are waited for first).
        """
        return (self._stream or self._open_stream()).dispatcher

    @stream_dispatcher.setter
    def stream_dispatcher(self, dispatcher: StreamDispatcher) -> None:
        if self._stream is not None:
            self._settle_stream("a dispatcher change")
        self._stream_timeout()  # a setting that cannot work fails before a chunk is sent
        self._stream = dispatcher.channel()

    def _open_stream(self) -> StreamChannel:
        mode = self.setting.get("stream_dispatch", "background")
        if mode not in ("background", "sync"):
            raise FlagConfigError(f"stream_dispatch must be 'background' or 'sync', got {mode!r}")
        self._stream_timeout()
        dispatcher = shared_dispatcher(
            int(self.setting.get("stream_workers", DEFAULT_WORKERS)),
            int(self.setting.get("stream_queue_size", DEFAULT_QUEUE_SIZE)),
        )
        channel = self._stream = dispatcher.channel()
        return channel

    def _stream_timeout(self) -> float | None:
        """``stream_flush_timeout`` in seconds; None (or infinity): wait for every chunk."""
        raw = self.setting.get("stream_flush_timeout", DEFAULT_FLUSH_TIMEOUT)
        if raw is None:
            return None
        try:
            timeout = float(raw)
        except (TypeError, ValueError):
            timeout = math.nan
        if timeout == math.inf:
            return None
        if not timeout >= 0:  # also refuses NaN
            raise FlagConfigError(
                f"stream_flush_timeout must be seconds >= 0 (or None to wait for every "
                f"chunk), got {raw!r}"
            )
        return timeout

    def _settle_stream(self, reason: str) -> None:
        # A new run (or dispatcher) starts clean: the previous one's chunks are waited for and
        # their failures logged -- not raised, they belong to a run that is already over.
        assert self._stream is not None
        self._wait_stream(self._stream_timeout(), reason)
        self._stream.forget_broken_groups()

    def _wait_stream(self, timeout: float | None, reason: str) -> StreamReport:
        """Wait up to ``timeout`` seconds (None: for all) until this handler's chunks are
        delivered; failures are logged and counted, and returned in the report."""
        channel = self._stream
        if channel is None:
            return StreamReport()
        report = channel.wait(timeout)
        if not report.ok:
            self._report_stream(report, reason)
        return report

    def _report_stream(self, report: StreamReport, reason: str) -> str:
        from .metrics import record_stream_chunks_failed

        run_uuid = self._run["run_uuid"] if self._run else None
        message = (
            f"stream of run {run_uuid} on connection {self.connection_id} at {reason}: "
            f"{report.failed + report.pending} chunks not delivered ({report})"
        )
        self.logger.error(message)
        decision = self._decision
        record_stream_chunks_failed(
            report.failed + report.pending,
            decision.routing_key if decision else "",
            phase=self._flag_config.phase,
        )
        return message

    # -- streaming helpers (upstream's rules, exactly) -----------------------------------
    def process_text_content(
        self, index: int, buf: str, output_format: str, suffix: str = ""
    ) -> tuple[int, str]:
        """Send buffered text once there is enough of it; return the next index and buffer.

        A buffer holding ``<`` is XML, whatever its length: it waits for a ``>`` (or more
        than 500 characters, then goes whole as one ``"text"`` chunk) and is then sent as
        text-before, tags, an unclosed ``<...`` remainder and trailing text, one chunk each
        (``"xml"`` for a piece with both ``<`` and ``>``). Other text goes whole, in
        ``output_format``, once it has ``setting["accumulated_partial_text_buffer"]``
        characters (default 10, read at every call). Each chunk takes the next index.
        """
        if "<" in buf:
            if ">" in buf:
                for data_format, piece in split_xml(buf):
                    self.send_data_to_stream(
                        index=index, data_format=data_format, chunk_delta=piece, suffix=suffix
                    )
                    index += 1
                return index, ""
            if len(buf) > XML_FLUSH_LIMIT:
                self.send_data_to_stream(
                    index=index, data_format="text", chunk_delta=buf, suffix=suffix
                )
                return index + 1, ""
            return index, buf
        if len(buf) >= int(self.setting.get("accumulated_partial_text_buffer", "10")):
            self.send_data_to_stream(
                index=index, data_format=output_format, chunk_delta=buf, suffix=suffix
            )
            return index + 1, ""
        return index, buf

    def process_and_send_json(
        self, index: int, complete: str, partial: str, data_format: str
    ) -> tuple[int, str, str]:
        """Send ``partial`` as one chunk once ``complete + partial`` can be completed into
        JSON (:meth:`try_complete_json` is not empty, even for an empty ``partial``).

        Returns the next index, ``complete`` with ``partial`` appended and an empty
        ``partial``; or the inputs unchanged when nothing was sent.
        """
        if try_complete_json(complete + partial):
            self.send_data_to_stream(
                index=index, data_format=data_format, chunk_delta=partial, is_message_end=False
            )
            return index + 1, complete + partial, ""
        return index, complete, partial

    @staticmethod
    def try_complete_json(s: str) -> str:
        """``s`` if it is valid JSON, else the first of the endings ``}``, ``]``, ``}``,
        ``}]``, ``}]}``, ``}}`` that makes it valid, else ``""``."""
        return try_complete_json(s)


def _run_uuid(run: Mapping[str, Any] | None) -> object:
    return None if run is None else run.get("run_uuid")


# -- a run's end, as the engine drives a provider --------------------------------------------
def _delivering(ask_model: Callable[..., Any]) -> Callable[..., Any]:
    """``ask_model`` that delivers the run's chunks before the engine can go on.

    The engine runs ``ask_model(input_messages, queue, stream_event, ...)`` in a thread and
    returns once ``stream_event`` is set (or, without a queue, once ``ask_model`` returns);
    a Lambda environment then freezes, and chunks still queued wait for its next
    invocation or are lost with it. So the ``stream_event`` the provider sees is set only
    after its chunks are delivered, and the outermost ``ask_model`` returns only after
    them: when some failed, it raises :class:`~ai_agent_handler.StreamDeliveryError`
    (unless it is raising already). Nested calls (a provider that calls ``ask_model``
    again after a tool call) wait for nothing.
    """
    try:
        signature: inspect.Signature | None = inspect.signature(ask_model)
    except (TypeError, ValueError):  # pragma: no cover - a callable without a signature
        signature = None

    @functools.wraps(ask_model)
    def delivering(self: AIAgentEventHandler, *args: Any, **kwargs: Any) -> Any:
        event: _DeliveredEvent | None = None
        if signature is not None:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                bound = None  # the call itself raises the TypeError below
            given = bound.arguments.get("stream_event") if bound is not None else None
            if bound is not None and isinstance(given, threading.Event):
                if not isinstance(given, _DeliveredEvent):
                    bound.arguments["stream_event"] = event = _DeliveredEvent(given, self)
                args, kwargs = bound.args[1:], bound.kwargs
        depth = self.__dict__.get("_asking", 0)
        self.__dict__["_asking"] = depth + 1
        try:
            result = ask_model(self, *args, **kwargs)
        except BaseException:
            if depth == 0:
                self._wait_stream(self._stream_timeout(), "the end of ask_model")
            raise
        finally:
            self.__dict__["_asking"] = depth
        if depth == 0:
            report = self._wait_stream(self._stream_timeout(), "the end of ask_model")
            failed = event.report if event is not None and not event.report.ok else report
            if not failed.ok:
                raise StreamDeliveryError(
                    f"stream of run {_run_uuid(self._run)}: {failed.failed + failed.pending} "
                    f"chunks not delivered ({failed})",
                    failed,
                )
        return result

    delivering.__delivers_chunks__ = True  # type: ignore[attr-defined]
    return delivering


class _DeliveredEvent(threading.Event):
    """The engine's ``stream_event`` as the provider sees it: ``set()`` first waits until the
    handler's chunks are delivered (failures logged and kept in ``report``)."""

    def __init__(self, event: threading.Event, handler: AIAgentEventHandler) -> None:
        # threading.Event's own state is not used: every method goes to the engine's event.
        self._event = event
        self._handler = handler
        self.report = StreamReport()

    def set(self) -> None:
        handler = self._handler
        report = handler._wait_stream(handler._stream_timeout(), "stream_event.set()")
        if not report.ok:
            self.report = report
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    isSet = is_set  # threading.Event's old name

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)
