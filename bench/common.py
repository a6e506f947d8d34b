"""What the benchmarks share: statistics, the upstream-style anchor, flag files, the machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

from ai_agent_handler import Utility
from ai_agent_handler.transport.invoke import json_dumps

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("bench")


# -- statistics -----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Series:
    """Repeated measurements of one figure (one value per run)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self, fmt: str = "{:.3g}") -> str:
        if len(self.values) < 2:
            return "1 run"
        low, high = min(self.values), max(self.values)
        return f"{fmt.format(low)}-{fmt.format(high)} ({len(self.values)} runs)"


@dataclass
class Row:
    """One line of a results table: a figure, its anchor, their ratio and the target."""

    figure: str
    candidate: str
    anchor: str
    ratio: str
    target: str
    met: bool | None
    note: str = ""


@dataclass
class Section:
    title: str
    intro: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


# -- the anchor: how upstream streamed -------------------------------------------------------
class UpstreamStyleHandler:
    """Upstream's ``send_data_to_stream``: key from ``endpoint_id``, one blocking call per chunk.

    No flag, no decision: the legacy path every figure with the flag on is compared with.
    """

    def __init__(self, aws_lambda: Any = None, task_queue: Any = None) -> None:
        self.logger = LOG
        self.setting: dict[str, Any] = {}
        self.endpoint_id = "aws-prod-us-east-1"
        self.run: dict[str, Any] | None = {"run_uuid": "run-anchor"}
        self.connection_id: str | None = "conn-anchor"
        self.aws_lambda = aws_lambda
        self.task_queue = task_queue

    def send_data_to_stream(
        self,
        index: int = 0,
        data_format: str = "text",
        chunk_delta: str = "",
        is_message_end: bool = False,
        suffix: str = "",
    ) -> None:
        if self.connection_id is None or self.run is None:
            return
        message_group_id = f"{self.connection_id}-{self.run['run_uuid']}"
        if suffix:
            message_group_id += f"-{suffix}"
        data = json_dumps(
            {
                "message_group_id": message_group_id,
                "data_format": data_format,
                "index": index,
                "chunk_delta": chunk_delta,
                "is_message_end": is_message_end,
            }
        )
        Utility.invoke_funct_on_aws_lambda(
            self.logger,
            self.endpoint_id,
            "send_data_to_stream",
            params={"connection_id": self.connection_id, "data": data},
            setting=self.setting,
            test_mode=self.setting.get("test_mode"),
            aws_lambda=self.aws_lambda,
            invocation_type="Event",
            message_group_id=message_group_id,
            task_queue=self.task_queue,
        )


def _no_op(*_: Any, **__: Any) -> None:
    return None


@contextmanager
def no_op_seam() -> Iterator[None]:
    """``Utility.invoke_funct_on_aws_lambda`` replaced by a plain no-op (not a Mock: a Mock
    costs microseconds per call and would drown what is measured)."""
    with mock.patch.object(Utility, "invoke_funct_on_aws_lambda", _no_op):
        yield


class FakeLambda:
    """An in-process Lambda client whose ``invoke`` returns at once (no network, no moto)."""

    def invoke(self, **_: Any) -> dict[str, Any]:
        return {"StatusCode": 202}


def new_run(uuid: str) -> dict[str, Any]:
    return {"run_uuid": uuid, "updated_by": "bench", "thread": {"thread_uuid": "thread-bench"}}


# -- flag files -------------------------------------------------------------------------------
def flag_document(composite: bool, version: int) -> dict[str, Any]:
    """The shipped dev phase file with the default variant set (a valid phase file)."""
    doc: dict[str, Any] = json.loads((ROOT / "flags" / "dev.flagd.json").read_text())
    doc["flags"]["composite-partition-key"]["defaultVariant"] = (
        "composite" if composite else "legacy"
    )
    doc.setdefault("metadata", {})["version"] = version
    return doc


def write_atomically(path: Path, doc: dict[str, Any]) -> None:
    """How editors and the CLI replace a flag file: write a sibling, then rename over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".flag-")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(tmp, path)


def restore_with_old_mtime(backup: Path, path: Path) -> None:
    """A rollback as ``cp -p backup live`` does it: contents and the backup's older mtime."""
    shutil.copy2(backup, path)


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.001) -> float | None:
    """Seconds until ``condition()`` held, or None after ``timeout``."""
    start = time.perf_counter()
    while True:
        if condition():
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            return None
        time.sleep(step)


# -- the machine ------------------------------------------------------------------------------
def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in (
        "boto3",
        "botocore",
        "openfeature-sdk",
        "openfeature-flagd-core",
        "openfeature-provider-flagd",
        "moto",
    ):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- machine: {platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores",
        f"- Python {platform.python_version()} ({sys.executable})",
        "- " + ", ".join(versions),
        f"- commit {commit or 'unknown'}",
    ]
