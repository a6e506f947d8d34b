"""The agent task Lambda during the key migration: it receives the handler's calls.

Deploy :func:`handler` as the function the handler invokes (``silvaengine_agenttask``) and,
if the engine uses a task queue, as the consumer of that SQS FIFO queue (event source
mapping with ``ReportBatchItemFailures``). Environment:

* ``TASK_TABLE``: a DynamoDB table, partition key ``pk`` (the routing key), sort key ``sk``;
* ``WEBSOCKET_API_URL``: the WebSocket API's connections endpoint
  (``https://<api-id>.execute-api.<region>.amazonaws.com/<stage>``);
* ``SHADOW_SAMPLE`` (optional, default ``0.01``): the share of composite reads shadowed,
  from 0 to 1. Read once when the module is loaded: a value that is not a number from 0 to
  1 fails the function's start-up with a message naming it, not each call.

Items: a run under ``sk = "run#<run_uuid>"``, a WebSocket connection (written by the
``$connect`` route) under ``sk = "connection#<connection_id>"``. Every function routes with
:func:`~ai_agent_handler.receiver.route`, reads with
:func:`~ai_agent_handler.receiver.read_with_shadow` (the key the call came with, then the
legacy key, as :func:`~ai_agent_handler.receiver.read_with_fallback`; on a sampled composite
call also the item under the other key, compared without the key attributes ``pk``,
``endpoint_id`` and ``part_id``: ``ShadowSame`` / ``ShadowDifferent`` / ``ShadowLegacyOnly``
/ ``ShadowCompositeOnly`` in the read's EMF line) and writes under ``routing.key`` only. A
key that cannot be split is refused before anything is read or written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import boto3

from ai_agent_handler.receiver import RoutingKey, read_with_shadow, route

__all__ = [
    "FUNCTS",
    "IGNORED_FIELDS",
    "SHADOW_SAMPLE",
    "TaskFunctions",
    "handler",
    "shadow_sample_from_environment",
]

logger = logging.getLogger("agent_task")

#: The functions a handler may call by name (``funct``).
FUNCTS = frozenset({"insert_update_run", "get_run", "send_data_to_stream"})
#: Left out when the copies under both keys are compared: they differ in these by design.
IGNORED_FIELDS = frozenset({"pk", "endpoint_id", "part_id"})


def shadow_sample_from_environment(environ: Mapping[str, str] = os.environ) -> float:
    """``$SHADOW_SAMPLE`` (default 0.01): the share of composite reads shadowed, 0 to 1."""
    raw = environ.get("SHADOW_SAMPLE", "").strip()
    if not raw:
        return 0.01
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise ValueError(
            f"SHADOW_SAMPLE must be a number from 0 (no shadow reads) to 1 (every composite "
            f"read), e.g. 0.01; got {raw!r}"
        )
    return value


#: Read at start-up: an invalid ``SHADOW_SAMPLE`` fails the module's import (Lambda's init).
SHADOW_SAMPLE = shadow_sample_from_environment()


class TaskFunctions:
    """The functions the handler calls, on one table and one WebSocket API."""

    def __init__(self, table: Any, connections: Any, *, shadow_sample: float | None = None) -> None:
        self.table = table  # boto3 DynamoDB Table
        self.connections = connections  # boto3 "apigatewaymanagementapi" client
        self.shadow_sample = SHADOW_SAMPLE if shadow_sample is None else shadow_sample

    @classmethod
    def from_environment(cls) -> TaskFunctions:
        return cls(
            boto3.resource("dynamodb").Table(os.environ["TASK_TABLE"]),
            boto3.client("apigatewaymanagementapi", endpoint_url=os.environ["WEBSOCKET_API_URL"]),
        )

    def call(self, routing: RoutingKey, funct: str, params: Mapping[str, Any]) -> Any:
        if funct not in FUNCTS:
            raise ValueError(f"unknown funct {funct!r}")
        return getattr(self, funct)(routing, **params)

    def insert_update_run(self, routing: RoutingKey, *, run_uuid: str, **fields: Any) -> Any:
        """Create or update a run: what is stored (under either key) updated with ``fields``,
        written under the key the call came with."""
        sk = f"run#{run_uuid}"
        item = {**(self._get(routing, sk) or {}), **fields, "pk": routing.key, "sk": sk}
        self.table.put_item(Item=item)
        return item

    def get_run(self, routing: RoutingKey, *, run_uuid: str, **_: Any) -> Any:
        return self._get(routing, f"run#{run_uuid}")

    def send_data_to_stream(self, routing: RoutingKey, *, connection_id: str, data: str) -> bool:
        """Post one chunk to the WebSocket client, if the connection is this endpoint's."""
        if self._get(routing, f"connection#{connection_id}") is None:
            logger.warning("no connection %s for %s: chunk dropped", connection_id, routing.key)
            return False
        self.connections.post_to_connection(ConnectionId=connection_id, Data=data.encode())
        return True

    def _get(self, routing: RoutingKey, sk: str) -> Any:
        def read(key: str) -> Any:
            return self.table.get_item(Key={"pk": key, "sk": sk}).get("Item")

        # One EMF line: ReceiverReads, LegacyFallback*, and Shadow* when sampled.
        return read_with_shadow(read, routing, sample=self.shadow_sample, ignore=IGNORED_FIELDS)


_functions: TaskFunctions | None = None


def functions() -> TaskFunctions:
    """Built on the first call, then reused by every request of this environment."""
    global _functions
    if _functions is None:
        _functions = TaskFunctions.from_environment()
    return _functions


def handler(event: Mapping[str, Any], context: object) -> Any:
    """A direct invocation ``{"endpoint_id", "key_scheme", "funct", "params"}``, or an SQS
    event whose records carry ``endpoint_id``, ``key_scheme`` and ``funct`` as message
    attributes and ``{"params": ...}`` as body."""
    if "Records" in event:
        return _handle_records(event["Records"])
    routing = route(event)  # InvalidRoutingKey: the invocation fails, nothing is written
    return {"data": functions().call(routing, event["funct"], event.get("params") or {})}


def _handle_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    # In order; from the first failure on every record goes back to the queue, so a FIFO
    # message group stays in order (a record that keeps failing ends in the dead-letter queue).
    for position, record in enumerate(records):
        try:
            routing = route(record)
            funct = record["messageAttributes"]["funct"]["stringValue"]
            functions().call(routing, funct, json.loads(record["body"])["params"])
        except Exception:
            logger.exception("task message %s failed", record.get("messageId"))
            failed = [{"itemIdentifier": r.get("messageId")} for r in records[position:]]
            return {"batchItemFailures": failed}
    return {"batchItemFailures": []}
