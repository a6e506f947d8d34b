"""flag_file.document under hostile input: every document is refused in bounded time with
one line, never with an exception of another kind (deep nesting, $ref bombs, odd types)."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore

from ai_agent_handler import FLAG_KEY
from ai_agent_handler.exceptions import FlagFileError
from ai_agent_handler.flag_file import document
from ai_agent_handler.flag_file.document import MAX_DEPTH, MAX_RULE_NODES, parse, validate
from tests.support.flags import dump, phase_doc, rollout


def with_targeting(targeting: object, evaluators: dict[str, Any] | None = None) -> bytes:
    doc = phase_doc("dev")
    doc["flags"][FLAG_KEY]["targeting"] = targeting
    if evaluators is not None:
        doc["$evaluators"] = evaluators
    return json.dumps(doc).encode()


def nested_targeting(depth: int) -> object:
    rule: object = "composite"
    for _ in range(depth):
        rule = {"if": [True, rule, "legacy"]}
    return rule


def deep_targeting(depth: int) -> bytes:
    # Built as text: json.dumps itself refuses to nest this deep. 3.9 KB at 500 levels.
    rule = '{"if":[true,' * depth + '"composite"' + ',"legacy"]}' * depth
    return with_targeting("RULE").replace(b'"RULE"', rule.encode())


def ref_bomb(levels: int) -> bytes:
    # e<n> = or(e<n-1>, e<n-1>): 1.2 KB at 18 levels that expands to 2^18 rule nodes.
    # Listed from the top down, the order in which flagd-core's substitution expands it.
    evaluators: dict[str, Any] = {}
    for level in range(levels, 0, -1):
        below = {"$ref": f"e{level - 1}"}
        evaluators[f"e{level}"] = {"or": [below, below]}
    evaluators["e0"] = {"==": [{"var": "endpoint_id"}, "x"]}
    return with_targeting({"if": [{"$ref": f"e{levels}"}, "composite", "legacy"]}, evaluators)


def ref_chain(length: int) -> bytes:
    evaluators: dict[str, Any] = {f"c{i}": {"!": {"$ref": f"c{i + 1}"}} for i in range(length)}
    evaluators[f"c{length}"] = {"==": [{"var": "endpoint_id"}, "x"]}
    return with_targeting({"if": [{"$ref": "c0"}, "composite", "legacy"]}, evaluators)


HOSTILE: list[tuple[str, bytes, str]] = [
    ("100k nested arrays", b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
    ("100k nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper than"),
    ("targeting 500 deep", deep_targeting(500), "nested deeper than"),
    (
        "metadata nested deep",
        b'{"flags": {}, "metadata": ' + b"[" * 200 + b"]" * 200 + b"}",
        "nested deeper than",
    ),
    ("$ref bomb, 18 levels", ref_bomb(18), "with its $refs expanded"),
    ("$ref bomb, 40 levels", ref_bomb(40), "$ref chain longer than"),
    ("$ref chain of 200", ref_chain(200), "$ref chain"),
    ("$ref to an object", with_targeting({"$ref": {"a": 1}}), '$ref {"a": 1}'),
    ("$ref to a list", with_targeting({"if": [{"$ref": [1]}, "composite", "legacy"]}), "$ref [1]"),
    ("$ref to a number", with_targeting({"$ref": 7}, {"7": True}), "$ref 7"),
]


@pytest.mark.parametrize(
    ("data", "expected"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_documents_are_refused_quickly_in_one_line(data: bytes, expected: str) -> None:
    started = time.perf_counter()
    with pytest.raises(FlagFileError) as caught:
        parse(data, source="flags/x.json")
    elapsed = time.perf_counter() - started
    message = str(caught.value)
    assert message.startswith("flags/x.json: ") and "\n" not in message and len(message) < 400
    assert expected in message, message
    assert elapsed < 5, f"{elapsed:.1f} s"  # generous: the bench measures the real figure


def test_the_limits_are_not_in_the_way_of_real_rules() -> None:
    # Nesting just under the limit and a $ref used a few times are fine.
    assert MAX_DEPTH >= 32 and MAX_RULE_NODES >= 1000
    doc = parse(with_targeting(nested_targeting((MAX_DEPTH - 8) // 3)))
    assert doc["flags"][FLAG_KEY]["targeting"]
    shared = {"listed": {"in": [{"var": "endpoint_id"}, ["ep-a", "ep-b"]]}}
    rule = {"if": [{"$ref": "listed"}, "composite", {"$ref": "listed"}, "composite", "legacy"]}
    parse(with_targeting(rule, shared))
    parse(ref_bomb(8))  # 256 expanded nodes: a deep but legitimate shape


def test_validation_evaluates_a_bounded_sample_whatever_the_allow_list_size() -> None:
    # The allow-list is one `in` list: evaluating every listed endpoint made validation
    # quadratic in its length (8,000 endpoints: 10 s). A spread sample is enough: every
    # element of that list takes the same branch.
    calls: list[str] = []
    real = FlagdCore.resolve_boolean_value

    def counting(self: FlagdCore, key: str, default: bool, ctx: Any = None) -> Any:
        calls.append(ctx.targeting_key)
        return real(self, key, default, ctx)

    counts = []
    with mock.patch.object(FlagdCore, "resolve_boolean_value", counting):
        for size in (100, 10_000):
            calls.clear()
            doc = rollout("production", allow=[f"ep-{i:06d}" for i in range(size)], percent=5)
            assert validate(doc) == []
            counts.append(len(calls))
            assert "ep-000000" in calls and f"ep-{size - 1:06d}" in calls
    assert counts[1] == counts[0] <= 200, counts


def test_strings_compared_outside_a_list_are_always_sampled() -> None:
    # A branch chosen by one endpoint's name is evaluated for that endpoint.
    rule = {
        "if": [
            {"==": [{"var": "endpoint_id"}, "ep-special"]},
            {"cat": ["compo", "sit"]},  # not a variant name: must be caught
            {"in": [{"var": "endpoint_id"}, [f"ep-{i}" for i in range(5000)]]},
            "composite",
            "legacy",
        ]
    }
    problems = validate(json.loads(with_targeting(rule)))
    assert any("ep-special" in p for p in problems), problems


@pytest.mark.parametrize(
    "error", [RecursionError("deep"), TypeError("odd"), KeyError("k"), AttributeError("a")]
)
def test_any_exception_while_checking_is_a_bad_file(error: Exception) -> None:
    with (
        mock.patch.object(document, "_partition_flag_problems", side_effect=error),
        pytest.raises(FlagFileError, match=r"^f: cannot be checked: ") as caught,
    ):
        parse(dump(phase_doc("dev")), source="f")
    assert "\n" not in str(caught.value)
