"""Utility.invoke_funct_on_aws_lambda: the three paths and the wire format."""

from __future__ import annotations

import datetime
import io
import json
import logging
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from ai_agent_handler import InvocationError, Utility
from tests.support import REGION
from tests.support.aws import LambdaCapture, drain

LOG = logging.getLogger("test")


def test_payload_wire_format(lambda_client: Any, sent: LambdaCapture) -> None:
    raw: list[bytes] = []
    lambda_client.meta.events.register(
        "before-send.lambda.Invoke", lambda request, **_: raw.append(request.body)
    )
    params = {
        "z": Decimal("3"),
        "a": Decimal("2.5"),
        "when": datetime.datetime(2026, 11, 26, 10, 30, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 11, 26),
    }
    result = Utility.invoke_funct_on_aws_lambda(
        LOG, "ep#part", "insert_update_run", params=params, aws_lambda=lambda_client
    )
    assert result is None  # Event
    (request,) = sent
    assert request.function_name == "silvaengine_agenttask"
    assert request.invocation_type == "Event"
    assert request.payload == {
        "endpoint_id": "ep#part",
        "funct": "insert_update_run",
        "key_scheme": "composite",
        "params": {"a": 2.5, "day": "2026-11-26", "when": "2026-11-26T10:30:00+00:00", "z": 3},
    }
    body = raw[0].decode()
    assert body.index('"endpoint_id"') < body.index('"funct"') < body.index('"key_scheme"')


def test_unserialisable_params_are_refused_before_sending(
    lambda_client: Any, sent: LambdaCapture
) -> None:
    with pytest.raises(TypeError, match="object"):
        Utility.invoke_funct_on_aws_lambda(
            LOG, "ep", "f", params={"x": object()}, aws_lambda=lambda_client
        )
    assert not sent


def stubbed_lambda(response: dict[str, Any]) -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response("invoke", response)
    stubber.activate()
    return client, stubber


def body(value: object) -> StreamingBody:
    raw = json.dumps(value).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"data": {"run_uuid": "r"}}, {"run_uuid": "r"}),
        ({"data": json.dumps({"n": 1})}, {"n": 1}),
        ({"data": None}, None),
    ],
)
def test_request_response_returns_the_data(answer: object, expected: object) -> None:
    client, stubber = stubbed_lambda({"StatusCode": 200, "Payload": body(answer)})
    result = Utility.invoke_funct_on_aws_lambda(
        LOG, "ep", "get_run", aws_lambda=client, invocation_type="RequestResponse"
    )
    assert result == expected
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": body({"errorMessage": "table missing", "errorType": "KeyError"}),
            },
            ["get_run", "ep#p1", "table missing"],
        ),
        (
            {"StatusCode": 200, "Payload": body({"errors": ["no such run"]})},
            ["get_run", "ep#p1", "no such run"],
        ),
    ],
)
def test_function_errors_raise_with_the_functions_message(
    response: dict[str, Any], words: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = stubbed_lambda(response)
    with pytest.raises(InvocationError) as caught:
        Utility.invoke_funct_on_aws_lambda(
            LOG, "ep#p1", "get_run", aws_lambda=client, invocation_type="RequestResponse"
        )
    for word in words:
        assert word in str(caught.value)
        assert word in caplog.text
    assert (caught.value.funct, caught.value.routing_key) == ("get_run", "ep#p1")


def test_function_error_on_an_event_invocation_raises_too() -> None:
    client, _ = stubbed_lambda(
        {"StatusCode": 202, "FunctionError": "Handled", "Payload": body({"errorMessage": "boom"})}
    )
    with pytest.raises(InvocationError, match="boom"):
        Utility.invoke_funct_on_aws_lambda(LOG, "ep", "f", aws_lambda=client)


def test_aws_errors_are_logged_with_funct_and_key_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = boto3.client("lambda", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_client_error("invoke", "AccessDeniedException", "not allowed", 403)
    stubber.activate()
    with pytest.raises(Exception) as caught:
        Utility.invoke_funct_on_aws_lambda(LOG, "ep#p1", "insert_update_run", aws_lambda=client)
    error = caught.value
    assert isinstance(error, ClientError) or isinstance(error.__cause__, ClientError)
    assert "insert_update_run" in caplog.text
    assert "ep#p1" in caplog.text
    assert "AccessDenied" in caplog.text


def test_sqs_path_when_queue_and_group_are_given(fifo_queue: Any, sent: LambdaCapture) -> None:
    result = Utility.invoke_funct_on_aws_lambda(
        LOG, "ep", "f", params={"n": Decimal("1")}, task_queue=fifo_queue, message_group_id="g1"
    )
    assert result is None
    (message,) = drain(fifo_queue)
    assert json.loads(message.body) == {"params": {"n": 1}}
    assert message.attributes["MessageGroupId"] == "g1"
    assert message.message_attributes["key_scheme"]["StringValue"] == "legacy"
    assert not sent


def test_a_queue_without_a_group_goes_to_lambda(
    fifo_queue: Any, lambda_client: Any, sent: LambdaCapture
) -> None:
    Utility.invoke_funct_on_aws_lambda(
        LOG, "ep", "f", task_queue=fifo_queue, aws_lambda=lambda_client
    )
    assert sent.keys() == ["ep"]
    assert not drain(fifo_queue)


@pytest.fixture
def local_functs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "local_agenttask.py").write_text(
        textwrap.dedent(
            """
            CALLS = []

            class AgentTask:
                def __init__(self, logger, **setting):
                    self.setting = setting

                def get_run(self, **params):
                    CALLS.append(params)
                    return {"run": params["run_uuid"], "table": self.setting["table"]}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "local_agenttask", raising=False)
    return {
        "table": "runs",
        "functs_on_local": {
            "get_run": {"module_name": "local_agenttask", "class_name": "AgentTask"}
        },
    }


@pytest.mark.parametrize(
    ("test_mode", "group"),
    [("local_for_all", None), ("local_for_all", "g"), ("local_for_sqs", None)],
)
def test_local_dispatch_in_test_mode(
    local_functs: dict[str, Any],
    sent: LambdaCapture,
    lambda_client: Any,
    test_mode: str,
    group: str | None,
) -> None:
    result = Utility.invoke_funct_on_aws_lambda(
        LOG,
        "ep",
        "get_run",
        params={"run_uuid": "r1"},
        setting=local_functs,
        test_mode=test_mode,
        aws_lambda=lambda_client,
        message_group_id=group,
    )
    assert result == {"run": "r1", "table": "runs"}
    assert not sent


def test_local_for_sqs_with_a_group_goes_to_the_queue(
    local_functs: dict[str, Any], fifo_queue: Any
) -> None:
    Utility.invoke_funct_on_aws_lambda(
        LOG,
        "ep",
        "get_run",
        params={"run_uuid": "r1"},
        setting=local_functs,
        test_mode="local_for_sqs",
        task_queue=fifo_queue,
        message_group_id="g",
    )
    assert len(drain(fifo_queue)) == 1
    assert "local_agenttask" not in sys.modules  # the local class was never loaded


def test_local_dispatch_without_an_entry_is_a_clear_error(aws: None) -> None:
    with pytest.raises(InvocationError, match=r"get_run.*functs_on_local"):
        Utility.invoke_funct_on_aws_lambda(
            LOG, "ep", "get_run", setting={}, test_mode="local_for_all"
        )
