"""AIAgentEventHandler: part_id, the flag-gated routing key, and what reaches AWS."""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any
from unittest.mock import patch

import pytest
from openfeature import api
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, AIAgentEventHandler, PartitionKeyError, Utility
from ai_agent_handler.pytest_plugin import PartitionKeyFlag
from tests.support import RUN
from tests.support.aws import LambdaCapture, drain

SETTINGS: dict[str, Any] = {"stream_dispatch": "sync"}


def new_handler(**setting: Any) -> AIAgentEventHandler:
    return AIAgentEventHandler(
        logging.getLogger("test"), {"agent_name": "t"}, **SETTINGS, **setting
    )


# -- the migration plan's section 7, adapted -----------------------------------------------


def test_part_id_property() -> None:
    handler = new_handler()
    handler.part_id = "acme-corp"
    assert handler.part_id == "acme-corp"
    assert new_handler().part_id is None


def test_backward_compatibility_with_endpoint_id_only() -> None:
    handler = new_handler()
    handler.endpoint_id = "aws-prod"
    handler.run = {"thread": {"thread_uuid": "thread-1"}, "run_uuid": "run-1", "updated_by": "u"}
    with patch.object(Utility, "invoke_funct_on_aws_lambda") as mock_invoke:
        handler.invoke_async_funct("test_function", param1="value1")
    assert mock_invoke.call_args[0][1] == "aws-prod"


def test_partition_key_assembly_in_lambda_calls() -> None:
    handler = new_handler()
    handler.endpoint_id = "aws-prod"
    handler.part_id = "acme-corp"
    handler.run = {"thread": {"thread_uuid": "thread-1"}, "run_uuid": "run-1", "updated_by": "u"}
    with patch.object(Utility, "invoke_funct_on_aws_lambda") as mock_invoke:
        handler.invoke_async_funct("test_function", param1="value1")
    args, kwargs = mock_invoke.call_args
    assert args[1] == "aws-prod#acme-corp"
    assert args[2] == "test_function"
    assert kwargs["params"] == {
        "param1": "value1",
        "thread_uuid": "thread-1",
        "run_uuid": "run-1",
        "updated_by": "u",
    }
    assert kwargs["invocation_type"] == "Event"
    assert kwargs["message_group_id"] == "run-1"


def test_handler_setup_with_part_id() -> None:
    context = {"endpoint_id": "aws-prod", "part_id": "acme-corp"}
    handler = new_handler()
    handler.endpoint_id = context["endpoint_id"]
    handler.part_id = context["part_id"]
    assert (handler.endpoint_id, handler.part_id) == ("aws-prod", "acme-corp")
    assert handler.partition_key == "aws-prod#acme-corp"


def test_send_data_to_stream_with_part_id() -> None:
    handler = new_handler()
    handler.endpoint_id = "aws-prod"
    handler.part_id = "acme-corp"
    handler.connection_id = "conn-123"
    handler.run = {"run_uuid": "run-456"}
    with patch.object(Utility, "invoke_funct_on_aws_lambda") as mock_invoke:
        handler.send_data_to_stream(index=0, data_format="text", chunk_delta="Hello world")
    args, _ = mock_invoke.call_args
    assert args[1] == "aws-prod#acme-corp"
    assert args[2] == "send_data_to_stream"


def test_legacy_code_compatibility(partition_key_flag: PartitionKeyFlag) -> None:
    partition_key_flag.legacy()  # old deployments: flag off, part_id never set
    handler = new_handler()
    handler.endpoint_id = "legacy-endpoint"
    handler.run = {"thread": {"thread_uuid": "t1"}, "run_uuid": "r1", "updated_by": "user"}
    with patch.object(Utility, "invoke_funct_on_aws_lambda") as mock_invoke:
        handler.invoke_async_funct("legacy_function")
    assert mock_invoke.call_args[0][1] == "legacy-endpoint"


# -- the routing-key matrix, asserted on the wire ------------------------------------------


@pytest.mark.parametrize(
    ("flag_on", "part_id", "key", "scheme"),
    [
        (True, "acme-corp", "aws-prod#acme-corp", "composite"),
        (True, None, "aws-prod", "legacy"),
        (False, "acme-corp", "aws-prod", "legacy"),  # partial rollback: part_id stays set
        (False, None, "aws-prod", "legacy"),
    ],
)
@pytest.mark.parametrize("path", ["async", "stream"])
def test_routing_key_on_the_wire(
    partition_key_flag: PartitionKeyFlag,
    make_handler: Any,
    sent: LambdaCapture,
    flag_on: bool,
    part_id: str | None,
    key: str,
    scheme: str,
    path: str,
) -> None:
    partition_key_flag.target({}, default=flag_on)
    handler = make_handler(part_id=part_id)
    assert handler.partition_key == ("aws-prod#acme-corp" if part_id else "aws-prod")
    if path == "async":
        handler.invoke_async_funct("insert_update_run", status="done")
    else:
        handler.send_data_to_stream(index=3, chunk_delta="hi", is_message_end=True)

    (request,) = sent
    assert request.function_name == "silvaengine_agenttask"
    assert request.invocation_type == "Event"
    assert request.payload["endpoint_id"] == key
    assert request.payload["key_scheme"] == scheme
    assert set(request.payload) == {"endpoint_id", "funct", "params", "key_scheme"}
    if path == "async":
        assert request.funct == "insert_update_run"
        assert request.payload["params"] == {
            "status": "done",
            "thread_uuid": "thread-1",
            "run_uuid": "run-1",
            "updated_by": "tester",
        }
    else:
        assert request.funct == "send_data_to_stream"
        assert request.payload["params"]["connection_id"] == "conn-1"
        assert json.loads(request.payload["params"]["data"]) == {
            "message_group_id": "conn-1-run-1",
            "data_format": "text",
            "index": 3,
            "chunk_delta": "hi",
            "is_message_end": True,
        }


def test_function_name_comes_from_the_setting(make_handler: Any, sent: LambdaCapture) -> None:
    make_handler(lambda_task_function="my_agenttask").invoke_async_funct("f")
    assert [s.function_name for s in sent] == ["my_agenttask"]


@pytest.mark.parametrize(
    ("flag_on", "key", "scheme"),
    [(True, "aws-prod#acme-corp", "composite"), (False, "aws-prod", "legacy")],
)
def test_sqs_fifo_path_carries_the_key_in_attributes(
    partition_key_flag: PartitionKeyFlag,
    make_handler: Any,
    fifo_queue: Any,
    sent: LambdaCapture,
    flag_on: bool,
    key: str,
    scheme: str,
) -> None:
    partition_key_flag.target({}, default=flag_on)
    handler = make_handler()
    handler.task_queue = fifo_queue
    handler.invoke_async_funct("insert_update_run", status="done")
    handler.send_data_to_stream(index=0, chunk_delta="a", suffix="rs#1")

    messages = drain(fifo_queue)
    assert not sent  # with a task queue nothing goes to Lambda directly
    assert [m.attributes["MessageGroupId"] for m in messages] == ["run-1", "conn-1-run-1-rs#1"]
    for message, funct in zip(messages, ["insert_update_run", "send_data_to_stream"], strict=True):
        attributes = {k: v["StringValue"] for k, v in message.message_attributes.items()}
        assert attributes == {"endpoint_id": key, "funct": funct, "key_scheme": scheme}
        assert set(json.loads(message.body)) == {"params"}
    assert json.loads(messages[0].body)["params"]["status"] == "done"


# -- per-endpoint targeting and pinning --------------------------------------------------


def test_flag_is_evaluated_per_endpoint(
    partition_key_flag: PartitionKeyFlag, make_handler: Any, sent: LambdaCapture
) -> None:
    partition_key_flag.target({"ep-on": True, "ep-off": False}, default=False)
    for endpoint in ["ep-on", "ep-off", "ep-other"]:
        make_handler(endpoint_id=endpoint).invoke_async_funct("f")
    assert sent.keys() == ["ep-on#acme-corp", "ep-off", "ep-other"]


def test_a_run_keeps_its_key_when_the_flag_flips(
    partition_key_flag: PartitionKeyFlag, make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    handler.invoke_async_funct("insert_update_run")
    partition_key_flag.legacy()  # the operator rolls back mid-run
    for index in range(3):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    handler.invoke_async_funct("insert_update_run", status="done")
    assert sent.keys() == ["aws-prod#acme-corp"] * 5

    handler.run = {**RUN, "run_uuid": "run-2"}  # the next run sees the rollback
    handler.invoke_async_funct("insert_update_run")
    partition_key_flag.composite()
    handler.send_data_to_stream(index=0, chunk_delta="y")
    assert sent.keys()[5:] == ["aws-prod", "aws-prod"]


@pytest.mark.parametrize(
    "reassign",
    [
        pytest.param(lambda h: setattr(h, "run", dict(h.run)), id="the same run again"),
        pytest.param(lambda h: setattr(h, "endpoint_id", "aws-prod"), id="the same endpoint_id"),
        pytest.param(lambda h: setattr(h, "part_id", "acme-corp"), id="the same part_id"),
        pytest.param(
            lambda h: (setattr(h, "endpoint_id", "other"), setattr(h, "endpoint_id", "aws-prod")),
            id="endpoint_id away and back",
        ),
    ],
)
def test_reassigning_the_runs_identity_keeps_its_key(
    reassign: Any, partition_key_flag: PartitionKeyFlag, make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    handler.invoke_async_funct("insert_update_run")
    partition_key_flag.legacy()  # the flag flips mid-run
    reassign(handler)
    handler.send_data_to_stream(index=0, chunk_delta="x")
    handler.invoke_async_funct("insert_update_run", status="done")
    assert sent.keys() == ["aws-prod#acme-corp"] * 3


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda h: setattr(h, "run", {**RUN, "run_uuid": "run-2"}), "aws-prod"),
        (lambda h: setattr(h, "endpoint_id", "aws-dev"), "aws-dev"),
        (lambda h: setattr(h, "part_id", "other-corp"), "aws-prod"),
    ],
    ids=["a new run_uuid", "another endpoint_id", "another part_id"],
)
def test_a_new_identity_is_decided_again(
    change: Any,
    key: str,
    partition_key_flag: PartitionKeyFlag,
    make_handler: Any,
    sent: LambdaCapture,
) -> None:
    handler = make_handler()
    handler.invoke_async_funct("insert_update_run")
    partition_key_flag.legacy()
    change(handler)
    handler.invoke_async_funct("insert_update_run")
    assert sent.keys() == ["aws-prod#acme-corp", key]


def test_concurrent_first_calls_of_a_run_share_one_decision(
    make_handler: Any, sent: LambdaCapture
) -> None:
    # The first evaluation is held until a second thread has made its first call; by then
    # the flag has flipped. Without one decision per run the second call would be legacy.
    asked: list[str] = []
    first_asked = threading.Event()
    release = threading.Event()

    def evaluate(flag: Any, ctx: Any) -> FlagResolutionDetails[bool]:
        asked.append(ctx.targeting_key)
        if len(asked) == 1:
            first_asked.set()
            release.wait(5)
            return FlagResolutionDetails(value=True, variant="composite")
        return FlagResolutionDetails(value=False, variant="legacy")

    flag = InMemoryFlag("legacy", {"composite": True, "legacy": False}, context_evaluator=evaluate)
    api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)
    handler = make_handler()
    first = threading.Thread(target=handler.invoke_async_funct, args=("insert_update_run",))
    second = threading.Thread(target=handler.send_data_to_stream, kwargs={"chunk_delta": "x"})
    first.start()
    assert first_asked.wait(5)
    second.start()
    second.join(0.2)  # it waits for the first decision instead of making its own
    release.set()
    first.join(5)
    second.join(5)
    assert asked == ["aws-prod"]
    assert sent.keys() == ["aws-prod#acme-corp"] * 2


def test_the_flag_is_evaluated_once_per_run(make_handler: Any, sent: LambdaCapture) -> None:
    handler = make_handler()
    with patch.object(
        api.get_client(FLAG_DOMAIN).__class__,
        "get_boolean_details",
        autospec=True,
        side_effect=api.get_client(FLAG_DOMAIN).__class__.get_boolean_details,
    ) as evaluate:
        handler.invoke_async_funct("f")
        for index in range(20):
            handler.send_data_to_stream(index=index, chunk_delta="x")
        assert evaluate.call_count == 1
        handler.run = {**RUN, "run_uuid": "run-2"}
        handler.send_data_to_stream(index=0, chunk_delta="x")
        assert evaluate.call_count == 2
    assert len(sent) == 22


def test_evaluation_context(make_handler: Any, sent: LambdaCapture) -> None:
    seen: list[Any] = []

    def evaluator(flag: Any, ctx: Any) -> Any:
        seen.append(ctx)
        return InMemoryFlag("composite", {"composite": True, "legacy": False}).resolve(ctx)

    flag = InMemoryFlag(
        "composite", {"composite": True, "legacy": False}, context_evaluator=evaluator
    )
    api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)
    make_handler(rollout_phase="staging").invoke_async_funct("f")
    make_handler(part_id=None, rollout_phase="staging").invoke_async_funct("f")
    assert seen[0].targeting_key == "aws-prod"
    assert dict(seen[0].attributes) == {
        "endpoint_id": "aws-prod",
        "part_id": "acme-corp",
        "phase": "staging",
    }
    assert dict(seen[1].attributes) == {"endpoint_id": "aws-prod", "phase": "staging"}


# -- the kill-switch default -----------------------------------------------------------------


def test_evaluation_error_means_legacy_and_is_logged_once_per_run(
    make_handler: Any, sent: LambdaCapture, caplog: pytest.LogCaptureFixture
) -> None:
    api.set_provider_and_wait(InMemoryProvider({}), domain=FLAG_DOMAIN)  # flag missing
    handler = make_handler()
    with caplog.at_level(logging.WARNING):
        handler.invoke_async_funct("f")
        for index in range(10):
            handler.send_data_to_stream(index=index, chunk_delta="x")
    assert set(sent.keys()) == {"aws-prod"}
    assert {s.payload["key_scheme"] for s in sent} == {"legacy"}
    warnings = [r.getMessage() for r in caplog.records if FLAG_KEY in r.getMessage()]
    assert len(warnings) == 1
    assert "FLAG_NOT_FOUND" in warnings[0]
    assert handler.key_decision is not None
    assert handler.key_decision.error_code == "FLAG_NOT_FOUND"


def test_provider_raising_means_legacy(make_handler: Any, sent: LambdaCapture) -> None:
    def explode(flag: Any, ctx: Any) -> Any:
        raise RuntimeError("provider bug")

    flag = InMemoryFlag(
        "composite", {"composite": True, "legacy": False}, context_evaluator=explode
    )
    api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)
    make_handler().invoke_async_funct("f")
    assert sent.keys() == ["aws-prod"]


# -- invalid ids and no-ops: nothing is sent -------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint_id", "aws#prod"),
        ("part_id", "acme#corp"),
        ("endpoint_id", " aws-prod"),
        ("part_id", "acme "),
        ("endpoint_id", 123),
        ("part_id", ["acme"]),
    ],
)
@pytest.mark.parametrize("path", ["async", "stream"])
def test_invalid_ids_are_refused_at_assignment_and_at_every_call(
    make_handler: Any, sent: LambdaCapture, field: str, value: object, path: str
) -> None:
    handler = make_handler()
    with pytest.raises(PartitionKeyError, match=field):
        setattr(handler, field, value)
    # A caller that swallowed the error must not send under the previous, valid id.
    with pytest.raises(PartitionKeyError, match=field):
        if path == "async":
            handler.invoke_async_funct("f")
        else:
            handler.send_data_to_stream(chunk_delta="x")
    assert not sent


@pytest.mark.parametrize(
    ("endpoint_id", "part_id"), [(None, "acme-corp"), ("", "acme-corp"), (None, None), ("", None)]
)
@pytest.mark.parametrize("path", ["async", "stream"])
def test_calls_without_a_valid_key_send_nothing(
    make_handler: Any,
    sent: LambdaCapture,
    fifo_queue: Any,
    endpoint_id: str | None,
    part_id: str | None,
    path: str,
) -> None:
    handler = make_handler(endpoint_id=endpoint_id, part_id=part_id)
    handler.task_queue = fifo_queue if path == "stream" else None
    with pytest.raises(PartitionKeyError, match="endpoint_id"):
        if path == "async":
            handler.invoke_async_funct("f")
        else:
            handler.send_data_to_stream(chunk_delta="x")
    assert not sent
    assert not drain(fifo_queue)


@pytest.mark.parametrize(
    ("run", "connection_id", "path"),
    [
        (None, "conn-1", "async"),
        (None, "conn-1", "stream"),
        (RUN, None, "stream"),
        (None, None, "stream"),
    ],
)
def test_no_run_or_no_connection_is_a_no_op(
    make_handler: Any, sent: LambdaCapture, run: Any, connection_id: Any, path: str
) -> None:
    handler = make_handler(run=run, connection_id=connection_id)
    if path == "async":
        handler.invoke_async_funct("f")
    else:
        handler.send_data_to_stream(chunk_delta="x")
    assert not sent
    assert handler.key_decision is None


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "env"),
    [
        ({}, {}),
        ({"flag_source": "s3://ops-flags/ai-agent/production.flagd.json"}, {}),
        (
            {
                "flag_source": "s3://ops-flags/dev.flagd.json",
                "region_name": "eu-west-1",
                "aws_access_key_id": "AKIA0000",
                "aws_secret_access_key": "secret",
            },
            {},
        ),
        ({"flag_source": "LOCAL"}, {}),
        ({"rollout_phase": "dev"}, {}),
        ({}, {"FLAG_SOURCE": "s3://ops-flags/staging.flagd.json", "ROLLOUT_PHASE": "staging"}),
        ({}, {"FLAG_SOURCE": "LOCAL", "ROLLOUT_PHASE": "production"}),
    ],
    ids=["defaults", "s3", "s3 with credentials", "local path", "phase", "env s3", "env local"],
)
def test_creating_a_handler_makes_no_network_call(
    monkeypatch: pytest.MonkeyPatch,
    no_provider: None,
    tmp_path: Any,
    setting: dict[str, Any],
    env: dict[str, str],
) -> None:
    # Recorded, not only refused: code that swallows the error must not hide the attempt.
    attempts: list[object] = []

    def record(sock: socket.socket, address: object, *args: Any) -> Any:
        attempts.append(address)
        raise ConnectionRefusedError("no network while a handler is created")

    def resolve(host: object, *args: Any, **kwargs: Any) -> Any:
        attempts.append(host)
        raise socket.gaierror("no name lookups while a handler is created")

    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(socket.socket, "connect_ex", record)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    local = str(tmp_path / "flags.json")
    for name, value in env.items():
        monkeypatch.setenv(name, local if value == "LOCAL" else value)
    setting = {k: local if v == "LOCAL" else v for k, v in setting.items()}
    handler = new_handler(**setting)
    handler.endpoint_id = "aws-prod"
    handler.part_id = "acme"
    handler.run = dict(RUN)
    handler.connection_id = "conn-1"
    assert handler.partition_key == "aws-prod#acme"
    assert handler.key_decision is None
    assert attempts == []


def test_upstream_attributes() -> None:
    handler = new_handler(region_name="eu-west-1")
    assert handler.endpoint_id is None
    assert handler.part_id is None
    assert handler.run is None
    assert handler.connection_id is None
    assert handler.task_queue is None
    assert handler.short_term_memory == []
    assert handler.accumulated_text == ""
    assert handler.final_output == {}
    assert handler.uploaded_files == []
    assert handler.setting["region_name"] == "eu-west-1"


@pytest.mark.parametrize(
    ("setting", "region", "access_key"),
    [
        (
            {"region_name": "eu-west-1", "aws_access_key_id": "AK", "aws_secret_access_key": "SK"},
            "eu-west-1",
            "AK",
        ),
        # Not all three: boto3's own chain (the environment here) decides.
        ({"region_name": "eu-west-1", "aws_access_key_id": "AK"}, "us-east-1", "testing"),
    ],
)
def test_clients_are_built_lazily_from_the_setting(
    setting: dict[str, str], region: str, access_key: str
) -> None:
    handler = new_handler(**setting)
    client = handler.aws_lambda
    assert client is handler.aws_lambda  # built once
    assert client.meta.region_name == region
    assert client._request_signer._credentials.access_key == access_key
    assert client.meta.config.retries["mode"] == "standard"
    assert handler.aws_s3.meta.region_name == region


def test_injected_clients_win(lambda_client: Any) -> None:
    s3 = object()
    handler = new_handler(aws_lambda=lambda_client, aws_s3=s3)
    assert handler.aws_lambda is lambda_client
    assert handler.aws_s3 is s3
    assert "aws_lambda" not in handler.setting
