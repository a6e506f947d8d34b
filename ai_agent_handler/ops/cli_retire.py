"""``ai-agent-rollout retire-check``: can the flag go? (the plan's phase 4 as checks).

The checks and their evidence are :mod:`.retire`'s; this module reads the command line,
prints the answer and turns it into the exit code: 0 the flag can be removed, 5 not yet (a
check failed or could not tell), 1 a read failed (and nothing said no), 2 a bad command line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import FlagConfigError, StoreError
from ..metrics import METRICS_NAMESPACE
from ..settings import check_phase
from ._cli_base import (
    EXIT_ERROR,
    EXIT_NOT_DONE,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    argument_type,
    location,
    printable,
)
from .retire import MAX_DAYS, Report, code_search
from .retire_io import retire_check
from .shadow import DEFAULT_MIN_CONSISTENCY, parse_min_consistency

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_s3 import S3Client

Out = Callable[[str], None]

#: The word that says a phase has no live file.
NONE = "none"

DESCRIPTION = """\
Whether the flag can be removed (the migration plan's phase 4), as five checks:
  files        the shipped and the live file of every phase: composite for every endpoint
  quiet        no live file changed in the last N days
  decisions    no legacy decision and no flag evaluation error in N days (CloudWatch)
  receivers    receivers read, and none needed the legacy key (CloudWatch)
  consistency  receivers' shadow reads: no backfill owed, and the copies under both keys
               agree at least --min-consistency % of the time (CloudWatch)
It also prints the git grep that lists where code still names the flag (the removal's work).
Exit 0: the flag can be removed (rollout.md section 7); 5: not yet; 1: a read failed."""

EPILOG = f"""\
example (the live files of section 3 of rollout.md):
  {PROG} retire-check --days 14 --live dev=$DEV --live staging=$STAGING \\
      --live production=$PROD

A phase without --live cannot pass: name its live file, or say it has none (dev=none).
A check is PASS, FAIL, UNKNOWN (no evidence either way: counts as not ready) or ERROR (a
read failed). CloudWatch: cloudwatch:GetMetricStatistics; S3: s3:GetObject on the live
files, s3:ListBucket for the newest audit record.
"""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``retire-check`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "retire-check",
        help="whether the flag can be removed: checks files, quiet, metrics and code",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument(
        "--days",
        type=_days,
        required=True,
        metavar="N",
        help=f"the window: the last N days (a whole number, 1 to {MAX_DAYS})",
    )
    parser.add_argument(
        "--live",
        action="append",
        default=[],
        metavar="PHASE=PATH|s3://BUCKET/KEY|none",
        help="the live flag file of a phase's fleet (once per phase); none: that fleet reads "
        "only the shipped file",
    )
    parser.add_argument(
        "--namespace",
        default=METRICS_NAMESPACE,
        metavar="NS",
        help=f"CloudWatch namespace of the counters (default {METRICS_NAMESPACE})",
    )
    parser.add_argument(
        "--min-consistency",
        type=argument_type(parse_min_consistency),
        default=DEFAULT_MIN_CONSISTENCY,
        metavar="P",
        help="the consistency check passes from P %% on: the share of the receivers' shadow "
        "reads that found the item under both keys whose copies agree (above 0, at most 100; "
        f"default {DEFAULT_MIN_CONSISTENCY:g})",
    )


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, 1 or more: {text!r}")
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"CloudWatch keeps metrics for {MAX_DAYS} days (15 months): at most {MAX_DAYS}, "
            f"got {value}"
        )
    return value


def check_usage(args: argparse.Namespace) -> dict[str, str | None]:
    """Every value of the command line, before anything is read (exit 2); the live file of
    each phase named with ``--live`` (None: it has none)."""
    if getattr(args, "file", None) is not None or getattr(args, "phase", None) is not None:
        raise CliError(
            "retire-check reads every phase: name the live files with --live PHASE=... "
            "instead of --file or --phase",
            EXIT_USAGE,
        )
    live: dict[str, str | None] = {}
    for given in args.live:
        phase, equals, value = given.partition("=")
        if not equals or not phase:
            raise CliError(
                f"--live needs PHASE=PATH|s3://BUCKET/KEY|none, got {given!r}", EXIT_USAGE
            )
        try:
            check_phase(phase, "phase in --live")
        except FlagConfigError as err:
            raise CliError(str(err), EXIT_USAGE) from err
        if phase in live:
            raise CliError(f"--live {phase} given twice", EXIT_USAGE)
        if value == "":
            raise CliError(
                f"--live {phase}= is empty: is the variable you passed unset? (`--live "
                f"{phase}=none` if that fleet has no live file)",
                EXIT_USAGE,
            )
        live[phase] = None if value == NONE else location(value)
    if args.namespace == "":
        raise CliError("--namespace is empty", EXIT_USAGE)
    return live


def run(
    args: argparse.Namespace,
    out: Out,
    shipped: Callable[[str], str],
    *,
    now: datetime.datetime | None = None,
    cloudwatch_client: CloudWatchClient | None = None,
    s3_client: S3Client | None = None,
) -> int:
    """Run the checks; ``shipped(phase)`` is the shipped file of a phase (path).

    ``now`` and the clients are for tests; by default the current time and boto3's clients.
    """
    live = check_usage(args)
    report = retire_check(
        days=args.days,
        live=live,
        shipped=_shipped_or_store_error(shipped),
        namespace=args.namespace,
        audit_log=args.audit_log,
        cloudwatch_client=cloudwatch_client,
        s3_client=s3_client,
        now=now,
        min_consistency=args.min_consistency,
    )
    if args.json:
        out(json.dumps({**report.to_json(), "code_search": code_search()}, indent=2))
    else:
        _print(report, out)
    if report.blocking:
        return EXIT_NOT_DONE
    if report.errors:
        first = report.errors[0]
        print(
            f"{PROG}: error: {first.name}: {printable(' '.join(first.detail.split()))}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_ERROR
    return EXIT_OK


def _shipped_or_store_error(shipped: Callable[[str], str]) -> Callable[[str], str]:
    def find(phase: str) -> str:
        try:
            return shipped(phase)
        except CliError as err:  # not found where --phase looks
            raise StoreError(str(err)) from err

    return find


def _print(report: Report, out: Out) -> None:
    """The checks, their details wrapped to the terminal's width (``$COLUMNS``, else 120
    when not a terminal; a path longer than a line stays whole), the command that lists
    the code still naming the flag, and the answer."""
    columns = max(60, shutil.get_terminal_size((120, 24)).columns)
    width = max(len(check.name) for check in report.checks)
    hanging = " " * (8 + width + 2)
    for check in report.checks:
        head = f"{check.result.upper():<8}{check.name:<{width}}  "
        wrapped = textwrap.wrap(
            check.detail,
            columns,
            initial_indent=head,
            subsequent_indent=hanging,
            break_long_words=False,  # a path stays whole, to be copied
            break_on_hyphens=False,
        )
        for line in wrapped or [head.rstrip()]:
            out(line)
    out("where code still names the flag (the removal's work; run it in each repository):")
    command = textwrap.wrap(shlex.join(code_search()), columns - 4, break_long_words=False)
    for at, line in enumerate(command):
        out(f"  {line} \\" if at < len(command) - 1 else f"  {line}")
    blocking, errors = len(report.blocking), len(report.errors)
    if report.ready:
        out("the flag can be removed: follow rollout.md section 7")
        return
    parts = [f"{blocking} check(s) fail"] if blocking else []
    if errors:
        parts.append(f"{errors} could not read their evidence")
    out("not yet: " + ", ".join(parts))
