"""``import ai_agent_handler`` against ``import boto3``, each in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .common import ROOT, Row, Section, Series

TARGET_EXTRA_MS = 20.0
#: Packages a handler's import must not bring (each is loaded only where it is used).
HEAVY = ("moto", "grpc", "flask", "opentelemetry", "mcp", "httpx", "pydantic")

_PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
loaded = {{m.split(".")[0] for m in sys.modules}}
heavy = sorted(loaded & {{{heavy}}})
print(json.dumps({{"ms": elapsed * 1e3, "heavy": heavy}}))
"""


def _once(module: str) -> tuple[float, list[str]]:
    # Bytecode caches on, as in an installed package (pip compiles them at install time).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE.format(module=module, heavy=", ".join(repr(h) for h in HEAVY)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    return float(result["ms"]), list(result["heavy"])


def run(smoke: bool) -> Section:
    rounds = 3 if smoke else 15
    section = Section(
        "Import cost",
        f"Time of the import statement alone in a fresh interpreter (bytecode cached),"
        f" {rounds} runs each, alternating. The anchor is `import boto3`, which the package"
        " needs anyway.",
    )
    boto3_ms, ours_ms, extra = Series(), Series(), Series()
    heavy: set[str] = set()
    _once("boto3")
    _once("ai_agent_handler")  # write bytecode caches first
    for _ in range(rounds):
        anchor, _unused = _once("boto3")
        ours, loaded = _once("ai_agent_handler")
        heavy.update(loaded)
        boto3_ms.add(anchor)
        ours_ms.add(ours)
        extra.add(ours - anchor)
    section.rows.append(
        Row(
            "import ai_agent_handler vs import boto3",
            f"{ours_ms.median:.0f} ms ({ours_ms.spread('{:.0f}')})",
            f"{boto3_ms.median:.0f} ms ({boto3_ms.spread('{:.0f}')})",
            f"{ours_ms.median / boto3_ms.median:.2f}x, +{extra.median:.1f} ms",
            f"<= +{TARGET_EXTRA_MS:.0f} ms",
            extra.median <= TARGET_EXTRA_MS,
        )
    )
    after_boto3, openfeature = _breakdown()
    section.notes.append(
        f"Where the extra goes (one interpreter, `-X importtime`, after `import boto3`):"
        f" the package adds {after_boto3:.1f} ms, of which {openfeature:.1f} ms is"
        " `openfeature-sdk` (imported on a run's first flag decision, not with the"
        " package); the rest is the package's own modules. The fresh-interpreter difference"
        " above also carries the noise of two separate process start-ups."
    )
    section.notes.append(
        "Heavy modules loaded by `import ai_agent_handler`: "
        + (", ".join(sorted(heavy)) if heavy else f"none (no {', '.join(HEAVY)})")
        + ". The flagd file provider, moto, OpenTelemetry and the MCP SDK are imported only"
        " where used."
    )
    return section


def _breakdown() -> tuple[float, float]:
    """Milliseconds ``ai_agent_handler`` and ``openfeature.api`` add after boto3 is loaded."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import boto3; import ai_agent_handler"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    cumulative: dict[str, float] = {}
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            cumulative[parts[2].strip()] = int(parts[1]) / 1e3
    return cumulative.get("ai_agent_handler", 0.0), cumulative.get("openfeature.api", 0.0)
