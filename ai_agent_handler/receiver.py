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

Shadow reads
------------

:func:`read_with_shadow` reads and returns exactly what :func:`read_with_fallback` does
(same reads, same counters) and, on a sample of the composite calls (``sample``, default 1
in 100), also finds out what the other key holds and says how the two copies compare.
The outcome goes into the same EMF line, as one of four counters set to 1 (the other
three 0), with the property ``shadow`` naming it:

* ``ShadowSame`` (``"Same"``): both keys hold the item and the copies agree (equality, by
  default after removing the fields named in ``ignore``, such as the key attribute);
* ``ShadowDifferent`` (``"Different"``): both keys hold the item and the copies disagree;
* ``ShadowLegacyOnly`` (``"LegacyOnly"``): only the legacy key holds it: its backfill is
  still owed;
* ``ShadowCompositeOnly`` (``"CompositeOnly"``): only the composite key holds it (new
  since the endpoint turned composite, or deleted under the legacy key).

Consistency of the copies is ``ShadowSame / (ShadowSame + ShadowDifferent)`` (sums over a
period); ``ShadowLegacyOnly`` is the backfill still owed, and reaches zero once every item
the endpoints read exists under its composite key. A sampled call that found the item
under neither key counts all four as 0 (``shadow`` is ``"Neither"``); so does one whose
extra read or comparison raised, which counts ``ShadowReadErrors`` 1 instead (``shadow``
is ``"Error"``; the failure is logged on the logger ``ai_agent_handler.receiver`` and the
item is returned all the same). A sampled line carries all five shadow counters, an
unsampled one none of them. Only composite calls are shadowed: a legacy call has one key
and nothing to compare it with.

The cost: one extra ``read`` (of the legacy key) on a sampled call whose composite read
found the item; a sampled call whose composite read missed has read the legacy key
already, for the fallback. When the lines are off, nothing is shadowed.

This module uses the standard library only and imports nothing else of its package: a
receiver can copy this one file into its function.

Example, a DynamoDB table whose partition key is ``pk``::

    routing = route(event)  # raises InvalidRoutingKey: refuse the call, write nothing
    item = read_with_fallback(
        lambda key: table.get_item(Key={"pk": key}).get("Item"), routing
    )
    table.put_item(Item={**(item or {}), **changes, "pk": routing.key})

The same read, shadowed on 1 call in 100 (the copies differ in ``pk``: not compared)::

    item = read_with_shadow(
        lambda key: table.get_item(Key={"pk": key}).get("Item"), routing,
        sample=0.01, ignore={"pk"},
    )
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import random as _random
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
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
    "SHADOW_COMPOSITE_ONLY",
    "SHADOW_DIFFERENT",
    "SHADOW_LEGACY_ONLY",
    "SHADOW_METRICS",
    "SHADOW_READ_ERRORS",
    "SHADOW_SAME",
    "InvalidRoutingKey",
    "KeyScheme",
    "ReceiverMetrics",
    "RoutingKey",
    "candidate_keys",
    "read_with_fallback",
    "read_with_shadow",
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

#: Shadow-read metrics: one of the four per sampled read that found the item under either key.
#: Both keys hold the item, and the copies agree (the receiver's comparison says so).
SHADOW_SAME = "ShadowSame"
#: Both keys hold the item, and the copies disagree.
SHADOW_DIFFERENT = "ShadowDifferent"
#: Only the legacy key holds the item: its backfill is still owed.
SHADOW_LEGACY_ONLY = "ShadowLegacyOnly"
#: Only the composite key holds the item (new since the endpoint turned composite, or
#: deleted under the legacy key).
SHADOW_COMPOSITE_ONLY = "ShadowCompositeOnly"
#: The four shadow-read outcomes, in this order.
SHADOW_METRICS = (SHADOW_SAME, SHADOW_DIFFERENT, SHADOW_LEGACY_ONLY, SHADOW_COMPOSITE_ONLY)
#: Metric: one per sampled read whose extra legacy read or comparison raised (no outcome
#: then); the item is returned all the same.
SHADOW_READ_ERRORS = "ShadowReadErrors"

#: The ``shadow`` property of a sampled line, and the counter it sets to 1 (None: none).
_SHADOW_OUTCOMES: dict[str, str | None] = {
    "Same": SHADOW_SAME,
    "Different": SHADOW_DIFFERENT,
    "LegacyOnly": SHADOW_LEGACY_ONLY,
    "CompositeOnly": SHADOW_COMPOSITE_ONLY,
    "Neither": None,
    "Error": SHADOW_READ_ERRORS,
}
_SHADOW_COUNTERS = (*SHADOW_METRICS, SHADOW_READ_ERRORS)

_log = logging.getLogger("ai_agent_handler.receiver")  # also when copied as receiver.py
_PLAIN_NUMBERS = (float, int)  # a ``sample`` of these types needs no further type check

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
    item, fallback = _read(read, routing)
    _emit(metrics if metrics is not None else _metrics, routing, phase, item, fallback)
    return item


def read_with_shadow(
    read: Callable[[str], _T | None],
    routing: RoutingKey,
    sample: float = 0.01,
    *,
    compare: Callable[[_T, _T], object] | None = None,
    ignore: Collection[str] = (),
    phase: str | None = None,
    metrics: ReceiverMetrics | None = None,
    random: Callable[[], float] | None = None,
) -> _T | None:
    """:func:`read_with_fallback`, and on a sample of the calls a comparison of both keys.

    Returns what :func:`read_with_fallback` returns, after the same reads, and writes the
    same one EMF line. A composite call is sampled when ``random() < sample`` (``random``
    defaults to :func:`random.random`; ``sample`` is from 0, never, to 1, always). On a
    sampled call the item under the other key is known too: the composite read found the
    item, so the legacy key is read once more; or it missed, and the fallback has read the
    legacy key already. The line then carries the outcome (``ShadowSame``,
    ``ShadowDifferent``, ``ShadowLegacyOnly``, ``ShadowCompositeOnly``: see the module
    docstring) and the property ``shadow``. A legacy call is never shadowed (it has one
    key), and neither is any call while the lines are off (an outcome nobody sees is not
    worth a read).

    ``compare(composite_item, legacy_item)`` says whether the copies agree; by default
    they agree when equal once the top-level fields named in ``ignore`` are removed from
    both (items that are mappings; the copies always differ in their key attribute, e.g.
    ``ignore={"pk"}``). ``ignore`` only shapes the default comparison: passing both
    ``compare`` and a non-empty ``ignore`` is a :class:`TypeError` (leave the fields out in
    ``compare`` itself). A ``sample`` that is not a number from 0 to 1 is a
    :class:`ValueError`; both are raised before anything is read.

    The shadow part never breaks the read: when its extra ``read`` or ``compare`` raises,
    the item is still returned, the failure is logged (logger
    ``ai_agent_handler.receiver``) and the line counts ``ShadowReadErrors`` instead of an
    outcome. An exception from the reads :func:`read_with_fallback` makes propagates, and
    nothing is written.
    """
    if (
        type(sample) not in _PLAIN_NUMBERS
        and (isinstance(sample, bool) or not isinstance(sample, numbers.Real))
    ) or not 0 <= sample <= 1:
        raise ValueError(
            f"sample must be a number from 0 (never) to 1 (always), the share of calls "
            f"shadowed; got {sample!r}"
        )
    if isinstance(ignore, (str, bytes)):
        raise TypeError(f"ignore must be a collection of field names, not a string: {ignore!r}")
    if compare is not None and ignore:
        raise TypeError(
            "pass compare or ignore, not both: ignore only shapes the default comparison "
            "(leave those fields out in compare itself)"
        )
    writer = metrics if metrics is not None else _metrics
    sampled = (
        routing.key_scheme == "composite"
        and writer.enabled
        and (random if random is not None else _random.random)() < sample
    )
    item, fallback = _read(read, routing)
    shadow = _shadow(read, routing, item, fallback, compare, ignore) if sampled else None
    _emit(writer, routing, phase, item, fallback, shadow)
    return item


def _read(read: Callable[[str], _T | None], routing: RoutingKey) -> tuple[_T | None, bool]:
    """The item found under :func:`candidate_keys` (or None), and whether the legacy key
    was read after the composite key missed."""
    item: _T | None = None
    reads = 0
    for key in candidate_keys(routing):
        reads += 1
        item = read(key)
        if item is not None:
            break
    return item, reads > 1


def _shadow(
    read: Callable[[str], _T | None],
    routing: RoutingKey,
    item: _T | None,
    fallback: bool,
    compare: Callable[[_T, _T], object] | None,
    ignore: Collection[str],
) -> str:
    """The ``shadow`` property of a sampled composite call (a key of ``_SHADOW_OUTCOMES``)."""
    if fallback:  # the composite key missed; the fallback has read the legacy key
        return "Neither" if item is None else "LegacyOnly"
    assert item is not None  # found under the composite key: no fallback
    step = "read of the legacy key"
    try:
        legacy = read(routing.legacy_key)
        if legacy is None:
            return "CompositeOnly"
        step = "comparison"
        same = compare(item, legacy) if compare is not None else _equal(item, legacy, ignore)
        return "Same" if same else "Different"
    except Exception:
        _log.warning(
            "shadow %s failed for %s (the item is returned; counted as %s)",
            step,
            routing.key,
            SHADOW_READ_ERRORS,
            exc_info=True,
        )
        return "Error"


def _equal(composite: object, legacy: object, ignore: Collection[str]) -> bool:
    if ignore and isinstance(composite, Mapping) and isinstance(legacy, Mapping):
        composite = {k: v for k, v in composite.items() if k not in ignore}
        legacy = {k: v for k, v in legacy.items() if k not in ignore}
    return bool(composite == legacy)


def _emit(
    writer: ReceiverMetrics,
    routing: RoutingKey,
    phase: str | None,
    item: object,
    fallback: bool,
    shadow: str | None = None,
) -> None:
    """The one EMF line of a read; with the shadow counters when ``shadow`` is given."""
    values = {
        RECEIVER_READS: 1,
        LEGACY_FALLBACK_READS: int(fallback),
        LEGACY_FALLBACK_HITS: int(fallback and item is not None),
    }
    properties: dict[str, object] = {"found": item is not None, "routing_key": routing.key}
    if shadow is not None:
        outcome = _SHADOW_OUTCOMES[shadow]
        values.update((name, int(name == outcome)) for name in _SHADOW_COUNTERS)
        properties["shadow"] = shadow
    writer.emit(
        values,
        phase=phase or os.environ.get(PHASE_ENV, "").strip() or None,
        key_scheme=routing.key_scheme,
        properties=properties,
    )


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
