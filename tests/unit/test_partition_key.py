"""The partition-key rule, as a table."""

from __future__ import annotations

import pytest

from ai_agent_handler import PartitionKeyError
from ai_agent_handler.partition_key import compose, key_scheme_of, routing_key


@pytest.mark.parametrize(
    ("endpoint_id", "part_id", "expected"),
    [
        ("aws-prod-us-east-1", "acme-corp", "aws-prod-us-east-1#acme-corp"),
        ("aws-prod", None, "aws-prod"),
        ("aws-prod", "", "aws-prod"),
        (None, None, None),
        ("ép-ünïcode", "部门", "ép-ünïcode#部门"),
    ],
)
def test_compose(endpoint_id: str | None, part_id: str | None, expected: str | None) -> None:
    assert compose(endpoint_id, part_id) == expected


@pytest.mark.parametrize(
    ("endpoint_id", "part_id", "composite", "expected"),
    [
        ("aws-prod", "acme", True, "aws-prod#acme"),
        ("aws-prod", "acme", False, "aws-prod"),  # partial rollback: part_id kept, legacy key
        ("aws-prod", None, True, "aws-prod"),  # no part: the legacy key whatever the flag
        ("aws-prod", None, False, "aws-prod"),
    ],
)
def test_routing_key(endpoint_id: str, part_id: str | None, composite: bool, expected: str) -> None:
    key = routing_key(endpoint_id, part_id, composite=composite)
    assert key == expected
    assert key_scheme_of(key) == ("composite" if "#" in expected else "legacy")


INVALID = [
    # (endpoint_id, part_id, words the message must contain)
    ("aws#prod", "acme", ["endpoint_id", "'aws#prod'", "'#'"]),
    ("aws-prod", "acme#corp", ["part_id", "'acme#corp'", "'#'"]),
    ("aws-prod", "#", ["part_id", "'#'"]),
    (" aws-prod", "acme", ["endpoint_id", "whitespace", "' aws-prod'"]),
    ("aws-prod", "acme\n", ["part_id", "whitespace"]),
    ("aws-prod", "\tacme", ["part_id", "whitespace"]),
    (None, "acme", ["part_id", "'acme'", "endpoint_id"]),
    ("", "acme", ["part_id", "endpoint_id"]),
    (42, None, ["endpoint_id", "string", "int", "42"]),
    ("aws-prod", 7, ["part_id", "string", "int"]),
    ("aws-prod", b"acme", ["part_id", "bytes"]),
    (["aws"], None, ["endpoint_id", "list"]),
]


@pytest.mark.parametrize(("endpoint_id", "part_id", "words"), INVALID)
@pytest.mark.parametrize("composite", [True, False])
def test_invalid_ids_are_refused_whatever_the_flag(
    endpoint_id: object, part_id: object, words: list[str], composite: bool
) -> None:
    with pytest.raises(PartitionKeyError) as caught:
        routing_key(endpoint_id, part_id, composite=composite)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("endpoint_id", [None, ""])
def test_a_call_needs_an_endpoint(endpoint_id: str | None) -> None:
    with pytest.raises(PartitionKeyError, match="endpoint_id is required"):
        routing_key(endpoint_id, None, composite=True)


def test_partition_key_error_is_a_value_error() -> None:
    assert issubclass(PartitionKeyError, ValueError)
