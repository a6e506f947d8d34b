"""The partition-key rule: how ``endpoint_id`` and ``part_id`` become one key.

Pure functions, no I/O. The separator must never occur inside a component, otherwise
``"a#b" + "c"`` and ``"a" + "b#c"`` would share the key ``"a#b#c"`` and one tenant could
read or overwrite another's data. Validation therefore happens here, before any key is
built, and every caller that sends a key to AWS goes through :func:`routing_key`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from .exceptions import PartitionKeyError

SEPARATOR = "#"

KeyScheme = Literal["composite", "legacy"]


def validate_id(field: str, value: object) -> str | None:
    """Check one id component and return it (``None`` stays ``None``).

    Rejects non-strings, surrounding whitespace and the separator. The message names the
    field and the offending value so the caller can find the bad input quickly.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise PartitionKeyError(f"{field} must be a string, got {type(value).__name__}: {value!r}")
    if value != value.strip():
        raise PartitionKeyError(f"{field} must not have surrounding whitespace: {value!r}")
    if SEPARATOR in value:
        raise PartitionKeyError(
            f"{field} must not contain {SEPARATOR!r} (the partition-key separator): {value!r}"
        )
    return value


def compose(endpoint_id: object, part_id: object) -> str | None:
    """``f"{endpoint_id}#{part_id}"``, or ``endpoint_id`` when ``part_id`` is None or empty.

    Returns ``None`` when neither id is set. Raises :class:`PartitionKeyError` for an invalid
    component and for a ``part_id`` without an ``endpoint_id``.
    """
    endpoint = validate_id("endpoint_id", endpoint_id)
    part = validate_id("part_id", part_id)
    if not part:
        return endpoint
    if not endpoint:
        raise PartitionKeyError(f"part_id {part!r} is set but endpoint_id is {endpoint!r}")
    return f"{endpoint}{SEPARATOR}{part}"


class Keys(NamedTuple):
    """The two keys a run may send: ``endpoint_id``, and the composite key (``endpoint_id``
    itself without a ``part_id``)."""

    legacy: str
    composite: str


def keys(endpoint_id: object, part_id: object) -> Keys:
    """Both keys of a run, its ids validated once.

    Both ids are validated whatever the flag will say, so turning the flag off (the partial
    rollback) never lets an invalid ``part_id`` through unnoticed. An empty or missing
    ``endpoint_id`` is an error: a call without a key cannot be routed.
    """
    key = compose(endpoint_id, part_id)
    if not key:
        raise PartitionKeyError(f"endpoint_id is required to route a call, got {endpoint_id!r}")
    return Keys(str(endpoint_id), key)


def routing_key(endpoint_id: object, part_id: object, *, composite: bool) -> str:
    """The key sent to Lambda/SQS: the composite key when ``composite``, else ``endpoint_id``
    (validated as :func:`keys` does)."""
    both = keys(endpoint_id, part_id)
    return both.composite if composite else both.legacy


def key_scheme_of(key: str) -> KeyScheme:
    """``"composite"`` when ``key`` carries a part, else ``"legacy"``.

    Exact because a valid component can never contain the separator.
    """
    return "composite" if SEPARATOR in key else "legacy"
