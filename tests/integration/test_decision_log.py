"""The decision log, the EMF counters and the optional OpenTelemetry hook."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest
from botocore.stub import Stubber
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, InvocationError, decision_log
from ai_agent_handler.decision import VARIANTS, flag_client
from ai_agent_handler.decision_log import DECISION_LOGGER, DecisionHook
from tests.support.aws import EmfCapture


def _flag(default_variant: str = "composite", version: object = 7) -> None:
    flag = InMemoryFlag(default_variant, VARIANTS, flag_metadata={"version": version})
    api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)


def _decisions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == DECISION_LOGGER and hasattr(r, "key_decision")
    ]


def _drive_run(handler: Any, run_uuid: str, chunks: int = 20) -> None:
    handler.run = {"run_uuid": run_uuid, "updated_by": "u", "thread": {"thread_uuid": "t"}}
    handler.invoke_async_funct("create_run")
    for index in range(chunks):
        handler.send_data_to_stream(index=index, chunk_delta=f"c{index}")
    handler.send_data_to_stream(index=chunks, is_message_end=True)
    handler.invoke_async_funct("update_run")


@pytest.mark.parametrize(
    ("variant", "part_id", "scheme", "routing_key"),
    [
        ("composite", "acme", "composite", "aws-prod#acme"),
        ("composite", None, "legacy", "aws-prod"),  # flag on, no part: still the legacy key
        ("legacy", "acme", "legacy", "aws-prod"),  # partial rollback
    ],
)
def test_one_decision_record_per_run_with_every_field(
    make_handler: Any,
    caplog: pytest.LogCaptureFixture,
    emf: EmfCapture,
    variant: str,
    part_id: str | None,
    scheme: str,
    routing_key: str,
) -> None:
    _flag(variant, version=7)
    handler = make_handler(part_id=part_id, rollout_phase="staging")
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        _drive_run(handler, "run-a")
        _drive_run(handler, "run-b")

    records = _decisions(caplog)
    assert [r["run_uuid"] for r in records] == ["run-a", "run-b"]  # one per run, not per call
    record = records[0]
    assert record == {
        "event": "key_decision",
        "flag_key": FLAG_KEY,
        "run_uuid": "run-a",
        "endpoint_id": "aws-prod",
        "routing_key": routing_key,
        "phase": "staging",
        "key_scheme": scheme,
        "flag_value": variant == "composite",
        "variant": variant,
        "reason": "STATIC",
        "error_code": None,
        "flag_set_version": "7",
        "flag_source": None,  # a provider that does not say where its flags come from
        "flag_source_fault": None,
        "provider": "In-Memory Provider",
    }
    # The record agrees with what the handler really used.
    assert handler.key_decision.routing_key == routing_key

    docs = emf.documents()
    assert len(docs) == 2  # one EMF line per decision, none per chunk
    for doc in docs:
        assert doc["KeyDecisions"] == 1 and doc["FlagEvaluationErrors"] == 0
        assert (doc["phase"], doc["key_scheme"]) == ("staging", scheme)
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "ai_agent_handler"
        assert directive["Dimensions"] == [["phase", "key_scheme"]]
        assert {m["Name"] for m in directive["Metrics"]} == {"KeyDecisions", "FlagEvaluationErrors"}
        assert isinstance(doc["_aws"]["Timestamp"], int)


def test_evaluation_error_is_recorded_and_counted(
    make_handler: Any,
    caplog: pytest.LogCaptureFixture,
    emf: EmfCapture,
) -> None:
    api.set_provider_and_wait(InMemoryProvider({}), domain=FLAG_DOMAIN)  # flag missing
    handler = make_handler(rollout_phase="production")
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        _drive_run(handler, "run-e")
    (record,) = _decisions(caplog)
    assert record["error_code"] == "FLAG_NOT_FOUND"
    assert record["reason"] == "ERROR"
    assert record["key_scheme"] == "legacy" and record["routing_key"] == "aws-prod"
    assert emf.total("FlagEvaluationErrors", phase="production", key_scheme="legacy") == 1
    assert emf.total("KeyDecisions") == 1


def test_provider_not_ready_is_recorded(emf: EmfCapture) -> None:
    class NeverReady(InMemoryProvider):
        def initialize(self, evaluation_context: Any) -> None:
            raise RuntimeError("source unreachable")

    api.set_provider(NeverReady({}), domain=FLAG_DOMAIN)
    details = flag_client().get_boolean_details(FLAG_KEY, False)
    assert details.error_code is not None
    (doc,) = emf.documents()
    assert doc["FlagEvaluationErrors"] == 1


def test_other_flags_of_the_domain_are_not_recorded(emf: EmfCapture) -> None:
    flag = InMemoryFlag("on", {"on": True, "off": False})
    api.set_provider_and_wait(InMemoryProvider({"something-else": flag}), domain=FLAG_DOMAIN)
    assert flag_client().get_boolean_value("something-else", False) is True
    assert emf.documents() == []


def test_failed_aws_call_is_counted_once(
    make_handler: Any,
    emf: EmfCapture,
) -> None:
    handler = make_handler(rollout_phase="dev")
    stub = Stubber(handler.aws_lambda)
    stub.add_client_error(
        "invoke", service_error_code="AccessDeniedException", http_status_code=403
    )
    with (
        stub,
        pytest.raises(InvocationError, match=r"create_run for routing key aws-prod#acme-corp"),
    ):
        _drive_run(handler, "run-x", chunks=0)
    assert emf.total("LambdaInvokeErrors", phase="dev", key_scheme="composite") == 1
    (doc,) = [d for d in emf.documents() if "LambdaInvokeErrors" in d]
    assert doc["funct"] == "create_run" and doc["error_code"] == "AccessDeniedException"


def test_no_chunk_content_agent_data_or_credentials_in_logs(
    make_handler: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    emf: EmfCapture,
) -> None:
    secret_chunk = "SECRET-CHUNK-7f3a9c"
    secret_key = "AKIASECRETVALUE12345"
    secret_password = "wJalrXUtnFEMI-SECRET-K7MDENG"
    secret_agent = "SECRET-AGENT-INSTRUCTION-55"
    handler = make_handler(
        region_name="us-east-1",
        aws_access_key_id=secret_key,
        aws_secret_access_key=secret_password,
        rollout_phase="staging",
    )
    handler.agent = {"instructions": secret_agent, "api_key": secret_password}
    with (
        caplog.at_level(logging.DEBUG, logger="ai_agent_handler"),
        caplog.at_level(logging.DEBUG, logger="openfeature"),
        caplog.at_level(logging.DEBUG, logger="test"),
    ):
        _drive_run(handler, "run-s", chunks=3)
        handler.send_data_to_stream(index=9, chunk_delta=secret_chunk)
        # The failure paths log too: an AWS refusal ...
        stub = Stubber(handler.aws_lambda)
        stub.add_client_error(
            "invoke", service_error_code="AccessDeniedException", http_status_code=403
        )
        with stub, pytest.raises(InvocationError):
            handler.send_data_to_stream(index=10, chunk_delta=secret_chunk)
        # ... and a flag evaluation error.
        api.set_provider_and_wait(InMemoryProvider({}), domain=FLAG_DOMAIN)
        _drive_run(handler, "run-t", chunks=0)
        handler.send_data_to_stream(index=1, chunk_delta=secret_chunk)

    captured = capsys.readouterr()
    text = "\n".join(
        [r.getMessage() for r in caplog.records]
        + [json.dumps(getattr(r, "key_decision", None)) for r in caplog.records]
        + [captured.out, captured.err, emf.getvalue()]
    )
    assert _decisions(caplog), "the decision records were captured"
    assert "LambdaInvokeErrors" in emf.getvalue()
    for secret in (secret_chunk, secret_key, secret_password, secret_agent):
        assert secret not in text


def test_otel_hook_only_when_the_host_uses_opentelemetry() -> None:
    # A fresh interpreter that never imported OpenTelemetry: only the decision hook, and
    # deciding a run does not import it either.
    code = (
        "import sys\n"
        "from ai_agent_handler import decision, decision_log\n"
        "hooks = decision_log.decision_hooks()\n"
        "decision.decide('ep', 'p', run_uuid='r')\n"
        "print([type(h).__name__ for h in hooks], 'opentelemetry' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['DecisionHook'] False"


def test_otel_span_event_when_the_host_traces() -> None:
    pytest.importorskip("openfeature.contrib.hook.opentelemetry")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("host")

    hooks = decision_log.decision_hooks()
    assert [type(h).__name__ for h in hooks] == ["DecisionHook", "TracingHook"]
    _flag("composite")
    with tracer.start_as_current_span("agent-run"):
        assert flag_client().get_boolean_value(FLAG_KEY, False) is True
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert event.name == "feature_flag.evaluation"
    assert event.attributes is not None
    assert event.attributes["feature_flag.key"] == FLAG_KEY
    assert event.attributes["feature_flag.result.variant"] == "composite"


def test_domain_client_carries_the_decision_hook_once() -> None:
    # The hook is the one registered on the domain client, once per client.
    client = flag_client()
    assert sum(isinstance(h, DecisionHook) for h in client.hooks) == 1
