"""Reading an S3 audit trail back (``history``, ``status``, ``report``), and the report page.

- ``history`` of an S3 file: the records under ``<key>.audit/`` fetched with
  :data:`~ai_agent_handler.ops.history_io.WORKERS` parallel GETs, against one GET at a time
  (the anchor), on moto's server (its own process, on loopback) as it answers and with 20 ms
  added to every request (an S3 GET in the region takes tens of milliseconds).
- ``--limit 20`` against the whole trail: the newest names first, one round of GETs.
- The report page of 10,000 changes: render time and size, against 200 changes.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import time
from typing import Any

from .common import Row, Section, Series

KEY = "ai-agent/production.flagd.json"
BUCKET = "bench-flags"
ADDED_LATENCY = 0.020


def _fill(client: Any, count: int) -> None:
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key=KEY, Body=b"{}")

    def put(version: int) -> None:
        record = {
            "time": f"2026-12-01T{version // 3600 % 24:02d}:{version // 60 % 60:02d}:"
            f"{version % 60:02d}.000+00:00",
            "actor": "alice",
            "command": f"percent {version % 100}",
            "phase": "production",
            "version_before": version,
            "version_after": version + 1,
        }
        name = f"{KEY}.audit/{version + 1:010d}-20261201T000000Z-{version:08x}.json"
        client.put_object(Bucket=BUCKET, Key=name, Body=json.dumps(record).encode())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def _delayed(client: Any) -> Any:
    def wait(**_: Any) -> None:
        time.sleep(ADDED_LATENCY)

    client.meta.events.register("before-send.s3.*", wait)
    return client


def _timed(source: str, client: Any, rounds: int, *, workers: int, limit: int | None) -> Series:
    from ai_agent_handler.ops import history_io
    from ai_agent_handler.ops.history import Filters

    series = Series()
    for _ in range(rounds):
        start = time.perf_counter()
        history_io.read_trail(source, Filters(limit=limit), s3_client=client, workers=workers)
        series.add(time.perf_counter() - start)
    return series


def _history_rows(smoke: bool) -> list[Row]:
    import boto3

    from ai_agent_handler import _aws
    from ai_agent_handler.ops import history_io

    from .throughput import moto_server

    count = 40 if smoke else 2000
    slow_count = 20 if smoke else 300
    # moto in its own process: its request handling does not share this interpreter's GIL.
    with moto_server() as url:

        def client() -> Any:
            return boto3.client(
                "s3", endpoint_url=url, region_name="us-east-1", config=_aws.RETRY_CONFIG
            )

        _fill(client(), count)
        source = f"s3://{BUCKET}/{KEY}"
        rounds = 1 if smoke else 3
        many = history_io.WORKERS
        parallel = _timed(source, client(), rounds, workers=many, limit=None)
        serial = _timed(source, client(), rounds, workers=1, limit=None)
        limited = _timed(source, client(), rounds, workers=many, limit=20)
        # The same with a network's latency, on the newest ``slow_count`` records.
        slow = _delayed(client())
        slow_parallel = _timed(source, slow, rounds, workers=many, limit=slow_count)
        slow_serial = _timed(source, slow, rounds, workers=1, limit=slow_count)
    return [
        Row(
            f"history of {count:,} S3 audit records, moto's server on loopback",
            f"{parallel.median:.2f} s ({count / parallel.median:,.0f} records/s), "
            f"{history_io.WORKERS} GETs at a time",
            f"{serial.median:.2f} s, one GET at a time",
            f"{parallel.median / serial.median:.2f}x",
            "informational (moto's CPU per request bounds it on 2 cores)",
            None,
        ),
        Row(
            f"history --limit {slow_count} of S3 audit records, "
            f"+{ADDED_LATENCY * 1e3:.0f} ms per request",
            f"{slow_parallel.median:.2f} s",
            f"{slow_serial.median:.2f} s, one GET at a time",
            f"{slow_parallel.median / slow_serial.median:.3f}x",
            "<= 0.25x",
            slow_parallel.median / slow_serial.median <= 0.25,
        ),
        Row(
            f"history --limit 20 of {count:,} records",
            f"{limited.median:.2f} s",
            f"{parallel.median:.2f} s, the whole trail",
            f"{limited.median / parallel.median:.2f}x",
            "informational",
            None,
        ),
    ]


def _report_rows(smoke: bool) -> list[Row]:
    from ai_agent_handler.ops import report

    start_at = datetime.datetime(2026, 10, 1, tzinfo=datetime.timezone.utc)

    def page(count: int) -> report.Page:
        step = datetime.timedelta(days=60) / count
        events = tuple(
            report.Event(
                time=start_at + i * step,
                phase=("dev", "staging", "production")[i % 3],
                action="change",
                trigger=("operator", "ramp", "alarm")[i % 3],  # type: ignore[arg-type]
                actor="alice",
                command=f"percent {i % 100}",
                reason=f"CHG-{i}",
                version_before=i,
                version_after=i + 1,
                before=None,
                after=f"composite for {i % 100} % of endpoints",
                percent=i % 100,
            )
            for i in range(count)
        )
        return report.Page("bench", start_at, (), events)

    big, small = (400, 20) if smoke else (10_000, 200)
    timings: dict[int, Series] = {big: Series(), small: Series()}
    sizes = {}
    for _ in range(1 if smoke else 5):
        for count in (big, small):
            built = page(count)
            started = time.perf_counter()
            sizes[count] = len(report.render(built).encode())
            timings[count].add(time.perf_counter() - started)
    return [
        Row(
            f"report page of {big:,} changes (aggregated by day and phase)",
            f"{timings[big].median * 1e3:.0f} ms, {sizes[big] / 1024:,.0f} KiB",
            f"{small} changes: {timings[small].median * 1e3:.0f} ms, "
            f"{sizes[small] / 1024:,.0f} KiB",
            f"{timings[big].median / timings[small].median:.1f}x time, "
            f"{sizes[big] / sizes[small]:.1f}x size",
            "page <= 2 MiB",
            sizes[big] <= 2 * 1024 * 1024,
        )
    ]


def run(smoke: bool) -> Section:
    return Section(
        "Audit trail and report",
        "`history` on an S3 file lists `<key>.audit/` and fetches the records in parallel; "
        "the anchor fetches them one at a time in the same run. The report page of many "
        "changes is drawn one marker per day and phase.",
        rows=[*_history_rows(smoke), *_report_rows(smoke)],
    )
