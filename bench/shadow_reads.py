"""Per-read cost of ``read_with_shadow`` against ``read_with_fallback`` (the read unshadowed)."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from typing import Any

from ai_agent_handler.receiver import (
    SHADOW_SAME,
    ReceiverMetrics,
    RoutingKey,
    read_with_fallback,
    read_with_shadow,
    split_key,
)

from .common import Row, Section, Series

#: At the default sample the shadow part must cost next to nothing per read.
TARGET = 1.10
IGNORE = frozenset({"pk", "endpoint_id", "part_id"})
VARIANTS = ("fallback", "shadow_0.01", "shadow_1")


class DictTable:
    """A table in a dict: the item under each key, and how many reads were made."""

    def __init__(self, routing: RoutingKey) -> None:
        item = {
            "sk": "run#run-bench",
            "status": "in_progress",
            "thread_uuid": "thread-bench",
            "updated_by": "bench",
            "endpoint_id": routing.endpoint_id,
        }
        # The same run under both keys: equal but for the key attributes (ShadowSame).
        self.items = {
            routing.key: {**item, "pk": routing.key, "part_id": routing.part_id},
            routing.legacy_key: {**item, "pk": routing.legacy_key},
        }
        self.reads = 0

    def read(self, key: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.items.get(key)


def _reader(
    name: str, metrics: ReceiverMetrics
) -> Callable[[Callable[[str], Any], RoutingKey], Any]:
    if name == "fallback":
        return lambda read, routing: read_with_fallback(read, routing, metrics=metrics)
    sample = 0.01 if name == "shadow_0.01" else 1.0
    return lambda read, routing: read_with_shadow(
        read, routing, sample=sample, ignore=IGNORE, metrics=metrics
    )


def _time_reads(name: str, routing: RoutingKey, count: int) -> tuple[float, float, int]:
    """(seconds per read, extra reads per call beyond the first, lines counting ShadowSame)"""
    table, stream = DictTable(routing), io.StringIO()
    call = _reader(name, ReceiverMetrics(stream=stream, enabled=True))
    read = table.read
    start = time.perf_counter()
    for _ in range(count):
        call(read, routing)
    elapsed = time.perf_counter() - start
    lines = stream.getvalue().splitlines()
    assert len(lines) == count, (name, len(lines))
    same = sum(f'"{SHADOW_SAME}":1' in line for line in lines)
    return elapsed / count, (table.reads - count) / count, same


def run(smoke: bool) -> Section:
    calls = 500 if smoke else 20_000
    rounds = 2 if smoke else 9
    routing = split_key("aws-prod-us-east-1#acme-corp", "composite")
    section = Section(
        "Per-read cost of shadow reads",
        f"{calls} reads per run, {rounds} runs, variants interleaved in random order."
        " Composite routing key; the item is found under the composite key (and an equal copy"
        " is under the legacy key, so a sampled read ends `ShadowSame`). `read` is a dict"
        " lookup, so the figures are the helper's own cost; metrics on (one EMF line per"
        " read, written to an in-memory stream). Anchor: `read_with_fallback` on the same"
        " table, which reads the composite key only here.",
    )
    per_read: dict[str, Series] = {name: Series() for name in VARIANTS}
    extra: dict[str, Series] = {name: Series() for name in VARIANTS}
    ratio: dict[str, Series] = {name: Series() for name in VARIANTS[1:]}
    shadowed = {name: 0 for name in VARIANTS}
    for name in VARIANTS:  # warm up: the first call of each path
        _time_reads(name, routing, 50)
    for _ in range(rounds):
        measured: dict[str, float] = {}
        for name in random.sample(VARIANTS, len(VARIANTS)):
            seconds, extra_reads, same = _time_reads(name, routing, calls)
            measured[name] = seconds
            per_read[name].add(seconds * 1e6)
            extra[name].add(extra_reads)
            shadowed[name] += same
        for name in VARIANTS[1:]:
            ratio[name].add(measured[name] / measured["fallback"])
    assert shadowed["fallback"] == 0 and shadowed["shadow_1"] == calls * rounds
    for name, label, target in (
        ("shadow_0.01", "per read, read_with_shadow sample=0.01", TARGET),
        ("shadow_1", "per read, read_with_shadow sample=1", None),
    ):
        section.rows.append(
            Row(
                label,
                f"{per_read[name].median:.2f} us, {extra[name].median:.3f} extra reads/call",
                f"{per_read['fallback'].median:.2f} us,"
                f" {extra['fallback'].median:.3f} extra reads/call",
                f"{ratio[name].median:.2f}x (runs {ratio[name].spread('{:.2f}')})",
                "informational" if target is None else f"<= {target}x",
                None if target is None else ratio[name].median <= target,
            )
        )
    section.notes.append(
        f"Spread per read: anchor {per_read['fallback'].spread('{:.2f}')} us,"
        f" sample=0.01 {per_read['shadow_0.01'].spread('{:.2f}')} us,"
        f" sample=1 {per_read['shadow_1'].spread('{:.2f}')} us."
        f" Extra reads per call, all runs: sample=0.01"
        f" {extra['shadow_0.01'].spread('{:.4f}')}, sample=1 {extra['shadow_1'].spread('{:.3f}')}"
        f" (expected 0.01 and 1: a sampled read that found the composite item reads the"
        f" legacy key once more). Sampled reads ended ShadowSame: {shadowed['shadow_0.01']}"
        f" of {calls * rounds} at sample=0.01, {shadowed['shadow_1']} at sample=1."
    )
    section.notes.append(
        "What the ratio leaves out: against a real table the extra read is a second"
        " `GetItem` (a few milliseconds, and read capacity) on each sampled read, which"
        " dwarfs the microseconds here; at sample=0.01 that is 1% more reads of the items"
        " found under the composite key. A sampled line is also longer (five more"
        " counters and the `shadow` property)."
    )
    return section
