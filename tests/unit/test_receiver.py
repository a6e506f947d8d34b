"""The receiving side: splitting a routing key, routing a call, reading with a fallback and
counting the fallback reads, shadow reads (comparing the copies under both keys), and the
module standing on its own (standard library only)."""

from __future__ import annotations

import ast
import inspect
import io
import json
import logging
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler import receiver
from ai_agent_handler.partition_key import SEPARATOR, compose, key_scheme_of, validate_id
from ai_agent_handler.receiver import (
    LEGACY_FALLBACK_HITS,
    LEGACY_FALLBACK_READS,
    METRICS_NAMESPACE,
    RECEIVER_READS,
    SHADOW_COMPOSITE_ONLY,
    SHADOW_DIFFERENT,
    SHADOW_LEGACY_ONLY,
    SHADOW_METRICS,
    SHADOW_READ_ERRORS,
    SHADOW_SAME,
    InvalidRoutingKey,
    ReceiverMetrics,
    RoutingKey,
    candidate_keys,
    read_with_fallback,
    read_with_shadow,
    route,
    split_key,
)

SOURCE = Path(receiver.__file__)


@pytest.fixture(autouse=True)
def _no_metrics_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AI_AGENT_HANDLER_METRICS", "AWS_LAMBDA_FUNCTION_NAME", "ROLLOUT_PHASE"):
        monkeypatch.delenv(name, raising=False)


COMPOSITE = RoutingKey("aws-prod#acme", "composite", "aws-prod", "acme")
LEGACY = RoutingKey("aws-prod", "legacy", "aws-prod", None)


# -- split_key -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "scheme", "expected"),
    [
        ("aws-prod#acme", "composite", COMPOSITE),
        ("aws-prod", "legacy", LEGACY),
        ("aws-prod#acme", None, COMPOSITE),  # inferred from the separator
        ("aws-prod", None, LEGACY),
        ("ép ü#部 门", "composite", RoutingKey("ép ü#部 门", "composite", "ép ü", "部 门")),
    ],
)
def test_split_key(key: str, scheme: str | None, expected: RoutingKey) -> None:
    routing = split_key(key, scheme)
    assert routing == expected
    assert routing.legacy_key == expected.endpoint_id


INVALID = [
    # (key, key_scheme, field named, words the message must contain)
    (None, None, "endpoint_id", ["string", "NoneType"]),
    (42, "legacy", "endpoint_id", ["string", "int", "42"]),
    (b"aws-prod", None, "endpoint_id", ["string", "bytes"]),
    ("", None, "endpoint_id", ["empty", "''"]),
    ("", "legacy", "endpoint_id", ["empty"]),
    (" aws-prod", None, "endpoint_id", ["whitespace", "' aws-prod'"]),
    ("aws-prod#acme\n", "composite", "endpoint_id", ["whitespace", "'aws-prod#acme\\n'"]),
    ("#acme", "composite", "endpoint_id", ["empty", "'#acme'"]),
    ("aws-prod#", None, "part_id", ["empty", "'aws-prod#'"]),
    ("#", "composite", "endpoint_id", ["empty"]),
    ("aws-prod #acme", "composite", "endpoint_id", ["whitespace", "'aws-prod #acme'"]),
    ("aws-prod# acme", None, "part_id", ["whitespace"]),
    ("a#b#c", "composite", "endpoint_id", ["exactly one", "'a#b#c'"]),
    ("a#b#c", None, "endpoint_id", ["exactly one"]),
    ("aws-prod##acme", "composite", "endpoint_id", ["exactly one"]),
    ("aws-prod#acme", "legacy", "endpoint_id", ["'#'", "legacy", "'aws-prod#acme'"]),
    ("aws-prod", "composite", "endpoint_id", ["exactly one", "composite", "'aws-prod'"]),
    ("aws-prod", "Composite", "key_scheme", ["'composite' or 'legacy'", "'Composite'"]),
    ("aws-prod", "", "key_scheme", ["'composite' or 'legacy'", "''"]),
    ("aws-prod", 1, "key_scheme", ["'composite' or 'legacy'", "1"]),
]


@pytest.mark.parametrize(("key", "scheme", "field", "words"), INVALID)
def test_an_invalid_key_is_refused_with_a_one_line_message(
    key: object, scheme: object, field: str, words: list[str]
) -> None:
    with pytest.raises(InvalidRoutingKey) as caught:
        split_key(key, scheme)
    message = str(caught.value)
    assert message.startswith(field + " ")
    assert caught.value.field == field
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidRoutingKey) as caught:
        split_key("x" * 5000 + " ")
    assert len(str(caught.value)) < 300
    assert caught.value.value == "x" * 5000 + " "  # the whole value stays reachable


def test_the_error_is_a_value_error() -> None:
    assert issubclass(InvalidRoutingKey, ValueError)


def _ids(rng: random.Random, count: int) -> list[str]:
    alphabet = "abcXYZ019-_.:/| é部\u00a0\t"
    out: list[str] = []
    while len(out) < count:
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        try:
            validate_id("id", value)
        except ValueError:
            continue
        if value:
            out.append(value)
    return out


def test_the_split_undoes_the_handlers_compose() -> None:
    assert receiver.SEPARATOR == SEPARATOR
    rng = random.Random(20240611)
    endpoints, parts = _ids(rng, 300), _ids(rng, 300)
    for endpoint_id, part_id in zip(endpoints, parts, strict=True):
        key = compose(endpoint_id, part_id)
        assert key is not None
        expected = RoutingKey(key, "composite", endpoint_id, part_id)
        assert split_key(key, key_scheme_of(key)) == expected
        assert split_key(key) == expected
        assert split_key(endpoint_id, "legacy") == RoutingKey(
            endpoint_id, "legacy", endpoint_id, None
        )


# -- route -----------------------------------------------------------------------------------
def _sqs_record(attributes: dict[str, str | None]) -> dict[str, Any]:
    """One record of an SQS event as Lambda delivers it."""
    return {
        "messageId": "m-1",
        "body": json.dumps({"params": {}}),
        "messageAttributes": {
            name: {"stringValue": value, "dataType": "String"}
            for name, value in attributes.items()
            if value is not None
        },
        "eventSource": "aws:sqs",
    }


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"endpoint_id": "aws-prod#acme", "key_scheme": "composite", "funct": "f"}, COMPOSITE),
        ({"endpoint_id": "aws-prod", "key_scheme": "legacy", "funct": "f"}, LEGACY),
        ({"endpoint_id": "aws-prod", "funct": "f"}, LEGACY),  # a handler from before key_scheme
        ({"endpoint_id": "aws-prod", "key_scheme": None}, LEGACY),
        (_sqs_record({"endpoint_id": "aws-prod#acme", "key_scheme": "composite"}), COMPOSITE),
        (_sqs_record({"endpoint_id": "aws-prod", "key_scheme": "legacy"}), LEGACY),
        (_sqs_record({"endpoint_id": "aws-prod", "funct": "f"}), LEGACY),
    ],
    ids=[
        "payload-composite",
        "payload-legacy",
        "payload-no-scheme",
        "payload-null-scheme",
        "sqs-composite",
        "sqs-legacy",
        "sqs-no-scheme",
    ],
)
def test_route(event: dict[str, Any], expected: RoutingKey) -> None:
    assert route(event) == expected


@pytest.mark.parametrize(
    ("event", "field", "words"),
    [
        ({"funct": "f"}, "endpoint_id", ["missing"]),
        ({"endpoint_id": None, "key_scheme": "legacy"}, "endpoint_id", ["missing"]),
        (_sqs_record({"funct": "f"}), "endpoint_id", ["missing"]),
        ({"messageAttributes": {"endpoint_id": {"dataType": "String"}}}, "endpoint_id", []),
        # A composite key without key_scheme is not guessed: the sender did not say so.
        ({"endpoint_id": "aws-prod#acme"}, "endpoint_id", ["legacy"]),
        (_sqs_record({"endpoint_id": "aws-prod#acme"}), "endpoint_id", ["legacy"]),
        ({"endpoint_id": "aws-prod", "key_scheme": "composite"}, "endpoint_id", ["exactly"]),
        (_sqs_record({"endpoint_id": "a#", "key_scheme": "composite"}), "part_id", ["empty"]),
        ({"endpoint_id": "a", "key_scheme": "new"}, "key_scheme", ["'new'"]),
        ({"Records": [_sqs_record({"endpoint_id": "a"})]}, "event", ["whole SQS event"]),
        ({"messageAttributes": "endpoint_id"}, "messageAttributes", ["mapping"]),
        ({"messageAttributes": {"endpoint_id": "a"}}, "endpoint_id", ["attribute"]),
    ],
)
def test_route_refuses_what_cannot_be_routed(
    event: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(InvalidRoutingKey) as caught:
        route(event)
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_route_refuses_what_is_not_an_event() -> None:
    with pytest.raises(InvalidRoutingKey, match=r"^event "):
        route("aws-prod")  # type: ignore[arg-type]


# -- candidate_keys and read_with_fallback ---------------------------------------------------
@pytest.mark.parametrize(
    ("routing", "keys"),
    [(COMPOSITE, ("aws-prod#acme", "aws-prod")), (LEGACY, ("aws-prod",))],
)
def test_candidate_keys(routing: RoutingKey, keys: tuple[str, ...]) -> None:
    assert candidate_keys(routing) == keys


class Store(dict[str, str]):
    """A table: ``read`` records every key asked for."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__(items)
        self.reads: list[str] = []

    def read(self, key: str) -> str | None:
        self.reads.append(key)
        return self.get(key)


READS = [
    # (call's key, stored items, item returned, keys read, fallback reads, fallback hits)
    (COMPOSITE, {"aws-prod#acme": "new", "aws-prod": "old"}, "new", ["aws-prod#acme"], 0, 0),
    (COMPOSITE, {"aws-prod": "old"}, "old", ["aws-prod#acme", "aws-prod"], 1, 1),
    (COMPOSITE, {}, None, ["aws-prod#acme", "aws-prod"], 1, 0),
    (LEGACY, {"aws-prod": "old", "aws-prod#acme": "new"}, "old", ["aws-prod"], 0, 0),
    (LEGACY, {"aws-prod#acme": "new"}, None, ["aws-prod"], 0, 0),
]


@pytest.mark.parametrize(
    ("routing", "items", "item", "reads", "fallback", "hit"),
    READS,
    ids=["composite-hit", "legacy-fallback-hit", "both-miss", "legacy-hit", "legacy-miss"],
)
def test_read_with_fallback(
    routing: RoutingKey,
    items: dict[str, str],
    item: str | None,
    reads: list[str],
    fallback: int,
    hit: int,
) -> None:
    store, out = Store(items), io.StringIO()
    found = read_with_fallback(
        store.read, routing, phase="staging", metrics=ReceiverMetrics(stream=out, enabled=True)
    )
    assert found == item
    assert store.reads == reads
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    timestamp = doc["_aws"].pop("Timestamp")
    assert isinstance(timestamp, int) and timestamp > 1_600_000_000_000  # milliseconds
    assert doc == {
        RECEIVER_READS: 1,
        LEGACY_FALLBACK_READS: fallback,
        LEGACY_FALLBACK_HITS: hit,
        "phase": "staging",
        "key_scheme": routing.key_scheme,
        "found": item is not None,
        "routing_key": routing.key,
        "_aws": {
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["phase", "key_scheme"]],
                    "Metrics": [
                        {"Name": "ReceiverReads", "Unit": "Count"},
                        {"Name": "LegacyFallbackReads", "Unit": "Count"},
                        {"Name": "LegacyFallbackHits", "Unit": "Count"},
                    ],
                }
            ]
        },
    }


def test_an_empty_item_is_found_but_none_is_not() -> None:
    # Only None means "not there": an empty item under the composite key ends the search.
    reads: list[str] = []

    def read(key: str) -> dict[str, str] | None:
        reads.append(key)
        return {} if key == "aws-prod#acme" else {"old": "x"}

    assert read_with_fallback(read, COMPOSITE, metrics=ReceiverMetrics(enabled=False)) == {}
    assert reads == ["aws-prod#acme"]


def test_a_failing_read_propagates_and_is_not_counted() -> None:
    out = io.StringIO()

    def read(key: str) -> str | None:
        raise TimeoutError(key)

    with pytest.raises(TimeoutError):
        read_with_fallback(read, COMPOSITE, metrics=ReceiverMetrics(stream=out, enabled=True))
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        ("dev", "production", "dev"),  # the argument wins
        (None, "production", "production"),
        (None, " staging ", "staging"),
        (None, None, "none"),
        (None, "", "none"),
    ],
)
def test_the_phase_dimension(
    monkeypatch: pytest.MonkeyPatch, argument: str | None, env: str | None, expected: str
) -> None:
    if env is not None:
        monkeypatch.setenv("ROLLOUT_PHASE", env)
    out = io.StringIO()
    read_with_fallback(
        lambda key: None, LEGACY, phase=argument, metrics=ReceiverMetrics(stream=out, enabled=True)
    )
    assert json.loads(out.getvalue())["phase"] == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),  # a library does not print to a host's stdout uninvited
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent-task"}, True),
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent-task", "AI_AGENT_HANDLER_METRICS": "off"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent-task", "AI_AGENT_HANDLER_METRICS": "0"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent-task", "AI_AGENT_HANDLER_METRICS": "none"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent-task", "AI_AGENT_HANDLER_METRICS": "false"}, False),
        ({"AI_AGENT_HANDLER_METRICS": "emf"}, True),
        ({"AI_AGENT_HANDLER_METRICS": " EMF "}, True),
        ({"AI_AGENT_HANDLER_METRICS": "on"}, True),
        ({"AI_AGENT_HANDLER_METRICS": "1"}, True),
        ({"AI_AGENT_HANDLER_METRICS": "true"}, True),
        ({"AI_AGENT_HANDLER_METRICS": "bogus"}, False),
    ],
)
def test_the_metric_lines_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    read_with_fallback(lambda key: "x", LEGACY, metrics=ReceiverMetrics(stream=out))
    assert bool(out.getvalue()) is expected


def test_the_lines_go_to_stdout_resolved_when_writing(capsys: pytest.CaptureFixture[str]) -> None:
    read_with_fallback(lambda key: None, COMPOSITE, metrics=ReceiverMetrics(enabled=True))
    assert json.loads(capsys.readouterr().out)[LEGACY_FALLBACK_READS] == 1


def test_another_namespace() -> None:
    out = io.StringIO()
    writer = ReceiverMetrics(stream=out, enabled=True, namespace="agent_task")
    read_with_fallback(lambda key: "x", LEGACY, metrics=writer)
    assert json.loads(out.getvalue())["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "agent_task"


def test_the_metric_names_are_the_documented_ones() -> None:
    assert (RECEIVER_READS, LEGACY_FALLBACK_READS, LEGACY_FALLBACK_HITS) == (
        "ReceiverReads",
        "LegacyFallbackReads",
        "LegacyFallbackHits",
    )
    assert METRICS_NAMESPACE == "ai_agent_handler"


# -- read_with_shadow ------------------------------------------------------------------------
C, L = COMPOSITE.key, COMPOSITE.legacy_key  # "aws-prod#acme", "aws-prod"
SHADOW_COUNTERS = [*SHADOW_METRICS, SHADOW_READ_ERRORS]


class Table(dict[str, Any]):
    """A table of any items: ``read`` records every key asked for."""

    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.reads: list[str] = []

    def read(self, key: str) -> Any:
        self.reads.append(key)
        return self.get(key)


class Draws:
    """An injected ``random``: always ``value``; counts the draws."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.value


SAMPLED, UNSAMPLED = 0.0, 0.999  # draws against sample=0.5


def shadowed(
    read: Callable[[str], Any],
    routing: RoutingKey = COMPOSITE,
    draw: float = SAMPLED,
    **options: Any,
) -> tuple[Any, list[dict[str, Any]]]:
    """``read_with_shadow`` at sample 0.5 with a fixed draw: (item, EMF lines written)."""
    out = io.StringIO()
    options.setdefault("sample", 0.5)
    item = read_with_shadow(
        read,
        routing,
        phase="staging",
        metrics=ReceiverMetrics(stream=out, enabled=True),
        random=Draws(draw),
        **options,
    )
    return item, [json.loads(line) for line in out.getvalue().splitlines()]


def shadow_of(doc: dict[str, Any]) -> tuple[str | None, dict[str, int]]:
    """(the ``shadow`` property, the shadow counters present in the line)"""
    return doc.get("shadow"), {name: doc[name] for name in SHADOW_COUNTERS if name in doc}


SHADOW_OUTCOMES = [
    # (stored items, item returned, keys read, fallback reads, fallback hits, shadow, metric)
    ({C: "v1", L: "v1"}, "v1", [C, L], 0, 0, "Same", SHADOW_SAME),
    ({C: "v2", L: "v1"}, "v2", [C, L], 0, 0, "Different", SHADOW_DIFFERENT),
    ({L: "v1"}, "v1", [C, L], 1, 1, "LegacyOnly", SHADOW_LEGACY_ONLY),
    ({C: "v2"}, "v2", [C, L], 0, 0, "CompositeOnly", SHADOW_COMPOSITE_ONLY),
    ({}, None, [C, L], 1, 0, "Neither", None),  # no outcome: all four 0
]
SHADOW_IDS = ["same", "different", "legacy-only", "composite-only", "neither"]


@pytest.mark.parametrize(
    ("items", "item", "reads", "fallback", "hit", "shadow", "metric"),
    SHADOW_OUTCOMES,
    ids=SHADOW_IDS,
)
def test_a_sampled_read_counts_its_outcome_in_its_one_line(
    items: dict[str, str],
    item: str | None,
    reads: list[str],
    fallback: int,
    hit: int,
    shadow: str,
    metric: str | None,
) -> None:
    table = Table(items)
    found, lines = shadowed(table.read)
    assert found == item
    assert table.reads == reads  # two reads at most: the fallback's, or the shadow's
    (doc,) = lines
    doc["_aws"].pop("Timestamp")
    outcomes = {name: int(name == metric) for name in SHADOW_COUNTERS}
    assert doc == {
        RECEIVER_READS: 1,
        LEGACY_FALLBACK_READS: fallback,
        LEGACY_FALLBACK_HITS: hit,
        **outcomes,
        SHADOW_READ_ERRORS: 0,
        "phase": "staging",
        "key_scheme": "composite",
        "found": item is not None,
        "routing_key": C,
        "shadow": shadow,
        "_aws": {
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["phase", "key_scheme"]],
                    "Metrics": [
                        {"Name": name, "Unit": "Count"}
                        for name in [
                            "ReceiverReads",
                            "LegacyFallbackReads",
                            "LegacyFallbackHits",
                            "ShadowSame",
                            "ShadowDifferent",
                            "ShadowLegacyOnly",
                            "ShadowCompositeOnly",
                            "ShadowReadErrors",
                        ]
                    ],
                }
            ]
        },
    }
    assert sum(doc[name] for name in SHADOW_METRICS) == int(metric is not None)


@pytest.mark.parametrize(
    ("items", "item", "reads"), [row[:3] for row in SHADOW_OUTCOMES], ids=SHADOW_IDS
)
def test_an_unsampled_read_is_read_with_fallback_exactly(
    items: dict[str, str], item: str | None, reads: list[str]
) -> None:
    shadow_table, fallback_table, out = Table(items), Table(items), io.StringIO()
    found, (doc,) = shadowed(shadow_table.read, draw=UNSAMPLED)
    expected = read_with_fallback(
        fallback_table.read,
        COMPOSITE,
        phase="staging",
        metrics=ReceiverMetrics(stream=out, enabled=True),
    )
    assert found == expected
    assert shadow_table.reads == fallback_table.reads  # no extra read
    reference = json.loads(out.getvalue())
    for line in (doc, reference):
        line["_aws"].pop("Timestamp")
    assert doc == reference  # the same line: no shadow counters, no shadow property
    assert shadow_of(doc) == (None, {})


@pytest.mark.parametrize(
    ("draw", "sample", "sampled"),
    [
        (0.0, 0, False),  # sample 0: never, whatever the draw
        (0.0, 0.0, False),
        (0.0, 0.01, True),
        (0.0099, 0.01, True),
        (0.01, 0.01, False),  # sampled when the draw is below the sample
        (0.5, 0.5, False),
        (0.5, Fraction(3, 4), True),
        (0.0, 1, True),
        (0.9999999, 1.0, True),  # sample 1: always (random() < 1)
    ],
)
def test_a_call_is_sampled_when_the_draw_is_below_the_sample(
    draw: float, sample: float, sampled: bool
) -> None:
    table = Table({C: "v1", L: "v1"})
    draws = Draws(draw)
    out = io.StringIO()
    found = read_with_shadow(
        table.read,
        COMPOSITE,
        sample=sample,
        metrics=ReceiverMetrics(stream=out, enabled=True),
        random=draws,
    )
    assert found == "v1"
    assert draws.calls == 1
    assert table.reads == ([C, L] if sampled else [C])  # the extra read, only when sampled
    assert shadow_of(json.loads(out.getvalue()))[0] == ("Same" if sampled else None)


@pytest.mark.parametrize(("sample", "expected"), [(0, 0), (0.0, 0), (1, 400), (1.0, 400)])
def test_sample_0_and_1_with_the_default_random(sample: float, expected: int) -> None:
    table, out = Table({C: {"run": "r1"}, L: {"run": "r1"}}), io.StringIO()
    metrics = ReceiverMetrics(stream=out, enabled=True)
    for _ in range(400):
        read_with_shadow(table.read, COMPOSITE, sample=sample, metrics=metrics)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 400  # one line per call
    assert sum(SHADOW_SAME in doc for doc in lines) == expected
    assert len(table.reads) == 400 + expected  # one extra read per sampled call


def test_the_default_sample_is_about_one_in_a_hundred() -> None:
    table = Table({C: "v1", L: "v1"})
    metrics = ReceiverMetrics(stream=io.StringIO(), enabled=True)
    rng = random.Random(7)
    for _ in range(20_000):
        read_with_shadow(table.read, COMPOSITE, metrics=metrics, random=rng.random)
    extra = len(table.reads) - 20_000
    assert 120 <= extra <= 280, extra  # 200 expected; far outside binomial noise otherwise


@pytest.mark.parametrize(
    ("items", "item"),
    [({L: "old", C: "new"}, "old"), ({C: "new"}, None), ({L: "old"}, "old"), ({}, None)],
)
def test_a_legacy_call_is_never_shadowed(items: dict[str, str], item: str | None) -> None:
    table, draws = Table(items), Draws(0.0)
    out = io.StringIO()
    found = read_with_shadow(
        table.read,
        LEGACY,
        sample=1,
        metrics=ReceiverMetrics(stream=out, enabled=True),
        random=draws,
    )
    assert found == item
    assert table.reads == [L]  # one key, nothing to compare it with
    assert draws.calls == 0
    doc = json.loads(out.getvalue())
    assert shadow_of(doc) == (None, {})
    assert doc["key_scheme"] == "legacy"


def test_nothing_is_shadowed_while_the_lines_are_off() -> None:
    table, draws = Table({C: "v1", L: "v1"}), Draws(0.0)
    metrics = ReceiverMetrics(stream=io.StringIO(), enabled=False)
    assert read_with_shadow(table.read, COMPOSITE, sample=1, metrics=metrics, random=draws) == "v1"
    assert table.reads == [C]  # no extra read for an outcome nobody would see
    assert draws.calls == 0


def _run(pk: str, **fields: Any) -> dict[str, Any]:
    return {"pk": pk, "sk": "run#1", "status": "done", **fields}


@pytest.mark.parametrize(
    ("composite", "legacy", "ignore", "shadow"),
    [
        (_run(C), _run(L), {"pk"}, "Same"),
        (_run(C), _run(L), ["pk"], "Same"),  # any collection of names
        (_run(C), _run(L), frozenset({"pk", "endpoint_id", "part_id"}), "Same"),
        (_run(C), _run(L), (), "Different"),  # the key attribute differs
        (_run(C), _run(L), {"sk"}, "Different"),
        (_run(C, status="failed"), _run(L), {"pk"}, "Different"),
        (_run(C, part_id="acme"), _run(L), {"pk", "endpoint_id", "part_id"}, "Same"),
        (_run(C, part_id="acme"), _run(L), {"pk"}, "Different"),
        (_run(C, meta={"pk": C}), _run(L, meta={"pk": L}), {"pk"}, "Different"),  # top level
        (_run(C, extra=None), _run(L), {"pk"}, "Different"),
        ("v1", "v1", {"pk"}, "Same"),  # items that are not mappings: compared as they are
        ("v1", "v2", {"pk"}, "Different"),
        ({}, {}, (), "Same"),  # an empty item is found
    ],
)
def test_the_default_comparison_leaves_out_the_ignored_fields(
    composite: Any, legacy: Any, ignore: Any, shadow: str
) -> None:
    table = Table({C: composite, L: legacy})
    before = json.dumps([composite, legacy], sort_keys=True)
    found, (doc,) = shadowed(table.read, ignore=ignore)
    assert found is composite  # returned as read: nothing removed
    assert json.dumps([composite, legacy], sort_keys=True) == before
    assert doc["shadow"] == shadow


@pytest.mark.parametrize(
    ("answer", "shadow"),
    [(True, "Same"), (False, "Different"), (1, "Same"), (0, "Different"), ("", "Different")],
)
def test_a_given_comparison_decides(answer: object, shadow: str) -> None:
    calls: list[tuple[Any, Any]] = []

    def compare(composite: Any, legacy: Any) -> object:
        calls.append((composite, legacy))
        return answer

    table = Table({C: _run(C), L: _run(L)})
    found, (doc,) = shadowed(table.read, compare=compare)
    assert found == _run(C)
    assert calls == [(_run(C), _run(L))]  # composite first, then legacy, as read
    assert doc["shadow"] == shadow


@pytest.mark.parametrize(
    ("items", "called"),
    [({L: "v1"}, False), ({C: "v1"}, False), ({}, False), ({C: "v1", L: "v1"}, True)],
)
def test_the_comparison_runs_only_when_both_keys_hold_the_item(
    items: dict[str, str], called: bool
) -> None:
    calls: list[str] = []
    shadowed(Table(items).read, compare=lambda a, b: calls.append("x") or True)
    assert bool(calls) is called


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"compare": lambda a, b: True, "ignore": {"pk"}}, ["compare or ignore"]),
        ({"compare": lambda a, b: True, "ignore": ["pk"]}, ["compare or ignore"]),
        ({"ignore": "pk"}, ["collection", "'pk'"]),
        ({"ignore": b"pk"}, ["collection"]),
    ],
)
def test_conflicting_comparison_options_are_refused_before_reading(
    options: dict[str, Any], words: list[str]
) -> None:
    table, out = Table({C: "v1", L: "v1"}), io.StringIO()
    with pytest.raises(TypeError) as caught:
        read_with_shadow(
            table.read, COMPOSITE, metrics=ReceiverMetrics(stream=out, enabled=True), **options
        )
    for word in words:
        assert word in str(caught.value)
    assert table.reads == []
    assert out.getvalue() == ""


def test_a_comparison_with_an_empty_ignore_is_accepted() -> None:
    found, (doc,) = shadowed(Table({C: "a", L: "b"}).read, compare=lambda a, b: True, ignore=())
    assert (found, doc["shadow"]) == ("a", "Same")


@pytest.mark.parametrize(
    "sample",
    [-0.01, 1.01, 2, -1, float("nan"), float("inf"), True, False, "0.5", None, [0.5], 1j],
    ids=repr,
)
def test_a_bad_sample_is_refused_before_reading(sample: object) -> None:
    table, out, draws = Table({C: "v1", L: "v1"}), io.StringIO(), Draws(0.0)
    with pytest.raises(ValueError, match=r"^sample must be a number from 0 .* to 1") as caught:
        read_with_shadow(
            table.read,
            COMPOSITE,
            sample=sample,  # type: ignore[arg-type]
            metrics=ReceiverMetrics(stream=out, enabled=True),
            random=draws,
        )
    assert repr(sample) in str(caught.value)
    assert (table.reads, out.getvalue(), draws.calls) == ([], "", 0)


def test_a_bad_sample_is_refused_for_a_legacy_call_too() -> None:
    with pytest.raises(ValueError, match="sample"):
        read_with_shadow(lambda key: "x", LEGACY, sample=5)


def _fails_on(key: str, error: BaseException) -> Callable[[str], Any]:
    items = {C: _run(C), L: _run(L)}
    reads: list[str] = []

    def read(key_read: str) -> Any:
        reads.append(key_read)
        if key_read == key:
            raise error
        return items.get(key_read)

    read.reads = reads  # type: ignore[attr-defined]
    return read


class Unanswerable:
    def __bool__(self) -> bool:
        raise ValueError("no truth value")


def _raise(error: BaseException) -> Any:
    raise error


@pytest.mark.parametrize(
    ("read", "compare", "step"),
    [
        (_fails_on(L, TimeoutError("read timed out")), None, "read of the legacy key"),
        (_fails_on(L, KeyError("pk")), None, "read of the legacy key"),
        (Table({C: _run(C), L: _run(L)}).read, lambda a, b: _raise(TypeError("x")), "comparison"),
        (Table({C: _run(C), L: _run(L)}).read, lambda a, b: Unanswerable(), "comparison"),
    ],
    ids=["read-timeout", "read-key-error", "compare-raises", "compare-answer-raises"],
)
def test_a_failing_shadow_part_returns_the_item_and_counts_an_error(
    caplog: pytest.LogCaptureFixture, read: Callable[[str], Any], compare: Any, step: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="ai_agent_handler.receiver"):
        found, (doc,) = shadowed(read, compare=compare)
    assert found == _run(C)
    assert shadow_of(doc) == ("Error", {**dict.fromkeys(SHADOW_METRICS, 0), SHADOW_READ_ERRORS: 1})
    assert (doc[RECEIVER_READS], doc[LEGACY_FALLBACK_READS], doc["found"]) == (1, 0, True)
    (record,) = caplog.records
    assert record.name == "ai_agent_handler.receiver"
    assert record.levelno == logging.WARNING
    assert record.exc_info is not None
    assert step in record.getMessage()
    assert C in record.getMessage()
    assert SHADOW_READ_ERRORS in record.getMessage()


def test_an_interrupt_in_the_shadow_read_is_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        shadowed(_fails_on(L, KeyboardInterrupt()))


@pytest.mark.parametrize(
    ("key", "items", "draw"),
    [
        (C, {C: "v1", L: "v1"}, SAMPLED),  # the composite read
        (C, {C: "v1", L: "v1"}, UNSAMPLED),
        (L, {L: "v1"}, SAMPLED),  # the fallback read is a primary read, not the shadow's
        (L, {}, UNSAMPLED),
    ],
)
def test_a_failing_primary_read_propagates_and_nothing_is_written(
    caplog: pytest.LogCaptureFixture, key: str, items: dict[str, str], draw: float
) -> None:
    table = Table(items)

    def read(key_read: str) -> Any:
        if key_read == key:
            raise TimeoutError(key_read)
        return table.read(key_read)

    out = io.StringIO()
    with pytest.raises(TimeoutError, match=key):
        read_with_shadow(
            read,
            COMPOSITE,
            sample=0.5,
            metrics=ReceiverMetrics(stream=out, enabled=True),
            random=Draws(draw),
        )
    assert out.getvalue() == ""
    assert caplog.records == []


@pytest.mark.parametrize("routing", [COMPOSITE, LEGACY], ids=["composite", "legacy"])
@pytest.mark.parametrize(
    "items",
    [
        {C: "new", L: "old"},
        {C: "same", L: "same"},
        {C: "new"},
        {L: "old"},
        {},
        {C: {}, L: {"x": 1}},  # an empty item is found
        {C: _run(C), L: _run(L)},
    ],
)
@pytest.mark.parametrize("draw", [SAMPLED, UNSAMPLED], ids=["sampled", "unsampled"])
def test_it_returns_and_counts_what_read_with_fallback_does(
    routing: RoutingKey, items: dict[str, Any], draw: float
) -> None:
    shadow_out, fallback_out = io.StringIO(), io.StringIO()
    found = read_with_shadow(
        Table(items).read,
        routing,
        sample=0.5,
        ignore={"pk"},
        metrics=ReceiverMetrics(stream=shadow_out, enabled=True),
        random=Draws(draw),
    )
    expected = read_with_fallback(
        Table(items).read, routing, metrics=ReceiverMetrics(stream=fallback_out, enabled=True)
    )
    assert found == expected
    assert type(found) is type(expected)
    shadow_doc, fallback_doc = (
        json.loads(shadow_out.getvalue()),
        json.loads(fallback_out.getvalue()),
    )
    for name in (RECEIVER_READS, LEGACY_FALLBACK_READS, LEGACY_FALLBACK_HITS, "found"):
        assert shadow_doc[name] == fallback_doc[name], name


def test_the_shadow_metric_names_are_the_documented_ones() -> None:
    assert SHADOW_METRICS == (
        "ShadowSame",
        "ShadowDifferent",
        "ShadowLegacyOnly",
        "ShadowCompositeOnly",
    )
    assert (SHADOW_SAME, SHADOW_DIFFERENT, SHADOW_LEGACY_ONLY, SHADOW_COMPOSITE_ONLY) == (
        SHADOW_METRICS
    )
    assert SHADOW_READ_ERRORS == "ShadowReadErrors"
    parameters = list(inspect.signature(read_with_shadow).parameters)
    assert parameters[:3] == ["read", "routing", "sample"]
    assert inspect.signature(read_with_shadow).parameters["sample"].default == 0.01
    metrics = ReceiverMetrics(enabled=False)
    table = Table({C: "v1"})
    assert read_with_shadow(table.read, COMPOSITE, 0.5, metrics=metrics) == "v1"  # by position
    assert read_with_shadow(table.read, COMPOSITE, sample=0.5, metrics=metrics) == "v1"
    for name in (
        *SHADOW_METRICS,
        SHADOW_READ_ERRORS,
        "ShadowSame / (ShadowSame + ShadowDifferent)",
    ):
        assert name in (receiver.__doc__ or ""), name


# -- standing on its own ---------------------------------------------------------------------
def _imported(path: Path) -> tuple[set[str], int]:
    """Top-level names of absolute imports, and how many relative imports there are."""
    names: set[str] = set()
    relative = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative += 1
            else:
                names.add((node.module or "").split(".")[0])
    return names, relative


def test_it_imports_the_standard_library_only() -> None:
    names, relative = _imported(SOURCE)
    assert relative == 0
    assert "ai_agent_handler" not in names
    assert names, "the reader found no imports at all"
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_it_runs_as_a_copied_file_in_an_isolated_interpreter(tmp_path: Path) -> None:
    shutil.copy(SOURCE, tmp_path / "receiver.py")
    script = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, ".")  # -I leaves the current directory out of the path
        import receiver

        assert "ai_agent_handler" not in sys.modules
        table = {"aws-prod": {"run": "r1"}}
        routing = receiver.route({"endpoint_id": "aws-prod#acme", "key_scheme": "composite"})
        print(json.dumps(receiver.read_with_fallback(table.get, routing)))
        try:
            receiver.route({"endpoint_id": "aws-prod#", "key_scheme": "composite"})
        except receiver.InvalidRoutingKey as err:
            print(err)
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"AI_AGENT_HANDLER_METRICS": "emf", "ROLLOUT_PHASE": "dev"},
    )
    assert result.returncode == 0, result.stderr
    metric, item, error = result.stdout.splitlines()
    assert json.loads(item) == {"run": "r1"}
    assert error == "part_id is empty in the composite key: 'aws-prod#'"
    doc = json.loads(metric)
    assert (doc["ReceiverReads"], doc["LegacyFallbackReads"], doc["phase"]) == (1, 1, "dev")
    assert doc["LegacyFallbackHits"] == 1


def test_a_copied_file_shadows_and_logs_under_the_same_logger_name(tmp_path: Path) -> None:
    shutil.copy(SOURCE, tmp_path / "receiver.py")
    script = textwrap.dedent(
        """
        import json, logging, sys
        sys.path.insert(0, ".")
        import receiver

        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        table = {"aws-prod#acme": {"pk": "aws-prod#acme"}, "aws-prod": {"pk": "aws-prod"}}
        routing = receiver.route({"endpoint_id": "aws-prod#acme", "key_scheme": "composite"})
        print(json.dumps(receiver.read_with_shadow(table.get, routing, sample=1, ignore={"pk"})))
        def broken(composite, legacy):
            raise RuntimeError("no comparison")

        print(json.dumps(receiver.read_with_shadow(table.get, routing, sample=1, compare=broken)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"AI_AGENT_HANDLER_METRICS": "emf"},
    )
    assert result.returncode == 0, result.stderr
    same, item, error, item_again = (json.loads(line) for line in result.stdout.splitlines())
    assert (same["shadow"], same["ShadowSame"], item) == ("Same", 1, {"pk": "aws-prod#acme"})
    assert (error["shadow"], error["ShadowReadErrors"], item_again) == ("Error", 1, item)
    assert result.stderr.startswith("ai_agent_handler.receiver WARNING shadow comparison failed")


def test_it_exports_its_public_names() -> None:
    defined = {
        name
        for name, value in vars(receiver).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == receiver.__name__
    }
    assert defined <= set(receiver.__all__)
    assert all(hasattr(receiver, name) for name in receiver.__all__)


def test_the_default_writer_decides_when_a_line_is_due(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read_with_fallback(lambda key: "x", LEGACY)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-task")
    read_with_fallback(lambda key: "x", LEGACY)
    assert json.loads(capsys.readouterr().out)[RECEIVER_READS] == 1
