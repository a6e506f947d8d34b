"""The code in README.md and rollout.md runs as written.

* README "Deploying in AWS Lambda": the entry point runs against a local AWS (moto), with
  the live flag file in S3, through Lambda and through an SQS FIFO queue; every AWS
  operation it made maps to an action of the documented IAM policy, and moto's IAM accepts
  the policy.
* rollout.md section 2: the receiver's routing code handles both key schemes, from a
  Lambda payload and from SQS message attributes.

The boundary: the blocks are executed with ``exec`` in a fresh namespace; AWS is moto in
process; the operations are recorded by a ``before-call`` hook on boto3's default session.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest

from tests.support import BUCKET, REGION, REPO
from tests.support.aws import drain
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


def _sqs_record(key: str, scheme: str | None) -> dict[str, Any]:
    attributes = {"endpoint_id": {"stringValue": key, "dataType": "String"}}
    if scheme is not None:
        attributes["key_scheme"] = {"stringValue": scheme, "dataType": "String"}
    return {"messageAttributes": attributes, "body": json.dumps({"params": {}})}


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
    (code,) = _blocks(RECEIVER, "python")
    assert _exec(code)["route"](event) == expected


def test_the_runbook_receiver_reads_across_a_rollback(aws: None) -> None:
    (code,) = _blocks(RECEIVER, "python")
    receiver = _exec(code)
    table = boto3.resource("dynamodb", region_name=REGION).create_table(
        TableName="runs",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Written under the legacy key before the canary, read with the composite key during it.
    legacy = receiver["route"]({"endpoint_id": "aws-prod", "key_scheme": "legacy"})
    receiver["write_item"](table, legacy[0], {"run": "r1"})
    composite = receiver["route"]({"endpoint_id": "aws-prod#acme", "key_scheme": "composite"})
    assert receiver["read_item"](table, composite[0], composite[3])["run"] == "r1"
    # Written under the composite key during the canary: found with the composite key;
    # after a rollback the legacy key cannot name the part, so legacy reads see the old data.
    receiver["write_item"](table, composite[0], {"run": "r2"})
    assert receiver["read_item"](table, composite[0], composite[3])["run"] == "r2"
    assert receiver["read_item"](table, legacy[0], legacy[3])["run"] == "r1"
    keys = sorted(item["pk"] for item in table.scan()["Items"])
    assert keys == ["aws-prod", "aws-prod#acme"]  # each write under the key it came with
