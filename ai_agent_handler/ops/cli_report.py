"""``ai-agent-rollout report --html FILE``: the approvers' page of the rollout.

What it shows is read by :mod:`.report_io` and rendered by :mod:`.report`: one
self-contained HTML file (no script, no network), for every phase or those named.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics import METRICS_NAMESPACE
from . import cli_history, report, report_io
from ._cli_base import EXIT_ERROR, EXIT_OK, EXIT_USAGE, PROG, CliError
from .cli_retire import _days, _shipped_or_store_error
from .retire import MAX_DAYS

Out = Callable[[str], None]

EPILOG = f"""\
examples:
  {PROG} report --html rollout.html                 every phase (named live files, else phase files)
  {PROG} report --html prod.html production --days 30 --endpoint aws-prod-eu-west-1

The page: a timeline of every change and ramp step (marked operator, ramp or alarm, with the
reason), the share of key decisions on the composite key over the window from CloudWatch
(KeyDecisions; the page says so when metrics cannot be read), the endpoints and why they are
composite, each ramp with its guards' evidence per tick, and the retire-check checklist.
Histories of thousands of changes are drawn one marker per day and phase.
"""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``report`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "report",
        help="one self-contained HTML page of the rollout for approvers: timeline, composite "
        "share, endpoints, ramp evidence, retire checklist",
        description="The rollout as one HTML page (no script, no network; prints well).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("phases", nargs="*", metavar="PHASE", help="only these phases")
    parser.add_argument(
        "--html", required=True, metavar="FILE", help="where to write the page (replaced whole)"
    )
    parser.add_argument(
        "--days",
        type=_days,
        default=14,
        metavar="N",
        help=f"the window of the metrics and the checklist (default 14, at most {MAX_DAYS})",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="ENDPOINT_ID",
        help="show the key this endpoint gets and why (repeatable)",
    )
    parser.add_argument(
        "--namespace",
        default=METRICS_NAMESPACE,
        metavar="NS",
        help=f"CloudWatch namespace of the counters (default {METRICS_NAMESPACE})",
    )


def run(
    args: argparse.Namespace,
    out: Out,
    targets: Sequence[Any],
    live: Mapping[str, str | None],
    shipped: Callable[[str], str],
) -> int:
    """Gather, render and write the page; print its path."""
    path = Path(args.html)
    if args.html == "" or path.is_dir():
        raise CliError(f"--html needs a file name, got {args.html!r}", EXIT_USAGE)
    if not path.parent.is_dir():
        raise CliError(f"--html {args.html}: no such folder {path.parent}", EXIT_ERROR)
    files = [report_io.Source(t.phase, t.source, t.origin, t.named_by) for t in targets]
    page = report_io.gather(
        files,
        days=args.days,
        live=live,
        shipped=_shipped_or_store_error(shipped),
        endpoints=args.endpoint,
        namespace=args.namespace,
        audit_log=args.audit_log,
        progress=cli_history.progress,
    )
    try:
        report_io.write(path, report.render(page))
    except OSError as err:
        raise CliError(f"cannot write {path}: {err.strerror or err}", EXIT_ERROR) from err
    changes = len(page.events)
    unreachable = [share.phase for share in page.shares if share.error]
    if args.json:
        out(
            json.dumps(
                {
                    "html": str(path.resolve()),
                    "changes": changes,
                    "damaged": page.damaged,
                    "metrics_unreachable": unreachable,
                },
                indent=2,
            )
        )
        return EXIT_OK
    out(f"report written: {path.resolve()}")
    out(f"  {changes} change(s) of {len(files)} file(s); {page.damaged} damaged record(s)")
    if unreachable:
        print(
            f"{PROG}: note: metrics could not be read for {', '.join(unreachable)} (the page "
            "says why)",
            file=sys.stderr,
            flush=True,
        )
    return EXIT_OK
