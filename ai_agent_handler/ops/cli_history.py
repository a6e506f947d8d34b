"""``ai-agent-rollout history``: the audit trail of the live files, newest first.

The records are :mod:`.history_io`'s (a local JSON-lines log, or the objects under
``<key>.audit/`` fetched with parallel GETs); what is shown and how is :mod:`.history`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..exceptions import FlagConfigError, FlagFileError, StoreError
from ..flag_file.document import parse
from . import history, history_io, times
from ._cli_base import (
    EXIT_ERROR,
    EXIT_OK,
    PROG,
    argument_type,
    exit_code,
    printable,
    whole_number,
)
from .explain import composite_threshold
from .store import open_store

Out = Callable[[str], None]


class Target(Protocol):
    """A file ``history`` reads (the CLI's target)."""

    @property
    def phase(self) -> str | None: ...

    @property
    def source(self) -> str: ...


EPILOG = f"""\
examples:
  {PROG} history                          every phase's live file, newest change first
  {PROG} history production --since 7d    the last week of production
  {PROG} history --endpoint aws-prod-eu-west-1 --limit 5
  {PROG} --file s3://ops-flags/ai-agent/production.flagd.json history --json

A change's trigger is "operator" (a command, a ramp lever such as pause), "ramp" (a tick's
step) or "alarm" (a tick that rolled back or paused on a guard breach). --endpoint keeps the
changes that moved that endpoint's key (allow-list, a percentage past its hash, all or
none), or that name it. Damaged records are listed and counted, never skipped silently.
"""


@argument_type
def _since(text: str) -> datetime.datetime:
    moment = times.parse_iso(text.strip())
    if moment is not None:
        return moment
    try:
        back = times.parse_duration(text)
    except ValueError:
        raise ValueError(
            f"not a time or a duration back: {text!r} (2026-12-01, 2026-12-01T09:00Z, 7d, 12h)"
        ) from None
    return times.utcnow() - datetime.timedelta(seconds=back)


_limit = whole_number(1)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``history`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "history",
        help="the audit trail: who changed what, when and why, newest first (every phase's "
        "named live file by default)",
        description="The audit trail of the flag files, newest first.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("phases", nargs="*", metavar="PHASE", help="only these phases")
    parser.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only changes from then on: a UTC time (2026-12-01, 2026-12-01T09:00Z) or a "
        "duration back (7d, 12h)",
    )
    parser.add_argument(
        "--endpoint", metavar="ENDPOINT_ID", help="only changes that moved this endpoint's key"
    )
    parser.add_argument("--actor", metavar="NAME", help="only changes by this actor")
    parser.add_argument("--limit", type=_limit, metavar="N", help="at most the newest N")


def run(args: argparse.Namespace, out: Out, targets: Sequence[Target]) -> int:
    """Show the records of ``targets`` that the filters keep, newest first."""
    code = EXIT_OK
    trails: list[history_io.Trail] = []
    errors: list[dict[str, Any]] = []
    for target in targets:
        filters = history.Filters(
            since=args.since,
            actor=args.actor,
            endpoint=args.endpoint,
            threshold=_threshold(target, args.endpoint),
            limit=args.limit,
        )
        try:
            trail = history_io.read_trail(
                target.source, filters, audit_log=args.audit_log, progress=progress(target.source)
            )
        except StoreError as err:
            code = max(code, exit_code(err) or EXIT_ERROR)
            errors.append({"phase": target.phase, "source": target.source, "error": str(err)})
            continue
        trail.records = [_with_phase(record, target.phase) for record in trail.records]
        trails.append(trail)
    shown = history_io.merged(trails, args.limit)
    damaged = [item for trail in trails for item in trail.damaged]
    read = sum(trail.read for trail in trails)
    if args.json:
        out(json.dumps(_as_json(trails, shown, errors), indent=2))
    else:
        for record in shown:
            for line in history.describe(record):
                out(line)
        for item in damaged:
            out(f"DAMAGED  {item.where}: {item.why}")
        for error in errors:
            out(f"UNREADABLE  {error['error']}")
        out(history.summary(shown, damaged, read))
    for error in errors:
        message = printable(" ".join(error["error"].split()))
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return code


def _as_json(
    trails: Sequence[history_io.Trail],
    shown: Sequence[history.Record],
    errors: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "files": [
            {
                "source": trail.source,
                "audit": trail.where,
                "read": trail.read,
                "damaged": [item.to_json() for item in trail.damaged],
            }
            for trail in trails
        ],
        "records": [record.to_json() for record in shown],
        "damaged": sum(len(trail.damaged) for trail in trails),
        "errors": errors,
    }


def _with_phase(record: history.Record, phase: str | None) -> history.Record:
    """A record without a phase (an older record) gets its file's."""
    if record.phase is not None or phase is None:
        return record
    return dataclasses.replace(record, phase=phase)


def _threshold(target: Target, endpoint: str | None) -> int | None:
    """The percentage from which ``endpoint`` is composite under the file's stable hash
    (None: no endpoint asked for, or the file cannot tell)."""
    if endpoint is None:
        return None
    try:
        snapshot = open_store(target.source).read()
        if snapshot.data is None:
            return None
        doc = parse(snapshot.data, source=target.source)
    except (StoreError, FlagFileError, FlagConfigError):
        return None
    return composite_threshold(doc, endpoint, target.phase)


#: Fewer records than this are read without a progress line.
PROGRESS_FROM = 200


def progress(source: str) -> history_io.Progress:
    """Progress on stderr, every tenth of the records read, for large S3 trails."""
    said = [-1]

    def report(done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        tenth = done * 10 // total
        if tenth != said[0]:
            said[0] = tenth
            print(
                f"{PROG}: reading {source}'s audit records: {done}/{total}",
                file=sys.stderr,
                flush=True,
            )

    return report
