"""The receiving side of the partition key: split it, read with a fallback, count the fallbacks.

For the function that receives the handler's calls (the agent task Lambda, the consumer of
the SQS task queue). Each call carries a routing key in ``endpoint_id`` (SQS: the message
attribute ``endpoint_id``) and says in ``key_scheme`` which kind it is:

* ``"composite"``: ``endpoint_id#part_id``. Neither id can contain ``#``, so the split is
  exact;
* ``"legacy"``: a plain ``endpoint_id`` (also what a call without ``key_scheme`` means).

During the migration the same endpoint sends either key, so a receiver:

1. routes each call with :func:`route` (a Lambda payload or one SQS record), which refuses a
   key that cannot be split (:class:`InvalidRoutingKey`): write nothing for such a call;
2. reads with :func:`read_with_fallback`: the key the call came with first, then the legacy
   key, so data written before the endpoint turned composite is still found;
3. writes under the key the call came with (``routing.key``), never under the other one.

Every :func:`read_with_fallback` writes one CloudWatch Embedded Metric Format line (namespace
``ai_agent_handler``, dimensions ``phase`` and ``key_scheme``) with three counters:

* ``ReceiverReads``: 1 per read;
* ``LegacyFallbackReads``: 1 when the composite key missed and the legacy key was read;
* ``LegacyFallbackHits``: 1 when that legacy read found the item.

``LegacyFallbackHits`` must fall to zero, and stay there for the agreed bake time, before
the fallback is removed: reads no longer need the legacy keys. ``LegacyFallbackReads`` also
counts items that exist under neither key (the first write of a new item usually reads
first), so it need not reach zero. The lines are on by default inside Lambda and off elsewhere
(``$AI_AGENT_HANDLER_METRICS``: ``emf`` / ``off``).

This module uses the standard library only and imports nothing else of its package: a
receiver can copy this one file into its function.

Example, a DynamoDB table whose partition key is ``pk``::

    routing = route(event)  # raises InvalidRoutingKey: refuse the call, write nothing
    item = read_with_fallback(
        lambda key: table.get_item(Key={"pk": key}).get("Item"), routing
    )
    table.put_item(Item={**(item or {}), **changes, "pk": routing.key})
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TextIO, TypeVar

__all__ = [
    "KEY_SCHEMES",
    "LEGACY_FALLBACK_HITS",
    "LEGACY_FALLBACK_READS",
    "METRICS_ENV",
    "METRICS_NAMESPACE",
    "PHASE_ENV",
    "RECEIVER_READS",
    "SEPARATOR",
    "InvalidRoutingKey",
    "KeyScheme",
    "ReceiverMetrics",
    "RoutingKey",
    "candidate_keys",
    "read_with_fallback",
    "route",
    "split_key",
]

#: Between ``endpoint_id`` and ``part_id`` in a composite key; never inside an id.
SEPARATOR = "#"

KeyScheme = Literal["composite", "legacy"]
#: The values of ``key_scheme``.
KEY_SCHEMES: tuple[KeyScheme, ...] = ("composite", "legacy")

#: CloudWatch namespace of the EMF counters (the handler's counters use it too).
METRICS_NAMESPACE = "ai_agent_handler"
#: ``emf`` turns the EMF lines on outside Lambda, ``off`` turns them off inside Lambda.
METRICS_ENV = "AI_AGENT_HANDLER_METRICS"
#: The rollout phase of this function (``dev``, ``staging``, ``production``): a dimension.
PHASE_ENV = "ROLLOUT_PHASE"
#: Metric: one per :func:`read_with_fallback`.
RECEIVER_READS = "ReceiverReads"
#: Metric: one per :func:`read_with_fallback` whose composite key missed and that then read
#: the legacy key.
LEGACY_FALLBACK_READS = "LegacyFallbackReads"
#: Metric: one per :func:`read_with_fallback` whose legacy read found the item; zero before
#: the fallback is removed.
LEGACY_FALLBACK_HITS = "LegacyFallbackHits"

_DIMENSIONS = ("phase", "key_scheme")
_NO_PHASE = "none"
_SHOWN = 200  # characters of an offending value quoted in an error message

_T = TypeVar("_T")


class InvalidRoutingKey(ValueError):
    """A call whose routing key cannot be used: refuse it and write nothing.

    ``field`` is where the bad value came from (``endpoint_id``, ``part_id``,
    ``key_scheme``, ``event``), ``value`` the value itself.
    """

    def __init__(self, field: str, value: object, problem: str) -> None:
        shown = repr(value)
        if len(shown) > _SHOWN:
            shown = shown[: _SHOWN - 3] + "..."
        super().__init__(f"{field} {problem}: {shown}")
        self.field = field
        self.value = value


@dataclass(frozen=True)
class RoutingKey:
    """One call's routing key, split.

    ``key`` is what the call came with, and the key to write under; ``part_id`` is None for
    a legacy key.
    """

    key: str
    key_scheme: KeyScheme
    endpoint_id: str
    part_id: str | None

    @property
    def legacy_key(self) -> str:
        """The key the same endpoint used before the migration: ``endpoint_id``."""
        return self.endpoint_id


def split_key(key: object, key_scheme: object = None) -> RoutingKey:
    """Split ``key`` as ``key_scheme`` says (``None``: composite when it contains ``#``).

    Raises :class:`InvalidRoutingKey` for a key that is not a non-empty string without
    surrounding whitespace, an unknown ``key_scheme``, a composite key that is not exactly
    two non-empty ids around one ``#`` (each without surrounding whitespace), and a legacy
    key that contains ``#``.
    """
    if not isinstance(key, str):
        raise InvalidRoutingKey("endpoint_id", key, f"must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidRoutingKey("endpoint_id", key, "must not be empty")
    if key != key.strip():
        raise InvalidRoutingKey("endpoint_id", key, "must not have surrounding whitespace")
    if key_scheme is None:
        key_scheme = "composite" if SEPARATOR in key else "legacy"
    if key_scheme == "legacy":
        if SEPARATOR in key:
            raise InvalidRoutingKey(
                "endpoint_id", key, f"must not contain {SEPARATOR!r} when key_scheme is 'legacy'"
            )
        return RoutingKey(key=key, key_scheme="legacy", endpoint_id=key, part_id=None)
    if key_scheme != "composite":
        raise InvalidRoutingKey("key_scheme", key_scheme, "must be 'composite' or 'legacy'")
    if key.count(SEPARATOR) != 1:
        raise InvalidRoutingKey(
            "endpoint_id",
            key,
            f"must hold exactly one {SEPARATOR!r} (endpoint_id{SEPARATOR}part_id) "
            "when key_scheme is 'composite'",
        )
    endpoint_id, _, part_id = key.partition(SEPARATOR)
    for field, value in (("endpoint_id", endpoint_id), ("part_id", part_id)):
        if not value:
            raise InvalidRoutingKey(field, key, "is empty in the composite key")
        if value != value.strip():
            raise InvalidRoutingKey(field, key, "has surrounding whitespace in the composite key")
    return RoutingKey(key=key, key_scheme="composite", endpoint_id=endpoint_id, part_id=part_id)


def route(event: Mapping[str, object]) -> RoutingKey:
    """The routing key of one call: a Lambda payload or one record of an SQS event.

    * Lambda payload: ``{"endpoint_id": ..., "key_scheme": ..., "funct": ..., "params": ...}``;
    * SQS record (an item of ``event["Records"]``): the message attributes ``endpoint_id``
      and ``key_scheme`` (``{"stringValue": ..., "dataType": "String"}``).

    A call without ``key_scheme`` (a handler from before the migration) is legacy. Raises
    :class:`InvalidRoutingKey` when the key is missing or cannot be split (:func:`split_key`).
    """
    if not isinstance(event, Mapping):
        raise InvalidRoutingKey("event", event, "must be a Lambda payload or an SQS record")
    if "messageAttributes" in event:
        attributes = event["messageAttributes"]
        if not isinstance(attributes, Mapping):
            raise InvalidRoutingKey("messageAttributes", attributes, "must be a mapping")
        key = _attribute(attributes, "endpoint_id")
        scheme = _attribute(attributes, "key_scheme")
    elif "Records" in event:
        raise InvalidRoutingKey(
            "event", list(event), "is a whole SQS event: route each of its Records"
        )
    else:
        key = event.get("endpoint_id")
        scheme = event.get("key_scheme")
    if key is None:
        raise InvalidRoutingKey("endpoint_id", key, "is missing: the call cannot be routed")
    return split_key(key, "legacy" if scheme is None else scheme)


def _attribute(attributes: Mapping[str, object], name: str) -> object:
    attribute = attributes.get(name)
    if attribute is None:
        return None
    if not isinstance(attribute, Mapping):
        raise InvalidRoutingKey(name, attribute, "must be an SQS message attribute")
    return attribute.get("stringValue")


def candidate_keys(routing: RoutingKey) -> tuple[str, ...]:
    """The keys to read, in order: ``(composite, legacy)`` for a composite key, else
    ``(legacy,)``."""
    if routing.key_scheme == "composite":
        return (routing.key, routing.legacy_key)
    return (routing.key,)


def read_with_fallback(
    read: Callable[[str], _T | None],
    routing: RoutingKey,
    *,
    phase: str | None = None,
    metrics: ReceiverMetrics | None = None,
) -> _T | None:
    """The first item ``read(key)`` finds under :func:`candidate_keys`, else None.

    ``read`` returns the item stored under a key, or None when there is none (only None:
    an empty item counts as found). Writes one EMF line (see the module docstring) under
    ``phase`` (else ``$ROLLOUT_PHASE``, else ``none``) and the scheme of the key the call
    came with, with the properties ``found`` and ``routing_key`` (searchable in CloudWatch
    Logs: which endpoints still hit the fallback). An exception from ``read`` propagates
    and is not counted.

    Write under ``routing.key`` (the key the call came with), never under the other one.
    """
    item: _T | None = None
    reads = 0
    for key in candidate_keys(routing):
        reads += 1
        item = read(key)
        if item is not None:
            break
    fallback = reads > 1
    (metrics if metrics is not None else _metrics).emit(
        {
            RECEIVER_READS: 1,
            LEGACY_FALLBACK_READS: int(fallback),
            LEGACY_FALLBACK_HITS: int(fallback and item is not None),
        },
        phase=phase or os.environ.get(PHASE_ENV, "").strip() or None,
        key_scheme=routing.key_scheme,
        properties={
            "found": item is not None,
            "routing_key": routing.key,
        },
    )
    return item


class ReceiverMetrics:
    """Writes CloudWatch Embedded Metric Format lines, one JSON object per line.

    ``stream`` defaults to ``sys.stdout`` at write time (CloudWatch Logs, inside Lambda);
    ``enabled=None`` decides from the environment when a line is due, with the rule of the
    handler's own counters. Thread-safe: each line is written with one ``write`` call under
    a lock.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        namespace: str = METRICS_NAMESPACE,
    ) -> None:
        self._stream = stream
        self._enabled = enabled
        self.namespace = namespace
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """As given; else ``$AI_AGENT_HANDLER_METRICS``, else on inside Lambda only."""
        return _metrics_enabled_by_env() if self._enabled is None else self._enabled

    @enabled.setter
    def enabled(self, value: bool | None) -> None:
        self._enabled = value

    def emit(
        self,
        values: Mapping[str, int],
        *,
        phase: str | None,
        key_scheme: str,
        properties: Mapping[str, object] | None = None,
    ) -> None:
        """One EMF line: counters ``values`` under dimensions ``phase`` and ``key_scheme``."""
        if not self.enabled:
            return
        document: dict[str, object] = dict(properties or {})
        document.update(values)
        document["phase"] = phase or _NO_PHASE
        document["key_scheme"] = key_scheme
        document["_aws"] = {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": self.namespace,
                    "Dimensions": [list(_DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in values],
                }
            ],
        }
        line = json.dumps(document, separators=(",", ":"), default=str) + "\n"
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()


def _metrics_enabled_by_env() -> bool:
    setting = os.environ.get(METRICS_ENV, "").strip().lower()
    if setting in {"emf", "on", "1", "true"}:
        return True
    if setting in {"off", "0", "false", "none"}:
        return False
    # Inside Lambda stdout goes to CloudWatch Logs, where EMF lines become metrics.
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


_metrics = ReceiverMetrics()
