"""Every Lambda and SQS call the handler makes, on boto3.

:meth:`Utility.invoke_funct_on_aws_lambda` takes the routing key as its second positional
argument (tests patch it with ``mock.patch.object(Utility, "invoke_funct_on_aws_lambda")``)
and has three paths:

1. ``test_mode`` local dispatch: run the function in-process;
2. SQS FIFO when a task queue and a message group id are given;
3. Lambda ``Invoke`` otherwise.

The payload carries ``key_scheme`` so a receiver can tell a composite key from a legacy one;
it is derived from the key itself, which is exact because a valid id never contains ``#``.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .._aws import error_code, shared_lambda_client
from ..exceptions import InvocationError
from ..metrics import record_invoke_error
from ..partition_key import key_scheme_of
from ..settings import metric_phase

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs.service_resource import Queue
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

DEFAULT_LAMBDA_FUNCTION = "silvaengine_agenttask"


def _default(value: object) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_dumps(value: object) -> str:
    """JSON with sorted keys; Decimal as int/float, datetimes as ISO 8601 (the wire format)."""
    return json.dumps(value, sort_keys=True, default=_default, separators=(",", ":"))


class Utility:
    """The AWS edge of the handler."""

    @staticmethod
    def invoke_funct_on_aws_lambda(
        logger: logging.Logger,
        endpoint_id: str,
        funct: str,
        params: Mapping[str, Any] | None = None,
        setting: Mapping[str, Any] | None = None,
        test_mode: str | None = None,
        aws_lambda: LambdaClient | None = None,
        invocation_type: str = "Event",
        message_group_id: str | None = None,
        task_queue: Queue | None = None,
    ) -> Any:
        """Call ``funct`` for the routing key ``endpoint_id``.

        Returns None for ``Event`` invocations and SQS sends; for ``RequestResponse`` the
        decoded result's ``data``. Raises :class:`~ai_agent_handler.InvocationError` when the
        function fails and when AWS refuses the call after botocore's bounded retries
        (throttling, 5xx, connection errors, timeouts); the message names the funct and the
        routing key. A refused call's error is *also* of the botocore error's class (so
        ``except ClientError`` / ``except BotoCoreError`` catch it as they did upstream, with
        ``.response``), and that original error is its ``__cause__``. Nothing is swallowed:
        each failure is logged, counted (EMF ``LambdaInvokeErrors``) and raised.
        """
        setting = setting or {}
        params = dict(params or {})
        if test_mode == "local_for_all" or (test_mode == "local_for_sqs" and not message_group_id):
            return _invoke_local(logger, funct, params, setting)
        key_scheme = key_scheme_of(endpoint_id)
        try:
            if message_group_id and task_queue is not None:
                task_queue.send_message(
                    MessageBody=json_dumps({"params": params}),
                    MessageGroupId=message_group_id,
                    MessageAttributes={
                        "endpoint_id": {"StringValue": endpoint_id, "DataType": "String"},
                        "funct": {"StringValue": funct, "DataType": "String"},
                        "key_scheme": {"StringValue": key_scheme, "DataType": "String"},
                    },
                )
                return None
            # Built (one per process) only here, when a call really goes to Lambda.
            client = aws_lambda if aws_lambda is not None else shared_lambda_client(setting)
            response = client.invoke(
                FunctionName=setting.get("lambda_task_function") or DEFAULT_LAMBDA_FUNCTION,
                InvocationType=invocation_type,  # type: ignore[arg-type]  # upstream's str
                Payload=json_dumps(
                    {
                        "endpoint_id": endpoint_id,
                        "funct": funct,
                        "params": params,
                        "key_scheme": key_scheme,
                    }
                ),
            )
        except (ClientError, BotoCoreError) as err:
            # botocore's retries (_aws.RETRY_CONFIG) are spent: the call failed for good. Every
            # failed call surfaces as one type that names the funct and the routing key; the
            # AWS error stays reachable as __cause__ (a ClientError keeps its .response).
            if isinstance(err, ClientError):
                code = error_code(err) or "ClientError"
                detail = str(err)
            else:
                code = type(err).__name__
                detail = f"{code}: {err}"
            message = f"{funct} for routing key {endpoint_id} failed: {detail}"
            logger.error(message)
            record_invoke_error(funct, endpoint_id, phase=metric_phase(setting), error_code=code)
            raise InvocationError.wrapping(
                err, message, funct=funct, routing_key=endpoint_id
            ) from err
        try:
            return _read_response(logger, funct, endpoint_id, invocation_type, response)
        except InvocationError:
            record_invoke_error(
                funct, endpoint_id, phase=metric_phase(setting), error_code="FunctionFailed"
            )
            raise

    @staticmethod
    def send_stream_batch(
        logger: logging.Logger,
        task_queue: Queue,
        messages: Sequence[tuple[str, str, Mapping[str, Any], str]],
    ) -> list[tuple[int, str]]:
        """Send up to 10 messages to the FIFO ``task_queue`` with one ``SendMessageBatch``.

        Each message is ``(routing_key, funct, params, message_group_id)`` and goes out in
        the wire format of the SQS path of :meth:`invoke_funct_on_aws_lambda` (attributes
        ``endpoint_id``, ``funct``, ``key_scheme``; body ``{"params": ...}``), in the order
        given, which SQS keeps within a message group. Returns the positions SQS did not
        accept (its ``Failed`` entries, and any entry it did not answer for), each with the
        reason, after logging them. When the whole call fails after botocore's retries it
        logs and raises :class:`InvocationError`, the AWS error as ``__cause__``.
        """
        if not 1 <= len(messages) <= 10:
            raise ValueError(f"SendMessageBatch takes 1 to 10 messages, got {len(messages)}")
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(position),
                "MessageBody": json_dumps({"params": dict(params)}),
                "MessageGroupId": group,
                "MessageAttributes": {
                    "endpoint_id": {"StringValue": key, "DataType": "String"},
                    "funct": {"StringValue": funct, "DataType": "String"},
                    "key_scheme": {"StringValue": key_scheme_of(key), "DataType": "String"},
                },
            }
            for position, (key, funct, params, group) in enumerate(messages)
        ]
        try:
            response = task_queue.send_messages(Entries=entries)
        except (ClientError, BotoCoreError) as err:
            key, funct = messages[0][0], messages[0][1]
            message = f"{funct} batch of {len(messages)} for routing key {key} failed: {err}"
            logger.error(message)
            raise InvocationError.wrapping(err, message, funct=funct, routing_key=key) from err
        answered = {str(item.get("Id")) for item in response.get("Successful") or []}
        failed: dict[int, str] = {}
        for item in response.get("Failed") or []:
            position = int(item["Id"])
            failed[position] = f"{item.get('Code', 'Failed')}: {item.get('Message', '')}".strip()
            answered.add(str(position))
        for position in range(len(messages)):
            if str(position) not in answered:
                failed[position] = "no result for this entry in the SendMessageBatch response"
        if failed:
            logger.error(
                "%d of %d messages of a SendMessageBatch for routing key %s failed: %s",
                len(failed),
                len(messages),
                messages[0][0],
                "; ".join(f"#{p} {reason}" for p, reason in sorted(failed.items())[:3]),
            )
        return sorted(failed.items())


def _read_response(
    logger: logging.Logger,
    funct: str,
    key: str,
    invocation_type: str,
    response: Mapping[str, Any],
) -> Any:
    payload = response.get("Payload")
    body = payload.read() if payload is not None else b""
    if response.get("FunctionError"):
        message = f"{funct} for routing key {key} failed in Lambda: {_error_text(body)}"
        logger.error(message)
        raise InvocationError(message, funct=funct, routing_key=key)
    if invocation_type != "RequestResponse":
        return None
    result = json.loads(body) if body else None
    if isinstance(result, dict) and result.get("errors"):
        message = f"{funct} for routing key {key} returned errors: {result['errors']}"
        logger.error(message)
        raise InvocationError(message, funct=funct, routing_key=key)
    if isinstance(result, dict):
        # The receiving function answers {"data": ...}; some return the data JSON-encoded.
        data = result.get("data")
        if isinstance(data, str):
            try:
                return json.loads(data)
            except ValueError:
                return data
        return data
    return result


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    if isinstance(decoded, dict):
        return str(decoded.get("errorMessage") or decoded)
    return text


def _invoke_local(
    logger: logging.Logger, funct: str, params: dict[str, Any], setting: Mapping[str, Any]
) -> Any:
    functs = setting.get("functs_on_local") or {}
    target = functs.get(funct)
    if not target:
        raise InvocationError(
            f"test_mode runs {funct} locally but setting['functs_on_local'] has no entry for it",
            funct=funct,
            routing_key="",
        )
    module = importlib.import_module(target["module_name"])
    instance = getattr(module, target["class_name"])(logger, **setting)
    return getattr(instance, funct)(**params)
