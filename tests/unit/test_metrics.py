"""EMF counters: the exact line CloudWatch turns into metrics, when it is written, and when not."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from ai_agent_handler import metrics
from ai_agent_handler.metrics import METRICS_NAMESPACE, EmfMetrics
from tests.support.aws import EmfCapture


def test_one_line_is_one_emf_document() -> None:
    out = io.StringIO()
    EmfMetrics(stream=out, enabled=True).emit(
        {"KeyDecisions": 1, "FlagEvaluationErrors": 0},
        phase="staging",
        key_scheme="composite",
        properties={"flag_set_version": "7"},
    )
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    timestamp = doc["_aws"].pop("Timestamp")
    assert isinstance(timestamp, int) and timestamp > 1_600_000_000_000  # milliseconds
    assert doc == {
        "KeyDecisions": 1,
        "FlagEvaluationErrors": 0,
        "phase": "staging",
        "key_scheme": "composite",
        "flag_set_version": "7",
        "_aws": {
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["phase", "key_scheme"]],
                    "Metrics": [
                        {"Name": "KeyDecisions", "Unit": "Count"},
                        {"Name": "FlagEvaluationErrors", "Unit": "Count"},
                    ],
                }
            ]
        },
    }


def test_no_phase_is_a_dimension_value_too() -> None:
    out = io.StringIO()
    EmfMetrics(stream=out, enabled=True).emit({"KeyDecisions": 1}, phase=None, key_scheme="legacy")
    assert json.loads(out.getvalue())["phase"] == "none"


def test_disabled_writes_nothing() -> None:
    out = io.StringIO()
    EmfMetrics(stream=out, enabled=False).emit({"KeyDecisions": 1}, phase="dev", key_scheme="x")
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),  # a library does not print to a host's stdout uninvited
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent"}, True),
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent", "AI_AGENT_HANDLER_METRICS": "off"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "agent", "AI_AGENT_HANDLER_METRICS": "0"}, False),
        ({"AI_AGENT_HANDLER_METRICS": "emf"}, True),
        ({"AI_AGENT_HANDLER_METRICS": " EMF "}, True),
        ({"AI_AGENT_HANDLER_METRICS": "bogus"}, False),
    ],
)
def test_emf_default_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.delenv("AI_AGENT_HANDLER_METRICS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    EmfMetrics(stream=out).emit({"KeyDecisions": 1}, phase="dev", key_scheme="legacy")
    assert bool(out.getvalue()) is expected


def test_stdout_is_resolved_when_writing(capsys: pytest.CaptureFixture[str]) -> None:
    EmfMetrics(enabled=True).emit({"KeyDecisions": 1}, phase="dev", key_scheme="legacy")
    assert json.loads(capsys.readouterr().out)["KeyDecisions"] == 1


@pytest.mark.parametrize(
    ("routing_key", "scheme"), [("ep#p", "composite"), ("ep", "legacy"), ("", "legacy")]
)
def test_an_invoke_error_is_counted_under_the_key_scheme(
    emf: EmfCapture, routing_key: str, scheme: str
) -> None:
    metrics.record_invoke_error("create_run", routing_key, phase="dev", error_code="Throttling")
    (doc,) = emf.documents()
    assert doc["LambdaInvokeErrors"] == 1 and doc["key_scheme"] == scheme
    assert (doc["funct"], doc["error_code"], doc["phase"]) == ("create_run", "Throttling", "dev")


def test_stream_chunks_failed_counted_per_message_not_per_chunk(emf: EmfCapture) -> None:
    metrics.record_stream_chunks_failed(0, "ep#p", phase="dev")  # nothing lost: no line
    metrics.record_stream_chunks_failed(3, "ep#p", phase="dev")
    assert [d["StreamChunksFailed"] for d in emf.documents()] == [3]


def test_configure_replaces_the_process_writer(emf: EmfCapture) -> None:
    assert metrics.metrics().enabled
    other = io.StringIO()
    writer = metrics.configure_metrics(stream=other, enabled=True, namespace="other")
    try:
        assert metrics.metrics() is writer
        metrics.record_stream_chunks_failed(1, "ep", phase=None)
        assert json.loads(other.getvalue())["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "other"
        assert emf.documents() == []
    finally:
        metrics.configure_metrics(stream=emf, enabled=True)


def test_lines_from_many_threads_never_interleave() -> None:
    class SlowStream(io.StringIO):
        def write(self, text: str) -> Any:
            # Half a line, a thread switch, the other half: interleaving would show.
            middle = len(text) // 2
            super().write(text[:middle])
            threading.Event().wait(0.0001)
            return super().write(text[middle:])

    out = SlowStream()
    writer = EmfMetrics(stream=out, enabled=True)

    def emit_many() -> None:
        for _ in range(50):
            writer.emit({"KeyDecisions": 1}, phase="dev", key_scheme="legacy")

    threads = [threading.Thread(target=emit_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["KeyDecisions"] == 1 for line in lines)
