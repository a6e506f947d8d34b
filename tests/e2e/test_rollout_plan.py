"""End to end: the rollout plan's phases over real HTTP, down to the table rows.

Everything talks HTTP to a ``ThreadedMotoServer`` on 127.0.0.1, in a process of its own:

* the live flag files are S3 objects (``s3://flags/<phase>.flagd.json``), read by a
  :class:`FlagFileProvider` and changed with the operators' CLI (``ai-agent-rollout``);
* handlers send every call -- DB operations and stream chunks -- to an SQS FIFO task queue;
* a receiver stand-in consumes that queue as the real task Lambda would and applies each
  message to a DynamoDB table, keyed by the message's routing key (``pk``) and the record
  (``sk``: run, funct, chunk index), idempotent on redelivery.

The test drives the plan's phases -- dev on; staging by allow-list, then 25 %, then 100 %;
production 10 %, a rollback in the middle of streaming runs, then forward again -- and
checks, from the table itself: each run's records sit under exactly one key (the key its
handler decided), every record sent arrived (count per run), endpoints moved only in the
intended direction at each step, and after the rollback new runs wrote legacy keys.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from openfeature import api

from ai_agent_handler import FLAG_DOMAIN, AIAgentEventHandler, FlagFileProvider
from ai_agent_handler.ops.cli import main as rollout_cli
from tests.support import FLAGS_DIR, REGION
from tests.support.aws import create_task_table

BUCKET = "flags"
TABLE = "agent_records"
CHUNKS = 6  # per run, plus the message end

DEV = [f"dev-ep-{n}" for n in range(4)]
STAGING = [f"stg-ep-{n:02d}" for n in range(20)]
PRODUCTION = [f"prd-ep-{n:02d}" for n in range(40)]


# -- the local AWS ----------------------------------------------------------------------
#: moto's threaded server in a process of its own, so that its work and the test's run on
#: two cores. It prints its URL, then serves until its standard input closes. Two of moto's
#: lookups that give the same answer all run long are made once: the list of its service
#: packages (read from disk for every request) and the snake_case names of the SQS queue
#: attributes (spelled out for every message sent or received).
MOTO_SERVER = """
import functools, logging, os, sys
from moto import backends
from moto.server import ThreadedMotoServer
from moto.sqs import models as sqs_models

modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: modules
sqs_models.camelcase_to_underscores = functools.cache(sqs_models.camelcase_to_underscores)
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()
os._exit(0)
"""


@dataclass
class Aws:
    url: str
    s3: Any
    queue: Any
    table: Any


@pytest.fixture
def moto_process() -> Iterator[str]:
    """The URL of an empty AWS served by :data:`MOTO_SERVER`."""
    server = subprocess.Popen(
        [sys.executable, "-c", MOTO_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), f"moto's server did not start (exit {server.poll()})"
        yield url
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def local_aws(moto_process: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """S3 with the phase files, the FIFO task queue and the receiver's table, over HTTP."""
    moto_url = moto_process
    # The CLI builds its own S3 client: point every default client at the local AWS.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket=BUCKET)
    for phase in ("dev", "staging", "production"):
        name = f"{phase}.flagd.json"
        s3.put_object(Bucket=BUCKET, Key=name, Body=(FLAGS_DIR / name).read_bytes())
    sqs = boto3.resource("sqs", region_name=REGION, endpoint_url=moto_url)
    queue = sqs.create_queue(
        QueueName="agent-tasks.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )
    dynamodb = boto3.resource("dynamodb", region_name=REGION, endpoint_url=moto_url)
    table = create_task_table(dynamodb, TABLE)
    return Aws(moto_url, s3, queue, table)


# -- the receiver stand-in ----------------------------------------------------------------
class Receiver(threading.Thread):
    """Consumes the task queue and writes each message to DynamoDB under its routing key."""

    def __init__(self, queue: Any, table: Any) -> None:
        super().__init__(daemon=True)
        self.queue, self.table = queue, table
        self.stop = threading.Event()
        self.applied = 0
        self.progress = threading.Condition()  # notified as messages are applied, and at the end
        self.problems: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                messages = self.queue.receive_messages(
                    MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
                )
                if messages:
                    self._apply(messages)
        except BaseException as err:
            self.error = err
        finally:
            with self.progress:
                self.progress.notify_all()

    def _apply(self, messages: list[Any]) -> None:
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for message in messages:
                attributes = message.message_attributes or {}
                key = attributes["endpoint_id"]["StringValue"]
                funct = attributes["funct"]["StringValue"]
                scheme = attributes["key_scheme"]["StringValue"]
                if scheme != ("composite" if "#" in key else "legacy"):
                    self.problems.append(f"key_scheme {scheme} on key {key}")
                params = json.loads(message.body)["params"]
                if funct == "send_data_to_stream":
                    data = json.loads(params["data"])
                    group = data["message_group_id"]
                    run_uuid = group[len(params["connection_id"]) + 1 :]
                    sort_key = f"{run_uuid}#chunk#{data['index']:04d}"
                else:
                    run_uuid = params["run_uuid"]
                    sort_key = f"{run_uuid}#{funct}"
                batch.put_item(
                    Item={"pk": key, "sk": sort_key, "run_uuid": run_uuid, "funct": funct}
                )
        self.queue.delete_messages(
            Entries=[
                {"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(messages)
            ]
        )
        with self.progress:
            self.applied += len(messages)
            self.progress.notify_all()

    def wait_for(self, count: int, deadline: float = 60.0) -> None:
        """Until ``count`` messages were applied (the deadline only guards against a hang)."""
        with self.progress:
            self.progress.wait_for(
                lambda: self.applied >= count or self.error is not None, timeout=deadline
            )


# -- runs ---------------------------------------------------------------------------------
@dataclass
class Run:
    run_uuid: str
    endpoint: str
    step: str
    key: str = ""  # the routing key the handler decided
    sent: int = 0  # records sent (each one a message, each one a row)


class Rollout:
    """The phases of the plan, a step at a time, with the bookkeeping the checks need."""

    def __init__(self, aws: Aws, receiver: Receiver) -> None:
        self.aws, self.receiver = aws, receiver
        self.runs: list[Run] = []
        self.phase = ""
        self._count = 0

    def enter_phase(self, phase: str) -> None:
        """A fleet of this phase: a provider on the phase's live S3 file."""
        self.phase = phase
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=self.aws.url)
        # Every run checks S3 and waits for the answer: the plan is about what each run
        # sends after each CLI step, not about how soon a fleet notices.
        provider = FlagFileProvider(
            f"s3://{BUCKET}/{phase}.flagd.json", s3_client=s3, min_interval=0, refresh_wait=10
        )
        api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)

    def cli(self, *args: str) -> None:
        assert rollout_cli(["--file", f"s3://{BUCKET}/{self.phase}.flagd.json", *args]) == 0

    def handler(self) -> AIAgentEventHandler:
        handler = AIAgentEventHandler(
            logging.getLogger("test.e2e"), {"agent_name": "e2e"}, rollout_phase=self.phase
        )
        handler.task_queue = self.aws.queue
        return handler

    def start(self, endpoint: str, step: str) -> tuple[Run, AIAgentEventHandler]:
        self._count += 1
        run = Run(f"{step}-{self._count:04d}", endpoint, step)
        handler = self.handler()
        handler.endpoint_id = endpoint
        handler.part_id = f"tenant-of-{endpoint}"
        handler.run = {
            "run_uuid": run.run_uuid,
            "updated_by": "e2e",
            "thread": {"thread_uuid": "t"},
        }
        handler.connection_id = f"conn-{self._count}"
        handler.invoke_async_funct("create_run")
        run.sent += 1
        assert handler.key_decision is not None
        run.key = handler.key_decision.routing_key
        self.runs.append(run)
        return run, handler

    @staticmethod
    def stream(run: Run, handler: AIAgentEventHandler, first: int, last: int) -> None:
        for index in range(first, last):
            handler.send_data_to_stream(index=index, chunk_delta=f"token {index}")
            run.sent += 1

    @staticmethod
    def finish(run: Run, handler: AIAgentEventHandler) -> None:
        handler.send_data_to_stream(index=CHUNKS, is_message_end=True)
        handler.invoke_async_funct("update_run", status="completed")
        run.sent += 2

    def step(self, name: str, endpoints: list[str]) -> dict[str, str]:
        """One complete run per endpoint; returns endpoint -> key scheme used."""
        out: dict[str, str] = {}
        for endpoint in endpoints:
            run, handler = self.start(endpoint, name)
            self.stream(run, handler, 0, CHUNKS)
            self.finish(run, handler)
            out[endpoint] = "composite" if "#" in run.key else "legacy"
        self.settle()
        return out

    def settle(self) -> None:
        self.receiver.wait_for(sum(run.sent for run in self.runs))

    def rows(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = self.aws.table.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def composite(step: dict[str, str]) -> set[str]:
    return {endpoint for endpoint, scheme in step.items() if scheme == "composite"}


@pytest.mark.slow
def test_rollout_plan_end_to_end(local_aws: Aws) -> None:
    aws = local_aws
    receiver = Receiver(aws.queue, aws.table)
    receiver.start()
    plan = Rollout(aws, receiver)
    try:
        # Dev: the composite key for every endpoint.
        plan.enter_phase("dev")
        dev = plan.step("dev", DEV)
        assert composite(dev) == set(DEV)

        # Staging: legacy, then an allow-list, then 25 %, then 100 %.
        plan.enter_phase("staging")
        before = plan.step("stg-legacy", STAGING)
        assert composite(before) == set()
        plan.cli("allow", STAGING[0], STAGING[1])
        allowed = plan.step("stg-allow", STAGING)
        assert composite(allowed) == {STAGING[0], STAGING[1]}
        plan.cli("percent", "25")
        quarter = plan.step("stg-25", STAGING)
        assert composite(allowed) <= composite(quarter)  # only legacy -> composite moves
        plan.cli("percent", "100")
        full = plan.step("stg-100", STAGING)
        assert composite(quarter) <= composite(full) == set(STAGING)

        # Production: 10 %, ...
        plan.enter_phase("production")
        plan.cli("percent", "10")
        ten = plan.step("prd-10", PRODUCTION)
        c10 = composite(ten)
        assert c10, "10 % of these endpoints is not nobody"
        assert len(c10) < len(PRODUCTION) // 2

        # ... a rollback while runs are streaming: they keep their key to the end ...
        streaming = [plan.start(endpoint, "prd-inflight") for endpoint in PRODUCTION[:12]]
        for run, handler in streaming:
            plan.stream(run, handler, 0, CHUNKS // 2)
        plan.cli("rollback")
        after_rollback = plan.step("prd-rollback", PRODUCTION)
        for run, handler in streaming:
            plan.stream(run, handler, CHUNKS // 2, CHUNKS)
            plan.finish(run, handler)
        plan.settle()
        assert composite(after_rollback) == set()  # new runs wrote legacy keys
        inflight = {run.endpoint: run.key for run, _ in streaming}
        assert {e for e, k in inflight.items() if "#" in k} == c10 & set(inflight)

        # ... then forward again: the same endpoints, since bucketing is stable.
        plan.cli("percent", "10")
        again = plan.step("prd-forward", PRODUCTION)
        assert composite(again) == c10
    finally:
        receiver.stop.set()
        receiver.join(timeout=10)
    assert receiver.error is None, receiver.error
    assert receiver.problems == []

    # From the table: each run under exactly one key, the one decided; nothing lost.
    rows = plan.rows()
    keys_by_run: dict[str, set[str]] = defaultdict(set)
    count_by_run: dict[str, int] = defaultdict(int)
    for row in rows:
        keys_by_run[row["run_uuid"]].add(row["pk"])
        count_by_run[row["run_uuid"]] += 1
    expected_rows = 2 + CHUNKS + 1
    for run in plan.runs:
        assert keys_by_run[run.run_uuid] == {run.key}, run
        assert run.sent == expected_rows
        assert count_by_run[run.run_uuid] == run.sent, run
    assert len(keys_by_run) == len(plan.runs)
    sent = sum(run.sent for run in plan.runs)
    assert len(rows) == sent
    print(
        f"\ne2e: {len(plan.runs)} runs, {sent} records sent, {len(rows)} written, "
        f"{sent - len(rows)} lost; messages applied {receiver.applied}"
    )
