"""Flag sources that hang, and what a flag file costs to check.

* Decision latency while the source hangs: an S3 endpoint on loopback that answers 200 and
  drips the body (:mod:`bench.drip`), and a FIFO put in place of a local flag file, each
  next to the same source when healthy.
* Validation time for 1,000 / 10,000 / 100,000 allow-listed endpoints (linear), against
  flagd-core loading the same file, and a ``$ref`` bomb refused.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.contrib.tools.flagd.core import FlagdCore

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, FlagFileProvider
from ai_agent_handler.flag_file.document import parse
from ai_agent_handler.flag_file.sources import S3_REFRESH_WAIT, S3Source

from .common import (
    Row,
    Section,
    flag_document,
    no_op_seam,
    percentile,
    write_atomically,
)
from .drip import DripServer, s3_client
from .flag_change import Probe

TARGET_P99_MS = 1.0
TARGET_MAX_MS = 10.0


class Runs(Probe):
    """A :class:`~.flag_change.Probe` that times each run's decision (its first chunk)."""

    def timed(self, seconds: float, gap: float = 0.001) -> list[float]:
        """Decision times (s) of the runs started in ``seconds``, ``gap`` apart."""
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            began = time.perf_counter()
            self.scheme()
            times.append(time.perf_counter() - began)
            time.sleep(gap)
        return times


def _latency(times: list[float]) -> str:
    return (
        f"p50 {percentile(times, 50) * 1e6:.0f} us, p99 {percentile(times, 99) * 1e6:.0f} us,"
        f" max {max(times) * 1e3:.2f} ms ({len(times)} runs)"
    )


def _hanging_row(
    name: str,
    healthy: list[float],
    hanging: list[float],
    fault: str,
    max_ms: float = TARGET_MAX_MS,
) -> Row:
    p99, top = percentile(hanging, 99) * 1e3, max(hanging) * 1e3
    return Row(
        name,
        "hanging: " + _latency(hanging),
        "healthy: " + _latency(healthy),
        f"p99 {percentile(hanging, 99) / percentile(healthy, 99):.2f}x",
        f"p99 < {TARGET_P99_MS:g} ms, max < {max_ms:g} ms",
        p99 < TARGET_P99_MS and top < max_ms and bool(fault),
        fault,
    )


def _s3_rows(window: float, notes: list[str]) -> Row:
    with DripServer() as server:
        server.objects[("flags", "live.flagd.json")] = json.dumps(flag_document(True, 1)).encode()
        source = S3Source(
            "s3://flags/live.flagd.json",
            client=s3_client(server.url, read_timeout=2),
            min_interval=0.05,  # a check every 50 ms: a hanging source is met often
            timeout=1.0,
        )
        provider = FlagFileProvider(source)
        api.set_provider_and_wait(provider, FLAG_DOMAIN)
        runs = Runs()
        healthy = runs.timed(window)
        server.drip = 1.0  # 200 OK, then one byte a second
        server.objects[("flags", "live.flagd.json")] = json.dumps(flag_document(False, 2)).encode()
        hanging = runs.timed(window)
        fault = provider.fault or ""
        keys = {runs.handler.key_decision.key_scheme} if runs.handler.key_decision else set()
        notes.append(
            f"S3 drip: {server.requests} GetObject requests during the runs, {server.cut_off}"
            f" bodies cut off by the 1 s fetch deadline; the provider's fault: `{fault}`; the"
            f" runs kept the last good flags ({', '.join(sorted(keys))} key). A run that starts"
            f" a check waits for it up to {S3_REFRESH_WAIT * 1e3:.0f} ms (the S3"
            " `flag_refresh_wait`, sized to a real GET), then goes on; runs meanwhile do not"
            " wait."
        )
    # The run that starts a check waits for it up to the S3 refresh wait (sized to a real
    # GET); every other run goes on at once.
    limit = S3_REFRESH_WAIT * 1e3 + TARGET_MAX_MS
    return _hanging_row(
        "S3 body dripping at 1 byte/s (loopback)", healthy, hanging, fault, max_ms=limit
    )


def _fifo_row(window: float) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "live.flagd.json"
        write_atomically(path, flag_document(True, 1))
        provider = FlagFileProvider(path)
        api.set_provider_and_wait(provider, FLAG_DOMAIN)
        runs = Runs()
        healthy = runs.timed(window)
        path.unlink()
        os.mkfifo(path)  # no writer: opening it for reading would block forever
        hanging = runs.timed(window)
        fault = provider.fault or ""
    return _hanging_row("local flag file replaced by a FIFO", healthy, hanging, fault)


def _allow_list_doc(size: int) -> bytes:
    doc: dict[str, Any] = json.loads(json.dumps(flag_document(False, 1)))
    doc["flags"][FLAG_KEY]["targeting"] = {
        "if": [
            {"in": [{"var": "endpoint_id"}, [f"ep-{i:06d}" for i in range(size)]]},
            "composite",
            {
                "fractional": [
                    {"cat": ["pk-rollout-", {"var": "targetingKey"}]},
                    ["composite", 5],
                    ["legacy", 95],
                ]
            },
        ]
    }
    return json.dumps(doc, indent=2).encode()


def _ref_bomb(levels: int) -> bytes:
    doc: dict[str, Any] = flag_document(False, 1)
    evaluators: dict[str, Any] = {}
    for level in range(levels, 0, -1):
        below = {"$ref": f"e{level - 1}"}
        evaluators[f"e{level}"] = {"or": [below, below]}
    evaluators["e0"] = {"==": [{"var": "endpoint_id"}, "x"]}
    doc["$evaluators"] = evaluators
    doc["flags"][FLAG_KEY]["targeting"] = {"if": [{"$ref": f"e{levels}"}, "composite", "legacy"]}
    return json.dumps(doc).encode()


def _best_of(repeat: int, action: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - began)
    return best


def _validation_rows(smoke: bool, section: Section) -> None:
    sizes = (1_000, 10_000) if smoke else (1_000, 10_000, 100_000)
    per_endpoint: dict[int, float] = {}
    for size in sizes:
        data = _allow_list_doc(size)
        repeat = 2 if size >= 100_000 else 5
        ours = _best_of(repeat, lambda data=data: parse(data))
        flagd = _best_of(repeat, lambda data=data: FlagdCore().set_flags(json.loads(data)))
        per_endpoint[size] = ours / size
        section.rows.append(
            Row(
                f"validate a file with {size:,} allow-listed endpoints",
                f"{ours * 1e3:.1f} ms ({ours / size * 1e6:.2f} us per endpoint)",
                f"flagd-core loading it: {flagd * 1e3:.1f} ms",
                f"{ours / flagd:.1f}x",
                "linear in the file",
                None,
            )
        )
    first, last = sizes[0], sizes[-1]
    growth = per_endpoint[last] / per_endpoint[first]
    section.rows.append(
        Row(
            f"cost per endpoint at {last:,} vs at {first:,}",
            f"{per_endpoint[last] * 1e6:.2f} us",
            f"{per_endpoint[first] * 1e6:.2f} us",
            f"{growth:.2f}x",
            "<= 2x (linear)",
            growth <= 2.0,
        )
    )
    bomb = _ref_bomb(18)
    refused = float("inf")
    try:
        began = time.perf_counter()
        parse(bomb)
    except Exception as err:  # the expected refusal
        refused = time.perf_counter() - began
        message = str(err)
    section.rows.append(
        Row(
            f"`$ref` bomb ({len(bomb):,} bytes, 2^18 nodes expanded) refused",
            f"{refused * 1e3:.2f} ms",
            "-",
            "-",
            "< 1 s, one line",
            refused < 1.0 and "\n" not in message,
        )
    )
    section.notes.append(f"The bomb's refusal: `{message}`")


def run(smoke: bool) -> Section:
    window = 0.4 if smoke else 3.0
    section = Section(
        "Flag sources that hang, and what a flag file costs to check",
        f"Runs start 1 ms apart for {window:g} s with the source healthy, then {window:g} s"
        " while it hangs; each figure is one run's decision (its first chunk, sync no-op"
        " seam), so it includes the flag evaluation and the freshness check. Validation:"
        " `parse` of a production file whose allow-list has N endpoints (best of 2-5), next"
        " to flagd-core loading the same document.",
    )
    logging.getLogger("ai_agent_handler").setLevel(logging.CRITICAL)
    with no_op_seam():
        section.rows.append(_s3_rows(window, section.notes))
        section.rows.append(_fifo_row(window))
    api.clear_providers()
    _validation_rows(smoke, section)
    return section
