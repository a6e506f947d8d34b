"""``ai-agent-rollout backfill`` across real processes: a copy killed with SIGKILL and run
again, its checkpoint in a local folder or on S3; two workers sharing a table, and their
verification records read back as one; two processes given the same worker. DynamoDB
and S3 are moto's threaded server on loopback (``AWS_ENDPOINT_URL``); each backfill is a
subprocess of the CLI.

No test waits for time to pass: a copy says on standard error when it has checkpointed a
page (``--progress-every 0``: a progress line after every page), and the test kills it
after the k-th line; a copy that must hold its segment while another process tries it
says ``saved`` after its first checkpoint and waits for a line on standard input.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from ai_agent_handler.ops.backfill import Job
from ai_agent_handler.ops.backfill_io import read_backfilled
from tests.support import BUCKET, REGION, REPO
from tests.support.tables import (
    create_engine,
    create_legacy,
    legacy_items,
    parts,
    put_all,
    scan_all,
)

pytestmark = pytest.mark.slow

SOURCE = "agents-v1"
TARGET = "agents"
JOB = Job(SOURCE, TARGET)
#: How every progress line of a copy of SOURCE to TARGET begins.
PROGRESS = f"backfill {SOURCE} -> {TARGET}"
CLI = "ai_agent_handler.ops.cli"

#: A copy that stops after the first checkpoint it writes, its segment claimed: it says
#: ``saved`` on standard error, and goes on once a line comes on standard input.
HELD = """
import sys
from ai_agent_handler.ops import backfill_io, cli
real = backfill_io.CheckpointStore.save
held = [True]
def save(self, point):
    real(self, point)
    if held:
        held.clear()
        print("saved", file=sys.stderr, flush=True)
        sys.stdin.readline()
backfill_io.CheckpointStore.save = save
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def env(aws_server: str) -> dict[str, str]:
    """The environment of a CLI subprocess: moto's server, dummy credentials, a region."""
    out = dict(os.environ)
    out.update(
        AWS_ENDPOINT_URL=aws_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        PYTHONPATH=str(REPO),
    )
    out.pop("AWS_PROFILE", None)
    return out


@pytest.fixture
def dynamodb(aws_server: str) -> Any:
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=aws_server)


@pytest.fixture
def map_file(tmp_path: Path) -> Path:
    """The CSV mapping of :func:`~tests.support.tables.legacy_items`' keys."""
    path = tmp_path / "parts.csv"
    rows = [f"{legacy},{endpoint},{part}" for legacy, (endpoint, part) in parts().items()]
    path.write_text("legacy_key,endpoint_id,part_id\n" + "\n".join(rows) + "\n")
    return path


def tables(dynamodb: Any, count: int) -> None:
    """The legacy source with ``count`` plain items over 20 endpoints; the empty target."""
    create_legacy(dynamodb, SOURCE)
    create_engine(dynamodb, TARGET)
    assert put_all(dynamodb, SOURCE, legacy_items(count, rich=False)) == count


def expected_items(count: int) -> dict[tuple[str, str], dict[str, Any]]:
    """What the target must hold: each source item with the composite key and the ids."""
    mapping = parts()
    out = {}
    for item in legacy_items(count, rich=False):
        endpoint, part = mapping[item["endpoint_id"]["S"]]
        composite = f"{endpoint}#{part}"
        out[(composite, item["sk"]["S"])] = {
            **item,
            "partition_key": {"S": composite},
            "endpoint_id": {"S": endpoint},
            "part_id": {"S": part},
        }
    return out


def target_items(dynamodb: Any) -> dict[tuple[str, str], dict[str, Any]]:
    found = scan_all(dynamodb, TARGET)
    keyed = {(item["partition_key"]["S"], item["sk"]["S"]): item for item in found}
    assert len(keyed) == len(found)
    return keyed


def backfill_args(map_file: Path, checkpoint: str, *more: str) -> list[str]:
    return [
        "backfill",
        *more,
        "--source-table",
        SOURCE,
        "--target-table",
        TARGET,
        "--map",
        str(map_file),
        "--checkpoint",
        checkpoint,
        "--json",
    ]


def start(env: dict[str, str], argv: Sequence[str], *, script: str | None = None) -> Any:
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", CLI]
    return subprocess.Popen(
        [*command, *argv],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: Any, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def completed(
    env: dict[str, str], argv: Sequence[str], timeout: float = 600
) -> tuple[int, dict[str, Any], str]:
    """The CLI run to its end: exit code, its ``--json`` report, standard error."""
    code, out, err = finish(start(env, argv), timeout)
    try:
        report = json.loads(out)
    except ValueError:
        pytest.fail(f"exit {code}, no JSON report:\n{out}\n{err}")
    return code, report, err


def kill_after(process: Any, pages: int) -> list[str]:
    """SIGKILL ``process`` once it has said it checkpointed ``pages`` pages; its lines."""
    said: list[str] = []
    shown = 0
    for line in iter(process.stderr.readline, ""):
        said.append(line)
        if line.startswith(PROGRESS):
            shown += 1
            if shown == pages:
                process.kill()
                break
    code, out, err = finish(process, timeout=60)
    if shown < pages:
        pytest.fail(f"ended after {shown} progress line(s); exit {code}\n{out}\n{''.join(said)}")
    assert code == -signal.SIGKILL, (code, out, err)
    return said


def both_workers(
    env: dict[str, str], map_file: Path, checkpoint: str, *more: str
) -> list[tuple[int, str, str]]:
    """Workers 0/2 and 1/2 of 4 segments, run at once to their end."""
    workers = [
        start(env, backfill_args(map_file, checkpoint, *more, "--segments", "4", "--worker", w))
        for w in ("0/2", "1/2")
    ]
    return [finish(worker) for worker in workers]


def says(process: Any, line: str) -> None:
    """Wait until ``process`` writes ``line`` to standard error (it failed if it ended first)."""
    before = []
    for said in iter(process.stderr.readline, ""):
        if said == line + "\n":
            return
        before.append(said)
    code, out, err = finish(process)
    pytest.fail(f"{line!r} never said; exit {code}\n{out}\n{''.join(before)}{err}")


def checkpoints_local(root: Path) -> dict[str, dict[str, Any]]:
    folder = root / JOB.name
    return {p.name: json.loads(p.read_bytes()) for p in sorted(folder.glob("segment-*.json"))}


def checkpoints_s3(s3: Any, prefix: str) -> dict[str, dict[str, Any]]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{JOB.name}/segment-")
    return {
        entry["Key"].rsplit("/", 1)[1]: json.loads(
            s3.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
        )
        for entry in listed.get("Contents", [])
    }


def assert_killed_mid_way(
    points: dict[str, dict[str, Any]], pages: int, page: int, total: int
) -> None:
    """One segment's checkpoint, not done, at or past the page the test saw said."""
    (point,) = points.values()
    assert point["done"] is False and point["last_key"] is not None, point
    assert pages * page <= point["counts"]["scanned"] < total, point["counts"]


def assert_resumed_whole(
    report: dict[str, Any], points: dict[str, dict[str, Any]], total: int, page: int
) -> None:
    """Every item counted once over both runs: copied now or found already copied (the
    killed run's writes after its last checkpoint: one page at most), no conflict."""
    assert report["done"] is True and report["segments"] == {"0": True}, report
    assert report["scanned"] == total
    assert report["copied"] + report["already"] == total, report
    assert report["already"] <= page, report
    assert report["conflicts"] == report["unmapped"] == report["invalid"] == 0, report
    assert sum(report["endpoints"].values()) == total
    (point,) = points.values()
    assert point["done"] is True and point["last_key"] is None, point
    counts = point["counts"]
    for name in ("scanned", "copied", "already", "conflicts"):
        assert counts[name] == report[name], (name, counts, report)


def assert_verified(env: dict[str, str], map_file: Path, checkpoint: str, total: int) -> None:
    code, found, err = completed(
        env, backfill_args(map_file, checkpoint, "verify", "--page-size", "1000")
    )
    assert code == 0, (found, err)
    assert found["complete"] is True and found["items"] == total, found
    assert found["missing"] == found["different"] == 0, found


# -- tests -------------------------------------------------------------------------------------


def test_a_copy_killed_mid_way_and_run_again_copies_every_item_exactly_once(
    env: dict[str, str], dynamodb: Any, map_file: Path, tmp_path: Path
) -> None:
    total, page, pages = 10_000, 500, 9
    tables(dynamodb, total)
    checkpoint = tmp_path / "checkpoints"
    argv = backfill_args(
        map_file, str(checkpoint), "--page-size", str(page), "--progress-every", "0"
    )

    kill_after(start(env, argv), pages)
    assert_killed_mid_way(checkpoints_local(checkpoint), pages, page, total)

    code, report, err = completed(env, argv)
    assert code == 0, (report, err)
    assert_resumed_whole(report, checkpoints_local(checkpoint), total, page)
    assert target_items(dynamodb) == expected_items(total)
    assert_verified(env, map_file, str(checkpoint), total)


def test_a_copy_with_its_checkpoint_on_s3_killed_and_run_again(
    env: dict[str, str], dynamodb: Any, map_file: Path, aws_server: str
) -> None:
    total, page, pages = 2_000, 200, 4
    tables(dynamodb, total)
    checkpoint = f"s3://{BUCKET}/backfill"
    argv = backfill_args(map_file, checkpoint, "--page-size", str(page), "--progress-every", "0")
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=aws_server)

    kill_after(start(env, argv), pages)
    assert_killed_mid_way(checkpoints_s3(s3, "backfill"), pages, page, total)

    code, report, err = completed(env, argv)
    assert code == 0, (report, err)
    assert report["checkpoint"] == f"{checkpoint}/{JOB.name}/"
    assert_resumed_whole(report, checkpoints_s3(s3, "backfill"), total, page)
    assert target_items(dynamodb) == expected_items(total)
    assert_verified(env, map_file, checkpoint, total)


def test_two_workers_on_one_table_copy_each_item_once(
    env: dict[str, str], dynamodb: Any, map_file: Path, tmp_path: Path
) -> None:
    total = 4_000
    tables(dynamodb, total)
    checkpoint = str(tmp_path / "checkpoints")
    results = both_workers(env, map_file, checkpoint, "--page-size", "500")
    assert [code for code, _, _ in results] == [0, 0], results
    reports = [json.loads(out) for _, out, _ in results]
    assert [sorted(r["segments"]) for r in reports] == [["0", "2"], ["1", "3"]]
    assert all(all(r["segments"].values()) for r in reports), reports
    assert sum(r["copied"] for r in reports) == total, reports
    assert sum(r["scanned"] for r in reports) == total, reports
    assert [(r["already"], r["conflicts"]) for r in reports] == [(0, 0), (0, 0)], reports
    endpoints = [set(r["endpoints"]) for r in reports]
    assert not endpoints[0] & endpoints[1]  # a legacy key's items are in one segment
    points = checkpoints_local(Path(checkpoint))
    assert sorted(points) == [f"segment-{s}-of-4.json" for s in range(4)]
    assert all(point["done"] for point in points.values())
    assert target_items(dynamodb) == expected_items(total)

    # Each worker verifies its own segments; the records beside the checkpoints make one.
    results = both_workers(env, map_file, checkpoint, "verify", "--page-size", "1000")
    assert [code for code, _, _ in results] == [0, 0], results
    found = [json.loads(out) for _, out, _ in results]
    assert all(f["complete"] for f in found), found
    assert sum(f["items"] for f in found) == total, found
    (record,) = read_backfilled(checkpoint)
    assert (record.complete, record.whole, record.items, record.missing) == (True, True, total, 0)
    assert sum(e["items"] for e in record.endpoints.values()) == total


def test_a_verification_with_other_segments_is_read_back_alone(
    env: dict[str, str], dynamodb: Any, map_file: Path, tmp_path: Path
) -> None:
    total = 400
    tables(dynamodb, total)
    checkpoint = str(tmp_path / "checkpoints")
    code, report, err = completed(env, backfill_args(map_file, checkpoint, "--segments", "4"))
    assert code == 0 and report["copied"] == total, (report, err)
    verify = backfill_args(map_file, checkpoint, "verify", "--segments", "4")
    code, found, err = completed(env, verify)
    assert code == 0 and found["items"] == total, (found, err)
    # Verified again later, as one segment (the default): the newest verification is whole.
    assert_verified(env, map_file, checkpoint, total)
    (record,) = read_backfilled(checkpoint)
    assert record.summary().split(", verified")[0] == (
        f"{SOURCE} -> {TARGET}: 20 endpoint(s), {total} item(s), complete"
    )
    assert (record.complete, record.whole, record.items) == (True, True, total)


def test_a_second_process_given_the_same_worker_stops_instead_of_copying(
    env: dict[str, str], dynamodb: Any, map_file: Path, tmp_path: Path
) -> None:
    total, page = 1_000, 100
    tables(dynamodb, total)
    checkpoint = str(tmp_path / "checkpoints")
    argv = backfill_args(map_file, checkpoint, "--page-size", str(page))
    first = start(env, argv, script=HELD)
    says(first, "saved")  # it holds segment 0: one page copied and checkpointed
    try:
        code, out, err = finish(start(env, argv), timeout=120)
    finally:
        first.stdin.write("\n")  # the first goes on
        first.stdin.flush()
    assert code == 1, (code, out, err)
    assert "is being copied by another worker" in err
    assert "give each worker its own --worker I/N" in err
    assert json.loads(out)["exit_code"] == 1
    code, out, err = finish(first)
    assert code == 0, (out, err)
    report = json.loads(out)
    assert (report["copied"], report["already"], report["conflicts"]) == (total, 0, 0), report
    assert target_items(dynamodb) == expected_items(total)
