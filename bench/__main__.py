"""``python -m bench [--smoke] [--out PATH] [--only NAME...]``: run the benchmarks.

Writes a Markdown report (default ``bench/RESULTS.md``; with ``--smoke`` a file in the
temporary directory, so a smoke run never overwrites the published figures). Every figure
is a ratio against its anchor measured in the same run. Exit status 0 even when a target
is missed: the report says by how much; CI runs ``--smoke`` only to prove the suite runs.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .common import ROOT, Section, machine, verdict

SECTIONS = (
    "hot_path",
    "flag_change",
    "flag_faults",
    "throughput",
    "mcp_tools",
    "mcp_bounds",
    "audit_trail",
    "import_time",
    "shadow_reads",
    "backfill",
)


def _isolate_from_aws() -> None:
    # Every AWS call goes to moto or the loopback endpoint; dummy credentials make sure a
    # mistake can never reach a real account.
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("ROLLOUT_PHASE", "dev")


def _render(sections: list[Section], smoke: bool, seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python3 dev.py bench{' --smoke' if smoke else ''}` on"
        f" {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC in"
        f" {seconds:.0f} s." + (" SMOKE RUN: tiny sizes, figures not meaningful." if smoke else ""),
        "",
        *machine(),
        "",
        "Figures are medians of repeated runs, with the spread (min-max over runs) where it"
        " matters; each ratio is candidate / anchor from the same run. The machine runs other"
        " work at the same time, so spreads are wide; ratios within a run are the stable part.",
    ]
    for section in sections:
        lines += ["", f"## {section.title}", "", section.intro, ""]
        lines += [
            "| figure | this library | anchor | ratio | target | |",
            "|---|---|---|---|---|---|",
        ]
        for row in section.rows:
            lines.append(
                f"| {row.figure} | {row.candidate} | {row.anchor} | {row.ratio} |"
                f" {row.target} | {verdict(row.met)} |"
            )
        if section.notes:
            lines.append("")
            lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI smoke test)")
    parser.add_argument("--out", type=Path, help="where to write the Markdown report")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    _isolate_from_aws()
    logging.basicConfig(level=logging.CRITICAL)  # failures are counted in the report
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: a line per request
    from . import (
        audit_trail,
        backfill,
        flag_change,
        flag_faults,
        hot_path,
        import_time,
        mcp_bounds,
        mcp_tools,
        shadow_reads,
        throughput,
    )

    runners: dict[str, Callable[[bool], Section]] = {
        "hot_path": hot_path.run,
        "flag_change": flag_change.run,
        "flag_faults": flag_faults.run,
        "throughput": throughput.run,
        "mcp_tools": mcp_tools.run,
        "mcp_bounds": mcp_bounds.run,
        "audit_trail": audit_trail.run,
        "import_time": import_time.run,
        "shadow_reads": shadow_reads.run,
        "backfill": backfill.run,
    }
    start = time.perf_counter()
    sections = []
    for name in args.only or SECTIONS:
        print(f"bench: {name} ...", flush=True)
        section = runners[name](args.smoke)
        for row in section.rows:
            print(f"  {row.figure}: {row.ratio} ({verdict(row.met)})", flush=True)
        sections.append(section)
    out = args.out or (
        Path(tempfile.gettempdir()) / "ai_agent_handler-bench-smoke.md"
        if args.smoke
        else ROOT / "bench" / "RESULTS.md"
    )
    out.write_text(_render(sections, args.smoke, time.perf_counter() - start))
    print(f"bench: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
