"""The backfill on moto's in-process DynamoDB: tables shaped like the engine's (partition key
``partition_key``, sort key, local secondary indexes on ``endpoint_id`` and ``part_id``) and
the old ones (``endpoint_id``), and the example receiver's table (``pk``, both keys).

Faults are injected at the boto3 edge (a ``before-call`` handler answering for DynamoDB);
time is an injected clock, so no test sleeps. Processes (SIGKILL, two workers) are in
``test_backfill_processes.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from ai_agent_handler import BackfillError
from ai_agent_handler.ops.backfill import Checkpoint, Job, Worker, mapping_rule, target_item
from ai_agent_handler.ops.backfill_io import (
    CheckpointStore,
    read_backfilled,
    run_backfill,
    verify_backfill,
)
from tests.support import BUCKET, REGION, tables
from tests.support.cli import Runner

JOB = Job("agents-v1", "agents", segments=3)
PARTS = tables.parts(6)
RULE = mapping_rule(PARTS)


@pytest.fixture
def ddb(aws: None) -> Any:
    """A legacy table of 300 items over 6 endpoints (the first 30 with a binary, a set, a map
    and a list each), and an empty engine-shaped one."""
    client = boto3.client("dynamodb", region_name=REGION)
    tables.create_legacy(client, JOB.source_table)
    tables.create_engine(client, JOB.target_table)
    tables.put_all(client, JOB.source_table, tables.legacy_items(30, endpoints=6))
    plain = tables.legacy_items(300, endpoints=6, rich=False)
    tables.put_all(client, JOB.source_table, (item for n, item in enumerate(plain) if n >= 30))
    return client


def expected_targets(client: Any, job: Job = JOB) -> dict[tuple[str, str], dict[str, Any]]:
    """What the target must hold: every source item under its composite key."""
    out = {}
    for item in tables.scan_all(client, job.source_table):
        legacy = item[job.source_key]["S"]
        if legacy in PARTS:
            copy = target_item(item, job, PARTS[legacy])
            out[(copy[job.target_key]["S"], copy["sk"]["S"])] = copy
    return out


def held(client: Any, table: str, key: str = "partition_key") -> dict[tuple[str, str], Any]:
    return {(i[key]["S"], i["sk"]["S"]): i for i in tables.scan_all(client, table)}


class Calls:
    """The DynamoDB operations a client sent, and answers injected in their place."""

    def __init__(self, client: Any) -> None:
        self.sent: list[str] = []
        self.faults: dict[str, list[str]] = {}
        #: Called with each operation's name and API parameters before it is sent.
        self.before: Callable[[str, dict[str, Any]], None] | None = None
        client.meta.events.register_first("before-call.dynamodb.*", self._before_call)
        client.meta.events.register("before-parameter-build.dynamodb.*", self._parameters)

    def _parameters(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if self.before is not None:
            self.before(model.name, params)

    def fail(self, operation: str, *codes: str) -> None:
        """Answer the next ``len(codes)`` calls of ``operation`` with these errors."""
        self.faults.setdefault(operation, []).extend(codes)

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        name = model.name
        queued = self.faults.get(name)
        if queued:
            code = queued.pop(0)
            body = {"Error": {"Code": code, "Message": "injected"}}
            body["ResponseMetadata"] = {"HTTPStatusCode": 400}
            return AWSResponse("https://dynamodb", 400, {}, None), body
        self.sent.append(name)
        return None

    def count(self, operation: str) -> int:
        return self.sent.count(operation)


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.naps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def backfill(client: Any, tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("checkpoint", str(tmp_path / "checkpoints"))
    return run_backfill(kw.pop("job", JOB), kw.pop("rule", RULE), dynamodb_client=client, **kw)


# -- the copy --------------------------------------------------------------------------------


def test_every_item_lands_under_its_composite_key_with_the_ids(ddb: Any, tmp_path: Path) -> None:
    report = backfill(ddb, tmp_path)
    assert report.done
    assert (report.counts.scanned, report.counts.copied) == (300, 300)
    assert (report.counts.already, report.counts.conflicts, report.counts.unmapped) == (0, 0, 0)
    assert held(ddb, JOB.target_table) == expected_targets(ddb)
    one = held(ddb, JOB.target_table)[("aws-prod-1#tenant-1", "agent#000001")]
    assert one["endpoint_id"] == {"S": "aws-prod-1"} and one["part_id"] == {"S": "tenant-1"}
    assert one["blob"] == {"B": (1).to_bytes(4, "big")}  # binaries, sets, maps carried over
    assert report.counts.endpoints == {f"aws-prod-{n % 2}#tenant-{n}": 50 for n in range(6)}
    assert report.counts.read_units > 0 and report.counts.write_units >= 300


def test_the_local_secondary_indexes_find_the_copies(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path)
    answer = ddb.query(
        TableName=JOB.target_table,
        IndexName="part_id-index",
        KeyConditionExpression="partition_key = :k AND part_id = :p",
        ExpressionAttributeValues={":k": {"S": "aws-prod-0#tenant-2"}, ":p": {"S": "tenant-2"}},
    )
    assert answer["Count"] == 50


def test_a_finished_job_run_again_reads_and_writes_nothing(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path)
    calls = Calls(ddb)
    again = backfill(ddb, tmp_path)
    assert again.done and again.counts.copied == 300  # the checkpoints' counts
    assert calls.count("Scan") == calls.count("PutItem") == 0


def test_checkpoints_say_where_each_segment_stands(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path, page_size=40)
    store = CheckpointStore(str(tmp_path / "checkpoints"), JOB)
    points = [store.checkpoint(segment) for segment in range(3)]
    assert all(point.done and point.last_key is None for point in points)
    assert sum(point.counts.copied for point in points) == 300
    names = sorted(p.name for p in (tmp_path / "checkpoints" / JOB.name).glob("segment-*"))
    assert names == ["segment-0-of-3.json", "segment-1-of-3.json", "segment-2-of-3.json"]


def test_a_run_stopped_between_a_write_and_its_checkpoint_copies_each_item_once(
    ddb: Any, tmp_path: Path
) -> None:
    calls = Calls(ddb)
    writes = []

    def crash_at_the_150th_write(name: str, params: dict[str, Any]) -> None:
        if name == "PutItem":
            writes.append(params["Item"])
            if len(writes) == 150:
                raise KeyboardInterrupt  # as a kill would: nothing after it runs

    calls.before = crash_at_the_150th_write
    with pytest.raises(KeyboardInterrupt):
        backfill(ddb, tmp_path, page_size=40, write_threads=1)
    calls.before = None
    stored_before = len(tables.scan_all(ddb, JOB.target_table))
    assert 100 < stored_before < 150

    report = backfill(ddb, tmp_path, page_size=40)
    assert report.done
    assert held(ddb, JOB.target_table) == expected_targets(ddb)
    # The page being written when the run stopped was read again: its items written before
    # the stop are found there (already), none is written twice.
    assert report.counts.already >= 1
    assert report.counts.copied + report.counts.already == 300
    assert report.counts.conflicts == 0
    # Every PutItem sent: one per item that succeeded, and the refused ones of the page read
    # again.
    assert calls.count("PutItem") == 300 + report.counts.already


def test_live_items_under_the_composite_key_are_never_overwritten(ddb: Any, tmp_path: Path) -> None:
    live = {
        "partition_key": {"S": "aws-prod-1#tenant-1"},
        "sk": {"S": "agent#000295"},  # item 295 maps to tenant-1; written by live traffic
        "name": {"S": "renamed by the tenant"},
        "endpoint_id": {"S": "aws-prod-1"},
        "part_id": {"S": "tenant-1"},
    }
    ddb.put_item(TableName=JOB.target_table, Item=live)
    report = backfill(ddb, tmp_path)
    assert report.counts.conflicts == 1 and report.counts.copied == 299
    assert report.counts.samples == [
        "conflict: aws-prod-1#tenant-1 (from tenant-1) holds another item"
    ]
    assert held(ddb, JOB.target_table)[("aws-prod-1#tenant-1", "agent#000295")] == live


def test_live_writes_during_the_backfill_win(ddb: Any, tmp_path: Path) -> None:
    """A tenant writes under the composite key while the copy runs: after the first page of
    every segment, an item the copy has not reached yet."""
    targets = expected_targets(ddb)
    written: dict[tuple[str, str], Any] = {}

    def tenant_writes(segment: int, point: Checkpoint) -> None:
        stored = held(ddb, JOB.target_table)
        for key, item in targets.items():
            if key not in written and key not in stored:
                written[key] = {**item, "name": {"S": f"live write after page of {segment}"}}
                ddb.put_item(TableName=JOB.target_table, Item=written[key])
                return

    report = backfill(ddb, tmp_path, page_size=60, after_page=tenant_writes)
    assert written and report.counts.conflicts == len(written)
    stored = held(ddb, JOB.target_table)
    for key, item in written.items():
        assert stored[key] == item
    assert len(stored) == 300


def test_an_unmapped_endpoint_is_reported_and_skipped(ddb: Any, tmp_path: Path) -> None:
    partial = {k: v for k, v in PARTS.items() if k != "tenant-4"}
    report = backfill(ddb, tmp_path, rule=mapping_rule(partial))
    assert report.counts.unmapped == 50 and report.counts.unmapped_keys == {"tenant-4": 50}
    assert report.counts.copied == 250
    assert not any(k[0].endswith("#tenant-4") for k in held(ddb, JOB.target_table))


def test_a_dry_run_counts_per_endpoint_and_writes_nothing(ddb: Any, tmp_path: Path) -> None:
    calls = Calls(ddb)
    partial = {k: v for k, v in PARTS.items() if k != "tenant-0"}
    report = backfill(ddb, tmp_path, rule=mapping_rule(partial), dry_run=True, checkpoint=None)
    assert report.dry_run and report.done
    assert report.counts.endpoints == {f"aws-prod-{n % 2}#tenant-{n}": 50 for n in range(1, 6)}
    assert report.counts.unmapped_keys == {"tenant-0": 50}
    assert calls.count("PutItem") == 0 and tables.scan_all(ddb, JOB.target_table) == []
    assert not (tmp_path / "checkpoints").exists()


def test_the_same_table_gets_its_legacy_items_under_composite_keys(
    aws: None, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    tables.create_receiver(client, "tasks")
    items = list(tables.legacy_items(60, endpoints=6, key="pk", rich=False))
    already = {"pk": {"S": "aws-prod-0#tenant-0"}, "sk": {"S": "run#new"}}
    tables.put_all(client, "tasks", [*items, already])
    job = Job("tasks", "tasks", "pk", "pk", segments=2)
    report = backfill(client, tmp_path, job=job)
    assert (report.counts.copied, report.counts.composite) >= (60, 1)
    stored = held(client, "tasks", "pk")
    assert len(stored) == 60 + 60 + 1  # the legacy items stay: receivers' fallback still reads
    for item in items:
        part = PARTS[item["pk"]["S"]]
        assert stored[(f"{part[0]}#{part[1]}", item["sk"]["S"])] == target_item(item, job, part)


def test_the_example_receiver_finds_backfilled_runs_without_the_fallback(
    aws: None, tmp_path: Path
) -> None:
    from ai_agent_handler.receiver import ReceiverMetrics, route
    from examples.agent_task_receiver import TaskFunctions

    client = boto3.client("dynamodb", region_name=REGION)
    tables.create_receiver(client, "tasks")
    table = boto3.resource("dynamodb", region_name=REGION).Table("tasks")
    table.put_item(Item={"pk": "acme-prod", "sk": "run#r1", "status": "done"})
    job = Job("tasks", "tasks", "pk", "pk")
    backfill(client, tmp_path, job=job, rule=mapping_rule({"acme-prod": ("aws-prod", "acme")}))

    import io

    import ai_agent_handler.receiver as receiver

    lines = io.StringIO()
    original = receiver._metrics
    receiver._metrics = ReceiverMetrics(stream=lines, enabled=True)
    try:
        routing = route({"endpoint_id": "aws-prod#acme", "key_scheme": "composite"})
        run = TaskFunctions(table, connections=None).get_run(routing, run_uuid="r1")
    finally:
        receiver._metrics = original
    assert run["status"] == "done" and run["pk"] == "aws-prod#acme"
    emitted = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [(e["LegacyFallbackReads"], e["LegacyFallbackHits"]) for e in emitted] == [(0, 0)]


# -- capacity and throttling ----------------------------------------------------------------------


def test_throttled_requests_are_sent_again_after_a_backoff(ddb: Any, tmp_path: Path) -> None:
    calls, clock = Calls(ddb), Clock()
    calls.fail("Scan", "ProvisionedThroughputExceededException", "ThrottlingException")
    calls.fail("PutItem", *["ProvisionedThroughputExceededException"] * 3, "RequestLimitExceeded")
    # One writer thread: the backoffs follow each other in the order the faults come.
    report = backfill(
        ddb, tmp_path, clock=clock, sleep=clock.sleep, draw=lambda: 1.0, write_threads=1
    )
    assert report.counts.throttled == 6 and report.counts.copied == 300
    assert held(ddb, JOB.target_table) == expected_targets(ddb)
    assert sorted(clock.naps) == pytest.approx(sorted([0.05, 0.1, 0.05, 0.1, 0.2, 0.4]))


def test_throttling_that_does_not_stop_stops_the_run_with_its_checkpoint(
    ddb: Any, tmp_path: Path
) -> None:
    calls, clock = Calls(ddb), Clock()
    calls.fail("PutItem", *["ProvisionedThroughputExceededException"] * 4)
    with pytest.raises(BackfillError, match="refused put_item for capacity 4 times in a row"):
        backfill(ddb, tmp_path, clock=clock, sleep=clock.sleep, write_threads=1,
                 max_throttle_retries=3, page_size=50)  # fmt: skip
    report = backfill(ddb, tmp_path, page_size=50)
    assert report.done and held(ddb, JOB.target_table) == expected_targets(ddb)


@pytest.mark.parametrize(("limit", "workers"), [(20.0, 1), (50.0, 1), (40.0, 2)])
def test_a_write_limit_holds_the_consumed_units_to_it(
    ddb: Any, tmp_path: Path, limit: float, workers: int
) -> None:
    clock = Clock()
    worker = Worker(0, workers)
    report = backfill(
        ddb,
        tmp_path,
        clock=clock,
        sleep=clock.sleep,
        max_write_units=limit,
        worker=worker,
        write_threads=1,  # the injected clock is one timeline: one writer at a time
        job=Job(JOB.source_table, JOB.target_table, segments=2),
    )
    share = limit / workers
    rate = report.counts.write_units / clock.now
    assert report.counts.write_units >= 100
    assert share * 0.9 <= rate <= share * 1.1


def test_a_read_limit_holds_the_scans_to_it(ddb: Any, tmp_path: Path) -> None:
    clock = Clock()
    report = backfill(ddb, tmp_path, clock=clock, sleep=clock.sleep, max_read_units=1.0,
                      page_size=10, dry_run=True, checkpoint=None)  # fmt: skip
    assert report.counts.read_units / clock.now == pytest.approx(1.0, rel=0.1)


# -- verification ------------------------------------------------------------------------------


def test_verify_after_a_backfill_is_complete_and_recorded(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path)
    found = verify_backfill(
        JOB, RULE, checkpoint=str(tmp_path / "checkpoints"), dynamodb_client=ddb
    )
    assert found.complete and found.to_json()["items"] == 300
    (record,) = read_backfilled(str(tmp_path / "checkpoints"))
    assert record.complete and record.whole and record.items == 300
    assert set(record.endpoints) == {f"aws-prod-{n % 2}#tenant-{n}" for n in range(6)}


def test_verify_catches_a_planted_difference_and_a_missing_item(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path)
    ddb.update_item(
        TableName=JOB.target_table,
        Key={"partition_key": {"S": "aws-prod-1#tenant-3"}, "sk": {"S": "agent#000003"}},
        UpdateExpression="SET #size = :n",
        ExpressionAttributeNames={"#size": "size"},
        ExpressionAttributeValues={":n": {"N": "7"}},
    )
    ddb.delete_item(
        TableName=JOB.target_table,
        Key={"partition_key": {"S": "aws-prod-0#tenant-4"}, "sk": {"S": "agent#000010"}},
    )
    found = verify_backfill(
        JOB, RULE, checkpoint=str(tmp_path / "checkpoints"), dynamodb_client=ddb
    )
    assert not found.complete
    assert (found.found.missing, found.found.different) == (1, 1)
    assert sorted(found.found.differences) == [
        "aws-prod-0#tenant-4/agent#000010: missing",
        "aws-prod-1#tenant-3/agent#000003: different (size)",
    ]
    endpoints = found.found.endpoints()
    assert not endpoints["aws-prod-1#tenant-3"]["complete"]
    assert endpoints["aws-prod-1#tenant-5"]["complete"]
    (record,) = read_backfilled(str(tmp_path / "checkpoints"))
    assert not record.complete and "1 missing, 1 different" in record.summary()


def test_a_second_backfill_repairs_a_missing_copy(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path)
    key = {"partition_key": {"S": "aws-prod-0#tenant-4"}, "sk": {"S": "agent#000010"}}
    ddb.delete_item(TableName=JOB.target_table, Key=key)
    report = backfill(ddb, tmp_path, checkpoint=str(tmp_path / "second"))
    assert (report.counts.copied, report.counts.already) == (1, 299)
    assert verify_backfill(JOB, RULE, checkpoint=None, dynamodb_client=ddb).complete


# -- checkpoints on S3 and between workers ---------------------------------------------------------


def test_checkpoints_on_s3(ddb: Any, tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    root = f"s3://{BUCKET}/backfill"
    report = backfill(ddb, tmp_path, checkpoint=root, page_size=70)
    assert report.done and report.checkpoint == f"{root}/{JOB.name}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == [f"backfill/{JOB.name}/segment-{n}-of-3.json" for n in range(3)]
    verify_backfill(JOB, RULE, checkpoint=root, dynamodb_client=ddb)
    (record,) = read_backfilled(root)
    assert record.complete and record.whole


def test_two_writers_of_one_s3_checkpoint_do_not_both_go_on(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    root = f"s3://{BUCKET}/backfill"
    one, other = CheckpointStore(root, JOB), CheckpointStore(root, JOB)
    first, second = one.checkpoint(0), other.checkpoint(0)
    one.save(first)
    with pytest.raises(BackfillError, match="written by another worker meanwhile"):
        other.save(second)


def test_a_segment_being_copied_on_this_machine_is_refused(tmp_path: Path) -> None:
    one, other = CheckpointStore(str(tmp_path), JOB), CheckpointStore(str(tmp_path), JOB)
    with (
        one.claim("segment-0-of-3.json"),
        pytest.raises(BackfillError, match="being copied by another worker"),
        other.claim("segment-0-of-3.json"),
    ):
        pass
    with other.claim("segment-0-of-3.json"):
        pass


def test_a_checkpoint_of_another_job_is_refused(ddb: Any, tmp_path: Path) -> None:
    backfill(ddb, tmp_path, page_size=50)
    other = Job(JOB.source_table, JOB.target_table, segments=3)
    store = CheckpointStore(str(tmp_path / "checkpoints"), other)
    (tmp_path / "checkpoints" / JOB.name / "segment-1-of-3.json").write_text("{")
    with pytest.raises(BackfillError, match=r"segment-1-of-3\.json: damaged checkpoint"):
        store.checkpoint(1)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (Job("nope", "agents"), "no table nope"),
        (Job("agents-v1", "nope"), "no table nope"),
        (Job("agents-v1", "agents", target_key="pk"), "partition key of agents is partition_key"),
    ],
)
def test_tables_that_do_not_fit_the_job_are_refused(
    ddb: Any, tmp_path: Path, job: Any, message: str
) -> None:
    with pytest.raises(BackfillError, match=message):
        backfill(ddb, tmp_path, job=job)


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def map_file(tmp_path: Path) -> Path:
    path = tmp_path / "parts.csv"
    rows = [f"{k},{e},{p}" for k, (e, p) in PARTS.items() if k != "tenant-5"]
    path.write_text("legacy_key,endpoint_id,part_id\n" + "\n".join(rows) + "\n")
    return path


def cli_args(map_file: Path, *more: str) -> list[str]:
    return [
        "backfill",
        *more,
        "--source-table",
        JOB.source_table,
        "--target-table",
        JOB.target_table,
        "--map",
        str(map_file),
        "--segments",
        "3",
    ]


def test_the_command_copies_verifies_and_says_what_it_skipped(
    ddb: Any, tmp_path: Path, map_file: Path, run: Runner
) -> None:
    live = tmp_path / "production.flagd.json"
    result = run("--file", str(live), *cli_args(map_file))
    assert result.code == 5, result.err  # done, with tenant-5's items skipped
    assert "done" in result.out and "250 copied" in result.out
    assert "50 unmapped item(s), skipped: tenant-5 (50)" in result.out
    assert (tmp_path / "production.flagd.json.backfill" / JOB.name).is_dir()

    verified = run("--file", str(live), "--json", *cli_args(map_file, "verify"))
    assert verified.code == 0, verified.err
    data = verified.json()
    assert data["complete"] and data["items"] == 250 and data["unmapped"] == 50
    assert read_backfilled(f"{live}.backfill")[0].complete


def test_a_dry_run_on_the_command_line(ddb: Any, map_file: Path, run: Runner) -> None:
    result = run(*cli_args(map_file, "--dry-run"))
    assert result.code == 5
    assert "dry run" in result.out and "endpoint aws-prod-0#tenant-0: 50 item(s)" in result.out
    assert tables.scan_all(ddb, JOB.target_table) == []


def test_verify_fails_on_a_difference_with_exit_5(
    ddb: Any, tmp_path: Path, map_file: Path, run: Runner
) -> None:
    checkpoint = str(tmp_path / "cp")
    assert run(*cli_args(map_file, "--checkpoint", checkpoint)).code == 5
    ddb.delete_item(
        TableName=JOB.target_table,
        Key={"partition_key": {"S": "aws-prod-0#tenant-0"}, "sk": {"S": "agent#000000"}},
    )
    result = run(*cli_args(map_file, "verify", "--checkpoint", checkpoint))
    assert result.code == 5
    assert (
        "NOT complete" in result.out and "aws-prod-0#tenant-0/agent#000000: missing" in result.out
    )


def test_part_of_names_a_function_of_the_item(
    ddb: Any, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_parts.py").write_text(
        "def part_of(item):\n"
        "    n = int(item['endpoint_id'].split('-')[1])\n"
        "    return (f'aws-prod-{n % 2}', item['endpoint_id']) if n < 3 else None\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = cli_args(tmp_path / "unused", "--checkpoint", "cp")
    at = args.index("--map")
    args[at : at + 2] = ["--part-of", "my_parts:part_of"]
    result = run("--json", *args)
    assert result.code == 5
    data = result.json()
    assert data["copied"] == 150 and data["unmapped"] == 150


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--worker", "2/2"], "--worker takes I/N"),
        (["--worker", "0/4"], "4 workers need at least 4 segments"),
        (["--max-write-units", "0"], "must be a positive number of capacity units"),
        (["--max-read-units", "x"], "not a number"),
        (["--page-size", "0"], "must be 1 or more"),
        (["--target-key", "endpoint_id"], "would be overwritten"),
        (["--source-table", " "], "--source-table must not be empty"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(
    ddb: Any, tmp_path: Path, map_file: Path, run: Runner, extra: list[str], message: str
) -> None:
    result = run(*cli_args(map_file, "--checkpoint", str(tmp_path / "cp")), *extra)
    assert result.code == 2 and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert tables.scan_all(ddb, JOB.target_table) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "legacy_key,endpoint_id,part_id\ntenant-0,aws#x,p\n",
            "line 2: endpoint_id must not contain",
        ),
        ("key,e,p\n", "starts with the header"),
        (None, "cannot read --map"),
    ],
)
def test_a_bad_map_is_refused_before_anything_is_read(
    ddb: Any, tmp_path: Path, run: Runner, content: str | None, message: str
) -> None:
    path = tmp_path / "parts.csv"
    if content is not None:
        path.write_text(content)
    calls = Calls(ddb)
    result = run(*cli_args(path, "--checkpoint", str(tmp_path / "cp")))
    assert result.code == 2 and message in result.err
    assert calls.sent == []


def test_without_a_checkpoint_or_a_file_the_command_says_where_to_keep_it(
    ddb: Any, map_file: Path, run: Runner
) -> None:
    result = run(*cli_args(map_file))
    assert result.code == 2 and "backfill needs --checkpoint" in result.err


def test_the_live_file_from_the_environment_keeps_the_checkpoints_beside_it(
    ddb: Any, tmp_path: Path, map_file: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_AGENT_ROLLOUT_FILE", str(tmp_path / "live.flagd.json"))
    assert run(*cli_args(map_file)).code == 5
    assert (tmp_path / "live.flagd.json.backfill" / JOB.name).is_dir()


def test_dynamodb_unreachable_is_exit_1_and_one_line(
    ddb: Any, tmp_path: Path, map_file: Path, run: Runner
) -> None:
    result = run(*cli_args(map_file, "--checkpoint", str(tmp_path / "cp")))
    assert result.code == 5
    with _failing("DescribeTable", "AccessDeniedException"):
        result = run(*cli_args(map_file, "--checkpoint", str(tmp_path / "cp")))
    assert result.code == 1
    assert "cannot describe agents: " in result.err and "AccessDenied" in result.err


class _failing:
    """Every client of the default session answers ``operation`` with ``code``."""

    def __init__(self, operation: str, code: str) -> None:
        self.operation, self.code = operation, code

    def _answer(self, **_: Any) -> Any:
        body = {"Error": {"Code": self.code, "Message": "injected"}}
        body["ResponseMetadata"] = {"HTTPStatusCode": 400}
        return AWSResponse("https://dynamodb", 400, {}, None), body

    def __enter__(self) -> None:
        session = boto3.DEFAULT_SESSION
        assert session is not None
        session.events.register_first(f"before-call.dynamodb.{self.operation}", self._answer)

    def __exit__(self, *exc: object) -> None:
        session = boto3.DEFAULT_SESSION
        assert session is not None
        session.events.unregister(f"before-call.dynamodb.{self.operation}", self._answer)
