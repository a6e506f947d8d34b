"""The receiving side: splitting a routing key, routing a call, reading with a fallback and
counting the fallback reads, and the module standing on its own (standard library only)."""

from __future__ import annotations

import ast
import inspect
import io
import json
import random
import shutil
import subprocess
import sys
import textwrap
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
    InvalidRoutingKey,
    ReceiverMetrics,
    RoutingKey,
    candidate_keys,
    read_with_fallback,
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
