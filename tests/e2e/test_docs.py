"""The code in README.md and rollout.md runs as written.

* README "Deploying in AWS Lambda": the entry point runs against a local AWS (moto), with
  the live flag file in S3, through Lambda and through an SQS FIFO queue; every AWS
  operation it made maps to an action of the documented IAM policy, and moto's IAM accepts
  the policy.
* rollout.md section 2: the receiver helpers it names exist with the arguments it shows;
  they route both key schemes, from a Lambda payload and from SQS message attributes; the
  example it links to receives what the transport sends, reads across a rollback, refuses
  a key that cannot be split, and counts its reads with the metrics the section names.

The boundary: the README blocks are executed with ``exec`` in a fresh namespace, the linked
example is loaded from its path; AWS is moto in process; the operations are recorded by a
``before-call`` hook on boto3's default session.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from ai_agent_handler import Utility, receiver
from tests.support import BUCKET, REGION, REPO
from tests.support.aws import LambdaCapture, create_task_table, drain
from tests.support.flags import dump, everywhere

#: The IAM action each AWS operation of the library needs.
ACTIONS = {
    "lambda.Invoke": "lambda:InvokeFunction",
    "s3.GetObject": "s3:GetObject",
    "s3.HeadObject": "s3:GetObject",
    "sqs.SendMessage": "sqs:SendMessage",
    "sqs.SendMessageBatch": "sqs:SendMessage",
    "sqs.GetQueueUrl": "sqs:GetQueueUrl",
}


def _section(document: str, heading: str) -> str:
    text = (REPO / document).read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _exec(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, "<docs>", "exec"), namespace)
    return namespace


# -- README: the Lambda entry point and its IAM policy ------------------------------------------
LAMBDA = _section("README.md", "## Deploying in AWS Lambda")


@pytest.mark.parametrize("transport", ["lambda", "sqs"])
def test_the_readme_lambda_entry_point_runs_and_its_policy_covers_its_calls(
    aws: None, no_provider: None, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="ai-agent/production.flagd.json", Body=dump(everywhere(True)))
    monkeypatch.setenv("ROLLOUT_PHASE", "production")
    monkeypatch.setenv("FLAG_SOURCE", f"s3://{BUCKET}/ai-agent/production.flagd.json")
    if transport == "sqs":
        queue = boto3.resource("sqs", region_name=REGION).create_queue(
            QueueName="agent-tasks.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )
        monkeypatch.setenv("TASK_QUEUE_URL", queue.url)
    boto3.setup_default_session(region_name=REGION)
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], event_name: str, **_: Any) -> None:
        calls.append((event_name.removeprefix("before-call."), params))

    boto3.DEFAULT_SESSION.events.register("before-call", record)  # type: ignore[union-attr]
    try:
        python = next(b for b in _blocks(LAMBDA, "python") if "def lambda_handler" in b)
        entry = _exec(python)
        result = entry["lambda_handler"](
            {
                "agent": {"agent_name": "docs"},
                "endpoint_id": "aws-prod-eu-west-1",
                "part_id": "acme-corp",
                "run": {"run_uuid": "run-1", "updated_by": "u", "thread": {"thread_uuid": "t"}},
                "connection_id": "conn-1",
            },
            None,
        )
    finally:
        boto3.setup_default_session()

    assert result == {"statusCode": 200}
    operations = [name for name, _ in calls]
    assert "s3.GetObject" in operations  # the live flag file
    if transport == "lambda":
        payloads = [json.loads(p["body"]) for name, p in calls if name == "lambda.Invoke"]
        assert [p["funct"] for p in payloads] == ["insert_update_run"] + ["send_data_to_stream"] * 3
        assert {p["endpoint_id"] for p in payloads} == {"aws-prod-eu-west-1#acme-corp"}
    else:
        assert "lambda.Invoke" not in operations
        messages = drain(queue)
        assert [m.message_attributes["funct"]["StringValue"] for m in messages] == [
            "insert_update_run"
        ] + ["send_data_to_stream"] * 3
        keys = {m.message_attributes["endpoint_id"]["StringValue"] for m in messages}
        assert keys == {"aws-prod-eu-west-1#acme-corp"}

    (policy_text,) = _blocks(LAMBDA, "json")
    policy = json.loads(policy_text)
    allowed = {
        action
        for statement in policy["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    unknown = sorted(set(operations) - set(ACTIONS))
    assert not unknown, f"an AWS operation the docs' policy table does not know: {unknown}"
    assert {ACTIONS[o] for o in operations} <= allowed
    iam = boto3.client("iam", region_name=REGION)
    iam.create_policy(PolicyName="agent-function", PolicyDocument=policy_text)


# -- rollout.md section 2: what a receiver does --------------------------------------------------
RECEIVER = _section("rollout.md", "## 2. Preconditions")


def _receiver_example() -> ModuleType:
    """The example the runbook links to, loaded from its path (not the cached package)."""
    (link,) = set(re.findall(r"\]\((examples/\w+\.py)\)", RECEIVER))
    spec = importlib.util.spec_from_file_location("runbook_receiver", REPO / link)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sqs_record(key: str, scheme: str | None) -> dict[str, Any]:
    attributes = {"endpoint_id": {"stringValue": key, "dataType": "String"}}
    if scheme is not None:
        attributes["key_scheme"] = {"stringValue": scheme, "dataType": "String"}
    return {"messageAttributes": attributes, "body": json.dumps({"params": {}})}


def test_the_runbook_names_the_receiver_helpers_as_they_are() -> None:
    assert "`ai_agent_handler.receiver`" in RECEIVER
    # `name(arg, ...)`: the helper exists and takes those arguments first, in that order.
    calls = re.findall(r"`(\w+)\(([\w, ]*)\)`", RECEIVER)
    assert {name for name, _ in calls} == {"route", "read_with_fallback", "read_with_shadow"}
    for name, arguments in calls:
        parameters = list(inspect.signature(getattr(receiver, name)).parameters)
        named = [a.strip() for a in arguments.split(",")]
        assert parameters[: len(named)] == named, name
    assert issubclass(receiver.InvalidRoutingKey, ValueError)
    fields = re.search(r"`RoutingKey` \(([^)]*)\)", RECEIVER)
    assert fields is not None
    routing = receiver.split_key("aws-prod#acme", "composite")
    for field in re.findall(r"`(\w+)`", fields.group(1)):
        assert hasattr(routing, field), field
    source = _receiver_example().__file__
    assert source is not None
    assert "from ai_agent_handler.receiver import" in Path(source).read_text()


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"endpoint_id": "aws-prod#acme", "key_scheme": "composite", "funct": "f"},
            ("aws-prod#acme", "aws-prod", "acme", "aws-prod"),
        ),
        (
            {"endpoint_id": "aws-prod", "key_scheme": "legacy"},
            ("aws-prod", "aws-prod", None, "aws-prod"),
        ),
        (
            {"endpoint_id": "aws-prod"},
            ("aws-prod", "aws-prod", None, "aws-prod"),
        ),  # before key_scheme
        (
            _sqs_record("aws-prod#acme", "composite"),
            ("aws-prod#acme", "aws-prod", "acme", "aws-prod"),
        ),
        (_sqs_record("aws-prod", "legacy"), ("aws-prod", "aws-prod", None, "aws-prod")),
        (_sqs_record("aws-prod", None), ("aws-prod", "aws-prod", None, "aws-prod")),
    ],
)
def test_the_runbook_receiver_routes_both_schemes(
    event: dict[str, Any], expected: tuple[str, str, str | None, str]
) -> None:
    routing = receiver.route(event)
    assert (routing.key, routing.endpoint_id, routing.part_id, routing.legacy_key) == expected


def test_the_runbook_receiver_reads_across_a_rollback_and_counts_the_fallback(
    lambda_client: Any,
    sent: LambdaCapture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AI_AGENT_HANDLER_METRICS", "emf")
    example = _receiver_example()
    table = create_task_table(boto3.resource("dynamodb", region_name=REGION))
    monkeypatch.setattr(example, "_functions", example.TaskFunctions(table, connections=None))

    def call(key: str, funct: str, **params: Any) -> Any:
        """What the handler's transport sends, given to the example's entry point."""
        Utility.invoke_funct_on_aws_lambda(
            logging.getLogger("docs"),
            key,
            funct,
            {"run_uuid": "r1", **params},
            {},
            None,
            lambda_client,
        )
        return example.handler(sent.pop().payload, None)["data"]

    # Written under the legacy key before the canary, read with the composite key during it.
    call("aws-prod", "insert_update_run", status="old")
    assert call("aws-prod#acme", "get_run")["status"] == "old"
    # Written under the composite key during the canary: found with the composite key;
    # after a rollback the legacy key cannot name the part, so legacy reads see the old data.
    call("aws-prod#acme", "insert_update_run", status="new")
    assert call("aws-prod#acme", "get_run")["status"] == "new"
    assert call("aws-prod", "get_run")["status"] == "old"
    keys = sorted(str(item["pk"]) for item in table.scan()["Items"])
    assert keys == ["aws-prod", "aws-prod#acme"]  # each write under the key it came with
    # A key that cannot be split is refused and nothing is written.
    with pytest.raises(receiver.InvalidRoutingKey):
        example.handler(
            {"endpoint_id": "aws-prod#", "key_scheme": "composite", "funct": "insert_update_run"},
            None,
        )
    assert len(table.scan()["Items"]) == 2

    # The counters the runbook names, under its namespace and dimensions.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    docs = [doc for doc in lines if "ReceiverReads" in doc]
    (namespace,) = re.findall(r"namespace `(\w+)`", RECEIVER)
    assert "dimensions `phase` + `key_scheme`" in RECEIVER
    for doc in docs:
        (metrics,) = doc["_aws"]["CloudWatchMetrics"]
        assert metrics["Namespace"] == namespace
        assert metrics["Dimensions"] == [["phase", "key_scheme"]]
        for metric in metrics["Metrics"]:
            assert f"`{metric['Name']}`" in RECEIVER, metric["Name"]
    fallbacks = [(d["LegacyFallbackReads"], d["LegacyFallbackHits"]) for d in docs]
    # insert (legacy), get (legacy hit), insert (legacy hit), get, get after the rollback
    assert fallbacks == [(0, 0), (1, 1), (1, 1), (0, 0), (0, 0)]
