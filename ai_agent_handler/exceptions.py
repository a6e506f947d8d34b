"""Every error this library raises, in one tree.

::

    AIAgentHandlerError                 catch-all for this library's errors
    ├── PartitionKeyError (ValueError)  an endpoint_id / part_id that cannot form a safe key
    ├── FlagConfigError (ValueError)    a setting that cannot work: unknown phase, malformed
    │                                   flag source or s3:// URI, bad interval or dispatch mode
    ├── InvocationError (RuntimeError)  a Lambda / SQS call failed for good (funct, routing key);
    │                                   refused by AWS, it is also the botocore error's class
    ├── StreamDeliveryError             chunks of a streamed message failed or are late
    │   (RuntimeError)
    ├── FlagFileError (ValueError)      a flag document that cannot be used (problems listed)
    ├── FlagSourceError                 a flag file could not be read
    │   ├── SourceNotFound              missing file or object
    │   ├── SourceAccessDenied          permission denied, AccessDenied, bad credentials
    │   └── SourceUnavailable           throttling, timeouts, connection errors, 5xx
    ├── FlagEditError (ValueError)      an operator's edit cannot apply to the document
    ├── StoreError                      reading or writing an operator's flag file failed
    │   └── ConflictError               someone else changed it meanwhile; nothing written
    ├── RampError (ValueError)          a ramp command that cannot apply: bad steps or
    │                                   duration, no ramp, a ramp already running, an alarm
    ├── MetricsError                    CloudWatch could not be read: no evidence, so a
    │                                   ramp holds
    ├── BackfillError                   a backfill cannot go on: bad map or option, tables
    │                                   that do not fit, a foreign checkpoint, DynamoDB
    │                                   failing past its retries (the checkpoint holds what
    │                                   was done)
    └── MCPError                        an MCP server or tool failed (``server``, ``tool``)
        ├── MCPToolError (RuntimeError) the tool ran and answered with an error result
        ├── MCPToolNotFound             no server offers the name: "Function <name> not
        │   (LookupError)               found in MCP tools"
        ├── MCPConfigError (ValueError) an ``mcp_servers`` entry or tool set that cannot
        │                               work: bad or unknown setting, unknown llm_name,
        │                               a name twice, allow/block naming no tool
        ├── MCPTimeoutError             connecting, listing or a call took too long; a
        │   (TimeoutError)              timed-out call may still have run
        ├── MCPConnectionError          the server cannot be reached, or the connection
        │   (ConnectionError)           or the answer's stream ended before the answer
        └── MCPProtocolError            the server answered outside the protocol (HTTP
                                        error status, not JSON-RPC, another request's
                                        id, a JSON-RPC error)

What a caller is expected to catch: :class:`PartitionKeyError` when assigning ids,
:class:`MCPError` (or upstream's ``except Exception``) around a tool call,
:class:`InvocationError` from ``invoke_async_funct`` and synchronous streaming,
:class:`StreamDeliveryError` at a message end. A call AWS refused raises an
:class:`InvocationError` that is *also* an instance of the botocore error it wraps
(``ClientError``, a modeled ``client.exceptions.X``, ``ReadTimeoutError``, ...), so provider
code written for upstream, ``except botocore.exceptions.ClientError``, still catches it.
The receivers' ``receiver.InvalidRoutingKey`` (a ``ValueError``) lives in ``receiver.py``,
which imports nothing of this package so that a receiver can copy the one file.
The flag-source errors never reach a handler: the provider keeps its last good flags and
reports them as events and log lines.
AWS errors (botocore's ``ClientError`` / ``BotoCoreError``) are translated at the edge that
made the call, and kept as ``__cause__``.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any


class AIAgentHandlerError(Exception):
    """Base class of every error this library raises.

    ``options`` are the arguments that would let the call go through, by parameter name
    (``{"phase": "NAME"}``): the message says what happened, and a front end names the
    options its own way (the CLI as its command-line options).
    """

    options: Mapping[str, str] = types.MappingProxyType({})

    def __init__(self, *args: object, options: Mapping[str, str] | None = None) -> None:
        super().__init__(*args)
        if options:
            self.options = dict(options)


class PartitionKeyError(AIAgentHandlerError, ValueError):
    """An ``endpoint_id`` or ``part_id`` that cannot form a safe partition key."""


class FlagConfigError(AIAgentHandlerError, ValueError):
    """A setting that cannot work (unknown phase, malformed source, URI or interval)."""


class InvocationError(AIAgentHandlerError, RuntimeError):
    """A Lambda or SQS call failed: AWS refused it after retries, or the function failed.

    ``funct`` and ``routing_key`` name the call; the AWS error, when there is one, is the
    ``__cause__`` (a ``ClientError`` keeps its ``.response``).
    """

    funct: str
    routing_key: str

    def __init__(self, message: str, *, funct: str, routing_key: str) -> None:
        super().__init__(message)
        self.funct = funct
        self.routing_key = routing_key

    @classmethod
    def wrapping(
        cls, err: Exception, message: str, *, funct: str, routing_key: str
    ) -> InvocationError:
        """An error that is this class *and* ``type(err)``, carrying ``err``'s attributes.

        ``except ClientError as e: e.response["Error"]["Code"]`` works on it as on ``err``;
        ``message`` (which names the funct and routing key) is its text. Raise it ``from err``.
        """
        kind = _wrapping_class(type(err))
        if kind is None:
            return cls(message, funct=funct, routing_key=routing_key)
        error: InvocationError = kind.__new__(kind)
        error.__dict__.update(err.__dict__)
        error.args = (message,)
        error.funct = funct
        error.routing_key = routing_key
        return error


_wrapping_classes: dict[type[Exception], type[InvocationError] | None] = {}


def _wrapping_class(kind: type[Exception]) -> type[InvocationError] | None:
    # One class per botocore error class, made on first use (modeled errors such as
    # client.exceptions.ThrottlingException are themselves made at run time by botocore).
    if kind not in _wrapping_classes:
        try:
            # The botocore class first: its instance layout (OSError for some timeouts)
            # decides how instances are made.
            made: type[InvocationError] | None = type(
                f"InvocationError[{kind.__name__}]",
                (kind, InvocationError),
                {"__module__": __name__, "__doc__": InvocationError.__doc__},
            )
        except TypeError:  # a base whose instance layout cannot be combined: plain then
            made = None
        _wrapping_classes[kind] = made
    return _wrapping_classes[kind]


class StreamDeliveryError(AIAgentHandlerError, RuntimeError):
    """Chunks of a streamed message failed or were not delivered in time.

    Raised from the ``send_data_to_stream(..., is_message_end=True)`` call of the message;
    ``report`` holds the counts and the first error texts.
    """

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        #: The :class:`~ai_agent_handler.StreamReport` of the message.
        self.report = report


class FlagFileError(AIAgentHandlerError, ValueError):
    """A flag file that cannot be used; the message names what is wrong and where."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class FlagSourceError(AIAgentHandlerError):
    """The flag file could not be read; the message names the source and the cause."""


class SourceNotFound(FlagSourceError):
    """The file or object does not exist (deleted, mistyped path, NoSuchKey, NoSuchBucket)."""


class SourceAccessDenied(FlagSourceError):
    """Permission denied on the file, or AccessDenied / bad credentials on the object."""


class SourceUnavailable(FlagSourceError):
    """A transient fault: throttling, timeouts, connection errors, 5xx."""


class FlagEditError(AIAgentHandlerError, ValueError):
    """The document cannot be read or edited as asked (the message says why and what to do)."""


class StoreError(AIAgentHandlerError):
    """Reading or writing the flag file failed; the message is one line for the operator."""


class ConflictError(StoreError):
    """Someone else changed (or is changing) the file; nothing was written."""


class MCPError(AIAgentHandlerError):
    """An MCP server or one of its tools failed; ``server`` and ``tool`` name them when known."""

    def __init__(self, message: str, *, server: str | None = None, tool: str | None = None):
        super().__init__(message)
        self.server = server
        self.tool = tool


class MCPToolError(MCPError, RuntimeError):
    """The tool ran and answered with an error result (``isError``).

    ``content`` is the result's content (a list of dicts, as a successful call returns it)
    and ``structured_content`` its structured part, when the server sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        tool: str | None = None,
        content: list[dict[str, Any]] | None = None,
        structured_content: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, server=server, tool=tool)
        self.content: list[dict[str, Any]] = content or []
        self.structured_content = structured_content


class MCPToolNotFound(MCPError, LookupError):
    """No server of the agent offers the name (the message is upstream's)."""


class MCPConfigError(MCPError, ValueError):
    """An ``mcp_servers`` entry or tool set that cannot work; the message says what to change."""


class MCPTimeoutError(MCPError, TimeoutError):
    """Connecting, listing or calling took longer than the server's timeout.

    A timed-out call is never sent again: it may have run on the server.
    """


class MCPConnectionError(MCPError, ConnectionError):
    """The server could not be reached, or the connection (or the answer's event stream)
    ended before the answer came; such a call may have run and is never sent again."""


class MCPProtocolError(MCPError):
    """The server answered outside the protocol: an HTTP error status, a body that is not
    JSON-RPC, an answer carrying another request's id, or a JSON-RPC error."""


class RampError(AIAgentHandlerError, ValueError):
    """A ramp command that cannot apply (bad steps or duration, no ramp, wrong status)."""


class MetricsError(AIAgentHandlerError):
    """CloudWatch could not be read (permissions, throttling, network): no evidence."""


class BackfillError(AIAgentHandlerError):
    """A backfill that cannot go on: a bad mapping or option, a table that does not fit the
    job, a damaged or foreign checkpoint, DynamoDB failing past its retries. The checkpoint
    holds what was done: the same command continues from there."""
