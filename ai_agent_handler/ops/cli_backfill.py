"""``ai-agent-rollout backfill``: copy a table's items to the composite key, and verify it.

What is copied and how is :mod:`.backfill` (decisions) and :mod:`.backfill_io` (DynamoDB,
the checkpoints); this is the command line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..exceptions import BackfillError
from . import backfill_io
from ._cli_base import (
    EXIT_NOT_DONE,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    argument_type,
    location,
    printable,
    whole_number,
)
from .backfill import Job, Worker, mapping_rule, parse_map

Out = Callable[[str], None]

EPILOG = f"""\
examples:
  # what a copy would do, per endpoint (reads only)
  {PROG} backfill --source-table aace-agents-v1 --target-table aace-agents \\
      --map parts.csv --checkpoint s3://ops-flags/backfill --dry-run
  # the copy: 8 scan segments over 2 workers (run 0/2 and 1/2, anywhere), at most 400
  # write units per second in all; run the same command again to continue after a failure
  {PROG} backfill --source-table aace-agents-v1 --target-table aace-agents \\
      --map parts.csv --checkpoint s3://ops-flags/backfill --segments 8 --worker 0/2 \\
      --max-write-units 400
  # every copy there with the same content? (exit 0 only then); records it for retire-check
  {PROG} backfill verify --source-table aace-agents-v1 --target-table aace-agents \\
      --map parts.csv --checkpoint s3://ops-flags/backfill

The map: CSV with the header legacy_key,endpoint_id,part_id, or JSON
{{"legacy_key": ["endpoint_id", "part_id"]}}; or --part-of module:function, called with each
item (boto3's resource form) and returning (endpoint_id, part_id) or None. An item no rule
maps is counted and skipped, never guessed. Each target item gets the composite key in
--target-key, and endpoint_id and part_id; an item already under the composite key is never
overwritten (counted as a conflict when it differs).

--checkpoint defaults to <file>.backfill beside the live flag file --file names, where
retire-check finds the verification records. Exit: 0 done (verify: complete), 5 done with
items skipped (unmapped or invalid; verify: differences), 1 error (run the same command
again to continue), 2 usage.
"""


@argument_type
def _worker(text: str) -> Worker:
    try:
        return Worker.parse(text)
    except BackfillError as err:
        raise ValueError(str(err)) from None


@argument_type
def _units(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a positive number of capacity units per second, not {text}")
    return value


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``backfill [verify]`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "backfill",
        help="copy a table's items from the legacy key to the composite key (resumable; "
        "'backfill verify' proves it complete)",
        description="Copy a DynamoDB table's items from the legacy key (endpoint_id) to the "
        "composite key (endpoint_id#part_id), or verify the copy.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument(
        "action", nargs="?", choices=("verify",), help="verify: compare instead of copying"
    )
    parser.add_argument("--source-table", required=True, metavar="TABLE")
    parser.add_argument(
        "--source-key",
        default="endpoint_id",
        metavar="ATTR",
        help="the attribute holding the legacy key (default endpoint_id)",
    )
    parser.add_argument(
        "--target-table", required=True, metavar="TABLE", help="may be the source table"
    )
    parser.add_argument(
        "--target-key",
        metavar="ATTR",
        help="the target table's partition key, which gets endpoint_id#part_id (default "
        "partition_key; with the same table, --source-key)",
    )
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument(
        "--map",
        metavar="FILE",
        help="legacy key -> endpoint_id, part_id: CSV (legacy_key,endpoint_id,part_id) or JSON",
    )
    rule.add_argument(
        "--part-of",
        metavar="MODULE:FUNCTION",
        help="a function of the item returning (endpoint_id, part_id) or None",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH|s3://BUCKET/PREFIX",
        help="where the checkpoints and verification records are kept (default: "
        "<file>.backfill beside --file)",
    )
    parser.add_argument(
        "--segments",
        type=whole_number(1),
        metavar="N",
        help="scan segments of the table (default: the number of workers); keep it for a resume",
    )
    parser.add_argument(
        "--worker",
        type=_worker,
        default=Worker(),
        metavar="I/N",
        help="this is worker I of N (from 0): it takes the segments s with s %% N == I",
    )
    parser.add_argument(
        "--max-read-units",
        type=_units,
        metavar="R",
        help="read capacity units per second for the whole job (each worker takes R/N)",
    )
    parser.add_argument(
        "--max-write-units",
        type=_units,
        metavar="W",
        help="write capacity units per second for the whole job (each worker takes W/N)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="scan and count per endpoint; write nothing, no checkpoint",
    )
    parser.add_argument(
        "--page-size",
        type=whole_number(1),
        default=backfill_io.PAGE_SIZE,
        metavar="N",
        help=f"items per scanned page (default {backfill_io.PAGE_SIZE})",
    )
    parser.add_argument(
        "--write-threads",
        type=whole_number(1),
        default=8,
        metavar="N",
        help="writes in flight per worker (default 8)",
    )
    parser.add_argument(
        "--progress-every",
        type=argument_type(float),
        default=10.0,
        metavar="SECONDS",
        help="a progress line on stderr this often (default 10)",
    )


def check_usage(args: argparse.Namespace) -> None:
    """The command line's values, before any table is read (exit 2)."""
    for option in ("source_table", "target_table", "source_key", "target_key", "checkpoint"):
        value = getattr(args, option)
        if value is not None and not value.strip():
            raise CliError(f"--{option.replace('_', '-')} must not be empty", EXIT_USAGE)
    if args.action == "verify" and (args.dry_run or args.max_write_units is not None):
        raise CliError("backfill verify writes nothing: no --dry-run, no --max-write-units", 2)
    if args.segments is None:
        args.segments = args.worker.count
    if args.target_key is None:
        same = args.source_table == args.target_table
        args.target_key = args.source_key if same else "partition_key"
    if args.checkpoint is not None:
        args.checkpoint = location(args.checkpoint)
    elif args.file is not None:
        args.checkpoint = backfill_io.backfill_root(args.file)
    elif not args.dry_run:
        raise CliError(
            "backfill needs --checkpoint PATH|s3://BUCKET/PREFIX, or --file naming the live "
            "flag file to keep it beside (<file>.backfill, where retire-check finds it)",
            EXIT_USAGE,
        )
    try:
        job = Job(
            args.source_table,
            args.target_table,
            args.source_key,
            args.target_key,
            args.segments,
        )
        args.worker.segments(job.segments)
    except BackfillError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    args.job = job
    args.rule = _rule(args)


def _rule(args: argparse.Namespace) -> backfill_io.Rule:
    if args.map is not None:
        try:
            text = Path(args.map).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or err
            raise CliError(f"cannot read --map {args.map}: {why}", EXIT_USAGE) from None
        try:
            return mapping_rule(parse_map(text, source=args.map))
        except BackfillError as err:
            raise CliError(str(err), EXIT_USAGE) from None
    module_name, colon, name = str(args.part_of).partition(":")
    if not colon or not module_name or not name:
        raise CliError(f"--part-of takes MODULE:FUNCTION, not {args.part_of!r}", EXIT_USAGE)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")  # a module beside you, as python -m finds it
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the module's own code may fail in any way
        raise CliError(
            f"--part-of: cannot import {module_name}: {type(err).__name__}: {err}", EXIT_USAGE
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise CliError(f"--part-of: {module_name} has no function {name}", EXIT_USAGE)
    return backfill_io.function_rule(function, args.part_of)


def run(args: argparse.Namespace, out: Out) -> int:
    """``backfill`` or ``backfill verify``, as :func:`check_usage` left ``args``."""

    def progress(line: str) -> None:
        print(printable(line), file=sys.stderr, flush=True)

    common: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "worker": args.worker,
        "max_read_units": args.max_read_units,
        "page_size": args.page_size,
        "progress": progress,
        "progress_every": args.progress_every,
    }
    if args.action == "verify":
        found = backfill_io.verify_backfill(args.job, args.rule, **common)
        _show(out, found.to_json(), args.json, verify=True)
        return EXIT_OK if found.complete else EXIT_NOT_DONE
    report = backfill_io.run_backfill(
        args.job,
        args.rule,
        max_write_units=args.max_write_units,
        dry_run=args.dry_run,
        write_threads=args.write_threads,
        **common,
    )
    _show(out, report.to_json(), args.json, verify=False)
    skipped = report.counts.unmapped + report.counts.invalid
    return EXIT_OK if report.done and not skipped else EXIT_NOT_DONE


def _show(out: Out, data: Mapping[str, Any], as_json: bool, *, verify: bool) -> None:
    if as_json:
        out(json.dumps(data, indent=2, sort_keys=True))
        return
    job = data["job"]
    tables = (
        f"{job['source_table']}.{job['source_key']} -> {job['target_table']}.{job['target_key']}"
    )
    worker = "" if data["worker"] == "0/1" else f", worker {data['worker']}"
    endpoints = data["endpoints"]
    if verify:
        state = "complete" if data["complete"] else "NOT complete"
        out(f"backfill verify {tables}{worker}: {state}")
        out(
            f"  {data['items']:,} mapped item(s) over {len(endpoints):,} endpoint(s): "
            f"{data['missing']:,} missing, {data['different']:,} different"
        )
        for line in [*data["differences"], *data["samples"]]:
            out(f"  - {line}")
        for key, entry in endpoints.items():
            if not entry["complete"]:
                out(f"  endpoint {key}: {entry['items']:,} item(s), not complete")
    else:
        what = "dry run" if data["dry_run"] else ("done" if data["done"] else "NOT done")
        out(f"backfill {tables}{worker}: {what}")
        out(
            f"  {data['scanned']:,} scanned: {data['copied']:,} copied, {data['already']:,} "
            f"already there, {data['conflicts']:,} conflict(s) (live items kept), "
            f"{data['composite']:,} already composite"
        )
        out(
            f"  capacity: {data['read_units']:,.1f} read and {data['write_units']:,.1f} write "
            f"units; {data['throttled']:,} throttled request(s); {data['seconds']:.1f} s"
        )
        if data["dry_run"]:
            for key, count in endpoints.items():
                out(f"  endpoint {key}: {count:,} item(s)")
        for line in data["samples"]:
            out(f"  - {line}")
        if data["checkpoint"]:
            out(f"  checkpoints: {data['checkpoint']}")
    if data["unmapped"]:
        shown = ", ".join(f"{k} ({n:,})" for k, n in list(data["unmapped_keys"].items())[:20])
        out(f"  {data['unmapped']:,} unmapped item(s), skipped: {shown}")
    if data.get("invalid"):
        out(f"  {data['invalid']:,} invalid item(s), skipped (the first are listed above)")
