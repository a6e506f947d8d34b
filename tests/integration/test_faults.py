"""Fault injection: one table of every fault, its expected outcome, and two invariants.

For every case -- an AWS fault on the Lambda or SQS path, an invalid id, a flag-source
fault -- the test checks the expected outcome (delivered after botocore's bounded retries,
or a clear error naming the funct and the routing key) and two invariants:

* nothing was sent with a wrong key: every request that reached the (loopback) AWS carried
  the run's routing key;
* nothing was lost: a call either arrived (the server accepted it) or the caller got an
  exception and the failure was logged and counted -- never a silent drop.

AWS faults run against :class:`~tests.support.fault_server.FaultServer`, a real HTTP
server on 127.0.0.1, so botocore's own retry decisions, error parsing and timeouts are what
is tested. The number of cases is printed in the test report.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError
from openfeature import api

from ai_agent_handler import (
    FLAG_DOMAIN,
    FLAG_KEY,
    AIAgentEventHandler,
    FlagFileProvider,
    InvocationError,
    PartitionKeyError,
    StreamDeliveryError,
    Utility,
    decision,
)
from ai_agent_handler._aws import RETRY_CONFIG
from tests.support import REGION
from tests.support.aws import EmfCapture
from tests.support.fault_server import PATIENT_TIMEOUT, READ_TIMEOUT, FaultServer

ENDPOINT, PART = "aws-prod-us-east-1", "acme-corp"
KEY = f"{ENDPOINT}#{PART}"
FAULT_RUN = {"run_uuid": "run-f", "updated_by": "tester", "thread": {"thread_uuid": "thread-f"}}
#: botocore standard mode: ``max_attempts`` counts retries, so 1 + 4 attempts at most.
MAX_REQUESTS = 1 + int(RETRY_CONFIG.retries["max_attempts"])  # type: ignore[index]


@dataclass(frozen=True)
class Case:
    """One fault and what must happen."""

    id: str
    path: str  # "lambda" | "sqs" | "lambda-rr" | "refused" | "invalid-id" | ...
    script: tuple[str, ...] = ()
    delivered: bool = True  # else: the caller gets an error
    requests: int | None = None  # exact number of requests the server saw
    error_code: str | None = None  # AWS code / exception class named in the error
    cause: type[BaseException] | None = None
    ids: tuple[Any, Any] = (ENDPOINT, PART)
    bad_field: str = ""  # for invalid ids: the field the error names


def _aws(path: str, script: tuple[str, ...], **kw: Any) -> Case:
    return Case(id=f"{path}:{'+'.join(script) or 'ok'}", path=path, script=script, **kw)


AWS_CASES = [
    # Retried by botocore and delivered: throttling, 5xx, connection errors, timeouts.
    _aws("lambda", ("500",), requests=2),
    _aws("lambda", ("502", "503"), requests=3),
    _aws("lambda", ("throttle", "throttle"), requests=3),
    _aws("lambda", ("drop",), requests=2),  # connection closed without an answer
    _aws("lambda", ("slow",), requests=2),  # read timeout, retried
    _aws("lambda", ("500", "throttle", "drop", "503"), requests=MAX_REQUESTS),  # last chance
    _aws("sqs", ("500",), requests=2),
    _aws("sqs", ("throttle", "throttle"), requests=3),
    _aws("sqs", ("drop",), requests=2),
    _aws("sqs", ("slow",), requests=2),
    # Retries are bounded: a fault that outlasts them raises, after MAX_REQUESTS requests.
    _aws("lambda", ("500",) * 5, delivered=False, requests=MAX_REQUESTS,
         error_code="ServiceException", cause=ClientError),
    _aws("lambda", ("throttle",) * 5, delivered=False, requests=MAX_REQUESTS,
         error_code="TooManyRequestsException", cause=ClientError),
    _aws("lambda", ("drop",) * 5, delivered=False, requests=MAX_REQUESTS,
         error_code="ConnectionClosedError", cause=BotoCoreError),
    _aws("lambda", ("slow",) * 5, delivered=False, requests=MAX_REQUESTS,
         error_code="ReadTimeoutError", cause=BotoCoreError),
    _aws("sqs", ("throttle",) * 5, delivered=False, requests=MAX_REQUESTS,
         error_code="RequestThrottled", cause=ClientError),
    _aws("sqs", ("503",) * 5, delivered=False, requests=MAX_REQUESTS,
         error_code="ServiceUnavailable", cause=ClientError),
    # Not retried: the answer will not change.
    _aws("lambda", ("denied",), delivered=False, requests=1,
         error_code="AccessDeniedException", cause=ClientError),
    _aws("lambda", ("notfound",), delivered=False, requests=1,
         error_code="ResourceNotFoundException", cause=ClientError),
    _aws("sqs", ("denied",), delivered=False, requests=1,
         error_code="AccessDenied", cause=ClientError),
    _aws("sqs", ("notfound",), delivered=False, requests=1,
         error_code="QueueDoesNotExist", cause=ClientError),
    # The function ran and failed (RequestResponse): the error is Lambda's, raised.
    _aws("lambda-rr", ("function-error",), delivered=False, requests=1,
         error_code="boom", cause=None),
    # Nothing listening: connection refused on every attempt.
    Case(id="lambda:connection-refused", path="refused", delivered=False, requests=0,
         error_code="EndpointConnectionError", cause=BotoCoreError),
]  # fmt: skip


def _invalid(case_id: str, endpoint: Any, part: Any, field_name: str) -> Case:
    return Case(id=f"invalid:{case_id}", path="invalid-id", ids=(endpoint, part),
                bad_field=field_name, delivered=False, requests=0)  # fmt: skip


INVALID_ID_CASES = [
    _invalid("hash-in-endpoint", "aws#prod", PART, "endpoint_id"),
    _invalid("hash-in-part", ENDPOINT, "acme#corp", "part_id"),
    _invalid("hash-only-part", ENDPOINT, "#", "part_id"),
    _invalid("collision-attempt", "a#b", "c", "endpoint_id"),  # would equal ("a", "b#c")
    _invalid("part-without-endpoint", None, PART, "endpoint_id"),
    _invalid("empty-endpoint-with-part", "", PART, "endpoint_id"),
    _invalid("leading-space-endpoint", " aws-prod", PART, "endpoint_id"),
    _invalid("trailing-newline-endpoint", "aws-prod\n", PART, "endpoint_id"),
    _invalid("tab-in-part", ENDPOINT, "\tacme", "part_id"),
    _invalid("whitespace-only-part", ENDPOINT, "  ", "part_id"),
    _invalid("int-endpoint", 42, PART, "endpoint_id"),
    _invalid("bytes-part", ENDPOINT, b"acme", "part_id"),
    _invalid("dict-part", ENDPOINT, {"id": "acme"}, "part_id"),
    _invalid("no-endpoint-at-all", None, None, "endpoint_id"),
]


def _doc(default_variant: str = "composite", version: int = 1, **flag: Any) -> dict[str, Any]:
    """A phase file: the partition-key flag with ``default_variant`` for every endpoint."""
    body: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"composite": True, "legacy": False},
        "defaultVariant": default_variant,
    }
    body.update(flag)
    return {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "metadata": {"flagSetId": "ai_agent_handler", "phase": "dev", "version": version},
        "flags": {FLAG_KEY: body},
    }


def _bytes(doc: object) -> bytes:
    return json.dumps(doc, indent=2).encode()


GOOD = _bytes(_doc("composite", version=1))
REPAIRED = _bytes(_doc("legacy", version=2))  # the next good version: a rollback

#: Broken contents of a flag file, each of which must leave the last good flags in force.
BAD_CONTENT: dict[str, bytes] = {
    "empty": b"",
    "truncated": GOOD[: len(GOOD) // 2],  # half-written, or an in-place write caught midway
    "invalid-json": b"{flags: composite}",
    "garbage-bytes": b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfd" * 8,
    "not-an-object": b"[1, 2, 3]",
    "no-flags": _bytes({"metadata": {"version": 3}}),
    "flags-not-object": _bytes({"flags": ["composite"], "metadata": {"version": 3}}),
    "flag-missing": _bytes({"flags": {}, "metadata": {"version": 3}}),
    "no-version": _bytes({k: v for k, v in _doc().items() if k != "metadata"}),
    "default-variant-unknown": _bytes(_doc("on", version=3)),
    "targeting-result-unknown": _bytes(
        _doc("legacy", version=3, targeting={"if": [True, "enabled", "legacy"]})
    ),
    "non-boolean-variants": _bytes(
        {
            **_doc(version=3),
            "flags": {
                FLAG_KEY: {
                    "state": "ENABLED",
                    "variants": {"composite": "yes", "legacy": "no"},
                    "defaultVariant": "composite",
                }
            },
        }
    ),
    "unknown-operator": _bytes(
        _doc("legacy", version=3, targeting={"exec": ["__import__('os').system('true')"]})
    ),
    "duplicate-keys": GOOD.replace(
        b'"defaultVariant": "composite"',
        b'"defaultVariant": "legacy",\n      "defaultVariant": "composite"',
    ),
    "nan-constant": GOOD.replace(b'"version": 1', b'"version": NaN'),
    "utf16-encoded": GOOD.decode().encode("utf-16"),
}


def _flag_case(case_id: str) -> Case:
    return Case(id=case_id, path=case_id.split(":", 1)[0], requests=None)


FLAG_SOURCE_CASES = (
    [_flag_case(f"flag-file:{name}") for name in BAD_CONTENT]
    + [_flag_case(f"flag-file:{name}") for name in ("missing", "directory", "permission-denied")]
    + [_flag_case(f"flag-s3:{name}") for name in ("truncated", "garbage-bytes")]
    + [
        _flag_case(f"flag-s3:{name}")
        for name in (
            "denied",
            "notfound",
            "deleted",
            "throttle",
            "500",
            "slow",
            "drop",
            "wrong-owner",
        )
    ]
)

#: Stream chunks go out in the background; a failure is counted and reported at message end.
STREAM_CASES = [
    Case(id="stream-lambda:ok", path="stream-lambda"),
    Case(id="stream-lambda:throttle+throttle+500", path="stream-lambda",
         script=("throttle", "throttle", "500")),  # retried: nothing lost
    Case(id="stream-lambda:denied+denied", path="stream-lambda", script=("denied", "denied"),
         delivered=False),  # two chunks refused for good
    Case(id="stream-sqs:ok", path="stream-sqs"),
    Case(id="stream-sqs:throttle+503", path="stream-sqs", script=("throttle", "503")),
    Case(id="stream-sqs:denied", path="stream-sqs", script=("denied",), delivered=False),
    Case(id="stream-sqs:partial", path="stream-sqs", script=("partial",), delivered=False),
]  # fmt: skip

CASES = AWS_CASES + INVALID_ID_CASES + FLAG_SOURCE_CASES + STREAM_CASES

_tried: list[str] = []


class _CaseCount:
    """Prints the number of fault cases tried in the terminal summary of the run."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not _tried:
            return
        kinds: dict[str, int] = {}
        for case_id in _tried:
            kind = case_id.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        detail = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        terminalreporter.write_sep("-", "fault injection")
        terminalreporter.write_line(f"fault-injection table: {len(_tried)} cases tried ({detail})")


@pytest.fixture(scope="module", autouse=True)
def _report_case_count(request: pytest.FixtureRequest) -> None:
    # A plugin registered from here, so the count needs nothing in the shared conftest.
    name = "ai_agent_handler-fault-case-count"
    if request.config.pluginmanager.get_plugin(name) is None:
        request.config.pluginmanager.register(_CaseCount(), name=name)


def _handler(**setting: Any) -> AIAgentEventHandler:
    setting.setdefault("stream_dispatch", "sync")
    return AIAgentEventHandler(logging.getLogger("test.faults"), {"agent_name": "t"}, **setting)


def _call_for(case: Case, server: FaultServer, timeout: float) -> Callable[[], Any]:
    """The call the case exercises: a DB operation through the handler, or the edge itself."""
    if case.path == "lambda-rr":
        client = server.lambda_client(read_timeout=timeout)
        return lambda: Utility.invoke_funct_on_aws_lambda(
            logging.getLogger("test.faults"),
            KEY,
            "get_run",
            params={"run_uuid": "run-f"},
            aws_lambda=client,
            invocation_type="RequestResponse",
        )
    if case.path == "refused":
        closed = FaultServer()
        url = closed.url
        closed.close()  # the port is now closed: connections are refused
        client = boto3.client("lambda", region_name=REGION, endpoint_url=url, config=RETRY_CONFIG)
        handler = _handler(aws_lambda=client)
    elif case.path == "sqs":
        handler = _handler(aws_lambda=server.lambda_client(read_timeout=timeout))
        handler.task_queue = server.queue(read_timeout=timeout)
    else:
        handler = _handler(aws_lambda=server.lambda_client(read_timeout=timeout))
    handler.endpoint_id, handler.part_id = case.ids
    handler.run = dict(FAULT_RUN)
    return lambda: handler.invoke_async_funct("update_run", status="in_progress")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_table(
    case: Case,
    fault_server: FaultServer,
    emf: EmfCapture,
    no_backoff: None,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    _tried.append(case.id)
    if case.path == "invalid-id":
        _check_invalid_id(case, fault_server, emf)
        return
    if case.path.startswith("stream-"):
        _check_stream_fault(case, fault_server, emf)
        return
    if case.path in ("flag-file", "flag-s3"):
        try:
            _check_flag_source_fault(case, fault_server, emf, tmp_path)
        except pytest.skip.Exception:
            _tried.remove(case.id)  # not tried here; the summary counts what ran
            raise
        return

    fault_server.script.extend(case.script)
    timeout = READ_TIMEOUT if "slow" in case.script else PATIENT_TIMEOUT
    call = _call_for(case, fault_server, timeout)
    error: BaseException | None = None
    with caplog.at_level(logging.ERROR, logger="test.faults"):
        try:
            call()
        except Exception as err:  # the outcome is checked below
            error = err
    fault_server.settle()  # slow requests answered late still count as arrived
    seen = fault_server.requests
    accepted = fault_server.accepted()

    # Nothing sent with a wrong key.
    assert {r.key for r in seen} <= {KEY}, [r.key for r in seen]
    if case.requests is not None:
        assert len(seen) == case.requests

    if case.delivered:
        # Nothing lost: it arrived (a timed-out attempt may arrive too: a duplicate of the
        # same payload, which receivers dedupe by run and funct).
        assert error is None, error
        assert accepted, "a delivered call reached the server"
        assert all(r.body == accepted[0].body for r in accepted)
        assert len(accepted) == (2 if "slow" in case.script else 1)
        assert emf.total("LambdaInvokeErrors") == 0
        return

    # Nothing lost: the caller knows, the log says which call, the counter moved.
    assert isinstance(error, InvocationError), repr(error)
    funct = "get_run" if case.path == "lambda-rr" else "update_run"
    assert f"{funct} for routing key {KEY}" in str(error)
    assert case.error_code is not None and case.error_code in str(error)
    assert (error.funct, error.routing_key) == (funct, KEY)
    if case.cause is None:
        assert error.__cause__ is None
    else:
        assert isinstance(error.__cause__, case.cause)
        # Caught as upstream's callers caught it: the error is also of the botocore class.
        assert isinstance(error, type(error.__cause__)) and isinstance(error, case.cause)
    if isinstance(error.__cause__, ClientError):
        assert error.__cause__.response["Error"]["Code"] == case.error_code
        assert isinstance(error, ClientError) and error.response == error.__cause__.response
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [str(error)]
    assert emf.total("LambdaInvokeErrors", key_scheme="composite") == 1
    if "slow" not in case.script and "function-error" not in case.script:
        # Refused calls never arrived. (A timed-out call may have arrived anyway -- the
        # caller still gets the error, so it is not lost, at worst retried and deduped.)
        assert not accepted


def _check_invalid_id(case: Case, server: FaultServer, metrics: EmfCapture) -> None:
    """An invalid id raises PartitionKeyError naming the field; nothing reaches AWS.

    The handler refuses it where it enters (the property setter, as the engine assigns ids
    one by one); a pair whose parts are each valid but not together (a part without an
    endpoint) is refused at the first call. The key rule itself refuses the raw pair before
    the flag is even asked.
    """
    endpoint, part = case.ids
    bad = endpoint if case.bad_field == "endpoint_id" else part

    with pytest.raises(PartitionKeyError) as caught:
        decision.decide(endpoint, part, run_uuid="run-f")
    _names(caught.value, case.bad_field, bad)
    assert metrics.documents() == []  # refused before the flag was evaluated

    handler = _handler(aws_lambda=server.lambda_client())
    with pytest.raises(PartitionKeyError) as caught:
        # The engine's order: ids, then run and connection, then calls. It stops at the
        # first exception, as any caller does that does not swallow it.
        handler.endpoint_id = endpoint
        handler.part_id = part
        handler.run = dict(FAULT_RUN)
        handler.connection_id = "conn-f"
        handler.invoke_async_funct("update_run")
    _names(caught.value, case.bad_field, bad)
    assert server.requests == []


def _names(error: PartitionKeyError, field_name: str, value: Any) -> None:
    assert isinstance(error, ValueError)
    assert field_name in str(error)
    if value not in (None, ""):
        assert repr(value) in str(error)  # the message shows the offending value


def _check_flag_source_fault(
    case: Case, lambda_server: FaultServer, metrics: EmfCapture, tmp_path: Path
) -> None:
    """A broken flag source keeps the last good flags; the next good version is picked up.

    Three runs through one long-lived handler: before the fault (composite, version 1),
    during it (still composite, version 1: the last good flags, not the legacy code
    default) and after the repair (legacy, version 2). Every call of every run reached the
    Lambda stand-in, each with its run's one key.
    """
    name = case.id.split(":", 1)[1]
    s3 = FaultServer() if case.path == "flag-s3" else None
    try:
        if s3 is None:
            path = tmp_path / "dev.flagd.json"
            path.write_bytes(GOOD)
            provider = FlagFileProvider(path, min_interval=0, refresh_wait=PATIENT_TIMEOUT)
            break_it: Callable[[], None] = lambda: _break_file(path, name)  # noqa: E731
            repair: Callable[[], None] = lambda: _repair_file(path)  # noqa: E731
        else:
            s3.objects[("flags", "dev.flagd.json")] = GOOD
            s3.bucket_owner = "111122223333"
            timeout = READ_TIMEOUT if name == "slow" else PATIENT_TIMEOUT
            provider = FlagFileProvider(
                "s3://flags/dev.flagd.json",
                s3_client=s3.s3_client(read_timeout=timeout),
                min_interval=0,
                # Each run waits for its check: the table is about what a check finds.
                refresh_wait=PATIENT_TIMEOUT,
                timeout=PATIENT_TIMEOUT,
                expected_bucket_owner="111122223333",
            )
            break_it = lambda: _break_s3(s3, name)  # noqa: E731
            repair = lambda: _repair_s3(s3)  # noqa: E731
        api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
        handler = _handler(aws_lambda=lambda_server.lambda_client(), rollout_phase="dev")
        handler.endpoint_id, handler.part_id = ENDPOINT, PART
        handler.connection_id = "conn-f"

        expected = {"run-1": KEY, "run-2": KEY, "run-3": ENDPOINT}
        _drive(handler, "run-1")
        break_it()
        _drive(handler, "run-2")
        assert provider.fault is not None, "the fault was noticed"
        assert provider.version == "1", "the last good flags are still served"
        repair()
        _drive(handler, "run-3")
        assert provider.fault is None and provider.version == "2", "recovered by itself"
    finally:
        if s3 is not None:
            s3.close()

    lambda_server.settle()
    by_run: dict[str, list[str | None]] = {}
    for request in lambda_server.requests:
        run_uuid = _run_of(request.body)
        by_run.setdefault(run_uuid, []).append(request.key)
    # Every call arrived, each run under exactly its one expected key.
    assert {run: set(keys) for run, keys in by_run.items()} == {
        run: {key} for run, key in expected.items()
    }
    assert all(len(keys) == CALLS_PER_RUN for keys in by_run.values())
    assert all(r.accepted for r in lambda_server.requests)
    versions = [d.get("flag_set_version") for d in metrics.documents() if "KeyDecisions" in d]
    assert versions == ["1", "1", "2"]
    assert metrics.total("FlagEvaluationErrors") == 0  # served from the last good flags


CALLS_PER_RUN = 5


def _drive(handler: AIAgentEventHandler, run_uuid: str) -> None:
    handler.run = {"run_uuid": run_uuid, "updated_by": "tester", "thread": {"thread_uuid": "t"}}
    handler.invoke_async_funct("create_run")
    for index in range(CALLS_PER_RUN - 3):
        handler.send_data_to_stream(index=index, chunk_delta="x")
    handler.send_data_to_stream(index=CALLS_PER_RUN - 3, is_message_end=True)
    handler.invoke_async_funct("update_run")


def _run_of(body: dict[str, Any]) -> str:
    params = body.get("params") or {}
    if "run_uuid" in params:
        return str(params["run_uuid"])
    data = json.loads(params["data"])  # a stream chunk: the run is in its message group
    return str(data["message_group_id"]).split("-", 2)[-1]


def _break_file(path: Path, name: str) -> None:
    if name == "missing":
        path.unlink()
    elif name == "directory":
        path.unlink()
        path.mkdir()
    elif name == "permission-denied":
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode")
        path.chmod(0)
    else:
        # In place, truncating: what a careless editor or a crashed writer leaves behind.
        with open(path, "wb") as fh:
            fh.write(BAD_CONTENT[name])


def _repair_file(path: Path) -> None:
    if path.is_dir():
        path.rmdir()
    if path.exists():
        path.chmod(0o644)
    # Atomic replace, as the CLI writes.
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(REPAIRED)
    os.replace(tmp, path)


def _break_s3(server: FaultServer, name: str) -> None:
    if name in BAD_CONTENT:
        server.objects[("flags", "dev.flagd.json")] = BAD_CONTENT[name]
    elif name == "deleted":
        del server.objects[("flags", "dev.flagd.json")]
    elif name == "wrong-owner":
        server.bucket_owner = "999988887777"  # the bucket was re-created by someone else
    else:
        server.default = name  # every request fails this way until repaired


def _repair_s3(server: FaultServer) -> None:
    server.default = "ok"
    server.bucket_owner = "111122223333"
    server.objects[("flags", "dev.flagd.json")] = REPAIRED


STREAM_CHUNKS = 13  # 12 chunks and the message end: more than one SQS batch


def _check_stream_fault(case: Case, server: FaultServer, metrics: EmfCapture) -> None:
    """Background stream delivery: every chunk arrives or is reported lost at message end.

    The report the handler raises at message end must agree with the server's own record:
    chunks that never arrived == chunks reported failed == ``StreamChunksFailed``.
    """
    server.script.extend(case.script)
    handler = AIAgentEventHandler(
        logging.getLogger("test.faults"),
        {"agent_name": "t"},
        aws_lambda=server.lambda_client(),
        stream_dispatch="background",
        rollout_phase="dev",
    )
    if case.path == "stream-sqs":
        handler.task_queue = server.queue()
    handler.endpoint_id, handler.part_id = ENDPOINT, PART
    handler.run = dict(FAULT_RUN)
    handler.connection_id = "conn-f"
    error: StreamDeliveryError | None = None
    try:
        for index in range(STREAM_CHUNKS - 1):
            handler.send_data_to_stream(index=index, chunk_delta=f"chunk-{index}")
        handler.send_data_to_stream(index=STREAM_CHUNKS - 1, is_message_end=True)
    except StreamDeliveryError as err:
        error = err
    server.settle()

    assert {r.key for r in server.requests} == {KEY}  # nothing sent with a wrong key
    arrived = {json.loads(r.body_params()["data"])["index"] for r in server.accepted()}
    lost = STREAM_CHUNKS - len(arrived)
    if case.delivered:
        assert error is None, error
        assert arrived == set(range(STREAM_CHUNKS))
        assert metrics.total("StreamChunksFailed") == 0
        return
    assert error is not None, "the message end reports the loss instead of pretending success"
    assert lost > 0
    assert error.report.failed + error.report.pending == lost
    assert metrics.total("StreamChunksFailed", phase="dev", key_scheme="composite") == lost
    assert f"{lost} chunks not delivered" in str(error)
