"""``ai-agent-rollout backfill`` on moto's server (its own process, on loopback).

- Items per second of one worker, and of two worker processes on the same table (the same
  job: ``--segments 4``, ``--worker 0/2`` and ``1/2``); each run is the CLI as operators run
  it, timed from the start of its process(es) to the end of the last.
- A capacity-limited run (``--max-write-units W``, W well below what moto sustains): the
  write units it spent per second of its run, against W.
- Memory: ``tracemalloc``'s peak while :func:`run_backfill` runs in this process, for tables
  of growing size (moto's server, holding the items, is another process: what is traced is
  the backfill's own memory: a page, its writes in flight, the counts).
- ``backfill verify``: items per second, against the copy's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .common import ROOT, Row, Section

#: Seconds the largest memory run may take; 100,000 items when they fit.
MEMORY_BUDGET = 300.0
MEMORY_SIZES = (1_000, 10_000)
LARGEST = (100_000, 50_000, 30_000, 20_000)
#: Legacy keys of the tables: enough that 4 scan segments (by hash key) get similar shares.
ENDPOINTS = 200
SEGMENTS = 4
#: The write limit of the capacity-limited run (moto sustains a few hundred per second).
LIMIT = 50.0
TARGET_MEMORY = 1.5
TARGET_LIMIT = 0.10


def _create(client: Any, name: str, hash_key: str) -> None:
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": hash_key, "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    )


def _items(count: int) -> Iterator[dict[str, Any]]:
    """Plain items over :data:`ENDPOINTS` legacy keys: a string and a number each."""
    for n in range(count):
        yield {
            "endpoint_id": {"S": f"tenant-{n % ENDPOINTS}"},
            "sk": {"S": f"agent#{n:07d}"},
            "name": {"S": f"agent {n}"},
            "size": {"N": str(n * 3)},
        }


def _parts() -> dict[str, tuple[str, str]]:
    return {f"tenant-{n}": (f"aws-prod-{n % 2}", f"tenant-{n}") for n in range(ENDPOINTS)}


def _fill(client: Any, table: str, count: int) -> None:
    """``table`` created with ``count`` items (``BatchWriteItem``, 25 at a time)."""
    _create(client, table, "endpoint_id")
    requests = [{"PutRequest": {"Item": item}} for item in _items(count)]
    for first in range(0, count, 25):
        batch = requests[first : first + 25]
        while batch:
            left = client.batch_write_item(RequestItems={table: batch})
            batch = left.get("UnprocessedItems", {}).get(table, [])


class _Bench:
    """moto's server, a source table, a map file and a scratch folder for checkpoints."""

    def __init__(self, url: str, scratch: Path) -> None:
        import boto3

        from ai_agent_handler import _aws

        self.url = url
        self.scratch = scratch
        self.client = boto3.client(
            "dynamodb", endpoint_url=url, region_name="us-east-1", config=_aws.RETRY_CONFIG
        )
        self.map_file = scratch / "parts.csv"
        rows = [f"{k},{e},{p}" for k, (e, p) in _parts().items()]
        self.map_file.write_text("legacy_key,endpoint_id,part_id\n" + "\n".join(rows) + "\n")
        self._targets = 0

    def target(self) -> str:
        self._targets += 1
        name = f"bench-target-{self._targets}"
        _create(self.client, name, "partition_key")
        return name

    def drop(self, *tables: str) -> None:
        for table in tables:
            self.client.delete_table(TableName=table)

    def argv(self, source: str, target: str, *more: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ai_agent_handler.ops.cli",
            "backfill",
            *more,
            "--source-table",
            source,
            "--target-table",
            target,
            "--map",
            str(self.map_file),
            "--checkpoint",
            str(self.scratch / f"checkpoints-{target}"),
            "--json",
        ]

    def processes(self, commands: Sequence[list[str]]) -> tuple[float, list[dict[str, Any]]]:
        """The CLI commands run at once: seconds from the first start to the last end, and
        their reports."""
        env = {**os.environ, "AWS_ENDPOINT_URL": self.url, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        running = [
            subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for command in commands
        ]
        outputs = [process.communicate(timeout=3600) for process in running]
        seconds = time.perf_counter() - start
        reports = []
        for process, (out, err) in zip(running, outputs, strict=True):
            if process.returncode != 0:
                raise RuntimeError(f"backfill exited {process.returncode}: {out}\n{err}")
            reports.append(json.loads(out))
        return seconds, reports


def _copy(bench: _Bench, source: str, count: int, workers: int) -> tuple[float, str, list[int]]:
    """A copy of ``source`` by ``workers`` processes: items per second, the target, and
    each worker's items."""
    target = bench.target()
    commands = [
        bench.argv(source, target, "--segments", str(SEGMENTS), "--worker", f"{i}/{workers}")
        for i in range(workers)
    ]
    seconds, reports = bench.processes(commands)
    copied = [int(r["copied"]) for r in reports]
    if sum(copied) != count:
        raise RuntimeError(f"{workers} worker(s) copied {copied} of {count}")
    return count / seconds, target, copied


def _limited(bench: _Bench, count: int) -> tuple[float, float, float]:
    """A copy of ``count`` items at ``--max-write-units`` :data:`LIMIT`: write units spent,
    its seconds, the units per second."""
    (source,) = _sources(bench, [count])
    target = bench.target()
    _, (report,) = bench.processes([bench.argv(source, target, "--max-write-units", f"{LIMIT:g}")])
    bench.drop(source, target)
    if report["copied"] != count:
        raise RuntimeError(f"the limited copy copied {report['copied']} of {count}")
    units, seconds = float(report["write_units"]), float(report["seconds"])
    return units, seconds, units / seconds


def _verify(bench: _Bench, source: str, target: str, count: int) -> float:
    seconds, (report,) = bench.processes(
        [bench.argv(source, target, "verify", "--segments", str(SEGMENTS))]
    )
    if not report["complete"] or report["items"] != count:
        raise RuntimeError(f"verify found {report}")
    return count / seconds


def _peak(bench: _Bench, source: str, page_size: int) -> tuple[int, float]:
    """:func:`run_backfill` of ``source`` in this process under ``tracemalloc``: the peak
    of what it allocated (bytes), and its seconds."""
    from ai_agent_handler.ops.backfill import Job, mapping_rule
    from ai_agent_handler.ops.backfill_io import run_backfill

    target = bench.target()
    rule = mapping_rule(_parts())
    job = Job(source, target)
    checkpoint = str(bench.scratch / f"checkpoints-{target}")
    tracemalloc.start()
    try:
        start = time.perf_counter()
        report = run_backfill(
            job, rule, checkpoint=checkpoint, dynamodb_client=bench.client, page_size=page_size
        )
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bench.drop(target)
    if not report.done:
        raise RuntimeError(f"not done: {report.to_json()}")
    return peak, seconds


def _memory(bench: _Bench, smoke: bool) -> tuple[dict[int, int], dict[int, float], str]:
    """Peaks by table size; the sizes measured and why the largest is what it is."""
    sizes = (100, 300, 1_000) if smoke else MEMORY_SIZES
    page = _page(smoke)
    peaks: dict[int, int] = {}
    seconds: dict[int, float] = {}
    # One small copy first, its figure dropped: what boto3 and the backfill build lazily
    # (the client's error factory, the thread pool's first threads) is built once per
    # process, and would be counted in the smallest table's peak only.
    _peak_of(bench, 50, page)
    for size in sizes:
        peaks[size], seconds[size] = _peak_of(bench, size, page)
    why = ""
    if not smoke:
        per_item = seconds[sizes[-1]] / sizes[-1]
        fits = [n for n in LARGEST if n * per_item * 1.15 <= MEMORY_BUDGET]
        largest = fits[0] if fits else sizes[-1]
        if largest != LARGEST[0]:
            why = (
                f"{LARGEST[0]:,} items would take about {LARGEST[0] * per_item / 60:.0f} min "
                f"here ({1 / per_item:,.0f} items/s under tracemalloc): the largest table "
                f"measured is {largest:,} items (budget {MEMORY_BUDGET / 60:.0f} min)"
            )
        if largest not in peaks:
            peaks[largest], seconds[largest] = _peak_of(bench, largest, page)
    return peaks, seconds, why


def _sources(bench: _Bench, sizes: Sequence[int]) -> list[str]:
    names = []
    for size in sizes:
        name = f"bench-source-{size}"
        _fill(bench.client, name, size)
        names.append(name)
    return names


def _peak_of(bench: _Bench, size: int, page_size: int) -> tuple[int, float]:
    (source,) = _sources(bench, [size])
    try:
        return _peak(bench, source, page_size)
    finally:
        bench.drop(source)


def _page(smoke: bool) -> int:
    """Items per scanned page of the memory runs: the default, a tenth of it in a smoke
    run (so that its tables, too, are one page and several)."""
    from ai_agent_handler.ops.backfill_io import PAGE_SIZE

    return PAGE_SIZE // 10 if smoke else PAGE_SIZE


def _kib(value: float) -> str:
    return f"{value / 1024:,.0f} KiB"


def _rows(bench: _Bench, smoke: bool) -> tuple[list[Row], list[str]]:
    count = 200 if smoke else 5_000
    limited_count = 100 if smoke else 1_000
    (source,) = _sources(bench, [count])
    one, target, _ = _copy(bench, source, count, 1)
    verify_rate = _verify(bench, source, target, count)
    bench.drop(target)
    two, target, split = _copy(bench, source, count, 2)
    bench.drop(target)
    bench.drop(source)
    units, seconds, spent = _limited(bench, limited_count)
    peaks, _, why = _memory(bench, smoke)
    sizes = sorted(peaks)
    small, large = sizes[0], sizes[-1]
    memory_ratio = peaks[large] / peaks[small]
    within = abs(spent / LIMIT - 1) <= TARGET_LIMIT
    rows = [
        Row(
            f"copy of {count:,} items, 2 worker processes on one table",
            f"{two:,.0f} items/s (workers' shares {split[0]:,} / {split[1]:,})",
            f"{one:,.0f} items/s, one worker",
            f"{two / one:.2f}x",
            f"informational (moto's server is one process; {os.cpu_count()} cores for it "
            "and the workers)",
            None,
        ),
        Row(
            f"copy at --max-write-units {LIMIT:g} ({limited_count:,} items)",
            f"{units:,.0f} write units in {seconds:.1f} s = {spent:.1f} units/s",
            f"{LIMIT:g} units/s",
            f"{spent / LIMIT:.3f}x",
            f"within {TARGET_LIMIT:.0%} of the limit",
            within,
        ),
        Row(
            f"memory of run_backfill (tracemalloc peak), {large:,} items",
            f"{_kib(peaks[large])}"
            + "".join(f"; {n:,} items: {_kib(peaks[n])}" for n in sizes[1:-1]),
            f"{small:,} items: {_kib(peaks[small])}",
            f"{memory_ratio:.2f}x",
            f"<= {TARGET_MEMORY}x (one page in memory, whatever the table's size)",
            memory_ratio <= TARGET_MEMORY,
        ),
        Row(
            f"backfill verify of {count:,} items, one process",
            f"{verify_rate:,.0f} items/s",
            f"{one:,.0f} items/s, the copy (one worker)",
            f"{verify_rate / one:.2f}x",
            "informational",
            None,
        ),
    ]
    page = _page(smoke)
    page_text = "smoke run: a tenth of the default" if smoke else "the default"
    notes = [
        f"Tables: {ENDPOINTS} legacy keys, plain items (a string and a number besides the "
        f"keys); the target has partition key `partition_key` and sort key `sk`. Copies and "
        f"verify are the CLI in processes of their own, default page size and write "
        f"threads, --segments {SEGMENTS} (one worker takes all four; two take two each); "
        "items per second are over the wall time from the first process's start to the "
        "last one's end (interpreter start included).",
        "moto's server is one Python process (one core, its GIL) and the machine has "
        f"{os.cpu_count()} cores: the workers and the server share them, so the 2-worker "
        "ratio says how the copy scales against this server, not against DynamoDB, whose "
        "partitions take writes in parallel.",
        "The capacity-limited run counts what moto reports as consumed (1 unit per item "
        "written, each under 1 KB) over the run's own clock (from after the tables are "
        "described to the end). The limiter starts with one unit in hand and reserves a "
        "unit for each request it admits, so the rate holds from the first request on.",
        "Memory: moto's server (which holds the items) is another process; tracemalloc "
        "traces this process while run_backfill runs (client created before, its service "
        "model loaded once by a small copy first): the scanned page "
        f"({page:,} items, {page_text}), the writes in flight, the counts per endpoint "
        f"({ENDPOINTS} endpoints at every size).",
    ]
    if why:
        notes.append(f"Memory: {why}.")
    return rows, notes


def run(smoke: bool) -> Section:
    from .throughput import moto_server

    with (
        moto_server() as url,
        tempfile.TemporaryDirectory(prefix="bench-backfill-") as scratch,
    ):
        rows, notes = _rows(_Bench(url, Path(scratch)), smoke)
    return Section(
        "Backfill to the composite key (moto's server)",
        "`ai-agent-rollout backfill` copies a legacy table to the composite key with "
        "conditional writes and a checkpoint per page; each figure is measured in this run "
        "against moto's server in its own process on loopback.",
        rows=rows,
        notes=notes,
    )
